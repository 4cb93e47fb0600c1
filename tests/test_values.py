"""Values in the data's units: the model-side transform, masked loss, metrics over valid pixels, inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from predrnn.config import ValuesConfig
from predrnn.losses import prediction_loss
from predrnn.metrics import MetricAccumulator, frame_metrics, scorecard
from predrnn.models.predrnn import PredRNN
from predrnn.steps import eval_step, evaluate, persistence_forecast, train_step
from predrnn.values import ValuesError, context_in_units, from_model, to_model

RAIN = ValuesConfig(kind="field", units="mm/h", mean=3.0, std=2.0, valid_min=0.0, thresholds=[0.5, 2.0])


def test_field_transform_round_trip_and_clipping():
    x = torch.tensor([[0.0, 3.0, 7.0, float("nan")]])
    z = to_model(x, RAIN)
    assert z.tolist() == [[-1.5, 0.0, 2.0, 0.0]]  # standardised; no data enters as the training mean
    assert from_model(torch.tensor([[-1.5, 0.0, 2.0, -4.0]]), RAIN).tolist() == [[0.0, 3.0, 7.0, 0.0]]  # >= 0 mm/h
    unbounded = ValuesConfig(kind="field", units="K", mean=280.0, std=10.0)
    assert from_model(torch.tensor([-50.0]), unbounded).item() == pytest.approx(-220.0)  # never clipped to [0, 1]
    image = ValuesConfig()
    assert to_model(torch.tensor([0.25]), image).item() == 0.25
    assert from_model(torch.tensor([-0.2, 1.7]), image).tolist() == [0.0, 1.0]


def test_masked_loss_ignores_missing_pixels():
    pred = torch.zeros(1, 2, 2, 2, 1, requires_grad=True)
    target = torch.ones(1, 2, 2, 2, 1)
    valid = torch.ones_like(target, dtype=torch.bool)
    assert prediction_loss(pred, target, valid).item() == prediction_loss(pred, target).item() == 1.0
    valid[0, 0, 0, 0, 0] = False
    target[0, 0, 0, 0, 0] = 100.0  # a wild value where there is no data must not count
    loss = prediction_loss(pred, target, valid)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert pred.grad is not None and pred.grad[0, 0, 0, 0, 0] == 0 and pred.grad[0, 1, 0, 0, 0] != 0


def _tiny_model() -> PredRNN:
    torch.manual_seed(0)
    return PredRNN(num_hidden=[4], img_channel=1, patch_size=2, filter_size=3, img_height=8, img_width=8)


def test_train_step_on_a_field_with_no_data_pixels_stays_finite():
    model = _tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    frames = torch.rand(2, 6, 8, 8, 1) * 20.0  # mm/h
    frames[:, :, :2, :2] = float("nan")  # outside the radar's range
    res = train_step(model, opt, frames, torch.ones(2, 4), beta=0.1, values=RAIN, reverse_input=True)
    assert np.isfinite([res.loss, res.mse, res.decouple]).all()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    pred = eval_step(model, frames, 3, values=RAIN)
    assert pred.shape == (2, 3, 8, 8, 1) and torch.isfinite(pred).all() and pred.min() >= 0.0


def test_static_field_persistence_scores_exactly_zero():
    rng = np.random.default_rng(0)
    frame = rng.gamma(1.5, 6.0, (3, 1, 8, 8, 1)).astype(np.float32)
    frame[:, :, 0, 0] = np.nan
    clips = torch.from_numpy(np.repeat(frame, 6, axis=1))  # mm/h, never changes
    res = evaluate(_tiny_model(), [clips], 3, values=RAIN, thresholds=[0.5, 2.0], pools=[4], fss_scales=[1, 3])
    p = res["persistence"]
    assert p["mse_per_frame"] == [0.0, 0.0, 0.0] and p["mae"] == 0.0 and p["rmse"] == 0.0
    assert p["csi"]["0.5"] == [1.0, 1.0, 1.0] and p["fss"]["2"]["3"] == [1.0, 1.0, 1.0]
    assert "psnr" not in p and "ssim" not in p  # no data range for a field: left out, not faked
    assert p["valid_pixels_per_frame"] == [3 * 63] * 3  # the no-data pixel is not scored
    # the model's forecast is in mm/h: its error is on the data's scale, not a standardised one
    m = res["model"]
    assert m["rmse"] > 1.0 and m["mse"] > 0.0
    pers = persistence_forecast(clips[:, :3], 3, RAIN)
    assert pers[0, 0, 0, 0, 0].item() == pytest.approx(RAIN.mean)  # no data in the last frame -> the mean


def test_field_metrics_sum_over_valid_pixels_only():
    truth = np.full((1, 1, 2, 2, 1), 4.0)
    pred = np.array([2.0, 4.0, 5.0, 100.0]).reshape(1, 1, 2, 2, 1)
    truth[0, 0, 1, 1, 0] = np.nan  # the 100 mm/h there is not an error: nothing was observed
    m = frame_metrics(pred, truth, image=False)
    assert m["mse"][0, 0] == 4.0 + 0.0 + 1.0 and m["mae"][0, 0] == 3.0 and m["count"][0, 0] == 3
    acc = MetricAccumulator(1, values=RAIN)
    acc.update(pred, truth)
    out = acc.compute()
    assert out["rmse_per_frame"] == [pytest.approx(np.sqrt(5.0 / 3.0))]
    card = scorecard(out)
    assert card == {"lead_times": 1, "mse": [5.0], "mae": [3.0], "rmse": [pytest.approx(np.sqrt(5 / 3))]}


def test_image_metrics_are_unchanged():
    rng = np.random.default_rng(1)
    truth = rng.random((2, 2, 8, 8, 1))
    pred = truth + 0.3
    m = frame_metrics(pred, truth)  # images: clipped to [0, 1], the authors' per-frame sums
    assert m["mse"][0, 0] == pytest.approx(((np.clip(pred, 0, 1)[0, 0] - truth[0, 0]) ** 2).sum())
    assert "psnr" in m and "ssim" in m


def test_context_in_units_accepts_the_data_and_names_what_is_wrong():
    x = np.array([[[[[0.0], [12.5]]]]], np.float32)
    assert context_in_units(x, RAIN).dtype == np.float32
    with_nan = x.copy()
    with_nan[..., 0, 0, 0] = np.nan
    assert np.isnan(context_in_units(with_nan, RAIN)).sum() == 1  # no data is allowed for fields
    with pytest.raises(ValuesError, match=r"2 of 2 context values lie outside the model's valid range "
                                          r"\(mm/h, valid >= 0\)"):
        context_in_units(-x - 1, RAIN)
    standardised = np.array([[[[[-0.4], [2.5], [17.0], [-0.01]]]]], np.float32)  # z-scores: mostly >= 0
    with pytest.raises(ValuesError, match="2 of 4 context values .* is it standardised or in other units"):
        context_in_units(standardised, RAIN)
    with pytest.raises(ValuesError, match="inf"):
        context_in_units(np.full((1, 1, 1, 2, 1), np.inf, np.float32), RAIN)
    with pytest.raises(ValuesError, match="no value at all"):
        context_in_units(np.full((1, 1, 1, 2, 1), np.nan, np.float32), RAIN)
    image = ValuesConfig()
    assert context_in_units(np.array([[[[[255]]]]], np.uint8), image).item() == 1.0
    assert context_in_units(np.array([[[[[0.5]]]]], np.float64), image).dtype == np.float32
    with pytest.raises(ValuesError, match=r"must lie in \[0, 1\]"):
        context_in_units(np.array([[[[[3.0]]]]]), image)


def test_a_training_step_standardises_each_variable_on_its_own():
    """Two variables in K and m s-1: the loss sees each channel as (x - mean) / std of its own."""
    import numpy as np
    import torch

    from predrnn.config import ChannelValues, ExperimentConfig, ValuesConfig
    from predrnn.models import build_model
    from predrnn.steps import train_step

    values = ValuesConfig(kind="field", units="K, m s-1", channels=(
        ChannelValues(name="t2m", units="K", mean=280.0, std=3.0),
        ChannelValues(name="u10", units="m s-1", mean=2.0, std=4.0)))
    cfg = ExperimentConfig.from_dict({**ExperimentConfig().to_dict(),
                                      "data": {"img_height": 8, "img_width": 8, "img_channel": 2,
                                               "input_length": 2, "total_length": 4},
                                      "model": {**ExperimentConfig().to_dict()["model"], "num_hidden": [4],
                                                "patch_size": 2}})
    torch.manual_seed(0)
    g = np.random.default_rng(0)
    frames = torch.from_numpy(np.stack([280 + 3 * g.standard_normal((2, 4, 8, 8)),
                                        2 + 4 * g.standard_normal((2, 4, 8, 8))], -1).astype(np.float32))
    frames[0, 1, 0, 0, 1] = float("nan")
    net = build_model(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    res = train_step(net, opt, frames, torch.zeros(2, 2), values=values)
    # an untrained model forecasts about 0 in standardised units: the loss is about 1 (unit variance per
    # channel), not the 280^2 of raw kelvin nor a mix of one mean/std over both variables
    assert 0.3 < float(res.mse) < 3.0
