"""Readers: exact parsing of PaddleRec's real sample files, errors that name file and line, batching."""

import random
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recstack.config import from_dict
from recstack.data import base
from recstack.data.base import BinaryCache, DataFormatError, list_data_files
from recstack.data.csv import CensusReader
from recstack.data.loader import BatchLoader
from recstack.data.slot import FeatIdxValueReader, SlotReader

CRITEO = "paddlerec/models/rank/deepfm/data/sample_data/train/sample_train.txt"
CENSUS = "paddlerec/models/multitask/mmoe/data/train/train_data.txt"


def slot_config(slots=27, dense=13, ids=1000001):
    return from_dict({"hyper_parameters": {"sparse_inputs_slots": slots, "dense_input_dim": dense,
                                           "sparse_feature_number": ids}})


def census_config(features=499):
    return from_dict({"hyper_parameters": {"feature_size": features}})


def read_all(reader):
    blocks = list(reader.iter_blocks())
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


def slot_line(label, dense, ids, order=None):
    tokens = [f"click:{label}"] + [f"dense_feature:{v}" for v in dense] + [f"{i + 1}:{v}" for i, v in enumerate(ids)]
    if order is not None:
        tokens = [tokens[i] for i in order]
    return " ".join(tokens)


# ---------------------------------------------------------------- slot format
def test_slot_reader_parses_paddlerec_criteo_sample_exactly(shared_data):
    path = shared_data / CRITEO
    data = read_all(SlotReader([str(path)], slot_config()))
    assert data["label"].shape == (80, 1) and data["sparse"].shape == (80, 26) and data["dense"].shape == (80, 13)
    assert data["sparse"].dtype == np.int64 and data["dense"].dtype == np.float32
    assert int(data["label"].sum()) == 23  # 57 negatives / 23 positives
    # every value equals a plain per-token parse of the same line
    for i, line in enumerate(path.read_text().splitlines()):
        tokens = [t.split(":") for t in line.split()]
        assert data["label"][i, 0] == float(tokens[0][1])
        np.testing.assert_array_equal(data["dense"][i], np.float32([float(v) for k, v in tokens[1:14]]))
        assert data["sparse"][i].tolist() == [int(v) for k, v in tokens[14:]]
    first = data["dense"][0]
    assert first[1] == np.float32(0.00497512437811) and first[4] == np.float32(0.207421875)
    assert data["sparse"][0, 0] == 737395 and data["sparse"][0, 25] == 306163


def test_slot_lines_in_any_order_parse_like_canonical(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(int(rng.integers(0, 2)), rng.random(13).round(4).tolist(), rng.integers(0, 1000, 26).tolist())
            for _ in range(50)]
    canonical = tmp_path / "a.txt"
    canonical.write_text("\n".join(slot_line(*r) for r in rows) + "\n")
    shuffled = tmp_path / "b.txt"
    lines = []
    for i, r in enumerate(rows):
        sparse = list(range(14, 40))
        random.Random(i).shuffle(sparse)
        # sparse slots in any order, label in the middle; dense values keep their order (one multi-valued slot)
        lines.append(slot_line(*r, order=[*sparse[:10], 0, *range(1, 14), *sparse[10:]]))
    shuffled.write_text("\n".join(lines) + "\n")
    a = read_all(SlotReader([str(canonical)], slot_config()))
    b = read_all(SlotReader([str(shuffled)], slot_config()))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_slot_reader_blank_lines_crlf_and_small_chunks(tmp_path, monkeypatch):
    lines = [slot_line(i % 2, [0.5] * 13, [i] * 26) for i in range(300)]
    path = tmp_path / "data.txt"
    path.write_text("\n".join(lines[:100]) + "\n\n" + "\r\n".join(lines[100:]) + "\r\n")
    expected = read_all(SlotReader([str(path)], slot_config()))
    monkeypatch.setattr(base, "BLOCK_BYTES", 1000)  # many chunks, cut mid-line
    monkeypatch.setattr(base.read_chunks, "__defaults__", (1000,))
    got = read_all(SlotReader([str(path)], slot_config()))
    assert got["label"].shape == (300, 1)
    assert got["sparse"][:, 0].tolist() == list(range(300))
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])


GOOD = slot_line(1, [0.1] * 13, list(range(1, 27)))


@pytest.mark.parametrize("bad, message", [
    (" ".join(GOOD.split()[:-1]), "missing sparse slot(s) 26"),
    (GOOD.replace("dense_feature:0.1", "dense_feature:abc", 1), "slot 'dense_feature' has non-numeric value 'abc'"),
    (GOOD.replace("5:5", "5:x5"), "slot '5' has non-numeric value 'x5'"),
    (GOOD.replace("click:1", "click:2"), "label 'click' must be 0 or 1"),
    (GOOD.replace("7:7", "7:1000001"), "sparse id outside [0, sparse_feature_number=1000001)"),
    (GOOD.replace("7:7", "7:-3"), "sparse id outside"),
    (GOOD + " 27:4", "unknown slot '27'"),
    (GOOD.replace("click:1", "label:1"), "unknown slot 'label'"),
    (GOOD.replace("click:1 ", ""), "missing label slot 'click'"),
    (GOOD + " 3:9", "sparse slot '3' appears twice"),
    (GOOD.replace("dense_feature:0.1 ", "", 1), "expected 13 'dense_feature' values, got 12"),
    (GOOD.replace("dense_feature:0.1", "dense_feature:nan", 1), "dense value is not finite"),
    (GOOD.replace("3:3", "3"), "token '3' is not slot:value"),
])
def test_slot_reader_errors_name_file_and_line(tmp_path, bad, message):
    path = tmp_path / "part-0.txt"
    path.write_text("\n".join([GOOD] * 6 + [bad] + [GOOD] * 3) + "\n")
    with pytest.raises(DataFormatError) as err:
        read_all(SlotReader([str(path)], slot_config()))
    assert f"{path}:7: " in str(err.value)
    assert message in str(err.value)


def test_empty_files_and_missing_folders(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataFormatError, match=f"{empty}: file is empty"):
        read_all(SlotReader([str(empty)], slot_config()))
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n  \n")
    with pytest.raises(DataFormatError, match="holds no samples"):
        read_all(SlotReader([str(blank)], slot_config()))
    with pytest.raises(DataFormatError, match="folder '.*nope' does not exist"):
        list_data_files(tmp_path / "nope", key="runner.train_data_dir")
    (tmp_path / "none").mkdir()
    with pytest.raises(DataFormatError, match="holds no data files"):
        list_data_files(tmp_path / "none")


# ---------------------------------------------------------------- census format
def test_census_reader_parses_paddlerec_sample_exactly(shared_data):
    path = shared_data / CENSUS
    data = read_all(CensusReader([str(path)], census_config()))
    assert data["features"].shape == (30, 499) and data["income"].shape == (30, 1)
    assert int(data["marital"].sum()) == 12 and int(data["income"].sum()) == 0
    raw = np.loadtxt(path, delimiter=",", dtype=np.float64)
    np.testing.assert_array_equal(data["features"], raw[:, 2:].astype(np.float32))
    np.testing.assert_array_equal(data["marital"][:, 0], raw[:, 0])
    assert data["features"][0, :6].tolist() == [73.0, 0.0, 0.0, 0.0, 0.0, np.float32(1700.09)]


@pytest.mark.parametrize("bad, message", [
    ("0,1,2", "expected 6 ','-separated values, got 3"),
    ("0,1,2,3,x,5", "column 5 is not a number: 'x'"),
    ("0,2,2,3,4,5", "label 'income' (column 2) must be 0 or 1"),
    ("0,1,2,3,inf,5", "value is not finite"),
])
def test_census_reader_errors_name_file_and_line(tmp_path, bad, message):
    path = tmp_path / "train.txt"
    path.write_text("1,0,1,2,3,4\n0,1,1,2,3,4\n" + bad + "\n1,1,0,0,0,0\n")
    with pytest.raises(DataFormatError) as err:
        read_all(CensusReader([str(path)], census_config(features=4)))
    assert f"{path}:3: " in str(err.value) and message in str(err.value)


# ---------------------------------------------------------------- cache and loader
def write_rows(path: Path, n: int, start: int = 0) -> None:
    path.write_text("".join(slot_line(i % 2, [i / 1000] * 13, [i] * 26) + "\n" for i in range(start, start + n)))


def test_binary_cache_equals_text_and_is_invalidated_by_edits(tmp_path):
    path = tmp_path / "d.txt"
    write_rows(path, 500)
    reader = SlotReader([str(path)], slot_config())
    text = read_all(reader)
    cache = tmp_path / "cache"
    first = list(reader.iter_blocks(cache_dir=str(cache)))   # parses and writes
    second = list(reader.iter_blocks(cache_dir=str(cache)))  # memory-mapped
    assert len(list(cache.iterdir())) == 1 and not any(p.name.startswith(".tmp") for p in cache.iterdir())
    for blocks in (first, second):
        for key in text:
            np.testing.assert_array_equal(np.concatenate([b[key] for b in blocks]), text[key])
    time.sleep(0.01)
    write_rows(path, 20, start=7)
    again = read_all_cached(reader, cache)
    assert again["sparse"][:, 0].tolist() == list(range(7, 27))
    assert BinaryCache(str(cache), reader).key(str(path)) in {p.name for p in cache.iterdir()}


def read_all_cached(reader, cache):
    blocks = list(reader.iter_blocks(cache_dir=str(cache)))
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


def make_loader(tmp_path, n=1000, files=3, **kwargs):
    paths = []
    for f in range(files):
        path = tmp_path / f"part-{f}.txt"
        write_rows(path, n // files, start=f * (n // files))
        paths.append(str(path))
    return BatchLoader(SlotReader(paths, slot_config()), kwargs.pop("batch_size", 64), **kwargs)


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_loader_yields_every_row_once_in_order(tmp_path, workers):
    loader = make_loader(tmp_path, n=999, batch_size=64, num_workers=workers)
    batches = list(loader)
    assert [len(b["label"]) for b in batches] == [64] * 15 + [39]
    ids = torch.cat([b["sparse"][:, 0] for b in batches])
    assert ids.tolist() == list(range(999))
    assert batches[0]["sparse"].dtype == torch.int64 and batches[0]["dense"].dtype == torch.float32


def test_loader_drop_last_and_shuffle_are_seeded(tmp_path):
    loader = make_loader(tmp_path, n=999, batch_size=64, shuffle=True, seed=3, drop_last=True)
    first = torch.cat([b["sparse"][:, 0] for b in loader])
    assert len(first) == 960 and len(set(first.tolist())) == 960 and first.tolist() != sorted(first.tolist())
    again = torch.cat([b["sparse"][:, 0] for b in loader])
    assert torch.equal(first, again)
    loader.set_epoch(1)
    assert not torch.equal(first, torch.cat([b["sparse"][:, 0] for b in loader]))


def test_loader_raises_reader_errors_in_the_consumer_and_stops_its_thread(tmp_path):
    loader = make_loader(tmp_path, n=900, batch_size=10, files=3)
    with open(loader.reader.file_list[2], "a") as f:
        f.write("click:0 broken\n")
    with pytest.raises(DataFormatError, match=r"part-2.txt:301: "):
        for _ in loader:
            pass
    before = threading.active_count()
    (tmp_path / "other").mkdir()
    for i, _ in enumerate(make_loader(tmp_path / "other", n=900, batch_size=10, files=2)):
        if i == 3:
            break
    time.sleep(0.3)
    assert threading.active_count() <= before


# ---------------------------------------------------------------- logistic-regression format
LR = "paddlerec/models/rank/logistic_regression/data/sample_data/train/sample_train.txt"


def lr_config(fields=39, ids=1086461):
    return from_dict({"hyper_parameters": {"num_field": fields, "sparse_feature_number": ids}})


def test_lr_reader_parses_paddlerec_sample_exactly(shared_data):
    path = shared_data / LR
    data = read_all(FeatIdxValueReader([str(path)], lr_config()))
    assert data["feat_idx"].shape == (100, 39) and data["feat_value"].shape == (100, 39)
    assert int(data["label"].sum()) == 22  # 78 negatives / 22 positives
    for i, line in enumerate(path.read_text().splitlines()):
        tokens = [t.split(":") for t in line.split()]
        assert data["feat_idx"][i].tolist() == [int(v) for _, v in tokens[:39]]
        np.testing.assert_array_equal(data["feat_value"][i], np.float32([float(v) for _, v in tokens[39:78]]))
        assert data["label"][i, 0] == float(tokens[78][1])
    assert data["feat_idx"][0, :13].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 13]


def lr_line(label, ids, values):
    return " ".join([f"feat_idx:{i}" for i in ids] + [f"feat_value:{v}" for v in values] + [f"label:{label}"])


def test_lr_reader_any_order_and_errors(tmp_path):
    good = lr_line(1, range(1, 5), [0.5, 1.0, 0.0, 2.0])
    path = tmp_path / "a.txt"
    shuffled = " ".join(reversed(good.split()))  # label first, values and ids reversed
    path.write_text(good + "\n" + shuffled + "\n")
    data = read_all(FeatIdxValueReader([str(path)], lr_config(fields=4, ids=10)))
    assert data["feat_idx"].tolist() == [[1, 2, 3, 4], [4, 3, 2, 1]]
    for bad, message in [(good.replace("label:1", "label:3"), "label must be 0 or 1"),
                         (good.replace("feat_idx:4", "feat_idx:10"), "feat_idx outside [0, sparse_feature_number=10)"),
                         (good.replace("feat_idx:4 ", ""), "expected 4 'feat_idx' value(s), got 3"),
                         (good.replace("feat_value:0.5", "feat_value:x"), "feat_value has non-numeric value 'x'"),
                         (good + " foo:1", "token 'foo:1' is not")]:
        path.write_text(good + "\n" + bad + "\n")
        with pytest.raises(DataFormatError, match=re.escape(f"{path}:2: {message}")):
            read_all(FeatIdxValueReader([str(path)], lr_config(fields=4, ids=10)))
