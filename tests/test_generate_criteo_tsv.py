"""datasets/synthetic/generate.py ``criteo --layout tsv``: Criteo's raw TSV layout of the same rows as the slot
format (read by models/rank/fibinet and models/rank/masknet)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from recstack.data.hashing import criteo_hash

SCRIPT = Path(__file__).resolve().parents[1] / "datasets" / "synthetic" / "generate.py"
_spec = importlib.util.spec_from_file_location("datasets_synthetic_generate_tsv", SCRIPT)
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)


def test_tsv_layout_holds_the_slot_rows_with_raw_strings(tmp_path):
    slot = gen.generate("criteo", 300, 5, tmp_path / "slot.txt").read_text().splitlines()
    tsv = gen.generate("criteo", 300, 5, tmp_path / "tsv.txt", layout="tsv").read_text().splitlines()
    assert len(tsv) == len(slot) == 300
    missing = 0
    for slot_line, tsv_line in zip(slot, tsv, strict=True):
        tokens, cells = slot_line.split(" "), tsv_line.split("\t")
        assert len(cells) == 40
        values = [t.split(":", 1)[1] for t in tokens]
        assert cells[0] == values[0] and cells[1:14] == values[1:14]  # label, dense values: the same text
        for k in range(1, 27):  # C_k hashes to slot k's id, exactly as datasets/criteo/preprocess.py does
            raw = cells[13 + k]
            assert raw == "" or (len(raw) == 8 and int(raw, 16) >= 0)
            assert criteo_hash(13 + k, raw) == int(values[13 + k])
            missing += raw == ""
    assert missing > 0  # slots with missing values write empty cells
    # the default layout is unchanged by the flag's existence: same bytes as without it
    again = gen.generate("criteo", 300, 5, tmp_path / "again.txt", layout="slot").read_text().splitlines()
    assert again == slot


def test_tsv_layout_is_for_criteo_only(tmp_path):
    with pytest.raises(ValueError, match="criteo data set only"):
        gen.generate("census", 10, 1, tmp_path / "x.txt", layout="tsv")
    with pytest.raises(ValueError, match="layout must be one of slot, tsv"):
        gen.generate("criteo", 10, 1, tmp_path / "x.txt", layout="csv")
    with pytest.raises(SystemExit):
        gen.main(["census", "--rows", "1", "--seed", "1", "--output", str(tmp_path / "y.txt"), "--layout", "tsv"])
