"""Pictures on the map: GIFs and PNG grids of gridded data drawn in the grid's coordinates (x/y with their
units, or longitude/latitude), every frame titled with its valid time and lead; a nowcast's row of lead
times; the dataset preview and the evaluation's pictures fed from the version. Without coordinates or
times the PIL pictures stay byte for byte what they were."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from predrnn import viz

START = np.datetime64("2026-06-01T00:00:00", "ns")
STEP = np.timedelta64(5, "m")
FIELD = (0.0, 10.0, "rain mm h-1")

# a projected grid as a CF NetCDF records it: y increasing northwards from -2000 m, x from 100 km, 1 km cells
H, W = 6, 8
Y = -2000.0 + 1000.0 * np.arange(H)
X = 100000.0 + 1000.0 * np.arange(W)
GRID = {"y": {"dim": "y", "standard_name": "projection_y_coordinate", "units": "m", "first": Y[0], "last": Y[-1],
              "spacing": 1000.0},
        "x": {"dim": "x", "standard_name": "projection_x_coordinate", "units": "m", "first": X[0], "last": X[-1],
              "spacing": 1000.0},
        "latlon": None, "grid_mapping": None}


def fields() -> np.ndarray:
    """(2, 6, 12, 10, 1) float32 in mm h-1, one NaN."""
    t = np.arange(6)[:, None, None]
    yy, xx = np.mgrid[0:12, 0:10]
    f = (np.sin(xx / 3.0 + t) + np.cos(yy / 4.0 - t) + 2.0)[..., None] * 2.5
    f = np.stack([f, f[::-1] * 0.5 + 1]).astype(np.float32)
    f[0, 2, 3, 4, 0] = np.nan
    return f


def _pil_pictures(module: Any, out: Path, **extra: Any) -> dict[str, str]:
    """The sha256 of every PIL picture of a fixed set of arrays (fields, [0, 1] images, uint8 RGB)."""
    f = fields()
    ctx, truth, fc = f[:, :3], f[:, 3:], f[:, 3:] * 0.9
    img = np.clip(np.nan_to_num(f) / 10.0, 0, 1)
    u8 = np.rint(img * 255).astype(np.uint8).repeat(3, axis=-1)
    made = {
        "gif_field": module.forecast_gif(out / "a.gif", ctx, fc, truth, field=FIELD, **extra),
        "gif_image_no_truth": module.forecast_gif(out / "b.gif", img[:, :3], img[:, 3:], scale=1, **extra),
        "gif_u8_short_truth": module.forecast_gif(out / "c.gif", u8[:, :3], u8[:, 3:], u8[:, 3:5], **extra),
        "png_field": module.forecast_grid_png(out / "d.png", ctx, fc, truth, field=FIELD, **extra),
        "png_image_scale2": module.forecast_grid_png(out / "e.png", img[:, :3], img[:, 3:], img[:, 3:], scale=2,
                                                     **extra),
    }
    return {k: hashlib.sha256(Path(p).read_bytes()).hexdigest() for k, p in made.items()}


# what the PIL-only implementation (before the pictures on the map) wrote for these arrays, byte for byte
PIL_BEFORE = {
    "gif_field": "a4125d5c7a18c2fece263abb082b7d6d8f7aff092660c360cb7e175dd85eeaa2",
    "gif_image_no_truth": "2742899f723d0693220fd5bb79c37a42615ec7ead4e26b84c211c2912215b59a",
    "gif_u8_short_truth": "96ce4dca4d5dc8744c1a4eb851731005fb7650199d056db85a76f80dd1026070",
    "png_field": "dbdf1dd23173bc863a548c27a4849848675d7bf1dffbe8bda02b1a98e67dd923",
    "png_image_scale2": "867bf96d98cc3e1808603af40d835fc928ba8a906f7df01000ff29d11ff77f8b",
}


def test_without_coordinates_or_times_the_pil_pictures_are_byte_identical(tmp_path: Path):
    assert _pil_pictures(viz, tmp_path) == PIL_BEFORE
    # a version without grid coordinates (empty grid_coords, a grid recording only its dimensions) changes nothing
    no_place = {"y": {"dim": "y"}, "x": {"dim": "x"}, "latlon": None, "grid_mapping": None}
    assert _pil_pictures(viz, tmp_path / "none", coords=None, grid=None, valid_times=None) == PIL_BEFORE
    assert _pil_pictures(viz, tmp_path / "empty", coords={}, grid=no_place) == PIL_BEFORE


# ---------------------------------------------------------------------------------------------------------
# the axes


def test_map_axes_use_the_grids_coordinates_and_units():
    lay = viz.map_axes((H, W), {"y": Y, "x": X}, GRID)
    assert lay.kind == "xy"
    assert (lay.xlabel, lay.ylabel) == ("projection_x_coordinate (m)", "projection_y_coordinate (m)")
    assert lay.extent == (99500.0, 107500.0, -2500.0, 3500.0)  # cell edges, north up
    # the coordinates rebuilt from what attrs["grid"] records when the arrays are not given
    rebuilt = viz.map_axes((H, W), None, GRID)
    np.testing.assert_array_equal(rebuilt.x, X)
    np.testing.assert_array_equal(rebuilt.y, Y)
    # but not when the version stored no arrays, nor from a bare index (a dimension without coordinate values)
    assert viz.map_axes((H, W), {}, GRID).kind == "pixel"
    bare = {k: {"dim": k, "first": 0.0, "last": n - 1.0, "spacing": 1.0} for k, n in (("y", H), ("x", W))}
    assert viz.map_axes((H, W), None, bare).kind == "pixel"
    # a grid stored north first (y decreasing): still north up, the edges the same
    down = viz.map_axes((H, W), {"y": Y[::-1], "x": X}, GRID)
    assert down.extent == lay.extent
    # no units: the dimension's name alone; units without a standard name: "x (km)"
    km = viz.map_axes((H, W), {"y": Y / 1000, "x": X / 1000}, {"y": {"dim": "y"}, "x": {"dim": "x", "units": "km"}})
    assert (km.xlabel, km.ylabel) == ("x (km)", "y")


def test_map_axes_fall_back_to_lon_lat_then_pixels():
    yy, xx = np.mgrid[0:H, 0:W]
    lat, lon = 52.0 + 0.01 * yy + 0.002 * xx, 5.0 + 0.015 * xx - 0.003 * yy
    ll = viz.map_axes((H, W), {"lat": lat, "lon": lon}, {"y": {"dim": "y"}, "x": {"dim": "x"}, "latlon": {}})
    assert ll.kind == "lonlat"
    assert (ll.xlabel, ll.ylabel) == ("longitude (degrees_east)", "latitude (degrees_north)")
    left, right, bottom, top = ll.extent
    assert left < lon.min() < lon.max() < right and bottom < lat.min() < lat.max() < top
    # coordinates of another grid (a crop) are not used; nothing at all: pixels, row 0 on top
    assert viz.map_axes((H, W), {"y": Y[:-1], "x": X}, GRID).kind == "pixel"
    px = viz.map_axes((H, W))
    assert (px.kind, px.xlabel, px.ylabel) == ("pixel", "column (pixel)", "row (pixel)")
    assert px.extent == (-0.5, W - 0.5, H - 0.5, -0.5)


def test_times_and_leads_as_titles_show_them():
    assert viz.time_text(np.datetime64("2026-06-01T00:05:37")) == "2026-06-01 00:05 UTC"
    assert viz.time_text(np.datetime64("NaT")) == "?"
    assert viz.time_text(12.5) == "t=12.5"
    assert [viz.lead_text(np.timedelta64(m, "m")) for m in (5, 0, -10, 90, 360)] == [
        "+5 min", "0 min", "-10 min", "+90 min", "+6 h"]
    assert viz.lead_text(np.timedelta64(30, "s")) == "+30 s"
    times = START + STEP * np.arange(5)
    assert viz.frame_titles(times, 2, 5, "truth") == [
        "observed -5 min\n2026-06-01 00:00 UTC", "observed 0 min\n2026-06-01 00:05 UTC",
        "truth +5 min\n2026-06-01 00:10 UTC", "truth +10 min\n2026-06-01 00:15 UTC",
        "truth +15 min\n2026-06-01 00:20 UTC"]


# ---------------------------------------------------------------------------------------------------------
# the pictures


def hot_corner(clips: int = 2, t: int = 5) -> np.ndarray:
    """(clips, t, H, W, 1) zeros, one hot cell (10 mm h-1) in row 0 (y[0], the south), last column (the east)."""
    a = np.zeros((clips, t, H, W, 1), np.float32)
    a[:, :, 0, W - 1] = 10.0
    return a


def colour_at(fig: Any, ax: Any, x: float, y: float) -> np.ndarray:
    """The RGB the figure shows at data point (x, y) of ``ax``."""
    rgb = viz.figure_rgb(fig)
    px, py = ax.transData.transform((x, y))
    return rgb[rgb.shape[0] - 1 - int(round(py)), int(round(px))].astype(int)


def tick_labels(axis: Any) -> dict[float, float]:
    """Tick position -> the number its label shows, for the ticks inside the axis' view (after a draw)."""
    lo, hi = sorted(axis.get_view_interval())
    return {float(loc): float(label.get_text().replace("\u2212", "-"))
            for loc, label in zip(axis.get_ticklocs(), axis.get_ticklabels(), strict=True) if lo <= loc <= hi}


def test_the_grid_png_is_drawn_in_the_grids_coordinates_with_valid_times(tmp_path: Path):
    a = hot_corner()
    ctx, truth, fc = a[:, :2], a[:, 2:], a[:, 2:]
    vt = START + STEP * np.arange(5)[None] + np.timedelta64(1, "h") * np.arange(2)[:, None]
    fig = viz.forecast_grid_figure(ctx, fc, truth, field=FIELD, coords={"y": Y, "x": X}, grid=GRID, valid_times=vt)
    panels = np.array(fig.axes[:-1]).reshape(6, 3)  # per clip rows observed, truth, forecast; 3 columns
    viz.figure_rgb(fig)
    for ax in panels.ravel():
        if ax.axison:
            assert ax.get_xlim() == (99500.0, 107500.0) and ax.get_ylim() == (-2500.0, 3500.0)
    bottom_left = panels[-1, 0]
    # the tick labels are the coordinates in metres, written out (no offset, no scientific notation)
    assert tick_labels(bottom_left.xaxis) == {102000.0: 102000.0, 105000.0: 105000.0}
    assert tick_labels(bottom_left.yaxis) == {-1500.0: -1500.0, 0.0: 0.0, 1500.0: 1500.0, 3000.0: 3000.0}
    assert [t.get_text() for t in bottom_left.get_xticklabels() if t.get_text() == "102000"]
    assert not any(t.get_text() for t in panels[-1, 1].get_yticklabels())  # tick labels on the left column only
    assert bottom_left.get_xlabel() == "projection_x_coordinate (m)"
    assert bottom_left.get_ylabel() == "projection_y_coordinate (m)"
    assert fig.axes[-1].get_ylabel() == "rain mm h-1"  # the colour bar
    assert panels[0, 0].get_title() == "observed -5 min\n2026-06-01 00:00 UTC"
    assert panels[1, 2].get_title() == "truth +15 min\n2026-06-01 00:20 UTC"
    assert panels[5, 0].get_title() == "forecast +5 min\n2026-06-01 01:10 UTC"
    assert not panels[0, 2].axison  # two context frames in three columns: the third blank
    # the hot cell (row 0, last column) is drawn at (x[-1], y[0]): south-east, not north-east or south-west
    yellow = colour_at(fig, panels[0, 0], X[-1], Y[0])
    assert yellow[0] > 200 and yellow[1] > 200 and yellow[2] < 100
    for x, y in ((X[-1], Y[-1]), (X[0], Y[0])):
        assert colour_at(fig, panels[0, 0], x, y)[0] < 100  # dark (viridis' low end)
    out = viz.forecast_grid_png(tmp_path / "g.png", ctx, fc, truth, field=FIELD, coords={"y": Y, "x": X},
                                grid=GRID, valid_times=vt)
    with Image.open(out) as img:
        w_in, h_in = fig.get_size_inches()
        assert img.size == (round(w_in * viz.DPI), round(h_in * viz.DPI))


def test_the_gif_on_the_map_titles_every_frame_with_its_valid_time(tmp_path: Path):
    a = hot_corner(clips=3, t=6)
    ctx, truth, fc = a[:, :2], a[:, 2:5], a[:, 2:]  # the truth one frame shorter than the forecast
    vt = START + STEP * np.arange(6)[None] + np.timedelta64(1, "h") * np.arange(3)[:, None]
    out = viz.forecast_gif(tmp_path / "f.gif", ctx, fc, truth, field=FIELD, coords={"y": Y, "x": X}, grid=GRID,
                           valid_times=vt, max_clips=2)
    anim = viz.ForecastAnimation(ctx[:2], fc[:2], truth[:2], field=FIELD, layout=viz.map_axes((H, W), None, GRID),
                                 times=vt[:2])
    with Image.open(out) as gif:
        assert getattr(gif, "n_frames", 1) == 6  # 2 context + 4 lead times
        assert gif.size == tuple(anim.rgb().shape[1::-1])  # the matplotlib figure, not the PIL strip (W x 2)
    anim.show(1)
    truth_ax, fc_ax = anim.panels[1][0].ax, anim.panels[1][1].ax
    assert truth_ax.get_title() == fc_ax.get_title() == "observed 0 min\n2026-06-01 01:05 UTC"
    anim.show(5)
    assert truth_ax.get_title() == "truth +20 min\n2026-06-01 01:25 UTC"
    assert fc_ax.get_title() == "forecast +20 min\n2026-06-01 01:25 UTC"
    assert anim.panels[1][0].art.get_array().mask.all()  # no truth after its end: blank
    assert truth_ax.get_xlim() == (99500.0, 107500.0) and truth_ax.get_ylim() == (-2500.0, 3500.0)
    yellow = colour_at(anim.fig, fc_ax, X[-1], Y[0])
    assert yellow[0] > 200 and yellow[2] < 100
    with pytest.raises(ValueError, match="valid_times"):
        viz.forecast_gif(tmp_path / "bad.gif", ctx, fc, truth, field=FIELD, valid_times=vt[:, :4])


def test_nowcast_png_is_one_row_of_spread_lead_times(tmp_path: Path):
    rng = np.random.default_rng(0)
    last = rng.uniform(0, 10, (H, W))
    fc = rng.uniform(0, 10, (12, H, W))
    leads = STEP * np.arange(1, 13)
    ref = np.datetime64("2026-06-01T12:00")
    assert viz.nowcast_leads(12, 4) == [2, 5, 8, 11] and viz.nowcast_leads(3, 4) == [0, 1, 2]
    fig = viz.nowcast_figure(last, fc, reference_time=ref, lead_times=leads, coords={"y": Y, "x": X}, grid=GRID,
                             field=FIELD)
    *panels, bar = fig.axes
    assert [ax.get_title() for ax in panels] == [
        "observed 2026-06-01 12:00 UTC", "+15 min\n2026-06-01 12:15 UTC", "+30 min\n2026-06-01 12:30 UTC",
        "+45 min\n2026-06-01 12:45 UTC", "+60 min\n2026-06-01 13:00 UTC"]
    assert bar.get_ylabel() == "rain mm h-1"
    # one row, left to right, the frames shown are the observation then forecast[2], [5], [8], [11]
    lefts = [ax.get_position().x0 for ax in panels]
    assert lefts == sorted(lefts) and len({round(ax.get_position().y0, 6) for ax in panels}) == 1
    shown = [np.ma.getdata(ax.images[0].get_array()) for ax in panels]
    np.testing.assert_allclose(shown[0], last)
    for k, frame in zip((2, 5, 8, 11), shown[1:], strict=True):
        np.testing.assert_allclose(frame, fc[k])
    assert panels[0].get_ylabel() == "projection_y_coordinate (m)"
    assert all(ax.get_xlabel() == "projection_x_coordinate (m)" for ax in panels)
    out = viz.nowcast_png(tmp_path / "now.png", last, fc, reference_time=ref, lead_times=leads,
                          coords={"y": Y, "x": X}, grid=GRID, field=FIELD)
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 4 * img.height  # a row of five panels
    # without coordinates: pixel indices, row 0 on top; with only 2-D lat/lon: degrees
    px = viz.nowcast_figure(last, fc, reference_time=ref, lead_times=leads, field=FIELD, leads_shown=2)
    assert len(px.axes) == 4 and px.axes[0].get_xlabel() == "column (pixel)"
    assert px.axes[0].get_ylim() == (H - 0.5, -0.5)
    yy, xx = np.mgrid[0:H, 0:W]
    lat, lon = 52.0 + 0.01 * yy, 5.0 + 0.015 * xx
    ll = viz.nowcast_figure(last, fc, reference_time=ref, lead_times=leads, field=FIELD, leads_shown=1,
                            coords={"lat": lat, "lon": lon})
    assert ll.axes[0].get_xlabel() == "longitude (degrees_east)"
    lo, hi = ll.axes[0].get_xlim()
    assert lo < 5.0 and hi > lon.max()


# ---------------------------------------------------------------------------------------------------------
# fed from a dataset version: the preview strip and the evaluation's pictures


@pytest.fixture()
def placed(tmp_path: Path) -> Any:
    """A version ingested from a CF NetCDF with projected x/y, 2-D lat/lon and 5-minute times."""
    import xarray as xr

    from predrnn.data import ingest, open_version

    times = START + STEP * np.arange(40)
    yy, xx = np.mgrid[0:H, 0:W]
    data = (np.arange(40)[:, None, None] + 0 * yy).astype(np.float32) % 7
    ds = xr.Dataset({"rain": (("time", "y", "x"), data, {"units": "mm h-1", "standard_name": "rainfall_flux"})},
                    coords={"time": times,
                            "y": ("y", Y, {"standard_name": "projection_y_coordinate", "units": "m"}),
                            "x": ("x", X, {"standard_name": "projection_x_coordinate", "units": "m"}),
                            "lat": (("y", "x"), 52.0 + 0.01 * yy, {"standard_name": "latitude",
                                                                    "units": "degrees_north"}),
                            "lon": (("y", "x"), 5.0 + 0.015 * xx, {"standard_name": "longitude",
                                                                    "units": "degrees_east"})})
    ds.to_netcdf(tmp_path / "placed.nc")
    root = tmp_path / "datasets"
    root.mkdir()
    return open_version(ingest("netcdf", str(tmp_path / "placed.nc"), "placed", str(root), variable="rain",
                               window=8, stride=4, val_fraction=0.2, test_fraction=0.2))


def test_the_preview_strip_of_a_placed_version_is_on_the_map(placed: Any, monkeypatch: pytest.MonkeyPatch):
    from predrnn.data import preview

    seen: dict[str, Any] = {}
    real = viz.samples_figure

    def spy(clips: np.ndarray, **kw: Any) -> Any:
        seen.update(kw, clips=clips)
        return real(clips, **kw)

    monkeypatch.setattr(viz, "samples_figure", spy)
    img = preview.strip(placed, clips=3, frames=5)
    idx = np.unique(np.linspace(0, len(placed) - 1, 3).round().astype(np.int64))
    np.testing.assert_array_equal(seen["coords"]["x"], X)
    assert seen["grid"] == placed.attrs["grid"]
    np.testing.assert_array_equal(seen["valid_times"], placed.valid_times(idx)[:, :5])
    assert seen["field"][2] == "mm h-1"
    assert img.dtype == np.uint8 and img.shape[2] == 3 and img.shape[1] > 5 * (W + 2)  # not the pixel strip
    assert preview.strip_png(placed, clips=3, frames=5)[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_preview_strip_of_a_version_without_a_grid_is_the_pixel_strip():
    from predrnn.data import preview

    f = np.nan_to_num(fields())

    class Plain:  # what the strip reads of a version without grid coordinates
        shape, attrs = f.shape, {"value_range": [0.0, 12.0]}

        def read(self, idx: Any) -> np.ndarray:
            return f[np.asarray(idx)]

        def grid_coords(self) -> dict[str, np.ndarray]:
            return {}

        def valid_times(self, idx: Any) -> None:
            return None

    img = preview.strip(Plain(), clips=2, frames=4)
    assert img.shape == (2 * 12 + 2, 4 * 10 + 3 * 2, 3)


def test_pictures_pass_the_clips_own_valid_times_and_the_grid(placed: Any, monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path):
    import torch

    from predrnn import evaluation
    from predrnn.data import ClipDataset

    monkeypatch.setattr(evaluation, "eval_step", lambda model, frames, n_in, values: frames[:, n_in:] * 0.5)

    class Source:
        def __init__(self, **opts: Any):
            self.opts = opts

        def open(self, split: str, **kw: Any) -> ClipDataset:
            return ClipDataset(placed, split=split, length=kw["length"], **self.opts)

    cfg = SimpleNamespace(data=SimpleNamespace(total_length=6, input_length=2),
                          values=ClipDataset(placed, "test").values)
    pics = evaluation.pictures(tmp_path, torch.nn.Identity(), cfg, Source(), "test", clips=2)  # type: ignore[arg-type]
    with Image.open(pics["gif"]) as gif, Image.open(pics["png"]) as png:
        # drawn on the map, not 8-pixel frames side by side
        assert getattr(gif, "n_frames", 1) == 6 and gif.width > 100 and png.width > 400

    got: dict[str, dict[str, Any]] = {}

    def grab(name: str):
        def draw(path: Path, *args: Any, **kw: Any) -> Path:
            got[name] = kw
            return Path(path)
        return draw

    monkeypatch.setattr(viz, "forecast_gif", grab("gif"))
    monkeypatch.setattr(viz, "forecast_grid_png", grab("png"))
    evaluation.pictures(tmp_path, torch.nn.Identity(), cfg, Source(), "test", clips=2)  # type: ignore[arg-type]
    test_clips = placed.split_indices("test")[:2]
    for kw in got.values():
        np.testing.assert_array_equal(kw["valid_times"], placed.valid_times(test_clips)[:, :6])
        np.testing.assert_array_equal(kw["coords"]["y"], Y)
        assert kw["grid"]["x"]["units"] == "m" and kw["field"][2] == "mm h-1"
    assert test_clips.min() > 0  # the test split's clips are not the version's first ones
    # windows cut at random (the training split): the times of the frames read, from each window's start
    crop = Source(random_crop=True, seed=3)
    evaluation.pictures(tmp_path, torch.nn.Identity(), cfg, crop, "train", clips=3)  # type: ignore[arg-type]
    ds = crop.open("train", length=6)
    starts = [ds._start(int(c)) for c in ds.indices[:3]]
    assert len(set(starts)) > 1
    full = placed.valid_times(ds.indices[:3])
    np.testing.assert_array_equal(got["gif"]["valid_times"], [full[k, s:s + 6] for k, s in enumerate(starts)])

    class NoGrid:
        def open(self, split: str, **kw: Any) -> Any:
            return ClipDataset(placed, split=split, length=kw["length"])

    monkeypatch.setattr(type(placed), "grid_coords", lambda self: {})
    monkeypatch.setitem(placed.manifest["attrs"], "grid", {"y": {"dim": "y"}, "x": {"dim": "x"}})
    got.clear()
    evaluation.pictures(tmp_path, torch.nn.Identity(), cfg, NoGrid(), "test", clips=2)  # type: ignore[arg-type]
    assert set(got["gif"]) == set(got["png"]) == {"field"}  # as before: pixels, no coordinates or times
