"""Config loading, overrides, validation and path resolution."""

import logging
from pathlib import Path

import pytest

from recstack.config import RUNNER_KEYS, ConfigError, check_hyper_parameters, load_config, log_config, parse_value

REPO = Path(__file__).resolve().parents[1]

BASE = """\
runner:
  train_data_dir: "data/train"
  train_reader_path: "criteo_reader"
  train_batch_size: 64
  epochs: 2
  model_save_path: "out"
hyper_parameters:
  optimizer:
    class: Adam
    learning_rate: 0.001
  fc_sizes: [8, 4]
  sparse_feature_dim: 9
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    (folder / "data" / "train").mkdir(parents=True)
    path = folder / "config.yaml"
    path.write_text(BASE)
    return path


@pytest.mark.parametrize("text, value", [
    ("2", 2), ("0.5", 0.5), ("1e-3", 0.001), ("-2.5E+2", -250.0), ("true", True), ("False", False),
    ("[64, 32]", [64, 32]), ("null", None), ("abc", "abc"), ("'12'", "12"), ("{a: 1}", {"a": 1}),
])
def test_override_values_are_typed_by_yaml(text, value):
    assert parse_value(text) == value
    assert type(parse_value(text)) is type(value)


def test_load_applies_defaults_overrides_and_resolves_data_paths(config_file, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(config_file, ["runner.epochs=5", "hyper_parameters.fc_sizes=[16,8,4]",
                                    "hyper_parameters.optimizer.learning_rate=1e-2", "runner.model_init_path=null",
                                    "hyper_parameters.new.nested.key=3"])
    assert cfg.get("runner.epochs") == 5
    assert cfg.get("hyper_parameters.fc_sizes") == [16, 8, 4]
    assert cfg.get("hyper_parameters.optimizer.learning_rate") == 0.01
    assert cfg.get("hyper_parameters.new.nested.key") == 3
    assert cfg.get("runner.model_init_path") is None
    # data paths resolve against the YAML's folder, output paths stay relative to the working directory
    assert cfg.get("runner.train_data_dir") == str(config_file.parent / "data" / "train")
    assert cfg.get("runner.model_save_path") == "out"
    # defaults
    assert cfg.get("runner.print_interval") == RUNNER_KEYS["print_interval"].default
    assert cfg.get("runner.infer_reader_path") == "criteo_reader"
    assert cfg.get("runner.infer_load_path") == "out"
    assert cfg.get("runner.infer_end_epoch") == 5
    assert cfg.get("hyper_parameters.optimizer.sparse") is True
    assert cfg.overridden >= {"runner.epochs", "hyper_parameters.fc_sizes"}


def test_unknown_runner_key_in_file_names_file_and_closest_key(config_file):
    config_file.write_text(BASE.replace("epochs: 2", "epoch: 2"))
    with pytest.raises(ConfigError, match=r"unknown key 'runner.epoch' in .*config.yaml; did you mean 'runner.epochs'"):
        load_config(config_file)


def test_unknown_override_key_says_it_came_from_o(config_file):
    with pytest.raises(ConfigError,
                       match=r"'runner.train_batch_szie' \(from -o\); did you mean 'runner.train_batch_size'"):
        load_config(config_file, ["runner.train_batch_szie=8"])


@pytest.mark.parametrize("override, message", [
    ("runner.epochs=two", r"'runner.epochs' \(from -o\): expected int, got 'two'"),
    ("runner.use_gpu=1", r"'runner.use_gpu' \(from -o\): expected bool, got 1"),
    ("runner.train_batch_size=0", r"must be positive, got 0"),
    ("hyper_parameters.optimizer.clas=SGD", r"did you mean 'hyper_parameters.optimizer.class'"),
    ("hyper_parameters.optimizer.learning_rate=fast", r"expected float or int, got 'fast'"),
    ("runer.epochs=1", r"keys start with runner. or hyper_parameters.; did you mean 'runner'"),
    ("runner.epochs", r"expected key=value"),
])
def test_bad_overrides(config_file, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(config_file, [override])


def test_unknown_section_and_yaml_errors(config_file, tmp_path):
    config_file.write_text(BASE + "hyper_parameter:\n  x: 1\n")
    with pytest.raises(ConfigError, match="unknown section 'hyper_parameter'; did you mean 'hyper_parameters'"):
        load_config(config_file)
    config_file.write_text("runner:\n  epochs: [1,\n")
    with pytest.raises(ConfigError, match=r"config.yaml:\d+:\d+: invalid YAML"):
        load_config(config_file)
    config_file.write_text("")
    with pytest.raises(ConfigError, match="file is empty"):
        load_config(config_file)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_missing_key_and_typed_get(config_file):
    cfg = load_config(config_file)
    with pytest.raises(ConfigError,
                       match="missing key 'hyper_parameters.fc_size'; did you mean 'hyper_parameters.fc_sizes'"):
        cfg.get("hyper_parameters.fc_size")
    assert cfg.get("hyper_parameters.fc_size", [1]) == [1]
    assert cfg.get("hyper_parameters.optimizer.learning_rate", type=float) == 0.001
    with pytest.raises(ConfigError, match="'hyper_parameters.fc_sizes' in .*: expected int, got \\[8, 4\\]"):
        cfg.get("hyper_parameters.fc_sizes", type=int)


def test_hyper_parameters_nobody_read_are_errors(config_file):
    cfg = load_config(config_file, ["hyper_parameters.sparse_feature_dimm=4"])
    cfg.get("hyper_parameters.fc_sizes")
    cfg.get("hyper_parameters.sparse_feature_dim")
    with pytest.raises(ConfigError, match=r"'hyper_parameters.sparse_feature_dimm' \(from -o\) for model m; "
                                          r"did you mean 'hyper_parameters.sparse_feature_dim'"):
        check_hyper_parameters(cfg, "m")
    cfg = load_config(config_file)
    cfg.get("hyper_parameters.fc_sizes")
    cfg.get("hyper_parameters.sparse_feature_dim")
    check_hyper_parameters(cfg, "m")  # optimizer and reg belong to the core


def test_resolved_config_is_logged(config_file, caplog):
    cfg = load_config(config_file, ["runner.epochs=3"])
    with caplog.at_level(logging.INFO, logger="recstack.config"):
        log_config(cfg)
    text = caplog.text
    assert "overrides: runner.epochs" in text and "epochs: 3" in text and "print_interval:" in text


def test_paddlerec_compat_keys_are_accepted(config_file, caplog):
    config_file.write_text(BASE.replace("  epochs: 2\n",
                                        "  epochs: 2\n  use_inference: False\n  reader_type: QueueDataset\n"))
    with caplog.at_level(logging.WARNING):
        cfg = load_config(config_file)
    assert cfg.get("runner.reader_type") == "QueueDataset"
    assert "reader_type is accepted for PaddleRec compatibility" in caplog.text


def test_every_runner_key_is_documented():
    doc = (REPO / "doc" / "yaml.md").read_text()
    missing = [k for k in RUNNER_KEYS if f"`{k}`" not in doc]
    assert not missing, f"doc/yaml.md does not document runner keys {missing}"


def test_repeated_o_flags_all_apply():
    from recstack.cli import parse_args

    args = parse_args("t", ["-m", "c.yaml", "-o", "runner.epochs=1", "-o", "runner.seed=2", "runner.shuffle=true"])
    assert args.opt == ["runner.epochs=1", "runner.seed=2", "runner.shuffle=true"]
