"""The Ali-CCP (ESMM) reader: exact parsing of PaddleRec's real sample lines, truncation and padding to
``max_len``, the per-line path, errors that name file and line, the binary cache."""

import numpy as np
import pytest

from recstack.config import ConfigError, from_dict
from recstack.data import base
from recstack.data.aliccp import FIELDS, AliCCPReader
from recstack.data.base import DataFormatError
from recstack.registry import READERS

ESMM = "paddlerec/models/multitask/esmm/data"


def config(max_len=3, ids=737946, num_field=23):
    return from_dict({"hyper_parameters": {"num_field": num_field, "max_len": max_len,
                                           "sparse_feature_number": ids}})


def read_all(reader, **kwargs):
    blocks = list(reader.iter_blocks(**kwargs))
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


def reference(lines, max_len):
    """A plain per-token parse with PaddleRec's rules: the 23 fields, first ``max_len`` values each, 0-padded."""
    clicks, conversions, rows = [], [], []
    for line in lines:
        tokens = line.split(",")
        clicks.append(int(tokens[1]))
        conversions.append(int(tokens[2]))
        values = {f: [] for f in FIELDS}
        for token in tokens[3:]:
            field, feat = token.split(":")
            if field in values:
                values[field].append(int(feat))
        rows.append([v for f in FIELDS for v in (values[f] + [0] * max_len)[:max_len]])
    return np.array(clicks), np.array(conversions), np.array(rows, dtype=np.int64)


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("max_len", [1, 3, 8])
def test_parses_paddlerec_esmm_sample_exactly(shared_data, split, max_len):
    path = shared_data / ESMM / split / "small.txt"
    data = read_all(AliCCPReader([str(path)], config(max_len)))
    assert set(data) == {"ctr", "ctcvr", "sparse"}
    assert data["ctr"].shape == (10, 1) and data["ctcvr"].shape == (10, 1)
    assert data["sparse"].shape == (10, 23 * max_len) and data["sparse"].dtype == np.int64
    clicks, conversions, ids = reference(path.read_text().splitlines(), max_len)
    np.testing.assert_array_equal(data["ctr"][:, 0], clicks)
    np.testing.assert_array_equal(data["ctcvr"][:, 0], conversions)
    np.testing.assert_array_equal(data["sparse"], ids)


def test_values_of_the_first_real_lines(shared_data):
    path = shared_data / ESMM / "train" / "small.txt"
    data = read_all(AliCCPReader([str(path)], config(3)))
    assert data["ctr"][:, 0].tolist() == [1, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    assert data["ctcvr"][:, 0].tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    first = data["sparse"][0].reshape(23, 3)
    col = {f: i for i, f in enumerate(FIELDS)}
    # line 1 starts "1,1,1,210:1,210:2,210:3,216:4,301:5,205:6,..."; its 4th column is a feature, kept
    assert first[col["210"]].tolist() == [1, 2, 3]
    assert first[col["216"]].tolist() == [4, 0, 0]  # one value, padded
    assert first[col["301"]].tolist() == [5, 0, 0]
    assert first[col["101"]].tolist() == [12, 0, 0]
    assert first[col["150_14"]].tolist() == [18, 19, 20]  # 191 values, first 3 kept
    assert first[col["509"]].tolist() == [0, 0, 0]  # absent on this line
    third = data["sparse"][2].reshape(23, 3)
    assert third[col["509"]].tolist()[1:] == [0, 0] and third[col["509"], 0] > 0


def test_spaces_crlf_blank_lines_and_small_chunks_parse_like_canonical(shared_data, tmp_path, monkeypatch):
    lines = (shared_data / ESMM / "train" / "small.txt").read_text().splitlines()
    expected = read_all(AliCCPReader([str(shared_data / ESMM / "train" / "small.txt")], config()))
    spaced = [line.replace(",", ", ", 5) for line in lines]  # per-line path (PaddleRec strips tokens)
    path = tmp_path / "part-0.txt"
    path.write_text("\n".join(lines[:4]) + "\n\n" + "\r\n".join(spaced[4:]) + "\r\n")
    monkeypatch.setattr(base.read_chunks, "__defaults__", (3000,))  # chunks of a few lines, cut mid-line
    got = read_all(AliCCPReader([str(path)], config()))
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])


def test_any_field_order_unknown_fields_and_truncation(tmp_path):
    path = tmp_path / "part-0.txt"
    path.write_text("7,1,0,150_14:9,999:5,101:3,150_14:8,150_14:7,150_14:6,210:2\n"
                    "8,0,0\n"
                    "9,1,1,301:4,301:4\n")
    data = read_all(AliCCPReader([str(path)], config(3)))
    ids = data["sparse"].reshape(3, 23, 3)
    col = {f: i for i, f in enumerate(FIELDS)}
    assert ids[0, col["150_14"]].tolist() == [9, 8, 7]
    assert ids[0, col["101"]].tolist() == [3, 0, 0] and ids[0, col["210"]].tolist() == [2, 0, 0]
    assert ids[0].sum() == 9 + 8 + 7 + 3 + 2  # field 999 is not one of the 23: skipped
    assert ids[1].sum() == 0  # a line without features: every field is padding
    assert ids[2, col["301"]].tolist() == [4, 4, 0]
    assert data["ctcvr"][:, 0].tolist() == [0, 0, 1]


GOOD = "5,1,0,210:1,210:2,216:4,301:5,101:12,150_14:18"


@pytest.mark.parametrize("bad, message", [
    ("5,1", "expected '<sample_id>,<click>,<conversion>,<field_id>:<feat_id>,...'; got 2"),
    (GOOD.replace("5,1,0", "5,x,0"), "click label (column 2) is not an integer: 'x'"),
    (GOOD.replace("5,1,0", "5,1,0.5"), "conversion label (column 3) is not an integer: '0.5'"),
    (GOOD.replace("5,1,0", "5,2,0"), "click label (column 2) must be 0 or 1"),
    (GOOD.replace("5,1,0", "5,1,3"), "conversion label (column 3) must be 0 or 1"),
    (GOOD.replace("5,1,0", "5,0,1"), "conversion (column 3) is 1 but click (column 2) is 0"),
    (GOOD.replace("216:4", "216"), "column 6 is not <field_id>:<feat_id>: '216'"),
    (GOOD.replace("216:4", "216:4:4"), "column 6 is not <field_id>:<feat_id>: '216:4:4'"),
    (GOOD + ",", "column 10 is not <field_id>:<feat_id>: ''"),
    (GOOD.replace("216:4", "216:abc"), "feature id of column 6 is not an integer: '216:abc'"),
    (GOOD.replace("216:4", "216:737946"), "feature id outside [0, sparse_feature_number=737946)"),
    (GOOD.replace("216:4", "216:-1"), "feature id outside"),
])
def test_errors_name_file_and_line(tmp_path, bad, message):
    path = tmp_path / "part-0.txt"
    path.write_text("\n".join([GOOD] * 6 + [bad] + [GOOD] * 3) + "\n")
    with pytest.raises(DataFormatError) as err:
        read_all(AliCCPReader([str(path)], config()))
    assert f"{path}:7: " in str(err.value)
    assert message in str(err.value)


def test_config_errors_and_registration():
    with pytest.raises(ConfigError, match="num_field must be 23, got 22"):
        AliCCPReader([], config(num_field=22))
    with pytest.raises(ConfigError, match="max_len.*must be at least 1, got 0"):
        AliCCPReader([], config(max_len=0))
    assert READERS.get("aliccp") is AliCCPReader
    import recstack.data

    assert recstack.data.AliCCPReader is AliCCPReader


def test_binary_cache_equals_text(shared_data, tmp_path):
    reader = AliCCPReader([str(shared_data / ESMM / "train" / "small.txt")], config())
    text = read_all(reader)
    cache = tmp_path / "cache"
    for _ in range(2):  # parses and writes, then memory-maps
        cached = read_all(reader, cache_dir=str(cache))
        for key in text:
            np.testing.assert_array_equal(cached[key], text[key])
    assert len(list(cache.iterdir())) == 1
    other = AliCCPReader(reader.file_list, config(max_len=4))  # another max_len: another cache entry
    assert read_all(other, cache_dir=str(cache))["sparse"].shape == (10, 92)
    assert len(list(cache.iterdir())) == 2


def test_esmm_outputs_loss_and_cvr_auc_over_clicked_samples():
    """pCTCVR = pCTR * pCVR; loss = BCE(pCTR, click) + BCE(pCTCVR, conversion); auc_cvr sees clicked rows only."""
    from pathlib import Path

    import torch
    from sklearn.metrics import roc_auc_score

    from recstack.config import load_config
    from recstack.data import create_loader
    from recstack.wrapper import build_model

    config = load_config(Path(__file__).resolve().parents[1] / "models/multitask/esmm/config.yaml",
                         ["runner.infer_batch_size=3000"])
    torch.manual_seed(0)
    wrapper, model = build_model(config, torch.device("cpu"))
    batch = next(iter(create_loader(config, "infer")))
    with torch.no_grad():
        ctr, ctcvr, cvr = model(batch["sparse"])
        torch.testing.assert_close(ctcvr, ctr * cvr)
        loss = wrapper.create_loss([ctr, ctcvr, cvr], [batch["ctr"], batch["ctcvr"]])
        bce = torch.nn.functional.binary_cross_entropy
        torch.testing.assert_close(loss, bce(ctr, batch["ctr"]) + bce(ctcvr, batch["ctcvr"]))
        metrics, names = wrapper.create_metrics()
        wrapper.infer_forward(model, metrics, batch, config)
    assert names == ["auc_ctr", "auc_ctcvr", "auc_cvr"]
    click, buy = batch["ctr"][:, 0].bool().numpy(), batch["ctcvr"][:, 0].numpy()
    assert not (buy[~click] > 0).any()
    assert metrics[2].compute() == pytest.approx(roc_auc_score(buy[click], cvr[:, 0].numpy()[click]), abs=1e-4)
    assert metrics[0].compute() == pytest.approx(roc_auc_score(click, ctr[:, 0].numpy()), abs=1e-4)
