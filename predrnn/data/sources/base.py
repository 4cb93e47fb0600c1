"""What every source shares: options, the clip record, checksums and value checks."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from predrnn.data.errors import DataError

if TYPE_CHECKING:
    from predrnn.data.sources.remote import Mirror
    from predrnn.data.store import S3Settings

COMMON_OPTIONS: dict[str, Any] = {
    "val_fraction": 0.1,
    "test_fraction": 0.1,
    "split_seed": 0,
    "split": "auto",  # auto (source's own split if it has one, else seeded), seeded, source, kth, time
    "max_frame_side": 4096,  # largest accepted source frame height or width, before any resize
    "description": "",
    "float_dtype": "float32",  # stored dtype of physical data: float32 or float16
    # What the values are (physical fields): the valid range in the data's units (None: unbounded) and
    # the default verification thresholds (a list or "0.5,2,5"; None: the units' defaults).
    "valid_min": None,
    "valid_max": None,
    "thresholds": None,
}

WINDOW_OPTIONS: dict[str, Any] = {"window": 20, "stride": None, "resize": None, "grayscale": True}

_SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                "test": "test", "testing": "test"}


@dataclass
class Clip:
    """One clip ready to store: (T, H, W, C) in the stored dtype, its split label (or None), origin, and
    ``group``: the source sequence it was cut from (a video, an array row, a KTH person); every clip of a
    group lands in the same split, so windows of one sequence never straddle splits. None: its own group.
    ``times``: (T,) the valid time of each frame (datetime64[ns], or float64 for a numeric time
    coordinate) when the source has a time coordinate, else None."""

    data: np.ndarray
    where: str
    split: str | None = None
    group: str | None = None
    times: np.ndarray | None = None


@dataclass
class SourceInfo:
    """What ``inspect`` learns without reading every clip."""

    kind: str
    location: str
    description: str
    checksum: str
    frame_shape: tuple[int, int, int]  # (H, W, C) as stored
    frames: int  # T
    dtype: str  # stored dtype
    value_kind: str  # "image" (uint8, 0..255) or "physical" (float, NaN = no data)
    units: str = ""
    clips_hint: int | None = None  # exact when known up front, else None
    has_source_split: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


class Source:
    """A reader that streams clips; memory stays bounded by a few clips whatever the input size.

    ``source`` is a local file or folder (``file://`` allowed) or, for every kind that reads files, an
    ``s3://bucket/key`` URI: an object or a prefix, fetched once per process into a temporary local copy
    that the kind reads as it would the same files on disk (see :mod:`predrnn.data.sources.remote`).
    """

    kind: ClassVar[str] = ""
    OPTIONS: ClassVar[dict[str, Any]] = {}
    needs_source: ClassVar[bool] = True
    time_ordered: ClassVar[bool] = False  # one time-ordered sequence (a grid): split by time blocks
    reader_version: ClassVar[int] = 1  # raised when the kind reads the same files differently

    def __new__(cls, source: str | Path | None = None, options: dict[str, Any] | None = None, *,
                s3: S3Settings | None = None) -> Source:
        if cls.needs_source and str(source or "").startswith("s3://") and not issubclass(cls, RemoteSource):
            return super().__new__(remote_class(cls))  # the kind's reader over the local copy, reporting the URI
        return super().__new__(cls)

    def __init__(self, source: str | Path | None, options: dict[str, Any], *, s3: S3Settings | None = None):
        """Raises DataError: an unknown option, a missing or unreadable source; ``s3``: the S3 settings of an
        ``s3://`` source (:func:`predrnn.settings.s3_settings`'s keyless form; None: the client's defaults)."""
        accepted = {**COMMON_OPTIONS, **self.OPTIONS}
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise DataError(f"unknown option(s) {unknown} for kind {self.kind}; accepted: {sorted(accepted)}")
        self.opts: dict[str, Any] = {**accepted, **{k: v for k, v in options.items() if v is not None}}
        self.given = {k for k, v in options.items() if v is not None}
        self.path: Path | None = None
        self.remote: Mirror | None = None  # the local copy of an s3:// source
        if self.needs_source:
            if source is None or str(source) == "":
                raise DataError(f"kind {self.kind} needs --source (a file, a folder or an s3:// URI)")
            if str(source).startswith("s3://"):
                from predrnn.data.sources.remote import fetch

                self._check_common()  # bad options fail before anything is fetched
                self.remote = fetch(str(source), s3)
                self.path = self.remote.path
            else:
                if "://" in str(source) and not str(source).startswith("file://"):
                    raise DataError(f"source {source}: kind {self.kind} reads local files or s3:// URIs only")
                self.path = Path(str(source).removeprefix("file://")).expanduser().absolute()
                if not self.path.exists():
                    raise DataError(f"source {self.path} does not exist")
        self._check_common()

    # -- to be provided by each source --------------------------------------------------------

    def inspect(self) -> SourceInfo:
        raise NotImplementedError

    def validate(self) -> None:
        """Structural checks that need no full decode (headers, indices, sizes); raise DataError."""
        self.inspect()

    def clips(self) -> Iterator[Clip]:
        raise NotImplementedError

    # -- helpers ------------------------------------------------------------------------------

    def _check_common(self) -> None:
        o = self.opts
        for key in ("val_fraction", "test_fraction"):
            if not isinstance(o[key], int | float) or not 0 <= o[key] < 1:
                raise DataError(f"option {key} must be a number in [0, 1), got {o[key]!r}")
        if o["val_fraction"] + o["test_fraction"] >= 1:
            raise DataError("val_fraction + test_fraction must be < 1 (something must stay for training)")
        if o["split"] not in ("auto", "seeded", "source", "kth", "time"):
            raise DataError(f"option split must be auto, seeded, source, kth or time, got {o['split']!r}")
        if self.time_ordered and o["split"] not in ("auto", "time"):
            raise DataError(f"split={o['split']} does not apply to kind {self.kind}: a time-ordered grid is split by "
                            "contiguous time blocks (split=auto or time; options split_blocks, split_gap), since "
                            "neighbouring windows share or correlate with each other's frames")
        if not self.time_ordered and o["split"] == "time":
            raise DataError(f"split=time applies to time-ordered grids (kind netcdf), not to kind {self.kind}")
        if self.time_ordered:
            o["split"] = "time"
        if o["split"] in ("source", "kth") and "test_fraction" in self.given:
            raise DataError(f"--test-fraction does not apply to split={o['split']}: the test set comes from the "
                            + ("KTH protocol (persons 17-25)" if o["split"] == "kth" else "source's own split")
                            + "; drop it, or use --split seeded")
        if o["float_dtype"] not in ("float32", "float16"):
            raise DataError(f"option float_dtype must be float32 or float16, got {o['float_dtype']!r}")
        if int(o["max_frame_side"]) < 1:
            raise DataError("option max_frame_side must be >= 1")
        for key in ("valid_min", "valid_max"):
            v = o[key]
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or v != v):
                raise DataError(f"option {key} must be a number in the data's units, got {v!r}")
        if o["valid_min"] is not None and o["valid_max"] is not None and not o["valid_min"] < o["valid_max"]:
            raise DataError(f"option valid_min ({o['valid_min']}) must be below valid_max ({o['valid_max']})")
        if o["thresholds"] is not None:
            o["thresholds"] = parse_thresholds(o["thresholds"])

    def check_frame_size(self, h: int, w: int, where: str) -> None:
        limit = int(self.opts["max_frame_side"])
        if h > limit or w > limit:
            raise DataError(f"{where}: frame size {h}x{w} is larger than the configured limit "
                            f"max_frame_side={limit}")

    def options_fingerprint(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in sorted(self.opts.items()) if k != "description"}


def parse_thresholds(value: Any) -> list[float]:
    """``[0.5, 2, 5]`` or ``"0.5,2,5"`` -> sorted distinct floats; raises DataError otherwise."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list | tuple) else [value]
    try:
        out = sorted({float(x) for x in items if str(x).strip() != ""})
    except (TypeError, ValueError):
        raise DataError(f"option thresholds must be numbers in the data's units, e.g. 0.5,2,5; got {value!r}") from None
    if not out or any(t != t or t in (float("inf"), float("-inf")) for t in out):
        raise DataError(f"option thresholds must be finite numbers, e.g. 0.5,2,5; got {value!r}")
    return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def files_checksum(root: Path, files: list[Path]) -> str:
    """sha256 over (relative path, file sha256) pairs: identical trees give identical checksums."""
    h = hashlib.sha256()
    for f in files:
        rel = f.relative_to(root).as_posix() if f != root else f.name
        h.update(rel.encode() + b"\0" + file_sha256(f).encode() + b"\n")
    return h.hexdigest()


def params_checksum(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def split_label_from_path(rel: Path) -> str | None:
    """``train``/``val``/``test`` when the first folder or the file name says so, else None."""
    parts = rel.parts
    if len(parts) > 1 and parts[0].lower() in _SPLIT_WORDS:
        return _SPLIT_WORDS[parts[0].lower()]
    stem = rel.name.lower()
    for word in re.split(r"[^a-z]+", stem):
        if word in _SPLIT_WORDS:
            return _SPLIT_WORDS[word]
    return None


def kth_label(rel: Path) -> str | None:
    """KTH convention: persons 1-16 train, 17-25 test (from a ``personNN`` part of the path)."""
    m = re.search(r"person(\d+)", rel.as_posix())
    if not m:
        return None
    return "train" if int(m.group(1)) <= 16 else "test"


def kth_person(rel: Path) -> str | None:
    """``person07`` from a KTH path (the unit the protocol splits by), or None."""
    m = re.search(r"person(\d+)", rel.as_posix())
    return f"person{int(m.group(1)):02d}" if m else None


def natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.as_posix())]


def as_image_uint8(x: np.ndarray, where: str) -> np.ndarray:
    """Image frames as uint8: uint8 as is, float in [0, 1] scaled by 255; NaN/inf or bad range refused."""
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind == "f":
        finite = np.isfinite(x)
        if not finite.all():
            bad = np.argwhere(~finite)[0]
            raise DataError(f"{where}: NaN/inf in image data (first at frame {int(bad[0])}, "
                            f"pixel {tuple(int(b) for b in bad[1:])})")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise DataError(f"{where}: image values must lie in [0, 1] for float data, found {lo:g}..{hi:g}")
        return np.rint(x * 255.0).astype(np.uint8)
    raise DataError(f"{where}: wrong dtype {x.dtype} for image data (expected uint8 or float in [0, 1])")


def as_physical(x: np.ndarray, where: str, dtype: str) -> np.ndarray:
    """Physical values as float32/float16; NaN marks no data, inf is refused."""
    return as_stored_float(physical_float32(x, where), where, dtype)


def physical_float32(x: np.ndarray, where: str) -> np.ndarray:
    """Numbers (T, ...) as float32 (NaN = no data).

    Raises:
        DataError: not a numeric array, or an inf (named by its first frame).
    """
    if x.dtype.kind not in "fiu":
        raise DataError(f"{where}: wrong dtype {x.dtype} (expected a numeric array)")
    y = np.asarray(x, dtype=np.float32)
    if np.isinf(y).any():
        t = int(np.argwhere(np.isinf(y))[0][0])
        raise DataError(f"{where}: inf in data (first at frame {t}); use NaN to mark missing values")
    return y


def as_stored_float(y: np.ndarray, where: str, dtype: str) -> np.ndarray:
    """Float32 values (NaN = no data) in the stored float dtype; a value the dtype cannot hold is refused.

    Raises:
        DataError: ``dtype`` is float16 and a finite value's magnitude exceeds 65504 (it would become inf),
            naming the largest value and the dtype that holds it.
    """
    if np.dtype(dtype) == np.float16 and y.size:
        big = float(np.nanmax(np.abs(y))) if np.isfinite(y).any() else 0.0
        limit = float(np.finfo(np.float16).max)
        if big > limit:
            raise DataError(f"{where}: value {big:.6g} does not fit float_dtype=float16 (largest {limit:g}); "
                            "ingest with float_dtype=float32")
    return y.astype(dtype, copy=False)


def parse_resize(value: Any) -> tuple[int, int] | None:
    """``None``, an int (square), ``"HxW"`` or a pair -> (H, W)."""
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*", value)
        if not m:
            raise DataError(f"option resize must be N or HxW, got {value!r}")
        h = int(m.group(1))
        return (h, int(m.group(2)) if m.group(2) else h)
    if isinstance(value, tuple | list) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    raise DataError(f"option resize must be N or HxW, got {value!r}")


class Windower:
    """Cuts a stream of frames into windows of ``window`` frames starting every ``stride`` frames."""

    def __init__(self, window: int, stride: int):
        self.window, self.stride = window, stride
        self.buf: deque[np.ndarray] = deque(maxlen=window)
        self.seen = 0

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        """Add the next frame; returns a (window, ...) array when a window ends at this frame."""
        self.buf.append(frame)
        self.seen += 1
        first = self.seen - self.window  # index of the window's first frame
        if len(self.buf) == self.window and first % self.stride == 0:
            return np.stack(self.buf)
        return None


def window_options(src: Source) -> tuple[int, int, tuple[int, int] | None, bool]:
    window = int(src.opts["window"])
    stride = int(src.opts["stride"] or window)
    if window < 1 or stride < 1:
        raise DataError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    return window, stride, parse_resize(src.opts["resize"]), bool(src.opts["grayscale"])


# ---------------------------------------------------------------------------------------------
# The source side: a kind's reader over the local copy, reporting the S3 URI.


class RemoteSource(Source):
    """Placed before a file-based kind's class (see :func:`remote_class`) when its source is an S3 URI.

    :meth:`Source.__init__` fetches the copy (``self.remote``) and points ``self.path`` at it; this
    class reports ``remote.uri`` as the location and rewrites the local paths in error messages and
    clip origins (``Clip.where``) to S3 URIs. Shapes, dtypes, splits and checksums are the kind's own.
    """

    def _mirror(self) -> Mirror:
        assert self.remote is not None
        return self.remote

    def inspect(self) -> SourceInfo:
        mirror = self._mirror()
        with mirror.translating():
            info = super().inspect()
        info.location = mirror.uri
        info.description = mirror.translate(info.description)
        return info

    def validate(self) -> None:
        with self._mirror().translating():
            super().validate()

    def clips(self) -> Iterator[Clip]:
        mirror = self._mirror()
        with mirror.translating():
            for clip in super().clips():
                clip.where = mirror.translate(clip.where)
                yield clip


_REMOTE_CLASSES: dict[type[Source], type[Source]] = {}
_classes_lock = threading.Lock()


def remote_class(cls: type[Source]) -> type[Source]:
    """``cls`` reading from S3: a subclass of (:class:`RemoteSource`, ``cls``), made once per kind."""
    with _classes_lock:
        if cls not in _REMOTE_CLASSES:
            _REMOTE_CLASSES[cls] = type(f"{cls.__name__}OnS3", (RemoteSource, cls),
                                        {"__module__": __name__, "__qualname__": f"{cls.__qualname__}OnS3",
                                         "__doc__": cls.__doc__})
        return _REMOTE_CLASSES[cls]
