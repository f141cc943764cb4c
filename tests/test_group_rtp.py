"""The grouped reader (EasyRec's GroupRTPInput, end-to-end multimodal DBMTL) and grouped batching.

The spec's constructed example (specs/e2e_mm_dbmtl.md §1) is parsed exactly. recstack has no
TagFeature, so its multi-value ``tags`` field (``a<C>b``) is read as one IdFeature value: the
whole text ``"a\\x03b"`` is hashed.
"""

from __future__ import annotations

import copy
import logging
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from recstack.config import ConfigError, from_dict
from recstack.data import create_loader
from recstack.data.base import DataFormatError
from recstack.data.loader import BatchLoader
from recstack.easyrec.features import TabularSpec
from recstack.easyrec.group_rtp import GroupRTPReader, decode_image, format_group_line, group_by_item

A, B, C = "\x01", "\x02", "\x03"
EXAMPLE = (f"1{A}0{A}0;35.2{A}0.0{A}12.5;u1{B}2{B}99.0{B}a{C}b{A}u2{B}3{B}99.0{B}c{A}u3{B}1{B}99.0{B}a;"
           "imgs/1001.png;3\n"
           f"0{A}1;0.0{A}80.0;u7{B}4{B}15.5{B}d{A}u1{B}2{B}15.5{B}e{C}f;imgs/2002.png;2\n")
FIELDS = [
    {"input_name": "clk", "input_type": "INT32"},
    {"input_name": "play_time", "input_type": "DOUBLE"},
    {"input_name": "user_id", "input_type": "STRING"},
    {"input_name": "age_level", "input_type": "INT32"},
    {"input_name": "price", "input_type": "DOUBLE"},
    {"input_name": "tags", "input_type": "STRING"},
    {"input_name": "img_path", "input_type": "STRING"},
    {"input_name": "group_size", "input_type": "INT32"},
]
FEATURES = [
    {"input_names": ["user_id"], "feature_type": "IdFeature", "hash_bucket_size": 1000, "embedding_dim": 4},
    {"input_names": ["age_level"], "feature_type": "IdFeature", "num_buckets": 10, "embedding_dim": 4},
    {"input_names": ["price"], "feature_type": "RawFeature"},
    {"input_names": ["tags"], "feature_type": "IdFeature", "hash_bucket_size": 100, "embedding_dim": 4},
    {"input_names": ["img_path"], "feature_type": "ImgFeature", "img_shape": {"width": 4, "height": 3, "channel": 3}},
    {"input_names": ["group_size"], "feature_type": "SampleNumFeature"},
]
HP = {
    "data_config": {"input_type": "GroupRTPInput", "rtp_separator": ";", "group_sample_separator": A,
                    "separator": B, "selected_cols": "0,1,2,3,4", "label_fields": ["clk", "play_time"],
                    "input_fields": FIELDS},
    "feature_config": {"features": FEATURES},
    "model_config": {"feature_groups": [
        {"group_name": "all", "feature_names": ["user_id", "age_level", "price", "tags"]},
        {"group_name": "img", "feature_names": ["img_path"]},
        {"group_name": "sample_num", "feature_names": ["group_size"]},
    ]},
}


def write_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb.astype(np.uint8), "RGB").save(path)


def pattern(seed: int, height: int = 3, width: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3))


def make_config(tmp_path: Path, text: str = EXAMPLE, edit=None, images: bool = True, **runner):
    hp = copy.deepcopy(HP)
    if edit is not None:
        edit(hp)
    (tmp_path / "train").mkdir(exist_ok=True)
    (tmp_path / "train" / "part-0.txt").write_text(text)
    if images:
        write_png(tmp_path / "train" / "imgs" / "1001.png", pattern(1))
        write_png(tmp_path / "train" / "imgs" / "2002.png", pattern(2))
    return from_dict({"runner": {"train_data_dir": "train", "train_reader_path": "group_rtp", **runner},
                      "hyper_parameters": hp}, config_dir=tmp_path)


def batches(config, **kwargs) -> list[dict[str, torch.Tensor]]:
    reader = GroupRTPReader([str(config.config_dir / "train" / "part-0.txt")], config)
    kwargs.setdefault("num_workers", 0)
    return list(BatchLoader(reader, kwargs.pop("batch_size", 64), **kwargs))


def bgr(rgb: np.ndarray) -> np.ndarray:
    return rgb[:, :, ::-1].astype(np.float32)


def test_spec_example_parses_exactly(tmp_path):
    config = make_config(tmp_path)
    spec = TabularSpec.from_config(config)
    assert spec.img_shape == (3, 4, 3) and spec.has_img and spec.has_sample_num
    assert spec.sample_groups == ["all"] and spec.group_inputs("img") == [] and spec.group_inputs("sample_num") == []
    (batch,) = batches(config)
    assert set(batch) == {"clk", "play_time", "all.ids", "all.values", "sample_num", "group_size", "img"}
    assert batch["clk"].dtype == torch.float32 and batch["clk"][:, 0].tolist() == [1, 0, 0, 0, 1]
    np.testing.assert_allclose(batch["play_time"][:, 0].numpy(), [35.2, 0, 12.5, 0, 80], rtol=1e-6)
    ids = batch["all.ids"]
    assert ids.dtype == torch.int64 and ids.shape == (5, 3)  # user_id, age_level, tags
    users = ["u1", "u2", "u3", "u7", "u1"]
    tags = [f"a{C}b", "c", "a", "d", f"e{C}f"]  # one hashed value each (no TagFeature)
    assert ids[:, 0].tolist() == [zlib.crc32(u.encode()) % 1000 for u in users]
    assert ids[:, 1].tolist() == [2, 3, 1, 4, 2]
    assert ids[:, 2].tolist() == [zlib.crc32(t.encode()) % 100 for t in tags]
    assert batch["all.values"].dtype == torch.float32 and batch["all.values"][:, 0].tolist() == [99, 99, 99, 15.5, 15.5]
    assert batch["sample_num"].dtype == torch.int64 and batch["sample_num"].tolist() == [0, 0, 0, 1, 1]
    assert batch["group_size"].dtype == torch.int64 and batch["group_size"].tolist() == [3, 2]
    assert batch["img"].dtype == torch.float32 and batch["img"].shape == (2, 3, 4, 3)
    np.testing.assert_array_equal(batch["img"][0].numpy(), bgr(pattern(1)))
    np.testing.assert_array_equal(batch["img"][1].numpy(), bgr(pattern(2)))
    # the batch's first array counts samples (the trainer's batch size and one-row check)
    assert len(next(iter(batch.values()))) == 5


@pytest.mark.parametrize("size", [2, 4])
def test_group_size_mismatch_names_line(tmp_path, size):
    config = make_config(tmp_path, EXAMPLE.replace(".png;3\n", f".png;{size}\n"))
    with pytest.raises(DataFormatError, match=r"part-0\.txt:1: label column 0 \('clk'\) has 3 .* group_size is "
                                              rf"{size}"):
        batches(config)


def test_png_decode_is_bgr_0_255(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 1] = (10, 20, 250)
    write_png(tmp_path / "x.png", rgb)
    image = decode_image(str(tmp_path / "x.png"))
    assert image.dtype == np.float32 and image.shape == (2, 2, 3)
    assert image[0, 1].tolist() == [250.0, 20.0, 10.0] and image[0, 0].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("text, message", [
    (EXAMPLE.replace(".png;3\n", ".png;0\n"), r":1: group_size must be >= 1"),
    (EXAMPLE.replace(".png;3\n", ".png;x\n"), r":1: group size column 4 \('group_size'\) is not an integer"),
    (EXAMPLE.replace(f"0.0{A}80.0", "0.0"), r":2: label column 1 \('play_time'\) has 1 .* group_size is 2"),
    (EXAMPLE.replace(f"15.5{B}d{A}u1", f"15.5{B}d{A}{A}u1"), r":2: feature column 2 has 3 .* group_size is 2"),
    (EXAMPLE.replace(f"u2{B}3{B}99.0{B}c", f"u2{B}3{B}99.0"), r":1: sample 1: expected 4 .*features, got 3"),
    (EXAMPLE.replace(f"u3{B}1{B}", f"u3{B}x{B}"), r":1: field 'age_level' \(INT32\) is not an integer: 'x'.*"
                                                  r"\(sample 2 of the group on line 1\)"),
    (EXAMPLE.replace(";imgs/2002.png;2", ""), r":2: expected at least 5 ';'-separated columns"),
    (";;;;\n", r":1: group_size must be >= 1|not an integer"),
])
def test_bad_lines_name_file_and_line(tmp_path, text, message):
    config = make_config(tmp_path, text)
    with pytest.raises(DataFormatError, match=r"part-0\.txt" + message):
        batches(config)


def test_max_group_size(tmp_path):
    config = make_config(tmp_path, edit=lambda hp: hp["data_config"].update(max_group_size=2))
    with pytest.raises(DataFormatError, match=r"part-0\.txt:1: group_size 3 exceeds max_group_size 2"):
        batches(config)


def test_bad_images(tmp_path):
    config = make_config(tmp_path)
    write_png(tmp_path / "train" / "imgs" / "2002.png", pattern(2, height=4))
    with pytest.raises(DataFormatError, match=r"part-0\.txt:2: image 'imgs/2002\.png' is 4x4 .* img_shape is 4x3"):
        batches(config)
    (tmp_path / "train" / "imgs" / "2002.png").write_bytes(b"not an image")
    with pytest.raises(DataFormatError, match=r"part-0\.txt:2: image 'imgs/2002\.png' .* cannot be decoded"):
        batches(config)


def test_missing_image_is_zeros_and_counted(tmp_path, caplog):
    config = make_config(tmp_path, EXAMPLE + EXAMPLE.replace("2002", "3003"))
    reader = GroupRTPReader([str(tmp_path / "train" / "part-0.txt")], config)
    with caplog.at_level(logging.WARNING, logger="recstack.easyrec.group_rtp"):
        (batch,) = list(BatchLoader(reader, 8, num_workers=0))
    assert reader.missing_images == 1 and batch["img"].shape == (4, 3, 4, 3)
    assert not batch["img"][3].any() and batch["img"][2].any()
    assert [r.getMessage() for r in caplog.records if "not found" in r.getMessage()] == \
        [f"{tmp_path / 'train' / 'part-0.txt'}: 1 image file(s) not found; zeros of shape (3, 4, 3) used instead"]


def test_image_root(tmp_path):
    config = make_config(tmp_path, images=False, edit=lambda hp: hp["data_config"].update(image_root="pics"))
    write_png(tmp_path / "pics" / "imgs" / "1001.png", pattern(1))
    write_png(tmp_path / "pics" / "imgs" / "2002.png", pattern(2))
    (batch,) = batches(config)
    np.testing.assert_array_equal(batch["img"][1].numpy(), bgr(pattern(2)))


def grouped_lines(sizes: list[int]) -> str:
    lines = []
    for g, size in enumerate(sizes):
        samples = [f"u{g}_{k}{B}{k % 10}{B}{g}.5{B}t" for k in range(size)]
        lines.append(f"{A.join(['1'] * size)};{A.join(str(g) for _ in range(size))};{A.join(samples)};"
                     f"imgs/{1001 if g % 2 else 2002}.png;{size}\n")
    return "".join(lines)


@pytest.mark.parametrize("shuffle", [False, True])
def test_batch_size_counts_groups_and_never_splits_one(tmp_path, shuffle):
    sizes = [1 + (7 * g) % 5 for g in range(23)]
    config = make_config(tmp_path, grouped_lines(sizes))
    got = batches(config, batch_size=4, shuffle=shuffle, seed=3)
    assert [len(b["group_size"]) for b in got] == [4] * 5 + [3]
    seen = []
    for b in got:
        n, sizes_b = len(b["group_size"]), b["group_size"]
        assert len(b["play_time"]) == int(sizes_b.sum()) == len(b["sample_num"]) == len(b["all.ids"])
        assert b["sample_num"].tolist() == torch.repeat_interleave(torch.arange(n), sizes_b).tolist()
        # play_time holds the group's index: each group's samples are all there, together
        for i in range(n):
            members = b["play_time"][b["sample_num"] == i, 0]
            assert len(set(members.tolist())) == 1 and len(members) == sizes_b[i]
            seen.append(int(members[0]))
    assert sorted(seen) == list(range(len(sizes)))
    assert (seen != sorted(seen)) == shuffle


def test_grouped_and_ungrouped_give_the_same_samples(tmp_path):
    rows = [{"clk": k % 2, "play_time": f"{k}.5", "user_id": f"u{k}", "age_level": k % 10, "price": 1.5,
             "tags": "t", "img_path": f"imgs/{1001 if k % 3 else 2002}.png"} for k in range(20)]
    features = ["user_id", "age_level", "price", "tags"]
    groups = group_by_item(rows, max_group_size=4)
    assert max(len(g) for g in groups) == 4 and sum(len(g) for g in groups) == 20
    assert all(len({r["img_path"] for r in g}) == 1 for g in groups)

    def read(groups_, sub):
        text = "".join(format_group_line(g, ["clk", "play_time"], features) + "\n" for g in groups_)
        return batches(make_config(tmp_path / sub, text), batch_size=100)[0]

    (tmp_path / "g").mkdir()
    (tmp_path / "u").mkdir()
    grouped, flat = read(groups, "g"), read([[r] for r in rows], "u")
    order = np.argsort(grouped["play_time"][:, 0].numpy())
    for key in ("clk", "play_time", "all.ids", "all.values"):
        np.testing.assert_array_equal(grouped[key].numpy()[order], flat[key].numpy())
    np.testing.assert_array_equal(grouped["img"][grouped["sample_num"]].numpy()[order], flat["img"].numpy())
    assert flat["group_size"].tolist() == [1] * 20 and len(grouped["group_size"]) == len(groups)


def test_create_loader_and_without_img_group(tmp_path):
    config = make_config(tmp_path, train_batch_size=1, cache_dir="cache")  # not cacheable: ignored
    got = list(create_loader(config, "train"))
    assert [b["group_size"].tolist() for b in got] == [[3], [2]] and not (tmp_path / "cache").exists()

    def no_img(hp):
        hp["model_config"]["feature_groups"] = hp["model_config"]["feature_groups"][:1]
    (tmp_path / "n").mkdir()
    (batch,) = batches(make_config(tmp_path / "n", edit=no_img, images=False))
    assert "img" not in batch and batch["sample_num"].tolist() == [0, 0, 0, 1, 1]


CSV_KEYS = ("separator", "label_fields", "input_fields")


@pytest.mark.parametrize("edit, message", [
    (lambda hp: hp["data_config"].update(group_sample_separator=B), r"different column .* separators"),
    (lambda hp: hp["data_config"].update(selected_cols="0,1,2,3"), r"selected_cols.*expected 5 distinct indices"),
    (lambda hp: hp["feature_config"]["features"][4]["img_shape"].update(channel=1), r"channel.*3 channels"),
    (lambda hp: hp["model_config"]["feature_groups"][0]["feature_names"].append("img_path"),
     r"an ImgFeature goes alone in the feature group named 'img'"),
    (lambda hp: hp["model_config"]["feature_groups"][1]["feature_names"].append("price"), r"goes alone|holds only"),
    (lambda hp: hp["data_config"].update(input_fields=FIELDS[:-2] + FIELDS[-1:] + FIELDS[-2:-1]),
     r"image path field 'group_size' .* must be STRING"),
    (lambda hp: hp.update(data_config={k: v for k, v in hp["data_config"].items() if k in CSV_KEYS}),
     r"ImgFeature needs data_config.input_type GroupRTPInput"),
])
def test_config_errors(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message):
        TabularSpec.from_config(make_config(tmp_path, edit=edit, images=False))


def test_generator_grouped_and_ungrouped_files_hold_the_same_samples(tmp_path):
    import importlib.util

    script = Path(__file__).parents[1] / "datasets" / "synthetic" / "generate.py"
    module = importlib.util.spec_from_file_location("generate_e2e", script)
    gen = importlib.util.module_from_spec(module)
    module.loader.exec_module(gen)
    for name, kwargs in (("grouped", {"max_group_size": 3}), ("flat", {"ungrouped": True})):
        gen.generate_e2e_mm(40, 1, tmp_path / name / "train" / "part-0.txt", tmp_path / name / "images", items=12,
                            mean_group_size=4, **kwargs)
    assert len(list((tmp_path / "grouped" / "images").iterdir())) == 12
    fields = ["user_id", "city", "province", "os", "os_version", "day_h", "week_day", "is_new_userid", "level",
              "is_member", "gender", "fans_num", "follow_num", "video_category", "video_duration"]

    def edit(hp):
        hp["data_config"].update(input_fields=FIELDS[:2] + [{"input_name": f} for f in fields[:-1]]
                                 + [{"input_name": "video_duration", "input_type": "FLOAT"}] + FIELDS[-2:],
                                 label_fields=["clk", "play_time"])
        hp["feature_config"]["features"] = [
            {"input_names": ["user_id"], "feature_type": "IdFeature", "hash_bucket_size": 1000, "embedding_dim": 4},
            {"input_names": ["video_duration"], "feature_type": "RawFeature"},
            {"input_names": ["img_path"], "feature_type": "ImgFeature", "img_shape": {"width": 64, "height": 64}},
        ]
        hp["model_config"]["feature_groups"] = [{"group_name": "all", "feature_names": ["user_id", "video_duration"]},
                                                {"group_name": "img", "feature_names": ["img_path"]}]

    def read(name):
        text = (tmp_path / name / "train" / "part-0.txt").read_text()
        config = make_config(tmp_path / name, text, edit=edit, images=False)
        return batches(config, batch_size=1000, num_workers=2)[0]

    grouped, flat = read("grouped"), read("flat")
    assert int(grouped["group_size"].max()) <= 3 and len(flat["group_size"]) == len(flat["clk"]) > 40
    for key in ("clk", "play_time", "all.ids", "all.values"):  # same samples, same order
        np.testing.assert_array_equal(grouped[key].numpy(), flat[key].numpy())
    np.testing.assert_array_equal(grouped["img"][grouped["sample_num"]].numpy(), flat["img"].numpy())
    assert flat["img"].amax() > 0


def test_linked_data_file_resolves_images_beside_the_real_file(tmp_path):
    config = make_config(tmp_path)
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "part-0.txt").symlink_to(tmp_path / "train" / "part-0.txt")
    reader = GroupRTPReader([str(tmp_path / "linked" / "part-0.txt")], config)
    (batch,) = list(BatchLoader(reader, 8, num_workers=0))
    assert reader.missing_images == 0
    np.testing.assert_array_equal(batch["img"][0].numpy(), bgr(pattern(1)))
