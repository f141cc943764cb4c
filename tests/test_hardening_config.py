"""Hardening of the config (issue 14, items 8, 9, 19): each bad input ends in one ERROR line naming the
key (or the file and line) and exit status 2, never a traceback; every shipped config still passes."""

import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from recstack.cli import EPILOGS, infer_main, report_user_errors, train_main
from recstack.config import (
    CORE_HYPER_PARAMETERS,
    MAX_SEED,
    ConfigError,
    ListOf,
    PositiveInt,
    check_schema,
    from_dict,
    load_config,
)
from recstack.data.base import DataFormatError
from recstack.wrapper import load_wrapper

REPO = Path(__file__).resolve().parents[1]
DEEPFM = REPO / "models/rank/deepfm/config.yaml"
ALL_CONFIGS = sorted(REPO.glob("models/*/*/config*.yaml"))
#: hyper_parameters keys checked elsewhere than a wrapper's hyper_parameter_schema: the core's
#: (optimizer, reg, clip_by_norm), task_names (recstack.config.task_names) and EasyRec's sections
#: (read key by key, typed and range-checked, by recstack.easyrec.schema.Node)
NOT_IN_SCHEMA = set(CORE_HYPER_PARAMETERS) | {"task_names", "data_config", "feature_config", "model_config",
                                              "export_config"}


def run_train(argv, caplog, tmp_path, monkeypatch) -> tuple[int, list[str]]:
    """``tools/trainer.py argv`` in-process (output under tmp_path); the return code and the ERROR lines."""
    monkeypatch.chdir(tmp_path)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        code = train_main(argv)
    return code, [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def deepfm(*overrides: str) -> list[str]:
    return ["-m", str(DEEPFM), "-o", "runner.epochs=1", "runner.model_save_path=out", *overrides]


# ------------------------------------------------------------------ item 8: values out of range
@pytest.mark.parametrize("override, key, expected", [
    ("hyper_parameters.optimizer.learning_rate=-1", "hyper_parameters.optimizer.learning_rate",
     "expected a positive finite number, got -1"),
    ("hyper_parameters.optimizer.learning_rate=.nan", "hyper_parameters.optimizer.learning_rate", "got nan"),
    ("hyper_parameters.optimizer.learning_rate=0", "hyper_parameters.optimizer.learning_rate", "positive"),
    ("hyper_parameters.reg=-0.1", "hyper_parameters.reg", "expected a finite number >= 0, got -0.1"),
    ("hyper_parameters.clip_by_norm=.nan", "hyper_parameters.clip_by_norm", "got nan"),
    ("runner.cpu_threads=0", "runner.cpu_threads", "expected a positive int or null, got 0"),
    ("runner.cpu_threads=-4", "runner.cpu_threads", "got -4"),
    (f"runner.seed={2**64}", "runner.seed", f"expected an int in [0, {MAX_SEED}], got {2**64}"),
    (f"runner.seed={2**32}", "runner.seed", f"got {2**32}"),
    ("runner.seed=-1", "runner.seed", "got -1"),
    ("runner.num_workers=-1", "runner.num_workers", "expected an int >= 0"),
    ("runner.dist_timeout_s=0", "runner.dist_timeout_s", "positive"),
    ("runner.infer_start_epoch=-1", "runner.infer_start_epoch", "expected an int >= 0"),
    ("hyper_parameters.optimizer.lr_schedule={boundaries: [10], values: [.nan, 0.1]}",
     "hyper_parameters.optimizer.lr_schedule.values", "got [nan, 0.1]"),
])
def test_bad_runner_and_optimizer_values(override, key, expected, caplog, tmp_path, monkeypatch):
    code, errors = run_train(deepfm(override), caplog, tmp_path, monkeypatch)
    assert code == 2
    assert len(errors) == 1 and f"'{key}' (from -o)" in errors[0] and expected in errors[0], errors
    assert not (tmp_path / "out").exists()


def test_infer_start_after_end_names_both_keys(caplog, tmp_path, monkeypatch):
    code, errors = run_train(deepfm("runner.infer_start_epoch=3", "runner.infer_end_epoch=1"), caplog, tmp_path,
                             monkeypatch)
    assert code == 2
    assert "'runner.infer_end_epoch' (from -o): must be greater than 'runner.infer_start_epoch' (from -o), " \
           "which is 3" in errors[0] and "got 1" in errors[0]


def test_infer_with_nothing_to_evaluate_is_a_config_error(caplog, tmp_path, monkeypatch):
    """infer_end_epoch left to its default (runner.epochs): the evaluator's check, now a ConfigError, not a
    ValueError."""
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO):
        code = infer_main(["-m", str(DEEPFM), "-o", "runner.infer_end_epoch=null", "runner.epochs=1",
                           "runner.infer_start_epoch=1", f"runner.infer_load_path={tmp_path}"])
    assert code == 2
    assert "'runner.infer_end_epoch' (from -o): nothing to evaluate" in caplog.text


@pytest.mark.parametrize("config, override, expected", [
    ("rank/deepfm", "sparse_feature_number=0", "expected a positive int (model deepfm), got 0"),
    ("rank/deepfm", "sparse_feature_number=-5", "got -5"),
    ("rank/deepfm", "sparse_feature_dim=0", "expected a positive int (model deepfm), got 0"),
    ("rank/deepfm", "dense_input_dim=-1", "expected an int >= 0 (model deepfm), got -1"),
    ("rank/deepfm", "sparse_inputs_slots=1", "expected an int >= 2"),
    ("rank/deepfm", "fc_sizes=[a,b]", "expected a list of positive ints (model deepfm), got ['a', 'b']"),
    ("rank/deepfm", "fc_sizes=[64,0]", "got [64, 0]"),
    ("rank/deepfm", "fc_sizes='64'", "got '64'"),
    ("rank/dnn", "sparse_feature_dim=2.5", "got 2.5"),
    ("rank/fm", "sparse_feature_number=0", "(model fm)"),
    ("rank/ffm", "sparse_feature_dim=-1", "(model ffm)"),
    ("rank/logistic_regression", "num_field=0", "(model logistic_regression)"),
    ("rank/dcn", "cross_num=-1", "expected an int >= 0"),
    ("rank/dcn_v2", "low_rank=0", "(model dcn_v2)"),
    ("rank/gatenet", "use_hidden_gate=1", "expected a bool"),
    ("rank/xdeepfm", "layer_sizes_cin=[]", "expected a non-empty list of positive ints"),
    ("rank/dlrm", "top_layer_sizes=[512,-2]", "(model dlrm)"),
    ("rank/din", "init_std=-0.3", "expected a positive finite number"),
    ("rank/din", "act=tanh", "expected one of sigmoid, dice, relu, prelu"),
    ("rank/din", "item_count=0", "(model din)"),
    ("multitask/esmm", "ctr_fc_sizes=[256,-64]", "(model esmm)"),
    ("multitask/mmoe", "expert_num=0", "(model mmoe)"),
    ("multitask/ple", "shared_num=-1", "expected an int >= 0 (model ple)"),
    ("multitask/share_bottom", "bottom_size=0", "(model share_bottom)"),
    ("rank/dcn", "l2_reg_cross=.inf", "expected a finite number >= 0 (model dcn), got inf"),
    ("multitask/dbmtl", "model_config.dbmtl.l2_regularization=.nan", "expected a finite number, got nan"),
])
def test_bad_model_sizes_are_refused_before_the_model_is_built(config, override, expected, caplog, tmp_path,
                                                               monkeypatch):
    key = "hyper_parameters." + override.split("=")[0]
    code, errors = run_train(["-m", str(REPO / "models" / config / "config.yaml"), "-o", "runner.model_save_path=out",
                              "hyper_parameters." + override], caplog, tmp_path, monkeypatch)
    assert code == 2
    assert len(errors) == 1 and errors[0].startswith(f"'{key}' (from -o): expected") and expected in errors[0], errors


# ------------------------------------------------------------------ item 8: the file itself
@pytest.mark.parametrize("encoding, hint", [("latin-1", ""), ("utf-16", " (it looks like UTF-16)")])
def test_non_utf8_yaml(encoding, hint, caplog, tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_bytes(("runner:\n  epochs: 1\n# caf\u00e9\n").encode(encoding))
    code, errors = run_train(["-m", str(path)], caplog, tmp_path, monkeypatch)
    assert code == 2
    line = 1 if encoding == "utf-16" else 3
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{path}:{line}: not UTF-8 text: byte 0x") and errors[0].endswith(
        f"{hint}; save the file as UTF-8")


def test_utf8_with_byte_order_mark_loads(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes("\ufeffrunner:\n  epochs: 2\n".encode("utf-8"))
    assert load_config(path).get("runner.epochs") == 2


@pytest.mark.parametrize("text, message", [
    ("runner:\n  epochs: 1\n  seed: 2\n  epochs: 3\n", "duplicate key 'runner.epochs' (lines 2 and 4)"),
    ("runner:\n  epochs: 1\nhyper_parameters:\n  optimizer:\n    learning_rate: 0.1\n    class: Adam\n"
     "    learning_rate: 0.01\n", "duplicate key 'hyper_parameters.optimizer.learning_rate' (lines 5 and 7)"),
    ("runner: {epochs: 1, epochs: 2}\n", "duplicate key 'runner.epochs' (lines 1 and 1)"),
    ("runner:\n  epochs: 1\nrunner:\n  seed: 1\n", "duplicate key 'runner' (lines 1 and 3)"),
])
def test_duplicate_yaml_keys_name_the_key_and_both_lines(text, message, caplog, tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    code, errors = run_train(["-m", str(path)], caplog, tmp_path, monkeypatch)
    assert code == 2
    assert len(errors) == 1 and errors[0].startswith(f"{path}:") and message in errors[0], errors


def test_yaml_merge_keys_may_be_overridden(tmp_path):
    """``<<: *base`` then an explicit key: not a duplicate (the explicit key wins, as YAML says)."""
    path = tmp_path / "config.yaml"
    path.write_text("runner: &base\n  epochs: 1\n  seed: 3\nhyper_parameters:\n  optimizer:\n"
                    "    <<: {class: SGD, learning_rate: 0.5}\n    learning_rate: 0.1\n")
    config = load_config(path)
    assert config.get("hyper_parameters.optimizer.learning_rate") == 0.1
    assert config.get("hyper_parameters.optimizer.class") == "SGD"


# ------------------------------------------------------------------ item 8: ValueErrors on the user-error path
def test_wrapper_without_dygraph_model_class_is_a_config_error(tmp_path):
    (tmp_path / "dygraph_model.py").write_text("X = 1\n")
    (tmp_path / "config.yaml").write_text("runner: {epochs: 1}\n")
    with pytest.raises(ConfigError, match="defines no class DygraphModel"):
        load_wrapper(load_config(tmp_path / "config.yaml"))


def test_classification_label_outside_0_1_is_a_data_error():
    import torch

    from recstack.easyrec.tasks import TaskTowerSpec, task_losses

    tower = TaskTowerSpec(tower_name="ctr", label_name="y", loss_type="CLASSIFICATION")
    with pytest.raises(DataFormatError, match="label 'y' must be in"):
        task_losses([torch.full((2, 1), 0.5)], [torch.tensor([0.0, 3.0])], [tower])


def test_report_user_errors_for_tools(caplog):
    def main() -> int:
        raise ConfigError("'runner.seed' (from -o): bad")

    assert report_user_errors(main)() == 2
    assert "'runner.seed' (from -o): bad" in caplog.text

    def bug() -> int:
        raise ValueError("a genuine bug")

    with pytest.raises(ValueError, match="a genuine bug"):  # not made to look like a user error
        report_user_errors(bug)()


def test_schema_checks_only_present_keys_and_reads_nothing():
    config = from_dict({"hyper_parameters": {"fc_sizes": [4, 2]}})
    check_schema(config, {"fc_sizes": ListOf(PositiveInt), "absent": PositiveInt})
    assert "fc_sizes" not in config.accessed_hyper_parameters  # unknown-key detection is unaffected
    with pytest.raises(TypeError, match="expected a recstack.config.Check"):
        check_schema(config, {"fc_sizes": int})


# ------------------------------------------------------------------ item 9: -o given twice
def test_repeated_o_applies_every_list(caplog, tmp_path, monkeypatch):
    for argv in (deepfm("-o", "runner.seed=-1"), ["-m", str(DEEPFM), "-o", "runner.seed=-1", "-o", "runner.epochs=1"]):
        code, errors = run_train(argv, caplog, tmp_path, monkeypatch)
        assert code == 2 and "'runner.seed' (from -o)" in errors[0]
    config = load_config(DEEPFM, ["runner.epochs=1", "runner.seed=3", "runner.epochs=2"])
    assert config.get("runner.seed") == 3 and config.get("runner.epochs") == 2  # a key given twice: the last value


# ------------------------------------------------------------------ item 19: -h
def test_help_shows_examples_and_points_to_the_doc(capsys):
    spec = importlib.util.spec_from_file_location("to_static_tool", REPO / "tools/to_static.py")
    to_static = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(to_static)
    for main, tool in ((train_main, "trainer"), (infer_main, "infer"), (to_static.main, "to_static")):
        with pytest.raises(SystemExit) as exit_:
            main(["-h"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert "examples:" in out and f"python tools/{tool}.py -m models/" in out and "doc/yaml.md" in out
        assert EPILOGS[tool].splitlines()[1] in out  # kept as written (raw formatter)
        assert "-o a=1 -o b=2 applies both" in " ".join(out.split())


# ------------------------------------------------------------------ the real command lines
@pytest.mark.parametrize("tool, args, expected", [
    ("trainer.py", ["-o", "hyper_parameters.optimizer.learning_rate=-1"],
     "'hyper_parameters.optimizer.learning_rate' (from -o): expected a positive finite number, got -1"),
    ("infer.py", ["-o", "runner.infer_start_epoch=2", "-o", "runner.infer_end_epoch=2"],
     "'runner.infer_end_epoch' (from -o): must be greater than"),
    ("to_static.py", ["-o", "runner.cpu_threads=0"], "'runner.cpu_threads' (from -o): expected a positive int"),
])
def test_tools_print_one_line_and_exit_2(tool, args, expected, tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "tools" / tool), "-m", str(DEEPFM), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and " - ERROR - " in lines[0] and expected in lines[0], lines
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------ every shipped config
@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_config_passes_the_checks_and_its_keys_are_declared(path):
    config = load_config(path)
    wrapper = load_wrapper(config)  # checks hyper_parameter_schema
    schema = type(wrapper).hyper_parameter_schema
    undeclared = set(config.section("hyper_parameters")) - set(schema) - NOT_IN_SCHEMA
    assert not undeclared, f"{path}: declare {sorted(undeclared)} in its DygraphModel.hyper_parameter_schema"
