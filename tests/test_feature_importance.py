"""Permutation feature importance (recstack/importance.py, tools/feature_importance.py).

Each model is trained for one epoch on its bundled sample (module scope, a few seconds each), then shuffled
feature by feature. The planted signals of datasets/synthetic/generate.py must rank above its noise columns:
ctr_csv's ``item_ctr`` and ``category`` above ``weekday`` (no effect on the click), the Criteo world's informative
slots 6 and 14 above slots 4 and 13 (no weight), census's ``features[0]`` (age, in both tasks) above
``features[1]`` (no effect). One-epoch figures measured here: item_ctr 0.021, category 0.076, weekday 0.0000;
slots 14 / 6 0.038 / 0.028, slots 4 / 13 -0.003 / -0.008; features[0] 0.060 / 0.116 (income / marital AUC),
features[1] 0.005 / -0.003: the margins are several times the repeats' spread.
"""

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest

from recstack.config import ConfigError, from_dict, load_config
from recstack.data.base import BlockReader, FeatureUnit, GroupIndex, RaggedArray
from recstack.evaluator import infer
from recstack.importance import (
    FeatureImportance,
    ImportanceReport,
    choose_checkpoint,
    describe_columns,
    list_features,
    permutation_importance,
    read_test_block,
    select_features,
    shuffle_columns,
    write_report,
)
from recstack.metrics import AUC, MSE, LogLoss
from recstack.trainer import train

REPO = Path(__file__).resolve().parents[1]
TABULAR = REPO / "models/rank/deepfm/config_tabular.yaml"
SLOT = REPO / "models/rank/deepfm/config.yaml"
DIN = REPO / "models/rank/din/config.yaml"
MMOE = REPO / "models/multitask/mmoe/config.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train a config for one epoch into a temporary folder once: path → overrides that point infer at it."""
    done = {}

    def get(path: Path) -> list[str]:
        if path not in done:
            out = tmp_path_factory.mktemp(path.parent.name + path.stem.removeprefix("config"))
            overrides = [f"runner.model_save_path={out}", f"runner.infer_load_path={out}"]
            train(load_config(path, [*overrides, "runner.epochs=1"]))
            done[path] = overrides
        return done[path]

    return get


def by_name(report: ImportanceReport) -> dict[str, FeatureImportance]:
    return {item.name: item for item in report.features}


# ---------------------------------------------------------------------- end to end, per data format
def test_tabular_planted_signal_ranks_above_noise_and_baseline_is_infers(trained):
    overrides = trained(TABULAR)
    config = load_config(TABULAR, overrides)
    report = permutation_importance(config, features=["weekday", "item_ctr", "category"], repeats=3)
    items = by_name(report)
    assert [item.name for item in report.features][-1] == "weekday"
    for signal in ("item_ctr", "category"):
        assert items[signal].mean("auc") > items["weekday"].mean("auc") + 0.005, report.features
    assert items["item_ctr"].columns == (("all.values", 1),)  # the feature's own column of its group
    assert all(len(item.drops["auc"]) == 3 for item in report.features)
    # the baseline is what tools/infer.py reports for the same checkpoint: the same evaluation path
    assert report.checkpoint.name == "0"
    assert report.baseline["auc"] == pytest.approx(infer(load_config(TABULAR, overrides))[0]["auc"], abs=1e-9)
    assert report.samples == 4000


def test_slot_format_units_are_the_slots_and_informative_slots_rank_first(trained):
    overrides = trained(SLOT)
    config = load_config(SLOT, overrides)
    names = [f.name for f in list_features(config)]
    assert names == [str(i) for i in range(1, 27)] + [f"dense_feature[{j}]" for j in range(13)]
    assert [f.name for f in list_features(config, "group")] == [str(i) for i in range(1, 27)] + ["dense_feature"]
    report = permutation_importance(config, features=["4", "6", "13", "14"], repeats=2)
    items = by_name(report)
    assert items["6"].columns == (("sparse", 5),)
    assert min(items["6"].mean("auc"), items["14"].mean("auc")) > max(items["4"].mean("auc"), items["13"].mean("auc"))
    grouped = permutation_importance(config, features=["dense_feature"], group_by="group", repeats=1)
    assert grouped.features[0].columns == tuple(("dense", j) for j in range(13))


def test_din_shuffles_the_history_as_one_feature_and_reports_auc_and_gauc(trained):
    overrides = trained(DIN)
    report = permutation_importance(load_config(DIN, overrides), repeats=2, metric="gauc")
    items = by_name(report)
    assert set(items) == {"history", "target_item", "target_cat"}  # never the label or GAUC's user column
    assert items["history"].columns == (("hist_item", None), ("hist_cat", None), ("hist_len", None))
    assert report.metrics == ["auc", "gauc"] and report.sort_metric == "gauc"
    assert items["history"].mean("auc") > 0.05  # the planted signal is the history's share of the candidate's cat
    grouped = permutation_importance(load_config(DIN, overrides), group_by="group", repeats=1)
    assert {item.name for item in grouped.features} == {"history", "target"}


def test_mmoe_reports_the_drop_of_each_tasks_metric(trained):
    overrides = trained(MMOE)
    report = permutation_importance(load_config(MMOE, overrides), features=["features[0]", "features[1]"],
                                    repeats=2, metric="auc_marital")
    assert report.metrics == ["auc_income", "auc_marital"] and report.sort_metric == "auc_marital"
    items = by_name(report)
    for task in ("auc_income", "auc_marital"):
        assert items["features[0]"].mean(task) > items["features[1]"].mean(task) + 0.02, (task, report.features)


def test_cli_writes_csv_markdown_and_png_and_prints_the_table(trained, tmp_path, capsys):
    overrides = trained(TABULAR)
    spec = importlib.util.spec_from_file_location("feature_importance_tool", REPO / "tools/feature_importance.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "report"
    status = tool.main(["-m", str(TABULAR), "-o", *overrides, "--features", "price", "weekday", "--repeats", "2",
                        "--output", str(out), "--seed", "7"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "| rank | feature" in printed and "price" in printed and "seed 7" in printed
    csv_lines = (out / "feature_importance.csv").read_text().splitlines()
    assert csv_lines[0] == "rank,feature,columns,auc_baseline,auc_drop_mean,auc_drop_std,auc_drops"
    assert len(csv_lines) == 3 and all(len(line.split(",")[-1].split(";")) == 2 for line in csv_lines[1:])
    assert (out / "feature_importance.md").read_text().startswith("# Permutation importance (features)")
    assert (out / "feature_importance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
    # an unknown name: exit status 2, one line naming the valid features
    status = tool.main(["-m", str(TABULAR), "-o", *overrides, "--features", "itemctr", "--output", str(out)])
    assert status == 2


# ---------------------------------------------------------------------- errors
class _Reader(BlockReader):
    def __init__(self, columns, blocks=()):
        super().__init__([], from_dict({}))
        self.columns = columns
        self.blocks = list(blocks)

    def iter_blocks(self, files=None, cache_dir=None, pool=None):
        yield from self.blocks


def test_unknown_feature_is_an_error_listing_the_valid_ones():
    reader = _Reader({"label": (np.float32, 1), "ids": (np.int64, 3), "price": (np.float32, 1)})
    with pytest.raises(ConfigError) as err:
        select_features(reader, ["ids", "price"], list(reader.columns), names=["prise"])
    message = str(err.value)
    assert "--features: unknown feature 'prise'" in message and "did you mean 'price'?" in message
    assert "ids[0]..ids[2], price" in message
    with pytest.raises(ConfigError, match="unknown groups 'a', 'b'; valid with --group_by group \\(2\\): ids, price"):
        select_features(reader, ["ids", "price"], list(reader.columns), "group", names=["a", "b"])
    with pytest.raises(ConfigError, match="gives no feature the model reads"):
        select_features(reader, ["other"], list(reader.columns))


def test_bad_arguments_and_missing_checkpoints_are_errors(tmp_path):
    config = load_config(TABULAR, [f"runner.infer_load_path={tmp_path}"])
    with pytest.raises(FileNotFoundError, match="no checkpoint of epochs 0..2 in .*train first"):
        choose_checkpoint(config, None)
    for epoch in (0, 1):
        (tmp_path / str(epoch)).mkdir()
        (tmp_path / str(epoch) / "model.pt").write_bytes(b"")
    assert choose_checkpoint(config, None) == tmp_path / "1"  # the last one tools/infer.py evaluates
    short = load_config(TABULAR, [f"runner.infer_load_path={tmp_path}", "runner.infer_end_epoch=1"])
    assert choose_checkpoint(short, None) == tmp_path / "0"
    with pytest.raises(ConfigError, match="--repeats: must be at least 1"):
        permutation_importance(config, repeats=0)
    with pytest.raises(ConfigError, match="--group_by: expected one of feature, group"):
        permutation_importance(config, group_by="slot")
    with pytest.raises(ConfigError, match="--seed: must be a non-negative integer"):
        permutation_importance(config, seed=-1)


def test_grouped_input_is_refused():
    reader = _Reader({"label": (np.float32, 1)},
                     [{"label": np.zeros((2, 1), np.float32), "sample_num": GroupIndex(np.array([1, 2]))}])
    with pytest.raises(ConfigError, match="grouped rows .*sample_num"):
        read_test_block(reader)


# ---------------------------------------------------------------------- the pieces
def test_shuffle_moves_only_the_features_columns_and_keeps_ragged_rows_whole():
    hist = RaggedArray.from_rows([[1], [2, 2], [3, 3, 3], []])
    block = {"ids": np.arange(12).reshape(4, 3), "hist": hist, "len": hist.lengths.reshape(-1, 1),
             "label": np.arange(4, dtype=np.float32).reshape(-1, 1)}
    perm = np.array([2, 0, 3, 1])
    out = shuffle_columns(block, [("ids", 1)], perm)
    np.testing.assert_array_equal(out["ids"][:, 1], block["ids"][perm, 1])
    np.testing.assert_array_equal(out["ids"][:, [0, 2]], block["ids"][:, [0, 2]])
    assert out["label"] is block["label"] and out["hist"] is block["hist"]
    assert block["ids"][0, 1] == 1  # the input block is not changed
    out = shuffle_columns(block, [("hist", None), ("len", None)], perm)
    assert out["hist"].to_padded().tolist() == [[3, 3, 3], [1, 0, 0], [0, 0, 0], [2, 2, 0]]
    np.testing.assert_array_equal(out["len"][:, 0], out["hist"].lengths)


def test_read_test_block_joins_blocks_and_cuts_at_max_samples():
    blocks = [{"x": np.arange(3).reshape(-1, 1), "h": RaggedArray.from_rows([[1], [2], [3, 4]])},
              {"x": np.arange(3, 5).reshape(-1, 1), "h": RaggedArray.from_rows([[5], []])}]
    reader = _Reader({"x": (np.int64, 1), "h": (np.int64, 0)}, blocks)
    whole = read_test_block(reader)
    assert whole["x"][:, 0].tolist() == [0, 1, 2, 3, 4] and whole["h"].lengths.tolist() == [1, 1, 2, 1, 0]
    cut = read_test_block(reader, max_samples=4)
    assert cut["x"][:, 0].tolist() == [0, 1, 2, 3] and len(cut["h"]) == 4


def test_default_units_and_column_descriptions():
    reader = _Reader({"label": (np.float32, 1), "dense": (np.float32, 2), "hist": (np.int64, 0)})
    assert reader.feature_units() == [FeatureUnit("label", "label", (("label", None),)),
                                      FeatureUnit("dense[0]", "dense", (("dense", 0),)),
                                      FeatureUnit("dense[1]", "dense", (("dense", 1),)),
                                      FeatureUnit("hist", "hist", (("hist", None),))]
    assert describe_columns([("f", 0), ("f", 1), ("f", 2), ("f", 5), ("h", None)]) == "f[0..2], f[5], h"


def test_tabular_units_name_the_features_and_keep_a_tags_keys_together():
    config = load_config(REPO / "models/multitask/mmoe/config_taobao.yaml")
    from recstack.easyrec.tabular import TabularReader

    units = {u.name: u for u in TabularReader([], config).feature_units()}
    assert units["tag_category_list"].columns == (("all.tag_category_list.ids", None),
                                                  ("all.tag_category_list.lengths", None))
    assert units["cate_id"].group == "all" and units["cate_id"].columns[0][0] == "all.ids"


def test_aliccp_and_lr_units_keep_a_fields_columns_together():
    from recstack.data.aliccp import FIELDS, AliCCPReader
    from recstack.data.slot import FeatIdxValueReader

    aliccp = AliCCPReader([], from_dict({"hyper_parameters": {"max_len": 3}})).feature_units()
    assert [u.name for u in aliccp] == list(FIELDS)
    assert aliccp[1] == FeatureUnit("109_14", "109_14", (("sparse", 3), ("sparse", 4), ("sparse", 5)))
    lr = FeatIdxValueReader([], from_dict({"hyper_parameters": {"num_field": 2}})).feature_units()
    assert lr[1] == FeatureUnit("field[1]", "field[1]", (("feat_idx", 1), ("feat_value", 1)))


def test_lower_is_better_metrics_rank_by_the_most_negative_drop(tmp_path, caplog):
    assert AUC.higher_is_better and not LogLoss.higher_is_better and not MSE.higher_is_better
    a = FeatureImportance("a", (("x", 0),), {"mse": [-0.02, -0.04], "auc": [0.01, 0.01]})
    b = FeatureImportance("b", (("x", 1),), {"mse": [0.001, 0.0], "auc": [0.0, 0.0]})
    report = ImportanceReport(None, tmp_path / "3", "test", 10, 2, 0, "feature", ["auc", "mse"],
                              {"auc": True, "mse": False}, {"auc": 0.7, "mse": 0.2}, [a, b], "mse")
    assert report.importance(a) == pytest.approx(0.03) and report.importance(b) < 0
    assert a.std("mse") == pytest.approx(np.std([-0.02, -0.04], ddof=1))
    with caplog.at_level(logging.INFO):
        paths = write_report(report, tmp_path / "out", top=1)
    assert "mse drop (lower is better)" in paths["markdown"].read_text()
    assert paths["png"].stat().st_size > 0
