"""NumPy sources: the authors' Moving MNIST ``.npz``, ``mnist_test_seq.npy`` and generic arrays.

Arrays are never loaded whole: ``.npy`` files are memory-mapped, stored ``.npz`` members are
memory-mapped at their offset inside the zip, compressed members are streamed.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from predrnn.data.errors import DataError
from predrnn.data.sources.base import (
    Clip,
    Source,
    SourceInfo,
    as_image_uint8,
    as_physical,
    files_checksum,
    split_label_from_path,
)


class ArrayReader:
    """Leading-axis slices of an array in a ``.npy`` file or a ``.npz`` member, without loading it."""

    def __init__(self, path: Path, member: str | None = None):
        self.path, self.member = path, member
        self.where = f"{path}" + (f" [{member}]" if member else "")
        self._stream: Any = None
        self._zip: zipfile.ZipFile | None = None
        try:
            if member is None:
                self.array: Any = np.load(path, mmap_mode="r", allow_pickle=False)
                self.shape, self.dtype = tuple(self.array.shape), self.array.dtype
            else:
                self._open_member(member)
        except DataError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, struct.error) as err:
            raise DataError(f"{self.where}: corrupt or unreadable array file ({_one_line(err)})") from None
        if self.dtype.hasobject:
            raise DataError(f"{self.where}: wrong dtype {self.dtype} (object arrays are not accepted)")

    def _open_member(self, member: str) -> None:
        self._zip = zipfile.ZipFile(self.path)
        name = member if member.endswith(".npy") else member + ".npy"
        info = self._zip.getinfo(name)
        if info.compress_type == zipfile.ZIP_STORED:
            with open(self.path, "rb") as fh:
                fh.seek(info.header_offset)
                local = fh.read(30)
                if len(local) < 30 or local[:4] != b"PK\x03\x04":
                    raise DataError(f"{self.where}: corrupt .npz (bad local header)")
                n_name, n_extra = struct.unpack("<HH", local[26:30])
                fh.seek(info.header_offset + 30 + n_name + n_extra)
                shape, fortran, dtype = _read_npy_header(fh)
                offset = fh.tell()
            self.shape, self.dtype = shape, dtype
            if dtype.hasobject:
                return
            self.array = np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape,
                                   order="F" if fortran else "C")
        else:
            self._stream = self._zip.open(name)
            shape, fortran, dtype = _read_npy_header(self._stream)
            if fortran and len(shape) > 1:
                raise DataError(f"{self.where}: Fortran-ordered compressed members are not supported")
            self.shape, self.dtype = shape, dtype
            self._data_offset = self._stream.tell()
            self._row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of the leading axis as an in-memory array."""
        try:
            if self._stream is None:
                return np.array(self.array[start:stop])
            self._stream.seek(self._data_offset + start * self._row_bytes)
            want = (stop - start) * self._row_bytes
            buf = self._stream.read(want)
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise DataError(f"{self.where}: corrupt .npz member ({_one_line(err)})") from None
        if len(buf) != want:
            raise DataError(f"{self.where}: truncated data (rows {start}..{stop - 1} missing)")
        return np.frombuffer(buf, dtype=self.dtype).reshape((stop - start, *self.shape[1:]))

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        if self._zip is not None:
            self._zip.close()


def _read_npy_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    return tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300] or type(err).__name__


def _open_zip_checked(path: Path, crc: bool) -> zipfile.ZipFile:
    """Open a ``.npz``; with ``crc`` check every member's CRC (one streaming read of the archive)."""
    try:
        zf = zipfile.ZipFile(path)
        bad = zf.testzip() if crc else None
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as err:
        raise DataError(f"{path}: corrupt .npz ({_one_line(err)})") from None
    if bad is not None:
        zf.close()
        raise DataError(f"{path}: corrupt .npz (CRC mismatch in member {bad!r})")
    return zf


def _collect_files(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise DataError(f"source {path}: empty source (no {'/'.join(suffixes)} files)")
    return files


def _labels(root: Path, files: list[Path], src: Source) -> list[str | None]:
    """Split labels of files from their names/folders when every file has one (else all None)."""
    if src.opts["split"] == "seeded" or root.is_file():
        return [None] * len(files)
    labels = [split_label_from_path(f.relative_to(root)) for f in files]
    if all(lb is not None for lb in labels):
        return labels
    if src.opts["split"] == "source":
        missing = [str(f) for f, lb in zip(files, labels, strict=True) if lb is None]
        raise DataError(f"split=source but these files carry no train/val/test in their names: {missing[:3]}")
    return [None] * len(files)


def _window_stride(src: Source, t: int, where: str) -> tuple[int, int]:
    """(window, stride) for sequences of ``t`` frames under the source's options; the whole sequence when
    no window is set. Raises DataError for a window longer than the sequence or a non-positive value."""
    window = int(src.opts["window"] or t)
    stride = int(src.opts["stride"] or window)
    if window < 1 or stride < 1:
        raise DataError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    if window > t:
        raise DataError(f"{where}: sequences of {t} frames are shorter than --window {window}")
    return window, stride


def _overlap_groups(clips: np.ndarray) -> list[str]:
    """The source sequence of each clip of an authors' ``clips`` index [2, N, 2]: clips whose frame ranges
    (input start .. output end) overlap get the same name, ``frames A..B`` (the merged range)."""
    first = np.minimum(clips[0, :, 0], clips[1, :, 0])
    stop = np.maximum(clips[0, :, 0] + clips[0, :, 1], clips[1, :, 0] + clips[1, :, 1])
    order = np.argsort(first, kind="stable")
    names = [""] * len(first)
    members: list[int] = []
    lo, hi = 0, -1
    for i in [*order.tolist(), -1]:
        if i >= 0 and members and first[i] < hi:  # shares a frame with the current run
            members.append(i)
            hi = max(hi, int(stop[i]))
            continue
        for m in members:
            names[m] = f"frames {lo}..{hi - 1}"
        if i >= 0:
            members, lo, hi = [i], int(first[i]), int(stop[i])
    return names


# ---------------------------------------------------------------------------------------------


class _ZipSource(Source):
    _crc = False

    def validate(self) -> None:
        """Check every archive's CRCs as well as the headers, indices and shapes."""
        self._crc = True
        try:
            self.inspect()
        finally:
            self._crc = False


class ThumlNpz(_ZipSource):
    """The authors' Moving MNIST ``.npz``: ``input_raw_data`` [F, C, H, W] in [0, 1], ``clips`` [2, N, 2]
    ((start, length) of the input and output frames of clip i), ``dims`` [[C, H, W]].

    ``source`` is one file (seeded split) or a folder of files whose names say train/valid/test.
    Clips whose frame ranges overlap in ``input_raw_data`` (the authors' KTH and Human3.6M files index
    overlapping windows of one video) form one source sequence, so they always land in the same split.
    ``window``/``stride``: cut every clip's input+output frames into clips of ``window`` frames starting
    every ``stride`` frames (default: each clip whole); all pieces of a clip go to the same split.
    """

    kind = "thuml-npz"
    OPTIONS = {"window": None, "stride": None}

    def _files(self) -> list[Path]:
        assert self.path is not None
        return _collect_files(self.path, (".npz",))

    def _index(self, path: Path) -> tuple[ArrayReader, np.ndarray, tuple[int, int, int]]:
        zf = _open_zip_checked(path, self._crc)
        names = set(zf.namelist())
        zf.close()
        for key in ("input_raw_data", "clips", "dims"):
            if key + ".npy" not in names:
                raise DataError(f"{path}: not an authors' Moving MNIST .npz: missing {key!r} "
                                f"(members: {sorted(n.removesuffix('.npy') for n in names)})")
        clips_r, dims_r = ArrayReader(path, "clips"), ArrayReader(path, "dims")
        clips, dims = clips_r.read(0, clips_r.shape[0]), dims_r.read(0, dims_r.shape[0])
        clips_r.close()
        dims_r.close()
        data = ArrayReader(path, "input_raw_data")
        if len(data.shape) != 4:
            raise DataError(f"{path}: input_raw_data has wrong rank {len(data.shape)} (shape {data.shape}); "
                            "expected 4: [frames, C, H, W]")
        if data.dtype != np.uint8 and data.dtype.kind != "f":
            raise DataError(f"{path}: input_raw_data has wrong dtype {data.dtype} (expected float in [0, 1])")
        c, h, w = data.shape[1:]
        if dims.size == 3 and tuple(int(x) for x in dims.reshape(-1)) != (c, h, w):
            raise DataError(f"{path}: dims {dims.reshape(-1).tolist()} disagree with input_raw_data "
                            f"frames {[c, h, w]}")
        if clips.ndim != 3 or clips.shape[0] != 2 or clips.shape[2] != 2:
            raise DataError(f"{path}: clips has shape {clips.shape}; expected [2, N, 2]")
        if clips.shape[1] == 0:
            raise DataError(f"{path}: empty source (clips lists no clip)")
        clips = clips.astype(np.int64)
        n_frames = data.shape[0]
        starts, lengths = clips[:, :, 0], clips[:, :, 1]
        bad = np.flatnonzero(((starts < 0) | (lengths < 0) | (starts + lengths > n_frames)).any(axis=0))
        if bad.size:
            i = int(bad[0])
            raise DataError(f"{path}: clip {i}: clips indices out of range (input {clips[0, i].tolist()}, "
                            f"output {clips[1, i].tolist()} as (start, length); the file holds "
                            f"{n_frames} frames)")
        total = lengths.sum(axis=0)
        ragged = np.flatnonzero(total != total[0])
        if ragged.size:
            i = int(ragged[0])
            raise DataError(f"{path}: clip {i}: ragged clip lengths: {int(total[i])} frames "
                            f"(input {int(lengths[0, i])} + output {int(lengths[1, i])}) but clip 0 has "
                            f"{int(total[0])}")
        self.check_frame_size(h, w, str(path))
        return data, clips, (h, w, c)

    def inspect(self) -> SourceInfo:
        assert self.path is not None
        files = self._files()
        shapes, n, t = set(), 0, None
        for f in files:
            data, clips, hwc = self._index(f)
            data.close()
            shapes.add(hwc)
            length = int(clips[0, 0, 1] + clips[1, 0, 1])
            if t is not None and length != t:
                raise DataError(f"{f}: ragged clip lengths: its clips have {length} frames, "
                                f"{files[0]} has {t}")
            t = length
            n += clips.shape[1]
        if len(shapes) > 1:
            raise DataError(f"source {self.path}: files hold different frame shapes {sorted(shapes)}")
        h, w, c = shapes.pop()
        window, stride = _window_stride(self, int(t or 0), str(files[0]))
        n *= 1 + (int(t or 0) - window) // stride
        labels = _labels(self.path, files, self)
        return SourceInfo(kind=self.kind, location=str(self.path),
                          description=f"authors' Moving MNIST npz ({len(files)} file(s))",
                          checksum=files_checksum(self.path if self.path.is_dir() else self.path.parent, files),
                          frame_shape=(h, w, c), frames=window, dtype="uint8", value_kind="image",
                          units="intensity (0..255)", clips_hint=n, has_source_split=labels[0] is not None)

    def clips(self) -> Iterator[Clip]:
        assert self.path is not None
        files = self._files()
        labels = _labels(self.path, files, self)
        for f, label in zip(files, labels, strict=True):
            data, clips, _ = self._index(f)
            sequence = _overlap_groups(clips)
            try:
                for i in range(clips.shape[1]):
                    (s0, l0), (s1, l1) = clips[0, i], clips[1, i]
                    if s1 == s0 + l0:
                        frames = data.read(int(s0), int(s1 + l1))
                    else:
                        frames = np.concatenate([data.read(int(s0), int(s0 + l0)), data.read(int(s1), int(s1 + l1))])
                    window, stride = _window_stride(self, frames.shape[0], f"{f}: clip {i}")
                    for t0 in range(0, frames.shape[0] - window + 1, stride):
                        where = f"{f}: clip {i}" + (f" frames {t0}..{t0 + window - 1}" if window < len(frames) else "")
                        x = np.transpose(frames[t0:t0 + window], (0, 2, 3, 1))
                        yield Clip(as_image_uint8(x, where), where, label, group=f"{f.name}:{sequence[i]}")
            finally:
                data.close()


class MnistSeqNpy(Source):
    """The original ``mnist_test_seq.npy``: uint8 [T, N, H, W], time first."""

    kind = "mnist-seq-npy"

    def _reader(self) -> ArrayReader:
        assert self.path is not None
        if not self.path.is_file():
            raise DataError(f"source {self.path}: expected a .npy file")
        r = ArrayReader(self.path)
        if len(r.shape) != 4:
            raise DataError(f"{self.path}: wrong rank {len(r.shape)} (shape {r.shape}); expected 4: "
                            "[T, N, H, W] with time first")
        if r.dtype != np.uint8 and r.dtype.kind != "f":
            raise DataError(f"{self.path}: wrong dtype {r.dtype}; expected uint8 (or float in [0, 1])")
        if r.shape[0] == 0 or r.shape[1] == 0:
            raise DataError(f"{self.path}: empty source (shape {r.shape})")
        self.check_frame_size(r.shape[2], r.shape[3], str(self.path))
        return r

    def inspect(self) -> SourceInfo:
        assert self.path is not None
        r = self._reader()
        t, n, h, w = r.shape
        return SourceInfo(kind=self.kind, location=str(self.path), description="Moving MNIST sequence .npy "
                          "(time first)", checksum=files_checksum(self.path.parent, [self.path]),
                          frame_shape=(h, w, 1), frames=t, dtype="uint8", value_kind="image",
                          units="intensity (0..255)", clips_hint=n)

    def clips(self) -> Iterator[Clip]:
        r = self._reader()
        n, batch = r.shape[1], 64
        for i0 in range(0, n, batch):
            block = np.asarray(r.array[:, i0:i0 + batch])  # (T, b, H, W): one strided read per batch
            for j in range(block.shape[1]):
                where = f"{self.path}: clip {i0 + j}"
                yield Clip(as_image_uint8(block[:, j, :, :, None], where), where)


class NpyArrays(_ZipSource):
    """``.npy``/``.npz`` arrays of clips; a folder of them may carry train/val/test in names.

    ``layout``: ``NTHWC`` (default; a 4-D array is read as ``NTHW``), ``NTCHW`` (channels before the
    frame, as torch tensors and OpenSTL arrays) or ``NTHW`` (one channel). An array whose channel axis
    is implausible under the chosen layout (more than 4 channels while a frame axis has 1, 3 or 4
    entries, or a frame side at most a quarter of the channel count) is refused with its shape and the
    layout that would fit. ``window``/``stride``: cut every row (a sequence) into clips of ``window``
    frames starting every ``stride`` frames (default: the whole row is one clip); all clips of a row go
    to the same split. uint8 is image data; float is physical data (NaN = no data) unless
    ``image=True`` (floats in [0, 1], stored as uint8). ``key`` picks the ``.npz`` member (default:
    the only one, or ``clips``).
    """

    kind = "npy"
    OPTIONS = {"key": None, "image": None, "units": "", "layout": "NTHWC", "window": None, "stride": None}
    LAYOUTS = ("NTHWC", "NTCHW", "NTHW")

    def _thwc(self, shape: tuple[int, ...], where: str) -> tuple[int, int, int, int]:
        """(T, H, W, C) of an array of ``shape`` under the layout option; refuses implausible layouts."""
        layout = str(self.opts["layout"]).upper()
        if layout not in self.LAYOUTS:
            raise DataError(f"option layout must be one of {', '.join(self.LAYOUTS)}, got {self.opts['layout']!r}")
        want = 4 if layout == "NTHW" else 5
        if len(shape) != want and not (layout == "NTHWC" and len(shape) == 4):
            raise DataError(f"{where}: shape {shape} has {len(shape)} axes; layout {layout} needs {want}")
        if len(shape) == 4:
            return shape[1], shape[2], shape[3], 1
        if layout == "NTCHW":
            t, c, h, w = shape[1:]
        else:
            t, h, w, c = shape[1:]
        if c > 4 and (h in (1, 3, 4) or w in (1, 3, 4) or 4 * min(h, w) <= c):
            other = "NTCHW" if layout == "NTHWC" else "NTHWC"
            raise DataError(f"{where}: shape {shape} read as {layout} gives {h}x{w} frames with {c} channels, "
                            f"which is implausible; if the axes are {other}, pass --layout {other}")
        return t, h, w, c

    def _window(self, t: int, where: str) -> tuple[int, int]:
        """(window, stride) for rows of ``t`` frames; the whole row when no window is set."""
        return _window_stride(self, t, where)

    def _block_thwc(self, block: np.ndarray) -> np.ndarray:
        """A block of clips in the file's layout -> (n, T, H, W, C)."""
        if block.ndim == 4:
            return block[..., None]
        if str(self.opts["layout"]).upper() == "NTCHW":
            return np.ascontiguousarray(block.transpose(0, 1, 3, 4, 2))
        return block

    def _files(self) -> list[Path]:
        assert self.path is not None
        return _collect_files(self.path, (".npy", ".npz"))

    def _reader(self, f: Path) -> ArrayReader:
        if f.suffix.lower() == ".npz":
            zf = _open_zip_checked(f, self._crc)
            members = [n.removesuffix(".npy") for n in zf.namelist()]
            zf.close()
            key = self.opts["key"]
            if key is None:
                if len(members) == 1:
                    key = members[0]
                else:
                    key = next((k for k in ("clips", "data", "arr_0") if k in members), None)
                if key is None:
                    raise DataError(f"{f}: several arrays {members}; choose one with option key")
            elif key not in members:
                raise DataError(f"{f}: no array {key!r} (members: {members})")
            r = ArrayReader(f, key)
        else:
            r = ArrayReader(f)
        if len(r.shape) not in (4, 5):
            raise DataError(f"{r.where}: wrong rank {len(r.shape)} (shape {r.shape}); expected "
                            "(N, T, H, W), (N, T, H, W, C) or, with --layout NTCHW, (N, T, C, H, W)")
        if not (r.dtype == np.uint8 or r.dtype.kind == "f"):
            raise DataError(f"{r.where}: wrong dtype {r.dtype}; expected uint8 (image) or float")
        _, h, w, _ = self._thwc(r.shape, r.where)
        self.check_frame_size(h, w, r.where)
        return r

    def _image(self, dtype: np.dtype) -> bool:
        if dtype == np.uint8:
            return True
        return bool(self.opts["image"])

    def inspect(self) -> SourceInfo:
        assert self.path is not None
        files = self._files()
        n, first = 0, None
        for f in files:
            r = self._reader(f)
            shape = self._thwc(r.shape, r.where)
            sig = (shape, self._image(r.dtype))
            r.close()
            if first is None:
                first = (f, sig)
            elif sig != first[1]:
                what = "ragged clip lengths" if sig[0][0] != first[1][0][0] else "different frame shape or kind"
                raise DataError(f"{f}: {what}: clips of {sig[0]} ({'image' if sig[1] else 'physical'}) but "
                                f"{first[0]} has {first[1][0]} ({'image' if first[1][1] else 'physical'})")
            n += r.shape[0]
        assert first is not None
        if n == 0:
            raise DataError(f"source {self.path}: empty source (0 clips)")
        (t, h, w, c), image = first[1]
        window, stride = self._window(t, str(first[0]))
        n *= 1 + (t - window) // stride
        t = window
        labels = _labels(self.path, files, self)
        return SourceInfo(kind=self.kind, location=str(self.path), description=f"NumPy arrays ({len(files)} file(s))",
                          checksum=files_checksum(self.path if self.path.is_dir() else self.path.parent, files),
                          frame_shape=(h, w, c), frames=t,
                          dtype="uint8" if image else self.opts["float_dtype"],
                          value_kind="image" if image else "physical",
                          units="intensity (0..255)" if image else str(self.opts["units"]),
                          clips_hint=n, has_source_split=labels[0] is not None)

    def clips(self) -> Iterator[Clip]:
        assert self.path is not None
        files = self._files()
        labels = _labels(self.path, files, self)
        for f, label in zip(files, labels, strict=True):
            r = self._reader(f)
            image = self._image(r.dtype)
            try:
                for i0 in range(0, r.shape[0], 16):
                    block = self._block_thwc(r.read(i0, min(i0 + 16, r.shape[0])))
                    window, stride = self._window(block.shape[1], r.where)
                    for j in range(block.shape[0]):
                        for t0 in range(0, block.shape[1] - window + 1, stride):
                            where = (f"{r.where}: clip {i0 + j}" if window == block.shape[1] else
                                     f"{r.where}: row {i0 + j} frames {t0}..{t0 + window - 1}")
                            x = block[j, t0:t0 + window]
                            data = (as_image_uint8(x, where) if image
                                    else as_physical(x, where, self.opts["float_dtype"]))
                            yield Clip(data, where, label, group=f"{f.name}:{i0 + j}")
            finally:
                r.close()
