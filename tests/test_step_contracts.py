"""The contracts of the plain steps, checked against computations written here from their definitions.

* ``train_step`` on a physical field with no-data pixels: its loss is the MSE on standardised values
  over the pixels that have data, and its update (plain SGD, learning rate 1, so the update is minus
  the gradient) is the gradient of that loss; a missing pixel enters the model as the training mean
  and its target term gives no gradient.
* ``eval_step``, ``evaluate``, ``evaluate_split`` and ``forecast_array`` forecast from the context
  alone, exactly as ``model.forecast`` does: what comes after the context (the truth) never reaches
  the forecast, and the scores are those of that forecast against the truth.

The model is a tiny untrained PredRNN-V2 with fixed random weights: its forecasts depend on every
input, so a truth leaking into a forecast, or a pixel counted that should not be, shows.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from predrnn.config import ExperimentConfig, ValuesConfig
from predrnn.models import PredRNN
from predrnn.steps import eval_step, evaluate, train_step
from predrnn.values import from_model, to_model

H = W = 8
P, WIDTH, T, T_IN = 2, 4, 6, 3
RAIN = ValuesConfig(kind="field", units="mm/h", mean=3.0, std=2.0, valid_min=0.0, thresholds=(0.5, 2.0))


def _model(seed: int = 0, dtype: torch.dtype = torch.float64) -> PredRNN:
    torch.manual_seed(seed)
    return PredRNN(num_hidden=[WIDTH, WIDTH], img_channel=1, patch_size=P, filter_size=3, img_height=H,
                   img_width=W, decouple=True).to(dtype)


def _rain(batch: int = 2, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Clips (B, T, H, W, 1) in mm/h with no-data pixels in input frames and in the last (target-only) frame."""
    g = np.random.default_rng(seed)
    frames = torch.from_numpy(g.gamma(1.5, 2.5, (batch, T, H, W, 1))).to(dtype)
    frames[:, :, :2, :3] = float("nan")  # outside the radar's range in every frame
    frames[0, 2, 5, 5] = float("nan")  # one lost pixel in an input frame
    frames[1, -1, 4:6, 1] = float("nan")  # lost pixels in the last frame: targets only
    return frames


def _hand_loss(model: torch.nn.Module, frames: torch.Tensor, mask: torch.Tensor, values: ValuesConfig,
               fill_missing_target: float = 0.0) -> torch.Tensor:
    """The documented training loss, written out: standardise, feed a missing pixel as the training mean
    (0 standardised), and average the squared error of frames 1..T-1 over the pixels that have data.
    The target at a missing pixel is set to ``fill_missing_target``: it must not matter."""
    valid = ~torch.isnan(frames)
    z = torch.where(valid, (frames - values.mean) / values.std, torch.zeros((), dtype=frames.dtype))
    pred = model(z, mask)
    target = torch.where(valid[:, 1:], z[:, 1:], torch.full((), fill_missing_target, dtype=frames.dtype))
    keep = valid[:, 1:].to(frames.dtype)
    return ((pred - target) ** 2 * keep).sum() / keep.sum()


def _grads(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    names, params = zip(*model.named_parameters(), strict=True)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for n, p, g in zip(names, params, grads, strict=True)}


def _sgd_update(model: torch.nn.Module, frames: torch.Tensor, mask: torch.Tensor, **kwargs):
    """``train_step`` with plain SGD at learning rate 1: returns its result and minus the parameter change."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = train_step(model, torch.optim.SGD(model.parameters(), lr=1.0), frames, mask, **kwargs)
    return res, {n: before[n] - p.detach() for n, p in model.named_parameters()}


def test_train_step_loss_and_update_are_the_masked_mse_on_standardised_values():
    """The returned MSE is the mean over the pixels with data only, and the update is its gradient."""
    frames = _rain()
    mask = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    model = _model()
    ref = copy.deepcopy(model)
    loss = _hand_loss(ref, frames, mask, RAIN)
    want = _grads(ref, loss)
    res, update = _sgd_update(model, frames, mask, values=RAIN)
    assert np.isfinite(res.mse)
    assert res.mse == pytest.approx(float(loss.detach()), rel=1e-6)
    assert res.loss == pytest.approx(float(loss.detach()), rel=1e-6)  # beta 0: the loss is the MSE
    moved = 0
    for name, g in want.items():
        torch.testing.assert_close(update[name], g, rtol=1e-4, atol=1e-9, msg=name)
        moved += int(g.abs().sum() > 0)
    assert moved >= len(want) - 1  # every weight but the adapter (decoupling term only) learns


def test_a_missing_pixel_has_no_influence_on_the_update():
    """A missing target gives no gradient: whatever stands in for it, the update is the same; and a missing
    pixel is not a pixel at the training mean (that one is a target the model is pulled towards)."""
    frames = _rain()
    mask = torch.ones(2, T - 2, dtype=torch.float64)
    ref_a, ref_b = _model(), _model()
    g_a = _grads(ref_a, _hand_loss(ref_a, frames, mask, RAIN, fill_missing_target=0.0))
    g_b = _grads(ref_b, _hand_loss(ref_b, frames, mask, RAIN, fill_missing_target=50.0))
    _, update = _sgd_update(_model(), frames, mask, values=RAIN)
    for name in g_a:
        torch.testing.assert_close(g_a[name], g_b[name], rtol=1e-10, atol=1e-12, msg=name)
        torch.testing.assert_close(update[name], g_a[name], rtol=1e-4, atol=1e-9, msg=name)

    # The last frame is only ever a target: its missing pixels change the update only through the loss.
    at_mean = frames.clone()
    at_mean[1, -1, 4:6, 1] = RAIN.mean  # observed, and equal to the training mean
    _, update_mean = _sgd_update(_model(), at_mean, mask, values=RAIN)
    ref = _model()
    torch.testing.assert_close(update_mean["conv_last.weight"],
                               _grads(ref, _hand_loss(ref, at_mean, mask, RAIN))["conv_last.weight"],
                               rtol=1e-4, atol=1e-9)
    assert not torch.allclose(update_mean["conv_last.weight"], update["conv_last.weight"], rtol=1e-6, atol=1e-9)


def test_reverse_input_step_masks_the_reversed_clip_too():
    """With ``reverse_input`` the second SGD step follows the masked loss of the time-reversed clip at the
    weights the first step left; the returned MSE is the mean of both steps' MSEs."""
    frames = _rain()
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0]], dtype=torch.float64)
    ref = _model()
    loss1 = _hand_loss(ref, frames, mask, RAIN)
    g1 = _grads(ref, loss1)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p -= g1[name]
    flipped = torch.flip(frames, dims=[1])
    loss2 = _hand_loss(ref, flipped, mask, RAIN)
    g2 = _grads(ref, loss2)
    model = _model()
    res, update = _sgd_update(model, frames, mask, values=RAIN, reverse_input=True)
    assert res.mse == pytest.approx((float(loss1.detach()) + float(loss2.detach())) / 2, rel=1e-6)
    for name in g1:
        torch.testing.assert_close(update[name], g1[name] + g2[name], rtol=1e-4, atol=1e-9, msg=name)


# ---------------------------------------------------------------------------------------------
# Evaluation forecasts from the context alone


@pytest.mark.parametrize("values", [ValuesConfig(), RAIN], ids=["image", "field"])
def test_eval_step_is_the_models_forecast_of_the_context(values):
    """``eval_step`` = ``from_model(model.forecast(to_model(context)))``; the frames after the context do
    not reach it (any change of the truth leaves the forecast as it was)."""
    model = _model(dtype=torch.float32)
    frames = torch.rand(3, T, H, W, 1) if values.kind == "image" else _rain(3, dtype=torch.float32)
    got = eval_step(model, frames, T_IN, values=values)
    with torch.no_grad():
        want = from_model(model.forecast(to_model(frames[:, :T_IN], values), T - T_IN), values)
    assert got.shape == (3, T - T_IN, H, W, 1) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert float(got.std()) > 0  # a forecast that varies: a leak would show

    other = frames.clone()
    other[:, T_IN:] = torch.rand(3, T - T_IN, H, W, 1) * (1.0 if values.kind == "image" else 30.0)
    torch.testing.assert_close(eval_step(model, other, T_IN, values=values), got, rtol=0, atol=0)
    blank = frames.clone()
    blank[:, T_IN:] = 0.0
    torch.testing.assert_close(eval_step(model, blank, T_IN, values=values), got, rtol=0, atol=0)


def test_the_forecast_feeds_back_its_own_predictions():
    """``model.forecast`` is the autoregressive rollout: fed the context followed by its own forecast as if
    they were true frames, the model predicts that same forecast again (nothing else enters)."""
    model = _model()
    context = torch.rand(2, T_IN, H, W, 1, dtype=torch.float64)
    horizon = T - T_IN
    out = model.forecast(context, horizon)
    with torch.no_grad():
        again = model(torch.cat([context, out], dim=1), torch.ones(2, T - 2, dtype=torch.float64))
    torch.testing.assert_close(again[:, T_IN - 1:], out, rtol=1e-10, atol=1e-12)
    # each lead time depends on the context only: a longer horizon starts with the shorter one
    torch.testing.assert_close(model.forecast(context, horizon + 2)[:, :horizon], out, rtol=1e-10, atol=1e-12)


def _mse_per_frame(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    """The project's MSE per lead time, written out: per clip the sum of squared errors over the pixels that
    have data, averaged over the clips whose frame has data."""
    ok = np.isfinite(truth)
    sq = np.where(ok, (pred.astype(np.float64) - np.nan_to_num(truth.astype(np.float64))) ** 2, 0.0)
    per_clip = sq.reshape(*sq.shape[:2], -1).sum(axis=2)
    has = ok.reshape(*ok.shape[:2], -1).any(axis=2)
    return [float(per_clip[has[:, j], j].mean()) for j in range(pred.shape[1])]


@pytest.mark.parametrize("values", [ValuesConfig(), RAIN], ids=["image", "field"])
def test_evaluate_scores_the_forecast_of_the_context_against_the_truth(values):
    """``evaluate``'s MSE per frame is that of ``model.forecast`` of each context against its truth, over
    every batch; persistence's is that of the last context frame repeated."""
    model = _model(dtype=torch.float32)
    if values.kind == "image":
        batches = [torch.rand(3, T, H, W, 1), torch.rand(2, T, H, W, 1)]
    else:
        batches = [_rain(3, seed=1, dtype=torch.float32), _rain(2, seed=2, dtype=torch.float32)]
    res = evaluate(model, batches, T_IN, values=values, with_ssim=False)
    clips = torch.cat(batches)
    with torch.no_grad():
        forecast = from_model(model.forecast(to_model(clips[:, :T_IN], values), T - T_IN), values).numpy()
    truth = clips[:, T_IN:].numpy()
    assert res["model"]["mse_per_frame"] == pytest.approx(_mse_per_frame(forecast, truth), rel=1e-5)
    last = np.nan_to_num(clips[:, T_IN - 1:T_IN].numpy(), nan=values.mean)
    persist = np.repeat(last, T - T_IN, axis=1)
    assert res["persistence"]["mse_per_frame"] == pytest.approx(_mse_per_frame(persist, truth), rel=1e-5)
    assert res["model"]["mse_per_frame"] != pytest.approx(res["persistence"]["mse_per_frame"], rel=1e-3)

    # the truth is read for the scores only: another truth, another score, but the same forecast
    changed = [b.clone() for b in batches]
    for b in changed:
        b[:, T_IN:] = b[:, T_IN:].flip(dims=[2])
    res2 = evaluate(model, changed, T_IN, values=values, with_ssim=False)
    truth2 = torch.cat(changed)[:, T_IN:].numpy()
    assert res2["model"]["mse_per_frame"] == pytest.approx(_mse_per_frame(forecast, truth2), rel=1e-5)


class _ArraySource:
    """A :class:`predrnn.data.batches.ClipSource` over in-memory clips (T, H, W, C), one split."""

    def __init__(self, clips: np.ndarray) -> None:
        self.clips = clips

    def open(self, split: str, *, length: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        return [self.clips[i, :length] for i in range(rank, len(self.clips), world_size)]


def _cfg(values: ValuesConfig) -> ExperimentConfig:
    base = ExperimentConfig().to_dict()
    cfg = ExperimentConfig.from_dict({**base, "data": {**base["data"], "img_height": H, "img_width": W,
                                                        "img_channel": 1, "input_length": T_IN, "total_length": T},
                                      "model": {**base["model"], "num_hidden": [WIDTH, WIDTH], "patch_size": P,
                                                "filter_size": 3, "layer_norm": False}})
    return replace(cfg, values=values)


def test_evaluate_split_and_forecast_array_forecast_the_context_as_the_model_does():
    """On one split ``evaluate_split`` scores ``model.forecast`` of each context; ``forecast_array`` of the
    contexts is that same forecast, in the data's units."""
    from predrnn.evaluation import evaluate_split
    from predrnn.predict import forecast_array

    model = _model(dtype=torch.float32)
    clips = _rain(5, seed=3, dtype=torch.float32)
    cfg = _cfg(RAIN)
    res = evaluate_split(model, cfg, _ArraySource(clips.numpy()), "test", batch=2, pools=[2], fss_scales=[1])
    with torch.no_grad():
        forecast = from_model(model.forecast(to_model(clips[:, :T_IN], RAIN), T - T_IN), RAIN).numpy()
    truth = clips[:, T_IN:].numpy()
    assert res["model"]["clips"] == 5
    assert res["model"]["mse_per_frame"] == pytest.approx(_mse_per_frame(forecast, truth), rel=1e-5)

    arr = forecast_array(model, cfg, clips[:, :T_IN].numpy(), T - T_IN, batch_size=2)
    np.testing.assert_allclose(arr, forecast, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(arr, eval_step(model, clips, T_IN, values=RAIN).numpy(), rtol=1e-6, atol=1e-6)
