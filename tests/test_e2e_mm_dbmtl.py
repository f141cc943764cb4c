"""End-to-end multimodal DBMTL (models/multitask/e2e_mm_dbmtl): the spec's acceptance tests 2-7
(../shared/specs/e2e_mm_dbmtl.md section 11) on constructed grouped batches, and the three exports."""

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from recstack.config import ConfigError, from_dict
from recstack.easyrec.dbmtl import DBMTL
from recstack.easyrec.features import TabularSpec
from recstack.easyrec.tasks import task_losses
from recstack.export import TensorSpec, write_export
from recstack.inference import format_embeddings, parse_embeddings
from recstack.wrapper import load_wrapper

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "models/multitask/e2e_mm_dbmtl"
SIZE = 32  # small images keep the CNN cheap


def base_config() -> dict:
    data = yaml.safe_load((FOLDER / "config.yaml").read_text())
    for feature in data["hyper_parameters"]["feature_config"]["features"]:
        if feature["feature_type"] == "ImgFeature":
            feature["img_shape"] = {"width": SIZE, "height": SIZE, "channel": 3}
    data["hyper_parameters"]["export_config"]["img_shape"] = {"width": SIZE, "height": SIZE, "channel": 3}
    return data


def build(data: dict | None = None, seed: int = 0):
    """(wrapper, net, config) of a config dict (default: config.yaml with small images)."""
    config = from_dict(copy.deepcopy(data or base_config()), FOLDER)
    wrapper = load_wrapper(config)
    torch.manual_seed(seed)
    return wrapper, wrapper.create_model(config), config


def e2e(data: dict) -> dict:
    return data["hyper_parameters"]["model_config"]["e2e_mm_dbmtl"]


def make_batch(config, sizes, seed: int = 0) -> dict:
    """A grouped batch as the GroupRTPInput reader gives it (the agreed contract)."""
    spec = TabularSpec.from_config(config)
    g = torch.Generator().manual_seed(seed)
    sizes = torch.tensor(sizes)
    n, total = len(sizes), int(sizes.sum())
    ids = [torch.randint(0, f.num_embeddings, (total, 1), generator=g) for f in spec.id_features("all")]
    batch = {
        "img": torch.rand(n, SIZE, SIZE, 3, generator=g) * 255,
        "sample_num": torch.repeat_interleave(torch.arange(n), sizes),
        "group_size": sizes,
        "is_valid_play": torch.randint(0, 2, (total, 1), generator=g).float(),
        "play_time": torch.rand(total, 1, generator=g) * 3,
        "all.ids": torch.cat(ids, dim=1),
        "all.values": torch.rand(total, len(spec.value_features("all")), generator=g),
    }
    return batch


def calibrate(wrapper, net, config, batch) -> None:
    """Set every BatchNorm's running statistics to this batch's (as after training: an untrained net in eval
    mode would scale the 0-255 pixels up to outputs in the hundreds), then switch to eval mode."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch gives its exact statistics
    net.train()
    with torch.no_grad():
        net(*wrapper.create_feeds(batch, config)[0])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    net.eval()


def ungroup(batch: dict) -> dict:
    """The same samples, one per group, each with its own copy of its image."""
    out = dict(batch)
    out["img"] = batch["img"].index_select(0, batch["sample_num"])
    out["sample_num"] = torch.arange(len(batch["sample_num"]))
    out["group_size"] = torch.ones(len(batch["sample_num"]), dtype=torch.int64)
    return out


# ---------------------------------------------------------------------- 2. broadcast gradient
def test_broadcast_gradient_sums_over_each_images_samples():
    wrapper, net, config = build()
    batch = make_batch(config, [3, 1, 2])
    features = [batch[n] for n in wrapper.feature_names]
    emb = torch.randn(3, net.embedding_dim, requires_grad=True)
    net.eval()
    weights = torch.randn(6, 1)

    def objective(per_sample):
        preds = net.rec.head(features, per_sample)
        return sum((p * weights).sum() for p in preds)

    objective(emb.index_select(0, batch["sample_num"])).backward()
    per_sample = emb.detach().index_select(0, batch["sample_num"]).requires_grad_(True)
    objective(per_sample).backward()
    expected = torch.zeros_like(emb).index_add_(0, batch["sample_num"], per_sample.grad)
    torch.testing.assert_close(emb.grad, expected)
    torch.testing.assert_close(emb.grad[0], per_sample.grad[:3].sum(0))
    torch.testing.assert_close(emb.grad[1], per_sample.grad[3])


# ---------------------------------------------------------------------- 3. grouped == ungrouped
def test_grouped_and_ungrouped_batches_give_the_same_predictions_and_loss_in_eval_mode():
    wrapper, net, config = build()
    batch = make_batch(config, [3, 1, 2, 4])
    calibrate(wrapper, net, config, make_batch(config, [4, 4, 4], seed=5))
    flat = ungroup(batch)
    with torch.no_grad():
        grouped = net(*wrapper.create_feeds(batch, config)[0])
        ungrouped = net(*wrapper.create_feeds(flat, config)[0])
        loss_g = wrapper.create_loss(grouped, wrapper.create_feeds(batch, config)[1])
        loss_u = wrapper.create_loss(ungrouped, wrapper.create_feeds(flat, config)[1])
    for a, b in zip(grouped, ungrouped):
        assert a.shape == (10, 1)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(loss_g, loss_u, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------- 4. relation towers
def test_a_tower_naming_a_later_tower_is_rejected():
    data = base_config()
    towers = e2e(data)["task_towers"]
    towers[0]["relation_tower_names"] = ["play_time"]
    del towers[1]["relation_tower_names"]
    with pytest.raises(ConfigError, match="names the later tower 'play_time'"):
        build(data)


def test_relation_tower_widths():
    data = base_config()
    for tower in e2e(data)["task_towers"]:
        del tower["relation_dnn"]  # unset: the output layer reads [tower dnn, related relation outputs]
    _, net, _ = build(data)
    towers = net.rec.towers
    assert net.embedding_dim == 16 and towers.dnns[0][0].in_features == 16 + 32  # [img_emb, bottom]
    assert [o.in_features for o in towers.outputs] == [16, 16 + 16]
    # the ctr -> cvr example: cvr reads [its dnn (32) || ctr's relation output (32)] -> relation_dnn [32] -> 1
    data = base_config()
    for tower in e2e(data)["task_towers"]:
        tower["dnn"]["hidden_units"] = [64, 32]
        tower["relation_dnn"]["hidden_units"] = [32]
    _, net, _ = build(data)
    towers = net.rec.towers
    assert towers.relation_dnns[1][0].in_features == 64 and towers.relation_widths == [32, 32]
    assert [o.in_features for o in towers.outputs] == [32, 32]


# ---------------------------------------------------------------------- 5. losses and metrics
def test_loss_is_weight_times_mean_and_metrics_are_named_per_tower():
    """Sample weights are not supported (data_config.sample_weight is an error), so the weight of every
    sample is the tower's: sum(w l) / #nonzero(w) = w * mean(l); a zero tower weight gives zero."""
    data = base_config()
    e2e(data)["task_towers"][0]["weight"] = 2.5
    e2e(data)["task_towers"][1]["weight"] = 0.0
    wrapper, net, config = build(data)
    batch = make_batch(config, [2, 3, 1])
    calibrate(wrapper, net, config, batch)
    with torch.no_grad():
        preds = net(*wrapper.create_feeds(batch, config)[0])
    losses = task_losses(preds, [batch["is_valid_play"], batch["play_time"]], wrapper.towers)
    p, y = preds[0].double(), batch["is_valid_play"].double()
    per_sample = -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
    w = torch.full_like(per_sample, 2.5)
    assert float(losses["cross_entropy_loss_is_valid_play"]) == pytest.approx(
        float((w * per_sample).sum() / (w != 0).sum()), rel=1e-5)
    assert float(losses["l2_loss_play_time"]) == 0.0
    _, names = wrapper.create_metrics()
    assert names == ["auc_is_valid_play", "mse_play_time"]
    # both task types train together: one step lowers the loss of a fixed batch
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    first = None
    for _ in range(3):
        loss, _, logs = wrapper.train_forward(net, wrapper.create_metrics()[0], batch, config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = first if first is not None else float(loss.detach())
    assert float(loss.detach()) < first and set(logs) == {"cross_entropy_loss_is_valid_play", "l2_loss_play_time"}


def test_auxiliary_image_loss():
    data = base_config()
    hp = data["hyper_parameters"]
    hp["data_config"]["input_fields"].insert(2, {"input_name": "cate_label", "input_type": "INT32"})
    hp["data_config"]["label_fields"].append("cate_label")
    hp["data_config"]["selected_cols"] = "0,1,2,3,4,5"
    e2e(data)["img_model"]["img_loss_weight"] = 0.5
    wrapper, net, config = build(data)
    batch = make_batch(config, [2, 2])
    batch["cate_label"] = torch.tensor([[1.0], [3.0], [0.0], [15.0]])
    net.eval()
    loss, _, logs = wrapper.train_forward(net, wrapper.create_metrics()[0], batch, config)
    with torch.no_grad():
        logits = net.image(batch["img"])[0].index_select(0, batch["sample_num"])
    expected = 0.5 * torch.nn.functional.cross_entropy(logits, torch.tensor([1, 3, 0, 15]))
    torch.testing.assert_close(logs["img_loss"], expected)
    e2e(data)["img_model"]["img_loss_weight"] = 0.5
    hp["data_config"]["label_fields"].remove("cate_label")
    hp["data_config"]["selected_cols"] = "0,1,3,4,5"
    with pytest.raises(ConfigError, match="cate_label"):
        build(data)


def test_config_errors():
    data = base_config()
    e2e(data)["img_dnn"] = {"hidden_units": [8]}
    with pytest.raises(ConfigError, match="highway_dnn or img_dnn, not both"):
        build(data)
    data = base_config()
    e2e(data)["img_model"]["model_name"] = "VGG"
    with pytest.raises(ConfigError, match="unknown image model 'VGG'"):
        build(data)
    data = base_config()
    data["hyper_parameters"]["export_config"]["img_shape"]["width"] = 48
    with pytest.raises(ConfigError, match="differs from the ImgFeature"):
        build(data)


# ---------------------------------------------------------------------- 6. the export triple
@pytest.mark.parametrize("tune, dim", [({"highway_dnn": {"emb_size": 16}}, 16),
                                       ({"img_dnn": {"hidden_units": [12, 6]}}, 6), ({}, 16)])
def test_embedding_dim_rule(tune, dim):
    data = base_config()
    del e2e(data)["highway_dnn"]
    e2e(data).update(tune)
    wrapper, net, config = build(data)
    assert net.embedding_dim == dim
    (emb,) = wrapper.export_module(net.eval(), "img")(make_batch(config, [1, 2])["img"])
    assert emb.shape == (2, dim)


def test_export_parts_hold_the_right_parameters():
    wrapper, net, _ = build()
    ids = lambda m: {id(p) for p in m.parameters()}  # noqa: E731
    cnn, tune = ids(net.image.cnn), ids(net.image.tune)
    rec, img, total = (ids(wrapper.export_module(net, k)) for k in ("rec", "img", "total"))
    assert not rec & (cnn | tune) and rec == ids(net.rec)
    assert img == cnn | tune
    assert total == ids(net)


def test_export_triple_parity(tmp_path):
    """On real batches of the sample data (64x64 images; random-noise pixels are a harsher case for float32
    round-off than images): the three parts agree with each other and with the training graph, and each
    export (TorchScript, ONNX Runtime) with eager, within 1e-5 (relative above 1)."""
    from recstack.data import create_loader

    data = yaml.safe_load((FOLDER / "config.yaml").read_text())
    data["runner"]["infer_batch_size"] = 3
    wrapper, net, config = build(data)
    batches = iter(create_loader(config, "infer"))
    batch, other, calibration = next(batches), next(batches), next(batches)
    calibrate(wrapper, net, config, calibration)
    diffs = wrapper.check_parts(net, batch, 1e-5)
    assert diffs["total_vs_grouped"] <= 1e-5 and diffs["total_vs_rec_of_img"] <= 1e-5
    assert diffs["rec_of_text_img_emb"] <= 1e-4
    for kind in ("img", "rec", "total"):
        module = wrapper.export_module(net, kind).eval()
        names, inputs = wrapper.export_feeds(net, batch, kind)
        checks = [("batch", inputs), ("second", wrapper.export_feeds(net, other, kind)[1])]
        specs = [TensorSpec(n, str(t.numpy().dtype), ["batch", *t.shape[1:]]) for n, t in zip(names, inputs)]
        with torch.no_grad():
            outputs = list(module(*inputs))
        result = write_export(module, inputs, checks, specs, wrapper.export_outputs(kind, outputs),
                              tmp_path / kind, "tostatic", {"model_name": "e2e_mm_dbmtl", "export_part": kind},
                              relative=wrapper.export_relative_tolerance)
        assert max(result.max_abs_diff.values()) <= 1e-5
        assert [o["name"] for o in result.spec["outputs"]] == (
            ["img_emb"] if kind == "img" else ["prob_is_valid_play", "value_play_time"])
        if kind == "rec":
            assert [i["name"] for i in result.spec["inputs"]] == ["all.ids", "all.values", "img_emb"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                loaded = torch.jit.load(str(result.torchscript))
            assert not any("cnn" in name for name, _ in loaded.named_parameters())


def test_embedding_text_form():
    emb = np.array([[0.1234567, -2.0], [3.5, 1e-7]], dtype=np.float32)
    texts = format_embeddings(emb)
    assert texts == ["0.123457,-2.000000", "3.500000,0.000000"]
    np.testing.assert_allclose(parse_embeddings(texts, 2), [[0.123457, -2.0], [3.5, 0.0]], rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="row 1: expected 2"):
        parse_embeddings(["1,2", "1"], 2)


# ---------------------------------------------------------------------- 7. no image group
def test_without_image_groups_the_model_is_dbmtl_plus_input_batch_norm():
    data = base_config()
    hp = data["hyper_parameters"]
    hp["model_config"]["feature_groups"] = hp["model_config"]["feature_groups"][:1]
    hp["feature_config"]["features"] = [f for f in hp["feature_config"]["features"]
                                        if f["feature_type"] not in ("ImgFeature", "SampleNumFeature")]
    for key in ("img_model", "highway_dnn"):
        del e2e(data)[key]
    del hp["export_config"]
    wrapper, net, config = build(data)
    assert net.image is None and wrapper.feed_names == ("all.ids", "all.values")
    assert build()[0].feed_names == ("all.ids", "all.values", "sample_num", "img")
    spec = TabularSpec.from_config(config)
    dbmtl = DBMTL(spec, _bottom_spec(data), wrapper.towers, use_feature_bn=False)
    # exactly the input BatchNorm (momentum 0.01, eps 1e-3) on top of DBMTL's parameters
    extra = set(net.rec.state_dict()) - set(dbmtl.state_dict())
    assert extra == {f"feature_bn.{k}"
                     for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    assert net.rec.feature_bn.momentum == 0.01 and net.rec.feature_bn.eps == 1e-3
    reference = DBMTL(spec, _bottom_spec(data), wrapper.towers, use_feature_bn=True, feature_bn_momentum=0.01,
                      feature_bn_eps=1e-3)
    reference.load_state_dict(net.rec.state_dict())
    batch = make_batch(config, [4, 3])
    for mode in ("train", "eval"):
        net.train(mode == "train")
        reference.train(mode == "train")
        for a, b in zip(net(batch["all.ids"], batch["all.values"]), reference(batch["all.ids"], batch["all.values"])):
            torch.testing.assert_close(a, b)
    torch.testing.assert_close(net.rec.feature_bn.running_mean, reference.feature_bn.running_mean)


def _bottom_spec(data):
    from recstack.easyrec.tasks import DNNSpec

    units = e2e(data)["bottom_dnn"]["hidden_units"]
    return DNNSpec(tuple(units), use_bn=e2e(data)["bottom_dnn"]["use_bn"])


# ---------------------------------------------------------------------- images carry signal
@pytest.mark.slow
def test_images_beat_blank_images_on_held_out_data(tmp_path):
    """The generator hides part of the signal (item quality) in the images only: one epoch with the images
    beats the same model with every image missing (zeros) on the test data (README: 0.641 against 0.529
    after one epoch, 0.790 against 0.595 after two). Two torch threads, as the README's figures: the image
    runs depend on the summation order."""
    from recstack.config import load_config
    from recstack.data import create_loader
    from recstack.evaluator import evaluate
    from recstack.trainer import train

    auc = {}
    for name, root in (("images", []), ("blank", [f"hyper_parameters.data_config.image_root={tmp_path / 'none'}"])):
        config = load_config(FOLDER / "config.yaml", ["runner.epochs=1", "runner.cpu_threads=2",
                                                      f"runner.model_save_path={tmp_path / name}", *root])
        result = train(config)
        auc[name] = evaluate(result.wrapper, result.model, create_loader(config, "infer"), config,
                             log=False)["auc_is_valid_play"]
    assert auc["images"] > auc["blank"] + 0.08, auc
