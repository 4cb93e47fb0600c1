"""The nowcasting baselines: extrapolation follows a known wind, S-PROG is pysteps' own, refusals are clear.

The moving field: smooth Gaussian rain cells (mm/h) carried by a uniform wind of whole pixels per step
(2 px/step in x, 1 in y) on 64 x 64, every cell inside the domain over the whole clip, so the truth at
lead n is the last context frame shifted by n steps and a perfect motion field reproduces it.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from predrnn.baselines import (
    BASELINES,
    applicable_baselines,
    baseline_forecast,
    cascade_levels,
    extrapolation,
    persistence,
    sprog,
)
from predrnn.config import ChannelValues, ValuesConfig
from predrnn.metrics import frame_metrics
from predrnn.steps import persistence_forecast
from predrnn.values import IMAGE

RAIN = ValuesConfig(kind="field", units="mm/h", mean=0.5, std=1.0, valid_min=0.0)
TEMPERATURE = ValuesConfig(kind="field", units="K", mean=280.0, std=8.0)
U, V = 2, 1  # the wind, pixels per step in x (columns) and y (rows)
CELLS = [(20, 14, 4.0, 8.0), (40, 10, 6.0, 5.0), (30, 26, 3.0, 10.0), (48, 22, 5.0, 4.0)]  # row, col, size, peak


def advected(steps: int, size: int = 64) -> torch.Tensor:
    """One clip (1, steps, size, size, 1) in mm/h: the cells moved by (U, V) pixels per step."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    frames = np.zeros((steps, size, size))
    for t in range(steps):
        for row, col, s, peak in CELLS:
            frames[t] += peak * np.exp(-((y - row - V * t) ** 2 + (x - col - U * t) ** 2) / (2 * s * s))
    return torch.tensor(frames, dtype=torch.float32)[None, ..., None]


def mse_per_lead(pred: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    return ((pred.double() - truth.double()) ** 2).mean(dim=(0, 2, 3, 4)).numpy()


@pytest.mark.parametrize("method", ["LK", "VET"])
def test_extrapolation_follows_a_uniform_wind_and_beats_persistence_at_every_lead(method):
    clip = advected(4 + 6)
    context, truth = clip[:, :4], clip[:, 4:]
    pred = extrapolation(context, 6, RAIN, method=method)
    assert pred.shape == truth.shape and pred.dtype == torch.float32 and torch.isfinite(pred).all()
    err, base = mse_per_lead(pred, truth), mse_per_lead(persistence(context, 6, RAIN), truth)
    assert (base > 0.3).all()  # the cells do move: persistence is wrong from the first lead
    assert (err < 0.01 * base).all(), (err, base)
    # within interpolation error: the largest miss stays a few per cent of the strongest cell (10 mm/h)
    worst = (pred - truth).abs().amax(dim=(0, 2, 3, 4))
    assert (worst < 0.05 * truth.max()).all(), worst


@pytest.mark.filterwarnings("ignore:Singular matrix during outlier detection")
def test_a_static_field_is_forecast_as_it_is():
    clip = advected(1).expand(1, 4, 64, 64, 1).contiguous()
    pred = extrapolation(clip, 3, RAIN)
    assert torch.allclose(pred, clip[:, -1:].expand_as(pred), atol=1e-4)


def test_sprog_equals_pysteps_called_directly_on_the_same_context():
    """The same pipeline written from pysteps' docs: dB with threshold 0.1 mm/h and zero value -15 dB, NaN
    -> the zero value, LK motion on the last three frames, S-PROG with 5 levels (64 px), AR(2), precip_thr
    -10 dB, back to mm/h; pysteps' NaN (inflow from outside the domain) is no rain in ours."""
    with contextlib.redirect_stdout(io.StringIO()):
        from pysteps import motion, nowcasts
        from pysteps.utils.transformation import dB_transform

        context = advected(5)
        frames = context[0, ..., 0].double().numpy()
        db, _ = dB_transform(frames, threshold=0.1, zerovalue=-15.0)
        db[~np.isfinite(db)] = -15.0
        velocity = motion.get_method("LK")(db[-3:])
        direct = nowcasts.get_method("sprog")(db[-3:], velocity, 4, precip_thr=-10.0, n_cascade_levels=5,
                                              ar_order=2)
    direct, _ = dB_transform(direct, threshold=-10.0, inverse=True)
    ours = sprog(context, 4, RAIN)[0, ..., 0].numpy()
    assert ours.shape == direct.shape == (4, 64, 64)
    inside = np.isfinite(direct)
    assert inside.mean() > 0.8
    np.testing.assert_allclose(ours[inside], direct[inside], rtol=1e-5, atol=1e-5)
    assert (ours[~inside] == 0).all()
    assert cascade_levels(64, 64) == 5 and cascade_levels(256, 256) == 7 and cascade_levels(700, 700) == 8


def test_sprog_smooths_yet_follows_the_wind():
    clip = advected(4 + 4)
    context, truth = clip[:, :4], clip[:, 4:]
    pred = sprog(context, 4, RAIN)
    assert torch.isfinite(pred).all() and (pred >= 0).all()
    assert (mse_per_lead(pred, truth) < mse_per_lead(persistence(context, 4, RAIN), truth)).all()


def test_the_registry_lists_and_dispatches_every_baseline():
    assert BASELINES == ("persistence", "extrapolation", "sprog")
    clip = advected(4)
    assert torch.equal(baseline_forecast("persistence", clip, 2, RAIN), persistence_forecast(clip, 2, RAIN))
    assert torch.equal(baseline_forecast("extrapolation", clip, 2, RAIN, method="LK"),
                       extrapolation(clip, 2, RAIN, method="LK"))
    assert torch.equal(baseline_forecast("sprog", clip, 2, RAIN), sprog(clip, 2, RAIN))


def test_applicable_baselines():
    assert applicable_baselines(RAIN, 1) == BASELINES
    assert applicable_baselines(ValuesConfig(kind="field", units="mm h-1"), 1) == BASELINES  # rain units
    assert applicable_baselines(TEMPERATURE, 1) == ("persistence", "extrapolation")  # no dB of a signed field
    assert applicable_baselines(IMAGE, 1) == ("persistence",)
    assert applicable_baselines(RAIN, 2) == ("persistence",)
    two = ValuesConfig(kind="field", units="K, m s-1", channels=(ChannelValues(name="t2m", units="K"),
                                                                 ChannelValues(name="u10", units="m s-1")))
    assert applicable_baselines(two, 2) == ("persistence",)


def _refusal(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as err:
        fn(*args, **kwargs)
    text = str(err.value)
    assert "\n" not in text and text
    return text


@pytest.mark.parametrize("name", ["extrapolation", "sprog"])
def test_baselines_refuse_images_and_several_channels_in_one_line(name):
    clip = advected(4)
    assert "image" in _refusal(baseline_forecast, name, clip.clamp(0, 1), 2, IMAGE)
    two = torch.cat([clip, clip], dim=-1)
    assert "2 channels" in _refusal(baseline_forecast, name, two, 2, RAIN)
    vals = ValuesConfig(kind="field", units="mm/h, mm/h", channels=(ChannelValues(name="a", units="mm/h"),
                                                                    ChannelValues(name="b", units="mm/h")))
    assert "2 channels" in _refusal(baseline_forecast, name, two, 2, vals)


def test_too_few_frames_too_small_a_grid_and_wrong_values_are_refused_in_one_line():
    clip = advected(4)
    assert "3 context frames, got 2" in _refusal(sprog, clip[:, :2], 2, RAIN)
    assert "2 context frames, got 1" in _refusal(extrapolation, clip[:, :1], 2, RAIN)
    assert "DARTS" in _refusal(extrapolation, clip, 2, RAIN, method="DARTS")
    assert "8x8" in _refusal(sprog, clip[:, :, :8, :8], 2, RAIN)
    assert "non-negative" in _refusal(sprog, clip - 1.0, 2, RAIN)
    assert "K declares none" in _refusal(sprog, clip + 270.0, 2, TEMPERATURE)  # positive, yet no rain
    assert "unknown motion method" in _refusal(extrapolation, clip, 2, RAIN, method="farneback")
    assert "unknown baseline" in _refusal(baseline_forecast, "steps", clip, 2, RAIN)
    assert "no options" in _refusal(baseline_forecast, "persistence", clip, 2, RAIN, method="LK")
    assert "horizon" in _refusal(extrapolation, clip, 0, RAIN)


@pytest.mark.parametrize("name", ["extrapolation", "sprog"])
def test_missing_data_is_forecast_and_scored_never_perfect(name):
    """A block of the strongest cell has no data in any context frame: the forecast is finite everywhere
    (the scores refuse NaN), no rain where the block was carried (the documented fill), and costs skill."""
    clip = advected(4 + 3)
    context, truth = clip[:, :4].clone(), clip[:, 4:]
    context[:, :, 26:34, 22:30] = float("nan")
    pred = baseline_forecast(name, context, 3, RAIN)
    full = baseline_forecast(name, clip[:, :4], 3, RAIN)
    assert torch.isfinite(pred).all()
    gappy = frame_metrics(pred.numpy(), truth.numpy(), with_ssim=False, image=False)["mse"][0]
    whole = frame_metrics(full.numpy(), truth.numpy(), with_ssim=False, image=False)["mse"][0]
    assert (gappy > whole).all() and (gappy > 1.0).all(), (gappy, whole)
    if name == "extrapolation":  # the block's core, moved one step by the wind, is forecast as no rain
        assert (pred[0, 0, 28 + V : 32 + V, 24 + U : 28 + U] == 0).all()


def test_extrapolation_of_a_signed_field_fills_with_the_training_mean():
    clip = advected(4) + 270.0
    clip[:, -1, :4, :4] = float("nan")
    pred = extrapolation(clip, 2, TEMPERATURE)
    assert torch.isfinite(pred).all()
    assert torch.allclose(pred[0, 0, :2, :2], torch.tensor(TEMPERATURE.mean), atol=1e-3)  # gap and inflow


def test_sprog_with_a_dry_frame_in_its_window_gives_the_advected_last_frame():
    """A cell entering a dry domain: S-PROG's cascade has no variance in the dry frames (pysteps raises on
    it), so such a clip gets the last frame advected along the motion; a dry last frame gives no rain."""
    clip = advected(8)
    clip[:, :2] = 0.0  # the first two of the last three context frames are dry
    context = clip[:, :4]
    pred = sprog(context, 3, RAIN)
    assert torch.isfinite(pred).all()
    assert torch.allclose(pred, extrapolation(context, 3, RAIN), atol=1e-5)
    dry = torch.zeros(1, 4, 64, 64, 1)
    assert (sprog(dry, 3, RAIN) == 0).all()


def test_a_static_textured_field_has_no_motion_where_the_estimate_is_singular():
    """Random rain that never moves: every tracked feature stays put, pysteps' outlier detection meets a
    singular covariance; the motion is zero and extrapolation and S-PROG keep the field where it is."""
    rng = np.random.default_rng(0)
    frame = torch.tensor(rng.gamma(1.5, 6.0, (32, 32)), dtype=torch.float32)
    clip = frame[None, None, :, :, None].expand(1, 5, 32, 32, 1).contiguous()
    pred = extrapolation(clip, 3, RAIN)
    assert torch.allclose(pred, clip[:, -1:].expand_as(pred), atol=1e-4)
    assert torch.allclose(sprog(clip, 3, RAIN), pred, atol=1e-4)  # no evolution: S-PROG is that advection
