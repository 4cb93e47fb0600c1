"""Pictures of forecasts: side-by-side GIFs and PNG grids (context | truth | forecast), nowcast rows.

Images are shown as they are ([0, 1] floats or uint8). A physical field is shown through a colour
map over ``value_range`` in its units, NaN (no data) in grey, with a colour bar labelled in the
units beside every picture.

Pictures of gridded data are drawn on the map: given the grid's coordinates (what
:meth:`predrnn.data.store.Version.grid_coords` returns and ``attrs["grid"]`` describes) the axes are in
the grid's x/y (with their units) or, where only 2-D latitude/longitude exist, in degrees; given the
frames' valid times every frame is titled with its valid time (UTC) and lead. Those pictures are drawn
with matplotlib (Agg); without coordinates or times the PIL pictures of pixels stay as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

Field = tuple[float, float, str]  # (low, high, units) of a physical field's colour map
Coords = dict[str, np.ndarray]  # y, x (1-D) and lat, lon ((H, W)) of a grid, as Version.grid_coords() returns
DPI = 80  # the resolution of the matplotlib pictures
_NAN_GREY = (110 / 255,) * 3  # no data, as in the PIL pictures


def field_range(*arrays: np.ndarray | None, valid_min: float | None = None) -> tuple[float, float]:
    """A colour range over the finite values of ``arrays`` (from ``valid_min`` when declared)."""
    finite = [a[np.isfinite(a)] for a in arrays if a is not None]
    vals = np.concatenate([f.reshape(-1) for f in finite]) if finite else np.zeros(1)
    lo = float(valid_min) if valid_min is not None else float(vals.min()) if vals.size else 0.0
    hi = float(np.percentile(vals, 99.5)) if vals.size else 1.0
    return lo, hi if hi > lo else lo + 1.0


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Lay out, write and close a matplotlib figure as a PNG (parent folders created)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def field_colours(values: Any, *arrays: np.ndarray | None) -> Field | None:
    """The colour range and units of a field's pictures (None for images); ``values`` a ValuesConfig.

    Pictures show channel 0; for several variables the range and units are those of the first variable
    (``values.channels[0]``), taken over that channel only."""
    if values.kind != "field":
        return None
    if values.channels:
        first = values.channels[0]
        lo, hi = field_range(*(None if a is None else a[..., :1] for a in arrays), valid_min=first.valid_min)
        return lo, hi, f"{first.name} {first.units}".strip()
    lo, hi = field_range(*arrays, valid_min=values.valid_min)
    return lo, hi, values.units


def _colour(frames: np.ndarray, field: Field) -> np.ndarray:
    """(..., H, W, C) field values -> uint8 RGB through viridis over [low, high]; NaN grey. Channel 0 shown."""
    from matplotlib import colormaps

    lo, hi, _ = field
    x = np.asarray(frames, dtype=np.float64)[..., 0]
    u = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    rgb = (colormaps["viridis"](np.nan_to_num(u, nan=0.0))[..., :3] * 255).round().astype(np.uint8)
    rgb[~np.isfinite(x)] = 110
    return rgb


def _colour_bar(height: int, field: Field, width: int = 44) -> np.ndarray:
    """A vertical colour bar (height, width, 3) labelled with the range ends and the units."""
    lo, hi, units = field
    ramp = np.linspace(hi, lo, max(height, 2))[:, None, None] * np.ones((1, 8, 1))
    bar = _colour(ramp, (lo, hi, units))
    img = Image.new("RGB", (width, max(height, 2)), (0, 0, 0))
    img.paste(Image.fromarray(bar), (0, 0))
    draw = ImageDraw.Draw(img)
    draw.text((10, 0), f"{hi:.3g}", fill=(255, 255, 255))
    draw.text((10, max(height, 2) - 11), f"{lo:.3g}", fill=(255, 255, 255))
    if units and height >= 36:
        draw.text((10, max(height, 2) // 2 - 5), units[:6], fill=(255, 255, 255))
    return np.asarray(img)[:height]


def _with_bar(img: np.ndarray, field: Field | None) -> np.ndarray:
    if field is None:
        return img
    return np.concatenate([img, _colour_bar(img.shape[0], field)], axis=1)


def _to_rgb_u8(frames: np.ndarray, field: Field | None = None) -> np.ndarray:
    """(..., H, W, C) float [0, 1] or uint8 -> uint8 RGB (a field: through its colour map)."""
    if field is not None:
        return _colour(frames, field)
    f = frames if frames.dtype == np.uint8 else np.rint(np.clip(frames, 0, 1) * 255).astype(np.uint8)
    if f.shape[-1] == 1:
        f = np.repeat(f, 3, axis=-1)
    elif f.shape[-1] == 2:
        f = np.concatenate([f, np.zeros_like(f[..., :1])], axis=-1)
    elif f.shape[-1] > 3:
        f = f[..., :3]
    return f


def _label(img: np.ndarray, text: str) -> np.ndarray:
    pil = Image.fromarray(img)
    ImageDraw.Draw(pil).text((2, 1), text, fill=(255, 64, 64))
    return np.asarray(pil)


def forecast_gif(path: str | Path, context: np.ndarray, forecast: np.ndarray, truth: np.ndarray | None = None,
                 *, max_clips: int = 4, scale: int = 2, duration_ms: int = 200, field: Field | None = None,
                 coords: Coords | None = None, grid: dict[str, Any] | None = None,
                 valid_times: np.ndarray | None = None, dpi: int = DPI) -> Path:
    """Animated GIF: one row per clip; columns truth (if given) and forecast.

    During the context frames both columns show the observed frame, labelled ``ctx``; afterwards
    the left column shows the truth and the right the forecast. Arrays are (clips, T, H, W, C):
    images in [0, 1] or uint8, or with ``field=(low, high, units)`` a physical field in its units
    (colour map and colour bar).

    With usable ``coords`` (or a ``grid`` recording its coordinates) or ``valid_times`` the GIF is drawn
    with matplotlib instead (``scale`` then does not apply): axes in the grid's coordinates
    (:func:`map_axes`), every panel titled with its role (observed, truth, forecast), lead and valid
    time, one colour bar in the field's units.

    Args:
        path: the GIF to write (parent folders created).
        context: (clips, T_context, H, W, C) the observed frames.
        forecast: (clips, N, H, W, C) the forecast.
        truth: (clips, N', H, W, C) the observed future (blank after its end when N' < N), or None.
        max_clips: clips shown (the first ones).
        scale: pixel repeat of the PIL picture.
        duration_ms: time each frame is shown.
        field: ``(low, high, units)`` of a physical field (:func:`field_colours`); None for images.
        coords: the grid's coordinates, ``y`` (H,) and ``x`` (W,) and/or ``lat``, ``lon`` (H, W)
            (:meth:`predrnn.data.store.Version.grid_coords`).
        grid: the grid's description (a version's ``attrs["grid"]``): axis names and units.
        valid_times: (clips, T_context + N) datetime64 valid time of every frame shown (context, then
            the lead times), UTC; a float array for a numeric time coordinate.
        dpi: resolution of the matplotlib GIF.
    """
    path = Path(path)
    n = min(max_clips, context.shape[0])
    layout = _drawn_on_map(context.shape[2:4], coords, grid, valid_times)
    if layout is not None:
        return _map_gif(path, context[:n], forecast[:n], None if truth is None else truth[:n], field=field,
                        layout=layout, times=_clip_times(valid_times, n, context.shape[1] + forecast.shape[1]),
                        duration_ms=duration_ms, dpi=dpi)
    ctx, fc = _to_rgb_u8(context[:n], field), _to_rgb_u8(forecast[:n], field)
    tr = _to_rgb_u8(truth[:n], field) if truth is not None else None
    H, W = ctx.shape[2:4]
    sep = np.full((H, 2, 3), 128, np.uint8)
    frames = []
    for t in range(ctx.shape[1] + fc.shape[1]):
        rows = []
        for i in range(n):
            if t < ctx.shape[1]:
                cells = [ctx[i, t]] * (2 if tr is not None else 1)
                cells = [_label(c, "ctx") for c in cells]
            else:
                k = t - ctx.shape[1]
                true = ([_label(tr[i, k], "true") if k < tr.shape[1] else np.zeros_like(fc[i, k])]
                        if tr is not None else [])  # a truth shorter than the forecast: blank after its end
                cells = true + [_label(fc[i, k], f"+{k + 1}")]
            rows.append(np.concatenate([x for c in cells for x in (c, sep)][:-1], axis=1))
        img = Image.fromarray(_with_bar(np.concatenate(rows, axis=0), field))
        frames.append(img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST))
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return path


def forecast_grid_png(path: str | Path, context: np.ndarray, forecast: np.ndarray, truth: np.ndarray,
                      *, max_clips: int = 4, scale: int = 1, field: Field | None = None,
                      coords: Coords | None = None, grid: dict[str, Any] | None = None,
                      valid_times: np.ndarray | None = None, dpi: int = DPI) -> Path:
    """Static PNG: per clip a row of context frames, a row of truth and a row of forecast.

    ``field=(low, high, units)``: a physical field, drawn through a colour map with a colour bar.
    With usable ``coords`` (or a ``grid`` recording its coordinates) or ``valid_times`` it is drawn
    with matplotlib (:func:`forecast_grid_figure`: axes in the grid's coordinates, panels titled with
    valid time and lead; ``scale`` then does not apply).

    Args:
        path: the PNG to write (parent folders created).
        context: (clips, T_context, H, W, C) the observed frames.
        forecast: (clips, N, H, W, C) the forecast.
        truth: (clips, N', H, W, C) the observed future.
        max_clips: clips shown (the first ones).
        scale: pixel repeat of the PIL picture.
        field: ``(low, high, units)`` of a physical field (:func:`field_colours`); None for images.
        coords: the grid's coordinates (:meth:`predrnn.data.store.Version.grid_coords`).
        grid: the grid's description (a version's ``attrs["grid"]``).
        valid_times: (clips, T_context + N) datetime64 valid time of every frame (context, then leads).
        dpi: resolution of the matplotlib PNG.
    """
    path = Path(path)
    n = min(max_clips, context.shape[0])
    if _drawn_on_map(context.shape[2:4], coords, grid, valid_times) is not None:
        fig = forecast_grid_figure(context[:n], forecast[:n], truth[:n], field=field, coords=coords, grid=grid,
                                   valid_times=valid_times)
        return _save(fig, path, dpi)
    ctx, tr, fc = _to_rgb_u8(context[:n], field), _to_rgb_u8(truth[:n], field), _to_rgb_u8(forecast[:n], field)
    width = max(ctx.shape[1], tr.shape[1])
    H, W = ctx.shape[2:4]
    blank = np.zeros((H, W, 3), np.uint8)

    def row(seq: np.ndarray) -> np.ndarray:
        cells = [seq[t] if t < seq.shape[0] else blank for t in range(width)]
        return np.concatenate(cells, axis=1)

    rows = []
    for i in range(n):
        rows += [row(ctx[i]), row(tr[i]), row(fc[i]), np.full((3, width * W, 3), 90, np.uint8)]
    img = Image.fromarray(_with_bar(np.concatenate(rows, axis=0), field))
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


# ---------------------------------------------------------------------------------------------------------
# Pictures on the map: matplotlib (Agg), axes in the grid's coordinates, frames titled with valid time and lead


@dataclass(frozen=True)
class MapAxes:
    """Where the frames of a grid lie on a picture's axes.

    Attributes:
        kind: ``"xy"``: 1-D coordinates, ``x`` (W,) and ``y`` (H,) the cell centres in the grid's units
            (projected metres or km, or degrees of a regular lon/lat grid); ``"lonlat"``: only 2-D
            coordinates, ``x`` the longitude and ``y`` the latitude (H, W), degrees; ``"pixel"``: no
            coordinates, ``x`` the column and ``y`` the row index (row 0 at the top).
        x: the horizontal coordinate of the cells, (W,) or (H, W).
        y: the vertical coordinate of the cells, (H,) or (H, W).
        xlabel: the horizontal axis' label with its units, e.g. ``projection_x_coordinate (m)``.
        ylabel: the vertical axis' label with its units.
    """

    kind: str
    x: np.ndarray
    y: np.ndarray
    xlabel: str
    ylabel: str

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """The axes' limits ``(left, right, bottom, top)`` in the axes' coordinates: the outer cell edges,
        increasing to the right and up (north up) on the map, rows downwards for pixels."""
        if self.kind == "lonlat":
            cx, cy = _corners(self.x), _corners(self.y)
            return float(cx.min()), float(cx.max()), float(cy.min()), float(cy.max())
        ex, ey = _edges(self.x), _edges(self.y)
        if self.kind == "pixel":
            return float(ex[0]), float(ex[-1]), float(ey[-1]), float(ey[0])
        return float(ex.min()), float(ex.max()), float(ey.min()), float(ey.max())

    @property
    def aspect(self) -> float:
        """Data units of y per data unit of x that keep the map's shape (longitude shrunk by cos(lat))."""
        if self.kind == "lonlat" or (self.kind == "xy" and "degree" in self.xlabel and "degree" in self.ylabel):
            return 1.0 / max(np.cos(np.deg2rad(float(np.nanmean(self.y)))), 0.1)
        return 1.0


def map_axes(shape: tuple[int, int] | Any, coords: Coords | None = None,
             grid: dict[str, Any] | None = None) -> MapAxes:
    """How the frames of a (H, W) grid are placed on a picture's axes.

    The 1-D ``y``/``x`` coordinates are used when both exist (from ``coords``; with ``coords=None``
    rebuilt from the ``first``/``spacing`` that ``grid`` records for a coordinate with ``units`` or a
    ``standard_name``), labelled with their CF ``standard_name`` (or ``long_name``, or the dimension's
    name) and ``units``; else the 2-D ``lat``/``lon`` in degrees; else pixel indices. Coordinates that do
    not fit the grid (wrong size, not finite, not monotonic) are not used.

    Args:
        shape: ``(H, W)`` of the frames.
        coords: the grid's coordinate arrays (:meth:`predrnn.data.store.Version.grid_coords`): ``y`` (H,),
            ``x`` (W,), ``lat``, ``lon`` (H, W).
        grid: the grid's description (a version's ``attrs["grid"]``).
    """
    h, w = int(shape[0]), int(shape[1])
    rebuild = coords is None  # given arrays (even none: a version that stored none) are the grid's coordinates
    coords, grid = coords or {}, grid or {}
    axis: dict[str, np.ndarray] = {}
    for key, size in (("y", h), ("x", w)):
        c = coords.get(key)
        if c is not None:
            c = np.asarray(c, np.float64).reshape(-1)
        elif rebuild:
            c = _from_record(grid.get(key) or {}, size)
        if c is not None and c.size == size and np.isfinite(c).all() and _monotonic(c):
            axis[key] = c
    if "x" in axis and "y" in axis:
        return MapAxes("xy", axis["x"], axis["y"], _axis_label(grid.get("x") or {}, "x"),
                       _axis_label(grid.get("y") or {}, "y"))
    lat, lon = coords.get("lat"), coords.get("lon")
    if lat is not None and lon is not None:
        lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
        if lat.shape == lon.shape == (h, w) and np.isfinite(lat).all() and np.isfinite(lon).all():
            return MapAxes("lonlat", lon, lat, "longitude (degrees_east)", "latitude (degrees_north)")
    return MapAxes("pixel", np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64), "column (pixel)",
                   "row (pixel)")


def _from_record(info: dict[str, Any], size: int) -> np.ndarray | None:
    """A 1-D coordinate rebuilt from what ``attrs["grid"]`` records (``first``, ``spacing``, ``last``)."""
    first, spacing = info.get("first"), info.get("spacing")
    if first is None or (spacing is None and size > 1) or not (info.get("units") or info.get("standard_name")):
        return None  # nothing recorded, or a bare index (a dimension without coordinate values)
    c = float(first) + (float(spacing or 0.0)) * np.arange(size)
    last = info.get("last")
    if last is not None and not np.isclose(c[-1], float(last), rtol=1e-6, atol=1e-9 * max(1.0, abs(float(last)))):
        return None  # the record describes another grid (cropped, resampled)
    return c


def _monotonic(c: np.ndarray) -> bool:
    d = np.diff(c)
    return bool(c.size == 1 or (d > 0).all() or (d < 0).all())


def _axis_label(info: dict[str, Any], key: str) -> str:
    name = info.get("standard_name") or info.get("long_name") or info.get("dim") or key
    units = str(info.get("units") or "").strip()
    return f"{name} ({units})" if units else str(name)


def _edges(c: np.ndarray) -> np.ndarray:
    """(n,) cell centres -> (n + 1,) cell edges (midpoints, the ends extended by half a cell)."""
    c = np.asarray(c, np.float64)
    if c.size == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])


def _corners(c: np.ndarray) -> np.ndarray:
    """(H, W) cell centres -> (H + 1, W + 1) cell corners (means of the four neighbours, ends extrapolated)."""
    ext = np.pad(np.asarray(c, np.float64), 1, mode="reflect", reflect_type="odd")
    return (ext[:-1, :-1] + ext[1:, :-1] + ext[:-1, 1:] + ext[1:, 1:]) / 4


def _regular(c: np.ndarray) -> bool:
    d = np.diff(c)
    return bool(d.size < 2 or np.allclose(d, d[0], rtol=1e-3, atol=0.0))


def _drawn_on_map(shape: tuple[int, int] | Any, coords: Coords | None, grid: dict[str, Any] | None,
                  valid_times: np.ndarray | None) -> MapAxes | None:
    """The axes of a matplotlib picture, or None for the PIL picture (no usable coordinates, no times)."""
    if not coords and not grid and valid_times is None:
        return None
    layout = map_axes(shape, coords, grid)
    return layout if layout.kind != "pixel" or valid_times is not None else None


def time_text(t: Any) -> str:
    """A valid time as ``YYYY-MM-DD HH:MM UTC`` (datetime64: CF times decode to UTC), a number as
    ``t=12.5`` (a numeric time coordinate, in its units), NaT as ``?``."""
    t = np.asarray(t)
    if t.dtype.kind == "M":
        if np.isnat(t):
            return "?"
        return str(t.astype("datetime64[m]")).replace("T", " ") + " UTC"
    return "?" if not np.isfinite(t) else f"t={float(t):g}"


def lead_text(d: Any) -> str:
    """A lead time as ``+5 min`` (``-10 min`` before, ``0 min`` at the reference time; whole hours from 3 h
    as ``+6 h``, seconds as ``+30 s``); a number (numeric time coordinate) as ``+1.5``."""
    d = np.asarray(d)
    if d.dtype.kind == "m":
        if np.isnat(d):
            return "?"
        s = int(d / np.timedelta64(1, "s"))
        sign = "+" if s > 0 else "-" if s < 0 else ""
        s = abs(s)
        if s % 60:
            return f"{sign}{s} s"
        m = s // 60
        return f"{sign}{m // 60} h" if m >= 180 and m % 60 == 0 else f"{sign}{m} min"
    return "?" if not np.isfinite(d) else f"{float(d):+g}"


def _clip_times(valid_times: np.ndarray | None, clips: int, frames: int) -> np.ndarray | None:
    """The first ``clips`` rows and ``frames`` columns of ``valid_times`` (clips, >= frames); checked."""
    if valid_times is None:
        return None
    vt = np.asarray(valid_times)
    if vt.ndim != 2 or vt.shape[0] < clips or vt.shape[1] < frames:
        raise ValueError(f"valid_times must be (clips, T_context + N) = at least ({clips}, {frames}), "
                         f"got {vt.shape}")
    return vt[:clips, :frames]


def frame_titles(times: np.ndarray | None, context: int, frames: int, role: str = "forecast") -> list[str]:
    """The titles of one clip's frames: ``observed <lead>`` for the ``context`` frames, ``<role> <lead>``
    after, each over its valid time; lead from the last context frame (the reference time).

    Args:
        times: (frames,) valid times of the clip (datetime64 or numbers), or None: leads in steps.
        context: how many of the frames are observed context.
        frames: context + lead times.
        role: what the frames after the context are (``truth``, ``forecast``).
    """
    out = []
    for t in range(frames):
        who = "observed" if t < context else role
        if times is None:
            out.append(f"context {t + 1}/{context}" if t < context else f"{who} +{t - context + 1}")
        else:
            ref = times[context - 1]
            out.append(f"{who} {lead_text(times[t] - ref)}\n{time_text(times[t])}")
    return out


def _cmap() -> Any:
    from matplotlib import colormaps

    return colormaps["viridis"].with_extremes(bad=_NAN_GREY)


def _norm(field: Field) -> Any:
    from matplotlib.colors import Normalize

    return Normalize(vmin=field[0], vmax=field[1], clip=True)


class _Panel:
    """One axes showing one frame at a time (a field through the colour map, or an RGB image), in the
    coordinates of ``layout``; :meth:`show` replaces the frame in place (a GIF redraws one figure)."""

    def __init__(self, ax: Any, layout: MapAxes, field: Field | None, frame: np.ndarray):
        self.ax, self.layout, self.field = ax, layout, field
        data = self._data(frame)
        kw: dict[str, Any] = {"cmap": _cmap(), "norm": _norm(field)} if field is not None else {}
        if layout.kind == "lonlat":
            self.art = ax.pcolormesh(_corners(layout.x), _corners(layout.y), data, shading="flat", **kw)
        elif layout.kind == "xy" and field is not None and not (_regular(layout.x) and _regular(layout.y)):
            self.art = ax.pcolormesh(_edges(layout.x), _edges(layout.y), data, shading="flat", **kw)
        else:  # a regular grid: row 0 at y[0], column 0 at x[0], whichever way the coordinates run
            ex, ey = _edges(layout.x), _edges(layout.y)
            self.art = ax.imshow(data, origin="upper", extent=(ex[0], ex[-1], ey[-1], ey[0]),
                                 interpolation="nearest", **kw)
        left, right, bottom, top = layout.extent
        ax.set_xlim(left, right)
        ax.set_ylim(bottom, top)
        ax.set_aspect(layout.aspect)
        ax.tick_params(labelsize=6, length=2, pad=1)
        ax.ticklabel_format(useOffset=False, style="plain")
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(3, integer=layout.kind == "pixel"))
        ax.yaxis.set_major_locator(MaxNLocator(4, integer=layout.kind == "pixel"))

    def _data(self, frame: np.ndarray | None) -> np.ndarray:
        if self.field is None:  # an image: RGB uint8 as the PIL pictures show it
            return np.zeros((*self.layout_shape, 3), np.uint8) if frame is None else _to_rgb_u8(frame[None])[0]
        if frame is None:
            return np.ma.masked_all(self.layout_shape)
        x = np.asarray(frame, np.float64)
        return np.ma.masked_invalid(x[..., 0] if x.ndim == 3 else x)

    @property
    def layout_shape(self) -> tuple[int, int]:
        lay = self.layout
        return (lay.y.shape[0], lay.x.shape[-1])

    def show(self, frame: np.ndarray | None, title: str) -> None:
        """Show ``frame`` ((H, W, C) or (H, W); None: blank) titled ``title``."""
        data = self._data(frame)
        if hasattr(self.art, "set_data"):
            self.art.set_data(data)
        else:
            self.art.set_array(data)
        self.ax.set_title(title, fontsize=7, pad=2)


def _figure(rows: int, cols: int, layout: MapAxes, *, panel_in: float = 2.0, bar: bool = True) -> tuple[Any, Any]:
    """An Agg figure of rows x cols panels sharing the map's axes (no pyplot: safe in worker threads).

    The layout is fixed in inches (no layout engine: a figure of a hundred panels draws in seconds): room
    for two title lines over every row, tick labels and axis labels on the left column and the bottom
    row, room for a colour bar on the right (``bar``, :func:`_colour_bar_of`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    left, right, bottom, top = layout.extent
    ratio = abs(top - bottom) / max(abs(right - left), 1e-12) * layout.aspect
    ph = panel_in * float(np.clip(ratio, 0.3, 3.0))
    m_left, m_bottom, m_top, title, m_bar = 0.85, 0.5, 0.1, 0.34, (0.95 if bar else 0.15)
    gap, row_gap = 0.3, 0.12  # room between columns for the bottom row's outer tick labels
    width = m_left + cols * panel_in + (cols - 1) * gap + m_bar
    height = m_bottom + rows * (ph + title) + (rows - 1) * row_gap + m_top
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = np.empty((rows, cols), dtype=object)
    for i in range(rows):
        for j in range(cols):
            x0 = m_left + j * (panel_in + gap)
            y0 = height - m_top - (i + 1) * (ph + title) - i * row_gap
            ax = fig.add_axes((x0 / width, y0 / height, panel_in / width, ph / height))
            # the same limits on every panel (set by _Panel); shared axes would cost O(panels^2)
            ax.tick_params(labelleft=j == 0, labelbottom=i == rows - 1)
            axes[i, j] = ax
    return fig, axes


def _label_axes(axes: Any, layout: MapAxes) -> None:
    """Axis labels on the left column and the bottom row (the tick labels are shared)."""
    for ax in axes[:, 0]:
        ax.set_ylabel(layout.ylabel, fontsize=7, labelpad=2)
    for ax in axes[-1, :]:
        ax.set_xlabel(layout.xlabel, fontsize=7, labelpad=2)


def _colour_bar_of(fig: Any, axes: Any, field: Field | None) -> None:
    if field is None:
        return
    from matplotlib.cm import ScalarMappable

    w_in, _ = fig.get_size_inches()
    top = axes[0, -1].get_position(original=True)
    low = axes[-1, -1].get_position(original=True)  # the panels' own boxes, before their aspect shrinks them
    cax = fig.add_axes((top.x1 + 0.12 / w_in, low.y0, 0.14 / w_in, top.y1 - low.y0))
    bar = fig.colorbar(ScalarMappable(norm=_norm(field), cmap=_cmap()), cax=cax)
    bar.set_label(field[2], fontsize=7)
    bar.ax.tick_params(labelsize=6)


def figure_rgb(fig: Any) -> np.ndarray:
    """Draw a figure (Agg canvas) and return its pixels, (height, width, 3) uint8."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _save(fig: Any, path: Path, dpi: int) -> Path:
    fig.set_dpi(dpi)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


class ForecastAnimation:
    """The matplotlib figure of :func:`forecast_gif` on the map: one row per clip, columns truth (if
    given) and forecast; :meth:`show` draws frame ``t`` (context frames in every column, then the lead
    times) into the same figure.

    Args:
        context: (clips, T_context, H, W, C); forecast: (clips, N, H, W, C); truth: (clips, N', H, W, C) or None.
        field: ``(low, high, units)`` of a physical field, or None for images.
        layout: the axes (:func:`map_axes`).
        times: (clips, T_context + N) valid times, or None.
    """

    def __init__(self, context: np.ndarray, forecast: np.ndarray, truth: np.ndarray | None, *,
                 field: Field | None, layout: MapAxes, times: np.ndarray | None, dpi: int = DPI):
        if layout.kind == "lonlat" and field is None:  # an RGB image on a curvilinear grid: pixels
            layout = map_axes(context.shape[2:4])
        self.context, self.forecast, self.truth, self.times = context, forecast, truth, times
        self.n_ctx, self.frames = context.shape[1], context.shape[1] + forecast.shape[1]
        cols = 2 if truth is not None else 1
        self.fig, self.axes = _figure(context.shape[0], cols, layout, panel_in=2.2, bar=field is not None)
        self.fig.set_dpi(dpi)
        self.layout = layout
        self.panels = [[_Panel(self.axes[i, c], layout, field, context[i, 0]) for c in range(cols)]
                       for i in range(context.shape[0])]
        _label_axes(self.axes, layout)
        _colour_bar_of(self.fig, self.axes, field)
        self.titles = [{role: frame_titles(None if times is None else times[i], self.n_ctx, self.frames, role)
                        for role in ("truth", "forecast")} for i in range(context.shape[0])]

    def show(self, t: int) -> None:
        """Put frame ``t`` (0 .. T_context + N - 1) of every clip into the figure."""
        k = t - self.n_ctx
        for i, row in enumerate(self.panels):
            cells: list[tuple[np.ndarray | None, str]] = []
            if k < 0:
                cells = [(self.context[i, t], self.titles[i]["truth"][t])] * len(row)
            else:
                if self.truth is not None:
                    tr = self.truth[i, k] if k < self.truth.shape[1] else None
                    cells.append((tr, self.titles[i]["truth"][t]))
                cells.append((self.forecast[i, k], self.titles[i]["forecast"][t]))
            for panel, (frame, title) in zip(row, cells, strict=True):
                panel.show(frame, title)

    def rgb(self) -> np.ndarray:
        """The figure's pixels (height, width, 3) uint8 (the layout is fixed: no jitter between frames)."""
        return figure_rgb(self.fig)


def _map_gif(path: Path, context: np.ndarray, forecast: np.ndarray, truth: np.ndarray | None, *,
             field: Field | None, layout: MapAxes, times: np.ndarray | None, duration_ms: int, dpi: int) -> Path:
    anim = ForecastAnimation(context, forecast, truth, field=field, layout=layout, times=times, dpi=dpi)
    frames: list[Image.Image] = []
    palette: Image.Image | None = None
    for t in range(anim.frames):
        anim.show(t)
        img = Image.fromarray(anim.rgb())
        if palette is None:  # one palette for all frames (the colour bar carries every colour of the map)
            palette = img.quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
            frames.append(palette)
        else:
            frames.append(img.quantize(palette=palette, dither=Image.Dither.NONE))
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return path


def forecast_grid_figure(context: np.ndarray, forecast: np.ndarray, truth: np.ndarray, *,
                         field: Field | None = None, coords: Coords | None = None,
                         grid: dict[str, Any] | None = None, valid_times: np.ndarray | None = None) -> Any:
    """The matplotlib figure of :func:`forecast_grid_png` on the map: per clip a row of context frames,
    a row of truth and a row of forecast, each panel titled with its role, lead and valid time, axes in
    the grid's coordinates, one colour bar in the field's units.

    Args:
        context: (clips, T_context, H, W, C) observed frames.
        forecast: (clips, N, H, W, C) forecast.
        truth: (clips, N', H, W, C) observed future.
        field: ``(low, high, units)`` of a physical field, or None for images.
        coords: the grid's coordinates (:meth:`predrnn.data.store.Version.grid_coords`).
        grid: the grid's description (``attrs["grid"]``).
        valid_times: (clips, T_context + N) valid times (datetime64, UTC), or None.

    Returns:
        A ``matplotlib.figure.Figure`` on an Agg canvas.
    """
    n, n_ctx = context.shape[:2]
    times = _clip_times(valid_times, n, n_ctx + forecast.shape[1])
    layout = map_axes(context.shape[2:4], coords, grid)
    if layout.kind == "lonlat" and field is None:
        layout = map_axes(context.shape[2:4])
    width = max(n_ctx, truth.shape[1], forecast.shape[1])
    fig, axes = _figure(3 * n, width, layout, panel_in=1.7, bar=field is not None)
    for i in range(n):
        ct = None if times is None else times[i]
        for r, (role, seq, off) in enumerate((("truth", context[i], 0), ("truth", truth[i], n_ctx),
                                              ("forecast", forecast[i], n_ctx))):
            titles = frame_titles(ct, n_ctx, n_ctx + forecast.shape[1], role)
            for t in range(width):
                ax = axes[3 * i + r, t]
                if t >= seq.shape[0] or off + t >= len(titles):
                    ax.set_axis_off()
                    continue
                _Panel(ax, layout, field, seq[t]).show(seq[t], titles[off + t])
    _label_axes(axes, layout)
    _colour_bar_of(fig, axes, field)
    return fig


def nowcast_figure(context_last: np.ndarray, forecast: np.ndarray, *, reference_time: Any, lead_times: np.ndarray,
                   coords: Coords | None = None, grid: dict[str, Any] | None = None, field: Field,
                   leads_shown: int = 4) -> Any:
    """The figure of :func:`nowcast_png`: one row, the last observed frame then the forecast at up to
    ``leads_shown`` lead times spread over the horizon (the last one included, :func:`nowcast_leads`).

    Args:
        context_last: (H, W) the last observed frame in the data's units ((H, W, C): channel 0).
        forecast: (N, H, W) the forecast in the data's units ((N, H, W, C): channel 0).
        reference_time: datetime64 (UTC) of ``context_last``.
        lead_times: (N,) timedelta64 lead of every forecast frame.
        coords, grid: the grid's coordinates and description (:func:`map_axes`).
        field: ``(low, high, units)`` of the colour map.
        leads_shown: how many lead times to show.

    Returns:
        A ``matplotlib.figure.Figure`` on an Agg canvas; ``fig.axes[:-1]`` are the panels (the last
        axes is the colour bar).
    """
    fc = np.asarray(forecast, np.float64)
    fc = fc[..., 0] if fc.ndim == 4 else fc
    obs = np.asarray(context_last, np.float64)
    obs = obs[..., 0] if obs.ndim == 3 else obs
    leads = np.asarray(lead_times)
    if fc.ndim != 3 or leads.shape != (fc.shape[0],) or obs.shape != fc.shape[1:]:
        raise ValueError(f"need context_last (H, W), forecast (N, H, W) and lead_times (N,); got "
                         f"{obs.shape}, {fc.shape}, {leads.shape}")
    shown = nowcast_leads(fc.shape[0], leads_shown)
    layout = map_axes(obs.shape, coords, grid)
    fig, axes = _figure(1, 1 + len(shown), layout, panel_in=2.4)
    ref = np.asarray(reference_time)
    _Panel(axes[0, 0], layout, field, obs).show(obs, f"observed {time_text(ref)}")
    for ax, k in zip(axes[0, 1:], shown, strict=True):
        try:
            when = time_text(ref + leads[k])
        except TypeError:  # a reference time and lead times of different kinds
            when = "?"
        _Panel(ax, layout, field, fc[k]).show(fc[k], f"{lead_text(leads[k])}\n{when}")
    _label_axes(axes, layout)
    _colour_bar_of(fig, axes, field)
    return fig


def nowcast_leads(n: int, shown: int = 4) -> list[int]:
    """The indices of up to ``shown`` lead times spread evenly over a horizon of ``n``, ending at the last
    (12 leads, 4 shown: 2, 5, 8, 11)."""
    k = max(1, min(int(shown), n))
    return sorted({int(np.ceil((j + 1) * n / k)) - 1 for j in range(k)})


def nowcast_png(path: str | Path, context_last: np.ndarray, forecast: np.ndarray, *, reference_time: Any,
                lead_times: np.ndarray, coords: Coords | None = None, grid: dict[str, Any] | None = None,
                field: Field, leads_shown: int = 4, dpi: int = DPI) -> Path:
    """A PNG of one nowcast (what a scheduled nowcast shows as its artifact): one row, the last
    observed frame titled ``observed <reference time>``, then the forecast at up to ``leads_shown`` lead
    times spread over the horizon, each titled with its lead (``+15 min``) and valid time; one colour bar
    in the field's units; axes in the grid's coordinates (:func:`map_axes`), pixel indices without them.

    Args:
        path: the PNG to write (parent folders created).
        context_last: (H, W) the last observed frame, in the data's units (NaN: no data).
        forecast: (N, H, W) the forecast at the ``N`` lead times, in the data's units.
        reference_time: datetime64 (UTC) of ``context_last``: the forecast's reference time.
        lead_times: (N,) timedelta64 lead time of every forecast frame after ``reference_time``.
        coords: the grid's coordinates (:meth:`predrnn.data.store.Version.grid_coords`).
        grid: the grid's description (a version's ``attrs["grid"]``).
        field: ``(low, high, units)`` of the colour map (:func:`field_colours`).
        leads_shown: how many lead times to show.
        dpi: resolution of the PNG.
    """
    fig = nowcast_figure(context_last, forecast, reference_time=reference_time, lead_times=lead_times,
                         coords=coords, grid=grid, field=field, leads_shown=leads_shown)
    return _save(fig, Path(path), dpi)


def samples_figure(clips: np.ndarray, *, field: Field | None, coords: Coords | None = None,
                   grid: dict[str, Any] | None = None, valid_times: np.ndarray | None = None) -> Any:
    """A figure of sample clips on the map (a dataset's preview): one row per clip, one column per frame,
    each titled with its valid time (or frame index), axes in the grid's coordinates, one colour bar.

    Args:
        clips: (clips, T, H, W, C) frames: a field in its units (channel 0 shown) or an image.
        field: ``(low, high, units)`` of a physical field, or None for images.
        coords: the grid's coordinates; grid: the grid's description (``attrs["grid"]``).
        valid_times: (clips, >= T) valid times, or None.
    """
    k, f = clips.shape[:2]
    times = _clip_times(valid_times, k, f)
    layout = map_axes(clips.shape[2:4], coords, grid)
    if layout.kind == "lonlat" and field is None:
        layout = map_axes(clips.shape[2:4])
    fig, axes = _figure(k, f, layout, panel_in=1.5, bar=field is not None)
    for i in range(k):
        for j in range(f):
            title = f"frame {j}" if times is None else time_text(times[i, j]).replace(" UTC", "\nUTC")
            _Panel(axes[i, j], layout, field, clips[i, j]).show(clips[i, j], title)
    _label_axes(axes, layout)
    _colour_bar_of(fig, axes, field)
    return fig
