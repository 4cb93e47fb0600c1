"""Authors'-format interop, model directories and the predict / import-official commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from reference import random_official_state, ref_forward
from typer.testing import CliRunner

from predrnn.checkpoint import (
    CheckpointError,
    export_official,
    import_official,
    load_model_dir,
    read_official,
    save_model_dir,
)
from predrnn.cli import app
from predrnn.config import preset
from predrnn.models import build_model

runner = CliRunner()
P, H, W = 2, 8, 12


@pytest.fixture
def official_file(tmp_path):
    sd = random_official_state(layers=2, width=4, k=3, p=P, img_channel=1, hw=(H // P, W // P), layer_norm=True)
    f = tmp_path / "model.ckpt-80000"
    torch.save({"net_param": {k: v.float() for k, v in sd.items()}}, f)
    return f, sd


def test_import_official_infers_architecture_and_round_trips(official_file, tmp_path):
    f, sd = official_file
    res = runner.invoke(app, ["import-official", str(f), "--patch-size", "2", "--channels", "1",
                              "--input-length", "3", "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    assert "predrnn_v2 2x4 k=3 layer_norm=True" in res.output
    model, cfg = load_model_dir(tmp_path / "m")
    assert (cfg.data.img_height, cfg.data.img_width, cfg.data.input_length) == (H, W, 3)  # from the LN shapes
    export_official(model, tmp_path / "back.ckpt")
    back = read_official(tmp_path / "back.ckpt")
    assert set(back) == set(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k].float()), k


def test_predict_on_imported_model_equals_reference(official_file, tmp_path):
    f, sd = official_file
    runner.invoke(app, ["import-official", str(f), "--patch-size", "2", "--channels", "1",
                        "--input-length", "3", "--out", str(tmp_path / "m")])
    rng = np.random.default_rng(0)
    clips = rng.random((3, 7, H, W, 1)).astype(np.float32)
    np.save(tmp_path / "ctx.npy", clips[:, :3])
    np.save(tmp_path / "truth.npy", clips[:, 3:])
    res = runner.invoke(app, ["predict", "--model", str(tmp_path / "m"), "--input", str(tmp_path / "ctx.npy"),
                              "--horizon", "4", "--output", str(tmp_path / "pred.npy"),
                              "--gif", str(tmp_path / "f.gif"), "--truth", str(tmp_path / "truth.npy"),
                              "--precision", "fp32"])  # the reference is float64 (auto is bf16 on a bf16 CPU)
    assert res.exit_code == 0, res.output
    pred = np.load(tmp_path / "pred.npy")
    assert pred.shape == (3, 4, H, W, 1) and pred.dtype == np.float32
    # the authors' test-time mask for RSS: true frames for the context, predictions after
    mask = np.zeros((3, 5))
    mask[:, :2] = 1
    sd32 = {k: v.float().double() for k, v in sd.items()}
    ref, _ = ref_forward(sd32, clips.astype(np.float64), mask, p=P, num_layers=2)
    assert np.abs(pred - np.clip(ref[:, 2:], 0, 1)).max() <= 1e-5
    assert (tmp_path / "f.gif").stat().st_size > 0
    # uint8 context gives the same forecast as its /255 float version
    np.save(tmp_path / "ctx8.npy", (clips[:, :3] * 255).round().astype(np.uint8))
    np.save(tmp_path / "ctxf.npy", (clips[:, :3] * 255).round().astype(np.float32) / 255)
    for name in ("ctx8", "ctxf"):
        assert runner.invoke(app, ["predict", "--model", str(tmp_path / "m"), "--input",
                                   str(tmp_path / f"{name}.npy"), "--horizon", "2", "--output",
                                   str(tmp_path / f"{name}-out.npy")]).exit_code == 0
    assert np.allclose(np.load(tmp_path / "ctx8-out.npy"), np.load(tmp_path / "ctxf-out.npy"), atol=1e-6)


@pytest.mark.parametrize(("array", "horizon", "message"), [
    (np.zeros((2, 3, 8, 8, 1), np.float32), 2, "model expects (clips, T_in, 8, 12, 1)"),
    (np.zeros((3, 8, 12, 1), np.float32), 2, "context must have shape (clips, T_in, 8, 12, 1)"),
    (np.full((2, 3, 8, 12, 1), 300, np.int32), 2, "integer context holds 8-bit levels 0..255 for an image "
     "model, got values in [300, 300]"),
    (np.zeros((2, 3, 8, 12, 1), np.bool_), 2, "takes uint8 (0..255) or floats in [0, 1], got dtype bool"),
    (np.full((2, 3, 8, 12, 1), 2.0, np.float32), 2, "must lie in [0, 1]"),
    (np.zeros((2, 3, 8, 12, 1), np.float32), 0, "horizon must be >= 1"),
])
def test_predict_bad_input_is_one_clear_line(official_file, tmp_path, array, horizon, message):
    f, _ = official_file
    import_official(f, tmp_path / "m", patch_size=2, channels=1, input_length=3)
    np.save(tmp_path / "bad.npy", array)
    res = runner.invoke(app, ["predict", "--model", str(tmp_path / "m"), "--input", str(tmp_path / "bad.npy"),
                              "--horizon", str(horizon), "--output", str(tmp_path / "o.npy")])
    assert res.exit_code == 2
    assert message in res.output and res.output.strip().count("\n") == 0
    assert not (tmp_path / "o.npy").exists()


def test_mismatched_checkpoint_names_the_first_bad_key(tmp_path):
    sd = random_official_state(layers=2, width=4, k=3, p=2, img_channel=1, hw=(4, 6))
    sd["cell_list.1.conv_m.0.weight"] = torch.zeros(12, 4, 5, 5)
    torch.save({"net_param": sd}, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match=r"cell_list.1.conv_m.0.weight' has shape \(12, 4, 5, 5\)"):
        import_official(tmp_path / "bad.ckpt", tmp_path / "m", patch_size=2, channels=1)
    assert not (tmp_path / "m").exists()
    res = runner.invoke(app, ["import-official", str(tmp_path / "bad.ckpt"), "--patch-size", "4", "--channels", "1",
                              "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "input channels" in res.output
    (tmp_path / "corrupt.ckpt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="corrupt.ckpt"):
        read_official(tmp_path / "corrupt.ckpt")
    torch.save({"weights": {}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="expected a dict with key 'net_param'"):
        read_official(tmp_path / "other.ckpt")


def test_model_dir_round_trip_and_v1_detection(tmp_path):
    cfg = preset("moving_mnist_v1")
    from predrnn.config import apply_overrides

    cfg = apply_overrides(cfg, ["model.num_hidden=[8,8]", "data.img_height=16", "data.img_width=16"])
    model = build_model(cfg)
    save_model_dir(tmp_path / "d", model, cfg)
    loaded, cfg2 = load_model_dir(tmp_path / "d")
    assert cfg2 == cfg
    assert json.loads((tmp_path / "d" / "config.json").read_text())["model"]["arch"] == "predrnn"
    export_official(model, tmp_path / "v1.ckpt")
    assert "adapter.weight" not in read_official(tmp_path / "v1.ckpt")
    _, cfg3 = import_official(tmp_path / "v1.ckpt", tmp_path / "v1", patch_size=4, channels=1,
                              img_height=16, img_width=16)
    assert cfg3.model.arch == "predrnn" and cfg3.model.num_hidden == (8, 8)


def test_an_imported_model_without_layer_norm_takes_any_frame_size(tmp_path):
    """Without layer norm the authors' network is fully convolutional: 16x20 frames through a model
    recorded at 8x12 give the reference forecast at 16x20."""
    sd = random_official_state(layers=2, width=4, k=3, p=P, img_channel=1, hw=(H // P, W // P), layer_norm=False)
    torch.save({"net_param": {k: v.float() for k, v in sd.items()}}, tmp_path / "noln.ckpt")
    res = runner.invoke(app, ["import-official", str(tmp_path / "noln.ckpt"), "--patch-size", "2", "--channels",
                              "1", "--input-length", "3", "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    clips = np.random.default_rng(5).random((2, 5, 16, 20, 1))
    np.save(tmp_path / "ctx.npy", clips[:, :3])
    res = runner.invoke(app, ["predict", "--model", str(tmp_path / "m"), "--input", str(tmp_path / "ctx.npy"),
                              "--horizon", "2", "--output", str(tmp_path / "pred.npy"), "--precision", "fp32"])
    assert res.exit_code == 0, res.output  # fp32: compared with the float64 reference (auto is bf16 on a bf16 CPU)
    mask = np.zeros((2, 3))
    mask[:, :2] = 1
    ref, _ = ref_forward({k: v.float().double() for k, v in sd.items()}, clips, mask, p=P, num_layers=2)
    assert np.abs(np.load(tmp_path / "pred.npy") - np.clip(ref[:, 2:], 0, 1)).max() <= 1e-5
    # truth shorter than the horizon: the picture shows the truth there is, blank after it
    np.save(tmp_path / "truth.npy", clips[:, 3:5])
    res = runner.invoke(app, ["predict", "--model", str(tmp_path / "m"), "--input", str(tmp_path / "ctx.npy"),
                              "--horizon", "4", "--output", str(tmp_path / "p4.npy"), "--gif", str(tmp_path / "f.gif"),
                              "--truth", str(tmp_path / "truth.npy")])
    assert res.exit_code == 0 and (tmp_path / "f.gif").stat().st_size > 0, res.output
    np.save(tmp_path / "odd.npy", clips[:, :3, :15])
    res = runner.invoke(app, ["predict", "--model", str(tmp_path / "m"), "--input", str(tmp_path / "odd.npy"),
                              "--horizon", "2", "--output", str(tmp_path / "o.npy")])
    assert res.exit_code == 2 and "H and W multiples of the patch size 2" in res.output


def test_an_action_conditioned_checkpoint_is_refused_by_name(tmp_path):
    sd = random_official_state(layers=1, width=4, k=3, p=P, img_channel=3, hw=(4, 4))
    sd["cell_list.0.conv_a.0.weight"] = torch.zeros(16, 4, 3, 3)
    torch.save({"net_param": sd}, tmp_path / "bair.ckpt")
    res = runner.invoke(app, ["import-official", str(tmp_path / "bair.ckpt"), "--patch-size", "2", "--channels",
                              "3", "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "action-conditioned checkpoint (the authors' BAIR model" in res.output
    assert not (tmp_path / "m").exists()
