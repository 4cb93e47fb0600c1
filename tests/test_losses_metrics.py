import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from predrnn.losses import decoupling_loss, prediction_loss, total_loss
from predrnn.metrics import MetricAccumulator, frame_metrics, to_uint8


def test_decoupling_loss_bounds_and_value():
    adapter = torch.nn.Conv2d(3, 3, 1, bias=False)
    torch.nn.init.eye_(adapter.weight.view(3, 3))
    d = torch.rand(2, 3, 4, 4) + 0.1
    assert decoupling_loss(adapter, [d], [d]).item() == pytest.approx(1.0)  # identical: |cos| = 1
    assert decoupling_loss(adapter, [d], [-2 * d]).item() == pytest.approx(1.0)  # absolute value
    a = torch.zeros(1, 3, 2, 2)
    b = torch.zeros(1, 3, 2, 2)
    a[..., 0, 0] = 1
    b[..., 1, 1] = 1
    assert decoupling_loss(adapter, [a], [b]).item() == pytest.approx(0.0)  # orthogonal
    # mean over terms: one identical pair and one orthogonal pair average to 0.5
    assert decoupling_loss(adapter, [a, a], [a, b]).item() == pytest.approx(0.5)


def test_total_loss():
    mse = prediction_loss(torch.ones(2, 3), torch.zeros(2, 3))
    assert mse.item() == 1.0
    assert total_loss(mse, torch.tensor(0.5), 0.1).item() == pytest.approx(1.05)
    assert total_loss(mse, None, 0.1).item() == 1.0


def test_metric_conventions():
    rng = np.random.default_rng(0)
    truth = rng.random((3, 2, 16, 16, 1))
    pred = np.clip(truth + rng.normal(0, 0.1, truth.shape), -0.2, 1.2)
    m = frame_metrics(pred, truth)
    clipped = np.clip(pred, 0, 1)
    # per-frame MSE: summed over the pixels of a frame (the paper's convention)
    assert m["mse"][1, 0] == pytest.approx(((clipped[1, 0] - truth[1, 0]) ** 2).sum())
    assert m["mae"][1, 0] == pytest.approx(np.abs(clipped[1, 0] - truth[1, 0]).sum())
    assert m["mse_pixel"][1, 0] == pytest.approx(((clipped[1, 0] - truth[1, 0]) ** 2).mean())
    p8, t8 = to_uint8(clipped[1, 0]), to_uint8(truth[1, 0])
    mse8 = ((p8.astype(float) - t8) ** 2).mean()
    assert m["psnr"][1, 0] == pytest.approx(10 * math.log10(255**2 / mse8))
    assert m["ssim"][1, 0] == pytest.approx(structural_similarity(p8[..., 0], t8[..., 0], win_size=7, data_range=255))
    assert to_uint8(np.array([0.5 / 255 + 1e-9, 254.6 / 255])).tolist() == [1, 255]  # rounding, not truncation


def test_accumulator_means_per_lead_time():
    acc = MetricAccumulator(2, with_ssim=False)
    truth = np.zeros((4, 2, 4, 4, 1))
    pred = np.zeros_like(truth)
    pred[:, 1] = 0.5  # error only at lead time 2
    acc.update(pred[:2], truth[:2])
    acc.update(pred[2:], truth[2:])
    out = acc.compute()
    assert out["clips"] == 4
    assert out["mse_per_frame"] == [0.0, pytest.approx(16 * 0.25)]
    assert out["mse"] == pytest.approx(2.0)
    assert out["psnr_per_frame"][0] == 100.0  # identical frames capped


def test_a_lead_time_without_observations_has_no_score_and_does_not_move_the_mean():
    """Radar outage (all-NaN frames, OpenSTL#137): never scored as a perfect forecast."""
    from predrnn.config import ValuesConfig
    from predrnn.metrics import MetricAccumulator

    field = ValuesConfig(kind="field", units="mm h-1")
    truth = np.empty((2, 3, 2, 2, 1))
    truth[:, 0] = 1.0
    truth[:, 1] = np.nan  # lead time 2: no observation anywhere
    truth[:, 2] = 2.0
    truth[0, 2] = np.nan  # lead time 3: clip 0 has none, clip 1 has four pixels
    acc = MetricAccumulator(3, values=field, thresholds=[0.5], fss_scales=[1])
    acc.update(np.zeros_like(truth), truth)
    out = acc.compute()
    assert out["mse_per_frame"] == [4.0, None, 16.0]  # per frame: 4 pixels x 1^2, -, 4 x 2^2 (clip 1 only)
    assert out["mae_per_frame"] == [4.0, None, 8.0]
    assert out["rmse_per_frame"] == [1.0, None, 2.0]
    assert (out["mse"], out["mae"], out["rmse"]) == (10.0, 6.0, 1.5)
    assert out["valid_pixels_per_frame"] == [8, 0, 4] and out["frames_per_lead_time"] == [2, 0, 1]
    assert out["lead_times_without_data"] == [2]
    assert out["csi"]["0.5"] == [0.0, None, 0.0] and out["fss"]["0.5"]["1"][1] is None
    from predrnn.evaluation import lead_time_table

    table = lead_time_table({"model": out, "persistence": out}, units="mm h-1")
    assert "lead time(s) 2: no observation in any clip" in table and "\n   2           n/a" in table


def test_several_variables_are_scored_each_in_its_own_units():
    from predrnn.config import ChannelValues, ValuesConfig
    from predrnn.metrics import MetricAccumulator

    values = ValuesConfig(kind="field", units="K, m s-1", channels=(
        ChannelValues(name="t2m", units="K", mean=280.0, std=2.0),
        ChannelValues(name="u10", units="m s-1", mean=0.0, std=4.0, thresholds=(5.0,))))
    truth = np.zeros((1, 2, 2, 2, 2))
    truth[..., 0] = 282.0
    truth[..., 1] = 8.0
    pred = truth.copy()
    pred[..., 0] += 2.0  # 1 std off in K
    pred[..., 1] -= 4.0  # 1 std off in m/s
    acc = MetricAccumulator(2, values=values)
    acc.update(pred, truth)
    out = acc.compute()
    assert out["channels"]["t2m"]["mse_per_frame"] == [16.0, 16.0]  # 4 pixels x (2 K)^2
    assert out["channels"]["u10"]["mse_per_frame"] == [64.0, 64.0]  # 4 pixels x (4 m/s)^2
    assert out["channels"]["u10"]["csi"]["5"] == [0.0, 0.0] and "csi" not in out["channels"]["t2m"]
    assert out["units"] == "standardised" and out["mse_per_frame"] == [8.0, 8.0]  # 8 values x 1^2
    from predrnn.evaluation import lead_time_table
    from predrnn.metrics import scorecard
    from predrnn.scorecard import markdown

    table = lead_time_table({"model": out, "persistence": out}, units="standardised",
                            channel_units={"t2m": "K", "u10": "m s-1"})
    assert "variable u10:\nvalues in m s-1:" in table and "   1       16.0000" in table
    assert table.startswith("standardised values")
    card = scorecard(out)
    assert card["channels"]["u10"]["mse"] == [64.0, 64.0]
    md = markdown({"model": card}, channel_units={"t2m": "K", "u10": "m s-1"})
    assert "### u10" in md and "MSE/frame (m s-1)²" in md and "MSE/frame (standardised)²" in md
