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
    """An RGB image (height, width, 3) uint8 of the first ``frames`` frames of ``clips`` evenly spaced clips
    of a version: one row per clip, one column per frame.

    A version whose grid has coordinates (:meth:`~predrnn.data.store.Version.grid_coords`, described by
    ``attrs["grid"]``) is drawn on the map (:func:`predrnn.viz.samples_figure`): axes in the grid's
    coordinates and units, every frame titled with its valid time (UTC) where the version records them,
    the field through a colour map with a colour bar in its units. Other versions: the frames' pixels
    side by side, grey levels over ``value_range``, NaN dark grey.
    """
    n, t, h, w, _ = version.shape
    idx = np.unique(np.linspace(0, n - 1, min(clips, n)).round().astype(np.int64))
    data = version.read(idx)[:, : min(frames, t)]
    vr = version.attrs.get("value_range")
    per = version.attrs.get("channel_stats")
    if data.dtype != np.uint8 and data.shape[-1] > 1:  # several variables: the first, in its own range
        data = data[..., :1]
        vr = [per[0]["min"], per[0]["max"]] if per else None
    on_map = _map_strip(version, idx, data, vr)
    if on_map is not None:
        return on_map
    rgb = to_rgb_u8(data, tuple(vr) if vr and data.dtype != np.uint8 else None)
    k, f = rgb.shape[:2]
    gap = 2
    out = np.full((k * (h + gap) - gap, f * (w + gap) - gap, 3), 96, np.uint8)
    for i in range(k):
        for j in range(f):
            out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = rgb[i, j]
    return out


def _map_strip(version: Any, idx: np.ndarray, data: np.ndarray, vr: Any) -> np.ndarray | None:
    """The strip drawn on the map (None when the version's grid has no coordinates): ``data`` (k, F, H, W, C)
    the clips ``idx`` shown, ``vr`` their value range."""
    if not hasattr(version, "grid_coords"):
        return None
    from predrnn.viz import figure_rgb, map_axes, samples_figure

    coords, grid = version.grid_coords(), version.attrs.get("grid")
    if map_axes(data.shape[2:4], coords, grid).kind == "pixel":
        return None
    times = version.valid_times(idx) if hasattr(version, "valid_times") else None
    field = None
    if data.dtype != np.uint8:
        finite = data[np.isfinite(data)]
        lo, hi = (float(vr[0]), float(vr[1])) if vr else ((float(finite.min()), float(finite.max()))
                                                          if finite.size else (0.0, 1.0))
        channels = version.attrs.get("channels") or []  # several variables: the first, named (as field_colours)
        units = (f"{channels[0].get('name', '')} {channels[0].get('units', '')}".strip() if len(channels) > 1
                 else str(version.attrs.get("units") or (channels[0].get("units", "") if channels else "")))
        field = (lo, hi if hi > lo else lo + 1.0, units)
    fig = samples_figure(data, field=field, coords=coords, grid=grid,
                         valid_times=None if times is None else times[:, : data.shape[1]])
    return figure_rgb(fig)


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
