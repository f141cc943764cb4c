"""Vocabularies of id features (recstack/easyrec/vocab.py): vocab_file, vocabularies fitted by tools/build_vocab.py,
out-of-vocabulary buckets, and the vocabulary travelling with the model through train, infer, export and serving."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest
import torch

from recstack.backends import InferenceSettings
from recstack.checkpoint import load_checkpoint
from recstack.config import ConfigError, from_dict, load_config
from recstack.easyrec.build_vocab import build_vocabularies
from recstack.easyrec.features import TabularSpec
from recstack.easyrec.tabular import TabularReader, feature_column, ragged_feature_arrays, value_ids
from recstack.evaluator import infer
from recstack.export import export_model
from recstack.export_spec import ExportedModel, ExportFileError
from recstack.serving.model import ServedModel
from recstack.trainer import train
from recstack.wrapper import build_model

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"
EXAMPLE = REPO / "models/rank/deepfm/config_vocab.yaml"


def _config(folder: Path, features: list[dict], fields: list[dict] | None = None) -> dict:
    fields = fields or [{"input_name": "y", "input_type": "INT32"}, {"input_name": "a", "input_type": "STRING"},
                        {"input_name": "n", "input_type": "INT64"}, {"input_name": "t", "input_type": "STRING"}]
    return {"runner": {"train_data_dir": "train", "train_reader_path": "tabular",
                       "model_save_path": str(folder / "out")},
            "hyper_parameters": {
                "data_config": {"label_fields": ["y"], "input_fields": fields},
                "feature_config": {"features": features},
                "model_config": {"feature_groups": [{"group_name": "all",
                                                     "feature_names": [f.get("feature_name", f["input_names"][0])
                                                                       for f in features]}]}}}


def _spec(folder: Path, *features: dict) -> TabularSpec:
    return TabularSpec.from_config(from_dict(_config(folder, list(features)), folder))


def _fail(row: int, message: str) -> Exception:
    return ValueError(f"row {row}: {message}")


# ---------------------------------------------------------------------- fitting
def test_fit_keeps_min_count_and_max_size_most_frequent_first_ties_by_value(tmp_path):
    # a: 3, b: 3, e: 2, c: 2, d: 1 (and the empty value 2 times); n: 10 x6, 7 x6, 5 x1; tags x: 4, y: 2, z: 1
    rows = [("b", 7, "x|y"), ("a", 7, "x"), ("e", 10, "x|z"), ("b", 7, ""), ("c", 5, "y|x"), ("a", 10, ""),
            ("d", 10, ""), ("", 10, ""), ("c", 10, ""), ("a", 10, ""), ("e", 7, ""), ("b", 7, ""), ("", 7, "")]
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "part-0.txt").write_text("".join(f"1,{a},{n},{t}\n" for a, n, t in rows))
    config = from_dict(_config(tmp_path, [
        {"input_names": ["a"], "feature_type": "IdFeature", "embedding_dim": 4,
         "vocab": {"min_count": 2, "max_size": 3}},
        {"input_names": ["n"], "feature_type": "IdFeature", "embedding_dim": 4, "vocab": {"min_count": 2},
         "num_oov_buckets": 3},
        {"input_names": ["t"], "feature_type": "TagFeature", "embedding_dim": 4, "vocab": {}}]), tmp_path)
    with pytest.raises(ConfigError, match=r"features\[0\]\.vocab.*does not exist; build it first: "
                                          r"python tools/build_vocab.py -m"):
        TabularSpec.from_config(config)
    manifest = build_vocabularies(config)
    original = config
    folder = tmp_path / "out" / "vocab"
    assert (folder / "a.txt").read_text() == "a\nb\nc\n"  # a, b (3 each, by value), then c before e (2 each)
    assert (folder / "n.txt").read_text() == "10\n7\n"  # 6 times each: by value ("1" < "7"); 5 once: dropped
    assert (folder / "t.txt").read_text() == "x\ny\nz\n"  # x: 4, y: 2, z: 1 (min_count 1)
    entry = manifest["features"]["a"]
    assert (entry["entries"], entry["min_count"], entry["max_size"], entry["num_oov_buckets"]) == (3, 2, 3, 1)
    assert (entry["values"], entry["distinct_values"], entry["values_in_vocabulary"]) == (13, 6, 8)
    dropped = (entry["dropped_below_min_count"], entry["dropped_over_max_size"], entry["dropped_unwritable"])
    assert dropped == (1, 1, 1)  # d (once), e (over max_size), the empty value
    assert manifest["features"]["n"]["num_oov_buckets"] == 3
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    assert manifest["source_files"][0]["path"].endswith("part-0.txt")
    assert sorted(p.name for p in folder.parent.iterdir()) == ["vocab"]  # no temporary left beside it

    spec = TabularSpec.from_config(config)  # training now finds them
    a, n, t = spec.features
    assert a.vocab == ("a", "b", "c") and a.num_embeddings == 4 and n.num_embeddings == 5 and t.num_embeddings == 4
    reader = TabularReader([str(tmp_path / "train" / "part-0.txt")], config)
    block = next(reader.iter_blocks())
    # a: b a e b c a d '' c a e b '' -> e, d and '' are OOV (id 3)
    assert block["all.ids"][:, 0].tolist() == [1, 0, 3, 1, 2, 0, 3, 3, 2, 0, 3, 1, 3]
    assert block["all.t.ids"].values.tolist() == [0, 1, 0, 0, 2, 1, 0]

    config = from_dict(_config(tmp_path, [{"input_names": ["a"], "feature_type": "IdFeature", "embedding_dim": 4,
                                           "vocab": {"min_count": 4}}]), tmp_path)
    with pytest.raises(ConfigError, match=r"features\[0\]\.vocab\.min_count.*no value of feature 'a' occurs 4 times.*"
                                          r"'a', 3 times"):
        build_vocabularies(config)
    assert (folder / "a.txt").read_text() == "a\nb\nc\n"  # the set in place is untouched

    # checkpoints beside the vocabularies: the same vocabularies again are fine, changed ones refused (or --force)
    (tmp_path / "out" / "0").mkdir()
    (tmp_path / "out" / "0" / "model.pt").write_bytes(b"")
    build_vocabularies(original)
    with (tmp_path / "train" / "part-0.txt").open("a") as f:
        f.write("1,d,10,\n1,d,10,\n")
    with pytest.raises(ConfigError, match=r"vocabularies of \['a'\] .* change with this data, and the checkpoints "
                                          r"\['0'\] beside them"):
        build_vocabularies(original)
    build_vocabularies(original, force=True)
    assert (folder / "a.txt").read_text() == "a\nb\nd\n"  # d: 3 times now


def test_parquet_input_fits_the_same_vocabularies_as_csv(tmp_path):
    from recstack.easyrec import features

    if "ParquetInput" not in features.INPUT_KINDS:
        pytest.skip("this tree's feature config has no ParquetInput")
    import pyarrow.parquet as pq

    rows = [("b", 7, "x|y"), ("a", 7, "x"), ("e", 10, "x|z"), ("b", 7, ""), ("c", 5, "y|x"), ("a", 10, "")] * 2
    feature_list = [
        {"input_names": ["a"], "feature_type": "IdFeature", "embedding_dim": 4, "vocab": {"min_count": 2}},
        {"input_names": ["n"], "feature_type": "IdFeature", "embedding_dim": 4, "vocab": {}},
        {"input_names": ["t"], "feature_type": "TagFeature", "embedding_dim": 4, "vocab": {"max_size": 2}}]
    texts = {}
    for kind in ("csv", "parquet"):
        folder = tmp_path / kind
        (folder / "train").mkdir(parents=True)
        if kind == "csv":
            (folder / "train" / "part-0.txt").write_text("".join(f"1,{a},{n},{t}\n" for a, n, t in rows))
        else:
            table = pa.table({"y": pa.array([1] * len(rows), pa.int32()), "a": [r[0] for r in rows],
                              "n": pa.array([r[1] for r in rows], pa.int64()), "t": [r[2] for r in rows]})
            pq.write_table(table, folder / "train" / "part-0.parquet")
        data = _config(folder, feature_list)
        if kind == "parquet":
            data["hyper_parameters"]["data_config"]["input_type"] = "ParquetInput"
        build_vocabularies(from_dict(data, folder))
        texts[kind] = {f: (folder / "out" / "vocab" / f"{f}.txt").read_text() for f in ("a", "n", "t")}
    assert texts["csv"] == texts["parquet"] == {"a": "a\nb\nc\ne\n", "n": "7\n10\n5\n", "t": "x\ny\n"}


# ---------------------------------------------------------------------- mapping
def test_out_of_vocabulary_values_go_to_the_oov_buckets(tmp_path):
    (tmp_path / "v.txt").write_text("red\ngreen\nblue\n")
    values = pa.array(["green", "pink", "red", "", "black", "blue", "pink"])
    one = _spec(tmp_path, {"input_names": ["a"], "feature_type": "IdFeature", "embedding_dim": 4,
                           "vocab_file": "v.txt"}).features[0]
    assert one.num_oov_buckets == 1 and one.num_embeddings == 4
    assert value_ids(one, values, "a", _fail).tolist() == [1, 3, 0, 3, 3, 2, 3]
    three = _spec(tmp_path, {"input_names": ["a"], "feature_type": "IdFeature", "embedding_dim": 4,
                             "vocab_file": str(tmp_path / "v.txt"), "num_oov_buckets": 3}).features[0]
    ids = value_ids(three, values, "a", _fail)
    expected = {v: 3 + zlib.crc32(v.encode()) % 3 for v in ("pink", "", "black")}
    assert ids.tolist() == [1, expected["pink"], 0, expected[""], expected["black"], 2, expected["pink"]]
    assert three.num_embeddings == 6 and ids.max() < 6 and len(set(expected.values())) > 1
    # vocab_list keeps its meaning (unknown -> 0) unless num_oov_buckets is asked for
    plain = _spec(tmp_path, {"input_names": ["a"], "feature_type": "IdFeature", "embedding_dim": 4,
                             "vocab_list": ["red", "green", "blue"]}).features[0]
    assert plain.num_embeddings == 3 and value_ids(plain, values, "a", _fail).tolist() == [1, 0, 0, 0, 0, 2, 0]
    opted = _spec(tmp_path, {"input_names": ["a"], "feature_type": "IdFeature", "embedding_dim": 4,
                             "vocab_list": ["red", "green", "blue"], "num_oov_buckets": 1}).features[0]
    assert opted.num_embeddings == 4 and value_ids(opted, values, "a", _fail).tolist() == [1, 3, 0, 3, 3, 2, 3]
    # integer fields map their decimal text; tags too
    (tmp_path / "n.txt").write_text("10\n7\n")
    n = _spec(tmp_path, {"input_names": ["n"], "feature_type": "IdFeature", "embedding_dim": 4,
                         "vocab_file": "n.txt"}).features[0]
    assert feature_column(n, "INT64", np.array([7, 10, 3]), "n", _fail).tolist() == [1, 0, 2]
    sequence = _spec(tmp_path, {"input_names": ["t"], "feature_type": "SequenceFeature", "embedding_dim": 4,
                                "vocab_file": "v.txt", "sequence_length": 2}).features[0]
    arrays = ragged_feature_arrays(sequence, pa.array(["blue|pink|red", "", "teal"]), "t", _fail)
    assert arrays["ids"].values.tolist() == [2, 3, 3] and arrays["lengths"][:, 0].tolist() == [2, 0, 1]


@pytest.mark.parametrize("text, expected", [
    (None, r"'hyper_parameters\.feature_config\.features\[0\]\.vocab_file'.*vocabulary file '.*missing\.txt' does "
           "not exist"),
    ("red\ngreen\nred\n", r"v\.txt:3: 'red' repeats line 1"),
    ("red\n\ngreen\n", r"v\.txt:2: empty line"),
    ("red\r\ngreen\r\n\r\n", r"v\.txt:3: empty line"),
    ("", r"features\[0\]\.vocab_file.*holds no entries"),
    (b"red\n\xff\n", r"v\.txt:2: not UTF-8"),
])
def test_bad_vocabulary_files_name_the_key_or_the_file_and_line(tmp_path, text, expected):
    name = "missing.txt" if text is None else "v.txt"
    if text is not None:
        (tmp_path / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match=expected):
        _spec(tmp_path, {"input_names": ["a"], "feature_type": "IdFeature", "embedding_dim": 4, "vocab_file": name})


def test_bad_vocabulary_keys(tmp_path):
    (tmp_path / "v.txt").write_text("x|y\nz\n")
    with pytest.raises(ConfigError, match=r"v\.txt:1: 'x\|y' holds the separator '\|'"):
        _spec(tmp_path, {"input_names": ["t"], "feature_type": "TagFeature", "embedding_dim": 4, "vocab_file": "v.txt"})
    with pytest.raises(ConfigError, match=r"num_oov_buckets'.*must be >= 1"):
        _spec(tmp_path, {"input_names": ["a"], "feature_type": "IdFeature", "embedding_dim": 4, "vocab_file": "v.txt",
                         "num_oov_buckets": 0})
    with pytest.raises(ConfigError, match=r"num_oov_buckets'.*go with a vocabulary"):
        _spec(tmp_path, {"input_names": ["a"], "feature_type": "IdFeature", "embedding_dim": 4,
                         "hash_bucket_size": 10, "num_oov_buckets": 2})
    with pytest.raises(ConfigError, match="exactly one of"):
        _spec(tmp_path, {"input_names": ["a"], "feature_type": "IdFeature", "embedding_dim": 4, "vocab_file": "v.txt",
                         "vocab": {"min_count": 2}})
    with pytest.raises(ConfigError, match=r"vocab\.min_count'.*must be >= 1"):
        _spec(tmp_path, {"input_names": ["a"], "feature_type": "IdFeature", "embedding_dim": 4,
                         "vocab": {"min_count": 0}})
    with pytest.raises(ConfigError, match=r"unknown key .*vocab\.max_sise"):
        _spec(tmp_path, {"input_names": ["a"], "feature_type": "IdFeature", "embedding_dim": 4,
                         "vocab": {"max_sise": 3}})


# ---------------------------------------------------------------------- the round trip
def test_build_vocab_train_infer_export_serve_round_trip(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_serving import serving

    out = tmp_path / "run"
    overrides = [f"runner.model_save_path={out}", f"runner.infer_load_path={out}", "runner.epochs=1",
                 "runner.infer_end_epoch=1"]
    done = subprocess.run([sys.executable, str(TOOLS / "build_vocab.py"), "-m", str(EXAMPLE), "-o", *overrides],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    vocab = out / "vocab"
    assert sorted(p.name for p in vocab.iterdir()) == ["brand.txt", "category.txt", "city.txt", "device.txt",
                                                       "gender.txt", "manifest.json"]
    assert len((vocab / "brand.txt").read_text().splitlines()) == 150  # max_size

    config = load_config(EXAMPLE, overrides)
    train(config)
    assert (out / "0" / "model.pt").is_file() and vocab.is_dir()  # the vocabularies beside the checkpoints
    auc = infer(load_config(EXAMPLE, overrides))[0]["auc"]
    assert auc > 0.6

    export_dir = tmp_path / "export"
    export_model(load_config(EXAMPLE, [*overrides, f"runner.model_init_path={out / '0'}"]), out_dir=export_dir)
    copies = export_dir / "tostatic.vocab"
    assert sorted(p.name for p in copies.iterdir()) == ["brand.txt", "category.txt", "city.txt", "device.txt",
                                                        "gender.txt"]
    for name in ("brand", "city"):
        assert (copies / f"{name}.txt").read_bytes() == (vocab / f"{name}.txt").read_bytes()
    # the export travels alone: moved, and the training folder's vocabularies gone
    moved = tmp_path / "moved"
    shutil.copytree(export_dir, moved)
    shutil.rmtree(export_dir)
    shutil.move(vocab, tmp_path / "vocab_elsewhere")
    model = ExportedModel.locate(moved)
    assert model.spec["embedding_tables"]["all.ids"][:5] == [41, 151, 4, 102, 4]  # V + num_oov_buckets each

    test_file = Path(config.get("runner.test_data_dir")) / "part-0.txt"
    lines = test_file.read_text().splitlines()[:50]
    cells = lines[0].split(",")
    cells[4], cells[6] = "brand_never_seen", "city_never_seen"  # brand, city: not in the vocabularies
    body = ("\n".join([*lines, ",".join(cells)]) + "\n").encode()
    served = ServedModel(model, InferenceSettings("onnxruntime"))
    arrays = served.parse_upload(body, 1000)
    ids = arrays["all.ids"]
    assert ids[-1, 1] == 150 and ids[-1, 3] in (100, 101)  # the OOV ids, after the entries
    assert ids[-1, 1] != ids[0, 1] and (ids[:, :5] < [41, 151, 4, 102, 4]).all()

    # without its vocabularies the training config is refused with the command that builds them
    with pytest.raises(ConfigError, match=r"features\[0\]\.vocab.*category.txt' does not exist; build it first: "
                                          + re.escape(f"python tools/build_vocab.py -m {EXAMPLE} "
                                                      f"-o runner.model_save_path={out}")):
        build_model(config, torch.device("cpu"))
    # eager on the same ids (the checkpoint, the training config's reader) = what the service answers
    shutil.move(tmp_path / "vocab_elsewhere", vocab)
    reader = TabularReader([], config)
    eager_ids = reader.parse_block(b"\n".join(line.encode() for line in lines) + b"\n", "test", 1)["all.ids"]
    assert np.array_equal(eager_ids, ids[:-1])
    wrapper, net = build_model(config, torch.device("cpu"))
    load_checkpoint(out / "0", net)
    net.eval()
    with torch.no_grad():
        eager = torch.as_tensor(net(*[torch.from_numpy(arrays[s.name]) for s in served.inputs])).numpy().reshape(-1)
    with serving(model) as (url, _), httpx.Client(base_url=url, timeout=60) as client:
        answer = client.post("/upload", content=body).json()
    assert answer["code"] == 200, answer
    predictions = np.asarray(answer["data"], dtype=np.float64).reshape(-1)
    assert len(predictions) == 51 and ((predictions > 0) & (predictions < 1)).all()
    assert np.abs(predictions - eager).max() <= 1e-5

    # a vocabulary copy that differs from the export's record is refused
    (moved / "tostatic.vocab" / "city.txt").write_text("city_000\n")
    with pytest.raises(ExportFileError, match="tostatic.vocab/city.txt does not match"):
        ExportedModel.locate(moved).config()


def test_training_with_a_plain_vocab_file(tmp_path):
    """A vocab_file needs no tools/build_vocab.py: DeepFM trains with a hand-written vocabulary (half the brands,
    the others in 3 OOV buckets) and the rest hashed; the export copies the file."""
    (tmp_path / "brand.txt").write_text("".join(f"brand_{i:03d}\n" for i in range(0, 200, 2)))
    config = load_config(EXAMPLE, [f"runner.model_save_path={tmp_path / 'out'}", "runner.epochs=1"])
    features = []
    for feature in config.get("hyper_parameters.feature_config.features"):
        feature = {k: v for k, v in feature.items() if k not in ("vocab", "num_oov_buckets")}
        if feature["input_names"] == ["brand"]:
            feature.update(vocab_file=str(tmp_path / "brand.txt"), num_oov_buckets=3)
        elif feature["feature_type"] == "IdFeature" and "num_buckets" not in feature:  # the other strings: hashed
            feature["hash_bucket_size"] = 100
        features.append(feature)
    config.set("hyper_parameters.feature_config.features", features)
    assert TabularSpec.from_config(config).feature("brand").num_embeddings == 103
    result = train(config)
    assert np.isfinite(result.epochs[0].loss) and result.epochs[0].metrics["auc"] > 0.6
    assert (tmp_path / "out" / "0" / "model.pt").is_file() and not (tmp_path / "out" / "vocab").exists()
    exported = export_model(config, out_dir=tmp_path / "export")
    assert list(exported.spec["vocabularies"]) == ["brand"] and not exported.spec["vocabularies"]["brand"]["fitted"]
    assert (tmp_path / "export" / "tostatic.vocab" / "brand.txt").read_bytes() == (tmp_path / "brand.txt").read_bytes()


def test_easyrec_converter_carries_vocab_file_relative_to_the_yaml(tmp_path):
    from recstack.easyrec.convert import convert
    from recstack.easyrec.pbtxt import parse

    text = (REPO / "tests/data/easyrec/dcn_backbone.config").read_text()
    old = 'input_names: "cms_segid" feature_type: IdFeature embedding_dim: 8 hash_bucket_size: 100 }'
    assert old in text
    text = text.replace(old, 'input_names: "cms_segid" feature_type: IdFeature embedding_dim: 8 '
                             'vocab_file: "vocab/cms.txt" num_oov_buckets: 2 }')
    text = text.replace('input_names: "brand" feature_type: IdFeature embedding_dim: 8 hash_bucket_size: 100000 }',
                        'input_names: "brand" feature_type: IdFeature embedding_dim: 8 vocab_file: "oss://b/v.txt" }')
    result = convert(parse(text, "x.config"), "x.config", data_root=str(tmp_path), output_dir=str(tmp_path / "yaml"))
    features = result.config["hyper_parameters"]["feature_config"]["features"]
    cms = next(f for f in features if f["input_names"] == ["cms_segid"])
    assert cms["vocab_file"] == "../vocab/cms.txt" and cms["num_oov_buckets"] == 2 and "hash_bucket_size" not in cms
    assert any(item.path.endswith(".vocab_file") and "remote" in item.reason for item in result.dropped)
