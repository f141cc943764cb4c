"""Parquet input: ``data_config.input_type: ParquetInput`` (the tabular reader), the ``slot_parquet`` reader,
the input-type switch of ``resolve_reader``, the converters (tools/to_parquet.py, generate.py --format parquet)
and DeepFM's config_parquet.yaml."""

from __future__ import annotations

import copy
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import recstack.api.data  # noqa: F401  (registers the memory reader)
from recstack.config import ConfigError, from_dict, load_config
from recstack.data import create_loader
from recstack.data.base import DataFormatError, RaggedArray, list_data_files
from recstack.data.factory import create_reader, resolve_reader
from recstack.data.libsvm import LibSVMReader
from recstack.data.parquet import write_parquet
from recstack.data.slot import SlotReader
from recstack.data.slot_parquet import SlotParquetReader
from recstack.data.to_parquet import convert
from recstack.easyrec.group_rtp import GroupRTPReader
from recstack.easyrec.tabular import TabularReader
from recstack.modules import load_module

REPO = Path(__file__).resolve().parents[1]
DEEPFM = REPO / "models" / "rank" / "deepfm"

FIELDS = [{"input_name": name, "input_type": kind} for name, kind in [
    ("clk", "INT32"), ("user_id", "STRING"), ("item", "INT64"), ("price", "DOUBLE"), ("tags", "STRING"),
    ("kws", "STRING"), ("hist_item", "STRING"), ("hist_price", "STRING"), ("unused", "STRING")]]
FIELDS[1]["default_val"] = "nobody"
FIELDS[3]["default_val"] = "2.5"
FEATURES = [
    {"input_names": ["user_id"], "feature_type": "IdFeature", "hash_bucket_size": 1000, "embedding_dim": 4},
    {"input_names": ["item"], "feature_type": "IdFeature", "num_buckets": 50, "embedding_dim": 4},
    {"input_names": ["price"], "feature_type": "RawFeature", "min_val": 0, "max_val": 100},
    {"input_names": ["tags"], "feature_type": "TagFeature", "hash_bucket_size": 1000, "embedding_dim": 4},
    {"input_names": ["kws"], "feature_type": "TagFeature", "vocab_list": ["a", "b", "c"], "kv_separator": ":",
     "embedding_dim": 4},
    {"input_names": ["hist_item"], "feature_type": "SequenceFeature", "num_buckets": 50, "embedding_dim": 4,
     "sequence_length": 3},
    {"input_names": ["hist_price"], "feature_type": "SequenceFeature", "sub_feature_type": "RawFeature",
     "min_val": 0, "max_val": 100, "sequence_length": 3},
]
GROUPS = [{"group_name": "all", "feature_names": ["user_id", "item", "price", "tags", "kws"]},
          {"group_name": "seq", "feature_names": ["hist_item", "hist_price"]}]
HP = {"data_config": {"separator": ",", "label_fields": ["clk"], "input_fields": FIELDS},
      "feature_config": {"features": FEATURES}, "model_config": {"feature_groups": GROUPS}}
# clk,user_id,item,price,tags,kws,hist_item,hist_price,unused (empty fields: defaults; sequences newest first)
LINES = ["1,u1,7,25,x|y,a:0.5|z:2,3|4|5|6,5|50|20|1,q",
         "0,,8,,,b:1,,,",
         "1,u3,9,3.5,x||x|,c:-1|a:3,12,7,q",
         "0,u4,0,99,y,,1|2,10|20,q"]
ROWS = {  # the same rows as Parquet columns: nulls for the empty fields, list columns for tags / sequences
    "clk": pa.array([1, 0, 1, 0], pa.int8()),
    "user_id": pa.array(["u1", None, "u3", "u4"]),
    "item": pa.array([7, 8, 9, 0], pa.int32()),
    "price": pa.array([25.0, None, 3.5, 99.0], pa.float32()),
    "tags": pa.array([["x", "y"], None, ["x", "", "x"], ["y"]], pa.list_(pa.string())),
    "kws": pa.array(["a:0.5|z:2", "b:1", "c:-1|a:3", ""]),
    "hist_item": pa.array([[3, 4, 5, 6], [], [12], [1, 2]], pa.list_(pa.int64())),
    "hist_price": pa.array([[5.0, 50.0, 20.0, 1.0], None, [7.0], [10.0, 20.0]], pa.list_(pa.float64())),
}


def config_for(tmp_path: Path, data: str, input_type: str = "ParquetInput", edit=None, **runner):
    hp = copy.deepcopy(HP)
    hp["data_config"]["input_type"] = input_type
    if edit is not None:
        edit(hp)
    return from_dict({"runner": {"train_data_dir": data, **runner}, "hyper_parameters": hp}, config_dir=tmp_path)


def write_rows(path: Path, columns: dict, row_group_rows: int = 100_000) -> Path:
    table = pa.table(columns)
    write_parquet(path, [table], table.schema, row_group_rows)
    return path


def csv_and_parquet(tmp_path: Path, columns: dict | None = None) -> tuple[dict, dict]:
    (tmp_path / "csv").mkdir(parents=True)
    (tmp_path / "csv" / "part-0.txt").write_text("\n".join(LINES) + "\n")
    write_rows(tmp_path / "pq" / "part-0.parquet", ROWS if columns is None else columns)
    csv = create_reader(config_for(tmp_path, "csv", "CSVInput"), "train")
    parquet = create_reader(config_for(tmp_path, "pq"), "train")
    assert isinstance(csv, TabularReader) and not csv.parquet and parquet.parquet
    return joined(csv.iter_blocks()), joined(parquet.iter_blocks())


def joined(blocks) -> dict:
    blocks = list(blocks)
    out = {}
    for key in blocks[0]:
        parts = [b[key] for b in blocks]
        out[key] = RaggedArray.concatenate(parts) if isinstance(parts[0], RaggedArray) else np.concatenate(parts)
    return out


def assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        if isinstance(a[key], RaggedArray):
            assert isinstance(b[key], RaggedArray), key
            assert a[key].dtype == b[key].dtype, key
            np.testing.assert_array_equal(a[key].values, b[key].values, err_msg=key)
            np.testing.assert_array_equal(a[key].offsets, b[key].offsets, err_msg=key)
        else:
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# --------------------------------------------------------------------- ParquetInput == CSVInput
def test_parquet_rows_give_the_csv_blocks(tmp_path):
    csv, parquet = csv_and_parquet(tmp_path)
    assert_same(csv, parquet)
    # defaults for nulls / empty fields, list columns split like the separated text, sequences truncated to 3
    np.testing.assert_array_equal(parquet["all.values"][:, 0], np.float32([0.25, 0.025, 0.035, 0.99]))
    assert parquet["all.ids"][1, 0] == parquet["all.ids"][1, 0] and csv["all.ids"][1, 1] == 8
    np.testing.assert_array_equal(parquet["all.tags.lengths"][:, 0], [2, 0, 2, 1])
    np.testing.assert_array_equal(parquet["seq.hist_item.lengths"][:, 0], [3, 0, 1, 2])
    np.testing.assert_array_equal(parquet["seq.hist_item.ids"].values, [3, 4, 5, 12, 1, 2])
    np.testing.assert_allclose(parquet["seq.hist_price.values"].values, np.float32([.05, .5, .2, .07, .1, .2]))


def test_list_columns_equal_separated_string_columns(tmp_path):
    as_text = dict(ROWS, tags=pa.array(["x|y", None, "x||x|", "y"]), hist_item=pa.array(["3|4|5|6", "", "12", "1|2"]),
                   hist_price=pa.array(["5|50|20|1", None, "7", "10|20"]))
    _, lists = csv_and_parquet(tmp_path / "a")
    _, strings = csv_and_parquet(tmp_path / "b", as_text)
    assert_same(lists, strings)


def test_the_null_default_of_a_string_field_and_string_numbers(tmp_path):
    columns = dict(ROWS, item=pa.array(["7", "8", " 9", "0"]), price=pa.array(["25", "", "3.5", "99"]))
    csv, parquet = csv_and_parquet(tmp_path, columns)
    assert_same(csv, parquet)
    user = create_reader(config_for(tmp_path, "pq"), "train")
    block = next(user.iter_blocks())
    nobody = zlib_id("nobody")
    assert block["all.ids"][1, 0] == nobody


def zlib_id(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode()) % 1000


def test_converter_round_trip_writes_list_columns_and_same_blocks(tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "part-0.txt").write_text("\n".join(LINES) + "\n")
    config = config_for(tmp_path, "csv", "CSVInput")
    [(out, rows)] = convert(config, "tabular", tmp_path / "csv", tmp_path / "converted")
    assert rows == 4
    schema = pq.read_schema(out)
    assert schema.field("tags").type == pa.list_(pa.string()) and schema.field("unused").type == pa.string()
    assert schema.field("hist_item").type == pa.list_(pa.int64())  # num_buckets ids: integers
    csv = joined(create_reader(config, "train").iter_blocks())
    assert_same(csv, joined(create_reader(config_for(tmp_path, "converted"), "train").iter_blocks()))


# --------------------------------------------------------------------- files, streaming, loader
def test_folder_glob_and_single_file(tmp_path):
    for i in range(3):
        write_rows(tmp_path / "data" / f"part-{i}.parquet", ROWS)
    (tmp_path / "data" / "notes.md").write_text("not data")
    assert len(list_data_files(tmp_path / "data")) == 4
    assert [Path(p).name for p in list_data_files(str(tmp_path / "data" / "*.parquet"))] == \
        ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    assert list_data_files(tmp_path / "data" / "part-1.parquet") == [str(tmp_path / "data" / "part-1.parquet")]
    with pytest.raises(DataFormatError, match=r"pattern .*\*\.orc' matches no data files"):
        list_data_files(str(tmp_path / "data" / "*.orc"))
    for data in ("data/*.parquet", "data/part-2.parquet"):
        reader = create_reader(config_for(tmp_path, data), "train")
        assert sum(len(b["clk"]) for b in reader.iter_blocks()) == 4 * len(reader.file_list)


def test_row_groups_stream_as_blocks_never_the_whole_file(tmp_path, monkeypatch):
    n = 2500
    rng = np.random.default_rng(0)
    columns = {name: pa.array(np.resize(np.asarray(col.to_pylist(), dtype=object), n).tolist(), col.type)
               for name, col in ROWS.items()}
    columns["item"] = pa.array(rng.integers(0, 50, n))
    path = write_rows(tmp_path / "big" / "part-0.parquet", columns, row_group_rows=1000)
    assert pq.ParquetFile(path).metadata.num_row_groups == 3

    def whole_file(*args, **kwargs):
        raise AssertionError("read the whole file")

    monkeypatch.setattr(pq, "read_table", whole_file)
    monkeypatch.setattr(pq.ParquetFile, "read", whole_file)
    reader = create_reader(config_for(tmp_path, "big"), "train")
    blocks = list(reader.iter_blocks())
    assert [len(b["clk"]) for b in blocks] == [1000, 1000, 500]
    assert reader.bytes_read == path.stat().st_size  # progress: each batch's share of the file
    np.testing.assert_array_equal(np.concatenate([b["all.ids"][:, 1] for b in blocks]), columns["item"])


def test_loader_with_workers_and_binary_cache_gives_the_same_batches(tmp_path):
    for i in range(2):
        write_rows(tmp_path / "data" / f"part-{i}.parquet", ROWS, row_group_rows=2)
    plain = config_for(tmp_path, "data", train_batch_size=3, num_workers=0)
    pooled = config_for(tmp_path, "data", train_batch_size=3, num_workers=2, cache_dir="cache")

    def batches(config):
        return [{k: v.numpy().tolist() for k, v in batch.items()} for batch in create_loader(config, "train")]

    expected = batches(plain)
    assert len(expected) == 3
    assert batches(pooled) == expected  # first pass: parsed by 2 threads, written to the cache
    assert any((tmp_path / "cache").iterdir())
    assert batches(pooled) == expected  # second pass: from the cache


# --------------------------------------------------------------------- errors name file, row and column
def ctr_tower(hp: dict) -> None:
    """A CLASSIFICATION task tower learns clk: the label must be 0 or 1."""
    hp["model_config"]["mmoe"] = {"task_towers": [{"tower_name": "ctr", "label_name": "clk"}]}


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("price"), r"no column 'price' \(the file's columns: clk, user_id, item, "),
    (lambda c: c.update(item=pa.array(["7", "8", "x9", "0"])), r"row 2: column 'item' \(INT64\) 'x9' is not an "
                                                               r"integer"),
    (lambda c: c.update(item=pa.array([7.0, 8.5, 9.0, 0.0])),
     r"row 1: column 'item' \(INT64\): 8.5 is not an integer in \["),
    (lambda c: c.update(price=pa.array([[1.0], [2.0], [3.0], [4.0]])), r"row 0: column 'price' \(DOUBLE\) is a list "
                                                                        r"column"),
    (lambda c: c.update(price=pa.array(np.arange(4).astype("datetime64[s]"))),
     r"row 0: column 'price' \(DOUBLE\): a column of type timestamp\[m?s\] cannot be read as DOUBLE"),
    (lambda c: c.update(clk=pa.array([1, 0, 2, 0])), r"row 2: label 'clk' must be 0 or 1, got 2"),
    (lambda c: c.update(item=pa.array([7, 8, 9, 50])),
     r"row 3: field 'item' \(feature 'item'\): id 50 outside \[0, num_buckets=50\)"),
    (lambda c: c.update(hist_item=pa.array([[1, 2, 3, 4], [], [60], [1, 2]], pa.list_(pa.int64()))),
     r"row 2: field 'hist_item' \(feature 'hist_item'\): id 60 outside \[0, num_buckets=50\)"),
])
def test_bad_parquet_input_names_file_row_and_column(tmp_path, change, message):
    columns = dict(ROWS)
    change(columns)
    path = write_rows(tmp_path / "pq" / "part-0.parquet", columns, row_group_rows=2)
    reader = create_reader(config_for(tmp_path, "pq", edit=ctr_tower), "train")
    with pytest.raises(DataFormatError, match=re.escape(str(path)) + ": " + message):
        list(reader.iter_blocks())


def test_rows_are_counted_over_the_file(tmp_path):
    columns = dict(ROWS, item=pa.array([7, 8, 9, 99]))
    write_rows(tmp_path / "pq" / "part-0.parquet", columns, row_group_rows=2)  # row 3 is row 1 of the 2nd group
    with pytest.raises(DataFormatError, match=r"part-0.parquet: row 3: field 'item'"):
        list(create_reader(config_for(tmp_path, "pq"), "train").iter_blocks())
    (tmp_path / "pq" / "part-0.parquet").write_text("1,u1\n")
    with pytest.raises(DataFormatError, match=r"part-0.parquet: not a readable Parquet file"):
        list(create_reader(config_for(tmp_path, "pq"), "train").iter_blocks())


# --------------------------------------------------------------------- input_type selects the reader
@pytest.mark.parametrize("input_type, reader", [("CSVInput", TabularReader), ("ParquetInput", TabularReader),
                                                ("GroupRTPInput", GroupRTPReader), ("LibSVMInput", LibSVMReader)])
def test_input_type_selects_the_reader_when_no_reader_path_is_set(tmp_path, input_type, reader):
    config = from_dict({"runner": {}, "hyper_parameters": {"data_config": {"input_type": input_type}}},
                       config_dir=tmp_path)
    assert resolve_reader(config, "runner.train_reader_path") is reader
    assert resolve_reader(config, "runner.infer_reader_path") is reader


def test_a_reader_path_that_disagrees_with_the_input_type_is_an_error(tmp_path):
    config = from_dict({"runner": {"train_reader_path": "libsvm"},
                        "hyper_parameters": {"data_config": {"input_type": "ParquetInput"}}}, config_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"runner.train_reader_path.*disagrees with .*"
                                          r"hyper_parameters.data_config.input_type.*ParquetInput"):
        resolve_reader(config, "runner.train_reader_path")
    for name in ("tabular", "memory"):  # the input type's reader, or a reader of no input type
        config = from_dict({"runner": {"train_reader_path": name},
                            "hyper_parameters": {"data_config": {"input_type": "ParquetInput"}}}, config_dir=tmp_path)
        assert resolve_reader(config, "runner.train_reader_path").__name__ in ("TabularReader", "MemoryReader")
    config = from_dict({"runner": {}, "hyper_parameters": {"data_config": {"input_type": "OrcInput"}}},
                       config_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"input_type.*expected one of CSVInput, ParquetInput"):
        resolve_reader(config, "runner.train_reader_path")


# --------------------------------------------------------------------- slot format on Parquet, DeepFM
def test_slot_parquet_sample_gives_the_slot_blocks():
    text = load_config(DEEPFM / "config.yaml")
    parquet = load_config(DEEPFM / "config_parquet.yaml")
    for mode in ("train", "infer"):
        a, b = create_reader(text, mode), create_reader(parquet, mode)
        assert isinstance(a, SlotReader) and isinstance(b, SlotParquetReader)
        assert_same(joined(a.iter_blocks()), joined(b.iter_blocks()))
        assert b.columns == a.columns and b.feature_units() == a.feature_units()


def slot_columns(n: int = 3) -> dict:
    return {"click": pa.array([0, 1, 0][:n]), "dense_feature": pa.array([[0.5] * 13] * n, pa.list_(pa.float32())),
            **{str(i): pa.array([i] * n) for i in range(1, 27)}}


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("7"), r"no column '7'"),
    (lambda c: c.update({"3": pa.array([1, None, 2])}), r"row 1: column '3' is null"),
    (lambda c: c.update({"3": pa.array([1, 2, 1_000_001])}), r"row 2: column '3' \(sparse slot\): id 1000001 outside"),
    (lambda c: c.update(click=pa.array([0, 3, 0])), r"row 1: column 'click' \(the label\) must be 0 or 1, got 3"),
    (lambda c: c.update(dense_feature=pa.array([[0.5] * 13, [0.5] * 12, [0.5] * 13])),
     r"row 1: column 'dense_feature' holds 12 values, expected dense_input_dim=13"),
    (lambda c: c.update({"5": pa.array(["a", "b", "c"])}), r"row 0: column '5' is string; expected an integer"),
])
def test_bad_slot_parquet_names_file_row_and_column(tmp_path, change, message):
    columns = slot_columns()
    change(columns)
    path = write_rows(tmp_path / "part-0.parquet", columns)
    reader = SlotParquetReader([str(path)], load_config(DEEPFM / "config_parquet.yaml"))
    with pytest.raises(DataFormatError, match=re.escape(str(path)) + ": " + message):
        list(reader.iter_blocks())


def test_slot_parquet_reads_one_column_per_dense_value(tmp_path):
    columns = slot_columns()
    dense = columns.pop("dense_feature")
    columns.update({f"dense_feature_{j}": pa.array([0.25, 0.5, 1.0]) for j in range(13)})
    path = write_rows(tmp_path / "part-0.parquet", columns)
    (block,) = SlotParquetReader([str(path)], load_config(DEEPFM / "config_parquet.yaml")).iter_blocks()
    np.testing.assert_array_equal(block["dense"][:, 4], np.float32([0.25, 0.5, 1.0]))
    assert dense is not None and block["sparse"][0].tolist() == list(range(1, 27))


def test_deepfm_config_parquet_trains_and_evaluates_like_the_slot_text(tmp_path, caplog):
    """tools/trainer.py then tools/infer.py (their entry points, in this process) on config_parquet.yaml and
    config.yaml (the same rows): the same batches (no shuffling, one block each) give identical training and test
    metrics."""
    from recstack.cli import infer_main, train_main

    caplog.set_level(logging.INFO)
    lines = {}
    for name in ("config_parquet", "config"):
        out = tmp_path / name
        argv = ["-m", str(DEEPFM / f"{name}.yaml"), "-o", f"runner.model_save_path={out}",
                f"runner.infer_load_path={out}", "runner.epochs=1", "runner.infer_end_epoch=1"]
        caplog.clear()
        assert train_main(argv) == 0 and infer_main(argv) == 0
        lines[name] = re.findall(r"epoch: 0 done, auc: ([0-9.]+), (?:loss: ([0-9.]+))?", caplog.text)
    assert len(lines["config"]) == 2 and lines["config_parquet"] == lines["config"]
    assert float(lines["config"][1][0]) > 0.55  # the test AUC after one epoch of 4,000 rows


def test_generator_writes_the_sample_byte_identically(tmp_path):
    out = tmp_path / "test" / "part-0.parquet"
    run = subprocess.run([sys.executable, str(REPO / "datasets" / "synthetic" / "generate.py"), "criteo", "--rows",
                          "1000", "--seed", "2", "--format", "parquet", "--output", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == (DEEPFM / "data" / "parquet_sample_data" / "test" / "part-0.parquet").read_bytes()


# --------------------------------------------------------------------- preprocessors write Parquet
def test_criteo_preprocess_writes_the_slot_parquet_layout(tmp_path):
    gen = load_module(REPO / "datasets" / "synthetic", "generate")
    prep = load_module(REPO / "datasets" / "criteo", "preprocess")
    raw = gen.generate("criteo", 300, 3, tmp_path / "raw.txt", layout="tsv").read_bytes().splitlines(keepends=True)
    (tmp_path / "text").mkdir()
    with open(tmp_path / "text" / "part-0.txt", "wb") as out:
        assert prep.convert_stream(raw, out, 1000001) == 300
    assert prep.convert_to_parquet(raw, str(tmp_path / "pq" / "part-0.parquet"), 1000001) == 300
    config = load_config(DEEPFM / "config.yaml")
    text = SlotReader([str(tmp_path / "text" / "part-0.txt")], config)
    parquet = SlotParquetReader([str(tmp_path / "pq" / "part-0.parquet")], config)
    assert_same(joined(text.iter_blocks()), joined(parquet.iter_blocks()))


def test_taobao_preprocess_writes_parquet_read_like_its_text(tmp_path):
    data = load_module(REPO / "tests", "test_taobao_data")
    t0, day = data.T0, data.DAY
    folder = tmp_path / "raw"
    folder.mkdir()
    raw = {"raw_sample": data.write(folder / "raw_sample.csv", data.RAW_HEADER, [
        f"10,{t0 + 100},1,430548_1007,1,0", f"10,{t0 + 3600},2,430539_1007,0,1", f"30,{t0 + day},3,430548_1007,1,0",
        f"20,{t0 + 7 * day + 50},1,430539_1007,0,1", f"10,{t0 + 7 * day + 10},4,430548_1007,1,0"]),
        "ad_feature": data.write(folder / "ad_feature.csv", data.AD_HEADER, [
            "1,100,1000,500,NULL,28.0", "2,200,2000,600,7,1999.5", "3,100,3000,500,8,0.01"]),
        "user_profile": data.write(folder / "user_profile.csv", data.USER_HEADER, [
            "10,0,5,2,5,,3,0,2", "20,13,1,1,1,2,3,1,"])}
    mmoe = REPO / "models" / "multitask" / "mmoe" / "config_taobao.yaml"
    for name, fmt in (("text", None), ("pq", mmoe)):
        data.prep.preprocess(raw["raw_sample"], raw["ad_feature"], raw["user_profile"], tmp_path / name, None,
                             data.prep.Options(shuffle=False, parquet_config=fmt))
    assert sorted(p.name for p in (tmp_path / "pq" / "train").iterdir()) == ["part-0.parquet"]
    for split in ("train", "test"):
        text = load_config(mmoe, [f"runner.train_data_dir={tmp_path / 'text' / split}"])
        parquet = load_config(mmoe, [f"runner.train_data_dir={tmp_path / 'pq' / split}",
                                     "hyper_parameters.data_config.input_type=ParquetInput"])
        assert_same(joined(create_reader(text, "train").iter_blocks()),
                    joined(create_reader(parquet, "train").iter_blocks()))


def test_to_parquet_tool_converts_a_sample_folder(tmp_path):
    run = subprocess.run([sys.executable, str(REPO / "tools" / "to_parquet.py"), "-m", str(DEEPFM / "config.yaml"),
                          "--src", str(DEEPFM / "data" / "sample_data" / "test"), "--dst", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "part-0.parquet").read_bytes() == \
        (DEEPFM / "data" / "parquet_sample_data" / "test" / "part-0.parquet").read_bytes()
    bad = subprocess.run([sys.executable, str(REPO / "tools" / "to_parquet.py"), "-m",
                          str(REPO / "models" / "rank" / "din" / "config.yaml"), "--dst", str(tmp_path / "din")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no Parquet layout for the reader DINReader" in bad.stdout + bad.stderr


def test_generator_writes_a_feature_config_world_with_list_columns(tmp_path):
    gen = load_module(REPO / "datasets" / "synthetic", "generate")
    mmoe = REPO / "models" / "multitask" / "mmoe" / "config_taobao.yaml"
    gen.generate("taobao", 2000, 5, tmp_path / "text" / "part-0.txt")
    path = gen.generate("taobao", 2000, 5, tmp_path / "pq", fmt="parquet", config=mmoe)
    assert path.name == "part-0.parquet" and pq.read_schema(path).field("tag_brand_list").type == pa.list_(pa.string())
    text = load_config(mmoe, [f"runner.train_data_dir={tmp_path / 'text'}"])
    parquet = load_config(mmoe, [f"runner.train_data_dir={tmp_path / 'pq'}",
                                 "hyper_parameters.data_config.input_type=ParquetInput"])
    assert_same(joined(create_reader(text, "train").iter_blocks()),
                joined(create_reader(parquet, "train").iter_blocks()))
    with pytest.raises(ValueError, match="--format parquet for taobao .* needs --config"):
        gen.generate("taobao", 10, 5, tmp_path / "nothing", fmt="parquet")
