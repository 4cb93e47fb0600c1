"""Gridded data as the field writes it: CF NetCDF and xarray-written Zarr, one file per radar scan, a time
coordinate with gaps or out of order, several variables, a declared valid range.

Every file is made here in its real format (netCDF4, xarray's NetCDF and Zarr v2/v3 writers); the cases
replay public reports (pydata/xarray#9780, pySTEPS/pysteps#176/#560, aodn/aodn-portal#2252, OpenSTL#144).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from predrnn.data import DataError, ingest, open_version

START = np.datetime64("2026-06-01T00:00:00", "ns")
STEP = np.timedelta64(5, "m")


def packed_rain(times: np.ndarray, h: int = 6, w: int = 7, seed: int = 0) -> xr.Dataset:
    """A rain rate packed as int16 counts of 0.01 mm h-1, fill -1 (how radar composites are shipped)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 5188, (times.size, h, w)).astype(np.int16)
    counts[0, 0, 0] = 5187
    counts[:, 1, 2] = -1  # no data
    ds = xr.Dataset({"rain": (("time", "y", "x"), counts)},
                    coords={"time": times, "y": np.arange(h) * 1000.0, "x": np.arange(w) * 1000.0})
    ds["rain"].attrs.update(units="mm h-1", standard_name="rainfall_flux", long_name="radar rain rate")
    ds["rain"].encoding.update(dtype="int16", scale_factor=0.01, add_offset=0.0, _FillValue=np.int16(-1))
    # written as packed counts: xarray encodes the float values back to these counts
    decoded = np.where(counts == -1, np.nan, counts * 0.01)
    ds["rain"] = (("time", "y", "x"), decoded, ds["rain"].attrs)
    ds["rain"].encoding.update(dtype="int16", scale_factor=0.01, add_offset=0.0, _FillValue=np.int16(-1))
    return ds


def decoded(path: Path, **kw) -> np.ndarray:
    """What xarray itself decodes from the file, as float32 (the stored dtype)."""
    with xr.open_dataset(path, **kw) as ds:
        return ds["rain"].values.astype(np.float32)


def frames_of(v) -> np.ndarray:
    return v.read(np.arange(len(v)))


def test_packed_rain_decodes_as_xarray_does_in_every_format(tmp_path: Path, root: Path):
    times = START + STEP * np.arange(8)
    ds = packed_rain(times)
    nc, z2, z3, folder = tmp_path / "rain.nc", tmp_path / "rain_v2.zarr", tmp_path / "rain_v3.zarr", tmp_path / "scans"
    ds.to_netcdf(nc, engine="netcdf4")
    ds.to_zarr(z2, zarr_format=2, consolidated=True, mode="w")
    ds.to_zarr(z3, zarr_format=3, consolidated=False, mode="w")
    folder.mkdir()
    for i in range(times.size):  # one file per scan, named by its time
        ds.isel(time=[i]).to_netcdf(folder / f"scan_{pd.Timestamp(times[i]):%Y%m%d%H%M}.nc")
    expect = decoded(nc)
    assert np.nanmax(expect) == pytest.approx(51.87, abs=1e-4) and np.isnan(expect[:, 1, 2]).all()
    for src, name in ((nc, "nc"), (z2, "z2"), (z3, "z3"), (folder, "folder")):
        v = open_version(ingest("netcdf", str(src), name, str(root), window=4, val_fraction=0.0, test_fraction=0.0))
        x = frames_of(v)[..., 0].reshape(-1, 6, 7)
        assert x.dtype == np.float32
        # bit for bit what xarray decodes (scale applied, fill -> NaN), never the raw counts
        assert np.array_equal(x, expect, equal_nan=True), name
        assert float(np.nanmax(x)) < 52 and np.isnan(x[:, 1, 2]).all(), name
        assert v.attrs["units"] == "mm h-1"
        assert v.attrs["channels"][0]["standard_name"] == "rainfall_flux"
        if src.suffix == ".zarr":  # and what xarray decodes from the store itself
            own = decoded(src, engine="zarr", consolidated=src is z2)
            assert np.array_equal(x, own, equal_nan=True), name


def scan_folder(folder: Path, times: np.ndarray, h: int = 4, w: int = 5) -> Path:
    """One NetCDF file per scan; each frame's value is its index in the full 5-minute sequence."""
    folder.mkdir()
    for t in times:
        k = int((t - START) / STEP)
        ds = xr.Dataset({"rain": (("time", "y", "x"), np.full((1, h, w), float(k), np.float32))},
                        coords={"time": [t], "y": np.arange(h), "x": np.arange(w)})
        ds["rain"].attrs["units"] = "mm h-1"
        ds.to_netcdf(folder / f"RAD_{pd.Timestamp(t):%Y%m%d_%H%M}.nc")
    return folder


def assert_consecutive(v, step: np.timedelta64 = STEP) -> np.ndarray:
    """Every clip holds consecutive, increasing times, and every frame is the frame of its time."""
    x = frames_of(v)
    t = v.valid_times(np.arange(len(v)))
    assert t is not None and t.shape == x.shape[:2]
    assert (np.diff(t, axis=1) == step).all()
    index = (t - START) / STEP
    np.testing.assert_array_equal(x[:, :, 0, 0, 0], index.astype(np.float32))
    return t


def test_an_archive_with_missing_scans_is_never_windowed_across_a_gap(tmp_path: Path, root: Path):
    # 10 h of 5-minute scans with 30 and 60 minutes of files missing (pysteps#176, #560)
    full = START + STEP * np.arange(120)
    missing = set(range(30, 36)) | set(range(70, 82))
    times = np.array([t for i, t in enumerate(full) if i not in missing])
    folder = scan_folder(tmp_path / "scans", times)
    v = open_version(ingest("netcdf", str(folder), "gaps", str(root), window=10, val_fraction=0.0,
                            test_fraction=0.0))
    t = assert_consecutive(v)
    assert len(v) == 9  # runs of 30, 34 and 38 regular steps hold 3 + 3 + 3 windows
    rec = v.attrs["time"]
    assert (rec["step"], rec["gap_count"], rec["steps"]) == ("5 min", 2, 102)
    assert [(g["after"], g["missing"], g["missing_steps"]) for g in rec["gaps"]] == [
        ("2026-06-01T02:25:00", "30 min", 6), ("2026-06-01T05:45:00", "1 h", 12)]
    assert rec["steps_in_no_window"] == 102 - 90
    assert str(t[0, 0]) .startswith("2026-06-01T00:00")
    from typer.testing import CliRunner

    from predrnn.cli import app

    out = CliRunner().invoke(app, ["data", "show", v.uri, "--png", str(tmp_path / "s.png")])
    assert out.exit_code == 0, out.output
    assert ("2 gaps: 30 min missing after 2026-06-01T02:25:00, 1 h missing after 2026-06-01T05:45:00; 12 steps "
            "could not hold a window" in out.output)
    shown = json.loads(CliRunner().invoke(app, ["data", "show", v.uri, "--json"]).output)
    assert shown["time"]["gap_count"] == 2


def test_hours_concatenated_out_of_order_are_sorted_and_split_by_time(tmp_path: Path, root: Path):
    # one file whose hours were concatenated out of order (aodn-portal#2252)
    hours = [START + STEP * np.arange(12 * k, 12 * (k + 1)) for k in range(6)]
    times = np.concatenate([hours[i] for i in (3, 0, 5, 1, 4, 2)])
    k = ((times - START) / STEP).astype(np.float32)
    data = np.broadcast_to(k[:, None, None], (times.size, 4, 5)).copy()
    xr.Dataset({"rain": (("time", "y", "x"), data, {"units": "mm h-1"})},
               coords={"time": times}).to_netcdf(tmp_path / "scrambled.nc")
    v = open_version(ingest("netcdf", str(tmp_path / "scrambled.nc"), "sorted", str(root), window=6, stride=6,
                            val_fraction=0.2, test_fraction=0.2))
    t = assert_consecutive(v)
    assert v.attrs["time"]["reordered"] is True and v.attrs["time"]["gap_count"] == 0
    codes = v.split_codes
    last = {s: t[codes == c].max() for s, c in (("train", 0), ("val", 1), ("test", 2))}
    first = {s: t[codes == c].min() for s, c in (("train", 0), ("val", 1), ("test", 2))}
    assert last["train"] < first["val"] and last["val"] < first["test"]  # the split cuts by time


def test_repeated_times_are_refused_with_the_times_named(tmp_path: Path, root: Path):
    times = START + STEP * np.array([0, 1, 2, 2, 3, 4])
    xr.Dataset({"rain": (("time", "y", "x"), np.zeros((6, 3, 3), np.float32))},
               coords={"time": times}).to_netcdf(tmp_path / "dup.nc")
    with pytest.raises(DataError, match=r"1 repeated time\(s\) .*2026-06-01T00:10:00"):
        ingest("netcdf", str(tmp_path / "dup.nc"), "dup", str(root), window=2, val_fraction=0.0, test_fraction=0.0)


def test_a_grid_without_time_coordinate_keeps_index_order_and_says_so(tmp_path: Path, root: Path):
    data = np.arange(8 * 3 * 3, dtype=np.float32).reshape(8, 3, 3)
    xr.Dataset({"rain": (("time", "y", "x"), data)}).to_netcdf(tmp_path / "plain.nc")
    v = open_version(ingest("netcdf", str(tmp_path / "plain.nc"), "plain", str(root), window=4,
                            val_fraction=0.0, test_fraction=0.0))
    assert v.valid_times([0]) is None and "index order" in v.attrs["time"]["note"]
    np.testing.assert_array_equal(frames_of(v)[..., 0].reshape(8, 3, 3), data)


def test_place_and_cf_attributes_are_recorded(tmp_path: Path, root: Path):
    h, w = 4, 5
    y, x = np.arange(h) * 1000.0 - 2000.0, np.arange(w) * 1000.0
    lat = 52.0 + y[:, None] / 111e3 + 0 * x
    lon = 5.0 + x[None, :] / 70e3 + 0 * y[:, None]
    times = START + STEP * np.arange(6)
    ds = xr.Dataset({"rain": (("time", "y", "x"), np.ones((6, h, w), np.float32),
                              {"units": "mm h-1", "grid_mapping": "crs", "standard_name": "rainfall_flux"}),
                     "crs": ((), 0, {"grid_mapping_name": "polar_stereographic",
                                     "straight_vertical_longitude_from_pole": 0.0,
                                     "latitude_of_projection_origin": 90.0})},
                    coords={"time": times,
                            "y": ("y", y, {"standard_name": "projection_y_coordinate", "units": "m"}),
                            "x": ("x", x, {"standard_name": "projection_x_coordinate", "units": "m"}),
                            "lat": (("y", "x"), lat, {"standard_name": "latitude", "units": "degrees_north"}),
                            "lon": (("y", "x"), lon, {"standard_name": "longitude", "units": "degrees_east"})})
    ds.to_netcdf(tmp_path / "placed.nc")
    v = open_version(ingest("netcdf", str(tmp_path / "placed.nc"), "placed", str(root), variable="rain", window=3,
                            val_fraction=0.0, test_fraction=0.0))
    grid = v.attrs["grid"]
    assert grid["y"]["standard_name"] == "projection_y_coordinate" and grid["y"]["first"] == -2000.0
    assert grid["latlon"] == {"lat": "lat", "lon": "lon"}
    assert grid["grid_mapping"]["grid_mapping_name"] == "polar_stereographic"
    coords = v.grid_coords()
    np.testing.assert_array_equal(coords["y"], y)
    np.testing.assert_array_equal(coords["lat"], lat)
    np.testing.assert_array_equal(coords["lon"], lon)


def test_two_variables_are_two_channels_each_with_its_own_statistics(tmp_path: Path, root: Path):
    rng = np.random.default_rng(1)
    times = START + np.timedelta64(1, "h") * np.arange(30)
    t2m = 280.0 + rng.normal(0, 3, (30, 4, 5))
    u10 = rng.normal(2, 4, (30, 4, 5))
    xr.Dataset({"t2m": (("time", "latitude", "longitude"), t2m.astype(np.float32), {"units": "K"}),
                "u10": (("time", "latitude", "longitude"), u10.astype(np.float32), {"units": "m s-1"})},
               coords={"time": times}).to_netcdf(tmp_path / "era.nc")
    v = open_version(ingest("netcdf", str(tmp_path / "era.nc"), "era", str(root), variable="t2m,u10", window=5,
                            val_fraction=0.2, test_fraction=0.2))
    assert v.shape[-1] == 2
    chans = v.attrs["values"]["channels"]
    assert [c["name"] for c in chans] == ["t2m", "u10"] and [c["units"] for c in chans] == ["K", "m s-1"]
    train = frames_of(v)[v.split_codes == 0]
    for c in range(2):  # each mean and std from its own variable, training split only
        assert chans[c]["mean"] == pytest.approx(float(train[..., c].mean(dtype=np.float64)), rel=1e-6)
        assert chans[c]["std"] == pytest.approx(float(train[..., c].std(dtype=np.float64)), rel=1e-5)
    assert chans[0]["mean"] > 270 and abs(chans[1]["mean"]) < 10
    stats = v.attrs["channel_stats"]  # shown per variable, never pooled across units
    assert stats[0]["min"] > 250 and stats[1]["max"] < 50 and stats[1]["units"] == "m s-1"
    from typer.testing import CliRunner

    from predrnn.cli import app

    out = CliRunner().invoke(app, ["data", "show", v.uri, "--png", str(tmp_path / "two.png")])
    assert out.exit_code == 0 and "2 variables (one channel each)" in out.output and "  u10: range [" in out.output
    from PIL import Image

    img = np.asarray(Image.open(tmp_path / "two.png").convert("RGB")).astype(int)
    assert (img[..., 0] == img[..., 1]).mean() > 0.99  # the first variable in grey levels, not channels as RGB
    import torch

    from predrnn.values import from_dataset_attrs, from_model, to_model

    values = from_dataset_attrs(v.attrs)
    x = torch.from_numpy(train[:2].astype(np.float32))
    z = to_model(x, values)
    assert abs(float(z[..., 0].mean())) < 0.5 and abs(float(z[..., 1].mean())) < 0.5
    torch.testing.assert_close(from_model(z, values), x, rtol=1e-5, atol=1e-4)


def test_four_d_variables_take_the_channel_by_name_or_are_refused(tmp_path: Path, root: Path):
    times = START + STEP * np.arange(4)
    members = np.random.default_rng(2).normal(size=(4, 40, 32, 64)).astype(np.float32)  # members(time, 40, 32, 64)
    xr.Dataset({"members": (("time", "member", "lat", "lon"), members, {"units": "K"})},
               coords={"time": times}).to_netcdf(tmp_path / "ens.nc")
    v = open_version(ingest("netcdf", str(tmp_path / "ens.nc"), "ens", str(root), window=2,
                            val_fraction=0.0, test_fraction=0.0))
    assert v.shape[2:] == (32, 64, 40)  # lat x lon frames, one channel per member (not 40 x 64 with 32 channels)
    np.testing.assert_array_equal(frames_of(v)[0, 0], np.moveaxis(members[0], 0, -1))
    assert v.attrs["values"]["channels"][39]["name"] == "members[member=39]"
    members = members[:, :3, :5, :8]
    xr.Dataset({"members": (("time", "a", "b", "c"), members)},
               coords={"time": times}).to_netcdf(tmp_path / "ambiguous.nc")
    with pytest.raises(DataError, match=r"dims \('time', 'a', 'b', 'c'\).*-o channel_dim=NAME \(one of a, b, c\)"):
        ingest("netcdf", str(tmp_path / "ambiguous.nc"), "amb", str(root), window=2, val_fraction=0.0,
               test_fraction=0.0)
    v2 = open_version(ingest("netcdf", str(tmp_path / "ambiguous.nc"), "amb", str(root), window=2, channel_dim="a",
                             val_fraction=0.0, test_fraction=0.0))
    assert v2.shape[2:] == (5, 8, 3)


def test_a_glob_selects_the_scans_and_the_archive_writer_makes_what_the_readme_ingests(tmp_path: Path, root: Path):
    from predrnn.data.sources.generators import write_scan_archive

    files = write_scan_archive(tmp_path / "scans", steps=40, height=16, width=16, episode=20, missing=((10, 3),))
    assert len(files) == 37 and files[0].name == "RAD_20260601_0000.nc"
    (tmp_path / "scans" / "README.txt").write_text("not a scan")
    with xr.open_dataset(files[0], mask_and_scale=False) as raw:  # packed as composites ship it
        assert raw["rainfall_rate"].dtype == np.int16 and raw["rainfall_rate"].attrs["scale_factor"] == 0.01
    v = open_version(ingest("netcdf", str(tmp_path / "scans" / "RAD_2026*.nc"), "glob", str(root), window=5,
                            val_fraction=0.0, test_fraction=0.0))
    assert v.attrs["source"]["location"].endswith("scans/RAD_2026*.nc")
    rec = v.attrs["time"]
    assert (rec["steps"], rec["gap_count"], rec["gaps"][0]["missing"]) == (37, 1, "15 min")
    values = v.attrs["values"]
    assert (values["units"], values["valid_min"]) == ("mm h-1", 0.0)  # from the files' CF attributes
    assert np.isnan(frames_of(v)[0, 0, 0, 0, 0])  # outside the radar's range: _FillValue
    assert v.attrs["grid"]["grid_mapping"]["grid_mapping_name"] == "polar_stereographic"
    assert_consecutive_times(v)


def assert_consecutive_times(v) -> None:
    t = v.valid_times(np.arange(len(v)))
    assert t is not None and (np.diff(t, axis=1) == STEP).all()


def test_a_value_float16_cannot_hold_is_refused_and_nothing_is_written(tmp_path: Path, root: Path):
    times = START + STEP * np.arange(4)
    z = np.full((4, 3, 3), 100.0, np.float32)
    z[2, 1, 1] = 3.2e5  # linear reflectivity
    xr.Dataset({"z": (("time", "y", "x"), z, {"units": "mm6 m-3"})},
               coords={"time": times}).to_netcdf(tmp_path / "z.nc")
    with pytest.raises(DataError, match=r"value 320000 does not fit float_dtype=float16 .*float32"):
        ingest("netcdf", str(tmp_path / "z.nc"), "refl", str(root), window=2, float_dtype="float16",
               val_fraction=0.0, test_fraction=0.0)
    assert not list((root / "refl").glob("manifests/*")) and not list((root / "refl").glob("data/*"))


def test_the_declared_valid_range_is_kept_and_values_outside_it_are_missing(tmp_path: Path, root: Path):
    times = START + STEP * np.arange(4)
    counts = np.full((4, 3, 3), 100, np.int16)
    counts[1, 0, 0] = -20  # below valid_min (in packed units, CF 2.5.1): missing
    ds = xr.Dataset({"rain": (("time", "y", "x"), counts, {"units": "mm h-1", "scale_factor": 0.1,
                                                           "valid_range": np.array([0, 3000], np.int16)})},
                    coords={"time": times})
    ds.to_netcdf(tmp_path / "ranged.nc")
    v = open_version(ingest("netcdf", str(tmp_path / "ranged.nc"), "ranged", str(root), window=2,
                            val_fraction=0.0, test_fraction=0.0))
    values = v.attrs["values"]
    assert (values["valid_min"], values["valid_max"]) == (0.0, pytest.approx(300.0))
    x = frames_of(v)[..., 0].reshape(4, 3, 3)
    assert np.isnan(x[1, 0, 0]) and np.nanmin(x) == pytest.approx(10.0)


def test_jittered_scan_times_need_a_tolerance(tmp_path: Path, root: Path):
    jitter = np.array([0, 4, -3, 7, 0, 2, -5, 1, 3, 0], "timedelta64[s]")
    times = START + STEP * np.arange(10) + jitter
    xr.Dataset({"rain": (("time", "y", "x"), np.zeros((10, 3, 3), np.float32))},
               coords={"time": times}).to_netcdf(tmp_path / "jitter.nc")
    with pytest.raises(DataError, match=r"-o time_step=5min -o time_tolerance=30s"):
        ingest("netcdf", str(tmp_path / "jitter.nc"), "jit", str(root), window=5, val_fraction=0.0, test_fraction=0.0)
    v = open_version(ingest("netcdf", str(tmp_path / "jitter.nc"), "jit", str(root), window=5, time_step="5min",
                            time_tolerance="30s", val_fraction=0.0, test_fraction=0.0))
    assert len(v) == 2 and v.attrs["time"]["gap_count"] == 0


def test_a_version_from_the_earlier_reader_is_not_reused(tmp_path: Path, root: Path):
    """Same files and options as a version the earlier reader made (packed Zarr read raw): ingest again."""
    from predrnn.data.pipeline import _fingerprint
    from predrnn.data.sources import make_source
    from predrnn.data.sources.grids import GridSource

    ds = packed_rain(START + STEP * np.arange(6))
    ds.to_zarr(tmp_path / "rain.zarr", zarr_format=3, consolidated=False, mode="w")
    src = make_source("netcdf", str(tmp_path / "rain.zarr"), {"window": 3})
    now = _fingerprint(src, "c")
    try:
        GridSource.reader_version = 1
        earlier = _fingerprint(src, "c")
    finally:
        GridSource.reader_version = 2
    assert now != earlier
