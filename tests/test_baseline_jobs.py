"""The baselines where persistence was: ``predrnn evaluate`` reports them with ``score``'s keys, a baseline
forecast dataset scores the same through ``score --forecast``, and both refuse what does not apply in one line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from predrnn.cli import app
from predrnn.data import ingest, open_version

runner = CliRunner()

SCORE_KEYS = {"lead_times", "mse", "mae", "rmse", "csi", "pod", "far", "bias", "hss", "csi_pool", "fss", "csi_m"}


@pytest.fixture(scope="module")
def storms(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """Storm cells (rain in mm/h on 32 x 32 pixels, advected by a wind) and an untrained field model for them."""
    from predrnn.checkpoint import save_model_dir
    from predrnn.config import preset
    from predrnn.models import build_model
    from predrnn.values import from_dataset_attrs

    root = tmp_path_factory.mktemp("storms")
    uri = ingest("storm-cells", "", "storms", str(root / "data"), num_clips=30, frames=10, height=32, width=32, seed=4)
    v = open_version(uri)
    base = preset("quick")
    cfg = replace(base, values=from_dataset_attrs(v.attrs),
                  data=replace(base.data, img_height=32, img_width=32, input_length=5, total_length=10),
                  model=replace(base.model, num_hidden=[8, 8]))
    model_dir = save_model_dir(root / "model", build_model(cfg), cfg)
    return root, uri, model_dir


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def _flat(x) -> list[float]:
    """A nested score (dicts by threshold and window, lists by lead time) as one list, null as NaN."""
    if isinstance(x, dict):
        return [v for k in sorted(x) for v in _flat(x[k])]
    if isinstance(x, list):
        return [v for item in x for v in _flat(item)]
    return [float("nan") if x is None else float(x)]


def test_evaluate_reports_every_baseline_with_scores_keys_and_a_spectral_ratio(storms, monkeypatch):
    root, uri, model_dir = storms
    monkeypatch.setenv("PREDRNN_STATE_DIR", str(root / "state"))
    res = runner.invoke(app, ["evaluate", "--model", str(model_dir), "--data", uri, "--precision", "fp32"])
    assert res.exit_code == 0, res.output
    out = _last_json(res.stdout)
    assert list(out["baselines"]) == ["persistence", "extrapolation", "sprog"]
    for who in ("persistence", "extrapolation", "sprog"):
        card = out["baselines"][who]
        assert set(card) >= SCORE_KEYS, (who, set(card))
        assert card["lead_times"] == 5 and len(card["mse"]) == 5
        assert set(card["spectral_ratio"]) == {"8", "16", "32"}  # 64 px is longer than the 32-pixel domain
    assert out["persistence"] == out["baselines"]["persistence"]
    ext, pers = out["baselines"]["extrapolation"]["mse"], out["baselines"]["persistence"]["mse"]
    assert all(e < p for e, p in zip(ext[1:], pers[1:], strict=True))  # the cells move: advection wins
    res = runner.invoke(app, ["evaluate", "--model", str(model_dir), "--data", uri, "--baselines", "persistence"])
    assert res.exit_code == 0 and list(_last_json(res.stdout)["baselines"]) == ["persistence"]


def test_a_baseline_forecast_dataset_scores_the_same_as_evaluate(storms, monkeypatch):
    root, uri, model_dir = storms
    monkeypatch.setenv("PREDRNN_STATE_DIR", str(root / "state"))
    ev = runner.invoke(app, ["evaluate", "--model", str(model_dir), "--data", uri, "--baselines",
                             "persistence,extrapolation,sprog", "--precision", "fp32"])
    assert ev.exit_code == 0, ev.output
    cards = _last_json(ev.stdout)["baselines"]
    for name in ("extrapolation", "sprog"):
        fc = runner.invoke(app, ["forecast", "--model", name, "--data", uri, "--out", f"{root}/data/storms-{name}",
                                 "--horizon", "5", "--context", "5"])
        assert fc.exit_code == 0, fc.output
        version = open_version(fc.stdout.strip().splitlines()[-1])
        f = version.attrs["forecast"]
        assert f["baseline"] == name and f["model"] == name and f["context"] == 5 and f["horizon"] == 5
        sc = runner.invoke(app, ["score", "--forecast", version.uri])
        assert sc.exit_code == 0, sc.output
        scored, evaluated = _last_json(sc.stdout), cards[name]
        for key in ("mse", "mae", "rmse", "csi", "fss", "csi_m", "spectral_ratio"):
            assert _flat(scored[key]) == pytest.approx(_flat(evaluated[key]), rel=1e-6, abs=1e-9, nan_ok=True), (
                name, key)


@pytest.mark.parametrize("args, message", [
    (["--model", "sprog", "--horizon", "5", "--context", "2"], "sprog: an AR(2) model needs at least 3 context frames"),
    (["--model", "extrapolation"], "the extrapolation baseline has no training horizon: give --horizon"),
    (["--model", "extrapolation", "--horizon", "8", "--context", "5"], "do not fit clips of 10 frames"),
])
def test_baseline_forecasts_refuse_in_one_line(storms, monkeypatch, args, message):
    root, uri, _ = storms
    monkeypatch.setenv("PREDRNN_STATE_DIR", str(root / "state"))
    res = runner.invoke(app, ["forecast", *args, "--data", uri, "--out", f"{root}/data/storms-bad"])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1 and message in res.stderr, res.output


def test_baselines_that_do_not_apply_are_refused_in_one_line(tmp_path, monkeypatch):
    from predrnn.checkpoint import save_model_dir
    from predrnn.config import preset
    from predrnn.models import build_model

    monkeypatch.setenv("PREDRNN_STATE_DIR", str(tmp_path / "state"))
    uri = ingest("moving-digits", "", "digits", str(tmp_path / "data"), num_clips=6, frames=20, height=64, width=64)
    cfg = preset("quick")
    model_dir = save_model_dir(tmp_path / "model", build_model(cfg), cfg)
    res = runner.invoke(app, ["evaluate", "--model", str(model_dir), "--data", uri, "--baselines", "extrapolation"])
    assert res.exit_code == 2 and res.stderr.strip().splitlines() == [
        "error: baseline(s) extrapolation do not apply to image data (8-bit intensities); these do: persistence"]
    res = runner.invoke(app, ["evaluate", "--model", str(model_dir), "--data", uri])  # default: what applies
    assert res.exit_code == 0, res.output
    assert list(_last_json(res.stdout)["baselines"]) == ["persistence"]
    res = runner.invoke(app, ["forecast", "--model", "sprog", "--data", uri, "--out", f"{tmp_path}/data/fc",
                              "--horizon", "10"])
    assert res.exit_code == 2 and "the sprog baseline does not apply" in res.stderr and "images" in res.stderr
