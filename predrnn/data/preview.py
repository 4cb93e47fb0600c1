"""A PNG strip of sample clips: one row per clip, one column per frame."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image


def to_rgb_u8(clips: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """(..., H, W, C) uint8 or float -> uint8 RGB; floats scaled by ``value_range``, NaN shown dark grey."""
    if clips.dtype == np.uint8:
        img = clips
    else:
        x = clips.astype(np.float32)
        nan = ~np.isfinite(x)
        lo, hi = value_range if value_range else (float(np.nanmin(x)), float(np.nanmax(x)))
        x = np.clip((x - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
        img = np.rint(np.where(nan, 0.15, x) * 255).astype(np.uint8)
    c = img.shape[-1]
    if c == 1:
        return np.repeat(img, 3, axis=-1)
    if c == 2:
        return np.concatenate([img, np.zeros_like(img[..., :1])], axis=-1)
    return img[..., :3]


def strip(version: Any, *, clips: int = 4, frames: int = 10) -> np.ndarray:
    """An RGB image of the first ``frames`` frames of ``clips`` evenly spaced clips of a version."""
    n, t, h, w, _ = version.shape
    idx = np.unique(np.linspace(0, n - 1, min(clips, n)).round().astype(np.int64))
    data = version.read(idx)[:, : min(frames, t)]
    vr = version.attrs.get("value_range")
    per = version.attrs.get("channel_stats")
    if data.dtype != np.uint8 and data.shape[-1] > 1:  # several variables: the first, in its own range
        data = data[..., :1]
        vr = [per[0]["min"], per[0]["max"]] if per else None
    rgb = to_rgb_u8(data, tuple(vr) if vr and data.dtype != np.uint8 else None)
    k, f = rgb.shape[:2]
    gap = 2
    out = np.full((k * (h + gap) - gap, f * (w + gap) - gap, 3), 96, np.uint8)
    for i in range(k):
        for j in range(f):
            out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = rgb[i, j]
    return out


def png_bytes(img: np.ndarray, *, max_width: int = 1600) -> bytes:
    pil = Image.fromarray(img)
    if pil.width > max_width:
        pil = pil.resize((max_width, max(1, pil.height * max_width // pil.width)), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def strip_png(version: Any, *, clips: int = 4, frames: int = 10) -> bytes:
    """The :func:`strip` of a version as PNG bytes."""
    return png_bytes(strip(version, clips=clips, frames=frames))
