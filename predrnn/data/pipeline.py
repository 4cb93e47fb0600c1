"""Ingestion: inspect -> validate -> write (chunk by chunk, to a fresh prefix) -> verify -> publish.

Each step is one function taking and returning small JSON-able values, so an orchestrator (the
Prefect flow in ``flows/ingest.py``) can run them as tasks; :func:`ingest` runs them in sequence.
Nothing becomes visible before :func:`publish_version` writes the manifest, and any failure in
between removes what was written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from predrnn.data.errors import DataError
from predrnn.data.sources import Source, make_source
from predrnn.data.store import (
    SCHEMA_VERSION,
    SPLIT_CODES,
    SPLITS,
    Version,
    check_name,
    list_manifests,
    manifest_key,
    open_backend,
)

if TYPE_CHECKING:
    from predrnn.data.store import S3Settings

log = logging.getLogger("predrnn.data")

_BATCH_BYTES = 8 << 20  # clips are buffered into writes of about this size
Progress = Callable[[int], None]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _fingerprint(src: Source, checksum: str) -> str:
    payload = {"schema": SCHEMA_VERSION, "kind": src.kind, "checksum": checksum,
               "options": src.options_fingerprint()}
    if src.reader_version > 1:  # a reader that now reads the same files differently: never the old version
        payload["reader"] = src.reader_version
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def inspect_source(kind: str, source: str | None, *, s3: S3Settings | None = None,
                   **options: Any) -> dict[str, Any]:
    """Describe a source without decoding every clip: frame shape, length, dtype, checksum, clip count.
    ``s3``: the S3 settings of an ``s3://`` source or root (:func:`predrnn.settings.s3_settings`'s keyless form)."""
    src = make_source(kind, source, options, s3=s3)
    info = src.inspect().to_dict()
    info["fingerprint"] = _fingerprint(src, info["checksum"])
    return info


def validate_source(kind: str, source: str | None, *, s3: S3Settings | None = None,
                    **options: Any) -> dict[str, Any]:
    """Structural checks (headers, ranks, dtypes, indices, sizes, archive CRCs); raises DataError.
    ``s3``: the S3 settings of an ``s3://`` source or root (:func:`predrnn.settings.s3_settings`'s keyless form)."""
    src = make_source(kind, source, options, s3=s3)
    src.validate()
    if src.inspect().value_kind == "image" and (src.opts.get("valid_min") is not None
                                                or src.opts.get("valid_max") is not None):
        raise DataError("options valid_min/valid_max apply to physical fields (float data); image data is "
                        "0..255 (uint8) or [0, 1]")
    return {"kind": kind, "valid": True}


def find_existing(root: str, name: str, fingerprint: str, s3: S3Settings | None = None) -> str | None:
    """The URI of a published version made from the same source and options, if any."""
    backend = open_backend(root, s3)
    try:
        manifests = list_manifests(backend, check_name(name))
    except DataError:
        raise
    except Exception:  # an unreachable or missing destination is reported by the write step
        return None
    for m in reversed(manifests):
        if m.get("attrs", {}).get("fingerprint") == fingerprint:
            return backend.join(f"{name}@{m['version']}")
    return None


class _Stats:
    """Running sum, sum of squares, min, max and NaN count in float64."""

    def __init__(self) -> None:
        self.n = 0
        self.nan = 0
        self.s = 0.0
        self.ss = 0.0
        self.lo = np.inf
        self.hi = -np.inf

    def update(self, x: np.ndarray) -> None:
        if x.dtype == np.uint8:  # exact and fast through a histogram of the 256 values
            hist = np.bincount(x.reshape(-1), minlength=256)
            vals = np.flatnonzero(hist)
            self.n += int(x.size)
            self.s += float(hist @ np.arange(256, dtype=np.float64))
            self.ss += float(hist @ np.arange(256, dtype=np.float64) ** 2)
            self.lo = min(self.lo, float(vals[0]))
            self.hi = max(self.hi, float(vals[-1]))
            return
        v = x.reshape(-1)
        if x.dtype.kind == "f":
            ok = np.isfinite(v)
            n_ok = int(np.count_nonzero(ok))
            self.nan += int(v.size - n_ok)
            if n_ok != v.size:
                v = v[ok]
        if v.size:
            self.n += int(v.size)
            self.s += float(np.sum(v, dtype=np.float64))
            self.ss += float(np.einsum("i,i->", v, v, dtype=np.float64))
            self.lo = min(self.lo, float(v.min()))
            self.hi = max(self.hi, float(v.max()))

    def add(self, other: _Stats) -> None:
        """Merge another clip's statistics into these."""
        self.n += other.n
        self.nan += other.nan
        self.s += other.s
        self.ss += other.ss
        self.lo = min(self.lo, other.lo)
        self.hi = max(self.hi, other.hi)

    def to_dict(self) -> dict[str, float]:
        mean = self.s / self.n if self.n else 0.0
        var = max(self.ss / self.n - mean * mean, 0.0) if self.n else 0.0
        total = self.n + self.nan
        return {"mean": mean, "std": float(np.sqrt(var)), "min": self.lo if self.n else 0.0,
                "max": self.hi if self.n else 0.0, "count": self.n,
                "nan_fraction": self.nan / total if total else 0.0}


def _natural(name: str) -> list[Any]:
    """Sort key reading digit runs as numbers: ``time 64..79`` before ``time 164..179``, person2 before 10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _split_codes(labels: list[str | None], groups: list[str],
                 opts: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Split codes per clip, assigned per source sequence (``groups``): no sequence straddles two splits.

    * the source's own labels (file names, the KTH persons) when every clip has one, unless
      ``split=seeded``; if they hold no validation clip and ``val_fraction`` > 0, validation is carved
      from the training sequences (whole sequences, seeded), so it is never empty when asked for;
    * otherwise a seeded permutation of the sequences, ``test_fraction`` and ``val_fraction`` of them
      to test and validation (with one clip per sequence this is the per-clip split it always was).
    """
    mode = opts["split"]
    n = len(labels)
    have = [lb is not None for lb in labels]
    if mode in ("source", "kth") and not all(have):
        missing = have.index(False)
        raise DataError(f"split={mode} but clip {missing} has no split from the source")
    names = list(dict.fromkeys(groups))  # in order of first appearance
    index = {g: i for i, g in enumerate(names)}
    gid = np.array([index[g] for g in groups], np.int64)
    rng = np.random.default_rng(int(opts["split_seed"]))
    if mode != "seeded" and labels and all(have):
        codes = np.array([SPLIT_CODES[lb] for lb in labels], np.uint8)  # type: ignore[index]
        info: dict[str, Any] = {"method": mode if mode in ("kth", "time") else "source"}
        for g in range(len(names)):
            if len(set(codes[gid == g].tolist())) > 1:
                raise DataError(f"source sequence {names[g]} carries clips of different splits")
        val_fraction = float(opts["val_fraction"])
        if not (codes == SPLIT_CODES["val"]).any() and val_fraction > 0:
            train_groups = [g for g in range(len(names)) if codes[gid == g][0] == SPLIT_CODES["train"]]
            n_val = max(1, round(len(train_groups) * val_fraction)) if len(train_groups) > 1 else 0
            chosen = rng.permutation(np.array(train_groups, np.int64))[:n_val]
            codes[np.isin(gid, chosen)] = SPLIT_CODES["val"]
            info["val_carved_from_train"] = {"fraction": val_fraction, "seed": int(opts["split_seed"]),
                                             "sequences": int(n_val)}
    else:
        perm = rng.permutation(len(names))
        n_test = round(len(names) * float(opts["test_fraction"]))
        n_val = round(len(names) * float(opts["val_fraction"]))
        group_codes = np.zeros(len(names), np.uint8)
        group_codes[perm[:n_test]] = SPLIT_CODES["test"]
        group_codes[perm[n_test:n_test + n_val]] = SPLIT_CODES["val"]
        codes = group_codes[gid] if n else np.zeros(0, np.uint8)
        info = {"method": "seeded", "seed": int(opts["split_seed"]),
                "fractions": {"val": float(opts["val_fraction"]), "test": float(opts["test_fraction"])}}
    info["sizes"] = {s: int((codes == SPLIT_CODES[s]).sum()) for s in SPLITS}
    per_split = {s: sorted({names[g] for g in gid[codes == SPLIT_CODES[s]].tolist()}, key=_natural)
                 for s in SPLITS}
    info["sequences"] = {s: len(v) for s, v in per_split.items()}
    if len(names) < n:  # sequences cut into several clips: which split holds which (first 2000 per split)
        info["sequence_names"] = {s: v[:2000] for s, v in per_split.items()}
    return codes, info


_PAIRS = (("train", "test"), ("train", "val"), ("val", "test"))
FRAME_CHECK = {"digest": "blake2b-64 of each frame's stored bytes",
               "ignored": "constant frames (every value equal, or all NaN): blank frames recur legitimately"}


def frame_digests(x: np.ndarray) -> np.ndarray:
    """A 64-bit content digest of each frame: BLAKE2b (8 bytes) of its stored bytes, 0 for a constant frame.

    Args:
        x: frames as stored, shape (..., H, W, C): one clip (T, H, W, C) or a batch (n, T, H, W, C).

    Returns:
        uint64 array of shape ``x.shape[:-3]``. A frame whose values are all equal (NaN ignored) or all NaN
        gets 0 (an empty radar frame or a blank video frame recurs everywhere and means nothing); equal
        digests mean equal bytes, up to a 2**-64 chance.
    """
    lead = x.shape[:-3]
    flat = np.ascontiguousarray(x).reshape(-1, int(np.prod(x.shape[-3:])))
    if flat.shape[0] == 0 or flat.shape[1] == 0:
        return np.zeros(lead, np.uint64)
    mv = flat.reshape(-1).view(np.uint8).data
    step = flat.shape[1] * flat.itemsize
    raw = b"".join(hashlib.blake2b(mv[i * step:(i + 1) * step], digest_size=8).digest()
                   for i in range(flat.shape[0]))
    out = np.frombuffer(raw, "<u8").astype(np.uint64)
    lo, hi = np.fmin.reduce(flat, axis=1), np.fmax.reduce(flat, axis=1)  # NaN ignored; all NaN -> NaN
    constant = lo == hi
    if flat.dtype.kind == "f":
        constant |= np.isnan(lo)
    out[constant] = 0
    return out.reshape(lead)


def frame_overlap(digests: np.ndarray, codes: np.ndarray) -> dict[str, Any]:
    """Frames per split and the distinct frame contents that two splits share.

    Args:
        digests: (n, T) uint64 from :func:`frame_digests`, one row per stored clip.
        codes: (n,) split codes (:data:`predrnn.data.store.SPLIT_CODES`).

    Returns:
        ``{"frames": {split: clips * T}, "unique_frames": {split: distinct non-constant contents},
        "constant_frames": {split: constant frames, not compared}, "shared_frames": {"train/test": k,
        "train/val": k, "val/test": k}, "frame_check": how}``. Frames repeat inside a split when windows
        overlap; ``shared_frames`` counts distinct contents found in both splits of a pair (should be 0).
    """
    digests = np.asarray(digests, np.uint64)
    uniq: dict[str, np.ndarray] = {}
    frames, unique, constant = {}, {}, {}
    for s in SPLITS:
        d = digests[codes == SPLIT_CODES[s]].reshape(-1)
        u = np.unique(d)
        uniq[s] = u[u != 0]
        frames[s] = int(d.size)
        unique[s] = int(uniq[s].size)
        constant[s] = int(np.count_nonzero(d == 0))
    shared = {f"{a}/{b}": int(np.intersect1d(uniq[a], uniq[b], assume_unique=True).size) for a, b in _PAIRS}
    return {"frames": frames, "unique_frames": unique, "constant_frames": constant, "shared_frames": shared,
            "frame_check": dict(FRAME_CHECK)}


def _codec(dtype: np.dtype) -> Any:
    from zarr.codecs import BloscCodec, ZstdCodec

    if dtype == np.uint8:
        return ZstdCodec(level=3)
    return BloscCodec(cname="zstd", clevel=5, shuffle="shuffle", typesize=dtype.itemsize)


def write_version(kind: str, source: str | None, name: str, root: str, *, progress: Progress | None = None,
                  s3: S3Settings | None = None, **options: Any) -> dict[str, Any]:
    """Stream the source into a fresh, unpublished Zarr group; returns the staged description.

    The group lives under ``ROOT/NAME/data/<token>`` and is referenced by nothing until
    :func:`publish_version`. On any error (or Ctrl-C) it is deleted before the error propagates.
    ``s3``: the S3 settings of an ``s3://`` source or root (:func:`predrnn.settings.s3_settings`'s keyless form).
    """
    import zarr

    check_name(name)
    src = make_source(kind, source, options, s3=s3)
    info = src.inspect()
    backend = open_backend(root, s3)
    backend.check_writable(name)
    T, (H, W, C) = info.frames, info.frame_shape
    dtype = np.dtype(info.dtype)
    shape1 = (T, H, W, C)
    token = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    key = f"{name}/data/{token}"
    clip_bytes = int(np.prod(shape1)) * dtype.itemsize
    batch = max(1, min(256, _BATCH_BYTES // max(clip_bytes, 1)))
    started = time.perf_counter()
    try:
        group = zarr.open_group(backend.zarr_store(key, read_only=False), mode="w")
        cap = info.clips_hint or 256
        arr = group.create_array("clips", shape=(cap, *shape1), chunks=(1, *shape1), dtype=dtype,
                                 compressors=_codec(dtype), fill_value=np.nan if dtype.kind == "f" else 0,
                                 dimension_names=("clip", "time", "y", "x", "channel"))
        buf = np.empty((batch, *shape1), dtype)
        digests = np.zeros((cap, T), np.uint64)  # frame contents, 8 bytes a frame, for the overlap check
        times: np.ndarray | None = None  # (cap, T) valid times of a source with a time coordinate
        data_hash = hashlib.sha256()
        clip_stats: list[_Stats] = []  # per clip, so that normalisation can use the training split only
        per_channel = info.value_kind != "image" and C > 1
        channel_stats: list[list[_Stats]] = []  # per clip and channel (several variables)
        labels: list[str | None] = []
        groups: list[str] = []
        n = 0
        filled = 0

        def flush() -> None:
            nonlocal cap, filled
            if not filled:
                return
            if n > cap:
                cap = max(2 * cap, n)
                arr.resize((cap, *shape1))
            arr[n - filled:n] = buf[:filled]
            filled = 0

        for clip in src.clips():
            x = clip.data
            if x.shape != shape1:
                problem = ("ragged clip lengths" if x.ndim == 4 and x.shape[0] != T else "frame shape differs")
                raise DataError(f"{clip.where}: {problem}: shape {x.shape} but the dataset's clips are {shape1}")
            if x.dtype != dtype:
                raise DataError(f"{clip.where}: wrong dtype {x.dtype}, expected {dtype}")
            x = np.ascontiguousarray(x)
            data_hash.update(x.data)
            one = _Stats()
            one.update(x)
            clip_stats.append(one)
            if per_channel:
                channel_stats.append([_Stats() for _ in range(C)])
                for c in range(C):
                    channel_stats[-1][c].update(x[..., c])
            if n == len(digests):
                digests = np.concatenate([digests, np.zeros_like(digests)])
            digests[n] = frame_digests(x)
            if clip.times is not None:
                stamp = np.asarray(clip.times)
                stamp = stamp.astype("datetime64[ns]").view(np.int64) if stamp.dtype.kind == "M" \
                    else stamp.astype(np.float64)
                if times is None:
                    if n:
                        raise DataError(f"{clip.where}: valid times for some clips only")
                    times = np.zeros((len(digests), T), stamp.dtype)
                if len(times) < len(digests):
                    times = np.concatenate([times, np.zeros((len(digests) - len(times), T), times.dtype)])
                times[n] = stamp
            elif times is not None:
                raise DataError(f"{clip.where}: valid times for some clips only")
            labels.append(clip.split)
            groups.append(clip.group if clip.group is not None else f"#{n}")
            buf[filled] = x
            filled += 1
            n += 1
            if filled == batch:
                flush()
                if progress is not None:
                    progress(n)
        flush()
        if n == 0:
            raise DataError(f"empty source: {kind} {info.location or ''} produced no clips".replace("  ", " "))
        if n != cap:
            arr.resize((n, *shape1))
        codes, split_info = _split_codes(labels, groups, src.opts)
        split_info.update(frame_overlap(digests[:n], codes))  # attrs only: the version id is unchanged
        del digests
        if any(split_info["shared_frames"].values()):
            log.warning("%s: frames shared between splits (distinct contents): %s", name, split_info["shared_frames"])
        group.create_array("split", data=codes, chunks=(max(n, 1),), compressors=_codec(np.dtype(np.uint8)))
        stats, train_stats = _Stats(), _Stats()
        for code, one in zip(codes, clip_stats, strict=True):
            stats.add(one)
            if code == SPLIT_CODES["train"]:
                train_stats.add(one)
        st, tr = stats.to_dict(), train_stats.to_dict()
        image = info.value_kind == "image"
        ranges = src.channel_ranges() if hasattr(src, "channel_ranges") else None
        channels = None
        variable_stats: list[dict[str, Any]] | None = None
        if per_channel:
            described = info.extra.get("channels") or [{"name": f"channel {c}", "units": info.units}
                                                      for c in range(C)]
            channels = []
            for c in range(C):
                all_c, train_c = _Stats(), _Stats()
                for code, per in zip(codes, channel_stats, strict=True):
                    all_c.add(per[c])
                    if code == SPLIT_CODES["train"]:
                        train_c.add(per[c])
                channels.append({"info": described[c], "stats": all_c.to_dict(), "train_stats": train_c.to_dict(),
                                 "range": None if ranges is None else ranges[c]})
            variable_stats = [{"name": str(ch["info"].get("name", "")), "units": str(ch["info"].get("units", "")),
                               **ch["stats"]} for ch in channels]
        values = _values_record(src.opts, info.units, image, st, tr,
                                declared=None if ranges is None or channels else ranges[0], channels=channels)
        header = {"schema": SCHEMA_VERSION, "shape": [n, *shape1], "dtype": dtype.str}
        if values["kind"] == "field" or values["thresholds"]:
            header["values"] = values  # what the values mean is part of the content
        if times is not None:
            header["time"] = "valid_time"
        content = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
        content.update(data_hash.digest())
        content.update(codes.tobytes())
        if times is not None:
            times = times[:n]
            content.update(np.ascontiguousarray(times).tobytes())  # same frames at other times: another version
            group.create_array("valid_time", data=times, chunks=(max(n, 1), T), compressors=_codec(times.dtype),
                               dimension_names=("clip", "time"), attributes=_time_attrs(times, info.extra))
        grid_arrays = src.grid_arrays() if hasattr(src, "grid_arrays") else {}
        for axis, coord in grid_arrays.items():
            group.create_array(f"grid_{axis}", data=coord, compressors=_codec(coord.dtype),
                               dimension_names=("y", "x") if coord.ndim == 2 else (axis,))
        content_hash = content.hexdigest()
        version = content_hash[:16]
        attrs: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "name": name,
            "version": version,
            "created": _now(),
            "source": {"kind": kind, "location": info.location,
                       "description": src.opts["description"] or info.description,
                       "checksum": info.checksum, "options": src.options_fingerprint()},
            "frame_shape": [H, W, C],
            "clip_length": T,
            "value_kind": info.value_kind,
            "value_range": [0, 255] if image else [st["min"], st["max"]],
            "units": info.units,
            "stats": st,
            "train_stats": tr,
            **({"channel_stats": variable_stats} if variable_stats else {}),
            "normalisation": ({"scale": 1 / 255.0, "mean": tr["mean"] / 255.0, "std": tr["std"] / 255.0,
                               "split": "train"} if image else
                              {"mean": values["mean"], "std": values["std"], "nan_fill": 0.0, "split": "train"}),
            "values": values,
            "split": split_info,
            **{k: info.extra[k] for k in ("time", "grid", "variables", "channels") if k in info.extra},
            "content_hash": content_hash,
            "data_hash": data_hash.hexdigest(),
            "fingerprint": _fingerprint(src, info.checksum),
            "chunks": [1, *shape1],
            "write_seconds": round(time.perf_counter() - started, 3),
        }
        group.attrs.update(attrs)  # type: ignore[arg-type]
    except BaseException:
        _discard_staged(backend, key)
        raise
    log.info("wrote %d clips of %s to %s in %.1f s", n, shape1, backend.join(key), attrs["write_seconds"])
    return {"root": backend.root_uri, "name": name, "key": key, "version": version,
            "shape": [n, *shape1], "dtype": dtype.str, "attrs": attrs}


def _time_attrs(times: np.ndarray, extra: dict[str, Any]) -> dict[str, Any]:
    """Attributes of the ``valid_time`` array: CF-style units for datetimes stored as int64 nanoseconds."""
    if times.dtype == np.int64:
        return {"units": "nanoseconds since 1970-01-01T00:00:00Z", "calendar": "proleptic_gregorian",
                "long_name": "valid time of each frame"}
    return {"units": str(extra.get("time", {}).get("units", "")), "long_name": "valid time of each frame"}


def _values_record(opts: dict[str, Any], units: str, image: bool, st: dict[str, float],
                   tr: dict[str, float], *, declared: tuple[float | None, float | None] | None = None,
                   channels: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The ``values`` attribute (:class:`predrnn.config.ValuesConfig` as a dict) of a new version.

    Fields: units, the declared valid range (``declared``: the range in force, the source's CF
    attributes unless an option overrides them; else the options), mean/std of the **training split
    only** (so no test statistic leaks into the model's inputs), default verification thresholds.
    Images: [0, 1]. ``channels`` (several variables): per channel ``{"info": {name, units, ...},
    "stats", "train_stats", "range"}``, giving one record per channel under ``channels``.

    Raises:
        DataError: a valid range declared for image data, or data outside the declared range.
    """
    if channels:
        if opts.get("thresholds") is not None:
            raise DataError(f"option thresholds names one variable's thresholds; with {len(channels)} channels each "
                            "gets its units' defaults (HKO-7 for mm/h); ingest one variable to set them")
        per = []
        for ch in channels:
            one = _values_record({**opts, "thresholds": None}, str(ch["info"].get("units", "")), False, ch["stats"],
                                 ch["train_stats"], declared=ch["range"])
            per.append({"name": str(ch["info"].get("name", "")), **{k: one[k] for k in (
                "units", "mean", "std", "valid_min", "valid_max", "thresholds")}})
        return {"kind": "field", "units": ", ".join(c["units"] for c in per), "mean": 0.0, "std": 1.0,
                "valid_min": None, "valid_max": None, "thresholds": [], "statistics_split": "train",
                "channels": per}
    lo, hi = opts.get("valid_min"), opts.get("valid_max")
    if declared is not None:
        lo, hi = declared
    thresholds = opts.get("thresholds")
    if image:
        if lo is not None or hi is not None:
            raise DataError("options valid_min/valid_max apply to physical fields (float data); image data is "
                            "0..255 (uint8) or [0, 1]")
        return {"kind": "image", "units": "", "mean": 0.0, "std": 1.0, "valid_min": None, "valid_max": None,
                "thresholds": list(thresholds or []), "statistics_split": "train"}
    if st["count"] and lo is not None and st["min"] < lo:
        raise DataError(f"data below the declared valid_min={lo:g}: the smallest value is {st['min']:.6g} "
                        f"{units}; fix the data or the option")
    if st["count"] and hi is not None and st["max"] > hi:
        raise DataError(f"data above the declared valid_max={hi:g}: the largest value is {st['max']:.6g} "
                        f"{units}; fix the data or the option")
    if thresholds is None:
        from predrnn.verification import default_thresholds

        thresholds = default_thresholds(units)
    std = tr["std"] if tr["count"] and tr["std"] > 0 else 1.0
    return {"kind": "field", "units": units, "mean": tr["mean"] if tr["count"] else 0.0, "std": std,
            "valid_min": None if lo is None else float(lo), "valid_max": None if hi is None else float(hi),
            "thresholds": [float(t) for t in thresholds], "statistics_split": "train"}


def _discard_staged(backend: Any, key: str) -> None:
    """Remove a staged group after a failed write; when the store itself is failing (an S3 outage), the
    original error matters more: the unreferenced prefix is left for :func:`gc_orphans`."""
    try:
        backend.delete_prefix(key)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        log.warning("could not remove the staged data %s (%s); gc_orphans removes it later", backend.join(key), first)


def verify_version(staged: dict[str, Any], s3: S3Settings | None = None) -> dict[str, Any]:
    """Re-read the staged group: shape, dtype, split length and the data hash must match.

    A mismatch (:class:`DataError`) deletes the staged data. Any other error (the store failing) keeps
    it, so that the check can be retried; a caller that gives up discards it (:func:`discard_version`).
    ``s3``: the S3 settings of a root on S3.
    """
    import zarr

    backend = open_backend(staged["root"], s3)
    where = backend.join(staged["key"])
    try:
        group = zarr.open_group(backend.zarr_store(staged["key"], read_only=True), mode="r")
        arr: Any = group["clips"]
        split: Any = group["split"]
        shape, dtype = tuple(staged["shape"]), np.dtype(staged["dtype"])
        if tuple(arr.shape) != shape or arr.dtype != dtype or split.shape != (shape[0],):
            raise DataError(f"verify {where}: stored shape {arr.shape} {arr.dtype} differs from written "
                            f"{shape} {dtype}")
        clip_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        step = max(1, min(256, _BATCH_BYTES // clip_bytes))
        h = hashlib.sha256()
        for i in range(0, shape[0], step):
            h.update(np.ascontiguousarray(arr[i:i + step]).data)
        if h.hexdigest() != staged["attrs"]["data_hash"]:
            raise DataError(f"verify {where}: data read back differs from data written (hash mismatch)")
    except DataError:
        _discard_staged(backend, staged["key"])  # the stored data is wrong: it can never be published
        raise
    return {"uri": where, "clips": shape[0], "verified": True}


def publish_version(staged: dict[str, Any], preview_png: bytes | None = None, *,
                    s3: S3Settings | None = None) -> str:
    """Make a verified staged version visible by writing its manifest (last); returns its URI.

    If a version with the same content id already exists, the staged copy is deleted and the
    existing URI returned: re-ingesting the same content is a no-op. A retry after a lost reply finds
    its own manifest and keeps the data it points to. On a store error the staged data is kept for
    a retry, as in :func:`verify_version`. ``s3``: the S3 settings of a root on S3.
    """
    backend = open_backend(staged["root"], s3)
    name, version = staged["name"], staged["version"]
    uri = backend.join(f"{name}@{version}")
    try:
        existing = json.loads(backend.get_bytes(manifest_key(name, version)))
    except FileNotFoundError:
        existing = None
    if existing is not None:
        if existing.get("path") != staged["key"]:  # another writer's copy; a retried publish finds its own
            _discard_staged(backend, staged["key"])
        return uri
    manifest = {"schema_version": SCHEMA_VERSION, "name": name, "version": version, "path": staged["key"],
                "shape": staged["shape"], "dtype": staged["dtype"], "created": staged["attrs"]["created"],
                "attrs": staged["attrs"]}
    try:
        if preview_png is None:
            from predrnn.data.preview import strip_png

            preview_png = strip_png(Version(backend, manifest))
        backend.put_bytes(f"{name}/previews/{version}.png", preview_png)
        backend.put_bytes(manifest_key(name, version), json.dumps(manifest, indent=1).encode())
    except DataError:
        _discard_staged(backend, staged["key"])
        raise
    return uri


def discard_version(staged: dict[str, Any], s3: S3Settings | None = None) -> None:
    """Delete a staged (unpublished) version's data."""
    open_backend(staged["root"], s3).delete_prefix(staged["key"])


def gc_orphans(root: str, name: str, older_than_s: float = 3600.0, s3: S3Settings | None = None) -> list[str]:
    """Delete data prefixes no manifest refers to (left by killed writers) older than ``older_than_s``."""
    backend = open_backend(root, s3)
    used = {m["path"].rsplit("/", 1)[-1] for m in list_manifests(backend, check_name(name))}
    now = dt.datetime.now(dt.UTC)
    removed = []
    for token in backend.list_dirs(f"{name}/data"):
        if token in used:
            continue
        try:
            made = dt.datetime.strptime(token.split("-")[0], "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)
        except ValueError:
            continue
        if (now - made).total_seconds() >= older_than_s:
            backend.delete_prefix(f"{name}/data/{token}")
            removed.append(token)
    return removed


def ingest(kind: str, source: str | None, name: str, root: str, *, progress: Progress | None = None,
           s3: S3Settings | None = None, **options: Any) -> str:
    """Ingest ``source`` of ``kind`` as dataset ``name`` under ``root``; returns the committed version URI.

    Same source and options as an existing version: returns that version without writing.

    Args:
        kind: one of thuml-npz, mnist-seq-npy, video-folder, frames-folder, npy, netcdf,
            moving-digits, storm-cells.
        source: a local file or folder (may be empty for the generators).
        name: dataset name (letters, digits, ``.``, ``_``, ``-``).
        root: a local folder or ``s3://bucket/prefix``.
        progress: called with the number of clips written so far, after each batch.
        s3: the S3 settings of an ``s3://`` source or root (:func:`predrnn.settings.s3_settings`'s keyless
            form; None: the client's defaults).
        **options: source options (``num_clips``, ``frames``, ``window``, ``stride``, ``resize``,
            ``grayscale``, ``val_fraction``, ``test_fraction``, ``split_seed``, ...).
    """
    check_name(name)
    src_info = inspect_source(kind, source, s3=s3, **options)
    existing = find_existing(root, name, src_info["fingerprint"], s3)
    if existing:
        log.info("%s: same source and options as %s; nothing to do", name, existing)
        return existing
    validate_source(kind, source, s3=s3, **options)
    staged = write_version(kind, source, name, root, progress=progress, s3=s3, **options)
    try:
        verify_version(staged, s3)
        return publish_version(staged, s3=s3)
    except BaseException:
        _discard_staged(open_backend(staged["root"], s3), staged["key"])
        raise
