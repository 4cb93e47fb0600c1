"""`predrnn predict --input ARCHIVE`: the newest regular frames of a radar archive (one CF NetCDF file per
5-minute scan, as services ship it) in, a dated CF-1.10 nowcast out; what cannot make a sound forecast (a gap
in the context, too few frames, a stalled feed, another grid) is refused in one line before the model loads.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from typer.testing import CliRunner

from predrnn.cli import app
from predrnn.data import ingest, validate_dataset
from predrnn.data.sources.generators import write_scan_archive

START = np.datetime64("2026-06-01T00:00", "ns")
STEP = np.timedelta64(5, "m")


@pytest.fixture(scope="module")
def radar(tmp_path_factory) -> dict[str, Path]:
    """A 16x16 archive of 30 scans (scans 12-13 missing), ingested, and an untrained field model of it whose
    directory records the training data's place (as a training run's does)."""
    from predrnn.checkpoint import save_model_dir
    from predrnn.config import preset
    from predrnn.models import build_model
    from predrnn.values import from_dataset_attrs

    base = tmp_path_factory.mktemp("nowcast")
    write_scan_archive(base / "scans", steps=30, height=16, width=16, episode=30, missing=((12, 2),))
    uri = ingest("netcdf", str(base / "scans"), "radar", str(base / "data"), window=7, val_fraction=0.0,
                 test_fraction=0.0)
    from predrnn.data import open_version

    q = preset("quick")
    cfg = replace(q, values=from_dataset_attrs(open_version(uri).attrs),
                  data=replace(q.data, dataset=uri, img_height=16, img_width=16, input_length=4, total_length=7),
                  model=replace(q.model, num_hidden=(8,), filter_size=3, patch_size=4))
    info = validate_dataset(cfg, uri, need_val=False)
    model = save_model_dir(base / "model", build_model(cfg), cfg, extra={"iteration": 0, "dataset": info.to_dict()})
    return {"base": base, "scans": base / "scans", "model": model}


@pytest.fixture
def no_weights(monkeypatch):
    """Loading the weights fails the test: a refusal must come before it."""
    import predrnn.jobs.nowcast as jobs

    def refuse(*_a, **_k):
        raise AssertionError("the model was loaded before the archive was checked")

    monkeypatch.setattr(jobs, "loaded_model", refuse)


def predict(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["predict", *args, "--precision", "fp32"])
    return res.exit_code, res.output


def test_a_nowcast_from_the_scans_equals_the_forecast_of_the_same_frames_and_carries_their_times(radar, tmp_path):
    at = START + STEP * 20  # scans 17..20 are the context
    code, out = predict("--model", str(radar["model"]), "--input", str(radar["scans"]), "--at",
                        str(at.astype("datetime64[m]")), "--horizon", "3", "--output", str(tmp_path / "now.nc"))
    assert code == 0, out
    # the equivalent array: the same four scans as xarray decodes them
    files = [radar["scans"] / f"RAD_{pd.Timestamp(START + STEP * k):%Y%m%d_%H%M}.nc" for k in range(17, 21)]
    ctx = np.stack([xr.open_dataset(f)["rainfall_rate"].values[0] for f in files])[None, ..., None]
    np.save(tmp_path / "ctx.npy", ctx.astype(np.float32))
    code, out = predict("--model", str(radar["model"]), "--input", str(tmp_path / "ctx.npy"), "--horizon", "3",
                        "--output", str(tmp_path / "arr.npy"))
    assert code == 0, out
    with xr.open_dataset(tmp_path / "now.nc", decode_timedelta=True) as ds:
        assert ds["rainfall_rate"].dims == ("reference_time", "lead_time", "y", "x")
        got, want = ds["rainfall_rate"].values[..., None], np.load(tmp_path / "arr.npy")
        outside = np.isnan(ctx[0]).all(axis=0)  # beyond the radar's range in every scan: no forecast there
        assert 0 < outside.sum() < outside.size and np.isnan(got[:, :, outside]).all()
        assert not np.isnan(got[:, :, ~outside]).any() and not np.isnan(want).any()
        np.testing.assert_array_equal(got[:, :, ~outside], want[:, :, ~outside])
        assert ds["reference_time"].values[0] == at
        np.testing.assert_array_equal(ds["valid_time"].values[0], at + STEP * np.arange(1, 4))
        assert ds["rainfall_rate"].attrs["units"] == "mm h-1"
        assert ds["projection"].attrs["grid_mapping_name"] == "polar_stereographic"
        with xr.open_dataset(files[0]) as scan:
            np.testing.assert_array_equal(ds["x"].values, scan["x"].values)
        assert ds.attrs["predrnn_model"] == "model" and len(ds.attrs["predrnn_weights_sha256"]) == 64
        assert ds.attrs["predrnn_context"] == "2026-06-01T01:25:00..2026-06-01T01:40:00"


def test_a_forecast_time_between_scans_takes_the_newest_frame_before_it(radar, tmp_path):
    code, out = predict("--model", str(radar["model"]), "--input", str(radar["scans"] / "RAD_*.nc"), "--at",
                        "2026-06-01T01:42:30+00:00", "--output", str(tmp_path / "now.nc"))
    assert code == 0, out
    with xr.open_dataset(tmp_path / "now.nc") as ds:
        assert ds["reference_time"].values[0] == START + STEP * 20
        assert ds.sizes["lead_time"] == 3  # the model's own horizon


@pytest.mark.parametrize(("at", "extra", "message"), [
    ("2026-06-01T01:10", [], "a gap inside the context 2026-06-01T00:45:00..2026-06-01T01:10:00: "
                            "2026-06-01T01:00:00, 2026-06-01T01:05:00 missing (frames every 5 min); a forecast "
                            "needs 4 regular frames: the first one after the gap is at 2026-06-01T01:25:00"),
    ("2026-06-01T00:10", [], "3 frame(s) up to 2026-06-01T00:10:00; the model's context is 4 frames every 5 min"),
    (None, [], "old at 20"),  # the current time: months after the archive's last scan
    ("2026-06-01T03:00", [], "the newest frame 2026-06-01T02:25:00 is 35 min old at 2026-06-01T03:00:00"),
])
def test_an_archive_that_cannot_make_a_sound_context_is_refused_with_the_times_named(radar, tmp_path, no_weights,
                                                                                      at, extra, message):
    args = ["--at", at] if at else []
    code, out = predict("--model", str(radar["model"]), "--input", str(radar["scans"]), *args, *extra,
                        "--output", str(tmp_path / "now.nc"))
    assert code == 2 and message in out, out
    assert len(out.strip().splitlines()) == 1 and not (tmp_path / "now.nc").exists()


def test_a_newest_frame_within_max_age_is_forecast(radar, tmp_path):
    for at, age in (("2026-06-01T02:30", "2"), ("2026-06-01T03:00", "7")):
        code, out = predict("--model", str(radar["model"]), "--input", str(radar["scans"]), "--at", at,
                            "--max-age", age, "--output", str(tmp_path / "now.nc"))
        assert code == 0, out
        with xr.open_dataset(tmp_path / "now.nc") as ds:
            assert ds["reference_time"].values[0] == START + STEP * 29


def _rewrite(scans: Path, dest: Path, change) -> Path:
    dest.mkdir()
    for f in sorted(scans.glob("*.nc"))[-6:]:
        with xr.open_dataset(f, mask_and_scale=False) as ds:
            change(ds.load()).to_netcdf(dest / f.name)
    return dest


@pytest.mark.parametrize(("change", "message"), [
    (lambda ds: ds.assign_coords(x=ds["x"] * 2), "the x coordinate runs -16000.0..14000.0 (spacing 2000.0); "
                                                 "the model's grid runs -8000.0..7000.0 (spacing 1000.0) m"),
    (lambda ds: ds.isel(y=slice(0, 14)), "frames of 14x16x1 (H x W x variables); the model takes HxWx1, H and W "
                                          "multiples of the patch size 4"),
    (lambda ds: ds.isel(y=slice(0, 12)), "the y coordinate runs -8000.0..3000.0"),
    (lambda ds: ds.rename(rainfall_rate="dbz"), "no variable 'rainfall_rate'"),
    (lambda ds: ds.assign(rainfall_rate=ds["rainfall_rate"].assign_attrs(units="mm/h")),
     "units mm/h; the model was trained on mm h-1"),
    (lambda ds: ds.assign(projection=ds["projection"].assign_attrs(standard_parallel=52.0)),
     "grid mapping standard_parallel = 52.0; the model's grid has 60.0"),
])
def test_another_grid_variable_or_units_is_refused_before_the_model_loads(radar, tmp_path, no_weights, change,
                                                                           message):
    other = _rewrite(radar["scans"], tmp_path / "other", change)
    code, out = predict("--model", str(radar["model"]), "--input", str(other), "--at", "2026-06-01T02:25",
                        "--output", str(tmp_path / "now.nc"))
    assert code == 2 and message in out, out
    assert not (tmp_path / "now.nc").exists()


def test_options_a_nowcast_cannot_take_are_refused_in_one_line(radar, tmp_path):
    code, out = predict("--model", str(radar["model"]), "--input", str(radar["scans"]), "--output",
                        str(tmp_path / "now.npy"))
    assert code == 2 and "name it .nc or .zarr" in out, out
    code, out = predict("--model", str(radar["model"]), "--input", str(radar["scans"]), "--at", "yesterday-ish",
                        "--output", str(tmp_path / "now.nc"))
    assert code == 2 and "--at must be a time" in out, out


def test_a_scheduled_nowcast_writes_each_reference_time_once_and_prunes_by_the_datas_clock(radar, tmp_path):
    """What the ``nowcast`` flow does every time step: one file per reference time, nothing when no new frame
    came, the older nowcasts pruned (never files it did not write), a picture and latency in its report."""
    from predrnn.jobs.nowcast import nowcast_report, prepare_nowcast, publish_nowcast, published_nowcasts

    out = tmp_path / "nowcasts"
    out.mkdir()
    (out / "README.txt").write_text("not a nowcast")

    def once(at: str, retention=None) -> dict:
        spec = prepare_nowcast(str(radar["model"]), str(radar["scans"]), at=at, precision="fp32")
        return publish_nowcast(spec, str(out), retention=retention) | {"spec": spec}

    first = once("2026-06-01T01:40")
    assert first["written"] and first["uri"] == f"{out}/20260601T014000Z.nc" and first["pruned"] == []
    with xr.open_dataset(first["uri"]) as ds:
        assert ds["reference_time"].values[0] == START + STEP * 20
    stamp = Path(first["uri"]).stat().st_mtime_ns
    again = once("2026-06-01T01:44")  # no scan since 01:40
    assert not again["written"] and again["result"] is None and Path(first["uri"]).stat().st_mtime_ns == stamp
    assert "Nothing was written" in nowcast_report(again["spec"], again, {})["markdown"]
    nxt = once("2026-06-01T01:45", retention=np.timedelta64(4, "m"))
    assert nxt["written"] and nxt["pruned"] == ["20260601T014000Z.nc"]
    assert list(published_nowcasts(str(out))) == [np.datetime64("2026-06-01T01:45:00")]
    assert sorted(p.name for p in out.iterdir()) == ["20260601T014500Z.nc", "README.txt"]
    report = nowcast_report(nxt["spec"], nxt, {"total": 2.0, "read": 0.5, "forecast": 1.2, "age": 30})
    assert "| reference time | 2026-06-01T01:45:00 |" in report["markdown"]
    assert "| valid times | 2026-06-01T01:50:00..2026-06-01T02:00:00 |" in report["markdown"]
    assert "| latency | 2.0 s" in report["markdown"] and "| pruned | 20260601T014000Z.nc |" in report["markdown"]
    import base64

    assert base64.b64decode(report["png_base64"])[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_from_an_archive_draws_its_gif_on_the_map(radar, tmp_path):
    code, out = predict("--model", str(radar["model"]), "--input", str(radar["scans"]), "--at", "2026-06-01T01:40",
                        "--output", str(tmp_path / "now.nc"), "--gif", str(tmp_path / "now.gif"))
    assert code == 0, out
    from PIL import Image

    with Image.open(tmp_path / "now.gif") as gif:
        assert gif.n_frames == 4 + 3  # the context, then the lead times
        assert gif.size[0] > 2 * 16 * 4  # drawn with axes and titles, not the bare pixel picture
