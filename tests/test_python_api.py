"""The Python API (recstack/api, doc/python_api.md): the doc's code runs as written, and on the same data and
seed it gives the YAML path's AUC; predict matches evaluate; its checkpoints load where tools/infer.py loads
them; its export passes the exporter's parity checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

pd = pytest.importorskip("pandas")

from recstack.api import DNN, DenseFeature, SparseFeature, Trainer  # noqa: E402
from recstack.config import load_config  # noqa: E402
from recstack.evaluator import infer  # noqa: E402
from recstack.export import TOLERANCE  # noqa: E402
from recstack.metrics import AUC  # noqa: E402
from recstack.trainer import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "doc" / "python_api.md"


def doc_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def run_doc_block(index: int, folder: Path) -> dict:
    """Execute the doc's ``index``-th Python block as written, in ``folder`` (holding a link to models/)."""
    (folder / "models").symlink_to(ROOT / "models")
    namespace: dict = {"__name__": f"doc_block_{index}"}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        exec(compile(doc_blocks()[index], f"{DOC}:block{index}", "exec"), namespace)  # noqa: S102
    return namespace


def yaml_run(config: Path, out: Path) -> dict[str, float]:
    """tools/trainer.py then tools/infer.py on ``config``: the last epoch's metrics."""
    cfg = load_config(config, [f"runner.model_save_path={out}", f"runner.infer_load_path={out}"])
    train(cfg)
    results = infer(cfg)
    return results[max(results)]


@pytest.fixture(scope="module")
def deepfm(tmp_path_factory):
    return run_doc_block(0, tmp_path_factory.mktemp("deepfm_doc"))


@pytest.fixture(scope="module")
def din(tmp_path_factory):
    return run_doc_block(1, tmp_path_factory.mktemp("din_doc"))


def test_doc_has_the_two_examples():
    blocks = doc_blocks()
    assert len(blocks) == 2 and "DeepFM(" in blocks[0] and "DIN(" in blocks[1]
    assert all(len(b.strip().splitlines()) <= 25 for b in blocks)


def test_deepfm_auc_equals_yaml_path(deepfm, tmp_path):
    api = deepfm["trainer"].evaluate(deepfm["test_df"])
    yaml = yaml_run(ROOT / "models/rank/deepfm/config_tabular.yaml", tmp_path / "yaml")
    assert api["auc"] == pytest.approx(yaml["auc"], abs=1e-6), (api, yaml)
    assert api["auc"] > 0.7
    # the API's hyper_parameters are the YAML's (the YAML's data_config also lists the unused user_id / item_id)
    mine = deepfm["trainer"].config.section("hyper_parameters")
    theirs = load_config(ROOT / "models/rank/deepfm/config_tabular.yaml").section("hyper_parameters")
    assert mine["feature_config"] == theirs["feature_config"]
    assert mine["model_config"] == theirs["model_config"] and mine["fc_sizes"] == theirs["fc_sizes"]


def test_din_auc_equals_yaml_path(din, tmp_path):
    api = din["trainer"].evaluate(din["test_df"])
    yaml = yaml_run(ROOT / "models/rank/din/config.yaml", tmp_path / "yaml")
    assert api == pytest.approx(yaml, abs=1e-6), (api, yaml)
    assert api["auc"] > 0.65


def _auc(pred: np.ndarray, labels: np.ndarray) -> float:
    metric = AUC()
    metric.update(torch.from_numpy(pred).reshape(-1, 1), torch.from_numpy(labels.astype(np.float32)).reshape(-1, 1))
    return metric.compute()


@pytest.mark.parametrize("which", ["deepfm", "din"])
def test_predict_on_numpy_matches_evaluate(which, request):
    ns = request.getfixturevalue(which)
    trainer, test_df = ns["trainer"], ns["test_df"]
    arrays = {c: test_df[c].to_numpy() for c in test_df.columns if c != "click"}  # a dict of numpy arrays, no label
    pred = trainer.predict(arrays)
    assert pred.shape == (len(test_df),) and ((pred > 0) & (pred < 1)).all()
    np.testing.assert_allclose(pred, trainer.predict(test_df), rtol=0, atol=1e-6)
    assert _auc(pred, test_df["click"].to_numpy()) == pytest.approx(trainer.evaluate(test_df)["auc"], abs=1e-6)


def test_checkpoint_loads_in_the_infer_path(deepfm):
    trainer = deepfm["trainer"]
    auc = trainer.evaluate(deepfm["test_df"])["auc"]
    root = trainer.checkpoint.parent
    assert trainer.checkpoint.name == "2" and (trainer.checkpoint / "model.pt").is_file()
    # tools/infer.py -m models/rank/deepfm/config_tabular.yaml -o runner.infer_load_path=<the API's model_path>
    cfg = load_config(ROOT / "models/rank/deepfm/config_tabular.yaml", [f"runner.infer_load_path={root}"])
    assert infer(cfg)[2]["auc"] == pytest.approx(auc, abs=1e-6)
    # and a fresh Trainer loads it back
    fresh = Trainer(trainer.spec, label="click", eval_batch_size=1000).load(trainer.checkpoint)
    assert fresh.evaluate(deepfm["test_df"])["auc"] == pytest.approx(auc, abs=1e-6)


def _check_export(folder: Path, reader: str) -> dict:
    spec = json.loads((folder / "tostatic.json").read_text())
    assert (folder / "tostatic.pt").is_file() and (folder / "tostatic.onnx").is_file()
    assert spec["resolved_config"]["runner"]["infer_reader_path"] == reader  # a reader serving can run
    return spec


def test_export_passes_the_exporters_parity(din, deepfm, tmp_path):
    # the DIN doc example exported into its model_path (variable-length histories: dynamic axis 1)
    spec = _check_export(Path(din["trainer"].runner["model_save_path"]), "dinReader")
    assert spec["model_name"] == "din"
    result = deepfm["trainer"].export(tmp_path / "deepfm_export")
    assert result.max_abs_diff and max(result.max_abs_diff.values()) <= TOLERANCE
    _check_export(tmp_path / "deepfm_export", "tabular")
    # the rows written for the export's check parse (file reader) into the batch the in-memory reader makes of them
    from recstack.api.data import encode_tabular
    from recstack.easyrec.tabular import TabularReader

    trainer = deepfm["trainer"]
    sample = Path(trainer.runner["model_save_path"]) / "export_sample" / "part-0.txt"
    parsed = next(TabularReader([str(sample)], trainer.config).iter_blocks())
    encoded = encode_tabular(deepfm["test_df"].iloc[:2048], trainer.config)
    assert sorted(parsed) == sorted(encoded)
    for key in parsed:
        np.testing.assert_array_equal(parsed[key], encoded[key], err_msg=key)


def test_numpy_dict_training_and_other_models(tmp_path):
    """A dict of numpy arrays trains another rank model (DNN, a plain dense value) end to end."""
    rng = np.random.default_rng(0)
    n = 600
    data = {"city": rng.choice(np.array(["a", "b", "c"], dtype=object), n), "hour": rng.integers(0, 24, n),
            "ctr": rng.random(n).astype(np.float32)}
    data["click"] = (data["ctr"] + 0.3 * (data["city"] == "a") > 0.7).astype(np.int64)
    features = [SparseFeature("city", 10, 4, hashed=True), SparseFeature("hour", 24, 4), DenseFeature("ctr")]
    trainer = Trainer(DNN(features, mlp_params={"dims": [16]}), label="click", epochs=2, batch_size=64,
                      optimizer_params={"lr": 0.01}, model_path=tmp_path / "dnn")
    epochs = trainer.fit(data)
    assert [e.epoch for e in epochs] == [0, 1] and (tmp_path / "dnn" / "1" / "model.pt").is_file()
    assert trainer.evaluate(data)["auc"] > 0.7
    with pytest.raises(ValueError, match="outside"):
        trainer.predict({**data, "hour": np.full(n, 99)})


@pytest.mark.parametrize("name", ["xDeepFM", "DCN", "DCNv2", "WideDeep"])
def test_every_feature_config_rank_model_builds(name):
    """The other constructors build their folder's net from Python features (one forward on encoded rows)."""
    import recstack.api as api
    from recstack.api.data import encode_tabular

    ids = [SparseFeature("city", 10, 4, hashed=True), SparseFeature("hour", 24, 4)]
    fields = ids + [DenseFeature("ctr", 4 if name == "xDeepFM" else 0)]  # xDeepFM: every feature a field
    mlp = {"dims": [8]}
    spec = {"xDeepFM": lambda: api.xDeepFM(fields, [4], mlp), "DCN": lambda: api.DCN(fields, 2, mlp),
            "DCNv2": lambda: api.DCNv2(fields, 2, mlp, low_rank=4, num_experts=2),
            "WideDeep": lambda: api.WideDeep(ids[:1] + fields[2:], fields, mlp)}[name]()
    assert isinstance(spec.build(label="click"), torch.nn.Module)
    from recstack.wrapper import build_model

    config = api.make_config(spec, {}, label="click")
    wrapper, net = build_model(config, torch.device("cpu"))
    block = encode_tabular({"city": np.array(["a", "b"], dtype=object), "hour": np.array([1, 2]),
                            "ctr": np.array([0.1, 0.2]), "click": np.array([0, 1])}, config)
    inputs, _ = wrapper.create_feeds({k: torch.from_numpy(v) for k, v in block.items()}, config)
    assert net(*inputs).shape == (2, 1)


def test_encoded_tag_features_equal_the_file_readers(tmp_path):
    """Tag lists (the taobao sample's ``tag_category_list`` / ``tag_brand_list``) given to the Python API as the
    file's cells or as lists per row give the keys the file reader parses from the same lines."""
    import pyarrow.csv as pacsv

    from recstack.api.data import encode_tabular
    from recstack.easyrec.tabular import TabularReader

    path = ROOT / "models/multitask/mmoe/config_backbone.yaml"
    config = load_config(path)
    lines = (path.parent / "data/taobao_sample_data/test/part-0.txt").read_bytes().splitlines(keepends=True)[:300]
    sample = tmp_path / "part-0.txt"
    sample.write_bytes(b"".join(lines))
    parsed = next(TabularReader([str(sample)], config).iter_blocks())
    names = [f["input_name"] for f in config.get("hyper_parameters.data_config.input_fields")]
    table = pacsv.read_csv(sample, read_options=pacsv.ReadOptions(column_names=names),
                           convert_options=pacsv.ConvertOptions(column_types={n: "string" for n in names}))
    columns = {n: table[n].to_numpy(zero_copy_only=False) for n in names}
    as_lists = dict(columns, tag_brand_list=[None if c is None else c.split("|") for c in columns["tag_brand_list"]])
    for data in (columns, as_lists):
        encoded = encode_tabular(data, config)
        assert sorted(parsed) == sorted(encoded) and "all.tag_brand_list.ids" in encoded
        for key in parsed:
            got, want = encoded[key], parsed[key]
            if hasattr(want, "to_padded"):
                got, want = got.to_padded(), want.to_padded()
            np.testing.assert_array_equal(got, want, err_msg=key)
    with pytest.raises(ValueError, match="column 'tag_brand_list'.*got int64"):
        encode_tabular(dict(columns, tag_brand_list=np.arange(300)), config)


def test_encode_tabular_defaults_and_errors():
    """The in-memory rows go through the file readers' conversion: missing values take the fields' defaults,
    prediction needs no label (zeros), and a bad value names its row and column."""
    import recstack.api as api
    from recstack.api.data import encode_tabular

    features = [SparseFeature("city", 10, 4, hashed=True), SparseFeature("hour", 24, 4), DenseFeature("ctr")]
    config = api.make_config(DNN(features, mlp_params={"dims": [16]}), {}, label="click")
    data = {"city": np.array(["a", None], dtype=object), "hour": np.array([1.0, np.nan]),
            "ctr": np.array([0.5, np.nan]), "click": np.array([0, 1])}
    block = encode_tabular(data, config)
    full = encode_tabular({**data, "city": np.array(["a", ""], dtype=object), "hour": np.array([1, 0]),
                           "ctr": np.array([0.5, 0.0])}, config)
    for key in full:
        np.testing.assert_array_equal(block[key], full[key], err_msg=key)
    assert block["all.ids"][:, 1].tolist() == [1, 0] and block["click"][:, 0].tolist() == [0.0, 1.0]
    unlabelled = encode_tabular({k: v for k, v in data.items() if k != "click"}, config, with_labels=False)
    assert unlabelled["click"].tolist() == [[0.0], [0.0]]
    with pytest.raises(ValueError, match="row 1: label 'click' must be 0 or 1, got 2"):
        encode_tabular({**data, "click": np.array([0, 2])}, config)
    with pytest.raises(ValueError, match=r"row 0: column 'hour' \(INT64\): 1.5 is not an integer"):
        encode_tabular({**data, "hour": np.array([1.5, 2.0])}, config)
    with pytest.raises(ValueError, match="row 1: field 'hour' .*id 30 outside"):
        encode_tabular({**data, "hour": np.array([1, 30])}, config)
