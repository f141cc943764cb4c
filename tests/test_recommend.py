"""The two-stage service (tools/serve.py --recall <export> --rank <export>): POST /recommend retrieves candidates
with the retrieval export and orders them with the ranking export, from the users' raw fields.

Checked against references that do not use the pipeline's code: the candidates are /recall's top-N for the same
users (whose encoded inputs come from the test file through tools/infer_benchmark.py's loader), and their order is
that of the ranking export's predictions on a data file of the (user, candidate) lines written here and read by
the ranking model's loader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recstack.backends import InferenceSettings
from recstack.config import load_config
from recstack.export import export_model
from recstack.export_spec import ExportedModel
from recstack.serving.model import ServedModel
from recstack.serving.pipeline import ItemTable, TwoStage
from recstack.serving.recall import RecallIndex
from recstack.trainer import train

REPO = Path(__file__).resolve().parents[1]
RECALL = REPO / "models/recall/dssm/config.yaml"
RANK = REPO / "models/rank/deepfm/config_movielens.yaml"
#: the retrieval test file's columns (datasets/movielens/preprocess.py) and the ranking file's
RECALL_FIELDS = ("user_id", "gender", "age", "occupation", "zip", "hist_item_id", "item_id", "seen_item_id")
RANK_FIELDS = ("label", "rating", "user_id", "gender", "age", "occupation", "zip", "hist_item_id", "item_id",
               "genres", "year")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A DSSM export and a DeepFM (MovieLens ratings) export, each trained one epoch on its sample."""
    root = tmp_path_factory.mktemp("two_stage")
    out = {}
    for name, path in (("recall", RECALL), ("rank", RANK)):
        ckpt = root / f"{name}_ckpt"
        train(load_config(path, [f"runner.model_save_path={ckpt}", "runner.epochs=1"]))
        export_model(load_config(path, [f"runner.model_init_path={ckpt / '0'}",
                                        f"runner.model_save_path={root / name}"]))
        out[name] = root / name
    return out


def _users(count: int) -> tuple[list[dict], list[list[str]]]:
    """Raw fields of the first test lines (the item columns left out) and the lines' fields."""
    lines = (RECALL.parent / "data/sample_data/test/part-0.txt").read_text().splitlines()[:count]
    users, fields = [], []
    for line in lines:
        values = dict(zip(RECALL_FIELDS, line.split(",")))
        fields.append(values)
        users.append({k: (v.split("|") if k == "hist_item_id" else v) for k, v in values.items()
                      if k not in ("item_id", "seen_item_id") and v})
    return users, fields


def _two_stage(exports, max_rank_rows: int = 100_000):
    recall_model = ServedModel(ExportedModel.locate(exports["recall"]), InferenceSettings(cpu_threads=1))
    rank = ServedModel(ExportedModel.locate(exports["rank"]), InferenceSettings(cpu_threads=1))
    index = RecallIndex(exports["recall"])
    pipeline = TwoStage(recall_model.config, rank.config, ItemTable(exports["recall"]), index.max_k,
                        max_rank_rows=max_rank_rows)
    return index, rank, pipeline


def test_recommend_orders_the_retrieved_candidates_by_the_rank_model(exports, tmp_path):
    import httpx

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_serving import offline, serving

    users, fields = _users(3)
    recall_model = ExportedModel.locate(exports["recall"])
    _, inputs = offline(recall_model, 600)
    rows = [{name: inputs[name][i].tolist() for name in inputs} for i in range(3)]
    index, rank, pipeline = _two_stage(exports)
    n = 40
    with serving(recall_model, load_recall=lambda: index, load_rank=lambda: (rank, pipeline)) as (url, _), \
            httpx.Client(base_url=url, timeout=60) as c:
        recalled = c.post("/recall", json={"rows": rows, "k": n}).json()
        body = c.post("/recommend", json={"users": users, "k": n, "candidates": n}).json()
        assert body["code"] == 200 and body["k"] == n and body["candidates"] == n, body
        assert set(body["took_ms"]) == {"recall", "rank"}
        # the ranking stage's reference: the (user, candidate) lines as a data file, through the loader
        items = {line.split(",")[0]: line.split(",")[1:]
                 for line in (RECALL.parent / "data/sample_data/items/part-0.txt").read_text().splitlines()}
        data = tmp_path / "rank_lines"
        data.mkdir()
        lines = []
        for values, candidates in zip(fields, recalled["items"]):
            for item in candidates:
                row = {**values, "label": "0", "rating": "0", "item_id": str(item),
                       "genres": items[str(item)][0], "year": items[str(item)][1]}
                lines.append(",".join(row[f] for f in RANK_FIELDS))
        (data / "part-0.txt").write_text("\n".join(lines) + "\n")
        predictions, _ = offline(ExportedModel.locate(exports["rank"]), 1000, data_dir=data)
        scores = np.asarray(predictions[0]).reshape(3, n)
        for i in range(3):
            assert sorted(body["items"][i]) == sorted(recalled["items"][i])  # the same candidates
            order = sorted(range(n), key=lambda j: (-scores[i, j], j))
            assert body["items"][i] == [recalled["items"][i][j] for j in order]
            assert body["scores"][i] == pytest.approx([float(scores[i, j]) for j in order], abs=1e-6)
            assert body["recall_scores"][i] == pytest.approx([recalled["scores"][i][j] for j in order], abs=1e-5)
        # k < candidates: the first k of that order; exclude: never returned
        top = c.post("/recommend", json={"users": users[:1], "k": 5, "candidates": n}).json()
        assert top["items"][0] == body["items"][0][:5]
        first = body["items"][0][0]
        excluded = c.post("/recommend", json={"users": users[:1], "k": 5, "candidates": n,
                                              "exclude": [[first]]}).json()
        assert first not in excluded["items"][0] and len(excluded["items"][0]) == 5
        # /predict answers with the ranking model on a two-stage server
        meta = c.get("/metadata").json()
        assert meta["model"] == "dssm" and meta["rank"]["model"] == "deepfm"
        assert meta["pipeline"]["item_fields"] == ["item_id", "genres", "year"]


def test_recommend_errors_name_the_user_and_field(exports):
    import httpx

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_serving import serving

    users, _ = _users(2)
    index, rank, pipeline = _two_stage(exports, max_rank_rows=10_000)
    recall_model = ExportedModel.locate(exports["recall"])
    with serving(recall_model, load_recall=lambda: index, load_rank=lambda: (rank, pipeline)) as (url, _), \
            httpx.Client(base_url=url, timeout=60) as c:
        cases = [
            ({"users": [users[0], {**users[1], "gendr": "F"}]}, 400, "users[1].gendr", "unknown field"),
            ({"users": [{**users[0], "age": "abc"}]}, 400, None, "users[0] (retrieval stage): field 'age'"),
            ({"users": [{**users[0], "zip": ["422", "423"]}]}, 400, "users[0].zip", "holds one value"),
            ({"users": [{**users[0], "zip": "42,2"}]}, 400, "users[0].zip", "separates"),
            ({"users": [{**users[0], "user_id": 9999}]}, 400, None, "users[0] (retrieval stage)"),
            ({"users": users, "candidates": 601}, 400, "candidates", "[1, 600]"),
            ({"users": users, "candidates": 10, "k": 11}, 400, "k", "[1, candidates = 10]"),
            ({"users": []}, 400, "users", "non-empty list"),
            ({"users": users, "extra": 1}, 400, "extra", "unknown key"),
            ({"users": users, "exclude": [[1]]}, 400, "exclude", "one list of item ids per row"),
        ]
        for body, status, field, text in cases:
            answer = c.post("/recommend", json=body)
            error = answer.json()["error"]
            assert answer.status_code == status and text in error["message"], (body, error)
            assert field is None or error.get("field") == field, (body, error)
        too_many = c.post("/recommend", json={"users": users * 10, "candidates": 600})  # 12,000 > 10,000 rows
        assert too_many.status_code == 413 and "--max_rank_rows" in too_many.json()["error"]["message"]


def test_a_server_without_two_stages_says_how_to_get_them(exports):
    import httpx

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_serving import serving

    index = RecallIndex(exports["recall"])
    with serving(ExportedModel.locate(exports["recall"]), load_recall=lambda: index) as (url, _), \
            httpx.Client(base_url=url, timeout=60) as c:
        answer = c.post("/recommend", json={"users": [{"user_id": 1}]})
        assert answer.status_code == 404 and "--recall" in answer.json()["error"]["message"]


def test_serve_cli_checks_the_pair_of_exports(exports):
    def run(*args):
        return subprocess.run([sys.executable, str(REPO / "tools/serve.py"), *args], capture_output=True, text=True,
                              timeout=120)

    both = run("--recall", str(exports["rank"]), "--rank", str(exports["rank"]))
    assert both.returncode == 2 and "need a retrieval export" in both.stdout + both.stderr
    swapped = run("--recall", str(exports["recall"]), "--rank", str(exports["recall"]))
    assert swapped.returncode == 2 and "is a retrieval export" in swapped.stdout + swapped.stderr
    output = run("--recall", str(exports["recall"]), "--rank", str(exports["rank"]), "--rank_output", "ctr")
    assert output.returncode == 2 and "['prob']" in output.stdout + output.stderr
    alone = run("--recall", str(exports["recall"]))
    assert alone.returncode == 2 and "--rank" in alone.stdout + alone.stderr
