"""A nowcast from an archive: the newest regular frames of a radar (or any gridded) archive as the context,
a dated forecast out as a CF-1.10 file.

The archive is what the gridded ingest reads (:mod:`predrnn.data.sources.grids`): a NetCDF file, a folder
of one file per scan, a glob or a Zarr store, local or ``s3://``, read with the reader options the model's
training data was ingested with (variable, units, valid range, time step and tolerance), so a new scan is
decoded exactly as the training scans were. The context is the model's ``T_in`` frames, one time step
apart, ending at the newest frame at or before the forecast time. What cannot make a sound forecast is
refused in one line with the times named, before any weights are loaded:

* fewer than ``T_in`` frames up to that time;
* a gap inside the context (a missing scan: frames are never bridged);
* a newest frame older than ``max_age`` time steps at the forecast time (a stalled feed);
* a grid, variable or units other than the model's (the frame size, the y/x coordinates, the grid
  mapping, the variables and their units that training recorded).

The forecast leaves as :func:`predrnn.data.cf.frames_dataset` writes it: dimensions
``(reference_time, lead_time, y, x)``, ``valid_time = reference_time + lead_time``, the archive's grid and
grid mapping, each variable's units and standard name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from predrnn.config import ExperimentConfig
from predrnn.errors import PredrnnError

if TYPE_CHECKING:
    import xarray as xr

    from predrnn.data.store import S3Settings


class NowcastError(PredrnnError, ValueError):
    """The archive cannot give the model a context (too few frames, a gap, stale, another grid)."""


@dataclass(frozen=True)
class Context:
    """The context read from an archive for one forecast.

    Attributes:
        frames: (1, T_in, H, W, C) float32 in the data's units (NaN: no data).
        times: (T_in,) datetime64[ns], one time step apart; the last one is the reference time.
        step: the time step (timedelta64[ns]).
        place: the archive's ``grid``, ``channels``, ``variables``, ``units`` (as a dataset version records).
        coords: the grid's coordinate arrays (``y``, ``x``; ``lat``, ``lon`` (H, W)).
        newest: the newest frame's time in the archive (later than the reference time with ``at``).
    """

    frames: np.ndarray
    times: np.ndarray
    step: np.timedelta64
    place: dict[str, Any]
    coords: dict[str, np.ndarray] = field(default_factory=dict)
    newest: np.datetime64 | None = None

    @property
    def reference_time(self) -> np.datetime64:
        return np.datetime64(self.times[-1], "ns")


def parse_time(text: str | None) -> np.datetime64 | None:
    """``--at``: an ISO 8601 time (``2026-06-01T12:05``, ``...Z`` or with an offset, converted to UTC) as
    datetime64[ns]; None for None.

    Raises:
        NowcastError: text that is no time.
    """
    if text is None or str(text).strip() == "":
        return None
    import pandas as pd

    try:
        t = pd.Timestamp(str(text).strip())
    except (ValueError, TypeError):
        raise NowcastError(f"--at must be a time such as 2026-06-01T12:05Z, got {text!r}") from None
    if t.tzinfo is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return np.datetime64(t.to_datetime64(), "ns")


def utc_now() -> np.datetime64:
    """The current time in UTC as datetime64[ns] (the default forecast time)."""
    import datetime as dt

    return np.datetime64(dt.datetime.now(dt.UTC).replace(tzinfo=None), "ns")


def _fmt(t: Any) -> str:
    from predrnn.data.sources.grids import format_time

    return format_time(np.datetime64(t, "ns"))


def _fmt_step(d: Any) -> str:
    from predrnn.data.sources.grids import format_step

    return format_step(np.timedelta64(d, "ns"))


def select_context(times: np.ndarray, step: np.timedelta64, count: int, *, at: np.datetime64,
                   max_age_steps: float, tolerance: np.timedelta64 | None = None, where: str = "archive"
                   ) -> np.ndarray:
    """The positions of the ``count`` frames that end at the newest frame at or before ``at``, checked.

    Args:
        times: (F,) datetime64[ns], increasing (the archive's frames in time order).
        step: the time step; ``tolerance``: how far a step may be from it and still be regular (scan jitter).
        at: the forecast time; the newest frame at or before it must be at most ``max_age_steps`` steps old.

    Returns:
        (count,) int64 positions into ``times``, in time order.

    Raises:
        NowcastError: no frame at or before ``at``, a newest frame too old, fewer than ``count`` frames, or a
            gap inside the context, each naming the times.
    """
    upto = int(np.searchsorted(times, at, side="right"))
    if upto == 0:
        first = f"; its first frame is {_fmt(times[0])}" if times.size else ""
        raise NowcastError(f"{where}: no frame at or before {_fmt(at)}{first}")
    newest = times[upto - 1]
    age = at - newest
    limit = step * max_age_steps
    if age > limit:
        shown = age if age < np.timedelta64(1, "h") else age - age % np.timedelta64(1, "m")
        raise NowcastError(f"{where}: the newest frame {_fmt(newest)} is {_fmt_step(shown)} old at {_fmt(at)}, older "
                           f"than --max-age {max_age_steps:g} steps ({_fmt_step(limit)}); a stalled feed, or pass "
                           "--at TIME for a past forecast")
    if upto < count:
        raise NowcastError(f"{where}: {upto} frame(s) up to {_fmt(newest)}; the model's context is {count} frames "
                           f"every {_fmt_step(step)} ending there")
    pos = np.arange(upto - count, upto, dtype=np.int64)
    window = times[pos]
    diffs = np.diff(window)
    tol = tolerance if tolerance is not None else np.timedelta64(0, "ns")
    bad = np.flatnonzero(np.abs(diffs - step) > tol)
    if bad.size:
        k = int(bad[-1])  # the latest gap decides when a regular context exists again
        gap_from, gap_to = window[k], window[k + 1]
        missing: list[str] = []
        t = gap_from + step
        while t < gap_to - tol and len(missing) < 6:
            missing.append(_fmt(t))
            t = t + step
        what = (f"{', '.join(missing)} missing" if missing and diffs[k] > step
                else f"{_fmt_step(diffs[k])} between {_fmt(gap_from)} and {_fmt(gap_to)}")
        raise NowcastError(f"{where}: a gap inside the context {_fmt(window[0])}..{_fmt(window[-1])}: {what} "
                           f"(frames every {_fmt_step(step)}); a forecast needs {count} regular frames: the first "
                           f"one after the gap is at {_fmt(gap_to + step * (count - 1))}")
    return pos


def _coord_summary(info: dict[str, Any] | None) -> tuple[Any, ...]:
    info = info or {}
    return tuple(info.get(k) for k in ("first", "last", "spacing"))


def check_place(archive: dict[str, Any], model: dict[str, Any], cfg: ExperimentConfig, *,
                where: str = "archive") -> None:
    """The archive's frames are those the model was trained on: frame size and channels, variables and
    their units, the y/x coordinates (first, last, spacing) and the grid mapping.

    Args:
        archive: the archive's place (:meth:`GridSource.frame_times`); ``model``: the model's
            (:func:`predrnn.data.info.place_of`, empty for a model that recorded none: only the frame size,
            channels and units are checked then).

    Raises:
        NowcastError: the first difference, with both sides named.
    """
    from predrnn.values import channel_names, field_units

    h, w, c = (int(x) for x in archive.get("frame_shape", (0, 0, 0)))
    d = cfg.data
    fixed = cfg.model.layer_norm
    p = cfg.model.patch_size
    if c != d.img_channel or (fixed and (h, w) != (d.img_height, d.img_width)) or h % p or w % p:
        want = f"{d.img_height}x{d.img_width}x{d.img_channel}" if fixed else \
            f"HxWx{d.img_channel}, H and W multiples of the patch size {p} (trained on {d.img_height}x{d.img_width})"
        raise NowcastError(f"{where}: frames of {h}x{w}x{c} (H x W x variables); the model takes {want}")
    names = [str(ch.get("variable") or ch.get("name")) for ch in archive.get("channels") or []]
    model_names = [str(ch.get("variable") or ch.get("name")) for ch in model.get("channels") or []] or \
        channel_names(cfg.values)
    if model_names and names != model_names and [n.split("[")[0] for n in names] != model_names:
        raise NowcastError(f"{where}: variables {', '.join(names)}; the model was trained on {', '.join(model_names)}")
    units = [str(ch.get("units", "")) for ch in archive.get("channels") or []]
    model_units = ([str(ch.get("units", "")) for ch in model.get("channels") or []]
                   or [ch.units for ch in cfg.values.channels] or [field_units(cfg.values)])
    if model_units and any(model_units) and units != model_units:
        raise NowcastError(f"{where}: units {', '.join(units) or 'none'}; the model was trained on "
                           f"{', '.join(model_units)}")
    grid, mgrid = archive.get("grid") or {}, model.get("grid") or {}
    if not mgrid:
        return
    for axis in ("y", "x"):
        a, m = _coord_summary(grid.get(axis)), _coord_summary(mgrid.get(axis))
        close = all((u is None and v is None) or (u is not None and v is not None
                                                   and math.isclose(u, v, rel_tol=1e-6, abs_tol=1e-6))
                    for u, v in zip(a, m, strict=True))
        if not close:
            units = (mgrid.get(axis) or {}).get("units", "")
            raise NowcastError(f"{where}: the {axis} coordinate runs {a[0]}..{a[1]} (spacing {a[2]}); the model's "
                               f"grid runs {m[0]}..{m[1]} (spacing {m[2]}) {units}".rstrip())
    gm, mgm = grid.get("grid_mapping") or {}, mgrid.get("grid_mapping") or {}
    keys = sorted((set(gm) | set(mgm)) - {"name"})
    differ = [k for k in keys if str(gm.get(k)) != str(mgm.get(k))]
    if differ:
        k = differ[0]
        raise NowcastError(f"{where}: grid mapping {k} = {gm.get(k)!r}; the model's grid has {mgm.get(k)!r}")


def read_context(archive: str, model_place: dict[str, Any], cfg: ExperimentConfig, *, at: np.datetime64 | None = None,
                 now: np.datetime64 | None = None, max_age_steps: float = 3, s3: S3Settings | None = None
                 ) -> Context:
    """Read the model's context from ``archive`` (see the module docstring): checked, then decoded.

    Args:
        archive: a NetCDF file, a folder of files, a glob or a Zarr store (local or ``s3://``).
        model_place: what the model recorded about its data (:func:`predrnn.data.info.place_of`); its reader
            options (variable, units, valid range, time step and tolerance) read the archive.
        cfg: the model's config (``data.input_length`` frames; the frame size, channels and units it takes).
        at: the forecast time (default ``now``, default the current UTC time).
        max_age_steps: how many time steps old the newest frame may be at the forecast time.

    Raises:
        NowcastError: see :func:`select_context` and :func:`check_place`; an archive without a time
            coordinate, or that cannot be read (one line).
    """
    from predrnn.data.errors import DataError
    from predrnn.data.sources.grids import GridSource, _parse_step

    reader = dict((model_place.get("reader") or {}).get("options") or {})
    step_text = (model_place.get("time") or {}).get("step")
    if not reader.get("time_step") and step_text:
        reader["time_step"] = str(step_text).replace(" ", "")
    if not reader.get("variable") and model_place.get("variables"):  # the model's variables, never a guess
        reader["variable"] = ",".join(str(v) for v in model_place["variables"])
    reader["float_dtype"] = "float32"
    where = str(archive)
    try:
        src = GridSource(archive, reader, s3=s3)
        times, step, place, coords = src.frame_times()
        if times is None or times.dtype.kind != "M":
            raise NowcastError(f"{where}: no time coordinate of dates; a nowcast needs the valid time of every "
                               "frame")
        check_place(place, model_place, cfg, where=where)
        tol = _parse_step(reader["time_tolerance"], True) if reader.get("time_tolerance") else None
        when = at if at is not None else (now if now is not None else utc_now())
        pos = select_context(times, step, cfg.data.input_length, at=when, max_age_steps=max_age_steps,
                             tolerance=tol, where=where)
        frames = src.read_frames(pos)[None]
    except DataError as err:
        raise NowcastError(str(err)) from None
    return Context(frames=frames, times=times[pos], step=step, place=place, coords=coords,
                   newest=np.datetime64(times[-1], "ns"))


def nowcast_dataset(forecast: np.ndarray, context: Context, *, attrs: dict[str, Any]) -> xr.Dataset:
    """The forecast of one context as a CF-1.10 dataset: ``(reference_time, lead_time, y, x)`` with
    ``valid_time``, the archive's grid and grid mapping, one data variable per variable.

    Args:
        forecast: (1, N, H, W, C) float32 in the data's units.
        attrs: global attributes (the model's, :func:`predrnn.data.cf.model_attrs`, and the archive's).
    """
    from predrnn.data.cf import frames_dataset, grid_of

    leads = context.step * np.arange(1, forecast.shape[1] + 1)
    ref = np.asarray([context.reference_time], "datetime64[ns]")
    return frames_dataset(forecast, grid_of(context.place, context.coords), first=("reference_time", ref),
                          second=("lead_time", leads), valid_time=ref[:, None] + leads[None], attrs=attrs)


__all__ = ["Context", "NowcastError", "check_place", "nowcast_dataset", "parse_time", "read_context",
           "select_context", "utc_now"]
