"""EasyRec pipeline.config -> recstack YAML (tools/easyrec_config.py, recstack/easyrec/pbtxt.py, convert.py).

The four configs under tests/data/easyrec/ are written in EasyRec's form after its documented examples
(MMoE on the backbone with SENet and a TagFeature, DBMTL on MaskNet with the older feature_configs, DeepFM on
the backbone with a tf lambda, DCN's recurrent Cross); each round trip checks the YAML's exact structure,
that ``load_config`` accepts it and the exact list of what was not carried over.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from recstack.config import ConfigError, load_config
from recstack.easyrec.convert import Conversion, convert, convert_file, translate_lambda
from recstack.easyrec.pbtxt import PbtxtError, parse, parse_file

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "easyrec"
TOOL = REPO / "tools" / "easyrec_config.py"


def converted(name: str, **kwargs) -> Conversion:
    path = DATA / f"{name}.config"
    return convert(parse(path.read_text(), path.name), path.name, **kwargs)


def dropped(result: Conversion) -> list[tuple[str, object]]:
    return [(item.path, item.value) for item in result.dropped]


def changed(result: Conversion) -> list[str]:
    return [item.path for item in result.changed]


# ---------------------------------------------------------------------------------------------- the parser
def test_parse_messages_scalars_lists_and_separators():
    text = """
    # a comment line
    model_dir: "exp/x"   # a trailing comment
    data_config {
      batch_size: 4096;
      label_fields: "clk" label_fields: 'buy',
      input_fields { input_name: "clk" input_type: INT32 }
      input_fields: { input_name: "buy" }
    }
    top < hidden_units: [64, 32] flag: true off: False >
    towers [ {a: 1}, <a: 2> ]
    weights: []
    """
    root = parse(text)
    assert root == {
        "model_dir": "exp/x",
        "data_config": {"batch_size": 4096, "label_fields": ["clk", "buy"],
                        "input_fields": [{"input_name": "clk", "input_type": "INT32"}, {"input_name": "buy"}]},
        "top": {"hidden_units": [64, 32], "flag": True, "off": False},
        "towers": [{"a": 1}, {"a": 2}],
        "weights": [],
    }
    assert root.positions["data_config"] == (4, 5)
    assert root["data_config"].positions["input_fields"] == (7, 7)
    assert root["data_config"]["input_fields"][1].position == (8, 7)


def test_list_syntax_and_repeated_occurrences_concatenate():
    assert parse("a: [1, 2] a: 3 a: [4]") == {"a": [1, 2, 3, 4]}
    assert parse("a: 1 a: [2, 3]") == {"a": [1, 2, 3]}
    assert parse("m {x: 1} m {x: 2}") == {"m": [{"x": 1}, {"x": 2}]}


@pytest.mark.parametrize("text, value", [
    ("12", 12), ("-3", -3), ("0x1F", 31), ("017", 15), ("0", 0), ("1e-5", 1e-5), ("1E+3", 1000.0), (".5", 0.5),
    ("1.", 1.0), ("1.5f", 1.5), ("-2.5e-3", -2.5e-3), ("inf", math.inf), ("-Infinity", -math.inf),
    ("true", True), ("True", True), ("false", False), ("DEEP", "DEEP"), ("CLASSIFICATION", "CLASSIFICATION"),
])
def test_scalars(text, value):
    assert parse(f"v: {text}")["v"] == value
    assert type(parse(f"v: {text}")["v"]) is type(value)


def test_nan():
    assert math.isnan(parse("v: nan")["v"])


@pytest.mark.parametrize("text, value", [
    (r'"\001"', "\x01"), (r"'\x41\x2c'", "A,"), (r'"\t|\n|\\|\"|\'|\?"', "\t|\n|\\|\"|'|?"),
    (r'"\344\270\255\346\226\207"', "中文"), (r'"\u00e9\U0001F600"', "é\U0001F600"), ('"中文"', "中文"),
    (r'"a" "b" ' + "'c'", "abc"), (r'"\0"', "\x00"), (r'"\1234"', "S4"), ("'it''s'", "its"), ('"#x"', "#x"),
])
def test_string_escapes_and_concatenation(text, value):
    assert parse(f"s: {text}")["s"] == value


@pytest.mark.parametrize("text, message", [
    ('a: "abc', "f.config:1:4: unterminated string (a string ends on the line it starts)"),
    ("a {\n  b: 1", "f.config:2:7: expected '}' to close the message opened at line 1, got the end of the text"),
    ("a 1", "f.config:1:3: expected ':' or '{' after field name 'a', got '1'"),
    ("a: [1, 2", "f.config:1:9: expected ']' to close the list opened at line 1, got the end of the text"),
    ("a: [1 2]", "f.config:1:7: expected ',' between the values of 'a', got '2'"),
    ("a: 12abc", "f.config:1:4: malformed number '12abc'"),
    ("a: 09", "f.config:1:4: invalid octal number '09' (a leading 0 means octal)"),
    ('x: 1\na: "\\q"', "f.config:2:5: unknown escape '\\q' in a string"),
    ('a: "\\777"', "f.config:1:5: octal escape '\\777' is above \\377"),
    ('a: "\\377"', "f.config:1:4: the string's bytes after its escapes are not UTF-8 (invalid start byte at byte 0)"),
    ("a: -x", "f.config:1:5: expected a number after '-' for field 'a', got 'x'"),
    ("[ext.field]: 1", "f.config:1:1: extensions and Any type URLs ('[...]' field names) are not supported"),
    ("a: }", "f.config:1:4: expected a value for field 'a', got '}'"),
    ("a { } }", "f.config:1:7: expected a field name, got '}'"),
    ("a [1, 2]", "f.config:1:3: expected ':' after field name 'a' before a list of values"),
    ("a: 1 @", "f.config:1:6: unexpected character '@'"),
])
def test_syntax_errors_name_line_and_column(text, message):
    with pytest.raises(PbtxtError) as err:
        parse(text, "f.config")
    assert str(err.value) == message
    assert isinstance(err.value, ConfigError)


def test_parse_file_bom_and_non_utf8(tmp_path):
    good = tmp_path / "good.config"
    good.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert parse_file(str(good)) == {"a": 1}
    bad = tmp_path / "bad.config"
    bad.write_bytes(b'a: 1\nb: "caf\xe9"\n')
    with pytest.raises(PbtxtError, match=r"bad\.config:2:8: not UTF-8 text: byte 0xe9; save the file as UTF-8$"):
        parse_file(str(bad))


# ---------------------------------------------------------------------------------------------- round trips
TAOBAO_FIELDS = [("clk", "INT32"), ("buy", "INT32"), ("pid", "STRING"), ("adgroup_id", "STRING"),
                 ("cate_id", "STRING"), ("brand", "STRING"), ("user_id", "STRING"), ("cms_segid", "STRING"),
                 ("age_level", "STRING"), ("occupation", "STRING"), ("tag_brand_list", "STRING"), ("price", "INT32")]


def tower(name: str, label: str) -> dict:
    return {"tower_name": name, "label_name": label, "dnn": {"hidden_units": [128, 64]}, "weight": 1.0,
            "loss_type": "CLASSIFICATION", "metrics_set": [{"auc": {}}]}


def test_mmoe_on_backbone_round_trip(tmp_path):
    result = converted("mmoe_backbone_taobao")
    ids = [("pid", 10), ("adgroup_id", 100000), ("cate_id", 10000), ("brand", 100000), ("user_id", 100000),
           ("cms_segid", 100), ("age_level", 10), ("occupation", 10)]
    assert result.config == {
        "runner": {"train_data_dir": "data/taobao/train", "train_reader_path": "tabular", "train_batch_size": 4096,
                   "epochs": 1, "shuffle": True, "print_interval": 100,
                   "model_save_path": "experiments/mmoe_backbone_taobao", "test_data_dir": "data/taobao/test",
                   "infer_reader_path": "tabular", "infer_batch_size": 4096,
                   "infer_load_path": "experiments/mmoe_backbone_taobao"},
        "hyper_parameters": {
            # staircase decay 0.001 * 0.5 ** (step // 1000), up to num_steps 2500
            "optimizer": {"class": "Adam", "lr_schedule": {"boundaries": [1000, 2000],
                                                           "values": [0.001, 0.0005, 0.00025]}},
            "data_config": {"input_type": "CSVInput", "label_fields": ["clk", "buy"],
                            "input_fields": [{"input_name": n, "input_type": t} for n, t in TAOBAO_FIELDS]},
            "feature_config": {"features": [
                *[{"input_names": [n], "feature_type": "IdFeature", "embedding_dim": 16, "hash_bucket_size": h}
                  for n, h in ids],
                {"input_names": ["tag_brand_list"], "feature_type": "TagFeature", "separator": "|",
                 "hash_bucket_size": 100000, "embedding_dim": 16},
                {"input_names": ["price"], "feature_type": "IdFeature", "embedding_dim": 16, "num_buckets": 50}]},
            "model_config": {
                "model_class": "MultiTaskModel",
                "feature_groups": [{"group_name": "all",
                                    "feature_names": ["user_id", "cms_segid", "age_level", "occupation", "adgroup_id",
                                                      "cate_id", "brand", "price", "pid", "tag_brand_list"],
                                    "wide_deep": "DEEP"}],
                "backbone": {"blocks": [
                    {"name": "all", "inputs": [{"feature_group_name": "all"}],
                     "input_layer": {"only_output_feature_list": True}},
                    {"name": "senet", "inputs": [{"block_name": "all"}],
                     "keras_layer": {"class_name": "SENet", "senet": {"reduction_ratio": 4}}},
                    {"name": "mmoe", "inputs": [{"block_name": "senet"}],
                     "keras_layer": {"class_name": "MMoE", "mmoe": {"num_task": 2, "num_expert": 3,
                                                                    "expert_mlp": {"hidden_units": [256, 128]}}}}]},
                "model_params": {"task_towers": [tower("ctr", "clk"), tower("cvr", "buy")],
                                 "l2_regularization": 1e-6},  # towers' num_class: 1 is recstack's only kind
                "embedding_regularization": 5e-5}}}
    assert dropped(result) == [
        ("train_config.num_steps", 2500), ("train_config.sync_replicas", True),
        ("train_config.save_checkpoints_steps", 500), ("eval_config.metrics_set[0].auc", None),
        ("data_config.prefetch_size", 32), ("model_config.model_name", "MMoE")]
    assert changed(result) == ["runner.train_data_dir", "runner.test_data_dir", "runner.shuffle", "runner.epochs",
                               "hyper_parameters.optimizer.lr_schedule"]
    check_yaml(result, tmp_path)


def check_yaml(result: Conversion, tmp_path: Path) -> None:
    """The YAML text: the report as its first comment lines, the config as its data, accepted by load_config."""
    text = result.to_yaml()
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert text.startswith("# Converted from ")
    body = " ".join(c[1:].strip() for c in comments)
    for item in result.dropped + result.changed:
        assert item.path in body
    assert all(len(line) <= 120 for line in comments)
    assert yaml.safe_load(text) == result.config
    path = tmp_path / "converted.yaml"
    path.write_text(text)
    config = load_config(path)
    assert config.get("runner.train_reader_path") == "tabular"


def test_dbmtl_on_masknet_round_trip(tmp_path):
    result = converted("dbmtl_masknet_taobao")
    hp = result.config["hyper_parameters"]
    assert result.config["runner"] == {
        "train_data_dir": "data/taobao/train", "train_reader_path": "tabular", "train_batch_size": 2048, "epochs": 2,
        "shuffle": False, "print_interval": 200, "cpu_threads": 4,
        "model_save_path": "experiments/dbmtl_masknet_taobao",
        "test_data_dir": "data/taobao/test", "infer_reader_path": "tabular", "infer_batch_size": 8192,
        "infer_load_path": "experiments/dbmtl_masknet_taobao"}
    # TensorFlow's AdamW subtracts 1e-6 * w per step; torch's lr * wd * w: wd = 1e-6 / 5e-4
    assert hp["optimizer"] == {"class": "AdamW", "learning_rate": 0.0005, "weight_decay": pytest.approx(0.002)}
    assert hp["clip_by_norm"] == 10.0
    assert hp["data_config"]["separator"] == "\x01"
    assert hp["data_config"]["input_fields"][-2:] == [
        {"input_name": "price", "input_type": "INT32", "default_val": "0"},
        {"input_name": "is_new", "input_type": "STRING"}]  # BOOL
    features = hp["feature_config"]["features"]
    assert [f["input_names"][0] for f in features] == ["user_id", "cms_segid", "age_level", "adgroup_id", "brand",
                                                       "tag_brand_list", "price"]
    assert features[3] == {"input_names": ["adgroup_id"], "feature_type": "IdFeature", "embedding_dim": 8,
                           "hash_bucket_size": 100000}
    assert features[5] == {"input_names": ["tag_brand_list"], "feature_type": "TagFeature", "separator": "|",
                           "combiner": "mean", "hash_bucket_size": 100000, "embedding_dim": 8}
    assert features[6] == {"input_names": ["price"], "feature_type": "RawFeature", "boundaries": [10, 50, 100, 500],
                           "embedding_dim": 8}
    model = hp["model_config"]
    assert model["feature_groups"] == [{"group_name": "all", "feature_names": ["user_id", "cms_segid", "age_level",
                                                                               "adgroup_id", "brand", "tag_brand_list",
                                                                               "price"], "wide_deep": "DEEP"}]
    assert model["backbone"]["blocks"][0]["keras_layer"] == {
        "class_name": "MaskNet", "masknet": {"mask_blocks": [{"aggregation_size": 64, "output_size": 32}] * 2,
                                             "mlp": {"hidden_units": [64, 32]}}}
    towers = model["model_params"]["task_towers"]
    assert towers[1]["relation_tower_names"] == ["ctr"] and towers[1]["relation_dnn"] == {"hidden_units": [8]}
    assert dropped(result) == [
        ("train_config.num_steps", 5000), ("feature_configs[3].initializer", None), ("feature_configs[7]", None),
        ("model_config.model_name", "DBMTL"), ("export_config", None)]
    assert "ComboFeature 'brand_x_age' is not supported" in result.dropped[2].reason
    assert changed(result) == ["runner.train_data_dir", "runner.test_data_dir", "data_config.input_type",
                               "data_config.input_fields[9].input_type", "model_config.feature_groups[0].feature_names",
                               "hyper_parameters.optimizer.weight_decay"]
    check_yaml(result, tmp_path)


def test_deepfm_on_backbone_round_trip(tmp_path):
    result = converted("deepfm_backbone")
    hp = result.config["hyper_parameters"]
    assert hp["optimizer"] == {"class": "Adam", "lr_schedule": {"boundaries": [1000, 3000],
                                                                "values": [0.001, 0.0005, 0.0001]}}
    assert hp["data_config"]["separator"] == "\t" and hp["data_config"]["label_fields"] == ["label"]
    assert hp["feature_config"]["features"][2] == {"input_names": ["gender"], "feature_type": "IdFeature",
                                                   "hash_bucket_size": 10, "embedding_dim": 16}
    blocks = hp["model_config"]["backbone"]["blocks"]
    assert blocks[0] == {"name": "wide", "inputs": [{"feature_group_name": "wide"}],
                         "input_layer": {"wide_output_dim": 1}}
    assert blocks[2] == {"name": "fm", "inputs": [{"block_name": "features", "input_slice": "[1]"}],
                         "keras_layer": {"class_name": "FM"}}
    assert blocks[3]["keras_layer"]["mlp"] == {"hidden_units": [64, 32, 1], "use_final_bn": False,
                                               "final_activation": "linear"}
    assert blocks[4] == {"name": "add", "inputs": [
        {"block_name": "wide", "input_fn": "lambda x: torch.sum(x, dim=1, keepdim=True)"},
        {"block_name": "fm"}, {"block_name": "deep"}],
        "merge_inputs_into_list": True, "keras_layer": {"class_name": "Add"}}
    assert hp["model_config"]["backbone"]["concat_blocks"] == ["add"]
    assert [g["wide_deep"] for g in hp["model_config"]["feature_groups"]] == ["WIDE", "DEEP"]
    assert hp["model_config"]["model_params"] == {"l2_regularization": 1e-4}
    runner = result.config["runner"]
    assert (runner["epochs"], runner["train_batch_size"], runner["print_interval"]) == (3, 1024, 50)
    assert runner["train_data_dir"] == runner["test_data_dir"] == "data/movielens"
    assert dropped(result) == [
        ("train_config.optimizer_config[0].adam_optimizer.beta1", 0.8), ("train_config.num_steps", 4000),
        ("train_config.save_checkpoints_steps", 1000), ("eval_config.metrics_set[0].auc.num_thresholds", 1000),
        ("eval_config.metrics_set[1].gauc", None), ("feature_config.features[2].separator", ","),
        ("model_config.model_name", "DeepFM")]
    assert changed(result) == ["runner.train_data_dir", "runner.test_data_dir",
                               "model_config.backbone.blocks[4].inputs[0].input_fn", "runner.shuffle",
                               "runner.test_data_dir"]
    assert "the same folder as train_data_dir" in result.changed[-1].reason
    check_yaml(result, tmp_path)


def test_dcn_on_backbone_round_trip(tmp_path):
    result = converted("dcn_backbone")
    hp = result.config["hyper_parameters"]
    assert hp["optimizer"] == {"class": "SGD", "learning_rate": 0.01}
    backbone = hp["model_config"]["backbone"]
    assert backbone == {
        "blocks": [{"name": "deep", "inputs": [{"feature_group_name": "all"}],
                    "keras_layer": {"class_name": "MLP", "mlp": {"hidden_units": [64, 32]}}},
                   {"name": "cross", "inputs": [{"feature_group_name": "all", "input_fn": "lambda x: [x, x]"}],
                    "recurrent": {"num_steps": 3, "fixed_input_index": 0, "keras_layer": {"class_name": "Cross"}}}],
        "concat_blocks": ["deep", "cross"], "top_mlp": {"hidden_units": [32, 16]}}
    assert hp["feature_config"]["features"][5] == {"input_names": ["price"], "feature_type": "RawFeature"}
    assert hp["data_config"]["input_fields"][6] == {"input_name": "price", "input_type": "DOUBLE"}
    assert result.config["runner"]["train_data_dir"] == "data/taobao/train"
    momentum = "train_config.optimizer_config[0].momentum_optimizer"
    assert dropped(result) == [
        (f"{momentum}.learning_rate.cosine_decay_learning_rate", None), (f"{momentum}.momentum_optimizer_value", 0.9),
        ("train_config.optimizer_config[1]", None), ("train_config.num_steps", 10000),
        ("train_config.fine_tune_checkpoint", "experiments/pretrained/model.ckpt-1000"),
        ("data_config.with_header", False), ("data_config.input_fields[6].user_define_fn", "tf.math.log1p"),
        ("feature_config.features[5].normalizer_fn", "lambda x: tf.math.log1p(x)")]
    assert "EasyRec's default" in result.dropped[1].reason
    check_yaml(result, tmp_path)


# ---------------------------------------------------------------------------------------------- pieces
PIPELINE = """
train_input_path: "data/train/a.csv"
model_dir: "out"
data_config { input_fields { input_name: "y" input_type: INT32 } label_fields: "y" }
model_config { model_class: "RankModel" feature_groups { group_name: "all" feature_names: "x" } }
"""


def convert_with(extra: str = "", **kwargs) -> Conversion:
    return convert(parse(PIPELINE + extra), **kwargs)


def lr_of(train_config: str) -> tuple[dict, Conversion]:
    result = convert_with(f"train_config {{ {train_config} }}")
    return result.config["hyper_parameters"]["optimizer"], result


@pytest.mark.parametrize("rate, expected", [
    # staircase: max(0.1 * 0.5 ** (t // 10), 0.02): 0.1, 0.05, 0.025, then the floor
    ("decay_steps: 10 decay_factor: 0.5 min_learning_rate: 0.02",
     {"lr_schedule": {"boundaries": [10, 20, 30], "values": [0.1, 0.05, 0.025, 0.02]}}),
    # a constant burn-in (burnin_learning_rate 0) shifts the steps
    ("decay_steps: 10 decay_factor: 0.5 burnin_steps: 5 min_learning_rate: 0.05",
     {"lr_schedule": {"boundaries": [15], "values": [0.1, 0.05]}}),
    ("decay_steps: 10 decay_factor: 0.5 staircase: false", {"learning_rate": 0.1}),
    ("decay_steps: 10 decay_factor: 0.5 burnin_steps: 5 burnin_learning_rate: 0.01", {"learning_rate": 0.1}),
    ("decay_steps: 10 decay_factor: 0.99", {"learning_rate": 0.1}),  # no floor, no num_steps: endless
])
def test_exponential_decay_as_piecewise_steps(rate, expected):
    optimizer, result = lr_of("optimizer_config { adam_optimizer { learning_rate { exponential_decay_learning_rate {"
                              f" initial_learning_rate: 0.1 {rate} }} }} }} }}")
    assert optimizer == {"class": "Adam", **expected}
    if "learning_rate" in expected:
        assert result.dropped[0].path.endswith("exponential_decay_learning_rate")


def test_staircase_values_match_easyrec_formula():
    optimizer, _ = lr_of("optimizer_config { adam_optimizer { learning_rate { exponential_decay_learning_rate {"
                         " initial_learning_rate: 0.01 decay_steps: 7 decay_factor: 0.8 min_learning_rate: 0.001"
                         " } } } }"
                         " num_steps: 50")
    boundaries, values = optimizer["lr_schedule"]["boundaries"], optimizer["lr_schedule"]["values"]
    for step in range(60):
        easyrec = max(0.01 * 0.8 ** (step // 7), 0.001)
        piece = values[sum(b <= step for b in boundaries)]
        if step < 50:
            assert piece == pytest.approx(easyrec)


@pytest.mark.parametrize("optimizer, expected, listed", [
    ("manual_step_learning_rate { initial_learning_rate: 0.01 schedule { step: 100 learning_rate: 0.001 } "
     "warmup: true }", {"class": "Adam", "learning_rate": 0.01}, ["warmup"]),
    ("constant_learning_rate { learning_rate: 0.003 }", {"class": "Adam", "learning_rate": 0.003}, []),
    ("poly_decay_learning_rate { learning_rate_base: 0.01 total_steps: 10 power: 1 }",
     {"class": "Adam", "learning_rate": 0.01}, ["poly_decay_learning_rate"]),
])
def test_learning_rates(optimizer, expected, listed):
    got, result = lr_of(f"optimizer_config {{ lazy_adam_optimizer {{ learning_rate {{ {optimizer} }} }} }}")
    assert got == expected
    assert [item.path.rsplit(".", 1)[-1] for item in result.dropped] == listed


def test_optimizers_without_recstack_equivalent_keep_the_rate():
    got, result = lr_of("optimizer_config { ftrl_optimizer { learning_rate { constant_learning_rate { "
                        "learning_rate: 0.05 } } l1_reg: 0.1 } use_moving_average: true }")
    assert got == {"class": "Adam", "learning_rate": 0.05}
    assert [i.path for i in result.dropped] == ["train_config.optimizer_config[0].ftrl_optimizer",
                                                "train_config.optimizer_config[0].use_moving_average"]
    got, result = lr_of("optimizer_config { adagrad_optimizer { learning_rate { constant_learning_rate { "
                        "learning_rate: 0.05 } } } }")
    assert got == {"class": "Adagrad", "learning_rate": 0.05}
    assert [(i.path, i.value) for i in result.dropped] == [
        ("train_config.optimizer_config[0].adagrad_optimizer.initial_accumulator_value", 0.1)]


def test_st_params_struct_becomes_a_mapping():
    result = convert_with("""
    model_config { backbone { blocks {
      name: "dense" inputs { feature_group_name: "all" }
      keras_layer {
        class_name: "Dense"
        st_params {
          fields { key: "units" value { number_value: 8 } }
          fields { key: "activation" value { string_value: "relu" } }
          fields { key: "use_bias" value { bool_value: false } }
          fields { key: "shape" value { list_value { values { number_value: 2 } values { number_value: 3 } } } }
          fields { key: "inner" value { struct_value { fields { key: "a" value { null_value: NULL_VALUE } } } } }
        }
      } } } }""")
    layer = result.config["hyper_parameters"]["model_config"]["backbone"]["blocks"][0]["keras_layer"]
    assert layer == {"class_name": "Dense", "st_params": {"units": 8, "activation": "relu", "use_bias": False,
                                                          "shape": [2, 3], "inner": {"a": None}}}


def test_backbone_keys_recstack_lacks_are_listed():
    result = convert_with("""
    model_config { backbone {
      blocks { name: "a" inputs { feature_group_name: "all" } input_layer { concat_seq_feature: false } }
      blocks { name: "b" inputs { block_name: "a" reset_input { only_output_feature_list: true } }
               extra_input_fn: "lambda x: tf.concat(x, axis=-1)"
               layers { lambda { expression: "lambda x: tf.nn.softmax(x, axis=1)" } }
               layers { repeat { num_repeat: 2 input_fn: "lambda x, i: tf.gather(x, i)"
                                 keras_layer { class_name: "MLP" } } }
      }
    } }""")
    blocks = result.config["hyper_parameters"]["model_config"]["backbone"]["blocks"]
    assert blocks[0]["input_layer"] == {}
    assert blocks[1]["inputs"] == [{"block_name": "a"}]
    assert blocks[1]["extra_input_fn"] == "lambda x: torch.cat(x, dim=-1)"
    assert blocks[1]["layers"][0] == {"lambda": {"expression": "lambda x: torch.softmax(x, dim=1)"}}
    assert blocks[1]["layers"][1]["repeat"]["input_fn"] == "lambda x, i: tf.gather(x, i)"  # kept, listed
    where = "model_config.backbone.blocks"
    assert [i.path for i in result.dropped] == [f"{where}[0].input_layer.concat_seq_feature",
                                                f"{where}[1].inputs[0].reset_input",
                                                f"{where}[1].layers[1].repeat.input_fn"]
    assert "untranslatable: tf.gather has no torch translation here" in result.dropped[-1].reason


def test_data_paths(tmp_path):
    (tmp_path / "data" / "train").mkdir(parents=True)
    out = tmp_path / "models" / "x"
    # an existing folder stays a folder; relative paths are rewritten relative to the YAML's folder
    result = convert(parse(PIPELINE.replace("data/train/a.csv", "data/train") + 'eval_input_path: "/abs/test/b.csv"'),
                     data_root=str(tmp_path), output_dir=str(out))
    runner = result.config["runner"]
    assert runner["train_data_dir"] == "../../data/train" and runner["test_data_dir"] == "/abs/test"
    assert changed(result)[:2] == ["runner.train_data_dir", "runner.test_data_dir"]
    for path in ("odps://project/tables/train", "data/a/x.csv,data/b/y.csv"):
        result = convert(parse(PIPELINE.replace("data/train/a.csv", path)))
        assert result.dropped[0].path == "train_input_path"
    assert "train_data_dir" not in convert(parse(PIPELINE.replace("data/train/a.csv", "odps://p/t"))).config["runner"]
    kafka = PIPELINE.replace('train_input_path: "data/train/a.csv"', 'kafka_train_input { server: "s" }')
    result = convert(parse(kafka))
    assert [(i.path, i.reason) for i in result.dropped] == [
        ("kafka_train_input", "streaming input is not supported: recstack reads CSV files")]


def test_not_a_pipeline_config():
    with pytest.raises(ConfigError, match=r"^x\.config: no model_config message: not an EasyRec pipeline config$"):
        convert(parse('model_dir: "x"'), "x.config")
    with pytest.raises(ConfigError, match=r"^data_config\.input_fields\[0\]\.input_type: unknown field type 'INT8'"):
        convert(parse(PIPELINE.replace("INT32", "INT8")))


# ---------------------------------------------------------------------------------------------- lambdas
@pytest.mark.parametrize("text, expected", [
    ("lambda x: tf.add_n(x)", "lambda x: torch.stack(x, 0).sum(0)"),
    ("lambda x: tf.reduce_sum(x, axis=1, keepdims=True)", "lambda x: torch.sum(x, dim=1, keepdim=True)"),
    ("lambda x: tf.reduce_sum(x, 1, True)", "lambda x: torch.sum(x, dim=1, keepdim=True)"),
    ("lambda x: tf.reduce_sum(x, keep_dims=True, reduction_indices=1)", "lambda x: torch.sum(x, dim=1, keepdim=True)"),
    ("lambda x: tf.math.reduce_mean(x, axis=[1, 2])", "lambda x: torch.mean(x, dim=(1, 2))"),
    ("lambda x: tf.reduce_mean(x)", "lambda x: torch.mean(x)"),
    ("lambda x: tf.reduce_max(x, -1)", "lambda x: torch.amax(x, dim=-1)"),
    ("lambda x: tf.concat(x, axis=1)", "lambda x: torch.cat(x, dim=1)"),
    ("lambda x: tf.concat([x[0], x[1]], -1, name='c')", "lambda x: torch.cat([x[0], x[1]], dim=-1)"),
    ("lambda x: tf.stack(x, axis=1)", "lambda x: torch.stack(x, dim=1)"),
    ("lambda x: tf.squeeze(x, axis=[1])", "lambda x: torch.squeeze(x, dim=(1,))"),
    ("lambda x: tf.expand_dims(x, 1)", "lambda x: torch.unsqueeze(x, dim=1)"),
    ("lambda x: tf.nn.sigmoid(tf.add_n([x, x]))", "lambda x: torch.sigmoid(torch.stack([x, x], 0).sum(0))"),
    ("lambda x: [x, x]", "lambda x: [x, x]"),
    ("lambda x:x[1]", "lambda x:x[1]"),  # no tf: the text is kept as written
])
def test_lambdas_are_rewritten_over_torch(text, expected):
    assert translate_lambda(text) == (expected, [])


@pytest.mark.parametrize("text, problem", [
    ("lambda x: tf.cast(x, tf.float32)", "tf.cast has no torch translation here"),
    ("lambda x: tf.keras.backend.sum(x)", "tf.keras.backend.sum has no torch translation here"),
    ("lambda x: x * tf.float32", "tf.float32 has no torch translation here"),
    ("lambda x: tf.reduce_sum(x, 1, foo=2)", "tf.reduce_sum: unexpected argument 'foo'"),
    ("lambda x: tf.concat(x)", "tf.concat: missing axis"),
    ("lambda x: tf.(", "not a Python expression (invalid syntax)"),
])
def test_untranslatable_lambdas_are_named(text, problem):
    translated, problems = translate_lambda(text)
    assert translated == text and problem in problems


def test_translated_lambdas_compute_what_tensorflow_would():
    """The rewritten text evaluated over torch against numpy's form of the TensorFlow op."""
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(3, 4, 5, generator=g) for _ in range(3)]
    arrays = [x.numpy() for x in xs]
    cases = [
        ("lambda x: tf.add_n(x)", xs, np.sum(arrays, axis=0)),
        ("lambda x: tf.reduce_sum(x, axis=1, keepdims=True)", xs[0], arrays[0].sum(axis=1, keepdims=True)),
        ("lambda x: tf.reduce_mean(x, [1, 2])", xs[0], arrays[0].mean(axis=(1, 2))),
        ("lambda x: tf.concat(x, axis=-1)", xs, np.concatenate(arrays, axis=-1)),
        ("lambda x: tf.stack(x, axis=1)", xs, np.stack(arrays, axis=1)),
        ("lambda x: tf.squeeze(tf.expand_dims(x, 1), axis=[1])", xs[0], arrays[0]),
        ("lambda x: tf.reduce_max(x, axis=2)", xs[0], arrays[0].max(axis=2)),
    ]
    for text, value, expected in cases:
        translated, problems = translate_lambda(text)
        assert not problems
        fn = eval(translated, {"__builtins__": {}, "torch": torch})  # noqa: S307 (the test's own strings)
        np.testing.assert_allclose(fn(value).numpy(), expected, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------- the tool
def run_tool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_tool_writes_yaml_and_prints_the_report(tmp_path):
    (tmp_path / "models").mkdir()
    proc = run_tool(str(DATA / "mmoe_backbone_taobao.config"), "-o", "models/mmoe.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "Not carried over (6):"
    assert "  - train_config.num_steps = 2500: recstack trains whole epochs (runner.epochs)" in proc.stdout
    assert proc.stdout.rstrip().endswith("wrote models/mmoe.yaml")
    data = yaml.safe_load((tmp_path / "models" / "mmoe.yaml").read_text())
    assert data["runner"]["train_data_dir"] == "../data/taobao/train"  # EasyRec: cwd-relative; recstack: YAML's
    assert load_config(tmp_path / "models" / "mmoe.yaml").get("runner.train_data_dir") == \
        str(tmp_path / "data" / "taobao" / "train")
    proc = run_tool(str(DATA / "dcn_backbone.config"), cwd=tmp_path)  # no -o: YAML on stdout, report on stderr
    assert proc.returncode == 0
    assert yaml.safe_load(proc.stdout) == convert_file(str(DATA / "dcn_backbone.config")).config
    assert proc.stderr.startswith("Not carried over (8):")


def tool_main():
    """``tools/easyrec_config.py``'s ``main``, loaded by path (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("easyrec_config_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("content, args, message", [
    ('model_dir: "x"\ndata_config {\n  batch_size: 1\n  separator: "\\q"\n}\n', (),
     "{path}:4:15: unknown escape '\\q' in a string"),
    (None, (), "{path}: no such file"),
    ('model_dir: "x"\n', (), "p.config: no model_config message: not an EasyRec pipeline config"),
    (PIPELINE, ("-o", "{tmp}/nowhere/c.yaml"), "-o {tmp}/nowhere/c.yaml: folder '{tmp}/nowhere' does not exist"),
])
def test_tool_errors_exit_2_with_one_line(tmp_path, capsys, content, args, message):
    path = tmp_path / "p.config"
    if content is not None:
        path.write_text(content)
    assert tool_main()([str(path), *(a.format(tmp=tmp_path) for a in args)]) == 2
    out, err = capsys.readouterr()
    assert err == message.format(path=path, tmp=tmp_path) + "\n" and out == ""


def test_tool_syntax_error_from_the_command_line(tmp_path):
    (tmp_path / "p.config").write_text('model_config {\n  model_class: "RankModel"\n')
    proc = run_tool("p.config", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "p.config:3:1: expected '}' to close the message opened at line 1, got the end of the text\n"


# ---------------------------------------------------------------------------------------------- training
FOLDERS = {"MultiTaskModel": REPO / "models" / "multitask" / "mmoe", "RankModel": REPO / "models" / "rank" / "deepfm"}


def write_rows(path: Path, hp: dict, rows: int, seed: int) -> None:
    """CSV rows for the config's input fields: labels 0/1, ids, tag lists, numbers (seeded)."""
    rng = np.random.default_rng(seed)
    data = hp["data_config"]
    features = {f["input_names"][0]: f for f in hp["feature_config"]["features"]}
    columns = []
    for field in data["input_fields"]:
        name, kind = field["input_name"], field.get("input_type", "STRING")
        feature = features.get(name, {})
        if name in data["label_fields"]:
            values = rng.integers(0, 2, rows).astype(str)
        elif feature.get("feature_type") in ("TagFeature", "SequenceFeature"):
            sep = feature.get("separator", "|")
            values = np.array([sep.join(f"t{v}" for v in rng.integers(0, 20, rng.integers(1, 4))) for _ in range(rows)])
        elif kind in ("INT32", "INT64"):
            values = rng.integers(0, feature.get("num_buckets", 10), rows).astype(str)
        elif kind in ("FLOAT", "DOUBLE"):
            values = np.round(rng.random(rows) * 100, 3).astype(str)
        else:
            values = np.char.add("v", rng.integers(0, 30, rows).astype(str))
        columns.append(values)
    sep = data.get("separator", ",")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(sep.join(row) + "\n" for row in zip(*columns)))


@pytest.mark.parametrize("name", ["mmoe_backbone_taobao", "dbmtl_masknet_taobao", "deepfm_backbone", "dcn_backbone"])
def test_converted_configs_read_as_recstack_reads_them(tmp_path, name):
    """The data and feature sections parse as the tabular reader reads them, the backbone as the engine does."""
    from recstack.easyrec.features import TabularSpec
    from recstack.easyrec.schema import Node

    result = converted(name)
    (tmp_path / "config.yaml").write_text(result.to_yaml())
    spec = TabularSpec.from_config(load_config(tmp_path / "config.yaml"))
    hp = result.config["hyper_parameters"]
    assert [f.feature_type for f in spec.features] == [f["feature_type"] for f in hp["feature_config"]["features"]]
    assert spec.label_fields == tuple(hp["data_config"]["label_fields"])
    if importlib.util.find_spec("recstack.backbone.spec") is not None:
        from recstack.backbone.spec import parse_backbone

        model = hp["model_config"]
        parse_backbone(Node(None, "hyper_parameters.model_config.backbone", model["backbone"]),
                       [g["group_name"] for g in model["feature_groups"]])


@pytest.mark.parametrize("name", ["mmoe_backbone_taobao", "dbmtl_masknet_taobao", "deepfm_backbone", "dcn_backbone"])
def test_converted_configs_train(tmp_path, name):
    from recstack.trainer import train
    from recstack.wrapper import build_model

    result = converted(name)
    hp = result.config["hyper_parameters"]
    folder = FOLDERS[hp["model_config"]["model_class"]]
    for file in folder.glob("*.py"):
        shutil.copy(file, tmp_path / file.name)
    (tmp_path / "config.yaml").write_text(result.to_yaml())
    write_rows(tmp_path / "data" / "train" / "part-0.csv", hp, 256, seed=1)
    write_rows(tmp_path / "data" / "test" / "part-0.csv", hp, 128, seed=2)
    overrides = ["runner.train_data_dir=data/train", "runner.test_data_dir=data/test", "runner.epochs=1",
                 "runner.train_batch_size=64", "runner.infer_batch_size=64", f"runner.model_save_path={tmp_path}/out",
                 f"runner.infer_load_path={tmp_path}/out", "runner.print_interval=2"]
    config = load_config(tmp_path / "config.yaml", overrides)
    _, model = build_model(config, torch.device("cpu"))
    assert sum(p.numel() for p in model.parameters()) > 0
    trained = train(load_config(tmp_path / "config.yaml", overrides))
    (epoch,) = trained.epochs
    assert epoch.samples == 256 and math.isfinite(epoch.loss)
    assert all(math.isfinite(v) for v in epoch.metrics.values())
    assert epoch.checkpoint is not None and epoch.checkpoint.is_dir()
