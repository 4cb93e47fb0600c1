"""Precision: ``auto`` follows what the processor computes natively; bf16 forecasts stay close to fp32 and
come back in fp32 in the data's units; fp32 is today's computation bit for bit; the doors say and record
which precision ran."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from predrnn.cli import app
from predrnn.config import ValuesConfig, apply_overrides, preset
from predrnn.models import build_model
from predrnn.precision import PrecisionError, autocast, has_native_bf16, resolve_precision
from predrnn.predict import forecast_array
from predrnn.steps import evaluate, train_step
from predrnn.train.spec import training_precision
from predrnn.values import from_model, to_model, with_values

T, SIZE, N_IN = 8, 24, 4
# bf16 keeps 8 significant bits: on [0, 1] images a trained small model's forecast moves by at most
# 1/100 (2.5 grey levels of 255) and by 5e-4 on average (measured: 3.5e-3 and 6e-5)
MAX_ABS, MEAN_ABS = 1e-2, 5e-4


def _squares(n: int, seed: int) -> np.ndarray:
    """Clips (n, T, SIZE, SIZE, 1) in [0, 1] of a 3x3 square moving one pixel per frame."""
    rng = np.random.default_rng(seed)
    clips = np.zeros((n, T, SIZE, SIZE, 1), np.float32)
    for i in range(n):
        vy, vx = rng.choice([-1, 1], 2)
        y, x = rng.integers(T, SIZE - 3 - T, 2)
        for t in range(T):
            clips[i, t, y + vy * t:y + vy * t + 3, x + vx * t:x + vx * t + 3] = 1.0
    return clips


@pytest.fixture(scope="module")
def trained():
    """A small PredRNN-V2 trained 40 steps (weights at a trained network's scale) and its config."""
    cfg = apply_overrides(preset("quick"), ["model.num_hidden=[16,16]", "model.patch_size=2",
                                            "model.filter_size=3", f"data.img_height={SIZE}",
                                            f"data.img_width={SIZE}", f"data.input_length={N_IN}",
                                            f"data.total_length={T}"])
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    data = torch.from_numpy(_squares(64, seed=0))
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        idx = torch.randint(0, 64, (8,), generator=g)
        train_step(model, opt, data[idx], torch.zeros(8, T - 2), beta=0.1)
    return model.eval(), cfg


def test_auto_follows_the_processor_and_the_task():
    yes, no = (lambda d: True), (lambda d: False)
    assert resolve_precision("auto", "cpu", "forecast", native_bf16=yes) == "bf16"
    assert resolve_precision("auto", "cpu", "forecast", native_bf16=no) == "fp32"  # emulated bf16 is slower
    assert resolve_precision("auto", "cpu", "train", native_bf16=yes) == "fp32"  # not shown to keep the scores
    assert resolve_precision("auto", "cuda", "train", native_bf16=yes) == "bf16"
    assert resolve_precision("auto", "cuda", "forecast", native_bf16=no) == "fp32"
    assert resolve_precision("bf16", "cpu", "train", native_bf16=no) == "bf16"  # asked for: kept
    assert resolve_precision("fp32", "cuda", "forecast", native_bf16=yes) == "fp32"
    assert resolve_precision("none", "cpu", "train") == "fp32"  # the earlier name of fp32
    with pytest.raises(PrecisionError, match="one of auto, bf16, fp32; got 'half'"):
        resolve_precision("half", "cpu", "forecast")
    with pytest.raises(PrecisionError, match="must be resolved"):
        autocast("cpu", "auto")
    # this machine's answer comes from PyTorch's CPU feature check
    assert resolve_precision("auto", "cpu", "forecast") == ("bf16" if has_native_bf16("cpu") else "fp32")


def test_training_precision_is_resolved_for_the_workers_device():
    cpu = preset("quick")
    gpu = apply_overrides(cpu, ["compute.gpus_per_worker=1"])
    assert training_precision(cpu, native_bf16=lambda d: True) == "fp32"
    assert training_precision(gpu, native_bf16=lambda d: d.type == "cuda") == "bf16"
    assert training_precision(gpu, native_bf16=lambda d: False) == "fp32"
    assert training_precision(apply_overrides(cpu, ["compute.amp=bf16"])) == "bf16"
    assert apply_overrides(cpu, ["compute.amp=none"]).compute.amp == "fp32"


def test_bf16_forecast_is_close_to_fp32_and_returned_in_fp32(trained):
    model, cfg = trained
    ctx = _squares(16, seed=1)[:, :N_IN]
    a = forecast_array(model, cfg, ctx, 4, precision="fp32")
    b = forecast_array(model, cfg, ctx, 4, precision="bf16")
    assert a.dtype == b.dtype == np.float32
    diff = np.abs(a - b)
    assert 0 < diff.max() <= MAX_ABS, diff.max()  # bf16 did run, and stays within the bound
    assert diff.mean() <= MEAN_ABS, diff.mean()
    assert next(model.parameters()).dtype == torch.float32  # the weights stay fp32


def test_bf16_forecast_of_a_field_is_in_its_units(trained):
    model, cfg = trained
    rain = with_values(cfg, ValuesConfig(kind="field", units="mm/h", mean=2.0, std=4.0, valid_min=0.0))
    ctx = 10.0 * _squares(8, seed=2)[:, :N_IN]
    ctx[0, 0, :2] = np.nan  # no data: fed as the training mean in either precision
    a = forecast_array(model, rain, ctx, 3, precision="fp32")
    b = forecast_array(model, rain, ctx, 3, precision="bf16")
    assert b.dtype == np.float32 and np.isfinite(b).all() and b.min() >= 0.0
    assert 0 < np.abs(a - b).max() <= MAX_ABS * 4.0  # the bound scales with the field's std (4 mm/h)


def test_fp32_is_todays_computation_bit_for_bit(trained):
    model, cfg = trained
    clips = _squares(6, seed=3)
    ctx = clips[:, :N_IN]
    with torch.inference_mode():
        today = from_model(model.forecast(to_model(torch.from_numpy(ctx), cfg.values), 4), cfg.values).numpy()
    assert np.array_equal(forecast_array(model, cfg, ctx, 4), today)  # the library's default
    assert np.array_equal(forecast_array(model, cfg, ctx, 4, precision="fp32"), today)
    plain = evaluate(model, [torch.from_numpy(clips)], N_IN, with_ssim=False)
    again = evaluate(model, [torch.from_numpy(clips)], N_IN, with_ssim=False, precision="fp32")
    assert plain["model"]["mse_per_frame"] == again["model"]["mse_per_frame"]
    bf16 = evaluate(model, [torch.from_numpy(clips)], N_IN, with_ssim=False, precision="bf16")
    assert bf16["model"]["mse_per_frame"] != plain["model"]["mse_per_frame"]
    assert bf16["model"]["mse"] == pytest.approx(plain["model"]["mse"], rel=0.05)


def test_predict_says_and_applies_the_precision(trained, tmp_path: Path):
    from predrnn.checkpoint import save_model_dir

    model, cfg = trained
    save_model_dir(tmp_path / "model", model, cfg)
    np.save(tmp_path / "ctx.npy", _squares(4, seed=4)[:, :N_IN])
    runner = CliRunner()
    outs = {}
    for precision in ("fp32", "bf16", "auto"):
        res = runner.invoke(app, ["predict", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "ctx.npy"),
                                  "--horizon", "3", "--output", str(tmp_path / f"{precision}.npy"),
                                  "--precision", precision])
        assert res.exit_code == 0, res.output
        outs[precision] = np.load(tmp_path / f"{precision}.npy")
        resolved = resolve_precision(precision, "cpu", "forecast")
        assert f"precision {resolved} (" in res.output
    assert "precision fp32 (asked)" in runner.invoke(app, [
        "predict", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "ctx.npy"), "--horizon", "3",
        "--output", str(tmp_path / "x.npy"), "--precision", "fp32"]).output
    assert np.array_equal(outs["fp32"], forecast_array(model, cfg, np.load(tmp_path / "ctx.npy"), 3))
    assert not np.array_equal(outs["fp32"], outs["bf16"])
    assert np.array_equal(outs["auto"], outs[resolve_precision("auto", "cpu", "forecast")])
    bad = runner.invoke(app, ["predict", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "ctx.npy"),
                              "--horizon", "3", "--output", str(tmp_path / "bad.npy"), "--precision", "half"])
    assert bad.exit_code == 2 and not (tmp_path / "bad.npy").exists()
    assert "error: --precision: precision must be one of auto, bf16, fp32; got 'half'" in bad.output


def test_describe_names_why(monkeypatch):
    from predrnn import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_precision("auto", "cpu", "forecast") == "bf16"
    assert precision.describe("bf16", "bf16", "cpu") == "precision bf16 (asked)"
    assert precision.describe("auto", "bf16", "cpu") == "precision bf16 (auto: this CPU has native bf16)"
    assert precision.describe("auto", "fp32", "cpu", "train").startswith("precision fp32 (auto: training on the CPU")
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_precision("auto", "cpu", "forecast") == "fp32"
    assert precision.describe("auto", "fp32", "cpu") == "precision fp32 (auto: this CPU has no native bf16)"
    assert precision.describe("bf16", "bf16", "cpu").startswith("precision bf16 (asked; this CPU has no native bf16: ")
    assert precision.describe("fp32", "fp32", "cpu") == "precision fp32 (asked)"
    assert json.dumps(precision.CHOICES) == '["auto", "bf16", "fp32"]'
