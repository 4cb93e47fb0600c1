"""Forecasts and datasets leave as CF-1.10 files: NetCDF and Zarr that xarray reopens with the source's grid,
valid times, units and grid mapping, and that the IOOS compliance checker (CF 1.10) finds no error in.

The source is what radar services ship: one packed CF NetCDF file per 5-minute scan with a projected grid
(:func:`predrnn.data.sources.generators.write_scan_archive`), plus a lat/lon field of two variables.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from predrnn.cli import app
from predrnn.data import ingest, open_version
from predrnn.data.sources.generators import write_scan_archive

STEP = np.timedelta64(5, "m")


@pytest.fixture(scope="module")
def radar(tmp_path_factory) -> dict[str, str]:
    """A 20x16 radar archive with a 15-minute outage, ingested as 6-frame windows; the test split forecast
    with persistence (3 context frames, 3 lead times) into a forecast dataset."""
    base = tmp_path_factory.mktemp("cf")
    write_scan_archive(base / "scans", steps=60, height=20, width=16, episode=30, missing=((25, 3),))
    root = str(base / "data")
    uri = ingest("netcdf", str(base / "scans"), "radar", root, window=6, stride=3, val_fraction=0.0,
                 test_fraction=0.3)
    from predrnn.jobs import prepare_forecast, run_forecast

    spec = prepare_forecast("persistence", uri, f"{root}/radar-persistence", horizon=3, context=3)
    fc = run_forecast(spec)["uri"]
    return {"base": str(base), "uri": uri, "forecast": fc}


def cf_errors(path: Path) -> list[str]:
    """The IOOS compliance checker's CF 1.10 errors (high-priority findings) for a NetCDF file."""
    out = subprocess.run([str(Path(sys.executable).parent / "compliance-checker"), "--test", "cf:1.10",
                          "--format", "json_new", "--output", "-", str(path)], capture_output=True, text=True,
                         check=False)
    report = json.loads(out.stdout[out.stdout.index("{"):])
    errors = []
    for result in report.values():
        for check in result["cf:1.10"]["high_priorities"]:
            errors += [f"{check['name']}: {m}" for m in check["msgs"]]
    return errors


def test_a_forecast_dataset_exports_as_cf_netcdf_with_the_sources_place_and_valid_times(radar, tmp_path):
    out = tmp_path / "fc.nc"
    res = CliRunner().invoke(app, ["data", "export", radar["forecast"], "--out", str(out), "--truth"])
    assert res.exit_code == 0, res.output
    fc, src = open_version(radar["forecast"]), open_version(radar["uri"])
    with xr.open_dataset(out, decode_timedelta=True) as ds:
        assert ds.attrs["Conventions"] == "CF-1.10"
        assert ds["rainfall_rate"].dims == ("reference_time", "lead_time", "y", "x")
        # the grid is the source's, with its CF attributes and grid mapping
        np.testing.assert_array_equal(ds["y"].values, src.grid_coords()["y"])
        np.testing.assert_array_equal(ds["x"].values, src.grid_coords()["x"])
        assert ds["y"].attrs["standard_name"] == "projection_y_coordinate" and ds["x"].attrs["units"] == "m"
        assert ds["rainfall_rate"].attrs["grid_mapping"] == "projection"
        assert ds["projection"].attrs["grid_mapping_name"] == "polar_stereographic"
        assert ds["rainfall_rate"].attrs["units"] == "mm h-1"
        assert ds["rainfall_rate"].attrs["standard_name"] == "rainfall_rate"
        # times: the reference time is the last context frame's, valid = reference + lead, every clip
        index = ds["source_clip"].values
        frames = src.valid_times(index)
        np.testing.assert_array_equal(ds["reference_time"].values, frames[:, 2])
        np.testing.assert_array_equal(ds["lead_time"].values, STEP * np.arange(1, 4))
        np.testing.assert_array_equal(ds["valid_time"].values,
                                      ds["reference_time"].values[:, None] + ds["lead_time"].values[None])
        np.testing.assert_array_equal(ds["valid_time"].values, frames[:, 3:6])  # the observed frames' times
        assert ds["reference_time"].attrs["standard_name"] == "forecast_reference_time"
        assert ds["lead_time"].attrs["standard_name"] == "forecast_period"
        # the numbers: the forecast dataset's, and the truth its source's frames at those valid times
        np.testing.assert_array_equal(ds["rainfall_rate"].values, fc.read(np.arange(len(fc)))[..., 0])
        np.testing.assert_array_equal(ds["rainfall_rate_observed"].values, src.read(index)[:, 3:6, ..., 0])
        assert ds.attrs["predrnn_baseline"] == "persistence"
        assert ds.attrs["predrnn_source_dataset"] == src.uri and ds.attrs["predrnn_version"]
        assert set(ds["split"].values) == {2}
    assert cf_errors(out) == []


def test_the_zarr_export_holds_the_same_and_an_ingested_version_keeps_every_frames_time(radar, tmp_path):
    zarr_out, nc = tmp_path / "fc.zarr", tmp_path / "fc.nc"
    for out in (zarr_out, nc):
        assert CliRunner().invoke(app, ["data", "export", radar["forecast"], "--out", str(out)]).exit_code == 0
    with xr.open_zarr(zarr_out, decode_timedelta=True) as z, xr.open_dataset(nc, decode_timedelta=True) as n:
        xr.testing.assert_identical(z.drop_attrs().load(), n.drop_attrs().load())
        assert z.attrs["Conventions"] == "CF-1.10" and z["rainfall_rate"].attrs["grid_mapping"] == "projection"
    # the dataset itself: (clip, frame, y, x), the valid time of every frame, NaN outside the radar's range
    out = tmp_path / "radar.nc"
    assert CliRunner().invoke(app, ["data", "export", radar["uri"], "--out", str(out), "--split", "test"]
                              ).exit_code == 0
    v = open_version(radar["uri"])
    idx = v.split_indices("test")
    with xr.open_dataset(out) as ds:
        assert ds["rainfall_rate"].dims == ("clip", "frame", "y", "x")
        np.testing.assert_array_equal(ds["clip"].values, idx)
        np.testing.assert_array_equal(ds["valid_time"].values, v.valid_times(idx))
        np.testing.assert_array_equal(ds["rainfall_rate"].values, v.read(idx)[..., 0].astype(np.float32))
        assert np.isnan(ds["rainfall_rate"].values).any()
    assert cf_errors(out) == []


def test_a_lat_lon_grid_of_two_variables_exports_each_as_its_own_variable(tmp_path):
    times = np.datetime64("2026-01-01T00:00", "ns") + np.timedelta64(1, "h") * np.arange(8)
    lat, lon = np.linspace(50.0, 48.0, 4), np.linspace(5.0, 8.0, 6)
    rng = np.random.default_rng(0)
    ds = xr.Dataset({"t2m": (("time", "latitude", "longitude"), 280 + rng.random((8, 4, 6), np.float32),
                             {"units": "K", "standard_name": "air_temperature"}),
                     "u10": (("time", "latitude", "longitude"), rng.standard_normal((8, 4, 6)).astype(np.float32),
                             {"units": "m s-1", "standard_name": "eastward_wind"})},
                    coords={"time": times,
                            "latitude": ("latitude", lat, {"standard_name": "latitude", "units": "degrees_north"}),
                            "longitude": ("longitude", lon, {"standard_name": "longitude",
                                                             "units": "degrees_east"})})
    ds.to_netcdf(tmp_path / "era.nc")
    uri = ingest("netcdf", str(tmp_path / "era.nc"), "era", str(tmp_path / "data"), variable="t2m,u10", window=4,
                 val_fraction=0.0, test_fraction=0.0)
    out = tmp_path / "era-out.nc"
    assert CliRunner().invoke(app, ["data", "export", uri, "--out", str(out)]).exit_code == 0
    with xr.open_dataset(out) as back:
        assert set(back.data_vars) == {"t2m", "u10"}
        assert back["t2m"].dims == ("clip", "frame", "latitude", "longitude")
        assert back["u10"].attrs["units"] == "m s-1" and back["t2m"].attrs["standard_name"] == "air_temperature"
        np.testing.assert_array_equal(back["latitude"].values, lat)
        np.testing.assert_allclose(back["u10"].values[0], ds["u10"].values[:4], rtol=1e-3)  # float16 storage
        np.testing.assert_array_equal(back["valid_time"].values[1], times[4:])
    assert cf_errors(out) == []


def test_a_source_without_time_or_place_exports_with_plain_indices(tmp_path):
    uri = ingest("moving-digits", "", "digits", str(tmp_path / "data"), num_clips=6, frames=4, height=32, width=32)
    out = tmp_path / "digits.nc"
    assert CliRunner().invoke(app, ["data", "export", uri, "--out", str(out)]).exit_code == 0
    with xr.open_dataset(out) as ds:
        assert ds["frames"].dims == ("clip", "frame", "y", "x") and ds["frames"].dtype == np.uint8
        assert "valid_time" not in ds.coords and "y" not in ds.coords
        np.testing.assert_array_equal(ds["frames"].values, open_version(uri).read(np.arange(6))[..., 0])


@pytest.mark.parametrize(("args", "message"), [
    (["--out", "x.txt"], "cannot tell the format from 'x.txt'"),
    (["--out", "x.nc", "--format", "grib"], "--format must be npy, netcdf or zarr"),
    (["--out", "x.npy", "--truth"], "--truth needs --format netcdf or zarr"),
])
def test_export_refuses_what_it_cannot_write_in_one_line(radar, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["data", "export", radar["uri"], *args])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not list(tmp_path.iterdir())


def test_truth_of_an_ingested_version_is_refused_and_nothing_is_left(radar, tmp_path):
    res = CliRunner().invoke(app, ["data", "export", radar["uri"], "--out", str(tmp_path / "x.nc"), "--truth"])
    assert res.exit_code == 2 and "is not a forecast dataset" in res.output, res.output
    assert not list(tmp_path.iterdir())
