"""TagFeature and SequenceFeature in the tabular reader, their embeddings, and the backbone's InputLayer."""

from __future__ import annotations

import copy
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recstack.config import ConfigError, from_dict
from recstack.data import create_loader
from recstack.data.base import DataFormatError, RaggedArray
from recstack.easyrec.feature_embedding import FeatureEmbedding
from recstack.easyrec.features import TabularSpec
from recstack.easyrec.input_layer import InputLayer, example_inputs
from recstack.easyrec.schema import Node
from recstack.easyrec.tabular import TabularReader
from recstack.export import OPSET

FIELDS = [{"input_name": name, "input_type": kind} for name, kind in [
    ("clk", "INT32"), ("user_id", "STRING"), ("cate_id", "STRING"), ("price", "INT64"), ("tags", "STRING"),
    ("kws", "STRING"), ("hist_cate", "STRING"), ("hist_price", "STRING")]]
FEATURES = [
    {"input_names": ["user_id"], "feature_type": "IdFeature", "hash_bucket_size": 1000, "embedding_dim": 4},
    {"input_names": ["cate_id"], "feature_type": "IdFeature", "hash_bucket_size": 100, "embedding_dim": 4,
     "embedding_name": "cate"},
    {"input_names": ["price"], "feature_type": "RawFeature"},
    {"input_names": ["tags"], "feature_type": "TagFeature", "hash_bucket_size": 1000, "embedding_dim": 4},
    {"input_names": ["kws"], "feature_type": "TagFeature", "vocab_list": ["a", "b", "c"], "kv_separator": ":",
     "combiner": "mean", "embedding_dim": 4},
    {"input_names": ["hist_cate"], "feature_type": "SequenceFeature", "hash_bucket_size": 100, "embedding_dim": 4,
     "embedding_name": "cate", "sequence_length": 3},
    {"input_names": ["hist_price"], "feature_type": "SequenceFeature", "sub_feature_type": "RawFeature",
     "min_val": 0, "max_val": 1000, "sequence_length": 3},
]
GROUPS = [
    {"group_name": "all", "feature_names": ["user_id", "tags", "price", "kws"], "wide_deep": "DEEP"},
    {"group_name": "seq", "feature_names": ["cate_id", "hist_cate", "hist_price"], "wide_deep": "DEEP"},
    {"group_name": "eq", "feature_names": ["user_id", "tags", "kws"], "wide_deep": "DEEP"},
    {"group_name": "wide", "feature_names": ["user_id", "tags", "price"], "wide_deep": "WIDE"},
]
HP = {
    "data_config": {"separator": ",", "label_fields": ["clk"], "input_fields": FIELDS},
    "feature_config": {"features": FEATURES},
    "model_config": {"feature_groups": GROUPS},
}
# clk,user_id,cate_id,price,tags,kws,hist_cate,hist_price (sequences newest first)
LINES = ("1,u1,c1,25,x|y,a:0.5|z:2,c1|c2|c3|c4,5|50|500|5000\n"
         "0,u2,c2,7,,b:1,,\n"
         "\n"
         "1,u3,c3,3,x||x|,c:-1|a:3,c2,7\n")


def make_config(tmp_path: Path, text: str = LINES, edit=None, **runner):
    hp = copy.deepcopy(HP)
    if edit is not None:
        edit(hp)
    (tmp_path / "train").mkdir(exist_ok=True)
    (tmp_path / "train" / "part-0.txt").write_text(text)
    return from_dict({"runner": {"train_data_dir": "train", "train_reader_path": "tabular", **runner},
                      "hyper_parameters": hp}, config_dir=tmp_path)


def read_block(config) -> dict:
    reader = TabularReader([str(config.config_dir / "train" / "part-0.txt")], config)
    (block,) = list(reader.iter_blocks())
    return block


def h(text: str, buckets: int) -> int:
    return zlib.crc32(text.encode("utf-8")) % buckets


def rows(array: RaggedArray) -> list[list]:
    return [array.values[a:b].tolist() for a, b in zip(array.offsets[:-1], array.offsets[1:])]


def options(**values) -> Node:
    return Node(None, "hyper_parameters.model_config.backbone.blocks[0].input_layer", values)


def padded_batch(config) -> dict[str, torch.Tensor]:
    """All lines as one batch (the loader pads the variable-length columns)."""
    return next(iter(create_loader(config, "train")))


# --------------------------------------------------------------------- parsing
def test_tag_and_sequence_lines_parse_exactly(tmp_path):
    block = read_block(make_config(tmp_path))
    # tags: split at '|', empty values dropped, an empty cell holds none
    assert rows(block["all.tags.ids"]) == [[h("x", 1000), h("y", 1000)], [], [h("x", 1000), h("x", 1000)]]
    np.testing.assert_array_equal(block["all.tags.lengths"], [[2], [0], [2]])
    # weighted tags: key:weight; vocab_list ids, a value not in the list ('z') gets id 0 (EasyRec's default_value)
    assert rows(block["all.kws.ids"]) == [[0, 0], [1], [2, 0]]
    assert rows(block["all.kws.weights"]) == [[0.5, 2.0], [1.0], [-1.0, 3.0]]
    assert block["all.kws.weights"].dtype == np.float32
    # sequences keep their first sequence_length (3) values, the most recent; cate_id and hist_cate share hashing
    assert rows(block["seq.hist_cate.ids"]) == [[h("c1", 100), h("c2", 100), h("c3", 100)], [], [h("c2", 100)]]
    np.testing.assert_array_equal(block["seq.ids"], [[h("c1", 100)], [h("c2", 100)], [h("c3", 100)]])
    np.testing.assert_allclose(block["seq.hist_price.values"].values, [0.005, 0.05, 0.5, 0.007], rtol=1e-6)
    np.testing.assert_array_equal(block["seq.hist_price.lengths"], [[3], [0], [1]])
    # the same feature in two groups: the same arrays under each group's keys
    assert rows(block["wide.tags.ids"]) == rows(block["all.tags.ids"])
    assert TabularSpec.from_config(make_config(tmp_path)).block_columns()["all.kws.weights"] == ("float32", 0)


def test_loader_pads_ragged_columns_per_batch(tmp_path):
    config = make_config(tmp_path, train_batch_size=2)
    first, second = list(create_loader(config, "train"))
    assert first["all.tags.ids"].shape == (2, 2) and first["seq.hist_cate.ids"].shape == (2, 3)
    assert second["seq.hist_cate.ids"].shape == (1, 1)  # padded to the batch's own longest row
    assert first["all.kws.weights"].tolist() == [[0.5, 2.0], [1.0, 0.0]]  # 0 past the row's length
    assert first["all.tags.lengths"].tolist() == [[2], [0]]


def test_raw_sequence_with_boundaries_and_integer_ids(tmp_path):
    def edit(hp):
        hp["feature_config"]["features"][6].update(boundaries=[0.01, 0.1], embedding_dim=2)
        hp["feature_config"]["features"][3] = {"input_names": ["tags"], "feature_type": "TagFeature",
                                               "num_buckets": 10, "embedding_dim": 4, "separator": ";"}
    block = read_block(make_config(tmp_path, "1,u,c,1,3;7,a:1,c1|c2,5| 50 \n0,u,c,1, 0 ,a:1,c1,900\n", edit))
    assert rows(block["seq.hist_price.ids"]) == [[0, 1], [2]]  # (x - 0) / 1000 bucketised by [0.01, 0.1]
    assert "seq.hist_price.values" not in block
    assert rows(block["all.tags.ids"]) == [[3, 7], [0]]


def test_taobao_tag_features_as_easyrec_writes_them(tmp_path):
    # EasyRec's taobao sample: tag_category_list / tag_brand_list, '|'-separated, hash_bucket_size 100000, dim 16
    fields = [{"input_name": "clk", "input_type": "INT32"}, {"input_name": "brand", "input_type": "STRING"},
              {"input_name": "tag_category_list", "input_type": "STRING"},
              {"input_name": "tag_brand_list", "input_type": "STRING"}]
    features = [{"input_names": ["brand"], "feature_type": "IdFeature", "hash_bucket_size": 100000,
                 "embedding_dim": 16}]
    features += [{"input_names": [name], "feature_type": "TagFeature", "separator": "|", "hash_bucket_size": 100000,
                  "embedding_dim": 16} for name in ("tag_category_list", "tag_brand_list")]

    def edit(hp):
        hp["data_config"]["input_fields"], hp["feature_config"]["features"] = fields, features
        hp["model_config"]["feature_groups"] = [{"group_name": "all", "feature_names": [
            "brand", "tag_category_list", "tag_brand_list"], "wide_deep": "DEEP"}]
    text = "0,353787,4520|4520|6261|4282,247789|247789|353787|395203\n1,146115,,\n"
    config = make_config(tmp_path, text, edit, train_batch_size=8)
    block = read_block(config)
    assert rows(block["all.tag_category_list.ids"]) == [[h(v, 100000) for v in ("4520", "4520", "6261", "4282")], []]
    layer = FeatureEmbedding(TabularSpec.from_config(config))
    (out,) = layer(*[padded_batch(config)[k] for k in layer.input_names])
    assert out.shape == (2, 48) and layer.tables[0].weight.shape == (300000, 16)
    assert torch.equal(out[1, 16:], torch.zeros(32))  # empty tag cells pool to zeros (combiner sum)


@pytest.mark.parametrize("line, message", [
    ("1,u,c,1,x,a:x,c1,5\n", r"part-0\.txt:2: field 'kws' \(feature 'kws'\): weight 'x' is not a number"),
    ("1,u,c,1,x,a:inf,c1,5\n", r"part-0\.txt:2: field 'kws' \(feature 'kws'\): weight 'inf' is not a finite number"),
    ("1,u,c,1,x,a|b:1,c1,5\n", r"part-0\.txt:2: field 'kws' \(feature 'kws'\): tag 'a' is not key:weight"),
    ("1,u,c,1,x,a:1,c1,5|abc\n", r"part-0\.txt:2: field 'hist_price' \(feature 'hist_price'\): value 'abc' is not "
                                 r"a number"),
    ("1,u,c,1,x,a:1,c1|c2,5\n", r"part-0\.txt:2: sequence features 'hist_cate' and 'hist_price' of group 'seq' hold "
                                r"2 and 1 values"),
])
def test_bad_values_name_file_line_and_field(tmp_path, line, message):
    config = make_config(tmp_path, "1,u,c,1,x,a:1,c1,5\n" + line)
    with pytest.raises(DataFormatError, match=message):
        read_block(config)


@pytest.mark.parametrize("cell, message", [
    ("3|12", r"part-0\.txt:1: field 'tags' \(feature 'tags'\): id 12 outside \[0, num_buckets=10\)"),
    ("3|x", r"part-0\.txt:1: field 'tags' \(feature 'tags'\): id 'x' is not an integer"),
    ("99999999999999999999", r"id '99999999999999999999' is outside the int64 range"),
])
def test_integer_tag_ids_are_checked(tmp_path, cell, message):
    def edit(hp):
        hp["feature_config"]["features"][3] = {"input_names": ["tags"], "feature_type": "TagFeature",
                                               "num_buckets": 10, "embedding_dim": 4}
    with pytest.raises(DataFormatError, match=message):
        read_block(make_config(tmp_path, f"1,u,c,1,{cell},a:1,c1,5\n", edit))


def _feature(i: int, **values):
    return lambda hp: hp["feature_config"]["features"][i].update(values)


@pytest.mark.parametrize("edit, message", [
    (_feature(3, input_names=["price"]), r"features\[3\]\.input_names\[0\]': a TagFeature reads a STRING input field"),
    (_feature(4, combiner="meen"), r"features\[4\]\.combiner': expected one of sum, mean, sqrtn, got 'meen'; "
                                   r"did you mean 'mean'\?"),
    (_feature(3, separator=","), r"features\[3\]\.separator': ',' is also data_config\.separator"),
    (_feature(4, kv_separator="|"), r"features\[4\]\.kv_separator': must differ from separator '\|'"),
    (_feature(3, vocab_list=["a"]), r"features\[3\]\.hash_bucket_size': a TagFeature needs exactly one of"),
    (_feature(4, vocab_list=["a", "a"]), r"features\[4\]\.vocab_list': vocabulary entry 'a' appears twice"),
    (_feature(6, sequence_length=5), r"feature_groups\[1\]\.feature_names': the sequence features of group 'seq' .* "
                                     r"same sequence_length; got hist_cate: 3, hist_price: 5"),
    (_feature(5, embedding_dim=8), r"features\[5\]\.embedding_name': 'hist_cate' shares table 'cate' with 'cate_id' "
                                   r"\(features\[1\]\), which needs the same embedding_dim"),
    (_feature(5, kv_separator=":"), r"features\[5\]\.kv_separator': not a SequenceFeature key"),
    (_feature(5, sub_feature_type="TagFeature"), r"features\[5\]\.sub_feature_type': expected IdFeature or "
                                                 r"RawFeature"),
    (_feature(6, hash_bucket_size=10), r"features\[6\]\.hash_bucket_size': a sequence of numbers"),
    (_feature(5, sequence_combiner={"text_cnn": {}}), r"features\[5\]\.sequence_combiner'.*not supported"),
    (_feature(0, vocab_file="v.txt"), r"features\[0\]\.hash_bucket_size'.*exactly one of hash_bucket_size.*"
                                      r"vocab_file"),  # a vocabulary file replaces hashing, never beside it
    (_feature(5, max_seq_len=4), r"sequence_length and max_seq_len .* differ"),
])
def test_config_errors_name_the_key(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message):
        TabularSpec.from_config(make_config(tmp_path, edit=edit))


def test_vocab_list_id_feature_and_max_seq_len(tmp_path):
    def edit(hp):
        hp["feature_config"]["features"][0] = {"input_names": ["user_id"], "feature_type": "IdFeature",
                                               "vocab_list": ["u3", "u1"], "embedding_dim": 4}
        hp["feature_config"]["features"][5]["max_seq_len"] = hp["feature_config"]["features"][5].pop("sequence_length")
    config = make_config(tmp_path, edit=edit)
    block = read_block(config)
    np.testing.assert_array_equal(block["all.ids"], [[1], [0], [0]])  # u1 -> 1, u2 (unknown) -> 0, u3 -> 0
    assert TabularSpec.from_config(config).feature("hist_cate").sequence_length == 3


# --------------------------------------------------------------------- embedding
def test_tag_pooling_matches_hand_computation(tmp_path):
    config = make_config(tmp_path)
    spec = TabularSpec.from_config(config)
    torch.manual_seed(0)
    layer = FeatureEmbedding(spec, ["all", "seq"])
    batch = padded_batch(config)
    table = layer.tables[0].weight  # one width: user_id 0..999, tags 1000..1999, kws 2000..2002, cate 2003..2102
    assert table.shape == (1000 + 1000 + 3 + 100, 4)
    tags = torch.stack([table[1000 + h("x", 1000)] + table[1000 + h("y", 1000)], torch.zeros(4),
                        2 * table[1000 + h("x", 1000)]])
    # mean over weights, weight <= 0 dropped (TensorFlow's rule): row 0: (0.5 a + 2 z->a) / 2.5, row 2: a only
    kws = torch.stack([(0.5 * table[2000] + 2 * table[2000]) / 2.5, table[2001], table[2000]])
    features, sequences, lengths = layer.group_features("all", batch)
    assert sequences == [] and lengths is None and [f.shape[1] for f in features] == [4, 4, 1, 4]
    torch.testing.assert_close(features[1], tags)
    torch.testing.assert_close(features[3], kws)
    torch.testing.assert_close(features[2], torch.tensor([[25.0], [7.0], [3.0]]))
    # forward's layout: ids, projected raw values, pooled tags, plain values
    (out, ) = FeatureEmbedding(spec, ["all"])(*[batch[k] for k in spec.group_inputs("all")])
    assert out.shape == (3, 13)
    with pytest.raises(ValueError, match="group 'seq' holds the sequence feature 'hist_cate'"):
        layer(*[batch[k] for k in layer.input_names])


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
def test_weighted_tag_combiners(tmp_path, combiner):
    config = make_config(tmp_path, edit=_feature(4, combiner=combiner))
    layer = FeatureEmbedding(TabularSpec.from_config(config), ["all"])
    table = layer.tables[0].weight[2000:2003]
    out = layer.group_features("all", padded_batch(config))[0][3]
    row0, row2 = 0.5 * table[0] + 2 * table[0], -1 * table[2] + 3 * table[0]
    expected = {"sum": [row0, table[1], row2],
                "mean": [row0 / 2.5, table[1], table[0]],
                "sqrtn": [row0 / (0.5 ** 2 + 2 ** 2) ** 0.5, table[1], table[0]]}[combiner]
    torch.testing.assert_close(out, torch.stack(expected))


def test_sequences_share_the_table_named_by_embedding_name(tmp_path):
    config = make_config(tmp_path)
    layer = FeatureEmbedding(TabularSpec.from_config(config), ["seq"])
    batch = padded_batch(config)
    assert layer.tables[0].weight.shape == (100, 4)  # cate_id and hist_cate: one table of 100 rows
    features, (hist, price), lengths = layer.group_features("seq", batch)
    table = layer.tables[0].weight
    assert hist.shape == (3, 3, 4) and price.shape == (3, 3, 1) and lengths.tolist() == [3, 0, 1]
    torch.testing.assert_close(features[0], table[[h("c1", 100), h("c2", 100), h("c3", 100)]])
    torch.testing.assert_close(hist[0], table[[h("c1", 100), h("c2", 100), h("c3", 100)]])
    torch.testing.assert_close(hist[2], torch.stack([table[h("c2", 100)], torch.zeros(4), torch.zeros(4)]))
    assert torch.equal(hist[1], torch.zeros(3, 4))  # zeros past each row's length
    torch.testing.assert_close(price[:, :, 0], torch.tensor([[0.005, 0.05, 0.5], [0, 0, 0], [0.007, 0, 0]]))
    assert layer.id_bounds == {"seq.ids": [100], "seq.hist_cate.ids": 100}  # one bound for every position
    # penalty: the id lookups, and the sequence's steps (zero past the lengths)
    expected = 0.5 * (features[0].pow(2).sum() + hist.pow(2).sum())
    torch.testing.assert_close(layer.batch_penalty(batch), expected)


# --------------------------------------------------------------------- input layer
@pytest.fixture
def setup(tmp_path):
    config = make_config(tmp_path)
    torch.manual_seed(0)
    embedding = FeatureEmbedding(TabularSpec.from_config(config))
    return embedding, padded_batch(config)


def build(embedding, group, training=False, **values) -> InputLayer:
    layer = InputLayer(embedding, group, options(**values))
    return layer.train(training)


def test_input_layer_forms(setup):
    embedding, batch = setup
    features = embedding.group_features("all", batch)[0]
    flat = torch.cat(features, 1)
    default = InputLayer(embedding, "all", None)
    assert default.input_names == embedding.spec.group_inputs("all") and default.dims == [4, 4, 1, 4]
    torch.testing.assert_close(default(batch), flat)  # the group's order: user_id, tags, price, kws
    # the 2-D form is computed the fused way (forward's layout: ids, projected, tags, plain) and put back in order
    assert embedding._plans[embedding.group_names.index("all")]["flat_perm"]
    torch.testing.assert_close(embedding.group_flat("all", batch), flat, rtol=0, atol=0)
    eq = torch.cat(embedding.group_features("eq", batch)[0], 1)
    torch.testing.assert_close(embedding.group_flat("eq", batch), eq)
    listed = build(embedding, "all", only_output_feature_list=True)(batch)
    assert [tuple(t.shape) for t in listed] == [(3, 4), (3, 4), (3, 1), (3, 4)]
    both = build(embedding, "all", output_2d_tensor_and_feature_list=True)(batch)
    torch.testing.assert_close(both[0], flat)
    assert len(both[1]) == 4 and torch.equal(both[1][3], features[3])
    stacked = build(embedding, "eq", only_output_3d_tensor=True)(batch)
    torch.testing.assert_close(stacked, torch.stack(embedding.group_features("eq", batch)[0], 1))
    assert stacked.shape == (3, 3, 4)
    seq, lengths, normal = build(embedding, "seq", output_seq_and_normal_feature=True)(batch)
    features, (hist, price), _ = embedding.group_features("seq", batch)
    assert seq.shape == (3, 3, 5) and lengths.dtype == torch.int64 and lengths.tolist() == [3, 0, 1]
    torch.testing.assert_close(seq, torch.cat([hist, price], -1))
    torch.testing.assert_close(normal, features[0])


def test_input_layer_norms_and_dropouts(setup):
    embedding, batch = setup
    flat = torch.cat(embedding.group_features("all", batch)[0], 1).detach()
    bn = build(embedding, "all", training=True, do_batch_norm=True)
    torch.testing.assert_close(bn(batch), F.batch_norm(flat, None, None, training=True), atol=1e-5, rtol=1e-5)
    parts = build(embedding, "all", training=True, do_batch_norm=True, only_output_feature_list=True)(batch)
    torch.testing.assert_close(torch.cat(parts, 1), F.batch_norm(flat, None, None, training=True), atol=1e-5,
                               rtol=1e-5)
    ln = build(embedding, "all", do_layer_norm=True)
    torch.testing.assert_close(ln(batch), F.layer_norm(flat, (13,)))  # over the row for the 2-D form
    listed = build(embedding, "all", do_layer_norm=True, only_output_feature_list=True)(batch)
    torch.testing.assert_close(listed[0], F.layer_norm(flat[:, :4], (4,)))  # per feature for the list
    dropout = build(embedding, "all", dropout_rate=0.5)
    torch.testing.assert_close(dropout(batch), flat)  # evaluation: identity
    torch.manual_seed(1)
    out = dropout.train()(batch)
    assert ((out == 0) | torch.isclose(out, 2 * flat)).all() and (out == 0).any()
    torch.manual_seed(3)
    layer = build(embedding, "all", training=True, feature_dropout_rate=0.5, only_output_feature_list=True)
    original = embedding.group_features("all", batch)[0]
    draws = set()
    for _ in range(8):  # whole features dropped (one draw per feature per batch), the others scaled by 1 / (1 - rate)
        parts = layer(batch)
        kept = tuple(bool(p.abs().sum() > 0) for p in parts)
        draws.add(kept)
        for p, o, k in zip(parts, original, kept):
            torch.testing.assert_close(p, 2 * o if k else torch.zeros_like(o))
    assert len(draws) > 1 and any(not all(k) for k in draws)


def test_input_layer_wide_output_dim(setup):
    embedding, batch = setup
    parts = build(embedding, "wide", wide_output_dim=1, only_output_feature_list=True)(batch)
    assert [tuple(p.shape) for p in parts] == [(3, 1)] * 3
    wide = embedding.wide_embedding
    assert wide.dims == [1] and wide.tables[0].weight.shape == (2000, 1)  # user_id and tags, apart from the deep rows
    torch.testing.assert_close(parts[2], batch["wide.values"] * wide.raw_weights[0])  # price * v
    tags = wide.tables[0].weight[1000:]
    torch.testing.assert_close(parts[1][0], tags[h("x", 1000)] + tags[h("y", 1000)])  # summed
    assert build(embedding, "wide", wide_output_dim=1)(batch).shape == (3, 3)
    with pytest.raises(ConfigError, match=r"input_layer\.wide_output_dim': wide_output_dim 2 differs from the 1"):
        build(embedding, "wide", wide_output_dim=2)
    with pytest.raises(ConfigError, match=r"wide_output_dim': wide weights are read from a wide_deep: WIDE group; "
                                          r"'all' is DEEP"):
        build(embedding, "all", wide_output_dim=1)


@pytest.mark.parametrize("group, values, message", [
    ("all", {"only_output_3d_tensor": True}, r"only_output_3d_tensor': stacking the features of group 'all' needs one "
                                             r"width .*got user_id: 4, tags: 4, price: 1, kws: 4"),
    ("all", {"only_output_feature_list": True, "only_output_3d_tensor": True}, r"one output form"),
    ("all", {"do_batch_norm": True, "do_layer_norm": True}, r"exclude each other"),
    ("all", {"dropout_rate": 1.0}, r"dropout_rate': expected a rate in \[0, 1\)"),
    ("all", {"only_output_feature_lst": True}, r"did you mean '.*only_output_feature_list'"),
    ("seq", {}, r"feature group 'seq' holds the sequence feature\(s\) \['hist_cate', 'hist_price'\]"),
    ("all", {"output_seq_and_normal_feature": True}, r"group 'all' holds no SequenceFeature"),
    ("seq", {"output_seq_and_normal_feature": True, "do_layer_norm": True}, r"do_layer_norm': .* does not apply"),
    ("seq", {"output_seq_and_normal_feature": True, "concat_seq_feature": False}, r"concat_seq_feature'"),
])
def test_input_layer_option_errors(setup, group, values, message):
    with pytest.raises(ConfigError, match=message):
        InputLayer(setup[0], group, options(**values))


class TwoBlocks(nn.Module):
    """A model owning the embedding, with the input layers of a DIN-like backbone (positional inputs, as exported)."""

    def __init__(self, spec: TabularSpec) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(spec)
        self.all = InputLayer(self.embedding, "all", options(only_output_feature_list=True))
        self.seq = InputLayer(self.embedding, "seq", options(output_seq_and_normal_feature=True))
        self.wide = InputLayer(self.embedding, "wide", options(wide_output_dim=1))
        self.input_names = list(dict.fromkeys(self.all.input_names + self.seq.input_names + self.wide.input_names))

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch = dict(zip(self.input_names, inputs))
        seq, lengths, normal = self.seq(batch)
        return torch.cat(self.all(batch), 1), seq, lengths, normal, self.wide(batch)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch 2.13 deprecates tracing and this exporter
def test_trace_and_onnx_parity(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    config = make_config(tmp_path, LINES + "1,u4,c9,8,q|r|s|t,b:2|c:1|a:1,c5|c6,1|2\n", train_batch_size=2)
    spec = TabularSpec.from_config(config)
    torch.manual_seed(0)
    model = TwoBlocks(spec).eval()
    first, second = list(create_loader(config, "train"))
    assert first["seq.hist_cate.ids"].shape[1] != second["seq.hist_cate.ids"].shape[1]
    example = tuple(first[k] for k in model.input_names)
    traced = torch.jit.trace(model, example, check_trace=False)
    dynamic = {k: {0: "batch", **({1: f"{k}_length"} if spec.block_columns()[k][1] == 0 else {})}
               for k in model.input_names}
    path = tmp_path / "layer.onnx"
    torch.onnx.export(model, example, str(path), input_names=model.input_names,
                      output_names=["flat", "seq", "lengths", "normal", "wide"], dynamic_axes=dynamic,
                      opset_version=OPSET, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    used = {i.name for i in session.get_inputs()}
    for batch in (first, second):
        inputs = tuple(batch[k] for k in model.input_names)
        eager = [t.detach().numpy() for t in model(*inputs)]
        for got in ([t.detach().numpy() for t in traced(*inputs)],
                    session.run(None, {k: batch[k].numpy() for k in model.input_names if k in used})):
            for a, b in zip(eager, got):
                assert a.shape == b.shape
                np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_example_inputs_build_every_form(tmp_path):
    spec = TabularSpec.from_config(make_config(tmp_path))
    model = TwoBlocks(spec).eval()
    batch = example_inputs(spec, model.input_names, rows=2, length=3)
    assert batch["seq.hist_cate.ids"].shape == (2, 3) and batch["all.kws.weights"].tolist() == [[1.0] * 3] * 2
    flat, seq, lengths, normal, wide = model(*[batch[k] for k in model.input_names])
    assert flat.shape == (2, 13) and seq.shape == (2, 3, 5) and lengths.tolist() == [3, 3] and wide.shape == (2, 3)


def test_binary_cache_keeps_ragged_columns(tmp_path):
    config = make_config(tmp_path, LINES * 20, train_batch_size=8, cache_dir="cache")
    first = list(create_loader(config, "train"))
    second = list(create_loader(config, "train"))  # memory-mapped from the cache
    assert any((tmp_path / "cache").iterdir()) and len(first) == len(second) == 8
    for a, b in zip(first, second):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_rank_fields_take_pooled_tags(tmp_path):
    from recstack.easyrec.tabular_fields import TabularFields

    config = make_config(tmp_path)
    spec = TabularSpec.from_config(config)
    fields = TabularFields(spec, ["eq"])
    batch = padded_batch(config)
    flat, dense = fields(*[batch[k] for k in fields.input_names])
    assert flat.shape == (3, 3, 4) and dense.shape == (3, 0)
    (group,) = fields.embedding(*[batch[k] for k in fields.input_names])
    torch.testing.assert_close(flat.reshape(3, 12), group)  # user_id, then the pooled tags and kws
