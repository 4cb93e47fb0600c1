"""``predrnn score``: any forecast against its truth, in the data's units, one JSON line last."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from predrnn.cli import app

runner = CliRunner()
KEYS = {"lead_times", "mse", "mae", "rmse", "csi", "pod", "far", "bias", "hss", "csi_pool", "fss", "csi_m"}


def _score(tmp_path: Path, forecast: np.ndarray, truth: np.ndarray, *args: str) -> tuple[int, str]:
    np.save(tmp_path / "f.npy", forecast)
    np.save(tmp_path / "t.npy", truth)
    res = runner.invoke(app, ["score", "--forecast", str(tmp_path / "f.npy"), "--truth", str(tmp_path / "t.npy"),
                              *args])
    return res.exit_code, res.output


def test_score_golden_values_in_units(tmp_path: Path):
    # one clip, two lead times of a 2x2 rain field in mm/h
    truth = np.array([[[[0.0, 2.0], [5.0, 1.0]], [[3.0, 3.0], [0.0, 0.0]]]], np.float32)[..., None]
    fcst = np.array([[[[0.5, 2.0], [4.0, 0.0]], [[3.0, 0.0], [2.0, 0.0]]]], np.float32)[..., None]
    code, out = _score(tmp_path, fcst, truth, "--thresholds", "0.5,2", "--pool", "2", "--fss-scales", "1,3")
    assert code == 0, out
    card = json.loads(out.strip().splitlines()[-1])
    assert set(card) == KEYS and card["lead_times"] == 2
    assert card["mse"] == [0.25 + 0 + 1 + 1, 0 + 9 + 4 + 0]  # per frame: summed over the pixels
    assert card["mae"] == [0.5 + 0 + 1 + 1, 0 + 3 + 2 + 0]
    assert card["rmse"] == [pytest.approx(np.sqrt(2.25 / 4)), pytest.approx(np.sqrt(13 / 4))]
    # lead 1, threshold 0.5 (>=): forecast events 0.5, 2, 4; observed 2, 5, 1 -> a=2 (2, 5/4), b=1, c=1 (1/0)
    assert list(card["csi"]) == ["0.5", "2"]  # keys as written
    assert card["csi"]["0.5"][0] == pytest.approx(2 / 4) and card["pod"]["0.5"][0] == pytest.approx(2 / 3)
    assert card["far"]["0.5"][0] == pytest.approx(1 / 3) and card["bias"]["0.5"][0] == pytest.approx(1.0)
    # threshold 2, lead 1: forecast 2, 4 (events); observed 2, 5 -> perfect
    assert card["csi"]["2"][0] == 1.0 and card["hss"]["2"][0] == 1.0
    # lead 2, threshold 2: forecast events 3, 2 at (0,0), (1,0); observed 3, 3 at (0,0), (0,1) -> a=1, b=1, c=1
    assert card["csi"]["2"][1] == pytest.approx(1 / 3)
    assert card["csi_pool"]["2"]["2"] == [1.0, 1.0]  # one 2x2 block: max 4 vs 5, 3 vs 3
    assert card["fss"]["2"]["1"][0] == 1.0
    assert card["csi_m"][1] == pytest.approx((card["csi"]["0.5"][1] + card["csi"]["2"][1]) / 2)


def test_perfect_forecast_scores_zero_and_mask_and_nan_are_not_scored(tmp_path: Path):
    rng = np.random.default_rng(0)
    truth = rng.gamma(1.0, 4.0, (3, 2, 8, 8, 1)).astype(np.float32)
    code, out = _score(tmp_path, truth, truth, "--units", "mm/h")
    card = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and card["mse"] == [0.0, 0.0] and card["rmse"] == [0.0, 0.0]
    assert list(card["csi"]) == ["0.5", "2", "5", "10", "30"]  # HKO-7's rain thresholds for mm/h
    fcst = truth.copy()
    fcst[:, :, 0, 0] = 1000.0  # wrong where the mask says "not scored" and where the truth has no data
    truth_nan = truth.copy()
    truth_nan[:, :, 1, 1] = np.nan
    fcst[:, :, 1, 1] = 1000.0
    mask = np.ones((8, 8, 1), bool)
    mask[0, 0] = False
    np.save(tmp_path / "m.npy", mask)
    code, out = _score(tmp_path, fcst, truth_nan, "--thresholds", "2", "--mask", str(tmp_path / "m.npy"))
    card = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and card["mse"] == [0.0, 0.0] and card["csi"]["2"] == [1.0, 1.0]


@pytest.mark.parametrize(("args", "shape_f", "message"), [
    ((), (2, 3, 4, 4, 1), "must both be (clips, N, H, W, C) of one shape"),
    (("--thresholds", "0.5,heavy"), (2, 3, 4, 4, 1), "--thresholds takes a comma-separated list of numbers"),
    (("--fss-scales", "2,4"), (2, 3, 4, 4, 1), "--fss-scales must be odd window sizes"),
])
def test_bad_input_is_one_line_exit_2(tmp_path: Path, args, shape_f, message):
    truth = np.zeros((2, 3, 4, 4, 1) if not args else (2, 3, 4, 4, 1), np.float32)
    fcst = np.zeros(shape_f if args else (2, 2, 4, 4, 1), np.float32)
    code, out = _score(tmp_path, fcst, truth, *args)
    assert code == 2 and message in out and out.strip().count("\n") == 0, out


def test_mask_that_does_not_fit_is_refused(tmp_path: Path):
    np.save(tmp_path / "m.npy", np.ones((3, 3), bool))
    x = np.zeros((1, 2, 4, 4, 1), np.float32)
    code, out = _score(tmp_path, x, x, "--mask", str(tmp_path / "m.npy"))
    assert code == 2 and "does not broadcast" in out


def test_a_radar_range_mask_of_h_by_w_is_accepted(tmp_path: Path):
    truth = np.ones((1, 2, 4, 4, 1), np.float32)
    fcst = truth.copy()
    fcst[..., 0, 0, :] = 50.0  # outside the radar's range: not scored
    mask = np.ones((4, 4), bool)
    mask[0, 0] = False
    np.save(tmp_path / "m.npy", mask)
    code, out = _score(tmp_path, fcst, truth, "--mask", str(tmp_path / "m.npy"))
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["mse"] == [0.0, 0.0], out
    assert "no thresholds: CSI/POD/FAR/bias/HSS/FSS left out" in out


def test_a_missing_forecast_is_not_a_perfect_one(tmp_path: Path):
    truth = np.ones((1, 2, 4, 4, 1), np.float32)
    fcst = truth.copy()
    fcst[0, 1, 2, 2, 0] = np.nan  # observed there, but not forecast
    code, out = _score(tmp_path, fcst, truth, "--thresholds", "0.5")
    assert code == 2 and "no finite value at 1 pixels where the truth has one" in out, out
    code, out = _score(tmp_path, truth, np.where(fcst == fcst, truth, np.nan), "--image")
    assert code == 2 and "--image data has no missing values" in out, out
