"""Hardening of the data readers (issue 14, items 5, 6, 7).

5. Classification labels outside 0/1 (DBMTL / tabular, and every other reader) stop training *and*
   ``tools/infer.py`` with one ERROR line naming ``file:line``, exit status 2.
6. One number grammar in every reader (no ``1_0``, ``0x1f``, ids beyond int64), the same on the
   vectorised and the per-line path; whitespace-only lines are blank lines.
7. A metric that is undefined on the evaluated data (an AUC over one class) is logged as a warning
   naming the metric and why, once per evaluation.

The tools run in-process (``train_main`` / ``infer_main``, as tools/trainer.py and tools/infer.py
call them) on a few hundred lines of the models' bundled sample data.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from test_group_rtp import EXAMPLE, A  # noqa: E402
from test_group_rtp import batches as group_batches
from test_group_rtp import make_config as group_config
from test_readers import census_config, slot_config, slot_line  # noqa: E402

from recstack.cli import infer_main, train_main
from recstack.config import from_dict, load_config
from recstack.data.aliccp import AliCCPReader
from recstack.data.base import DataFormatError, RaggedArray, parse_float, parse_int
from recstack.data.csv import CensusReader
from recstack.data.din import DINReader
from recstack.data.slot import FeatIdxValueReader, SlotReader
from recstack.easyrec.tabular import TabularReader
from recstack.metrics import AUC, GAUC, MSE, warn_undefined

REPO = Path(__file__).resolve().parents[1]
DBMTL = REPO / "models/multitask/dbmtl/config.yaml"
MMOE_EASYREC = REPO / "models/multitask/mmoe/config_easyrec.yaml"
MMOE = REPO / "models/multitask/mmoe/config.yaml"
DEEPFM = REPO / "models/rank/deepfm/config.yaml"
DIN = REPO / "models/rank/din/config.yaml"
BIG = "99999999999999999999"  # beyond int64


def sample_lines(config: Path, split: str, n: int, data: str = "sample_data") -> list[str]:
    """The first ``n`` lines of a model's bundled sample data (``split``: train or test)."""
    with open(config.parent / "data" / data / split / "part-0.txt") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


def write(folder: Path, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "part-0.txt"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def run(main, config: Path, caplog, *overrides: str) -> tuple[int, list[str], list[str]]:
    """A tool's main in-process: (exit status, ERROR lines, WARNING lines)."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        code = main(["-m", str(config), "-o", "runner.epochs=1", *overrides])
    records = caplog.records
    return (code, [r.getMessage() for r in records if r.levelno >= logging.ERROR],
            [r.getMessage() for r in records if r.levelno == logging.WARNING])


def read_all(reader) -> dict[str, np.ndarray]:
    """All rows of a reader's blocks (ragged columns as their padded arrays)."""
    blocks = list(reader.iter_blocks())
    return {k: RaggedArray.concatenate([b[k] for b in blocks]).to_padded() if isinstance(blocks[0][k], RaggedArray)
            else np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


def with_label(line: str, label: str) -> str:
    return label + line[line.index(","):]


@pytest.fixture(scope="module")
def dbmtl_checkpoint(tmp_path_factory) -> Path:
    """A DBMTL checkpoint (epoch 0) trained on 200 good lines."""
    root = tmp_path_factory.mktemp("dbmtl")
    write(root / "train", sample_lines(DBMTL, "train", 200))
    code = train_main(["-m", str(DBMTL), "-o", "runner.epochs=1", f"runner.train_data_dir={root / 'train'}",
                       f"runner.model_save_path={root / 'out'}"])
    assert code == 0
    return root / "out"


# ------------------------------------------------------------------ item 5: classification labels
@pytest.mark.parametrize("config", [DBMTL, MMOE_EASYREC], ids=["dbmtl", "mmoe_easyrec"])
def test_classification_label_2_stops_training_naming_file_and_line(config, tmp_path, caplog):
    data = "easyrec_sample_data" if config == MMOE_EASYREC else "sample_data"
    lines = sample_lines(config, "train", 200, data)
    lines[56] = with_label(lines[56], "2")
    path = write(tmp_path / "train", lines)
    code, errors, _ = run(train_main, config, caplog, f"runner.train_data_dir={path.parent}",
                          f"runner.model_save_path={tmp_path / 'out'}")
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith(f"{path}:57: label 'is_valid_play' must be 0 or 1, got 2 (task tower "
                                "'is_valid_play' is CLASSIFICATION; use loss_type: L2_LOSS")
    assert not (tmp_path / "out" / "0").exists()


def test_classification_label_2_stops_infer_naming_file_and_line(dbmtl_checkpoint, tmp_path, caplog):
    lines = sample_lines(DBMTL, "test", 200)
    lines[32] = with_label(lines[32], "2")
    path = write(tmp_path / "test", lines)
    code, errors, _ = run(infer_main, DBMTL, caplog, f"runner.test_data_dir={path.parent}",
                          f"runner.infer_load_path={dbmtl_checkpoint}")
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith(f"{path}:33: label 'is_valid_play' must be 0 or 1, got 2 ")
    assert not any("auc_is_valid_play:" in r.getMessage() for r in caplog.records)


def test_regression_labels_need_only_be_finite(tmp_path):
    lines = sample_lines(DBMTL, "test", 20)
    lines[3] = lines[3].replace(lines[3].split(",")[1], "2.5", 1)  # play_time (L2_LOSS): any finite value
    path = write(tmp_path / "test", lines)
    config = load_config(DBMTL, [f"runner.test_data_dir={path.parent}"])
    assert read_all(TabularReader([str(path)], config))["play_time"][3, 0] == 2.5
    lines[5] = lines[5].replace(lines[5].split(",")[1], "inf", 1)
    write(tmp_path / "test", lines)
    with pytest.raises(DataFormatError, match=rf"{path}:6: label 'play_time' is not a finite number"):
        read_all(TabularReader([str(path)], config))


def test_grouped_input_checks_classification_labels_per_sample(tmp_path):
    def towers(hp):
        hp["model_config"]["e2e_mm_dbmtl"] = {"task_towers": [
            {"tower_name": "clk", "loss_type": "CLASSIFICATION"},  # label_name: the first label field
            {"tower_name": "play_time", "loss_type": "L2_LOSS"}]}
    config = group_config(tmp_path, EXAMPLE.replace(f"0{A}1;0.0{A}80.0", f"0{A}2;0.0{A}80.0"), edit=towers)
    with pytest.raises(DataFormatError, match=r"part-0\.txt:2: label 'clk' must be 0 or 1, got 2 .*"
                                              r"\(sample 1 of the group on line 2\)"):
        group_batches(config)


@pytest.mark.parametrize("reader, good, bad, message", [
    (lambda f: SlotReader(f, slot_config(3, 1, 100)), "click:1 dense_feature:0.5 1:1 2:2",
     "click:2 dense_feature:0.5 1:1 2:2", "label 'click' must be 0 or 1"),
    (lambda f: FeatIdxValueReader(f, from_dict({"hyper_parameters": {"num_field": 1}})),
     "feat_idx:1 feat_value:0.5 label:1", "feat_idx:1 feat_value:0.5 label:2", "label must be 0 or 1"),
    (lambda f: CensusReader(f, census_config(2)), "1,0,0.5,1", "1,-1,0.5,1",
     "label 'income' (column 2) must be 0 or 1"),
    (lambda f: DINReader(f, from_dict({})), "1 2;3 4;5;6;1", "1 2;3 4;5;6;0.5", "label (field 5) must be 0 or 1"),
    (lambda f: AliCCPReader(f, from_dict({})), "1,1,0,210:3", "1,1,2,210:3",
     "conversion label (column 3) must be 0 or 1"),
], ids=["slot", "lr", "census", "din", "aliccp"])
def test_every_reader_checks_its_labels(reader, good, bad, message, tmp_path):
    path = write(tmp_path, [good, bad, good])
    with pytest.raises(DataFormatError) as err:
        read_all(reader([str(path)]))
    assert str(err.value).startswith(f"{path}:2: {message}")


# ------------------------------------------------------------------ item 6: numbers and blank lines
def test_census_whitespace_only_line_is_blank_and_1_0_names_file_and_line(tmp_path, caplog):
    lines = sample_lines(MMOE, "train", 40)
    path = write(tmp_path / "train", lines[:2] + ["   \t "] + lines[2:])
    reader = CensusReader([str(path)], load_config(MMOE, []))
    assert np.array_equal(read_all(reader)["features"], np.array([[float(v) for v in line.split(",")[2:]]
                                                                  for line in lines], dtype=np.float32))
    code, errors, _ = run(train_main, MMOE, caplog, f"runner.train_data_dir={path.parent}",
                          f"runner.model_save_path={tmp_path / 'out'}")
    assert code == 0 and not errors
    fields = lines[3].split(",")
    fields[7] = "1_0"
    write(tmp_path / "train", lines[:2] + ["   \t "] + lines[2:3] + [",".join(fields)] + lines[4:])
    code, errors, _ = run(train_main, MMOE, caplog, f"runner.train_data_dir={path.parent}",
                          f"runner.model_save_path={tmp_path / 'out'}")
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith(f"{path}:5: column 8 is not a number: '1_0'")


@pytest.mark.parametrize("value, message", [
    ("1_2", "slot '26' has non-numeric value '1_2' (expected an integer"),
    (BIG, f"slot '26': {BIG} is outside the int64 range"),
])
def test_slot_id_grammar_in_training_and_upload(value, message, tmp_path, caplog):
    lines = sample_lines(DEEPFM, "train", 300)
    bad = lines[6].rsplit(" ", 1)[0] + f" 26:{value}"
    path = write(tmp_path / "train", lines[:6] + [bad] + lines[7:])
    code, errors, _ = run(train_main, DEEPFM, caplog, f"runner.train_data_dir={path.parent}",
                          f"runner.model_save_path={tmp_path / 'out'}")
    assert code == 2 and len(errors) == 1 and errors[0].startswith(f"{path}:7: {message}")
    # the server's /upload parses a body with the model's reader: the same error, never an OverflowError
    reader = SlotReader([], load_config(DEEPFM, []))
    with pytest.raises(DataFormatError) as err:
        reader.parse_block(f"{lines[0]}\n{bad}\n".encode(), "upload", 1)
    assert str(err.value).startswith(f"upload:2: {message}")


@pytest.mark.parametrize("edit, message", [
    (lambda f: [f[0], f[1], "1_2", *f[3:]], "field 3 (target_item) is not an integer: '1_2'"),
    (lambda f: [f[0], f[1], BIG, *f[3:]], f"field 3 (target_item): {BIG} is outside the int64 range"),
    (lambda f: [f[0] + " " + BIG, f[1] + " 1", *f[2:]], f"field 1 (hist_item_ids): {BIG} is outside the int64"),
    (lambda f: [*f[:5], BIG], f"field 6 (user_id): {BIG} is outside the int64 range"),
])
def test_din_id_grammar_in_training_and_upload(edit, message, tmp_path, caplog):
    lines = sample_lines(DIN, "train", 100)
    bad = ";".join(edit(lines[4].split(";")))
    path = write(tmp_path / "train", lines[:4] + [bad] + lines[5:])
    code, errors, _ = run(train_main, DIN, caplog, f"runner.train_data_dir={path.parent}",
                          f"runner.model_save_path={tmp_path / 'out'}")
    assert code == 2 and len(errors) == 1 and errors[0].startswith(f"{path}:5: {message}")
    with pytest.raises(DataFormatError, match=r"^upload:2: "):
        DINReader([], load_config(DIN, [])).parse_block(f"{lines[0]}\n{bad}\n".encode(), "upload", 1)


@pytest.mark.parametrize("text", ["0", "-7", "007", " 12\t", str(2**63 - 1), str(-2**63)])
def test_integer_grammar_accepts(text):
    assert parse_int(text) == int(text)


@pytest.mark.parametrize("text", ["1_2", "0x1f", "0X1F", "0o7", "0b1", "+4", "1.0", "1e3", "1 2", "", "-", "\u0664",
                                  "4\x0b", str(2**63), str(-2**63 - 1)])
def test_integer_grammar_refuses(text):
    with pytest.raises(ValueError):
        parse_int(text)


@pytest.mark.parametrize("text", ["1", "+1.5", "-.5", "5.", "1e-3", "2.5E+07", " 3 ", "inf", "-Infinity", "nan"])
def test_decimal_grammar_accepts(text):
    assert parse_float(text) == float(text) or np.isnan(parse_float(text))


@pytest.mark.parametrize("text", ["1_0", "1_0.5", "0x1p-1", "1 0", "1.5e", ".", "e5", "1d5", "\u0664", ""])
def test_decimal_grammar_refuses(text):
    with pytest.raises(ValueError):
        parse_float(text)


SLOT_GOOD = slot_line(1, [0.5] * 13, list(range(26)))
SLOT_SHUFFLED = " ".join(reversed(SLOT_GOOD.split()))  # the per-line path (slots in another order)


@pytest.mark.parametrize("good", [SLOT_GOOD, SLOT_SHUFFLED], ids=["fast_path", "per_line_path"])
@pytest.mark.parametrize("token, message", [
    ("5:0x1f", "slot '5' has non-numeric value '0x1f'"),
    ("5:+4", "slot '5' has non-numeric value '+4'"),
    ("5:\u0664", "slot '5' has non-numeric value"),
    ("5:NA", "slot '5' has non-numeric value 'NA'"),
    ("dense_feature:1_0", "slot 'dense_feature' has non-numeric value '1_0'"),
    ("click:1.0", "slot 'click' has non-numeric value '1.0'"),
])
def test_slot_grammar_is_the_same_on_both_paths(good, token, message, tmp_path):
    key = token.split(":")[0]
    old = next(t for t in good.split() if t.split(":")[0] == key)
    path = write(tmp_path, [good, good, good.replace(old, token, 1)])
    with pytest.raises(DataFormatError) as err:
        read_all(SlotReader([str(path)], slot_config()))
    assert str(err.value).startswith(f"{path}:3: {message}")


@pytest.mark.parametrize("reader, good, bad, message", [
    (lambda f: FeatIdxValueReader(f, from_dict({"hyper_parameters": {"num_field": 1}})),
     "feat_idx:1 feat_value:0.5 label:1", "feat_idx:0x1 feat_value:0.5 label:1", "feat_idx has non-numeric value"),
    (lambda f: FeatIdxValueReader(f, from_dict({"hyper_parameters": {"num_field": 1}})),
     "feat_idx:1 feat_value:0.5 label:1", f"feat_idx:{BIG} feat_value:0.5 label:1", "feat_idx: 9999"),
    (lambda f: DINReader(f, from_dict({})), "1 2;3 4;5;6;1", "1 2;3 4;0x5;6;1", "field 3 (target_item) is not"),
    (lambda f: DINReader(f, from_dict({})), "1 2;3 4;5;6;1", "1 2;3 4;5;6;1_0", "field 5 (label) is not a number"),
    (lambda f: AliCCPReader(f, from_dict({})), "1,1,0,210:3", "1,1,0,210:0x3", "feature id of column 4 is not"),
    (lambda f: AliCCPReader(f, from_dict({})), "1,1,0,210:3", f"1,1,0,210:{BIG}", "feature id of column 4: 9999"),
    (lambda f: AliCCPReader(f, from_dict({})), "1,1,0,210:3", "1,1_0,0,210:3", "click label (column 2) is not"),
    (lambda f: CensusReader(f, census_config(2)), "1,0,0.5,1", "1,0,0x1p-1,1", "column 3 is not a number"),
    (lambda f: CensusReader(f, census_config(2)), "1,0,0.5,1", "1,0,,1", "column 3 is not a number: ''"),
], ids=["lr_hex", "lr_overflow", "din_hex", "din_label", "aliccp_hex", "aliccp_overflow", "aliccp_label",
        "census_hex_float", "census_empty"])
def test_other_readers_follow_the_grammar(reader, good, bad, message, tmp_path):
    path = write(tmp_path, [good, bad, good])
    with pytest.raises(DataFormatError) as err:
        read_all(reader([str(path)]))
    assert str(err.value).startswith(f"{path}:2: {message}")


def test_tabular_integer_fields_follow_the_grammar(tmp_path):
    lines = sample_lines(DBMTL, "test", 20)
    config = load_config(DBMTL, [])
    for value in ("0x1", "1_0", "+3"):  # day_h, an INT32 field (column 8)
        fields = lines[9].split(",")
        fields[7] = value
        path = write(tmp_path, lines[:9] + [",".join(fields)] + lines[10:])
        with pytest.raises(DataFormatError) as err:
            read_all(TabularReader([str(path)], config))
        assert str(err.value).startswith(f"{path}:10: field 'day_h' (INT32) is not an integer: '{value}'")


@pytest.mark.parametrize("reader, good", [
    (lambda f: SlotReader(f, slot_config()), SLOT_GOOD),
    (lambda f: FeatIdxValueReader(f, from_dict({"hyper_parameters": {"num_field": 1}})),
     "feat_idx:1 feat_value:0.5 label:1"),
    (lambda f: CensusReader(f, census_config(2)), "1,0,0.5,1"),
    (lambda f: DINReader(f, from_dict({})), "1 2;3 4;5;6;1"),
    (lambda f: AliCCPReader(f, from_dict({})), "1,1,0,210:3"),
    (lambda f: TabularReader(f, load_config(DBMTL, [])), sample_lines(DBMTL, "test", 1)[0]),
], ids=["slot", "lr", "census", "din", "aliccp", "tabular"])
def test_whitespace_only_lines_are_blank_in_every_reader(reader, good, tmp_path):
    clean = read_all(reader([str(write(tmp_path / "a", [good] * 3))]))
    path = write(tmp_path / "b", [good, "  ", "\t", good, " \t \r", good])
    spaced = read_all(reader([str(path)]))
    assert all(np.array_equal(clean[k], spaced[k]) for k in clean)
    assert len(next(iter(spaced.values()))) == 3
    blank = write(tmp_path / "c", ["  ", "\t\t"])
    with pytest.raises(DataFormatError, match=rf"{blank}: file holds no samples"):
        read_all(reader([str(blank)]))


# ------------------------------------------------------------------ item 7: undefined metrics
def test_undefined_metrics_say_why():
    auc = AUC()
    auc.update(torch.rand(1234), torch.zeros(1234))
    assert auc.undefined_reason().startswith("the evaluated labels hold only class 0 (1234 samples)")
    auc.update(torch.rand(2), torch.ones(2))
    assert auc.undefined_reason() is None
    gauc = GAUC()
    gauc.update(torch.rand(4), torch.tensor([0., 1, 0, 0]), torch.tensor([1, 2, 3, 3]))
    assert gauc.undefined_reason().startswith("no group (user) holds both classes (3 groups, 4 samples")
    gauc = GAUC()
    gauc.update(torch.rand(3), torch.tensor([0., 1, 0]), torch.tensor([-1, -1, -1]))
    assert gauc.undefined_reason().startswith("no sample has a known group (user) key (3 samples")
    assert MSE().undefined_reason() == "no samples were evaluated"
    assert warn_undefined(["auc_ctr", "mse"], [AUC(), MSE()], "epoch 3: ") == [
        "epoch 3: auc_ctr is undefined: no samples were evaluated",
        "epoch 3: mse is undefined: no samples were evaluated"]


def test_single_class_test_set_warns_once_per_evaluation(dbmtl_checkpoint, tmp_path, caplog):
    lines = [line for line in sample_lines(DBMTL, "test", 1000) if line.startswith("0,")][:300]
    path = write(tmp_path / "test", lines)
    code, errors, warnings = run(infer_main, DBMTL, caplog, f"runner.test_data_dir={path.parent}",
                                 f"runner.infer_load_path={dbmtl_checkpoint}", "runner.infer_end_epoch=1",
                                 "runner.infer_batch_size=50")
    assert code == 0 and not errors
    assert warnings == ["epoch 0: auc_is_valid_play is undefined: the evaluated labels hold only class 0 "
                        "(300 samples); an AUC needs both classes"]


def test_single_class_training_data_warns_once_per_epoch(tmp_path, caplog):
    lines = [line for line in sample_lines(DBMTL, "train", 1000) if line.startswith("0,")][:200]
    path = write(tmp_path / "train", lines)
    code, errors, warnings = run(train_main, DBMTL, caplog, f"runner.train_data_dir={path.parent}",
                                 f"runner.model_save_path={tmp_path / 'out'}", "runner.epochs=2")
    assert code == 0 and not errors
    assert [w for w in warnings if "undefined" in w] == [
        f"epoch {e}: auc_is_valid_play is undefined: the evaluated labels hold only class 0 (200 samples); "
        "an AUC needs both classes" for e in (0, 1)]
