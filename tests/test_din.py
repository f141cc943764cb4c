"""DIN: the DIN-format reader, per-batch padding and bucketing, padding invariance, the Amazon preprocessor."""

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recstack.config import from_dict, load_config
from recstack.data import DataFormatError, create_loader
from recstack.data.base import RaggedArray
from recstack.data.din import DINReader
from recstack.data.loader import BatchLoader
from recstack.wrapper import build_model

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "models" / "rank" / "din" / "config.yaml"
SAMPLE = "paddlerec/models/rank/din/data/train_data/sample_data.txt"


def reader_for(paths, **hp):
    return DINReader([str(p) for p in paths], from_dict({"hyper_parameters": hp}))


def rows_of(blocks):
    """Per-sample tuples (history items, history cats, target item, target cat, label, user) of blocks."""
    out = []
    for b in blocks:
        items, cats = b["hist_item"], b["hist_cat"]
        for i in range(len(b["label"])):
            hi = items[np.array([i])].values if isinstance(items, RaggedArray) else items[i, :b["hist_len"][i, 0]]
            hc = cats[np.array([i])].values if isinstance(cats, RaggedArray) else cats[i, :b["hist_len"][i, 0]]
            out.append((hi.tolist(), hc.tolist(), int(b["target_item"][i, 0]), int(b["target_cat"][i, 0]),
                        float(b["label"][i, 0]), int(b["user"][i, 0])))
    return out


def python_parse(text):
    rows = []
    for line in text.splitlines():
        f = line.strip().split(";")
        rows.append(([int(t) for t in f[0].split()], [int(t) for t in f[1].split()], int(f[2]), int(f[3]),
                     float(f[4]), int(f[5]) if len(f) == 6 else -1))
    return rows


# ---------------------------------------------------------------------------- reader
def test_din_reader_parses_paddlerec_sample_exactly(shared_data):
    path = shared_data / SAMPLE
    reader = reader_for([path], item_count=63001, cat_count=801)
    rows = rows_of(reader.iter_blocks())
    assert len(rows) == 100
    assert rows == python_parse(path.read_text())
    # the first lines of PaddleRec's file, by hand
    assert rows[0] == ([3737, 19450], [288, 196], 18486, 674, 1.0, -1)
    assert rows[1] == ([3647, 4342, 6855, 3805], [281, 463, 558, 674], 4206, 463, 1.0, -1)
    assert rows[3] == ([18209, 20753], [649, 241], 51924, 610, 0.0, -1)
    assert max(len(r[0]) for r in rows) == 152
    # the per-line path gives the same arrays
    slow = reader._slow(path.read_bytes(), str(path), 1)
    assert rows_of([slow]) == rows


def test_din_reader_user_field_blank_lines_crlf_empty_history_and_small_chunks(tmp_path, monkeypatch):
    text = ("1 2 3;4 5 6;7;8;1;42\r\n"
            "\n"
            "  9;10;11;12;0  \n"
            ";;13;14;1;5\n"      # empty history (a user's first action)
            "15 16;17 18;19;20;1.0\n")
    path = tmp_path / "part-0.txt"
    path.write_bytes(text.encode())
    expected = [([1, 2, 3], [4, 5, 6], 7, 8, 1.0, 42), ([9], [10], 11, 12, 0.0, -1), ([], [], 13, 14, 1.0, 5),
                ([15, 16], [17, 18], 19, 20, 1.0, -1)]
    assert rows_of(reader_for([path]).iter_blocks()) == expected
    import recstack.data.base as base

    monkeypatch.setattr(base, "BLOCK_BYTES", 16)  # chunks of one or two lines: line numbers carry over
    assert rows_of(reader_for([path]).iter_blocks()) == expected


@pytest.mark.parametrize("line, message", [
    ("1 2;3;4;5;1", "the history has 2 item ids but 1 category ids"),
    ("1 2;3 4;5;6", "expected 5 ';'-separated fields"),
    ("1 2;3 4;5;6;1;2;3", "expected 5 ';'-separated fields"),
    ("1 x;3 4;5;6;1", r"field 1 \(hist_item_ids\) is not space-separated integers"),
    ("1 2;3 4;five;6;1", r"field 3 \(target_item\) is not an integer"),
    ("1 2;3 4;5;6;yes", r"field 5 \(label\) is not a number"),
    ("1 2;3 4;5;6;2", "label \\(field 5\\) must be 0 or 1"),
    ("1 2;3 4;5;6;1;-7", "user id \\(field 6\\) must be >= 0"),
    ("1 99;3 4;5;6;1", r"a history item id outside \[0, item_count=50\)"),
    ("1 2;3 4;5;60;1", r"target_cat outside \[0, cat_count=10\)"),
    ("1 -2;3 4;5;6;1", r"a history item id outside"),
])
def test_din_reader_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.txt"
    path.write_text("1 2;3 4;5;6;1\n\n" + line + "\n1;2;3;4;0\n")
    with pytest.raises(DataFormatError, match=rf"bad\.txt:3: {message}"):
        list(reader_for([path], item_count=50, cat_count=10).iter_blocks())


# ---------------------------------------------------------------------------- ragged columns, batches
def test_ragged_array_rows_slices_gathers_concatenation_and_padding():
    rows = [[1, 2, 3], [], [4], [5, 6]]
    r = RaggedArray.from_rows(rows)
    assert len(r) == 4 and r.lengths.tolist() == [3, 0, 1, 2]
    assert r.to_padded().tolist() == [[1, 2, 3], [0, 0, 0], [4, 0, 0], [5, 6, 0]]
    assert r[1:3].to_padded(2).tolist() == [[0, 0], [4, 0]]
    assert r[np.array([3, 0])].to_padded().tolist() == [[5, 6, 0], [1, 2, 3]]
    assert r[np.array([False, False, True, True])].to_padded().tolist() == [[4, 0], [5, 6]]
    joined = RaggedArray.concatenate([r[2:], r[:1]])
    assert joined.to_padded().tolist() == [[4, 0, 0], [5, 6, 0], [1, 2, 3]]
    assert r[4:].to_padded().shape == (0, 0)
    with pytest.raises(ValueError, match="shorter than the longest row"):
        r.to_padded(2)


@pytest.fixture
def lines_file(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(203):
        length = int(rng.choice([1, 2, 3, 50, 120], p=[0.4, 0.3, 0.2, 0.07, 0.03]))
        items = rng.integers(0, 1000, length)
        lines.append(f"{' '.join(map(str, items))};{' '.join(map(str, items % 7))};{i};{i % 7};{i % 2};{i % 13}\n")
    path = tmp_path / "data" / "part-0.txt"
    path.parent.mkdir()
    path.write_text("".join(lines))
    return path


@pytest.mark.parametrize("bucket", [False, True])
def test_batches_are_padded_to_their_own_longest_history(lines_file, bucket):
    reader = reader_for([lines_file])
    expected = sorted(rows_of(reader.iter_blocks()), key=lambda r: r[2])
    loader = BatchLoader(reader, 16, shuffle=True, seed=3, num_workers=1, bucket_by_length=bucket)
    seen, widths = [], []
    for batch in loader:
        lengths = batch["hist_len"][:, 0]
        assert batch["hist_item"].shape[1] == int(lengths.max())  # the batch's longest, not the data's
        mask = torch.arange(batch["hist_item"].shape[1]) < lengths[:, None]
        assert not batch["hist_item"][~mask].any() and not batch["hist_cat"][~mask].any()  # padding is 0
        widths.append(batch["hist_item"].shape[1])
        block = {k: v.numpy() for k, v in batch.items()}
        seen += rows_of([block])
    assert sorted(seen, key=lambda r: r[2]) == expected  # every row once, intact
    assert sum(widths) < 12 * 120  # far from 13 batches padded to 120
    if bucket:
        assert sum(widths) < 400
        again = [b["target_item"][:, 0].tolist() for b in loader]
        loader.set_epoch(1)
        other = [b["target_item"][:, 0].tolist() for b in loader]
        assert again != other and sorted(sum(again, [])) == sorted(sum(other, []))  # seeded, reshuffled


def test_binary_cache_round_trips_ragged_columns_and_writes_nothing_into_the_working_directory(
        lines_file, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    reader = reader_for([lines_file])
    text_rows = rows_of(reader.iter_blocks())
    cache = tmp_path / "cache"
    first = rows_of(reader.iter_blocks(cache_dir=str(cache)))  # parses and writes the cache
    (folder,) = [p for p in cache.iterdir()]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{c}.bin" for c in reader.columns] + ["hist_item.lengths.bin", "hist_cat.lengths.bin", "meta.json"])
    second = rows_of(reader.iter_blocks(cache_dir=str(cache)))  # reads the memory maps
    assert first == second == text_rows
    batches = list(BatchLoader(reader, 50, cache_dir=str(cache), num_workers=0))
    assert [b["hist_item"].shape[1] for b in batches] == [
        max(len(r[0]) for r in text_rows[i:i + 50]) for i in range(0, 203, 50)]
    assert not any(work.iterdir())  # no tmp.txt (PaddleRec's reader writes one into the working directory)


# ---------------------------------------------------------------------------- the model
def small_din(act, softmax):
    config = load_config(CONFIG, [f"hyper_parameters.act={act}", f"hyper_parameters.attention_softmax={softmax}",
                                  "hyper_parameters.item_emb_size=8", "hyper_parameters.cat_emb_size=4",
                                  "runner.bucket_by_length=False"])  # batches of mixed lengths
    torch.manual_seed(0)
    return config, build_model(config, torch.device("cpu"))[1]


@pytest.mark.parametrize("act, softmax", [("sigmoid", True), ("dice", True), ("dice", False)])
def test_padding_a_batch_further_leaves_each_prediction_unchanged(act, softmax):
    config, model = small_din(act, softmax)
    batch = next(iter(create_loader(config, "infer")))
    inputs = [batch[k] for k in ("hist_item", "hist_cat", "hist_len", "target_item", "target_cat")]
    width = inputs[0].shape[1]
    assert (batch["hist_len"] < width).any()  # the batch has padding already
    rng = torch.Generator().manual_seed(1)
    wider = [torch.cat([x, torch.randint(1, 500, (len(x), 37), generator=rng)], dim=1) for x in inputs[:2]]
    # garbage ids everywhere beyond each history, not only in the new columns
    mask = torch.arange(width + 37) < batch["hist_len"]
    wider = [torch.where(mask, w, torch.randint(1, 500, w.shape, generator=rng)) for w in wider]
    for mode in ("eval", "train"):  # train: Dice's batch statistics must not see the padding either
        getattr(model, mode)()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            base = model(*inputs)
            model.load_state_dict(state)  # the same running statistics for both calls
            padded = model(wider[0], wider[1], *inputs[2:])
        assert torch.allclose(base, padded, atol=1e-6), (mode, (base - padded).abs().max())
    # and each sample alone (its own padding: none) gives its prediction within the batch
    model.eval()
    with torch.no_grad():
        for i in range(0, len(base), 37):
            n = int(batch["hist_len"][i])
            alone = model(inputs[0][i:i + 1, :n], inputs[1][i:i + 1, :n], *[x[i:i + 1] for x in inputs[2:]])
            assert torch.allclose(alone, model(*inputs)[i:i + 1], atol=1e-6)


def test_din_wrapper_reports_auc_and_gauc_and_rejects_unknown_act():
    from recstack.config import ConfigError
    from recstack.trainer import train

    config, model = small_din("dice", True)
    wrapper = build_model(config, torch.device("cpu"))[0]
    metrics, names = wrapper.create_metrics()
    assert names == ["auc", "gauc"]
    batch = next(iter(create_loader(config, "infer")))
    wrapper.infer_forward(model.eval(), metrics, batch, config)
    assert 0 <= metrics[1].compute() <= 1
    with pytest.raises(ConfigError, match="expected one of sigmoid, dice, relu, prelu"):
        train(load_config(CONFIG, ["hyper_parameters.act=tanhh"]))


# ---------------------------------------------------------------------------- preprocessor
def load_preprocessor():
    spec = importlib.util.spec_from_file_location("amazon_preprocess",
                                                  REPO / "datasets/amazon_electronics/preprocess.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_amazon_preprocessor_on_a_tiny_raw_sample(tmp_path):
    # reviews: JSON lines (as reviews_Electronics_5.json), out of time order, one product without metadata
    reviews = [("u_b", "P3", 30), ("u_a", "P2", 20), ("u_b", "P1", 10), ("u_a", "P9", 10), ("u_b", "P4", 20),
               ("u_a", "P1", 30), ("u_a", "P4", 40), ("u_c", "P2", 5), ("u_b", "P2", 40), ("u_a", "PX", 25)]
    with gzip.open(tmp_path / "reviews.json.gz", "wt") as f:
        for user, asin, t in reviews:
            f.write(json.dumps({"reviewerID": user, "asin": asin, "unixReviewTime": t, "overall": 5.0}) + "\n")
    # metadata: Python literals with single quotes (as meta_Electronics.json); last level of the last path
    meta = {"P1": [["Electronics", "Audio", "Headphones"]], "P2": [["Electronics", "Cables"], ["Computers", "Mice"]],
            "P3": [["Electronics", "Audio", "Speakers"]], "P4": [["Electronics", "Audio", "Headphones"]],
            "P9": [["Electronics", "Batteries"]], "P0": [["Electronics", "Unreviewed"]]}
    (tmp_path / "meta.json").write_text("".join(repr({"asin": a, "title": "x", "categories": c}) + "\n"
                                                for a, c in meta.items()))
    pre = load_preprocessor()
    out = tmp_path / "out"
    assert pre.main(["--reviews", str(tmp_path / "reviews.json.gz"), "--meta", str(tmp_path / "meta.json"),
                     "--output", str(out), "--seed", "7"]) == 0
    counts = json.loads((out / "meta.json").read_text())
    # sorted remapping: items P1..P4, P9 -> 0..4; categories Batteries, Headphones, Mice, Speakers -> 0..3
    assert (counts["items"], counts["categories"], counts["users"], counts["dropped_reviews"]) == (5, 4, 3, 1)
    item_cat = {0: 1, 1: 2, 2: 3, 3: 1, 4: 0}
    train = python_parse((out / "train" / "part-0.txt").read_text())
    test = python_parse((out / "test" / "part-0.txt").read_text())
    # u_a (user 0): P9, P2, P1, P4 by time -> items 4, 1, 0, 3; u_b (user 1): P1, P4, P3, P2 -> 0, 3, 2, 1;
    # u_c (user 2) has one review: no example
    sequences = {0: [4, 1, 0, 3], 1: [0, 3, 2, 1]}
    expected_train = {(u, tuple(s[:k]), s[k], 1) for u, s in sequences.items() for k in (1, 2)}
    assert {(r[5], tuple(r[0]), r[2], int(r[4])) for r in train if r[4] == 1} == expected_train
    assert {(r[5], tuple(r[0]), r[2], int(r[4]))
            for r in test if r[4] == 1} == {(0, (4, 1, 0), 3, 1), (1, (0, 3, 2), 1, 1)}
    assert len(train) == 8 and len(test) == 4  # each positive with one negative
    for rows in (train, test):
        for hist, cats, target, cat, label, user in rows:
            assert cats == [item_cat[i] for i in hist] and cat == item_cat[target]
            if label == 0:
                assert target not in sequences[user]  # a negative is an item the user never reviewed
    # the negative shares its positive's history; seeded: the same files again, other files with another seed
    assert sorted((tuple(r[0]), r[5]) for r in train if r[4] == 0) == sorted((tuple(r[0]), r[5])
                                                                             for r in train if r[4] == 1)
    again = tmp_path / "again"
    pre.main(["--reviews", str(tmp_path / "reviews.json.gz"), "--meta", str(tmp_path / "meta.json"),
              "--output", str(again), "--seed", "7", "--no-user-id"])
    five = (again / "train" / "part-0.txt").read_text().splitlines()
    assert [line.rsplit(";", 1)[0] for line in (out / "train" / "part-0.txt").read_text().splitlines()] == five
    assert all(line.count(";") == 4 for line in five)  # PaddleRec's 5 fields
    # the output is what the DIN reader reads
    assert len(rows_of(reader_for([out / "train" / "part-0.txt"], item_count=5, cat_count=4).iter_blocks())) == 8


# ---------------------------------------------------------------------------- the generated sample data
def test_generated_amazon_world_has_the_format_and_the_planted_signal(tmp_path):
    from sklearn.metrics import roc_auc_score

    spec = importlib.util.spec_from_file_location("synthetic_generate", REPO / "datasets/synthetic/generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    path = gen.generate("amazon", 20000, 5, tmp_path / "a.txt", proba=tmp_path / "a.proba")
    rows = python_parse(path.read_text())
    proba = np.loadtxt(tmp_path / "a.proba")
    labels = np.array([r[4] for r in rows])
    assert len(rows) == 20000 and all(len(line.split(";")) == 6 for line in path.read_text().splitlines()[:50])
    item_cat = {}
    for hist, cats, target, cat, _, _ in rows:
        for i, c in zip(hist + [target], cats + [cat]):
            assert item_cat.setdefault(i, c) == c  # an item always has its one category
    assert max(item_cat) < 63001 and max(item_cat.values()) < 801
    lengths = np.array([len(r[0]) for r in rows])
    assert lengths.min() >= 1 and np.median(lengths) <= 8 and lengths.max() > 100  # variable lengths
    assert [r[5] for r in rows[:8]] == [rows[0][5]] * 4 + [rows[4][5]] * 4  # sessions of 4 impressions a user
    assert 0.47 <= labels.mean() <= 0.53
    assert 0.75 <= roc_auc_score(labels, proba) <= 0.82  # Bayes-optimal AUC
    # the planted signal: the candidate category's share of the history
    share = np.array([np.mean(np.array(r[1]) == r[3]) for r in rows])
    assert roc_auc_score(labels, share) > 0.7
    assert rows_of(reader_for([path], item_count=63001, cat_count=801).iter_blocks()) == rows


def test_din_trains_and_evaluates_on_paddlerec_sample_without_user_ids(shared_data, tmp_path):
    """PaddleRec's 5-field file end to end: auc is defined, gauc is nan (no user is known)."""
    import math

    from recstack.evaluator import infer
    from recstack.trainer import train

    folder = str((shared_data / SAMPLE).parent)
    overrides = [f"runner.train_data_dir={folder}", f"runner.test_data_dir={folder}", "runner.epochs=1",
                 f"runner.model_save_path={tmp_path}", f"runner.infer_load_path={tmp_path}", "runner.infer_end_epoch=1",
                 "runner.train_batch_size=10"]
    result = train(load_config(CONFIG, overrides))
    assert math.isnan(result.epochs[0].metrics["gauc"]) and 0 <= result.epochs[0].metrics["auc"] <= 1
    metrics = infer(load_config(CONFIG, overrides))[0]
    assert 0 <= metrics["auc"] <= 1 and math.isnan(metrics["gauc"])
