"""Gridded fields with a time coordinate (radar rainfall, reanalysis), read with xarray as CF defines them.

What is read (all through :func:`xarray.open_dataset`, lazily: only the frames of one window are ever
in memory):

* a NetCDF file; a folder of NetCDF files or a glob (``radar/*.nc``), one or many time steps per file
  (the usual radar archive: one file per scan); a Zarr store, v2 or v3, consolidated or not, as xarray
  writes it; each on disk or under ``s3://`` (fetched first, see :mod:`predrnn.data.sources.remote`).
* values CF-decoded by xarray: ``scale_factor``/``add_offset`` applied, ``_FillValue`` and
  ``missing_value`` cells NaN. The declared valid range (``valid_min``, ``valid_max``, ``valid_range``;
  CF 1.10 section 2.5.1, in packed units when the variable is packed) becomes the data's valid range,
  and values outside it are missing (NaN), as CF says; ``-o valid_min=``/``valid_max=`` override it.
* **time is a coordinate**: frames are ordered by their time values (repeated times are refused, named);
  the time step is the most common step between frames, or ``time_step`` (``5min``, ``1h``; a number
  for a numeric time coordinate); scan times that jitter around it count as regular within
  ``time_tolerance`` (``30s``; default: exact). Windows of ``window`` steps every ``stride`` steps are cut only inside
  runs of regularly spaced frames, never across a gap, and every clip records the valid time of each of
  its frames. A variable with no time coordinate keeps the order of its time dimension (files in name
  order) and says so.
* **place**: the grid's x/y coordinates and 2-D lat/lon (where present), the grid mapping variable's
  attributes (the CRS) and each variable's ``standard_name``, ``long_name`` and ``units`` are recorded.
* **several variables are channels**: ``variable=t2m,u10,v10`` makes one channel per variable, each
  with its own units and valid range; a 4-D variable takes its channel from the dimension that is not
  time, y or x (told from the dimension names or the coordinates' CF ``axis``/``standard_name``), or
  from ``channel_dim``.

A grid is one time-ordered sequence, so it is split by **contiguous time blocks**, not window by window
(neighbouring windows share frames or are strongly correlated): the time-ordered frames are cut into
``split_blocks`` equal blocks, each divided in time order into train, val and test segments of
``1 - val_fraction - test_fraction``, ``val_fraction`` and ``test_fraction`` of its frames, with
``split_gap`` frames dropped between two segments of different splits. Windows are cut inside each
segment only, so no frame reaches two splits.
"""

from __future__ import annotations

import glob
import json
import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from predrnn.data.errors import DataError
from predrnn.data.sources.base import (
    Clip,
    Source,
    SourceInfo,
    as_stored_float,
    files_checksum,
    natural_key,
    physical_float32,
)

if TYPE_CHECKING:
    from predrnn.data.store import S3Settings

_TIME_NAMES = ("time", "t", "times", "valid_time", "datetime", "date")
_Y_NAMES = {"y", "lat", "latitude", "rlat", "south_north", "yc", "row", "rows", "northing", "ny", "j",
            "projection_y_coordinate", "grid_latitude", "nlat"}
_X_NAMES = {"x", "lon", "longitude", "rlon", "west_east", "xc", "col", "cols", "easting", "nx", "i",
            "projection_x_coordinate", "grid_longitude", "nlon"}
_Y_STANDARD = {"projection_y_coordinate", "latitude", "grid_latitude"}
_X_STANDARD = {"projection_x_coordinate", "longitude", "grid_longitude"}
_NETCDF_SUFFIXES = {".nc", ".nc4", ".netcdf", ".cdf", ".h5", ".hdf5", ".he5"}
_CF_KEYS = ("standard_name", "long_name", "units")
_GAPS_KEPT = 200  # gaps listed in the version's attributes (all are counted)
_OPEN_FILES = 16  # files of an archive open at a time
_PLANS: OrderedDict[tuple[Any, ...], Any] = OrderedDict()  # scanned archives, by files and options
_PLANS_KEPT = 4


def _is_zarr(path: Path) -> bool:
    return path.is_dir() and (path.suffix == ".zarr" or any((path / m).exists() for m in
                                                            ("zarr.json", ".zgroup", ".zmetadata", ".zarray")))


def _open(path: Path) -> Any:
    """``xarray.open_dataset`` of one NetCDF file or Zarr store, lazily, CF-decoded."""
    import xarray as xr

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "not consolidated": read unconsolidated
            if _is_zarr(path):
                return xr.open_dataset(path, engine="zarr", consolidated=None, chunks=None,
                                       mask_and_scale=True, decode_times=True, create_default_indexes=False)
            return xr.open_dataset(path, engine="netcdf4", chunks=None, mask_and_scale=True, decode_times=True,
                                   cache=False, create_default_indexes=False)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        what = "Zarr store written by xarray (dimension names in _ARRAY_DIMENSIONS or " \
               "dimension_names)" if _is_zarr(path) else "NetCDF file"
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise DataError(f"{path}: not a readable {what} ({first})") from None


def _num(v: Any) -> float | None:
    if v is None:
        return None
    a = np.asarray(v).reshape(-1)
    return float(a[0]) if a.size else None


def _declared_range(da: Any) -> tuple[float | None, float | None]:
    """The CF valid range of a decoded variable, in its decoded units (CF 1.10 2.5.1)."""
    attrs, enc = da.attrs, da.encoding
    lo = hi = None
    raw_lo = raw_hi = None
    if "valid_range" in attrs:
        vr = np.asarray(attrs["valid_range"]).reshape(-1)
        if vr.size >= 2:
            raw_lo, raw_hi = vr[0], vr[1]
    raw_lo = attrs.get("valid_min", raw_lo)
    raw_hi = attrs.get("valid_max", raw_hi)
    scale, offset = enc.get("scale_factor"), enc.get("add_offset")
    packed = scale is not None or offset is not None
    packed_int = np.dtype(enc.get("dtype", da.dtype)).kind in "iu"

    def unpack(raw: Any) -> float | None:
        if raw is None:
            return None
        value = _num(raw)
        if value is None:
            return None
        kind = np.asarray(raw).dtype.kind
        if packed and packed_int and kind in "iu":  # stated in the packed type: unpack it
            value = value * (1.0 if scale is None else float(scale)) + (0.0 if offset is None else float(offset))
        return value

    lo, hi = unpack(raw_lo), unpack(raw_hi)
    return lo, hi


def _parse_step(value: Any, datetime: bool) -> Any:
    """The ``time_step`` option as a numpy timedelta64 (datetime times) or a float (numeric times)."""
    if value is None:
        return None
    if datetime:
        import pandas as pd

        try:
            step = pd.Timedelta(value if isinstance(value, str) else f"{value}s")
        except (ValueError, TypeError):
            raise DataError(f"option time_step must be a duration such as 5min, 300s or 1h, got {value!r}") from None
        if step <= pd.Timedelta(0):
            raise DataError(f"option time_step must be positive, got {value!r}")
        return np.timedelta64(step.value, "ns")
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise DataError(f"option time_step must be a positive number in the time coordinate's units, got {value!r}")
    return float(value)


def format_time(t: Any) -> str:
    """A time value as text: ISO 8601 to the second for datetimes (UTC as CF decodes it), else the number."""
    if isinstance(t, np.datetime64):
        return str(t.astype("datetime64[s]"))
    return f"{float(t):g}"


def format_step(d: Any) -> str:
    """A time difference as ``5 min``, ``1 h 30 min``, ``45 s`` (timedelta64), else the number."""
    if isinstance(d, np.timedelta64):
        s = int(d / np.timedelta64(1, "s"))
        if s % 60:
            return f"{s} s"
        h, m = divmod(s // 60, 60)
        days, h = divmod(h, 24)
        parts = [f"{days} d" if days else "", f"{h} h" if h else "", f"{m} min" if m else ""]
        return " ".join(p for p in parts if p) or "0 s"
    return f"{float(d):g}"


class _Files:
    """The archive's files opened on demand, at most :data:`_OPEN_FILES` at a time (least recently used
    closed first), so that an archive of thousands of scans holds a few file handles."""

    def __init__(self) -> None:
        self.open: OrderedDict[Path, Any] = OrderedDict()

    def get(self, path: Path) -> Any:
        if path in self.open:
            self.open.move_to_end(path)
            return self.open[path]
        ds = _open(path)
        self.open[path] = ds
        while len(self.open) > _OPEN_FILES:
            self.open.popitem(last=False)[1].close()
        return ds

    def close(self) -> None:
        while self.open:
            self.open.popitem()[1].close()


@dataclass
class _Part:
    """One file (or store) of the archive and the time steps it holds, in its own order."""

    path: Path
    files: _Files
    steps: int = 0

    @property
    def ds(self) -> Any:
        return self.files.get(self.path)


@dataclass
class _Layout:
    """How the chosen variables map to (time, y, x, channel)."""

    names: list[str]  # the variables read (one per channel, or one 4-D variable)
    time_dim: str
    y_dim: str
    x_dim: str
    channel_dim: str | None  # a 4-D variable's channel dimension
    channels: list[dict[str, Any]]  # per channel: name, units, standard_name, long_name, valid_min, valid_max
    shape: tuple[int, int, int]  # (H, W, C)


@dataclass
class _Timeline:
    """The frames in time order: where each lives, its time, the regular runs and the gaps."""

    part: np.ndarray  # (F,) index into the parts, in time order
    local: np.ndarray  # (F,) index along the part's time dimension
    times: np.ndarray | None  # (F,) datetime64[ns] or float64; None: no time coordinate
    step: Any = None
    gaps: list[dict[str, Any]] = field(default_factory=list)
    run_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (F,) regular run of each frame
    reordered: bool = False


class GridSource(Source):
    """NetCDF files (one, a folder, a glob) or a Zarr store holding variables with a time dimension."""

    kind = "netcdf"
    OPTIONS = {"variable": None, "window": 20, "stride": None, "time_dim": None, "units": None,
               "split_gap": 0, "split_blocks": 1, "time_step": None, "time_tolerance": None, "channel_dim": None}
    time_ordered = True
    reader_version = 2  # CF decoding through xarray, time as a coordinate (version 1 read Zarr packed values raw)

    def __init__(self, source: str | Path | None, options: dict[str, Any], *, s3: S3Settings | None = None):
        self.pattern: str | None = None
        text = str(source or "")
        if not text.startswith("s3://") and any(c in text for c in "*?["):
            base = Path(text.removeprefix("file://")).expanduser()
            fixed = next((i for i, p in enumerate(base.parts) if any(c in p for c in "*?[")), len(base.parts))
            root = Path(*base.parts[:fixed]) if fixed else Path(".")
            self.pattern = str(Path(*base.parts[fixed:]))
            source = str(root)
        super().__init__(source, options, s3=s3)
        self._handles = _Files()

    # -- the archive ---------------------------------------------------------------------------

    def _files(self) -> list[Path]:
        """The NetCDF files or the one Zarr store of the source, in natural name order."""
        assert self.path is not None
        if self.pattern is not None:
            found = [Path(p) for p in glob.glob(str(self.path / self.pattern), recursive=True)]
            files = sorted((p for p in found if p.is_file() or _is_zarr(p)), key=natural_key)
            if not files:
                raise DataError(f"{self.path / self.pattern}: no file matches")
            return files
        if self.path.is_file() or _is_zarr(self.path):
            return [self.path]
        files = sorted((p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in _NETCDF_SUFFIXES),
                       key=natural_key)
        if not files:
            raise DataError(f"{self.path}: a folder with no NetCDF file ({', '.join(sorted(_NETCDF_SUFFIXES))}) "
                            "and not a Zarr store (no zarr.json, .zgroup or .zmetadata)")
        return files

    def _close(self) -> None:
        self._handles.close()

    def _variable_names(self, ds: Any) -> list[str]:
        want = self.opts["variable"]
        if want is None:
            return []
        names = [w.strip() for w in (want.split(",") if isinstance(want, str) else want) if str(w).strip()]
        if not names or len(set(names)) != len(names):
            raise DataError(f"option variable must name one or more distinct variables, got {want!r}")
        return names

    def _time_dim(self, da: Any) -> str | None:
        tdim = self.opts["time_dim"]
        if tdim:
            return tdim if tdim in da.dims else None
        for d in da.dims:
            if str(d).lower() in _TIME_NAMES:
                return str(d)
        for d in da.dims:  # a dimension whose coordinate is decoded as datetimes
            if d in da.coords and np.issubdtype(da.coords[d].dtype, np.datetime64):
                return str(d)
        return None

    def _layout(self, part: _Part) -> _Layout:
        """Which variables, which dimensions; raises DataError with the candidates listed."""
        ds, where = part.ds, part.path
        names = self._variable_names(ds)
        data_vars = [str(n) for n in ds.data_vars]
        if not names:
            cands = [n for n in data_vars if ds[n].ndim in (3, 4) and self._time_dim(ds[n]) is not None]
            if len(cands) != 1:
                have = cands or data_vars
                raise DataError(f"{where}: choose the variable(s) with --variable NAME[,NAME...] "
                                f"({'candidates' if cands else 'no 3-D/4-D variable with a time dimension; have'}: "
                                f"{have})")
            names = cands
        missing = [n for n in names if n not in ds.variables]
        if missing:
            raise DataError(f"{where}: no variable {', '.join(map(repr, missing))} (variables: {data_vars})")
        first = ds[names[0]]
        tdim = self._time_dim(first)
        if tdim is None:
            if self.opts["time_dim"]:
                raise DataError(f"{where}: variable {names[0]!r} has no time dimension "
                                f"{self.opts['time_dim']!r} (dims {tuple(map(str, first.dims))})")
            tdim = str(first.dims[0])
        for n in names:
            da = ds[n]
            if da.ndim not in (3, 4):
                raise DataError(f"{where}: variable {n!r} has wrong rank {da.ndim} (dims {tuple(map(str, da.dims))}); "
                                "expected (time, y, x) or (time, y, x, channel)")
            if len(names) > 1 and (da.ndim != 3 or set(da.dims) != set(first.dims)):
                raise DataError(f"{where}: variables {names[0]!r} {tuple(map(str, first.dims))} and {n!r} "
                                f"{tuple(map(str, da.dims))} differ in dimensions; several variables become "
                                "channels only when each is (time, y, x) on the same grid")
        rest = [str(d) for d in first.dims if d != tdim]
        chdim: str | None = None
        if first.ndim == 4:
            chdim = self._channel_dim(first, rest, where, names[0])
            rest = [d for d in rest if d != chdim]
        ydim, xdim = self._yx(first, rest)
        channels: list[dict[str, Any]] = []
        units_opt = self.opts["units"]
        for n in names:
            da = ds[n]
            lo, hi = _declared_range(da)
            info = {"variable": n, **{k: str(da.attrs.get(k, "")) for k in _CF_KEYS}, "valid_min": lo, "valid_max": hi}
            if units_opt:
                info["units"] = str(units_opt)
            if chdim is None:
                channels.append({"name": n, **info})
            else:
                coord = ds[chdim].values if chdim in ds.coords else np.arange(da.sizes[chdim])
                channels.extend({"name": f"{n}[{chdim}={_label(c)}]", **info} for c in coord)
        shape = (int(first.sizes[ydim]), int(first.sizes[xdim]), len(channels))
        return _Layout(names, tdim, ydim, xdim, chdim, channels, shape)

    def _channel_dim(self, da: Any, rest: list[str], where: Path, name: str) -> str:
        want = self.opts["channel_dim"]
        dims = tuple(map(str, da.dims))
        if want:
            if want not in rest:
                raise DataError(f"{where}: option channel_dim={want!r} is not a dimension of {name!r} other than "
                                f"time (dims {dims})")
            return str(want)
        ys = [d for d in rest if self._is_axis(da, d, "Y")]
        xs = [d for d in rest if self._is_axis(da, d, "X")]
        others = [d for d in rest if d not in ys and d not in xs]
        if len(ys) == 1 and len(xs) == 1 and len(others) == 1:
            return others[0]
        raise DataError(f"{where}: variable {name!r} has dims {dims}: which one is the channel cannot be told from "
                        f"the names (y/lat, x/lon not both found); name it with -o channel_dim=NAME (one of "
                        f"{', '.join(rest)})")

    @staticmethod
    def _is_axis(da: Any, dim: str, axis: str) -> bool:
        names, standard = (_Y_NAMES, _Y_STANDARD) if axis == "Y" else (_X_NAMES, _X_STANDARD)
        if dim.lower() in names:
            return True
        if dim in da.coords:
            attrs = da.coords[dim].attrs
            return str(attrs.get("axis", "")).upper() == axis or attrs.get("standard_name") in standard
        return False

    def _yx(self, da: Any, rest: list[str]) -> tuple[str, str]:
        a, b = rest
        if self._is_axis(da, a, "X") and self._is_axis(da, b, "Y"):
            return b, a  # stored (x, y): frames are still (y, x)
        return a, b

    # -- time ---------------------------------------------------------------------------------

    def _timeline(self, parts: list[_Part], lay: _Layout) -> _Timeline:
        """Frames in time order, the time step, regular runs and gaps.

        Raises:
            DataError: repeated times (named), a time coordinate that is not numbers or datetimes, or a
                ``time_step`` that is no step of the data.
        """
        stamps: list[np.ndarray] = []
        has_time = True
        for k, part in enumerate(parts):
            ds = part.ds
            if k:
                other = self._layout(part)
                if other.shape != lay.shape or (other.y_dim, other.x_dim) != (lay.y_dim, lay.x_dim):
                    raise DataError(f"{part.path}: grid {other.shape[:2]} (dims {other.y_dim}, {other.x_dim}) differs "
                                    f"from {parts[0].path.name}'s {lay.shape[:2]} ({lay.y_dim}, {lay.x_dim})")
            if lay.time_dim not in ds[lay.names[0]].dims:
                raise DataError(f"{part.path}: variable {lay.names[0]!r} has no dimension {lay.time_dim!r} "
                                f"(dims {tuple(map(str, ds[lay.names[0]].dims))})")
            part.steps = int(ds[lay.names[0]].sizes[lay.time_dim])
            if lay.time_dim in ds.coords and has_time:
                values = np.asarray(ds.coords[lay.time_dim].values)
                if values.dtype == object:  # cftime dates (a non-standard calendar)
                    try:
                        import xarray as xr

                        values = np.asarray(xr.CFTimeIndex(values).to_datetimeindex(time_unit="ns"))
                    except (ValueError, TypeError, AttributeError) as err:
                        raise DataError(f"{part.path}: time coordinate {lay.time_dim!r} cannot be read as dates "
                                        f"({err})") from None
                if values.dtype.kind == "M":
                    values = values.astype("datetime64[ns]")
                elif values.dtype.kind in "iuf":
                    values = values.astype(np.float64)
                else:
                    raise DataError(f"{part.path}: time coordinate {lay.time_dim!r} holds {values.dtype}, not "
                                    "dates or numbers")
                stamps.append(values)
            else:
                has_time = False
        part_id = np.concatenate([np.full(p.steps, i, np.int64) for i, p in enumerate(parts)])
        local = np.concatenate([np.arange(p.steps, dtype=np.int64) for p in parts])
        if not has_time or not stamps:
            n = int(part_id.size)
            return _Timeline(part_id, local, None, run_id=np.zeros(n, np.int64))
        if len({s.dtype.kind for s in stamps}) > 1:
            raise DataError(f"{self.path}: the files' time coordinates mix dates and numbers")
        times = np.concatenate(stamps)
        if times.dtype.kind == "f" and not np.isfinite(times).all():
            raise DataError(f"{self.path}: the time coordinate holds NaN/inf")
        if times.dtype.kind == "M" and np.isnat(times).any():
            raise DataError(f"{self.path}: the time coordinate holds missing times (NaT)")
        order = np.argsort(times, kind="stable")
        reordered = bool((order != np.arange(order.size)).any())
        times, part_id, local = times[order], part_id[order], local[order]
        if times.size > 1:
            diffs = np.diff(times)
            dup = np.flatnonzero(diffs == diffs.dtype.type(0))
            if dup.size:
                shown = ", ".join(format_time(times[i]) for i in dup[:5])
                where = [f"{parts[part_id[i]].path.name}[{local[i]}]" for i in (dup[0], dup[0] + 1)]
                raise DataError(f"{self.path}: {dup.size} repeated time(s) in the time coordinate: {shown}"
                                f"{' ...' if dup.size > 5 else ''} (first in {where[0]} and {where[1]}); remove the "
                                "duplicate frames")
        datetime = times.dtype.kind == "M"
        step = _parse_step(self.opts["time_step"], datetime)
        if times.size < 2:
            return _Timeline(part_id, local, times, step, [], np.zeros(times.size, np.int64), reordered)
        diffs = np.diff(times)
        if step is None:
            vals, counts = np.unique(diffs, return_counts=True)
            step = vals[int(np.argmax(counts))]  # the most common step; ties: the shortest
        tolerance = _parse_step(self.opts["time_tolerance"], datetime) if self.opts["time_tolerance"] else None
        regular = diffs == step if tolerance is None else abs(diffs - step) <= tolerance
        if not regular.any() or (self.opts["time_step"] is None and regular.mean() < 0.5):
            raise DataError(f"{self.path}: only {int(regular.sum())} of {diffs.size} steps between frames are "
                            f"time_step={format_step(step)} (steps found: "
                            f"{', '.join(format_step(d) for d in np.unique(diffs)[:5])}); scan times that jitter "
                            "around a nominal step need -o time_step=5min -o time_tolerance=30s")
        run_id = np.concatenate([[0], np.cumsum(~regular)]).astype(np.int64)
        gaps = []
        for i in np.flatnonzero(~regular):
            d = diffs[i]
            gaps.append({"after": format_time(times[i]), "before": format_time(times[i + 1]),
                         "jump": format_step(d), "missing": format_step(d - step) if d > step else None,
                         "missing_steps": _missing(d, step)})
        return _Timeline(part_id, local, times, step, gaps, run_id, reordered)

    # -- windows and splits --------------------------------------------------------------------

    def _window_stride(self) -> tuple[int, int]:
        window = int(self.opts["window"])
        stride = int(self.opts["stride"] or window)
        if window < 1 or stride < 1:
            raise DataError(f"window and stride must be >= 1, got window={window}, stride={stride}")
        return window, stride

    def segments(self, total: int) -> list[tuple[str, int, int]]:
        """The time-block split of ``total`` time-ordered frames: ``[(split, first, stop), ...]``.

        Raises:
            DataError: a bad option, or a split asked for (fraction > 0) whose segments hold no whole
                window, naming the segment length and what would make it fit.
        """
        window, _ = self._window_stride()
        gap, blocks = self.opts["split_gap"], self.opts["split_blocks"]
        for key, v, low in (("split_gap", gap, 0), ("split_blocks", blocks, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise DataError(f"option {key} must be an integer >= {low}, got {v!r}")
        fractions = {"val": float(self.opts["val_fraction"]), "test": float(self.opts["test_fraction"])}
        fractions["train"] = 1.0 - fractions["val"] - fractions["test"]
        edges = np.linspace(0, total, blocks + 1).round().astype(int)
        out: list[tuple[str, int, int]] = []
        for b0, b1 in zip(edges[:-1], edges[1:], strict=True):
            length = int(b1 - b0)
            bounds = np.round(np.cumsum([0.0] + [fractions[s] for s in ("train", "val", "test")]) * length)
            parts = [(s, int(b0 + bounds[i]), int(b0 + bounds[i + 1])) for i, s in enumerate(("train", "val", "test"))]
            parts = [p for p in parts if p[2] > p[1]]
            for split, first, stop in parts:
                # the gap is taken from the later segment's start (the earlier one keeps its windows)
                if out and out[-1][0] != split:
                    first = min(stop, first + gap)
                out.append((split, first, stop))
        for split in ("train", "val", "test"):
            if fractions[split] <= 0:
                continue
            steps = [stop - first for s, first, stop in out if s == split]
            if not any(n >= window for n in steps):
                longest = max(steps, default=0)
                raise DataError(
                    f"{self.path}: the longest {split} time block holds {longest} of {total} time steps, fewer than "
                    f"window={window} (split_blocks={blocks}, split_gap={gap}, val_fraction={fractions['val']:g}, "
                    f"test_fraction={fractions['test']:g}); raise the {split} fraction, lower split_blocks or the "
                    f"window, or set the fraction to 0")
        return out

    def _windows(self, line: _Timeline) -> list[tuple[str, int, int, int]]:
        """Every window as ``(split, first frame, segment first, segment stop)`` (time-ordered frame
        indices), cut inside a segment and inside one regular run of frames."""
        window, stride = self._window_stride()
        total = int(line.part.size)
        out: list[tuple[str, int, int, int]] = []
        for split, first, stop in self.segments(total):
            runs = line.run_id[first:stop]
            start = first
            for k in range(first, stop + 1):  # each regular run inside the segment
                if k == stop or runs[k - first] != runs[start - first]:
                    out.extend((split, t0, first, stop) for t0 in range(start, k - window + 1, stride))
                    start = k
        if not out:
            raise DataError(f"{self.path}: empty source: {total} time steps"
                            + (f" in {len(line.gaps) + 1} regular runs (gaps: {len(line.gaps)})" if line.gaps else "")
                            + f", none holding window={window} consecutive steps")
        for split in ("train", "val", "test"):
            frac = float(self.opts[f"{split}_fraction"]) if split != "train" else 1.0
            if frac > 0 and not any(w[0] == split for w in out):
                raise DataError(f"{self.path}: the {split} time blocks hold no {window} consecutive regular steps "
                                f"(the time coordinate has {len(line.gaps)} gap(s); see `-o time_step`); "
                                f"lower the window, or change val_fraction/test_fraction/split_blocks")
        return out

    # -- the Source interface ------------------------------------------------------------------

    @property
    def _plan(self) -> tuple[list[_Part], _Layout, _Timeline, list[tuple[str, int, int, int]]]:
        """The scanned archive: parts, layout, timeline and windows; scanned once per process for the same
        files (path, size, mtime) and options (the pipeline's inspect, validate and write steps share it)."""
        if "_plan_cache" in self.__dict__:
            return self.__dict__["_plan_cache"]  # type: ignore[no-any-return]
        files = self._files()
        key = (tuple((str(f), *_stamp(f)) for f in files), json.dumps(self.options_fingerprint(), sort_keys=True,
                                                                       default=str))
        with _plans_lock:
            hit = _PLANS.get(key)
            if hit is not None:
                _PLANS.move_to_end(key)
        if hit is not None:
            steps, lay, line, wins, self._ranges, self._grid_arrays = hit
            parts = [_Part(f, self._handles, n) for f, n in zip(files, steps, strict=True)]
        else:
            parts, lay, line, wins = self._scan([_Part(f, self._handles) for f in files])
            with _plans_lock:
                _PLANS[key] = ([p.steps for p in parts], lay, line, wins, self._ranges, self._grid_arrays)
                while len(_PLANS) > _PLANS_KEPT:
                    _PLANS.popitem(last=False)
        self.__dict__["_plan_cache"] = (parts, lay, line, wins)
        return parts, lay, line, wins

    def _scan(self, parts: list[_Part]) -> tuple[list[_Part], _Layout, _Timeline, list[tuple[str, int, int, int]]]:
        lay = self._layout(parts[0])
        line = self._timeline(parts, lay)  # checks every part's grid against the first's as it goes
        lo_opt, hi_opt = self.opts["valid_min"], self.opts["valid_max"]
        self._ranges = [(lo_opt if lo_opt is not None else ch["valid_min"],
                         hi_opt if hi_opt is not None else ch["valid_max"]) for ch in lay.channels]
        self._grid_arrays = _grid_arrays(parts[0].ds, lay)
        return parts, lay, line, self._windows(line)

    def inspect(self) -> SourceInfo:
        assert self.path is not None
        try:
            parts, lay, line, wins = self._plan
            h, w, c = lay.shape
            label = f"{self.path}{'/' + self.pattern if self.pattern else ''}"
            self.check_frame_size(h, w, f"{label} [{','.join(lay.names)}]")
            extra = self._describe(parts, lay, line, wins)
            files = [p.path for p in parts]
        finally:
            self._close()
        window, _ = self._window_stride()
        if self.path.is_dir() and not _is_zarr(self.path):
            root, listed = self.path, files
        elif self.path.is_dir():
            root, listed = self.path, sorted((p for p in self.path.rglob("*") if p.is_file()), key=natural_key)
        else:
            root, listed = self.path.parent, [self.path]
        if self.pattern and any(_is_zarr(f) for f in files):
            listed = sorted((q for f in files for q in ([f] if f.is_file() else f.rglob("*")) if q.is_file()),
                            key=natural_key)
        what = "Zarr store" if _is_zarr(files[0]) else (f"{len(files)} NetCDF files" if len(files) > 1
                                                          else "NetCDF file")
        units = [ch["units"] for ch in lay.channels]
        return SourceInfo(kind=self.kind, location=str(self.path) + (f"/{self.pattern}" if self.pattern else ""),
                          description=f"{what}, variable{'s' if len(lay.names) > 1 else ''} {', '.join(lay.names)} "
                                      f"dims ({lay.time_dim}, {lay.y_dim}, {lay.x_dim}"
                                      f"{', ' + lay.channel_dim if lay.channel_dim else ''})",
                          checksum=files_checksum(root, listed), frame_shape=(h, w, c), frames=window,
                          dtype=self.opts["float_dtype"], value_kind="physical",
                          units=units[0] if len(set(units)) == 1 else ", ".join(units), clips_hint=len(wins),
                          has_source_split=True, extra=extra)

    def _describe(self, parts: list[_Part], lay: _Layout, line: _Timeline,
                  wins: list[tuple[str, int, int, int]]) -> dict[str, Any]:
        """What the version records about time and place (JSON-able), and the grid's coordinate arrays."""
        window, _ = self._window_stride()
        covered = np.zeros(line.part.size, bool)
        for _, t0, _, _ in wins:
            covered[t0:t0 + window] = True
        if line.times is None:
            time: dict[str, Any] = {"coordinate": None, "dimension": lay.time_dim,
                                    "note": f"no {lay.time_dim!r} coordinate: frames in "
                                            f"{'file and ' if len(parts) > 1 else ''}index order, windows cut by index"}
        else:
            time = {"coordinate": lay.time_dim, "kind": "datetime" if line.times.dtype.kind == "M" else "number",
                    "first": format_time(line.times[0]), "last": format_time(line.times[-1]),
                    "steps": int(line.times.size), "step": format_step(line.step),
                    "step_given": self.opts["time_step"] is not None,
                    "gaps": line.gaps[:_GAPS_KEPT], "gap_count": len(line.gaps),
                    "reordered": line.reordered}
            if line.times.dtype.kind != "M":
                units = str(parts[0].ds.coords[lay.time_dim].attrs.get("units", ""))
                time["units"] = units
        time["steps_in_no_window"] = int((~covered).sum())
        return {"variables": lay.names, "dims": [lay.time_dim, lay.y_dim, lay.x_dim]
                + ([lay.channel_dim] if lay.channel_dim else []),
                "channels": lay.channels, "files": len(parts), "time": time,
                "time_blocks": [list(seg) for seg in self.segments(int(line.part.size))],
                "grid": _grid(parts[0].ds, lay)}

    def grid_arrays(self) -> dict[str, np.ndarray]:
        """The grid's coordinate arrays to store beside the clips: ``y``, ``x`` (1-D) and ``lat``, ``lon``
        (2-D, (H, W)) where the source has them (read by :meth:`inspect` or :meth:`clips`)."""
        if not hasattr(self, "_grid_arrays"):
            self.inspect()
        return dict(self._grid_arrays)

    def clips(self) -> Iterator[Clip]:
        try:
            parts, lay, line, wins = self._plan
            window, _ = self._window_stride()
            for k, (split, t0, first, stop) in enumerate(wins):
                frames = slice(t0, t0 + window)
                when = (f"{format_time(line.times[t0])}..{format_time(line.times[t0 + window - 1])}"
                        if line.times is not None else f"{t0}..{t0 + window - 1}")
                where = f"{self.path} [{','.join(lay.names)}]: clip {k} (time {when})"
                x = self._read(parts, lay, line.part[frames], line.local[frames], where)
                times = None if line.times is None else line.times[frames]
                yield Clip(self._physical(x, lay, where), where, split=split, group=f"time {first}..{stop - 1}",
                           times=times)
        finally:
            self._close()

    def _read(self, parts: list[_Part], lay: _Layout, part_ids: np.ndarray, local: np.ndarray,
              where: str) -> np.ndarray:
        """The frames (part, local index) as (T, H, W, C) float, CF-decoded by xarray."""
        out: list[np.ndarray] = []
        order = [lay.time_dim, lay.y_dim, lay.x_dim] + ([lay.channel_dim] if lay.channel_dim else [])
        k = 0
        while k < part_ids.size:  # consecutive frames of one part are read in one request
            j = k
            while j + 1 < part_ids.size and part_ids[j + 1] == part_ids[k]:
                j += 1
            ds = parts[int(part_ids[k])].ds
            idx = local[k:j + 1]
            try:
                chans = [ds[n].isel({lay.time_dim: idx}).transpose(*order).values for n in lay.names]
            except (OSError, RuntimeError, IndexError, ValueError) as err:
                raise DataError(f"{where}: unreadable data in {parts[int(part_ids[k])].path.name} ({err})") from None
            x = chans[0] if lay.channel_dim else np.stack(chans, axis=-1)
            out.append(x)
            k = j + 1
        return np.concatenate(out) if len(out) > 1 else out[0]

    def _physical(self, x: np.ndarray, lay: _Layout, where: str) -> np.ndarray:
        """The stored float dtype in the data's units; values outside a CF-declared valid range become NaN
        (CF 2.5.1). Raises DataError for inf, or a value the stored dtype cannot hold."""
        y = physical_float32(x, where)
        for c, ch in enumerate(lay.channels):  # the source's own range; -o valid_min/max are checked, not masked
            lo = None if self.opts["valid_min"] is not None else ch["valid_min"]
            hi = None if self.opts["valid_max"] is not None else ch["valid_max"]
            if lo is None and hi is None:
                continue
            v = y[..., c]
            with np.errstate(invalid="ignore"):
                bad = (v < np.float32(lo)) if lo is not None else np.zeros(v.shape, bool)
                if hi is not None:
                    bad |= v > np.float32(hi)
            v[bad] = np.nan
        return as_stored_float(y, where, self.opts["float_dtype"])

    # -- the newest frames (a nowcast's context) ----------------------------------------------

    def frame_times(self) -> tuple[np.ndarray | None, Any, dict[str, Any], dict[str, np.ndarray]]:
        """The archive's frames in time order, without cutting windows or splits (an archive that holds
        only a few scans is read the same way).

        Returns:
            ``(times, step, place, coords)``: the valid time of every frame, (F,) datetime64[ns] or float64
            (None without a time coordinate); the time step (``time_step`` when given, else the most common
            one); what a dataset version records about the archive (``grid``, ``channels``, ``variables``,
            ``units``, ``time``); and the grid's coordinate arrays (as :meth:`grid_arrays`).

        Raises:
            DataError: as :meth:`inspect` (no variable, repeated times, grids that differ between files).
        """
        parts = [_Part(f, self._handles) for f in self._files()]
        lay = self._layout(parts[0])
        line = self._timeline(parts, lay)
        self.__dict__["_frames_cache"] = (parts, lay, line)
        units = [ch["units"] for ch in lay.channels]
        time: dict[str, Any] = {"coordinate": lay.time_dim if line.times is not None else None}
        if line.times is not None:
            time.update(kind="datetime" if line.times.dtype.kind == "M" else "number",
                        step=format_step(line.step) if line.step is not None else None)
            if line.times.dtype.kind != "M":
                time["units"] = str(parts[0].ds.coords[lay.time_dim].attrs.get("units", ""))
        place = {"grid": _grid(parts[0].ds, lay), "channels": lay.channels, "variables": lay.names,
                 "units": units[0] if len(set(units)) == 1 else ", ".join(units), "time": time,
                 "frame_shape": list(lay.shape)}
        return line.times, line.step, place, _grid_arrays(parts[0].ds, lay)

    def read_frames(self, positions: Any) -> np.ndarray:
        """Frames at ``positions`` of :meth:`frame_times`' order as (k, H, W, C) float32 in the data's units,
        CF-decoded, values outside the declared valid range NaN (as :meth:`clips` reads them).

        Raises:
            DataError: :meth:`frame_times` was not called first, or the data cannot be read.
        """
        if "_frames_cache" not in self.__dict__:
            raise DataError("read_frames needs frame_times() first")
        parts, lay, line = self.__dict__["_frames_cache"]
        pos = np.asarray(positions, np.int64)
        try:
            x = self._read(parts, lay, line.part[pos], line.local[pos], f"{self.path} [{','.join(lay.names)}]")
            return self._physical(x, lay, str(self.path)).astype(np.float32)
        finally:
            self._close()

    def channel_ranges(self) -> list[tuple[float | None, float | None]]:
        """Per channel, the valid range in force: the option where given, else the CF-declared one."""
        if not hasattr(self, "_ranges"):
            self.inspect()
        return list(self._ranges)


_plans_lock = threading.Lock()


def _stamp(path: Path) -> tuple[int, int]:
    """(size, mtime in ns) of a file, or of a Zarr store's metadata files (what changes when it is rewritten)."""
    if path.is_file():
        st = path.stat()
        return st.st_size, st.st_mtime_ns
    metas = [m for m in path.rglob("*") if m.name in ("zarr.json", ".zarray", ".zgroup", ".zmetadata", ".zattrs")]
    return len(metas), max((m.stat().st_mtime_ns for m in metas), default=0)


def _missing(d: Any, step: Any) -> int | None:
    """Frames missing in a gap of ``d`` at ``step`` (None when ``d`` is no multiple of the step)."""
    ratio = d / step
    k = float(ratio)
    return int(round(k)) - 1 if k > 1 and math.isclose(k, round(k)) else None


def _label(v: Any) -> str:
    if isinstance(v, np.generic):
        v = v.item()
    return f"{v:g}" if isinstance(v, float) else str(v)


def _coord_info(ds: Any, name: str) -> dict[str, Any]:
    c = ds.coords.get(name)
    out: dict[str, Any] = {"dim": name}
    if c is None or c.ndim != 1:
        return out
    v = np.asarray(c.values)
    out.update({k: str(c.attrs[k]) for k in ("standard_name", "long_name", "units", "axis") if k in c.attrs})
    if v.dtype.kind in "iuf" and v.size:
        out.update({"first": float(v[0]), "last": float(v[-1]),
                    "spacing": float(v[1] - v[0]) if v.size > 1 else None})
    return out


def _latlon_names(ds: Any, lay: _Layout) -> tuple[str | None, str | None]:
    """The 2-D latitude and longitude coordinates over (y, x), by CF standard_name/units or name."""
    lat = lon = None
    for name, c in ds.coords.items():
        if set(c.dims) != {lay.y_dim, lay.x_dim}:
            continue
        sn, units, low = c.attrs.get("standard_name", ""), str(c.attrs.get("units", "")), str(name).lower()
        if sn == "latitude" or units.startswith("degrees_n") or low in ("lat", "latitude", "nav_lat"):
            lat = str(name)
        elif sn == "longitude" or units.startswith("degrees_e") or low in ("lon", "longitude", "nav_lon"):
            lon = str(name)
    return lat, lon


def _grid(ds: Any, lay: _Layout) -> dict[str, Any]:
    """The grid's description: y/x coordinates, 2-D lat/lon names, the grid mapping (CRS attributes)."""
    da = ds[lay.names[0]]
    out: dict[str, Any] = {"y": _coord_info(ds, lay.y_dim), "x": _coord_info(ds, lay.x_dim)}
    lat, lon = _latlon_names(ds, lay)
    out["latlon"] = {"lat": lat, "lon": lon} if lat and lon else None
    gm = da.attrs.get("grid_mapping") or da.encoding.get("grid_mapping")
    if gm and str(gm).split(":")[0] in ds.variables:
        name = str(gm).split(":")[0]
        out["grid_mapping"] = {"name": name, **{k: _jsonable_attr(v) for k, v in ds[name].attrs.items()}}
    else:
        out["grid_mapping"] = None
    return out


def _grid_arrays(ds: Any, lay: _Layout) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, dim in (("y", lay.y_dim), ("x", lay.x_dim)):
        if dim in ds.coords and ds.coords[dim].ndim == 1 and ds.coords[dim].dtype.kind in "iuf":
            out[key] = np.asarray(ds.coords[dim].values, np.float64)
    lat, lon = _latlon_names(ds, lay)
    if lat and lon:
        for key, name in (("lat", lat), ("lon", lon)):
            out[key] = np.asarray(ds.coords[name].transpose(lay.y_dim, lay.x_dim).values, np.float64)
    return out


def _jsonable_attr(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v if isinstance(v, str | int | float | list | bool) or v is None else str(v)


__all__ = ["GridSource", "format_step", "format_time"]
