"""Pictures of forecasts: side-by-side GIFs and PNG grids (context | truth | forecast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def _to_rgb_u8(frames: np.ndarray) -> np.ndarray:
    """(..., H, W, C) float [0, 1] or uint8 -> uint8 RGB."""
    f = frames if frames.dtype == np.uint8 else np.rint(np.clip(frames, 0, 1) * 255).astype(np.uint8)
    if f.shape[-1] == 1:
        f = np.repeat(f, 3, axis=-1)
    elif f.shape[-1] == 2:
        f = np.concatenate([f, np.zeros_like(f[..., :1])], axis=-1)
    elif f.shape[-1] > 3:
        f = f[..., :3]
    return f


def _label(img: np.ndarray, text: str) -> np.ndarray:
    pil = Image.fromarray(img)
    ImageDraw.Draw(pil).text((2, 1), text, fill=(255, 64, 64))
    return np.asarray(pil)


def forecast_gif(path: str | Path, context: np.ndarray, forecast: np.ndarray, truth: np.ndarray | None = None,
                 *, max_clips: int = 4, scale: int = 2, duration_ms: int = 200) -> Path:
    """Animated GIF: one row per clip; columns truth (if given) and forecast.

    During the context frames both columns show the observed frame, labelled ``ctx``; afterwards
    the left column shows the truth and the right the forecast. Arrays are (clips, T, H, W, C).
    """
    path = Path(path)
    n = min(max_clips, context.shape[0])
    ctx, fc = _to_rgb_u8(context[:n]), _to_rgb_u8(forecast[:n])
    tr = _to_rgb_u8(truth[:n]) if truth is not None else None
    H, W = ctx.shape[2:4]
    sep = np.full((H, 2, 3), 128, np.uint8)
    frames = []
    for t in range(ctx.shape[1] + fc.shape[1]):
        rows = []
        for i in range(n):
            if t < ctx.shape[1]:
                cells = [ctx[i, t]] * (2 if tr is not None else 1)
                cells = [_label(c, "ctx") for c in cells]
            else:
                k = t - ctx.shape[1]
                cells = ([_label(tr[i, k], "true")] if tr is not None else []) + [_label(fc[i, k], f"+{k + 1}")]
            rows.append(np.concatenate([x for c in cells for x in (c, sep)][:-1], axis=1))
        grid = np.concatenate(rows, axis=0)
        img = Image.fromarray(grid)
        frames.append(img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST))
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return path


def forecast_grid_png(path: str | Path, context: np.ndarray, forecast: np.ndarray, truth: np.ndarray,
                      *, max_clips: int = 4, scale: int = 1) -> Path:
    """Static PNG: per clip a row of context frames, a row of truth and a row of forecast."""
    path = Path(path)
    n = min(max_clips, context.shape[0])
    ctx, tr, fc = _to_rgb_u8(context[:n]), _to_rgb_u8(truth[:n]), _to_rgb_u8(forecast[:n])
    width = max(ctx.shape[1], tr.shape[1])
    H, W = ctx.shape[2:4]
    blank = np.zeros((H, W, 3), np.uint8)

    def row(seq: np.ndarray) -> np.ndarray:
        cells = [seq[t] if t < seq.shape[0] else blank for t in range(width)]
        return np.concatenate(cells, axis=1)

    rows = []
    for i in range(n):
        rows += [row(ctx[i]), row(tr[i]), row(fc[i]), np.full((3, width * W, 3), 90, np.uint8)]
    img = Image.fromarray(np.concatenate(rows, axis=0))
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
