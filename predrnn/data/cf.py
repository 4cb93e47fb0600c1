"""Forecasts and datasets as CF-1.10 files (NetCDF or Zarr) that xarray, Panoply and GIS tools open.

A forecast leaves with its place and its times (CF conventions 1.10, sections 4 and 5):

* dimensions ``(reference_time, lead_time, y, x)``: ``reference_time`` (standard name
  ``forecast_reference_time``) is the valid time of the last context frame, ``lead_time``
  (``forecast_period``) the time after it, and the 2-D auxiliary coordinate ``valid_time`` (standard
  name ``time``) is ``reference_time + lead_time``. A source without a time coordinate has a ``clip``
  dimension instead and lead times in steps.
* the grid as the source had it: the 1-D ``y``/``x`` coordinates with their standard names and units
  (named as in the source), 2-D ``lat``/``lon`` where present, and the grid mapping variable (the CRS)
  that every data variable names in ``grid_mapping``.
* one data variable per variable of the source, named as there, with its ``units``, ``standard_name``,
  ``long_name`` and valid range; a 4-D source variable keeps its channel dimension (e.g. ``level``).
  The observed frames at the same valid times (``--truth``) are ``<variable>_observed``.
* global attributes naming the model (registry name, version, the alias it was resolved from, the
  weights' SHA-256), the source dataset version and the package version.

An ingested dataset version exports the same way with dimensions ``(clip, frame, y, x)`` and the 2-D
``valid_time`` of every frame (``(clip, frame)``). Files are written beside the destination and moved into
place last, so a reader never sees half a file.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from predrnn.data.errors import DataError

if TYPE_CHECKING:
    import xarray as xr

    from predrnn.data.store import S3Settings, Version

CF_CONVENTIONS = "CF-1.10"
Format = Literal["netcdf", "zarr"]
_EPOCH = np.datetime64("1970-01-01T00:00:00", "ns")
_TIME_UNITS = "seconds since 1970-01-01 00:00:00"
_SPLIT_FLAGS = {"flag_values": np.array([0, 1, 2], np.int8), "flag_meanings": "train validation test"}
_BLOCK_BYTES = 64 << 20  # clips per written block: about this many bytes
_CHANNEL = re.compile(r"^(?P<var>.+)\[(?P<dim>[^=\]]+)=(?P<label>[^\]]*)\]$")
REFERENCE = ("Wang et al., PredRNN: A Recurrent Neural Network for Spatiotemporal Predictive Learning, "
             "IEEE TPAMI 2022, doi:10.1109/TPAMI.2022.3165153")


@dataclass(frozen=True)
class Variable:
    """One data variable of the file: its source name, the channels it holds (indices into the last axis of
    the clips) and its CF attributes; ``channel_dim``/``labels`` for a 4-D source variable."""

    name: str
    channels: tuple[int, ...]
    attrs: dict[str, Any]
    channel_dim: str | None = None
    labels: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Grid:
    """Where and what the frames are: the data variables, the y/x dimensions and coordinates, 2-D lat/lon,
    the grid mapping, and how times are written (``numeric_units`` for a numeric time coordinate).

    Built from a dataset version's attributes (:func:`grid_of`) or a gridded source's description."""

    variables: tuple[Variable, ...]
    y_dim: str = "y"
    x_dim: str = "x"
    coords: dict[str, np.ndarray] = field(default_factory=dict)  # y, x (1-D), lat, lon (H, W)
    coord_attrs: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid_mapping: dict[str, Any] | None = None  # {"name": ..., CF attributes}
    numeric_units: str | None = None  # e.g. "hours since 2000-01-01" for a numeric time coordinate
    place: bool = False  # the source had coordinates or a grid mapping


def _number(v: Any) -> Any:
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return v
        return int(f) if f.is_integer() and re.fullmatch(r"[+-]?\d+", v) else f
    return v


def grid_of(attrs: dict[str, Any], coords: dict[str, np.ndarray] | None = None) -> Grid:
    """The :class:`Grid` a dataset version (or a gridded source's description) records.

    Args:
        attrs: the version's attributes (``channels``, ``grid``, ``time``, ``values``, ``units``), or a
            gridded source's :meth:`~predrnn.data.sources.grids.GridSource.inspect` ``extra`` with ``units``.
        coords: the grid's coordinate arrays (:meth:`predrnn.data.store.Version.grid_coords`).
    """
    coords = dict(coords or {})
    grid = attrs.get("grid") or {}
    channels = list(attrs.get("channels") or [])
    variables: list[Variable] = []
    for k, ch in enumerate(channels):
        name = str(ch.get("name", f"channel_{k}"))
        m = _CHANNEL.match(name)
        var = str(ch.get("variable") or (m.group("var") if m else name))
        cf: dict[str, Any] = {key: str(ch[key]) for key in ("standard_name", "long_name", "units") if ch.get(key)}
        for key in ("valid_min", "valid_max"):
            if ch.get(key) is not None:
                cf[key] = float(ch[key])
        if m and variables and variables[-1].name == var and variables[-1].channel_dim == m.group("dim"):
            last = variables[-1]
            variables[-1] = Variable(var, (*last.channels, k), last.attrs, last.channel_dim,
                                     (*last.labels, _number(m.group("label"))))
        elif m:
            variables.append(Variable(var, (k,), cf, m.group("dim"), (_number(m.group("label")),)))
        else:
            variables.append(Variable(var, (k,), cf))
    if not variables:  # video, generated digits, arrays: one unnamed variable
        values = attrs.get("values") or {}
        kind = values.get("kind") or ("image" if attrs.get("value_kind") == "image" else "field")
        units = str(values.get("units") or attrs.get("units") or "")
        cf = ({"long_name": "intensity", "units": "1"} if kind == "image" else
              {"long_name": "value", **({"units": units} if units else {})})
        c = int((attrs.get("frame_shape") or [0, 0, 1])[2])
        if c == 1:
            variables = [Variable("frames", (0,), cf)]
        else:
            variables = [Variable("frames", tuple(range(c)), cf, "channel", tuple(range(c)))]
    ydim = str((grid.get("y") or {}).get("dim") or "y")
    xdim = str((grid.get("x") or {}).get("dim") or "x")
    coord_attrs: dict[str, dict[str, Any]] = {}
    for key, info, axis in (("y", grid.get("y") or {}, "Y"), ("x", grid.get("x") or {}, "X")):
        a = {k: info[k] for k in ("standard_name", "long_name", "units", "axis") if info.get(k)}
        if key in coords:
            a.setdefault("axis", axis)
        coord_attrs[key] = a
    coord_attrs["lat"] = {"standard_name": "latitude", "units": "degrees_north"}
    coord_attrs["lon"] = {"standard_name": "longitude", "units": "degrees_east"}
    latlon = grid.get("latlon") or {}
    if latlon:
        names = {"lat": latlon.get("lat") or "lat", "lon": latlon.get("lon") or "lon"}
        coord_attrs["lat"]["_name"] = names["lat"]
        coord_attrs["lon"]["_name"] = names["lon"]
    time = attrs.get("time") or {}
    numeric = str(time.get("units") or "") if time.get("kind") == "number" else None
    gm = grid.get("grid_mapping")
    return Grid(tuple(variables), ydim, xdim, coords, coord_attrs, dict(gm) if gm else None, numeric or None,
                place=bool(coords or gm))


def nominal_step(attrs: dict[str, Any], times: np.ndarray | None = None) -> Any:
    """The time step a version records (``attrs["time"]["step"]``, e.g. ``5 min``): a ``timedelta64[ns]`` for
    datetimes, a float for a numeric time coordinate; else the most common step of ``times`` (n, T); None
    without times."""
    from predrnn.data.errors import DataError
    from predrnn.data.sources.grids import _parse_step

    text = str((attrs.get("time") or {}).get("step") or "")
    kind = (attrs.get("time") or {}).get("kind")
    if text and kind in ("datetime", "number"):
        try:
            return _parse_step(text.replace(" ", "") if kind == "datetime" else float(text), kind == "datetime")
        except (DataError, ValueError):
            pass
    if times is None or times.shape[-1] < 2:
        return None
    diffs = np.diff(times, axis=-1).reshape(-1)
    vals, counts = np.unique(diffs, return_counts=True)
    return vals[int(np.argmax(counts))]


def _time_coord(values: np.ndarray, dims: tuple[str, ...], grid: Grid, attrs: dict[str, Any]) -> tuple[Any, ...]:
    if values.dtype.kind == "M":
        return dims, values.astype("datetime64[ns]"), attrs
    units = grid.numeric_units or ""
    return dims, values.astype(np.float64), {**attrs, **({"units": units} if units else {})}


def _lead_coord(leads: np.ndarray, grid: Grid) -> tuple[Any, ...]:
    attrs = {"standard_name": "forecast_period", "long_name": "lead time after the reference time"}
    if leads.dtype.kind == "m":
        return ("lead_time",), leads.astype("timedelta64[ns]"), attrs
    units = (grid.numeric_units or "").split(" since ")[0].strip()
    if not units:  # lead times in steps of a source without a time coordinate
        return ("lead_time",), leads.astype(np.int64), {"long_name": "lead time in time steps", "units": "1"}
    return ("lead_time",), leads.astype(np.float64), {**attrs, "units": units}


def frames_dataset(values: np.ndarray, grid: Grid, *, first: tuple[str, np.ndarray | None],
                   second: tuple[str, np.ndarray | None], valid_time: np.ndarray | None = None,
                   observed: np.ndarray | None = None, extra: dict[str, tuple[Any, ...]] | None = None,
                   attrs: dict[str, Any] | None = None) -> xr.Dataset:
    """One block of clips as an :class:`xarray.Dataset` with CF coordinates and attributes.

    Args:
        values: (n, T, H, W, C) in the data's units (or the stored uint8 of an image dataset).
        first: the first dimension's name and coordinate, ``("reference_time", (n,) times)`` or
            ``("clip", (n,) indices)``.
        second: ``("lead_time", (T,) timedelta64 | numbers)`` or ``("frame", None)`` (frames of a clip, their
            times in ``valid_time``).
        valid_time: (n, T) the valid time of every frame (datetime64, or numbers for a numeric time
            coordinate); None without a time coordinate.
        observed: (n, T, H, W, C) the observed frames at the same valid times (``<variable>_observed``).
        extra: more coordinates along the first dimension, ``name -> (values (n,), attrs)``.
        attrs: global attributes (``Conventions`` is set here).

    Raises:
        DataError: ``values`` does not have as many channels as the grid's variables, or a frame size
            that differs from the grid's coordinates.
    """
    import xarray as xr

    n, t, h, w, c = values.shape
    want = sum(len(v.channels) for v in grid.variables)
    if c != want:
        raise DataError(f"{c} channels for the {want} channel(s) of variables "
                        f"{', '.join(v.name for v in grid.variables)}")
    d1, c1 = first
    d2, c2 = second
    ydim, xdim = grid.y_dim, grid.x_dim
    coords: dict[str, Any] = {}
    if c1 is not None:
        if d1 == "reference_time":
            coords[d1] = _time_coord(np.asarray(c1), (d1,), grid, {"standard_name": "forecast_reference_time",
                                                                  "long_name": "valid time of the last context "
                                                                               "frame"})
        else:
            coords[d1] = ((d1,), np.asarray(c1, np.int64), {"long_name": "clip index in the dataset version"})
    if d2 == "lead_time" and c2 is not None:
        coords[d2] = _lead_coord(np.asarray(c2), grid)
    if valid_time is not None:
        coords["valid_time"] = _time_coord(np.asarray(valid_time), (d1, d2), grid,
                                           {"standard_name": "time", "long_name": "valid time of each frame"})
    for key, dim in (("y", ydim), ("x", xdim)):
        if key in grid.coords:
            arr = np.asarray(grid.coords[key])
            if arr.size != (h if key == "y" else w):
                raise DataError(f"the grid's {key} coordinate has {arr.size} values for frames of {h}x{w}")
            coords[dim] = ((dim,), arr, grid.coord_attrs.get(key, {}))
    aux = []
    for key in ("lat", "lon"):
        if key in grid.coords:
            a = dict(grid.coord_attrs.get(key, {}))
            name = str(a.pop("_name", key))
            coords[name] = ((ydim, xdim), np.asarray(grid.coords[key]), a)
            aux.append(name)
    for name, (vals, a) in (extra or {}).items():
        coords[name] = ((d1,), np.asarray(vals), a)
    data_vars: dict[str, Any] = {}
    gm_name = None
    if grid.grid_mapping:
        gm = dict(grid.grid_mapping)
        gm_name = str(gm.pop("name", "crs"))
        data_vars[gm_name] = ((), np.int32(0), {k: v for k, v in gm.items() if v is not None})
    pairs: list[tuple[str, np.ndarray | None]] = [("", values), ("_observed", observed)]
    for kind, frames in pairs:
        if frames is None:
            continue
        for var in grid.variables:
            a = dict(var.attrs)
            if kind:
                a["long_name"] = f"observed {a.get('long_name') or var.name}"
            if gm_name:
                a["grid_mapping"] = gm_name
            block = frames[..., list(var.channels)]
            if block.dtype == np.float16:  # NetCDF has no half floats
                block = block.astype(np.float32)
            for key in ("valid_min", "valid_max"):
                if key in a:
                    a[key] = block.dtype.type(a[key]) if block.dtype.kind == "f" else a[key]
            if var.channel_dim:
                dims: tuple[str, ...] = (d1, d2, var.channel_dim, ydim, xdim)
                data = np.moveaxis(block, -1, 2)
                coords.setdefault(var.channel_dim, ((var.channel_dim,), np.asarray(var.labels), {}))
            else:
                dims, data = (d1, d2, ydim, xdim), block[..., 0]
            data_vars[var.name + kind] = (dims, data, a)
    ds = xr.Dataset(data_vars, coords=coords, attrs={"Conventions": CF_CONVENTIONS, **(attrs or {})})
    for coord in ds.coords:  # CF 2.5.1: coordinate variables carry no fill value
        ds[coord].encoding["_FillValue"] = None
    for var_name, da in ds.data_vars.items():
        if da.dtype.kind == "u":
            da.encoding["_FillValue"] = None
        if aux and var_name != gm_name:
            da.encoding["coordinates"] = " ".join(
                [c for c in ("valid_time", *aux, *(extra or {})) if c in ds.coords])
    return ds


def _encoding(ds: xr.Dataset, fmt: Format, first_dim: str) -> dict[str, dict[str, Any]]:
    """Time and lead-time units the file is written in (seconds since 1970, minutes or seconds), compression."""
    enc: dict[str, dict[str, Any]] = {}
    for name in ds.variables:
        da = ds[name]
        e: dict[str, Any] = {}
        if da.dtype.kind == "M":
            e = {"units": _TIME_UNITS, "calendar": "proleptic_gregorian", "dtype": "float64"}
        elif da.dtype.kind == "m":
            whole = np.all(np.asarray(da.values) % np.timedelta64(1, "m") == np.timedelta64(0, "ns"))
            e = {"units": "minutes" if whole else "seconds", "dtype": "float64"}
        elif fmt == "netcdf" and name in ds.data_vars and da.ndim >= 3:
            e = {"zlib": True, "complevel": 4, "chunksizes": tuple(1 if d == first_dim else ds.sizes[d]
                                                                     for d in da.dims)}
        if name in ds.coords or da.dtype.kind in "Mmu":
            e["_FillValue"] = None
        if e:
            enc[str(name)] = e
    return enc


def write_blocks(blocks: Iterator[xr.Dataset], out: str | Path, fmt: Format, *, first_dim: str) -> Path:
    """Write blocks of clips (each a :func:`frames_dataset`, concatenated along ``first_dim``) to ``out`` as
    one NetCDF-4 file or Zarr store, beside the destination first and moved into place last (a reader never
    sees half a file; an existing ``out`` is replaced only then).

    Raises:
        DataError: no block, or the destination cannot be written (nothing is left behind).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    _remove(tmp)
    try:
        first = next(blocks, None)
        if first is None:
            raise DataError(f"{out}: nothing to write")
        enc = _encoding(first, fmt, first_dim)
        if fmt == "zarr":
            with warnings.catch_warnings():  # consolidated metadata: not in the v3 spec yet, read by xarray
                warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
                first.to_zarr(tmp, mode="w", encoding=enc, consolidated=True, zarr_format=3)
                for block in blocks:
                    block.to_zarr(tmp, append_dim=first_dim, consolidated=True)
        else:
            first.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=enc, unlimited_dims=[first_dim])
            _append_netcdf(tmp, blocks, first_dim)
        if out.exists() or out.is_symlink():
            _remove(out)
        os.replace(tmp, out)
    except OSError as err:
        _remove(tmp)
        raise DataError(f"cannot write {out}: {err}") from None
    except BaseException:
        _remove(tmp)
        raise
    return out


def _append_netcdf(path: Path, blocks: Iterator[xr.Dataset], first_dim: str) -> None:
    """Append blocks along the unlimited dimension with netCDF4, encoding times as the first block did."""
    import netCDF4

    with netCDF4.Dataset(path, "a") as nc:
        start = len(nc.dimensions[first_dim])
        for block in blocks:
            n = int(block.sizes[first_dim])
            for name in block.variables:
                da = block[name]
                if first_dim not in da.dims:
                    continue
                var = nc.variables[str(name)]
                vals = np.asarray(da.values)
                if vals.dtype.kind == "M":
                    vals = (vals.astype("datetime64[ns]") - _EPOCH) / np.timedelta64(1, "s")
                sl = tuple(slice(start, start + n) if d == first_dim else slice(None) for d in da.dims)
                var[sl] = vals
            start += n


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def model_attrs(model: str | None, model_version: str | None, weights_sha256: str | None = None,
                baseline: str | None = None) -> dict[str, str]:
    """Global attributes that name the forecaster: ``predrnn_model`` (the registered model's name, or the
    reference as given), ``predrnn_model_version``, ``predrnn_model_alias`` (the alias it was resolved from),
    ``predrnn_weights_sha256``; ``predrnn_baseline`` for a baseline's forecasts."""
    out: dict[str, str] = {}
    if baseline:
        return {"predrnn_baseline": baseline}
    ref = model or ""
    m = re.fullmatch(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))?", ref)
    pinned = re.fullmatch(r"models:/(?P<name>[^/@]+)/(?P<version>\d+)", model_version or "")
    if m:
        out["predrnn_model"] = m.group("name")
        if m.group("alias"):
            out["predrnn_model_alias"] = m.group("alias")
        if m.group("version") or pinned:
            out["predrnn_model_version"] = m.group("version") or pinned.group("version")  # type: ignore[union-attr]
    elif ref:
        out["predrnn_model"] = Path(ref).name if "://" not in ref else ref
    if weights_sha256:
        out["predrnn_weights_sha256"] = weights_sha256
    return out


def _blocks(n: int, per_clip_bytes: int) -> Iterator[tuple[int, int]]:
    step = max(1, _BLOCK_BYTES // max(per_clip_bytes, 1))
    for i in range(0, n, step):
        yield i, min(n, i + step)


def export_version(uri: str, out: str | Path, fmt: Format, *, split: str = "all", truth: bool = False,
                   s3: S3Settings | None = None,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Export a dataset version's clips of ``split`` as a CF-1.10 NetCDF file or Zarr store (streamed: a block
    of clips in memory at a time).

    A forecast dataset (written by ``predrnn forecast``) has dimensions ``(reference_time, lead_time, y, x)``
    (``clip`` instead of ``reference_time`` when its source has no time coordinate), its source's grid,
    variables, units and grid mapping, and the model's attributes; ``truth`` adds the observed frames at the
    same valid times. An ingested version has ``(clip, frame, y, x)`` and the valid time of every frame.

    Args:
        uri: ``ROOT/NAME[@VERSION]``; ``split``: ``all``, ``train``, ``val`` or ``test``.
        s3: S3 settings for a version on S3 (as the door read them).
        progress: called with (clips written, clips) after each block.

    Returns:
        ``{"out", "clips", "dims", "variables"}``.

    Raises:
        DataError: an empty split, ``truth`` for a version that is not a forecast dataset, a source too
            short to hold the truth, or a destination that cannot be written.
    """
    from predrnn import __version__
    from predrnn.data.forecasts import ForecastClips
    from predrnn.data.store import open_version

    v = open_version(uri, s3)
    idx = v.split_indices(split)
    if idx.size == 0:
        sizes = ", ".join(f"{k} {n}" for k, n in v.attrs.get("split", {}).get("sizes", {}).items())
        raise DataError(f"{v.uri} has no {split!r} clips (splits: {sizes})")
    meta = v.attrs.get("forecast")
    codes = np.asarray(v.split_codes)[idx].astype(np.int8)
    split_attrs = {"long_name": "split of the clip", **_SPLIT_FLAGS}
    head: dict[str, Any] = {"history": f"{_now()} predrnn {__version__} data export {v.uri}", "references": REFERENCE,
            "predrnn_version": __version__}
    per_clip = int(np.prod(v.shape[1:])) * 4 * (2 if truth else 1)
    if isinstance(meta, dict):
        fc = ForecastClips(str(v.uri), s3)
        frames = fc.truth() if truth else None
        src: Version = open_version(meta["source"], s3)
        grid = grid_of(src.attrs, src.grid_coords())
        import zarr

        group: Any = zarr.open_group(v.backend.zarr_store(v.manifest["path"], read_only=True), mode="r")
        source_index = np.asarray(group["source_index"][:], np.int64)[idx]
        vt_src = src.valid_times(source_index)
        context, horizon = int(meta["context"]), int(meta["horizon"])
        first_dim = "clip"
        reference = leads = valid = None
        if vt_src is not None:
            reference = vt_src[:, context - 1]
            step = nominal_step(src.attrs, vt_src)
            leads = step * np.arange(1, horizon + 1) if step is not None else None
            if leads is not None:
                valid = reference[:, None] + leads[None, :]
                if np.unique(reference).size == reference.size:
                    first_dim = "reference_time"
        if leads is None:
            leads = np.arange(1, horizon + 1)
        head.update({"title": f"forecasts of {meta['source']}", "source": f"predrnn {__version__}",
                     "predrnn_forecast_dataset": str(v.uri), "predrnn_source_dataset": str(meta["source"]),
                     "predrnn_context_frames": context,
                     **model_attrs(meta.get("model"), meta.get("model_version"), meta.get("weights_sha256"),
                                   meta.get("baseline"))})
        second: tuple[str, np.ndarray | None] = ("lead_time", leads)

        def block(i: int, j: int) -> xr.Dataset:
            vals = v.read(idx[i:j])
            obs = frames[idx[i]:idx[j - 1] + 1][idx[i:j] - idx[i]] if frames is not None else None
            extra = {"split": (codes[i:j], split_attrs),
                     "source_clip": (source_index[i:j], {"long_name": "clip index in the source dataset version"})}
            if first_dim == "clip":
                c1: tuple[str, np.ndarray | None] = ("clip", idx[i:j])
                if reference is not None:  # repeated reference times: a coordinate along the clips
                    extra["reference_time"] = (reference[i:j], {"standard_name": "forecast_reference_time"})
            else:
                assert reference is not None
                c1 = ("reference_time", reference[i:j])
            ds = frames_dataset(vals, grid, first=c1, second=second,
                                valid_time=valid[i:j] if valid is not None else None, observed=obs,
                                extra=extra, attrs=head)
            return ds
    else:
        if truth:
            raise DataError(f"{v.uri} is not a forecast dataset: --truth exports a forecast's observed frames; "
                            "an ingested version's clips are the observations")
        grid = grid_of(v.attrs, v.grid_coords())
        first_dim = "clip"
        vt = v.valid_times(idx)
        head.update({"title": f"dataset {v.uri}", "source": str(v.attrs.get("source", {}).get("description", "")),
                     "predrnn_dataset": str(v.uri)})

        def block(i: int, j: int) -> xr.Dataset:
            return frames_dataset(v.read(idx[i:j]), grid, first=("clip", idx[i:j]), second=("frame", None),
                                  valid_time=vt[i:j] if vt is not None else None,
                                  extra={"split": (codes[i:j], split_attrs)}, attrs=head)

    def gen() -> Iterator[xr.Dataset]:
        for i, j in _blocks(int(idx.size), per_clip):
            yield block(i, j)
            if progress is not None:
                progress(j, int(idx.size))

    path = write_blocks(gen(), out, fmt, first_dim=first_dim)
    return {"out": str(path), "clips": int(idx.size), "dims": first_dim,
            "variables": [var.name for var in grid.variables]}


__all__ = ["CF_CONVENTIONS", "Grid", "Variable", "export_version", "frames_dataset", "grid_of", "model_attrs",
           "nominal_step", "write_blocks"]
