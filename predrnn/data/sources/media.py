"""Video files and per-frame image folders, cut into windows of ``window`` frames every ``stride``.

Videos are decoded by the ffmpeg binary that ``imageio-ffmpeg`` ships (streamed through a pipe,
resized and converted to grey by ffmpeg itself); GIFs and image frames by Pillow. A split is taken
from the paths when every item has one (a ``train``/``val``/``test`` folder or word in the name),
or from KTH person numbers with ``split="kth"``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from predrnn.data.errors import DataError
from predrnn.data.sources.base import (
    WINDOW_OPTIONS,
    Clip,
    Source,
    SourceInfo,
    Windower,
    files_checksum,
    kth_label,
    kth_person,
    natural_key,
    split_label_from_path,
    window_options,
)

VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".m4v", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class _QuietResize(logging.Filter):
    """imageio-ffmpeg warns whenever the output size differs from the source: that is what resize asks."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "frame size for reading" not in record.getMessage()


logging.getLogger("imageio_ffmpeg").addFilter(_QuietResize())


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if "=== stderr ===" in text:
        text = text.split("=== stderr ===")[0].strip()
    return text[:200] or type(err).__name__


def _pil_frame(img: Image.Image, size: tuple[int, int] | None, gray: bool) -> np.ndarray:
    img = img.convert("L" if gray else "RGB")
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=3.0)
    a = np.asarray(img, dtype=np.uint8)
    return a[..., None] if gray else a


class _Windowed(Source):
    OPTIONS = dict(WINDOW_OPTIONS)

    def _label(self, rel: Path) -> str | None:
        mode = self.opts["split"]
        if mode == "kth":
            return kth_label(rel)
        if mode == "seeded":
            return None
        return split_label_from_path(rel)

    def _group(self, rel: Path) -> str:
        """The sequence a window belongs to: the item (video or frame folder); under the KTH protocol the
        person, since validation is carved from the training persons whole."""
        if self.opts["split"] == "kth":
            return kth_person(rel) or rel.as_posix()
        return rel.as_posix()

    def _items(self) -> list[Path]:
        raise NotImplementedError

    def _frames(self, item: Path, size: tuple[int, int] | None, gray: bool) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def _probe(self, item: Path) -> tuple[int, int]:
        """(H, W) of an item's frames as stored in the source, checked against the size limit."""
        raise NotImplementedError

    def inspect(self) -> SourceInfo:
        assert self.path is not None
        window, _, size, gray = window_options(self)
        items = self._items()
        h, w = size if size is not None else self._probe(items[0])
        root = self.path if self.path.is_dir() else self.path.parent
        labels = [self._label(i.relative_to(root)) for i in items]
        files = self._all_files(items)
        return SourceInfo(kind=self.kind, location=str(self.path),
                          description=f"{self.kind} ({len(items)} item(s), window {window})",
                          checksum=files_checksum(root, files), frame_shape=(h, w, 1 if gray else 3),
                          frames=window, dtype="uint8", value_kind="image", units="intensity (0..255)",
                          clips_hint=None, has_source_split=all(lb is not None for lb in labels))

    def _all_files(self, items: list[Path]) -> list[Path]:
        return items

    def validate(self) -> None:
        """Probe every item: unreadable headers and frames over the size limit fail here."""
        self.inspect()
        for item in self._items():
            self._probe(item)

    def clips(self) -> Iterator[Clip]:
        assert self.path is not None
        window, stride, size, gray = window_options(self)
        root = self.path if self.path.is_dir() else self.path.parent
        items = self._items()
        first = size
        for item in items:
            label = self._label(item.relative_to(root))
            cut = Windower(window, stride)
            k = 0
            for frame in self._frames(item, size, gray):
                if first is None:
                    first = frame.shape[:2]
                elif frame.shape[:2] != first:
                    raise DataError(f"{item}: frame size {frame.shape[0]}x{frame.shape[1]} differs from "
                                    f"{first[0]}x{first[1]} of earlier items; set option resize")
                clip = cut.push(frame)
                if clip is not None:
                    yield Clip(clip, f"{item}: clip {k} (frames {cut.seen - window}..{cut.seen - 1})", label,
                               group=self._group(item.relative_to(root)))
                    k += 1


class VideoFolder(_Windowed):
    """A video file or a folder of them (.avi, .mp4, .mov, .mkv, .webm, .mpg, .gif, ...)."""

    kind = "video-folder"

    def _items(self) -> list[Path]:
        assert self.path is not None
        if self.path.is_file():
            files = [self.path]
        else:
            files = sorted((p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES),
                           key=natural_key)
        if not files:
            raise DataError(f"source {self.path}: empty source (no video files {', '.join(VIDEO_SUFFIXES)})")
        return files

    def _meta(self, path: Path) -> tuple[Any, dict[str, Any]]:
        import imageio_ffmpeg

        gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="gray", bits_per_pixel=8)
        try:
            meta = next(gen)
        except (OSError, RuntimeError, StopIteration) as err:
            gen.close()
            raise DataError(f"{path}: truncated or corrupt video ({_one_line(err)})") from None
        return gen, meta

    def _probe(self, item: Path) -> tuple[int, int]:
        if item.suffix.lower() == ".gif":
            try:
                with Image.open(item) as img:
                    w, h = img.size
            except (OSError, UnidentifiedImageError) as err:
                raise DataError(f"{item}: truncated or corrupt video ({_one_line(err)})") from None
        else:
            gen, meta = self._meta(item)
            gen.close()
            w, h = meta["source_size"]
        self.check_frame_size(h, w, str(item))
        return h, w

    def _frames(self, item: Path, size: tuple[int, int] | None, gray: bool) -> Iterator[np.ndarray]:
        if item.suffix.lower() == ".gif":
            yield from self._gif_frames(item, size, gray)
            return
        import imageio_ffmpeg

        c = 1 if gray else 3
        out = ["-s", f"{size[1]}x{size[0]}"] if size is not None else None
        try:
            gen = imageio_ffmpeg.read_frames(str(item), pix_fmt="gray" if gray else "rgb24",
                                             bits_per_pixel=8 * c, output_params=out)
            meta = next(gen)
        except (OSError, RuntimeError, StopIteration) as err:
            raise DataError(f"{item}: truncated or corrupt video ({_one_line(err)})") from None
        n = 0
        try:
            w, h = meta["source_size"]
            self.check_frame_size(h, w, str(item))
            ow, oh = meta["size"]
            expected = float(meta.get("duration") or 0) * float(meta.get("fps") or 0)
            for buf in gen:
                yield np.frombuffer(buf, np.uint8).reshape(oh, ow, c)
                n += 1
        except (OSError, RuntimeError) as err:
            raise DataError(f"{item}: truncated or corrupt video at frame {n} ({_one_line(err)})") from None
        finally:
            gen.close()
        if n == 0:
            raise DataError(f"{item}: truncated or corrupt video (no frame could be decoded)")
        if expected > 4 and n < 0.9 * expected - 1:
            raise DataError(f"{item}: truncated video: decoded {n} frames, the header promises about "
                            f"{expected:.0f}")

    def _gif_frames(self, item: Path, size: tuple[int, int] | None, gray: bool) -> Iterator[np.ndarray]:
        self._probe(item)
        n = 0
        try:
            with Image.open(item) as img:
                for frame in ImageSequence.Iterator(img):
                    out = _pil_frame(frame, size, gray)
                    n += 1
                    yield out
        except (OSError, UnidentifiedImageError, EOFError, ValueError) as err:
            raise DataError(f"{item}: truncated or corrupt video at frame {n} ({_one_line(err)})") from None


class FramesFolder(_Windowed):
    """Folders of per-frame images (e.g. KTH ``<action>/personXX_.../image_NNNN.png``): each folder
    holding images is one sequence, its frames in natural name order."""

    kind = "frames-folder"

    def _items(self) -> list[Path]:
        assert self.path is not None
        if not self.path.is_dir():
            raise DataError(f"source {self.path}: expected a folder of frame folders")
        dirs = {p.parent for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
        if not dirs:
            raise DataError(f"source {self.path}: empty source (no image files {', '.join(IMAGE_SUFFIXES)})")
        return sorted(dirs, key=natural_key)

    def _images(self, folder: Path) -> list[Path]:
        return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                      key=natural_key)

    def _all_files(self, items: list[Path]) -> list[Path]:
        return [f for d in items for f in self._images(d)]

    def _probe(self, item: Path) -> tuple[int, int]:
        first = self._images(item)[0]
        try:
            with Image.open(first) as img:
                w, h = img.size
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"{first}: corrupt image ({_one_line(err)})") from None
        self.check_frame_size(h, w, str(first))
        return h, w

    def _frames(self, item: Path, size: tuple[int, int] | None, gray: bool) -> Iterator[np.ndarray]:
        for f in self._images(item):
            try:
                with Image.open(f) as img:
                    self.check_frame_size(img.size[1], img.size[0], str(f))
                    frame = _pil_frame(img, size, gray)
            except (OSError, UnidentifiedImageError, ValueError) as err:
                raise DataError(f"{f}: corrupt image ({_one_line(err)})") from None
            yield frame
