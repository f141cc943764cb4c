"""Sharded embedding tables on TorchRec (recstack/dist/sharding.py); skipped without the extra.

The two-process test starts ``python -m torch.distributed.run --nproc_per_node=2
tests/sharding_worker.py`` once for several sharding types and compares, on 2 CPU
processes: outputs and, after training steps (equal and unequal batches), all weights
gathered from the shards with those of one process trained on the combined batch from
the same initial weights (the sharded model's, gathered before training); that no rank
held the full table (built on the meta device, each rank initialising its shards); that
the initial table does not depend on the sharding type; warm starts from a plain
checkpoint; then exports the checkpoint rank 0 wrote with tools/to_static.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recstack.config import ConfigError, load_config
from recstack.dist.sharding import reads_slot_format, shard_model, slot_id_table, to_embedding_bags, torchrec_available
from recstack.wrapper import load_wrapper, slot_format_args

pytestmark = pytest.mark.skipif(not torchrec_available(),
                                reason="TorchRec not installed (optional extra: tools/install_torchrec.sh)")

ROOT = Path(__file__).resolve().parents[1]
DEEPFM = ROOT / "models" / "rank" / "deepfm" / "config.yaml"
TOLERANCE = 1e-6
#: the model folders whose structure lets them shard (slot format, one plain id table): checked below
SHARDABLE_MODELS = ("deepfm", "dlrm", "dnn", "dcn", "dcn_v2", "wide_deep", "xdeepfm", "deepfefm", "ffm", "fm",
                    "gatenet", "autoint", "finalmlp")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharding")
    runs = ["table_wise:SGD", "column_wise:Adagrad:1000", "row_wise:SGD:1000", "data_parallel:Adagrad:1000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(ROOT / "tests" / "sharding_worker.py"), "--out", str(out),
           "--runs", *runs]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return out, {r["sharding"]: r for r in json.loads((out / "results.json").read_text())}


@pytest.mark.parametrize("sharding", ["table_wise", "column_wise", "row_wise", "data_parallel"])
def test_sharded_deepfm_equals_unsharded(two_process_run, sharding):
    _, results = two_process_run
    r = results[sharding]
    (planned, ranks), = r["plan"].values()
    assert planned == sharding
    if sharding != "table_wise":
        assert sorted(set(ranks)) == [0, 1]          # the table really is spread over both ranks
    assert r["forward_max_abs_diff"] <= TOLERANCE
    assert r["keys_equal"]                           # gathered state has the plain model's keys
    assert r["table_change"] > 1e-3                  # training moved the table ...
    assert r["weights_max_abs_diff"] <= TOLERANCE    # ... exactly as one process on the combined batch
    assert r["checkpoint_max_abs_diff"] <= TOLERANCE  # the checkpoint loads into the plain model
    assert r["warm_start_keys_equal"] and r["warm_start_max_abs_diff"] == 0  # model_init_path: exact


@pytest.mark.parametrize("sharding", ["table_wise", "column_wise", "row_wise", "data_parallel"])
def test_no_rank_builds_the_full_table(two_process_run, sharding):
    """The plain model's table stayed on the meta device; each rank holds its shards only."""
    _, results = two_process_run
    r = results[sharding]
    rows, dim = r["full_shape"]
    full = rows * ((dim + 3) // 4 * 4)                 # the padded TorchRec table
    (_, ranks), = r["plan"].values()
    for rank, held in enumerate(r["holdings"]):
        assert held["table_on_meta"]
        owned = sum(a * b for a, b in held["shards"])
        if sharding == "data_parallel":
            assert held["shards"] == [] and held["largest_plain_numel"] == full  # replicated by definition
        elif sharding == "table_wise":
            assert owned == (full if rank in ranks else 0)
            if rank not in ranks:
                assert held["largest_plain_numel"] < rows      # no table-sized tensor at all
        else:                                          # split: every rank holds about half
            assert 0 < owned < full and held["largest_plain_numel"] < full
            if sharding == "column_wise":              # blocks of columns of every row
                assert all(a == rows and b < dim for a, b in held["shards"])
            else:                                      # blocks of rows of every column
                assert sum(a for a, _ in held["shards"]) == rows // 2


def test_initial_table_independent_of_sharding(two_process_run):
    """Row-chunked seeded init: the first 1000 rows are the same whatever the sharding (and the
    table's row count: table_wise runs with the config's 1,000,001 rows, the others with 1000)."""
    out, _ = two_process_run
    rows = {s: torch.load(out / s / "init_rows.pt") for s in ("table_wise", "column_wise", "row_wise",
                                                             "data_parallel")}
    first = rows["table_wise"]
    assert first.shape == (1000, 10) and 0.01 < float(first.std()) < 0.05  # std 0.1/sqrt(10) truncated
    for sharding, table in rows.items():
        assert torch.equal(table, first), sharding


def test_sharded_checkpoint_exports(two_process_run, tmp_path):
    out, _ = two_process_run
    export_dir = tmp_path / "export"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "to_static.py"), "-m", str(DEEPFM), "-o",
         f"runner.model_init_path={out / 'table_wise' / '0'}", f"runner.model_save_path={export_dir}",
         "hyper_parameters.fc_sizes=[16,8]"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert (export_dir / "tostatic.pt").is_file() and (export_dir / "tostatic.onnx").is_file()


def test_shardable_models_follow_from_their_structure():
    """No list of names in recstack: the slot format and one plain id table decide, for every model folder."""
    found = []
    for path in sorted(ROOT.glob("models/*/*/config.yaml")):
        config = load_config(path)
        if not reads_slot_format(config):
            continue
        config = load_config(path, ["hyper_parameters.sparse_feature_number=50"])
        try:
            slot_id_table(load_wrapper(config).create_model(config), path.parent.name)
        except ConfigError:
            continue
        found.append(path.parent.name)
    assert sorted(found) == sorted(SHARDABLE_MODELS)
    two_tables = torch.nn.ModuleDict({"a": torch.nn.Embedding(3, 2), "b": torch.nn.Embedding(3, 2)})
    with pytest.raises(ConfigError, match=r"model 'twin' cannot be sharded.*2 nn.Embedding tables \['a', 'b'\]"):
        slot_id_table(two_tables, "twin")


@pytest.mark.parametrize("folder", SHARDABLE_MODELS)
def test_embedding_bags_equal_plain_table(folder):
    """The converted model (one TorchRec collection, unsharded) gives the plain model's outputs."""
    config = load_config(ROOT / "models" / "rank" / folder / "config.yaml",
                         ["hyper_parameters.sparse_feature_number=500"])
    torch.manual_seed(0)
    model = load_wrapper(config).create_model(config).eval()
    args = slot_format_args(config)
    sparse = torch.randint(0, 500, (6, args["num_sparse_fields"]))
    dense = torch.rand(6, args["dense_feature_dim"])
    with torch.no_grad():
        want = model(sparse, dense)
        converted, names = to_embedding_bags(model, args["num_sparse_fields"], folder)
        got = converted(sparse, dense)
    assert len(names) == 1
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def _config(path, *overrides):
    return load_config(path, ["runner.use_fleet=True", *overrides])


@pytest.mark.parametrize("overrides, message", [
    (["runner.embedding_sharding=diagonal"], "unknown sharding type 'diagonal'"),
    (["runner.embedding_sharding=table_wise", "hyper_parameters.optimizer.class=Adam"],
     "runs on CUDA only"),
    (["runner.embedding_sharding=table_wise", "hyper_parameters.optimizer.class=AdamW"],
     "supported: SGD, Adagrad, Adam"),
    (["runner.embedding_sharding=row_wise", "hyper_parameters.optimizer.class=SGD", "hyper_parameters.reg=0.001"],
     "hyper_parameters.reg"),
])
def test_bad_sharding_configs(overrides, message):
    config = _config(DEEPFM, *overrides)
    with pytest.raises(ConfigError, match=message):
        shard_model(torch.nn.Linear(1, 1), config, torch.device("cpu"), lambda m: None)


def test_unsupported_model_names_model_and_supported_ones():
    config = _config(ROOT / "models" / "multitask" / "mmoe" / "config.yaml", "runner.embedding_sharding=table_wise")
    with pytest.raises(ConfigError, match=r"model 'mmoe' cannot be sharded.*slot-format model"
                                          r".*does not describe the slot format"):
        shard_model(torch.nn.Linear(1, 1), config, torch.device("cpu"), lambda m: None)
