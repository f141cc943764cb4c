"""The config-driven tabular reader (EasyRec's CSVInput) and the feature-embedding layer built from the same config."""

from __future__ import annotations

import copy
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from recstack.config import ConfigError, from_dict
from recstack.data import create_loader
from recstack.data.base import DataFormatError
from recstack.data.hashing import stable_hash
from recstack.easyrec.feature_embedding import FeatureEmbedding
from recstack.easyrec.features import TabularSpec
from recstack.easyrec.tabular import TabularReader

FIELDS = [
    {"input_name": "click", "input_type": "INT32"},
    {"input_name": "time", "input_type": "FLOAT"},
    {"input_name": "city", "input_type": "STRING", "default_val": "unk"},
    {"input_name": "age", "input_type": "INT64", "default_val": "7"},
    {"input_name": "score", "input_type": "DOUBLE"},
    {"input_name": "tag", "input_type": "INT32"},  # used by no feature: counted, not type-checked
]
FEATURES = [
    {"input_names": ["city"], "feature_type": "IdFeature", "hash_bucket_size": 1000, "embedding_dim": 4},
    {"input_names": ["age"], "feature_type": "IdFeature", "num_buckets": 100, "embedding_dim": 4},
    {"input_names": ["age"], "feature_name": "age_bucket", "feature_type": "RawFeature",
     "boundaries": [10, 20, 30], "embedding_dim": 4},
    {"input_names": ["score"], "feature_type": "RawFeature", "min_val": 0, "max_val": 10},
]
HP = {
    "data_config": {"separator": ",", "label_fields": ["click", "time"], "input_fields": FIELDS},
    "feature_config": {"features": FEATURES},
    "model_config": {"feature_groups": [{"group_name": "all", "feature_names": ["city", "age", "age_bucket", "score"],
                                         "wide_deep": "DEEP"}]},
}

LINES = ("1,2.5,beijing,25,3.0,x\n"
         "0,,,,5,y\n"
         "\n"
         "1,1.25,shanghai,10,10,\n")


def make_config(tmp_path: Path, text: str = LINES, edit=None, **runner):
    hp = copy.deepcopy(HP)
    if edit is not None:
        edit(hp)
    (tmp_path / "train").mkdir(exist_ok=True)
    (tmp_path / "train" / "part-0.txt").write_text(text)
    return from_dict({"runner": {"train_data_dir": "train", "train_reader_path": "tabular", **runner},
                      "hyper_parameters": hp}, config_dir=tmp_path)


def read_all(config) -> dict[str, np.ndarray]:
    reader = TabularReader(sorted(str(p) for p in (config.config_dir / "train").iterdir()), config)
    blocks = list(reader.iter_blocks())
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


def h(text: str, buckets: int = 1000) -> int:
    return zlib.crc32(text.encode("utf-8")) % buckets


def test_hashing_is_stable_crc32():
    # pinned: the same id in every process, on every machine (Python's hash() is salted)
    assert stable_hash("beijing", 1000) == 517
    assert stable_hash("shanghai", 1000) == 323
    assert stable_hash("city_017", 1000) == h("city_017")


def test_parses_hand_written_lines_exactly(tmp_path):
    block = read_all(make_config(tmp_path))
    assert sorted(block) == ["all.ids", "all.values", "click", "time"]
    np.testing.assert_array_equal(block["click"], np.array([[1], [0], [1]], np.float32))
    np.testing.assert_array_equal(block["time"], np.array([[2.5], [0.0], [1.25]], np.float32))  # empty -> 0.0
    # city hashed (empty -> default "unk"), age as an id (empty -> default 7), age bucketised by [10, 20, 30]
    assert block["all.ids"].dtype == np.int64
    np.testing.assert_array_equal(block["all.ids"], [[517, 25, 2], [h("unk"), 7, 0], [323, 10, 1]])
    # score normalised with min_val 0, max_val 10
    assert block["all.values"].dtype == np.float32
    np.testing.assert_allclose(block["all.values"], [[0.3], [0.5], [1.0]], rtol=1e-7)


def test_integer_fields_hash_their_decimal_text_and_blocks_batch(tmp_path):
    def edit(hp):
        hp["feature_config"]["features"][1] = {"input_names": ["age"], "feature_type": "IdFeature",
                                               "hash_bucket_size": 50, "embedding_dim": 4}
    config = make_config(tmp_path, edit=edit, train_batch_size=2)
    block = read_all(config)
    np.testing.assert_array_equal(block["all.ids"][:, 1], [h("25", 50), h("7", 50), h("10", 50)])
    batches = list(create_loader(config, "train"))
    assert [len(b["click"]) for b in batches] == [2, 1]
    assert batches[0]["all.ids"].dtype == torch.int64 and batches[0]["all.values"].dtype == torch.float32


def test_tab_separator_and_escaped_separators(tmp_path):
    def edit(hp):
        hp["data_config"]["separator"] = "\\t"  # as written in a single-quoted YAML string or EasyRec's config
    block = read_all(make_config(tmp_path, LINES.replace(",", "\t"), edit))
    np.testing.assert_array_equal(block["all.ids"][:, 0], [517, h("unk"), 323])


@pytest.mark.parametrize("text, message", [
    ("1,2.5,beijing,25,3.0,x\n1,2.5,beijing,25\n", r"part-0.txt:2: expected 6 ','-separated fields \(click, time, "
                                                   r"city, age, \.\.\.\), got 4: '1,2.5,beijing,25'"),
    ("1,2.5,beijing,25,3.0,x\n\n1,2.5,beijing,abc,3,x\n",
     r"part-0.txt:3: field 'age' \(INT64\) is not an integer: 'abc'"),
    ("99999999999,2.5,beijing,25,3.0,x\n", r"part-0.txt:1: field 'click' \(INT32\) is out of range"),
    ("1,fast,beijing,25,3.0,x\n", r"part-0.txt:1: field 'time' \(FLOAT\) is not a number: 'fast'"),
    ("1,2.5,beijing,25,3.0,x\n1,nan,beijing,25,3.0,x\n", r"part-0.txt:2: label 'time' is not a finite number"),
    ("1,2.5,beijing,150,3.0,x\n",
     r"part-0.txt:1: field 'age' \(feature 'age'\): id 150 outside \[0, num_buckets=100\)"),
    ("1,2.5,beijing,-5,3.0,x\n", r"part-0.txt:1: field 'age' \(feature 'age'\): id -5 outside"),
    ("1,2.5,beijing,25,inf,x\n", r"part-0.txt:1: field 'score' \(feature 'score'\) is not a finite number"),
])
def test_bad_lines_name_file_line_and_field(tmp_path, text, message):
    config = make_config(tmp_path, text)
    with pytest.raises(DataFormatError, match=message):
        read_all(config)


def test_unused_fields_are_counted_not_converted(tmp_path):
    block = read_all(make_config(tmp_path, "1,2.5,beijing,25,3.0,not-an-int\n"))
    assert block["click"].shape == (1, 1)


@pytest.mark.parametrize("edit, message", [
    (lambda hp: hp["feature_config"]["features"][0].update(input_names=["citty"]),
     r"features\[0\]\.input_names\[0\]': unknown input field 'citty'; did you mean 'city'\?"),
    (lambda hp: hp["model_config"]["feature_groups"][0]["feature_names"].append("agee"),
     r"feature_groups\[0\]\.feature_names\[4\]': unknown feature 'agee'; did you mean 'age'\?"),
    (lambda hp: hp["feature_config"]["features"][0].update(hash_bucket_sise=10),
     r"unknown key 'hyper_parameters\.feature_config\.features\[0\]\.hash_bucket_sise'; "
     r"did you mean 'hyper_parameters\.feature_config\.features\[0\]\.hash_bucket_size'\?"),
    (lambda hp: hp["data_config"]["label_fields"].append("clik"),
     r"label_fields\[2\]': unknown input field 'clik'; did you mean 'click'\?"),
    (lambda hp: hp["data_config"]["input_fields"][1].update(input_type="FLOATT"),
     r"input_fields\[1\]\.input_type': unknown input type 'FLOATT'; did you mean 'FLOAT'\?"),
    (lambda hp: hp["data_config"]["input_fields"][3].update(default_val="seven"),
     r"input_fields\[3\]\.default_val': expected a default value of type INT64, got 'seven'"),
    (lambda hp: hp["data_config"].update(batch_size=32), r"data_config\.batch_size'.*runner\.train_batch_size"),
    (lambda hp: hp["feature_config"]["features"][0].update(hash_bucket_size=0),
     r"IdFeature needs exactly one of hash_bucket_size .* or num_buckets"),
    (lambda hp: hp["feature_config"]["features"].append({"input_names": ["click"], "feature_type": "RawFeature"}),
     r"'click' is a label field"),
    (lambda hp: hp["feature_config"]["features"][3].update(boundaries=[3, 1]), r"strictly increasing"),
    (lambda hp: hp["data_config"].update(separator="::"), r"separator.*expected one character"),
])
def test_config_errors_name_the_key(tmp_path, edit, message):
    config = make_config(tmp_path, edit=edit)
    with pytest.raises(ConfigError, match=message):
        TabularSpec.from_config(config)


def test_binary_cache_gives_the_same_batches(tmp_path):
    config = make_config(tmp_path, LINES * 50, train_batch_size=16, cache_dir="cache")
    first = list(create_loader(config, "train"))
    second = list(create_loader(config, "train"))  # from the cache
    assert any((tmp_path / "cache").iterdir())
    assert len(first) == len(second) == 10
    for a, b in zip(first, second):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_feature_embedding_concatenates_group_in_the_readers_layout(tmp_path):
    config = make_config(tmp_path)
    spec = TabularSpec.from_config(config)
    block = read_all(config)
    torch.manual_seed(0)
    layer = FeatureEmbedding(spec)
    assert layer.input_names == ["all.ids", "all.values"] and layer.output_dims == {"all": 13}
    ids, values = torch.from_numpy(block["all.ids"]), torch.from_numpy(block["all.values"])
    (out,) = layer(ids, values)
    table = layer.tables[0].weight  # one fused table: city rows 0..999, age 1000..1099, age_bucket 1100..1103
    assert table.shape == (1000 + 100 + 4, 4)
    expected = torch.cat([table[ids[:, 0]], table[1000 + ids[:, 1]], table[1100 + ids[:, 2]], values], dim=1)
    assert torch.equal(out, expected)
    # the embedding penalty is sum(e^2)/2 over the looked-up id embeddings only
    torch.testing.assert_close(layer.embedding_penalty(ids, values), 0.5 * expected[:, :12].pow(2).sum())


def test_feature_embedding_mixed_widths_and_projected_raw_values(tmp_path):
    def edit(hp):
        hp["feature_config"]["features"][1]["embedding_dim"] = 2
        hp["feature_config"]["features"][3]["embedding_dim"] = 3  # value * learned vector
    config = make_config(tmp_path, edit=edit)
    spec = TabularSpec.from_config(config)
    block = read_all(config)
    layer = FeatureEmbedding(spec)
    ids, values = torch.from_numpy(block["all.ids"]), torch.from_numpy(block["all.values"])
    (out,) = layer(ids, values)
    assert layer.dims == [4, 2] and out.shape == (3, 4 + 4 + 2 + 3) == (3, layer.output_dims["all"])
    t4, t2 = layer.tables[0].weight, layer.tables[1].weight
    expected = torch.cat([t4[ids[:, 0]], t4[1000 + ids[:, 2]], t2[ids[:, 1]],
                          values[:, :1] * layer.raw_weights[0]], dim=1)
    assert torch.equal(out, expected)


def test_real_census_lines_parse_exactly(shared_data, tmp_path):
    """Real lines of the UCI census raw file (comma + space separated, named columns) through the reader."""
    raw = (shared_data / "external" / "census_income_raw_sample.txt").read_text().splitlines()[:20]
    rows = [line.split(", ") for line in raw]
    width = len(rows[0])
    text = "".join(",".join(r) + "\n" for r in rows)
    fields = [{"input_name": "age", "input_type": "INT32"}, {"input_name": "class_worker", "input_type": "STRING"}]
    fields += [{"input_name": f"c{i}", "input_type": "STRING"} for i in range(2, width)]
    fields[24]["input_type"] = "DOUBLE"  # the instance weight, e.g. 1700.09
    hp = {"data_config": {"label_fields": ["age"], "input_fields": fields},
          "feature_config": {"features": [
              {"input_names": ["class_worker"], "feature_type": "IdFeature", "hash_bucket_size": 97,
               "embedding_dim": 4},
              {"input_names": ["c24"], "feature_type": "RawFeature"}]},
          "model_config": {"feature_groups": [{"group_name": "all", "feature_names": ["class_worker", "c24"]}]}}
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "part-0.txt").write_text(text)
    config = from_dict({"runner": {"train_data_dir": "train", "train_reader_path": "tabular"}, "hyper_parameters": hp},
                       config_dir=tmp_path)
    block = read_all(config)
    np.testing.assert_array_equal(block["age"][:, 0], [float(r[0]) for r in rows])
    np.testing.assert_array_equal(block["all.ids"][:, 0], [stable_hash(r[1], 97) for r in rows])
    np.testing.assert_allclose(block["all.values"][:, 0], [float(r[24]) for r in rows], rtol=1e-6)
