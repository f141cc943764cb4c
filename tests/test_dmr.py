"""DMR: the Alimama reader, the two relevance networks and the match loss against their formulas, masks, aux loss."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recstack.config import from_dict, load_config
from recstack.data import DataFormatError, create_loader
from recstack.data.alimama import LAYOUT, WIDTH, AlimamaReader
from recstack.layers import ItemToItemRelevance, UserToItemRelevance, causal_attention_weights, match_loss
from recstack.wrapper import build_model

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "models" / "rank" / "dmr" / "config.yaml"
SAMPLE = "paddlerec/models/rank/dmr/data/sample_data/alimama_sampled_train.txt"
#: PaddleRec's config.yaml table sizes
PADDLEREC_SIZES = {"user_size": 1141730, "cms_segid_size": 97, "cms_group_id_size": 13, "final_gender_code_size": 3,
                   "age_level_size": 7, "pvalue_level_size": 4, "shopping_level_size": 4, "occupation_size": 3,
                   "new_user_class_level_size": 5, "adgroup_id_size": 846812, "cate_size": 12978,
                   "campaign_id_size": 423437, "customer_size": 255876, "brand_size": 461529, "btag_size": 5,
                   "pid_size": 2}


def reader_for(paths, **hp):
    return AlimamaReader([str(p) for p in paths], from_dict({"hyper_parameters": hp}))


def paddlerec_parse(text):
    """PaddleRec's alimama_reader.py + net.py slicing, in numpy: float32 rows, ids cast to int64."""
    rows = []
    for line in text.splitlines():
        fields = ["0" if v == "" or v.upper() == "NULL" else v for v in line.strip().split(",")]
        rows.append(np.array(fields).astype("float32"))
    data = np.stack(rows)
    ids = data.astype("int64")
    h = 50
    out = {"btag_his": ids[:, 0:h], "cate_his": ids[:, h:2 * h], "brand_his": ids[:, 2 * h:3 * h],
           "mask": data[:, 3 * h:4 * h], "match_mask": data[:, 4 * h:5 * h]}
    names = ["uid", "cms_segid", "cms_group_id", "final_gender_code", "age_level", "pvalue_level", "shopping_level",
             "occupation", "new_user_class_level", "adgroup_id", "cate_id", "campaign_id", "customer", "brand"]
    for k, name in enumerate(names):
        out[name] = ids[:, 5 * h + k:5 * h + k + 1]
    out["price"] = data[:, 264:265]
    out["pid"] = ids[:, 265:266]
    out["label"] = data[:, 266:267]
    return out


def concat(blocks):
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


# ---------------------------------------------------------------------------- reader
def test_alimama_reader_parses_paddlerec_sample_exactly(shared_data):
    path = shared_data / SAMPLE
    big = load_config(CONFIG.with_name("config_bigdata.yaml"))
    assert {k: big.get(f"hyper_parameters.{k}") for k in PADDLEREC_SIZES} == PADDLEREC_SIZES  # PaddleRec's tables
    reader = reader_for([path], **PADDLEREC_SIZES)
    block = concat(list(reader.iter_blocks()))
    ref = paddlerec_parse(path.read_text())
    assert set(block) == set(ref) == {name for name, *_ in LAYOUT}
    for name, array in block.items():
        assert array.dtype == ref[name].dtype and array.shape == ref[name].shape, name
        np.testing.assert_array_equal(array, ref[name], err_msg=name)
    assert len(block["label"]) == 500
    # the first line of PaddleRec's file, by hand
    assert block["btag_his"][0].tolist() == [1] * 50 and block["cate_his"][0].tolist() == [8998] * 50
    assert block["brand_his"][0, :8].tolist() == [211122] * 8 and block["brand_his"][0, 8].item() == 24011
    assert block["mask"][0].tolist() == [1.0] * 50 and block["match_mask"][0].tolist() == [1.0] * 50
    assert [block[n][0, 0].item() for n in ("uid", "cms_segid", "cms_group_id", "final_gender_code", "age_level",
                                           "pvalue_level", "shopping_level", "occupation", "new_user_class_level",
                                           "adgroup_id", "cate_id", "campaign_id", "customer", "brand", "pid")] == \
        [1000043, 27, 4, 2, 4, 1, 2, 0, 4, 328301, 6410, 233148, 206117, 121422, 1]
    assert block["price"][0, 0] == np.float32(0.98971260954681) and block["label"][0, 0] == 0.0
    # left padding: row 59 (line 60) has 28 behaviours; its padded ids are 0
    assert block["mask"][59].tolist() == [0.0] * 22 + [1.0] * 28 and block["cate_his"][59, :22].tolist() == [0] * 22
    # the per-line path gives the same arrays
    slow = reader._split(reader._slow(path.read_bytes(), str(path), 1), path.read_bytes(), str(path), 1)
    for name in block:
        np.testing.assert_array_equal(slow[name], block[name])


def test_alimama_loader_gives_named_tensors(shared_data):
    folder = (shared_data / SAMPLE).parent
    config = load_config(CONFIG, [f"runner.train_data_dir={folder}", "runner.train_batch_size=64",
                                  "runner.shuffle=False",
                                  *[f"hyper_parameters.{k}={v}" for k, v in PADDLEREC_SIZES.items()]])
    batch = next(iter(create_loader(config, "train")))
    assert batch["cate_his"].shape == (64, 50) and batch["cate_his"].dtype == torch.int64
    assert batch["mask"].dtype == torch.float32 and batch["price"].shape == (64, 1)
    assert batch["uid"][0, 0].item() == 1000043


def line_of(values):
    return ",".join(values) + "\n"


def good_values():
    values = ["1"] * 50 + ["7"] * 50 + ["9"] * 50 + ["1"] * 100 + ["5", "1", "2", "1", "3", "2", "1", "0", "3",
                                                                  "11", "7", "12", "13", "9", "0.5", "1", "1"]
    assert len(values) == WIDTH
    return values


def test_alimama_reader_takes_paddlerecs_missing_values_whitespace_and_crlf(tmp_path):
    values = good_values()
    nulls = list(values)
    nulls[255], nulls[256], nulls[257], nulls[251] = "", "NULL", "nUlL", "null"  # PaddleRec: empty / NULL → 0
    path = tmp_path / "a.txt"
    path.write_bytes(line_of(values).encode() + b"  " + line_of(nulls).replace("\n", "\r\n").encode() + b"\n \n")
    block = reader_for([path]).parse_block(path.read_bytes(), str(path), 1)
    assert len(block["label"]) == 2
    assert [block[n][1, 0].item() for n in ("cms_segid", "pvalue_level", "shopping_level", "occupation")] == [0] * 4
    assert block["pvalue_level"][0, 0].item() == 2 and block["cate_id"][1, 0].item() == 7
    fast = reader_for([path]).parse_block(line_of(values).encode() + line_of(nulls[:257] + ["0"] + nulls[258:])
                                          .encode(), str(path), 1)  # '' / NULL / null: the vectorised path
    assert fast["pvalue_level"][1, 0].item() == 0 and fast["cms_segid"][1, 0].item() == 0


@pytest.mark.parametrize("column,value,message", [
    (None, None, "expected 267 ','-separated values (PaddleRec's Alimama format), got 266"),
    (10, "x", "column 11 (btag_his[10]) is not a number"),
    (160, "2", "column 161 (mask[10]) must be 0 or 1"),
    (266, "0.5", "column 267 (label) must be 0 or 1"),
    (60, "-1", "column 61 (cate_his[10]) must be a non-negative integer id"),
    (259, "3.5", "column 260 (adgroup_id) must be a non-negative integer id"),
    (260, "12978", "column 261 (cate_id) must be below hyper_parameters.cate_size = 12978"),
    (264, "inf", "column 265 (price) must be finite"),
])
def test_alimama_reader_errors_name_file_line_and_column(tmp_path, column, value, message):
    values = good_values()
    if column is None:
        values = values[:-1]
    else:
        values[column] = value
    path = tmp_path / "bad.txt"
    path.write_text(line_of(good_values()) + line_of(values))
    with pytest.raises(DataFormatError) as err:
        list(reader_for([path], cate_size=12978).iter_blocks())
    assert f"{path}:2: {message}" in str(err.value)


# ---------------------------------------------------------------------------- layers against their formulas
def test_causal_attention_weights_by_hand():
    scores = torch.tensor([[0.5, 2.0, -1.0, 0.3]])
    mask = torch.tensor([[False, True, True, True]])
    w = causal_attention_weights(scores, mask)[0]
    e = torch.exp(scores[0])
    assert torch.equal(w[0], torch.zeros(4))  # nothing real up to position 0
    torch.testing.assert_close(w[1], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(w[2], torch.tensor([0.0, e[1] / (e[1] + e[2]), e[2] / (e[1] + e[2]), 0.0]))
    torch.testing.assert_close(w[3], torch.cat([torch.zeros(1), e[1:] / e[1:].sum()]))


def unit_score(unit, q, k):
    """DIN's activation unit by hand: sigmoid MLP on [q, k, q - k, q * k]."""
    layers = [m for m in unit.mlp if isinstance(m, torch.nn.Linear)]
    h = torch.cat([q, k, q - k, q * k])
    for layer in layers[:-1]:
        h = torch.sigmoid(layer.weight @ h + layer.bias)
    return (layers[-1].weight @ h + layers[-1].bias)[0]


def prelu(x, slope):
    return torch.where(x >= 0, x, slope * x)


def test_user_to_item_relevance_against_its_formula():
    torch.manual_seed(0)
    e_dim, c_dim, u_dim, t = 4, 3, 2, 4
    layer = UserToItemRelevance(e_dim, c_dim, u_dim, t, attention_sizes=(5,)).eval()
    e, c = torch.randn(2, t, e_dim), torch.randn(2, t, c_dim)
    mask = torch.tensor([[False, True, True, True], [True, True, True, True]])
    states = layer(e, c, mask)
    for b in range(2):
        q = [prelu(layer.query.weight @ c[b, j] + layer.query.bias, layer.query_act.weight[j]) for j in range(t)]
        s = [unit_score(layer.unit, q[j], e[b, j]) for j in range(t)]
        for i in range(t):
            real = [j for j in range(i + 1) if mask[b, j]]
            if not real:
                pooled = torch.zeros(e_dim)
            else:
                z = torch.stack([torch.exp(s[j]) for j in real])
                pooled = sum(z[n] / z.sum() * e[b, j] for n, j in enumerate(real))
            u = prelu(layer.project.weight @ pooled + layer.project.bias, layer.project_act.weight[i])
            torch.testing.assert_close(states[b, i], u, rtol=1e-5, atol=1e-6)
    # u_t reads behaviours up to t only: changing the last behaviour leaves u_0 .. u_{T-2} unchanged
    e2 = e.clone()
    e2[:, -1] += 1.0
    torch.testing.assert_close(layer(e2, c, mask)[:, :-1], states[:, :-1])


def test_item_to_item_relevance_against_its_formula():
    torch.manual_seed(1)
    e_dim, c_dim, t = 4, 2, 3
    layer = ItemToItemRelevance(e_dim, c_dim, t, attention_sizes=(6, 3)).eval()
    target, e, c = torch.randn(2, e_dim), torch.randn(2, t, e_dim), torch.randn(2, t, c_dim)
    mask = torch.tensor([[False, True, True], [True, True, True]])
    pooled, relevance, weights = layer(target, e, c, mask)
    for b in range(2):
        real = [j for j in range(t) if mask[b, j]]
        s = {j: unit_score(layer.unit, prelu(layer.query.weight @ torch.cat([target[b], c[b, j]]) + layer.query.bias,
                                             layer.query_act.weight[j]), e[b, j]) for j in real}
        z = torch.stack([torch.exp(s[j]) for j in real])
        alpha = {j: z[n] / z.sum() for n, j in enumerate(real)}
        torch.testing.assert_close(relevance[b, 0], sum(s.values()), rtol=1e-5, atol=1e-6)  # unnormalised sum
        torch.testing.assert_close(pooled[b], sum(alpha[j] * e[b, j] for j in real), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(weights[b], torch.stack([alpha.get(j, torch.tensor(0.0)) for j in range(t)]))
    assert weights[0, 0] == 0.0


def test_match_loss_full_sampled_and_valid_rows():
    torch.manual_seed(2)
    user, weight, bias = torch.randn(3, 4), torch.randn(10, 4), torch.randn(10)
    target = torch.tensor([1, 5, 7])
    valid = torch.tensor([1.0, 0.0, 1.0])
    full = match_loss(user, target, weight, bias, valid)
    per_row = F.cross_entropy(user @ weight.t() + bias, target, reduction="none")
    torch.testing.assert_close(full, (per_row[0] + per_row[2]) / 2)
    assert match_loss(user, target, weight, bias, torch.zeros(3)) == 0.0  # no valid row: 0, not nan
    torch.testing.assert_close(match_loss(user, target, weight, bias, valid, num_sampled=9), full)  # >= V - 1: full
    # sampled softmax: the target against 4 uniform draws (seeded), a draw equal to a row's target left out
    sampled = match_loss(user, target, weight, bias, valid, 4, torch.Generator().manual_seed(3))
    draws = torch.randint(0, 10, (4,), generator=torch.Generator().manual_seed(3))
    expected = []
    for i in (0, 2):
        negatives = [int(k) for k in draws if int(k) != int(target[i])]
        logits = torch.stack([user[i] @ weight[k] + bias[k] for k in [int(target[i])] + negatives])
        expected.append(-torch.log_softmax(logits, 0)[0])
    torch.testing.assert_close(sampled, sum(expected) / 2)
    assert match_loss(user, target, weight, bias, valid, 4, torch.Generator().manual_seed(3)) == sampled  # seeded


# ---------------------------------------------------------------------------- the model
def sample_batch(config, rows=16):
    config = load_config(CONFIG, ["runner.shuffle=False", f"runner.train_batch_size={rows}", *config])
    return config, next(iter(create_loader(config, "train")))


@pytest.mark.parametrize("weight", [0.1, 0.0])
def test_aux_loss_on_and_off(weight):
    config, batch = sample_batch([f"hyper_parameters.aux_loss_weight={weight}"])
    torch.manual_seed(0)
    wrapper, net = build_model(config, torch.device("cpu"))
    metrics, _ = wrapper.create_metrics()
    loss, _, print_dict = wrapper.train_forward(net, metrics, batch, config)
    inputs, labels = wrapper.create_feeds(batch, config)
    pred = net(*inputs)
    ctr = F.binary_cross_entropy(pred, labels[0])
    if weight:
        assert wrapper.extra_output_names == ("aux_loss",) and set(print_dict) == {"ctr_loss", "aux_loss"}
        torch.testing.assert_close(loss, ctr + 0.1 * print_dict["aux_loss"])
        assert print_dict["aux_loss"] > 0
    else:
        assert wrapper.extra_output_names == () and print_dict is None
        torch.testing.assert_close(loss, ctr)


def test_aux_loss_negatives_follow_the_seed():
    config, batch = sample_batch(["hyper_parameters.aux_num_sampled=20"])
    losses = []
    for _ in range(2):
        torch.manual_seed(7)
        wrapper, net = build_model(config, torch.device("cpu"))
        inputs, _ = wrapper.create_feeds(batch, config)
        losses.append([net(*inputs, return_extras=True)[1]["aux_loss"].item() for _ in range(2)])
    assert losses[0] == losses[1] and losses[0][0] != losses[0][1]  # same seed, same draws; fresh draws per batch


def test_padded_behaviours_change_nothing():
    config, batch = sample_batch(["hyper_parameters.aux_num_sampled=0"], rows=64)  # full softmax: no draws
    torch.manual_seed(0)
    wrapper, net = build_model(config, torch.device("cpu"))
    net.eval()
    inputs, _ = wrapper.create_feeds(batch, config)
    names = list(wrapper.feed_names)
    mask = batch["mask"] == 0
    assert mask.any()  # the sample has short histories
    before, extras = net(*inputs, return_extras=True)
    changed = list(inputs)
    for name in ("btag_his", "cate_his", "brand_his"):
        values = batch[name].clone()
        values[mask] = (values[mask] + 3) % 5 + 1  # other ids at the padded positions
        changed[names.index(name)] = values
    after, extras_after = net(*changed, return_extras=True)
    torch.testing.assert_close(after, before)
    torch.testing.assert_close(extras_after["aux_loss"], extras["aux_loss"])
    # while a real behaviour does change the prediction of its row
    row = int(torch.nonzero(~mask[:, -1])[0])
    cate = batch["cate_his"].clone()
    cate[row, -1] = (cate[row, -1] % 298) + 1
    changed[names.index("cate_his")] = cate
    assert not torch.equal(net(*changed)[row], before[row])


def test_generated_alimama_world_has_the_format_and_the_planted_signal(tmp_path):
    from sklearn.metrics import roc_auc_score

    spec = importlib.util.spec_from_file_location("synthetic_generate", REPO / "datasets/synthetic/generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    path = gen.generate("alimama", 5000, 5, tmp_path / "a.txt", proba=tmp_path / "a.proba")
    config = load_config(CONFIG)
    sizes = {k: config.get(f"hyper_parameters.{k}") for k in PADDLEREC_SIZES}
    block = concat(list(reader_for([path], **sizes).iter_blocks()))  # every id within the sample config's tables
    ref = paddlerec_parse(path.read_text())
    for name in block:
        np.testing.assert_array_equal(block[name], ref[name])
    again = gen.generate("alimama", 300, 5, tmp_path / "b.txt").read_bytes()
    assert again == gen.generate("alimama", 300, 5, tmp_path / "c.txt").read_bytes()  # byte-identical
    assert again != gen.generate("alimama", 300, 6, tmp_path / "d.txt").read_bytes()  # seeded
    labels, proba = block["label"][:, 0], np.loadtxt(tmp_path / "a.proba")
    assert 0.3 <= labels.mean() <= 0.4
    assert 0.75 <= roc_auc_score(labels, proba) <= 0.83  # Bayes-optimal AUC
    mask = block["mask"] > 0
    assert (mask[:, -1]).all() and 0.6 <= mask.all(1).mean() <= 0.8  # left-padded, 70% full histories
    share = ((block["cate_his"] == block["cate_id"]) & mask).sum(1) / mask.sum(1)
    assert roc_auc_score(labels, share) > 0.65  # the planted signal: the ad's category's share of the history
