"""Source readers by kind. Each streams :class:`Clip` records and describes itself with :class:`SourceInfo`."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from predrnn.data.errors import DataError
from predrnn.data.sources.base import Clip, Source, SourceInfo

if TYPE_CHECKING:
    from predrnn.data.store import S3Settings

_KINDS: dict[str, tuple[str, str]] = {
    "thuml-npz": ("predrnn.data.sources.arrays", "ThumlNpz"),
    "mnist-seq-npy": ("predrnn.data.sources.arrays", "MnistSeqNpy"),
    "npy": ("predrnn.data.sources.arrays", "NpyArrays"),
    "video-folder": ("predrnn.data.sources.media", "VideoFolder"),
    "frames-folder": ("predrnn.data.sources.media", "FramesFolder"),
    "netcdf": ("predrnn.data.sources.grids", "GridSource"),
    "moving-digits": ("predrnn.data.sources.generators", "MovingDigits"),
    "storm-cells": ("predrnn.data.sources.generators", "StormCells"),
}

KINDS: tuple[str, ...] = tuple(_KINDS)


def source_class(kind: str) -> type[Source]:
    if kind not in _KINDS:
        raise DataError(f"unknown source kind {kind!r}; choose one of {', '.join(KINDS)}")
    module, cls = _KINDS[kind]
    return getattr(importlib.import_module(module), cls)


def make_source(kind: str, source: str | Path | None, options: dict[str, Any] | None = None, *,
                s3: S3Settings | None = None) -> Source:
    """A reader for ``kind`` over ``source`` with ``options`` (unknown options are refused); ``s3``: the S3
    settings of an ``s3://`` source (:func:`predrnn.settings.s3_settings`'s keyless form)."""
    return source_class(kind)(source, dict(options or {}), s3=s3)


__all__ = ["KINDS", "Clip", "Source", "SourceInfo", "make_source", "source_class"]
