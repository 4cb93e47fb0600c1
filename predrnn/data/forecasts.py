"""Forecast datasets: a model's forecasts of a dataset split, stored as a dataset version of their own.

A forecast dataset follows the store's rules (:mod:`predrnn.data.store`): its Zarr group is written
under a fresh ``ROOT/NAME/data/<token>`` prefix and becomes visible only when its manifest is written,
so a killed job never leaves a half version. Its group holds

- ``clips`` (n, N, H, W, C) float32: the forecast of the source split's clip ``source_index[i]``, in
  the data's units (images in [0, 1]), N the horizon;
- ``split`` (n,): the source split's code for every clip (``data export --split`` works);
- ``source_index`` (n,) int64: each clip's index in the source version, in stored order;
- ``digest`` (n, 32) uint8: the SHA-256 of each written clip; all zero = not written yet.

The staged prefix is named after the job (model weights, source version, split, context, horizon), so a
rerun of a killed job finds it and forecasts only the clips whose digest is still zero; clips are
written by position, so none is duplicated or missing. Before publishing, every clip is read back and
checked against its digest. Nothing here imports Ray: :mod:`predrnn.batch_forecast` drives the writers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from predrnn.data.errors import DataError
from predrnn.data.store import SCHEMA_VERSION, Backend, check_name, list_manifests, open_backend

if TYPE_CHECKING:
    from predrnn.data.store import S3Settings

log = logging.getLogger("predrnn.data")

_READ_BYTES = 8 << 20  # clips read back per step when publishing, about this many bytes


def job_id(spec: dict[str, Any]) -> str:
    """A stable 16-hex id of a forecast job: what determines its output (model weights, source version,
    split, context and horizon)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def find_published(root: str, name: str, job: str, s3: S3Settings | None = None) -> str | None:
    """The URI of a published forecast version made by job ``job`` under ``ROOT/NAME``, or None."""
    backend = open_backend(root, s3)
    for m in reversed(list_manifests(backend, check_name(name))):
        if m.get("attrs", {}).get("forecast", {}).get("job") == job:
            return backend.join(f"{name}@{m['version']}")
    return None


@dataclass
class StagedForecast:
    """An unpublished forecast version: where it is staged and what it holds. Picklable (sent to the
    workers that write it); each process opens the Zarr group once."""

    root: str
    name: str
    key: str
    job: str
    shape: tuple[int, int, int, int, int]
    attrs: dict[str, Any]
    s3: S3Settings | None = None
    resumed: int = 0
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def backend(self) -> Backend:
        return open_backend(self.root, self.s3)

    def group(self) -> Any:
        """The staged Zarr group, opened for writing (once per process)."""
        import os

        import zarr

        if self._cache.get("pid") != os.getpid():
            store = self.backend().zarr_store(self.key, read_only=False)
            self._cache.update(pid=os.getpid(), group=zarr.open_group(store, mode="r+"))
        return self._cache["group"]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    def pending(self) -> np.ndarray:
        """Positions (int64, ascending) whose clip is not written yet."""
        dig = self.group()["digest"]
        try:
            digests = np.asarray(dig[:])
        except Exception:  # a digest cut off mid-write by a killed worker: that clip is pending again
            digests = np.zeros(dig.shape, np.uint8)
            for p in range(dig.shape[0]):
                with contextlib.suppress(Exception):
                    digests[p] = dig[p]
        return np.flatnonzero(~digests.any(axis=1)).astype(np.int64)

    def write(self, positions: np.ndarray, clips: np.ndarray) -> None:
        """Write forecast clips (k, N, H, W, C) at ``positions`` (k,), each clip before its digest.

        Raises:
            DataError: a clip of the wrong shape, or a position outside the version.
        """
        n, rest = self.shape[0], self.shape[1:]
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if clips.shape != (positions.size, *rest):
            raise DataError(f"forecast clips {clips.shape} do not fit positions {positions.size} x {rest}")
        if positions.size and (positions.min() < 0 or positions.max() >= n):
            raise DataError(f"forecast position out of range 0..{n - 1}")
        g = self.group()
        arr, dig = g["clips"], g["digest"]
        for p, clip in zip(positions.tolist(), clips, strict=True):
            c = np.ascontiguousarray(clip, dtype=np.float32)
            arr[p] = c
            dig[p] = np.frombuffer(hashlib.sha256(c.data).digest(), np.uint8)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stage_forecast(root: str, name: str, *, job: str, shape: tuple[int, int, int, int, int],
                   split_codes: np.ndarray, source_index: np.ndarray, attrs: dict[str, Any],
                   s3: S3Settings | None = None) -> StagedForecast:
    """The staged group of job ``job``: the one a killed run of the same job left (its written clips
    kept), else a new one under ``ROOT/NAME/data/<time>-<job>``.

    Args:
        shape: (n, N, H, W, C) of the forecasts.
        split_codes: (n,) the source split code of every clip.
        source_index: (n,) each clip's index in the source version.
        attrs: the version's attributes (``forecast`` describes the job).

    Raises:
        DataError: a bad name, or the destination cannot be written.
    """
    import zarr
    from zarr.codecs import BloscCodec

    check_name(name)
    backend = open_backend(root, s3)
    backend.check_writable(name)
    for token in backend.list_dirs(f"{name}/data"):
        if token.endswith(f"-{job}"):
            key = f"{name}/data/{token}"
            try:
                g: Any = zarr.open_group(backend.zarr_store(key, read_only=True), mode="r")
                ok = tuple(g["clips"].shape) == tuple(shape) and dict(g.attrs.get("forecast", {})).get("job") == job
            except Exception:  # a group whose creation was cut off: start again
                ok = False
            if ok:
                staged = StagedForecast(backend.root_uri, name, key, job, shape, attrs, s3)
                staged.resumed = int(shape[0] - staged.pending().size)
                return staged
            backend.delete_prefix(key)
    token = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + f"-{job}"
    key = f"{name}/data/{token}"
    n = shape[0]
    try:
        g = zarr.open_group(backend.zarr_store(key, read_only=False), mode="w")
        g.create_array("clips", shape=shape, chunks=(1, *shape[1:]), dtype=np.float32, fill_value=np.nan,
                       compressors=BloscCodec(cname="zstd", clevel=5, shuffle="shuffle", typesize=4),
                       dimension_names=("clip", "time", "y", "x", "channel"))
        g.create_array("split", data=np.asarray(split_codes, np.uint8), chunks=(max(n, 1),))
        g.create_array("source_index", data=np.asarray(source_index, np.int64), chunks=(max(n, 1),))
        g.create_array("digest", shape=(n, 32), chunks=(1, 32), dtype=np.uint8, fill_value=0)
        g.attrs.update({"forecast": attrs["forecast"]})  # marks the group as complete enough to resume
    except BaseException:
        backend.delete_prefix(key)
        raise
    return StagedForecast(backend.root_uri, name, key, job, shape, attrs, s3)


def publish_forecast(staged: StagedForecast, progress: Callable[[int], None] | None = None) -> str:
    """Read every clip back, check it against its digest, and publish the version; returns its URI.

    The version id is the content hash (shape, dtype, values, clip bytes in order, split codes), as for
    an ingested version. A clip that was never written or reads back different from what was written
    is an error and nothing is published (the staged data stays for a rerun of the job).

    Raises:
        DataError: clips missing or differing from their digests.
    """
    from predrnn.data.pipeline import publish_version

    g = staged.group()
    arr, dig = g["clips"], np.asarray(g["digest"][:])
    n = staged.shape[0]
    missing = np.flatnonzero(~dig.any(axis=1))
    if missing.size:
        raise DataError(f"forecast {staged.name}: {missing.size} of {n} clips not written (first at position "
                        f"{int(missing[0])}); rerun the job to complete it")
    step = max(1, _READ_BYTES // (int(np.prod(staged.shape[1:])) * 4))
    data_hash = hashlib.sha256()
    lo, hi = np.inf, -np.inf
    count = nans = 0
    total = total_sq = 0.0
    for i in range(0, n, step):
        block = np.ascontiguousarray(arr[i:i + step], dtype=np.float32)
        for j, clip in enumerate(block):
            if hashlib.sha256(clip.data).digest() != dig[i + j].tobytes():
                raise DataError(f"forecast {staged.name}: clip {i + j} reads back different from what was written")
        data_hash.update(block.data)
        finite = block[np.isfinite(block)].astype(np.float64)
        nans += int(block.size - finite.size)
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
            count += finite.size
            total, total_sq = total + float(finite.sum()), total_sq + float((finite ** 2).sum())
        if progress is not None:
            progress(min(n, i + step))
    codes = np.asarray(g["split"][:], np.uint8)
    attrs = dict(staged.attrs)
    header = {"schema": SCHEMA_VERSION, "shape": list(staged.shape), "dtype": np.dtype(np.float32).str,
              "values": attrs.get("values"), "forecast": attrs["forecast"]}
    content = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    content.update(data_hash.digest())
    content.update(codes.tobytes())
    version = content.hexdigest()[:16]
    if attrs.get("value_kind") != "image":
        attrs["value_range"] = [lo, hi] if np.isfinite(lo) else [0.0, 0.0]
    mean = total / count if count else 0.0
    attrs["stats"] = {"mean": mean, "std": float(np.sqrt(max(total_sq / count - mean ** 2, 0.0))) if count else 0.0,
                      "min": lo if count else 0.0, "max": hi if count else 0.0,
                      "nan_fraction": nans / max(nans + count, 1)}
    attrs.update({"schema_version": SCHEMA_VERSION, "name": staged.name, "version": version, "created": _now(),
                  "content_hash": content.hexdigest(), "data_hash": data_hash.hexdigest(),
                  "chunks": [1, *staged.shape[1:]]})
    g.attrs.update(attrs)
    return publish_version({"root": staged.root, "name": staged.name, "key": staged.key, "version": version,
                            "shape": list(staged.shape), "dtype": np.dtype(np.float32).str, "attrs": attrs},
                           s3=staged.s3)


class ForecastClips:
    """The clips of a published forecast dataset version, as an array of shape (clips, N, H, W, C) read a
    slice at a time; :meth:`truth` gives its source's frames at the same lead times, the same way.

    Raises:
        DataError: ``uri`` is not a forecast dataset (written by ``predrnn forecast``).
    """

    ndim = 5

    def __init__(self, uri: str, s3: S3Settings | None = None) -> None:
        from predrnn.data.store import open_version

        self.version = fc = open_version(uri, s3)
        meta = fc.attrs.get("forecast")
        if not isinstance(meta, dict):
            raise DataError(f"{fc.uri} is not a forecast dataset (written by `predrnn forecast`); score arrays "
                            "with --forecast F.npy --truth T.npy")
        self.meta: dict[str, Any] = meta
        self.s3 = s3
        self.shape, self.dtype = fc.shape, fc.dtype

    def __getitem__(self, sl: slice) -> np.ndarray:
        return self.version.read(np.arange(self.shape[0])[sl])

    def truth(self) -> SourceFrames:
        """The observed frames that the clips forecast."""
        return SourceFrames(self)


class SourceFrames:
    """The frames of a forecast dataset's source that it forecast: clip ``source_index[i]``, frames
    context .. context + horizon - 1, in the source's stored dtype, read a slice at a time.

    Raises:
        DataError: the source's clips are too short to hold every lead time forecast.
    """

    ndim = 5

    def __init__(self, fc: ForecastClips) -> None:
        import zarr

        from predrnn.data.store import open_version

        meta, v = fc.meta, fc.version
        self.source = open_version(meta["source"], fc.s3)
        group: Any = zarr.open_group(v.backend.zarr_store(v.manifest["path"], read_only=True), mode="r")
        self.index = np.asarray(group["source_index"][:], np.int64)
        self.context, self.horizon = int(meta["context"]), int(meta["horizon"])
        t_src = self.source.shape[1]
        if t_src < self.context + self.horizon:
            raise DataError(f"the source {self.source.uri} has clips of {t_src} frames: no truth for lead times "
                            f"beyond {t_src - self.context} of the {self.horizon} forecast")
        self.shape, self.dtype = fc.shape, self.source.dtype

    def __getitem__(self, sl: slice) -> np.ndarray:
        return self.source.read(self.index[sl])[:, self.context:self.context + self.horizon]
