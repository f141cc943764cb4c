"""Taobao display-ad data: the synthetic ``taobao`` world (datasets/synthetic/generate.py) and the join of
Alimama's files (datasets/taobao/preprocess.py), on hand-computed rows and on generated files of the real layout.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import MultiLabelBinarizer, OneHotEncoder

from recstack.data.base import DataFormatError
from recstack.modules import load_module

REPO = Path(__file__).resolve().parents[1]
gen = load_module(REPO / "datasets" / "synthetic", "generate")
prep = load_module(REPO / "datasets" / "taobao", "preprocess")

T0 = 1494000000  # 2017-05-06 00:00 Beijing time, the first day of raw_sample.csv
DAY = 86400
RAW_HEADER = "user,time_stamp,adgroup_id,pid,nonclk,clk"
AD_HEADER = "adgroup_id,cate_id,campaign_id,customer,brand,price"
USER_HEADER = ("userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,occupation,"
               "new_user_class_level ")  # the real file's header ends with a space
BEHAVIOR_HEADER = "user,time_stamp,btag,cate,brand"


# ----------------------------------------------------------------------------- the synthetic world
def world_text(tmp_path: Path, rows: int, seed: int) -> tuple[str, np.ndarray]:
    name = f"taobao_{rows}_{seed}"
    path = gen.generate("taobao", rows, seed, tmp_path / f"{name}.txt", proba=tmp_path / f"{name}.proba")
    return path.read_text(), np.loadtxt(tmp_path / f"{name}.proba", delimiter=",", ndmin=2)


def test_world_is_deterministic_with_easyrec_columns(tmp_path: Path) -> None:
    text, _ = world_text(tmp_path, 3000, 1)
    assert gen.generate("taobao", 3000, 1, tmp_path / "again.txt").read_text() == text
    assert gen.generate("taobao", 3000, 2, tmp_path / "other.txt").read_text() != text
    assert gen.TAOBAO_COLUMNS == prep.OUTPUT_COLUMNS and len(gen.TAOBAO_COLUMNS) == 20
    rows = [line.split(",") for line in text.splitlines()]
    assert len(rows) == 3000 and {len(r) for r in rows} == {20}
    col = {name: [r[i] for r in rows] for i, name in enumerate(gen.TAOBAO_COLUMNS)}
    clk, buy = np.array(col["clk"], dtype=int), np.array(col["buy"], dtype=int)
    assert set(clk) == {0, 1} and set(buy) == {0, 1} and not (buy > clk).any()  # a buy only after a click
    assert set(col["pid"]) == {"430548_1007", "430539_1007"}
    for name in ("adgroup_id", "cate_id", "campaign_id", "customer", "user_id", "cms_segid", "cms_group_id",
                 "final_gender_code", "age_level", "shopping_level", "occupation"):
        assert all(v.isdigit() for v in col[name]), name  # STRING ids that are integers, never empty
    for name in ("brand", "pvalue_level", "new_user_class_level"):  # sometimes missing (empty)
        assert "" in col[name] and all(v == "" or v.isdigit() for v in col[name]), name
    price = np.array(col["price"], dtype=int)  # INT32 level below num_buckets 50
    assert price.min() >= 0 and price.max() < 50
    lengths = {name: [len(v.split("|")) if v else 0 for v in col[name]] for name in ("tag_category_list",
                                                                                      "tag_brand_list")}
    for name, counts in lengths.items():
        assert min(counts) == 0 and max(counts) >= 4, name  # variable length, some empty
        assert all(t.isdigit() for v in col[name] for t in v.split("|") if v), name
        assert all(len(set(v.split("|"))) == len(v.split("|")) for v in col[name]), name  # distinct tags
    # tags share the id space of cate_id / brand (a category tag is a category some ad has)
    world = gen.TaobaoWorld(0)
    assert {t for v in col["tag_category_list"] for t in v.split("|") if v} <= set(world.ids["category"].astype(str))
    assert {t for v in col["tag_brand_list"] for t in v.split("|") if v} <= set(world.ids["brand"].astype(str))
    # one user, one profile and one pair of tag lists
    users = {}
    for r in rows:
        assert users.setdefault(r[8], r[9:19]) == r[9:19]


def test_world_rates_bayes_auc_and_the_tags_share_of_the_signal(tmp_path: Path) -> None:
    text, proba = world_text(tmp_path, 20000, 5)
    labels = np.loadtxt(text.splitlines(), delimiter=",", usecols=(0, 1), dtype=int)
    clk, buy = labels[:, 0], labels[:, 1]
    assert 0.18 <= clk.mean() <= 0.22 and 0.055 <= buy.mean() <= 0.08  # measured 0.199, 0.065 (200,000 rows)
    assert 0.28 <= buy[clk == 1].mean() <= 0.38
    assert 0.77 <= roc_auc_score(clk, proba[:, 0]) <= 0.82  # measured 0.795
    assert 0.80 <= roc_auc_score(buy, proba[:, 0] * proba[:, 1]) <= 0.87  # p(buy) = pCTR * pCVR; 0.833
    # without the terms that read the tag lists, the best ranking is far worse
    world = gen.TaobaoWorld(0)
    features = world.sample(np.random.default_rng(5), 20000)
    p = gen.sigmoid(world.logits(features))
    blind = gen.sigmoid(world.logits(features, tags=False))
    y = np.random.default_rng(6).random(p.shape) < p
    y_buy = y[:, 0] & y[:, 1]
    assert roc_auc_score(y[:, 0], p[:, 0]) - roc_auc_score(y[:, 0], blind[:, 0]) > 0.08  # 0.795 vs 0.687
    assert roc_auc_score(y_buy, p[:, 0] * p[:, 1]) - roc_auc_score(y_buy, blind[:, 0] * blind[:, 1]) > 0.08
    category, brand = world.matches(features)
    assert 0.4 < category.mean() < 0.55 and 0.05 < brand.mean() < 0.12


def test_a_model_that_reads_the_tags_beats_one_that_does_not(tmp_path: Path) -> None:
    """Logistic regression on one-hot ids, then with the tag lists (multi-hot) and ad x tag crosses."""
    train, test = ([line.split(",") for line in world_text(tmp_path, rows, seed)[0].splitlines()]
                   for rows, seed in ((20000, 1), (4000, 2)))
    single = [i for i, name in enumerate(gen.TAOBAO_COLUMNS) if not name.startswith(("clk", "buy", "tag_"))]
    onehot = OneHotEncoder(handle_unknown="ignore").fit([[r[i] for i in single] for r in train])

    def tags(r: list[str]) -> list[str]:  # the tag tokens, and crosses of the ad's category / brand with them
        cats, brands = (r[17].split("|") if r[17] else []), (r[18].split("|") if r[18] else [])
        return ([f"c{t}" for t in cats] + [f"b{t}" for t in brands] + [f"{r[4]}x{t}" for t in cats]
                + [f"{r[7]}xb{t}" for t in brands])

    multihot = MultiLabelBinarizer(sparse_output=True).fit([tags(r) for r in train])

    def features(rows: list[list[str]], with_tags: bool) -> sparse.csr_matrix:
        x = onehot.transform([[r[i] for i in single] for r in rows])
        if with_tags:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # test tokens unseen in train
                x = sparse.hstack([x, multihot.transform([tags(r) for r in rows])])
        return x.tocsr()

    for task in range(2):
        y_train, y_test = (np.array([int(r[task]) for r in rows]) for rows in (train, test))
        auc = {}
        for with_tags in (False, True):
            model = LogisticRegression(C=0.1, solver="liblinear").fit(features(train, with_tags), y_train)
            auc[with_tags] = roc_auc_score(y_test, model.predict_proba(features(test, with_tags))[:, 1])
        # measured: clk 0.685 -> 0.756, buy 0.719 -> 0.804 (Bayes-optimal: 0.800, 0.859 on this test file)
        assert auc[False] > 0.65 and auc[True] - auc[False] > 0.04, (task, auc)


def test_bundled_sample_is_the_generators_output() -> None:
    folder = REPO / "models" / "multitask" / "mmoe" / "data" / "taobao_sample_data"
    assert "taobao multitask/mmoe:taobao_sample_data 20000 4000" in (
        REPO / "datasets" / "synthetic" / "make_samples.sh").read_text()
    for split, rows in (("train", 20000), ("test", 4000)):
        lines = (folder / split / "part-0.txt").read_text().splitlines()
        assert len(lines) == rows and all(line.count(",") == 19 for line in lines)


def test_price_levels_agree() -> None:
    price = np.array([0.0, 0.01, 1.0, 28.0, 1999.5, 1e8, -3.0])
    assert prep.price_level(price).tolist() == [0, 0, 2, 9, 21, 49, 0]  # min(49, floor(2 log2(1 + p)))
    assert gen.taobao_price_level(price).tolist() == prep.price_level(price).tolist()


# ----------------------------------------------------------------------------- the join, hand-computed
def write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "".join(row + "\n" for row in rows))
    return path


@pytest.fixture
def raw(tmp_path: Path) -> dict[str, Path]:
    """Small files of Alimama's layout; the expected rows are worked out in :data:`EXPECTED`."""
    folder = tmp_path / "raw"
    folder.mkdir()
    return {
        "raw_sample": write(folder / "raw_sample.csv", RAW_HEADER, [
            f"10,{T0 + 100},1,430548_1007,1,0",  # r1: no click, so no buy
            f"10,{T0 + 3600},2,430539_1007,0,1",  # r2: bought category 200 brand 7 two hours later -> buy
            f"30,{T0 + DAY},3,430548_1007,1,0",  # r3: user 30 has no profile
            f"20,{T0 + 2 * DAY},2,430548_1007,0,1",  # r4: bought category 200 of another brand -> no buy
            f"20,{T0 + 3 * DAY},1,430548_1007,0,1",  # r5: ad without brand, category bought 25 h later -> no
            f"20,{T0 + 7 * DAY + 50},1,430539_1007,0,1",  # r6 (test day): category 100 bought 10 s later -> buy
            f"10,{T0 + 7 * DAY + 10},4,430548_1007,1,0",  # r7 (test day): ad 4 has no features
            f"10,{T0 + 4 * DAY},2,430548_1007,0,1",  # r8: the purchase was 10 s before the click -> no buy
        ]),
        "ad_feature": write(folder / "ad_feature.csv", AD_HEADER, [
            "1,100,1000,500,NULL,28.0", "2,200,2000,600,7,1999.5", "3,100,3000,500,8,0.01"]),
        "user_profile": write(folder / "user_profile.csv", USER_HEADER, [
            "10,0,5,2,5,,3,0,2", "20,13,1,1,1,2,3,1,"]),
        "behavior_log": write(folder / "behavior_log.csv", BEHAVIOR_HEADER, [
            f"10,{T0 - 100},pv,100,7", f"10,{T0 - 200},pv,200,7", f"10,{T0 - 300},cart,200,9",
            f"10,{T0 - 400},fav,300,9",
            f"10,{T0 - 4 * DAY},pv,400,11",  # older than the 3 tag days
            f"10,{T0 + 500},pv,500,12",  # after the first impression day began: not a tag
            f"20,{T0 - 50},pv,300,NULL", f"20,{T0 - 60},buy,300,13",  # a buy before the cut: a tag, not a label
            f"10,{T0 + 3600 + 7200},buy,200,7", f"10,{T0 + 4 * DAY - 10},buy,200,7",
            f"20,{T0 + 2 * DAY + 100},buy,200,9", f"20,{T0 + 4 * DAY + 3600},buy,100,8",
            f"20,{T0 + 7 * DAY + 60},buy,100,5",
        ]),
    }


# user 10: categories 200 (2x), 100, 300 (ties by id); brands 7 (2x), 9 (2x). User 20: category 300 (2x), brand 13.
U10, U20, U30 = "10,0,5,2,5,,3,0,2,200|100|300,7|9", "20,13,1,1,1,2,3,1,,300,13", "30,,,,,,,,,,"
AD1, AD2, AD3, AD4 = "1,100,1000,500,", "2,200,2000,600,7", "3,100,3000,500,8", "4,,,,"
EXPECTED = {
    "train": [f"0,0,430548_1007,{AD1},{U10},9", f"1,1,430539_1007,{AD2},{U10},21", f"0,0,430548_1007,{AD3},{U30},0",
              f"1,0,430548_1007,{AD2},{U20},21", f"1,0,430548_1007,{AD1},{U20},9",
              f"1,0,430548_1007,{AD2},{U10},21"],
    "test": [f"1,1,430539_1007,{AD1},{U20},9", f"0,0,430548_1007,{AD4},{U10},"],
}


def lines(folder: Path) -> list[str]:
    return [line for part in sorted(folder.glob("part-*.txt")) for line in part.read_text().splitlines()]


def run(raw: dict[str, Path], output: Path, behaviour: bool = True, **options) -> dict:
    return prep.preprocess(raw["raw_sample"], raw["ad_feature"], raw["user_profile"], output,
                           raw["behavior_log"] if behaviour else None, prep.Options(**options))


def test_join_gives_the_hand_computed_rows(raw: dict[str, Path], tmp_path: Path) -> None:
    summary = run(raw, tmp_path / "out", shuffle=False)
    assert lines(tmp_path / "out" / "train") == EXPECTED["train"]
    assert lines(tmp_path / "out" / "test") == EXPECTED["test"]
    assert all(len(line.split(",")) == 20 for split in EXPECTED.values() for line in split)
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta == summary and meta["columns"] == list(gen.TAOBAO_COLUMNS)
    assert meta["rows"] == {"train": 6, "test": 2}
    assert meta["days"] == {"first": "2017-05-06", "last": "2017-05-13", "test_from": "2017-05-13"}
    assert meta["missing"] == {"user_profile": 1, "ad_feature": 1, "dropped_rows": 0}
    assert meta["rates"] == {"clk": 5 / 8, "buy": 2 / 8}
    assert meta["rows_with_tags"] == {"tag_category_list": 7, "tag_brand_list": 7}


def test_join_options(raw: dict[str, Path], tmp_path: Path) -> None:
    run(raw, tmp_path / "a", shuffle=False, max_tags=1, raw_price=True, test_days=4, buy_window_hours=26)
    train, test = lines(tmp_path / "a" / "train"), lines(tmp_path / "a" / "test")
    assert [line.split(",")[17:] for line in train] == [["200", "7", "28"], ["200", "7", "1999.5"],
                                                        ["", "", "0.01"], ["300", "13", "1999.5"], ["300", "13", "28"]]
    assert [line.split(",")[1] for line in train] == ["0", "1", "0", "0", "1"]  # r5: bought 25 h later, within 26 h
    assert len(test) == 3 and test[2].startswith("1,0,430548_1007,2,")  # test from 2017-05-10: r6, r7, r8
    # a user without profile or an ad without features: dropped on request
    summary = run(raw, tmp_path / "b", shuffle=False, drop_missing=True)
    assert lines(tmp_path / "b" / "train") == [row for row in EXPECTED["train"] if U30 not in row]
    assert lines(tmp_path / "b" / "test") == EXPECTED["test"][:1]
    assert summary["missing"] == {"user_profile": 1, "ad_feature": 1, "dropped_rows": 2}
    with pytest.raises(DataFormatError, match=r"span 8 day\(s\).*--test_days 8 leaves no train day"):
        run(raw, tmp_path / "c", test_days=8)


def test_without_behaviour_log_buy_is_zero_and_tags_are_empty(raw: dict[str, Path], tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        run(raw, tmp_path / "out", behaviour=False, shuffle=False)
    assert "buy is 0 on every row" in caplog.text

    def blind(row: str) -> str:
        fields = row.split(",")
        fields[1], fields[17], fields[18] = "0", "", ""
        return ",".join(fields)

    for split in ("train", "test"):
        assert lines(tmp_path / "out" / split) == [blind(row) for row in EXPECTED[split]]


def test_wrong_headers_and_values_are_named(raw: dict[str, Path], tmp_path: Path) -> None:
    raw["raw_sample"].write_text(raw["raw_sample"].read_text().replace("user,", "user_id,", 1))
    with pytest.raises(DataFormatError, match=r"raw_sample.csv:1: expected the header "
                                              r"'user,time_stamp,adgroup_id,pid,nonclk,clk'.*got 'user_id,"):
        run(raw, tmp_path / "out")
    raw["raw_sample"].write_text(raw["raw_sample"].read_text().replace("user_id,", "user,", 1))
    raw["behavior_log"].write_text("user,time_stamp,btag,cate\n")  # checked before the long passes
    with pytest.raises(DataFormatError, match=r"behavior_log.csv:1: expected the header"):
        run(raw, tmp_path / "out")
    raw["ad_feature"].write_text(AD_HEADER + "\n1,100,1000,500,NULL,28.0\n1,101,1000,500,3,2.0\n")
    with pytest.raises(DataFormatError, match=r"ad_feature.csv:3: adgroup_id 1 appears twice"):
        run(raw, tmp_path / "out", behaviour=False)
    raw["ad_feature"].write_text(AD_HEADER + "\n1,100,1000,500,NULL,cheap\n")
    with pytest.raises(DataFormatError, match=r"ad_feature.csv:2: price: expected a number, got 'cheap'"):
        run(raw, tmp_path / "out", behaviour=False)
    raw["ad_feature"].write_text(AD_HEADER + "\n1,100,1000,500,NULL,28.0\n")
    raw["user_profile"].write_text(USER_HEADER + "\n10,0,5,2,5,,3,0,2\n20,13,1,1\n")
    with pytest.raises(DataFormatError, match=r"user_profile.csv:3: expected 9 fields \(userid,.*got 4"):
        run(raw, tmp_path / "out", behaviour=False)
    raw["user_profile"].write_text(USER_HEADER + "\n10,0,5,2,5,,3,0,2\n")
    raw["raw_sample"].write_text(f"{RAW_HEADER}\n10,{T0},1,430548_1007,1,0\n10,{T0 + 7 * DAY},1,430548_1007,0,2\n")
    with pytest.raises(DataFormatError, match=r"raw_sample.csv:3: .*clk 0 or 1"):
        run(raw, tmp_path / "out", behaviour=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".tmp-*"))  # nothing half-written


def test_command_line(raw: dict[str, Path], tmp_path: Path) -> None:
    script = REPO / "datasets" / "taobao" / "preprocess.py"
    flags = [f"--{name}={path}" for name, path in raw.items()]
    done = subprocess.run([sys.executable, str(script), *flags, f"--output={tmp_path / 'out'}", "--no_shuffle"],
                          capture_output=True, text=True, check=True)
    assert "wrote 6 train and 2 test lines" in done.stderr and "peak RSS" in done.stderr
    assert lines(tmp_path / "out" / "train") == EXPECTED["train"]
    bad = subprocess.run([sys.executable, str(script), *flags[1:], f"--raw_sample={raw['ad_feature']}",
                          f"--output={tmp_path / 'bad'}"], capture_output=True, text=True)
    assert bad.returncode == 2 and "error: " in bad.stderr and "expected the header" in bad.stderr


# ----------------------------------------------------------------------------- generated files, reference join
def write_columns(path: Path, header: str, columns: list[np.ndarray]) -> None:
    """A CSV file from columns (numbers or strings; ``None`` entries in object columns are empty)."""
    text = [pc.cast(pa.array(c), pa.string()) if not isinstance(c, pa.Array) else c for c in columns]
    rows = pc.binary_join_element_wise(*text, ",", null_handling="replace", null_replacement="")
    with open(path, "w") as f:
        f.write(header + "\n")
        f.write("\n".join(rows.to_pylist()) + "\n")


def write_alimama_files(folder: Path, impressions: int, seed: int, users: int = 100, ads: int = 300,
                        behaviours_per_impression: int = 3) -> dict[str, Path]:
    """Random files of Alimama's layout: raw_sample.csv ordered by ad (as the real one), 8 days from
    2017-05-06; ad_feature.csv with 10% NULL brands; user_profile.csv without 5% of the users and with
    empty pvalue_level / new_user_class_level; behavior_log.csv over the 14 days before and the 8 days."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ad_ids = np.arange(1, ads + 1)
    brand = rng.integers(1, 7, ads).astype(object)
    brand[rng.random(ads) < 0.1] = "NULL"
    write_columns(folder / "ad_feature.csv", AD_HEADER, [
        ad_ids, rng.integers(1, 9, ads), rng.integers(1, 200, ads), rng.integers(1, 100, ads),
        pa.array([str(b) for b in brand]), np.round(np.exp(rng.normal(4, 1.5, ads)), 2)])
    kept = np.flatnonzero(rng.random(users) > 0.05) + 1
    n = len(kept)

    def maybe_empty(values: np.ndarray, rate: float) -> pa.Array:
        return pa.array(values.astype(str).tolist(), mask=rng.random(len(values)) < rate)

    write_columns(folder / "user_profile.csv", USER_HEADER, [
        kept, rng.integers(0, 97, n), rng.integers(0, 13, n), rng.integers(1, 3, n), rng.integers(0, 7, n),
        maybe_empty(rng.integers(1, 4, n), 0.3), rng.integers(1, 4, n), rng.integers(0, 2, n),
        maybe_empty(rng.integers(1, 5, n), 0.25)])
    ad = np.sort(rng.integers(1, ads + 2, impressions))  # ad ads + 1 has no features
    clk = (rng.random(impressions) < 0.3).astype(np.int64)
    write_columns(folder / "raw_sample.csv", RAW_HEADER, [
        rng.integers(1, users + 1, impressions), T0 + rng.integers(0, 8 * DAY, impressions), ad,
        pa.array(np.where(rng.random(impressions) < 0.7, "430548_1007", "430539_1007").tolist()), 1 - clk, clk])
    m = behaviours_per_impression * impressions
    btag = np.array(["pv", "cart", "fav", "buy"])[np.searchsorted([0.6, 0.7, 0.8], rng.random(m))]
    brand = rng.integers(1, 7, m).astype(object)
    brand[rng.random(m) < 0.05] = "NULL"
    write_columns(folder / "behavior_log.csv", BEHAVIOR_HEADER, [
        rng.integers(1, users + 1, m), T0 + rng.integers(-14 * DAY, 8 * DAY, m), pa.array(btag.tolist()),
        rng.integers(1, 9, m), pa.array([str(b) for b in brand])])
    return {name: folder / f"{name}.csv" for name in ("raw_sample", "ad_feature", "user_profile", "behavior_log")}


def reference_join(files: dict[str, Path], tag_days: int = 3, max_tags: int = 10, window: int = DAY,
                   ) -> list[tuple[int, str]]:
    """The join done one row at a time in plain Python: ``(time stamp, line)`` in raw_sample.csv's order."""
    def rows(name: str) -> list[list[str]]:
        with open(files[name]) as f:
            return list(csv.reader(f))[1:]

    ads = {r[0]: r for r in rows("ad_feature")}
    users = {r[0]: r for r in rows("user_profile")}
    samples = rows("raw_sample")
    beijing = 8 * 3600
    cut = (min(int(r[1]) for r in samples) + beijing) // DAY * DAY - beijing  # the first day's start (Beijing)
    cats, brands, buys = defaultdict(Counter), defaultdict(Counter), defaultdict(list)
    for user, ts, btag, cate, brand in rows("behavior_log"):
        if cut - tag_days * DAY <= int(ts) < cut:
            cats[user][int(cate)] += 1
            if brand != "NULL":
                brands[user][int(brand)] += 1
        if btag == "buy" and int(ts) >= cut:
            buys[user, cate].append((int(ts), brand))

    def top(counter: Counter) -> str:
        return "|".join(str(k) for k, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:max_tags])

    out = []
    for user, ts, adgroup, pid, _, clk in samples:
        a, u, t = ads.get(adgroup), users.get(user), int(ts)
        bought = a is not None and clk == "1" and any(
            t <= when <= t + window and (a[4] == "NULL" or brand == a[4]) for when, brand in buys[user, a[1]])
        ad_fields = ([a[1], a[2], a[3], "" if a[4] == "NULL" else a[4]] if a else [""] * 4)
        price = str(min(49, math.floor(2 * math.log2(1 + float(a[5]))))) if a else ""
        out.append((t, ",".join([clk, str(int(bought)), pid, adgroup, *ad_fields, user,
                                 *(u[1:] if u else [""] * 8), top(cats[user]), top(brands[user]), price])))
    return out


def test_join_matches_a_row_by_row_reference_on_generated_files(tmp_path: Path) -> None:
    files = write_alimama_files(tmp_path / "raw", 6000, seed=3)
    expected = reference_join(files)
    test_from = T0 + 7 * DAY
    summary = prep.preprocess(files["raw_sample"], files["ad_feature"], files["user_profile"], tmp_path / "plain",
                              files["behavior_log"], prep.Options(shuffle=False, block_mb=0.1))  # many blocks
    assert lines(tmp_path / "plain" / "train") == [line for t, line in expected if t < test_from]
    assert lines(tmp_path / "plain" / "test") == [line for t, line in expected if t >= test_from]
    buy = np.array([int(line.split(",")[1]) for _, line in expected])
    assert 30 < buy.sum() and summary["rates"]["buy"] == buy.mean()  # the labels are not all 0
    assert summary["missing"]["user_profile"] > 0 and summary["missing"]["ad_feature"] > 0
    # shuffled: the same rows over 3 train files, in another order; the same seed gives the same files
    prep.preprocess(files["raw_sample"], files["ad_feature"], files["user_profile"], tmp_path / "mixed",
                    files["behavior_log"], prep.Options(train_parts=3, seed=7, block_mb=0.1))
    parts = sorted((tmp_path / "mixed" / "train").iterdir())
    assert [p.name for p in parts] == ["part-0.txt", "part-1.txt", "part-2.txt"]
    assert all(p.stat().st_size for p in parts)
    mixed, plain = lines(tmp_path / "mixed" / "train"), lines(tmp_path / "plain" / "train")
    assert sorted(mixed) == sorted(plain) and mixed != plain
    assert lines(tmp_path / "mixed" / "test") == lines(tmp_path / "plain" / "test")
    before = [p.read_bytes() for p in parts]
    prep.preprocess(files["raw_sample"], files["ad_feature"], files["user_profile"], tmp_path / "mixed",
                    files["behavior_log"], prep.Options(train_parts=3, seed=7, block_mb=0.1))  # replaces the folder
    assert [p.read_bytes() for p in sorted((tmp_path / "mixed" / "train").iterdir())] == before
    assert sorted(p.name for p in (tmp_path / "mixed").iterdir()) == ["meta.json", "test", "train"]
