"""BST: PaddleRec's BST format (exact parse, errors), DIN's format with positions, the Transformer layer by hand,
padding invariance, PaddleRec's keys, end to end on PaddleRec's sample file."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recstack.config import ConfigError, from_dict, load_config
from recstack.data import DataFormatError, create_loader
from recstack.data.base import RaggedArray
from recstack.data.bst import BSTReader, DINPositionReader, reverse_positions
from recstack.data.din import DINReader
from recstack.wrapper import build_model

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "models" / "rank" / "bst" / "config.yaml"
SAMPLE = "paddlerec/models/rank/bst/data/train_data/paddle_train.txt"
KEYS = ("hist_item", "hist_cat", "hist_pos", "target_item", "target_cat", "target_pos", "label", "user")
FEEDS = ("hist_item", "hist_cat", "hist_pos", "hist_len", "target_item", "target_cat", "target_pos")


def bst_reader(paths, **hp):
    return BSTReader([str(p) for p in paths], from_dict({"hyper_parameters": hp}))


def rows_of(blocks):
    """Per-sample dicts {key: list or scalar} of blocks."""
    out = []
    for b in blocks:
        for i in range(len(b["label"])):
            row = {}
            for key in KEYS:
                column = b[key]
                if isinstance(column, RaggedArray):
                    row[key] = column[np.array([i])].values.tolist()
                    assert len(row[key]) == b["hist_len"][i, 0]
                else:
                    row[key] = column[i, 0].item()
            out.append(row)
    return out


def reference_parse(text):
    """PaddleRec's amazon_reader, written plainly: slot:value tokens, sequence slots in their order."""
    rows = []
    for line in text.splitlines():
        slots = {}
        for token in line.split():
            name, value = token.split(":")
            slots.setdefault(name, []).append(int(value))
        rows.append({"hist_item": slots.get("history", []), "hist_cat": slots.get("cate", []),
                     "hist_pos": slots.get("position", []), "target_item": slots["target"][0],
                     "target_cat": slots["target_cate"][0], "target_pos": slots.get("target_position", [0])[0],
                     "label": float(slots["label"][0]), "user": slots.get("userid", [-1])[0]})
    return rows


# ---------------------------------------------------------------------------- PaddleRec's BST format
def test_bst_reader_parses_paddlerec_sample_exactly(shared_data):
    path = shared_data / SAMPLE
    reader = bst_reader([path], item_count=63001, cat_count=801, position_count=5001)
    rows = rows_of(reader.iter_blocks())
    assert len(rows) == 99
    assert rows == reference_parse(path.read_text())
    # the first line of PaddleRec's file, by hand
    assert rows[0] == {"hist_item": [17704, 37473], "hist_cat": [6, 770], "hist_pos": [31, 31], "target_item": 53346,
                       "target_cat": 347, "target_pos": 0, "label": 0.0, "user": 103944}
    assert rows[2]["hist_pos"][:3] == [1903, 1836, 1753] and len(rows[2]["hist_item"]) == 30
    # the per-line path gives the same arrays
    slow = reader._slow(path.read_bytes(), str(path), 1)
    assert rows_of([slow]) == rows


def test_bst_reader_any_token_order_optional_slots_empty_history_crlf_and_small_chunks(tmp_path, monkeypatch):
    text = ("label:1 target:7 history:1 cate:4 history:2 position:9 cate:5 position:3 target_cate:8 userid:42\r\n"
            "\n"
            "  target:11 target_cate:12 label:0 target_position:2  \n"   # no history, no user
            "userid:5 history:3 cate:6 position:0 target:13 target_cate:14 target_position:0 label:1 \n")
    path = tmp_path / "part-0.txt"
    path.write_bytes(text.encode())
    expected = [
        {"hist_item": [1, 2], "hist_cat": [4, 5], "hist_pos": [9, 3], "target_item": 7, "target_cat": 8,
         "target_pos": 0, "label": 1.0, "user": 42},
        {"hist_item": [], "hist_cat": [], "hist_pos": [], "target_item": 11, "target_cat": 12, "target_pos": 2,
         "label": 0.0, "user": -1},
        {"hist_item": [3], "hist_cat": [6], "hist_pos": [0], "target_item": 13, "target_cat": 14, "target_pos": 0,
         "label": 1.0, "user": 5}]
    assert rows_of(bst_reader([path]).iter_blocks()) == expected
    assert rows_of([bst_reader([path])._slow(text.encode(), str(path), 1)]) == expected
    import recstack.data.base as base

    monkeypatch.setattr(base, "BLOCK_BYTES", 16)  # chunks of one line: line numbers carry over
    assert rows_of(bst_reader([path]).iter_blocks()) == expected


GOOD = "userid:1 history:1 cate:2 position:3 target:4 target_cate:5 target_position:0 label:1"


@pytest.mark.parametrize("line, message", [
    (GOOD.replace("cate:2 ", ""), "history, cate and position must appear equally often, got 1 history, 0 cate"),
    (GOOD + " position:4", "history, cate and position must appear equally often"),
    (GOOD.replace(" label:1", ""), "expected exactly one label:<int>, got 0"),
    (GOOD + " target:3", "expected exactly one target:<int>, got 2"),
    (GOOD + " userid:3", "expected at most one userid:<int>, got 2"),
    (GOOD.replace("userid", "user"), "unknown slot 'user'"),
    (GOOD + " 17", "expected slot:value tokens, got '17'"),
    (GOOD.replace("history:1", "history:x"), "slot history is not an integer: 'x'"),
    (GOOD.replace("history:1", "history:0x1"), "slot history is not an integer: '0x1'"),
    (GOOD.replace("target:4", "target:+4"), "slot target is not an integer: '\\+4'"),
    (GOOD.replace("label:1", "label:2"), "label must be 0 or 1"),
    (GOOD.replace("history:1", "history:99"), r"history outside \[0, item_count=50\)"),
    (GOOD.replace("target_cate:5", "target_cate:10"), r"target_cate outside \[0, cat_count=10\)"),
    (GOOD.replace("position:3", "position:-3"), r"position outside \[0, position_count=20\)"),
])
def test_bst_reader_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.txt"
    path.write_text(GOOD + "\n\n" + line + "\n" + GOOD + "\n")
    with pytest.raises(DataFormatError, match=rf"bad\.txt:3: {message}"):
        list(bst_reader([path], item_count=50, cat_count=10, position_count=20).iter_blocks())


# ---------------------------------------------------------------------------- DIN's format with positions
def test_reverse_positions_count_back_from_the_most_recent_behaviour():
    assert reverse_positions(np.array([3, 0, 1, 2])).tolist() == [3, 2, 1, 1, 2, 1]
    assert reverse_positions(np.array([5]), position_count=4).tolist() == [3, 3, 3, 2, 1]


def test_din_format_reads_as_dins_reader_plus_positions(tmp_path):
    text = "1 2 3;4 5 6;7;8;1;42\n;;13;14;0\n9;10;11;12;1;5\n"
    path = tmp_path / "part-0.txt"
    path.write_text(text)
    config = from_dict({"hyper_parameters": {"item_count": 50, "cat_count": 20, "position_count": 3}})
    din = next(DINReader([str(path)], config).iter_blocks())
    bst = next(DINPositionReader([str(path)], config).iter_blocks())
    for key, column in din.items():
        same = bst[key]
        if isinstance(column, RaggedArray):
            assert np.array_equal(same.values, column.values) and np.array_equal(same.lengths, column.lengths)
        else:
            assert np.array_equal(same, column)
    assert [r["hist_pos"] for r in rows_of([bst])] == [[2, 2, 1], [], [1]]  # 3, 2, 1 capped at position_count - 1
    assert bst["target_pos"][:, 0].tolist() == [0, 0, 0]


def test_a_din_config_data_section_works_unchanged():
    """DIN's config.yaml reads its data with ``dinReader`` and DIN's keys; BST's config.yaml has the same."""
    din = load_config(REPO / "models/rank/din/config.yaml")
    bst = load_config(CONFIG)
    for key in ("runner.train_reader_path", "runner.infer_reader_path", "hyper_parameters.item_count",
                "hyper_parameters.cat_count"):
        assert bst.get(key) == din.get(key), key
    for mode, key in (("train", "runner.train_data_dir"), ("infer", "runner.test_data_dir")):
        # DIN's own data folder, through BST's reader: the same samples as DIN's loader gives
        overrides = [f"{key}={din.get(key)}", "runner.shuffle=False", "runner.bucket_by_length=False"]
        ours = next(iter(create_loader(load_config(CONFIG, overrides), mode)))
        din_config = load_config(REPO / "models/rank/din/config.yaml",
                                 ["runner.shuffle=False", "runner.bucket_by_length=False"])
        theirs = next(iter(create_loader(din_config, mode)))
        for name in ("hist_item", "hist_cat", "hist_len", "target_item", "target_cat", "label", "user"):
            assert torch.equal(ours[name], theirs[name]), name
        width = ours["hist_item"].shape[1]
        expected = (ours["hist_len"] - torch.arange(width)).clamp(min=0)  # L, L-1, ..., 1, then 0-padding
        assert torch.equal(ours["hist_pos"], expected)


# ---------------------------------------------------------------------------- the network
def small_bst(*overrides):
    config = load_config(CONFIG, ["hyper_parameters.item_emb_size=8", "hyper_parameters.cat_emb_size=4",
                                  "hyper_parameters.position_emb_size=4", "hyper_parameters.n_head=2",
                                  "hyper_parameters.d_inner_hid=12", "hyper_parameters.fc_sizes=[16, 8]",
                                  "runner.bucket_by_length=False", *overrides])  # batches of mixed lengths
    torch.manual_seed(0)
    return config, build_model(config, torch.device("cpu"))[1]


def test_transformer_layer_matches_its_formula_by_hand():
    """S' = LN(S + MH(S)), F = LN(S' + LeakyReLU(S' W1 + b1) W2 + b2), padded keys masked (eval: no dropout)."""
    _, model = small_bst("hyper_parameters.n_encoder_layers=1")
    layer = model.layers[0].eval()
    with torch.no_grad():
        for module in layer.modules():  # non-zero biases, so each one is checked too
            if isinstance(module, (torch.nn.Linear, torch.nn.LayerNorm)):
                module.bias.uniform_(-0.5, 0.5)
                if isinstance(module, torch.nn.LayerNorm):
                    module.weight.uniform_(0.5, 1.5)
    torch.manual_seed(3)
    x = torch.randn(2, 4, 16)
    mask = torch.tensor([[True, True, False, True], [True, False, False, True]])
    att = layer.attention

    def ln(v, norm):
        mean = v.mean(-1, keepdim=True)
        var = ((v - mean) ** 2).mean(-1, keepdim=True)
        return (v - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias

    expected = torch.empty_like(x)
    for b in range(2):
        s = x[b]
        heads = []
        for h in range(2):  # heads of width 8
            cols = slice(8 * h, 8 * h + 8)
            q = (s @ att.query.weight.T + att.query.bias)[:, cols]
            k = (s @ att.key.weight.T + att.key.bias)[:, cols]
            v = (s @ att.value.weight.T + att.value.bias)[:, cols]
            scores = q @ k.T / math.sqrt(8)
            scores[:, ~mask[b]] = -math.inf
            heads.append(torch.softmax(scores, dim=-1) @ v)
        mh = torch.cat(heads, dim=-1) @ att.output.weight.T + att.output.bias
        s1 = ln(s + mh, layer.norm1)
        hidden = s1 @ layer.intermediate.weight.T + layer.intermediate.bias
        ffn = torch.where(hidden > 0, hidden, 0.01 * hidden) @ layer.project.weight.T + layer.project.bias
        expected[b] = ln(s1 + ffn, layer.norm2)
    with torch.no_grad():
        got = layer.encode(x, mask)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert torch.allclose(F.leaky_relu(torch.tensor([-2.0])), torch.tensor([-0.02]))  # the slope used above


def test_padding_a_batch_further_leaves_each_prediction_unchanged():
    config, model = small_bst("hyper_parameters.n_encoder_layers=2")
    model.eval()
    batch = next(iter(create_loader(config, "infer")))
    inputs = [batch[k] for k in FEEDS]
    width = inputs[0].shape[1]
    assert (batch["hist_len"] < width).any()  # the batch has padding already
    rng = torch.Generator().manual_seed(1)
    mask = torch.arange(width + 29) < batch["hist_len"]
    wider = [torch.where(mask, torch.cat([x, torch.zeros(len(x), 29, dtype=x.dtype)], dim=1),
                         torch.randint(1, 500, (len(x), width + 29), generator=rng)) for x in inputs[:3]]
    with torch.no_grad():
        base = model(*inputs)
        assert torch.allclose(base, model(*wider, *inputs[3:]), atol=1e-6)
        for i in range(0, len(base), 37):  # each sample alone (its own padding: none)
            n = int(batch["hist_len"][i])
            alone = model(*[x[i:i + 1, :n] for x in inputs[:3]], *[x[i:i + 1] for x in inputs[3:]])
            assert torch.allclose(alone, base[i:i + 1], atol=1e-6)
        empty = model(*[x[:1, :0] for x in inputs[:3]], torch.zeros(1, 1, dtype=torch.long),
                      *[x[:1] for x in inputs[4:]])  # no history at all: the candidate attends to itself
    assert torch.isfinite(empty).all()


def test_paddlerec_keys_are_accepted_and_inconsistent_widths_rejected():
    paddle = ["hyper_parameters.item_emb_size=8", "hyper_parameters.cat_emb_size=8",
              "hyper_parameters.position_emb_size=8", "hyper_parameters.d_model=24", "hyper_parameters.d_key=4",
              "hyper_parameters.d_value=4", "hyper_parameters.n_head=6", "hyper_parameters.is_sparse=True",
              "hyper_parameters.use_DataLoader=True", "hyper_parameters.distributed_embedding=0",
              "hyper_parameters.user_count=192403", "hyper_parameters.postprocess_cmd=da",
              "hyper_parameters.preprocess_cmd=n", "hyper_parameters.relu_dropout=0.2", "hyper_parameters.act=relu"]
    config = load_config(CONFIG, paddle)
    model = build_model(config, torch.device("cpu"))[1]
    assert model.layers[0].attention.num_heads == 6
    with pytest.raises(ConfigError, match="d_model must be item_emb_size \\+ cat_emb_size \\+ position_emb_size = 24"):
        build_model(load_config(CONFIG, paddle + ["hyper_parameters.d_model=288"]), torch.device("cpu"))
    with pytest.raises(ConfigError, match="each head is d_model / n_head = 4 wide here, got d_key 48"):
        build_model(load_config(CONFIG, paddle + ["hyper_parameters.d_key=48"]), torch.device("cpu"))
    with pytest.raises(ConfigError, match="not a multiple of n_head"):
        build_model(load_config(CONFIG, paddle[:3] + ["hyper_parameters.n_head=5"]), torch.device("cpu"))


def test_bst_trains_and_evaluates_on_paddlerec_bst_sample(shared_data, tmp_path):
    """PaddleRec's BST file with its reader name (amazon_reader) end to end: auc and gauc (its user ids)."""
    from recstack.evaluator import infer
    from recstack.trainer import train

    folder = str((shared_data / SAMPLE).parent)
    overrides = [f"runner.train_data_dir={folder}", f"runner.test_data_dir={folder}", "runner.epochs=1",
                 "runner.train_reader_path=amazon_reader", "runner.infer_reader_path=amazon_reader",
                 f"runner.model_save_path={tmp_path}", f"runner.infer_load_path={tmp_path}", "runner.infer_end_epoch=1",
                 "runner.train_batch_size=10", "hyper_parameters.item_emb_size=8", "hyper_parameters.cat_emb_size=4",
                 "hyper_parameters.position_emb_size=4", "hyper_parameters.n_head=2"]
    result = train(load_config(CONFIG, overrides))
    assert 0 <= result.epochs[0].metrics["auc"] <= 1
    metrics = infer(load_config(CONFIG, overrides))[0]
    assert 0 <= metrics["auc"] <= 1
    assert math.isnan(metrics["gauc"]) or 0 <= metrics["gauc"] <= 1  # nan: no user with both labels
