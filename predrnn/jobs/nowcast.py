"""The nowcast use case: an archive in, a dated CF forecast out (:mod:`predrnn.nowcast`).

``prepare_nowcast`` resolves the model (an alias pinned to its version, the model directory fetched once)
and reads its context from the archive, refusing what cannot make a forecast before any weights load;
``run_nowcast`` forecasts with the model kept loaded in this process (a long-lived worker or ``predrnn
nowcast --every`` pays the start-up once) and ``write_nowcast`` puts the CF file in place atomically.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from predrnn.config import ExperimentConfig
from predrnn.nowcast import Context, NowcastError

if TYPE_CHECKING:
    import xarray as xr

    from predrnn.data.store import S3Settings

_LOADED: OrderedDict[str, tuple[Any, str]] = OrderedDict()  # model directory -> (net, weights digest)
_LOADED_KEPT = 2


@dataclass(frozen=True)
class NowcastSpec:
    """One nowcast resolved at the door.

    Attributes:
        model: the reference as given; ``version``: ``models:/NAME/VERSION`` it was pinned to (None for a
            model directory); ``model_dir``: the local model directory the weights load from.
        cfg: the model's config; ``place``: what it recorded about its training data's grid and time.
        archive: where the frames were read; ``context``: the frames, their times and the archive's grid.
        horizon: lead times forecast; ``precision``: ``fp32`` or ``bf16`` (resolved).
    """

    model: str
    version: str | None
    model_dir: str
    cfg: ExperimentConfig
    place: dict[str, Any]
    archive: str
    context: Context = field(repr=False)
    horizon: int = 1
    precision: str = "fp32"
    precision_note: str = ""

    @property
    def reference_time(self) -> np.datetime64:
        return self.context.reference_time

    def file_name(self, suffix: str = ".nc") -> str:
        """``YYYYmmddTHHMMSSZ.nc``: the reference time, the name a scheduled nowcast writes it under."""
        return reference_name(self.reference_time) + suffix

    def describe(self) -> str:
        from predrnn.data.sources.grids import format_step, format_time

        t = self.context.times
        return (f"nowcast of {self.version or self.model}: context {format_time(t[0])}..{format_time(t[-1])} "
                f"({t.size} frames every {format_step(self.context.step)}) from {self.archive} -> lead times "
                f"{format_step(self.context.step)}..{format_step(self.context.step * self.horizon)}; "
                f"{self.precision_note}")


@dataclass(frozen=True)
class NowcastResult:
    """A nowcast: the forecast (1, N, H, W, C) in the data's units, its CF dataset, and the seconds spent
    loading the model (0 when it was loaded already) and forecasting."""

    forecast: np.ndarray
    dataset: xr.Dataset = field(repr=False)
    load_s: float
    forecast_s: float
    weights_sha256: str


def reference_name(t: np.datetime64) -> str:
    """A reference time as a file name stem, ``20260601T120500Z`` (UTC)."""
    return str(np.asarray(t).astype("datetime64[s]")).replace("-", "").replace(":", "") + "Z"


def model_record(ref: str, *, tracking_uri: str | None, cache_dir: Path | None
                 ) -> tuple[str | None, Path, ExperimentConfig, dict[str, Any]]:
    """``(pinned version, model directory, config, place)`` of a model reference, without loading weights:
    a model directory (or a run's checkpoint folder), or a registry reference downloaded once into
    ``cache_dir``.

    Raises:
        CheckpointError: not a model directory.
        TrackingError: the store is unreachable or the reference does not resolve.
    """
    from predrnn.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError
    from predrnn.forecaster import is_registry_ref

    version = None
    if is_registry_ref(ref):
        from predrnn.tracking.model import pinned_ref, registered_model_dir

        version = pinned_ref(ref, tracking_uri) if tracking_uri else None
        path = registered_model_dir(version or ref, tracking_uri, cache_dir)
    else:
        path = Path(ref)
        if (path / "train_state.pt").is_file():
            path = path / "model"
    if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{path} is not a model directory (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    cfg = ExperimentConfig.from_json((path / CONFIG_FILE).read_text())
    extra_file = path / "extra.json"
    extra = json.loads(extra_file.read_text()) if extra_file.is_file() else {}
    place = dict((extra.get("dataset") or {}).get("place") or {})
    return version, path.resolve(), cfg, place


def prepare_nowcast(model: str, archive: str, *, horizon: int | None = None, at: str | None = None,
                    now: np.datetime64 | None = None, max_age_steps: float = 3, precision: str = "auto",
                    tracking_uri: str | None = None, cache_dir: Path | None = None,
                    s3: S3Settings | None = None) -> NowcastSpec:
    """Resolve a nowcast once: the model pinned and its directory fetched (weights not loaded), its context
    read from ``archive`` and checked against the model's grid and time step.

    Args:
        model: a model directory, a run's checkpoint folder, or ``models:/NAME@ALIAS`` / ``models:/NAME/N``.
        archive: a NetCDF file, a folder of one file per scan, a glob or a Zarr store (local or ``s3://``).
        horizon: lead times (default: the model's training horizon).
        at: the forecast time (ISO 8601; default ``now``, default the current UTC time): the context ends
            at the newest frame at or before it.
        max_age_steps: how many time steps old that frame may be.
        precision: ``auto``, ``bf16`` or ``fp32``, resolved for the CPU.

    Raises:
        NowcastError: a bad option, or an archive that cannot give the context (one line, times named).
        CheckpointError, TrackingError: a model that cannot be found.
    """
    from predrnn.jobs.model import JobError, job_precision
    from predrnn.nowcast import parse_time, read_context

    if horizon is not None and horizon < 1:
        raise NowcastError(f"--horizon must be >= 1, got {horizon}")
    if not max_age_steps > 0:
        raise NowcastError(f"--max-age must be > 0 time steps, got {max_age_steps}")
    when = parse_time(at)
    try:
        resolved, note = job_precision(precision, "cpu")
    except JobError as err:
        raise NowcastError(str(err)) from None
    version, path, cfg, place = model_record(model, tracking_uri=tracking_uri, cache_dir=cache_dir)
    if cfg.values.kind != "field":
        raise NowcastError(f"{model} was trained on images; a nowcast reads a gridded archive in physical units")
    context = read_context(archive, place, cfg, at=when, now=now, max_age_steps=max_age_steps, s3=s3)
    n_out = horizon or cfg.data.total_length - cfg.data.input_length
    return NowcastSpec(model=model, version=version, model_dir=str(path), cfg=cfg, place=place, archive=archive,
                       context=context, horizon=n_out, precision=resolved, precision_note=note)


def loaded_model(model_dir: str) -> tuple[Any, str, float]:
    """``(net, weights SHA-256, seconds spent loading)`` of a model directory, kept loaded in this process
    (0 s on the next call for the same directory; a registry version's directory never changes)."""
    from predrnn.batch_forecast import weights_digest
    from predrnn.checkpoint import load_model_dir

    if model_dir in _LOADED:
        _LOADED.move_to_end(model_dir)
        net, digest = _LOADED[model_dir]
        return net, digest, 0.0
    t0 = time.perf_counter()
    net, _ = load_model_dir(model_dir)
    digest = weights_digest(net)
    _LOADED[model_dir] = (net, digest)
    while len(_LOADED) > _LOADED_KEPT:
        _LOADED.popitem(last=False)
    return net, digest, time.perf_counter() - t0


def run_nowcast(spec: NowcastSpec) -> NowcastResult:
    """Forecast the spec's context (:func:`predrnn.predict.forecast_array`) and build its CF dataset
    (:func:`predrnn.nowcast.nowcast_dataset`) with the model's attributes. Pixels with no data in every
    context frame (outside a radar's range) are NaN at every lead time (written as the variable's
    ``_FillValue``), as the archive had them: the model's values there are not a forecast."""
    from predrnn import __version__
    from predrnn.data.cf import REFERENCE, model_attrs
    from predrnn.data.sources.grids import format_time
    from predrnn.nowcast import nowcast_dataset
    from predrnn.predict import forecast_array

    net, digest, load_s = loaded_model(spec.model_dir)
    t0 = time.perf_counter()
    pred = forecast_array(net, spec.cfg, spec.context.frames, spec.horizon, precision=spec.precision)
    forecast_s = time.perf_counter() - t0
    outside = np.all(np.isnan(spec.context.frames[0]), axis=0)  # (H, W, C): no data in any context frame
    pred[:, :, outside] = np.nan  # beyond the radar's range (or a channel's coverage) nothing is forecast
    recorded = spec.model if spec.model.startswith("models:/") else Path(spec.model_dir).name
    attrs = {"title": f"nowcast from {spec.archive}", "source": f"predrnn {__version__}",
             "history": f"{format_time(np.datetime64('now', 's'))}Z predrnn {__version__} nowcast",
             "references": REFERENCE, "predrnn_version": __version__, "predrnn_archive": spec.archive,
             "predrnn_precision": spec.precision,
             "predrnn_context": f"{format_time(spec.context.times[0])}..{format_time(spec.context.times[-1])}",
             **model_attrs(recorded, spec.version, digest)}
    ds = nowcast_dataset(pred, spec.context, attrs=attrs)
    return NowcastResult(forecast=pred, dataset=ds, load_s=round(load_s, 3), forecast_s=round(forecast_s, 3),
                         weights_sha256=digest)


def write_nowcast(result: NowcastResult, out: str, *, s3: S3Settings | None = None) -> str:
    """Write the nowcast's CF file to ``out`` (a ``.nc`` or ``.zarr`` path, or ``s3://bucket/key.nc``) atomically:
    a local file is written beside its place and renamed; an S3 object is put whole, last. Returns ``out``.

    Raises:
        NowcastError: a destination that is neither ``.nc`` nor ``.zarr`` (Zarr: local only).
        DataError: a destination that cannot be written.
    """
    from predrnn.data.cf import write_blocks

    suffix = Path(out).suffix.lower()
    if suffix not in (".nc", ".zarr"):
        raise NowcastError(f"--output must end in .nc (NetCDF-4) or .zarr, got {out!r}")
    if not out.startswith("s3://"):
        write_blocks(iter([result.dataset]), out, "zarr" if suffix == ".zarr" else "netcdf", first_dim="reference_time")
        return out
    if suffix != ".nc":
        raise NowcastError("an S3 destination takes a .nc file (one object, put whole)")
    from predrnn.data.store import open_backend

    root, _, key = out.rpartition("/")
    with tempfile.TemporaryDirectory(prefix="predrnn-nowcast-") as tmp:
        local = write_blocks(iter([result.dataset]), Path(tmp) / "nowcast.nc", "netcdf", first_dim="reference_time")
        open_backend(root, s3).put_bytes(key, local.read_bytes())
    return out


NAME_PATTERN = re.compile(r"^(\d{8}T\d{6})Z\.nc$")  # what publish_nowcast writes (and only that is pruned)


def published_nowcasts(out: str, *, s3: S3Settings | None = None) -> dict[np.datetime64, str]:
    """The nowcasts under ``out`` (a folder or ``s3://bucket/prefix``) named ``YYYYmmddTHHMMSSZ.nc``, by
    reference time (datetime64[s], UTC); other files are not theirs and are ignored."""
    from predrnn.data.store import open_backend

    found = {}
    for key in open_backend(out, s3).list_keys(""):
        m = NAME_PATTERN.match(key)
        if m:
            t = m.group(1)
            found[np.datetime64(f"{t[:4]}-{t[4:6]}-{t[6:8]}T{t[9:11]}:{t[11:13]}:{t[13:15]}", "s")] = key
    return dict(sorted(found.items()))


def publish_nowcast(spec: NowcastSpec, out: str, *, retention: np.timedelta64 | None = None,
                    s3: S3Settings | None = None) -> dict[str, Any]:
    """One scheduled nowcast: ``<out>/<reference time>.nc`` written once per reference time, then the
    nowcasts older than ``retention`` pruned.

    When a nowcast of the spec's reference time is there already (no frame arrived since it was written),
    nothing is forecast or written. Otherwise :func:`run_nowcast` forecasts and :func:`write_nowcast` puts the
    file in place atomically (written beside it and renamed; on S3, put whole). Pruning removes the
    nowcasts of ``out`` (only files named as this function names them) whose reference time is more than
    ``retention`` before this one's: relative to the data's own clock, so replaying an archive keeps the
    same files as running live.

    Args:
        spec: the nowcast, resolved by :func:`prepare_nowcast`.
        out: a folder, or ``s3://bucket/prefix``.
        retention: how long nowcasts are kept (None: for ever).

    Returns:
        ``{"uri", "reference_time" (ISO, UTC), "written" (bool), "pruned" (names), "result"
        (:class:`NowcastResult` or None), "write_s"}``.

    Raises:
        NowcastError: a retention that is not positive.
        DataError: ``out`` cannot be listed or written.
    """
    from predrnn.data.store import open_backend

    if retention is not None and not retention > np.timedelta64(0, "s"):
        raise NowcastError(f"the retention must be positive, got {retention}")
    name = spec.file_name()
    uri = f"{out.rstrip('/')}/{name}"
    ref = np.asarray(spec.reference_time).astype("datetime64[s]")[()]
    have = published_nowcasts(out, s3=s3)
    result, write_s = None, 0.0
    if ref not in have:
        result = run_nowcast(spec)
        t0 = time.perf_counter()
        write_nowcast(result, uri, s3=s3)
        write_s = time.perf_counter() - t0
    pruned = []
    if retention is not None:
        backend = open_backend(out, s3)
        for t, key in have.items():
            if t < ref - retention:
                backend.delete_prefix(key)
                pruned.append(key)
    return {"uri": uri, "reference_time": f"{ref}Z", "written": result is not None, "pruned": pruned,
            "result": result, "write_s": round(write_s, 3)}


def nowcast_report(spec: NowcastSpec, published: dict[str, Any], timings: dict[str, float]) -> dict[str, str]:
    """What a scheduled nowcast shows (its Prefect artifact): ``{"markdown", "png_base64"}``, a table of the
    reference time, context, lead and valid times, the file and the latency, with the picture
    (:func:`predrnn.viz.nowcast_png`: the last observed frame and the forecast at four lead times, in the
    data's units, axes in the grid's coordinates); no picture when nothing was written.

    Args:
        spec, published: the nowcast and what :func:`publish_nowcast` returned for it.
        timings: seconds by phase (``read``, ``load``, ``forecast``, ``write``, ``total``) and ``age``: how
            long after the reference time the file was in place.
    """
    import base64

    from predrnn.data.sources.grids import format_step, format_time
    from predrnn.values import field_units

    ctx, result = spec.context, published["result"]
    ref = format_time(spec.reference_time)
    if result is None:
        newest = format_time(ctx.newest) if ctx.newest is not None else ref
        return {"markdown": f"## No new frame\n\nThe newest frame is {newest}; the nowcast of reference time "
                            f"{ref} is there already (`{published['uri']}`). Nothing was written.\n",
                "png_base64": ""}
    from predrnn.viz import field_colours, nowcast_png

    leads = ctx.step * np.arange(1, spec.horizon + 1)
    last, pred = ctx.frames[0, -1, ..., 0], result.forecast[0, ..., 0]
    with tempfile.TemporaryDirectory(prefix="predrnn-nowcast-") as tmp:
        png = nowcast_png(Path(tmp) / "nowcast.png", last, pred, reference_time=spec.reference_time,
                          lead_times=leads, coords=ctx.coords, grid=ctx.place.get("grid"),
                          field=field_colours(spec.cfg.values, last, pred) or (0.0, 1.0, ""))
        b64 = base64.b64encode(png.read_bytes()).decode()
    valid = f"{format_time(spec.reference_time + leads[0])}..{format_time(spec.reference_time + leads[-1])}"
    rows = [("file", f"`{published['uri']}`"), ("model", f"`{spec.version or spec.model}`"),
            ("reference time", ref), ("context", f"{format_time(ctx.times[0])}..{ref} ({ctx.times.size} frames)"),
            ("lead times", f"{format_step(leads[0])}..{format_step(leads[-1])} every {format_step(ctx.step)}"),
            ("valid times", valid), ("units", field_units(spec.cfg.values) or "-"),
            ("latency", f"{timings.get('total', 0):.1f} s (read and check {timings.get('read', 0):.1f}, load "
                        f"{timings.get('load', 0):.1f}, forecast {timings.get('forecast', 0):.1f}, write "
                        f"{timings.get('write', 0):.1f})"),
            ("in place", f"{timings.get('age', 0):.0f} s after the reference time (time step "
                         f"{format_step(ctx.step)})"),
            ("pruned", ", ".join(published["pruned"]) or "-")]
    md = "\n".join([f"## Nowcast {ref}", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], "",
                    f"![nowcast {ref}](data:image/png;base64,{b64})", ""])
    return {"markdown": md, "png_base64": b64}


__all__ = ["NAME_PATTERN", "NowcastResult", "NowcastSpec", "loaded_model", "model_record", "nowcast_report",
           "prepare_nowcast", "publish_nowcast", "published_nowcasts", "reference_name", "run_nowcast", "write_nowcast"]
