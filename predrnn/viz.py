"""Pictures of forecasts: side-by-side GIFs and PNG grids (context | truth | forecast).

Images are shown as they are ([0, 1] floats or uint8). A physical field is shown through a colour
map over ``value_range`` in its units, NaN (no data) in grey, with a colour bar labelled in the
units beside every picture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

Field = tuple[float, float, str]  # (low, high, units) of a physical field's colour map


def field_range(*arrays: np.ndarray | None, valid_min: float | None = None) -> tuple[float, float]:
    """A colour range over the finite values of ``arrays`` (from ``valid_min`` when declared)."""
    finite = [a[np.isfinite(a)] for a in arrays if a is not None]
    vals = np.concatenate([f.reshape(-1) for f in finite]) if finite else np.zeros(1)
    lo = float(valid_min) if valid_min is not None else float(vals.min()) if vals.size else 0.0
    hi = float(np.percentile(vals, 99.5)) if vals.size else 1.0
    return lo, hi if hi > lo else lo + 1.0


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Lay out, write and close a matplotlib figure as a PNG (parent folders created)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def field_colours(values: Any, *arrays: np.ndarray | None) -> Field | None:
    """The colour range and units of a field's pictures (None for images); ``values`` a ValuesConfig.

    Pictures show channel 0; for several variables the range and units are those of the first variable
    (``values.channels[0]``), taken over that channel only."""
    if values.kind != "field":
        return None
    if values.channels:
        first = values.channels[0]
        lo, hi = field_range(*(None if a is None else a[..., :1] for a in arrays), valid_min=first.valid_min)
        return lo, hi, f"{first.name} {first.units}".strip()
    lo, hi = field_range(*arrays, valid_min=values.valid_min)
    return lo, hi, values.units


def _colour(frames: np.ndarray, field: Field) -> np.ndarray:
    """(..., H, W, C) field values -> uint8 RGB through viridis over [low, high]; NaN grey. Channel 0 shown."""
    from matplotlib import colormaps

    lo, hi, _ = field
    x = np.asarray(frames, dtype=np.float64)[..., 0]
    u = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    rgb = (colormaps["viridis"](np.nan_to_num(u, nan=0.0))[..., :3] * 255).round().astype(np.uint8)
    rgb[~np.isfinite(x)] = 110
    return rgb


def _colour_bar(height: int, field: Field, width: int = 44) -> np.ndarray:
    """A vertical colour bar (height, width, 3) labelled with the range ends and the units."""
    lo, hi, units = field
    ramp = np.linspace(hi, lo, max(height, 2))[:, None, None] * np.ones((1, 8, 1))
    bar = _colour(ramp, (lo, hi, units))
    img = Image.new("RGB", (width, max(height, 2)), (0, 0, 0))
    img.paste(Image.fromarray(bar), (0, 0))
    draw = ImageDraw.Draw(img)
    draw.text((10, 0), f"{hi:.3g}", fill=(255, 255, 255))
    draw.text((10, max(height, 2) - 11), f"{lo:.3g}", fill=(255, 255, 255))
    if units and height >= 36:
        draw.text((10, max(height, 2) // 2 - 5), units[:6], fill=(255, 255, 255))
    return np.asarray(img)[:height]


def _with_bar(img: np.ndarray, field: Field | None) -> np.ndarray:
    if field is None:
        return img
    return np.concatenate([img, _colour_bar(img.shape[0], field)], axis=1)


def _to_rgb_u8(frames: np.ndarray, field: Field | None = None) -> np.ndarray:
    """(..., H, W, C) float [0, 1] or uint8 -> uint8 RGB (a field: through its colour map)."""
    if field is not None:
        return _colour(frames, field)
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
                 *, max_clips: int = 4, scale: int = 2, duration_ms: int = 200, field: Field | None = None) -> Path:
    """Animated GIF: one row per clip; columns truth (if given) and forecast.

    During the context frames both columns show the observed frame, labelled ``ctx``; afterwards
    the left column shows the truth and the right the forecast. Arrays are (clips, T, H, W, C):
    images in [0, 1] or uint8, or with ``field=(low, high, units)`` a physical field in its units
    (colour map and colour bar).
    """
    path = Path(path)
    n = min(max_clips, context.shape[0])
    ctx, fc = _to_rgb_u8(context[:n], field), _to_rgb_u8(forecast[:n], field)
    tr = _to_rgb_u8(truth[:n], field) if truth is not None else None
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
                true = ([_label(tr[i, k], "true") if k < tr.shape[1] else np.zeros_like(fc[i, k])]
                        if tr is not None else [])  # a truth shorter than the forecast: blank after its end
                cells = true + [_label(fc[i, k], f"+{k + 1}")]
            rows.append(np.concatenate([x for c in cells for x in (c, sep)][:-1], axis=1))
        grid = _with_bar(np.concatenate(rows, axis=0), field)
        img = Image.fromarray(grid)
        frames.append(img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST))
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return path


def forecast_grid_png(path: str | Path, context: np.ndarray, forecast: np.ndarray, truth: np.ndarray,
                      *, max_clips: int = 4, scale: int = 1, field: Field | None = None) -> Path:
    """Static PNG: per clip a row of context frames, a row of truth and a row of forecast.

    ``field=(low, high, units)``: a physical field, drawn through a colour map with a colour bar.
    """
    path = Path(path)
    n = min(max_clips, context.shape[0])
    ctx, tr, fc = _to_rgb_u8(context[:n], field), _to_rgb_u8(truth[:n], field), _to_rgb_u8(forecast[:n], field)
    width = max(ctx.shape[1], tr.shape[1])
    H, W = ctx.shape[2:4]
    blank = np.zeros((H, W, 3), np.uint8)

    def row(seq: np.ndarray) -> np.ndarray:
        cells = [seq[t] if t < seq.shape[0] else blank for t in range(width)]
        return np.concatenate(cells, axis=1)

    rows = []
    for i in range(n):
        rows += [row(ctx[i]), row(tr[i]), row(fc[i]), np.full((3, width * W, 3), 90, np.uint8)]
    img = Image.fromarray(_with_bar(np.concatenate(rows, axis=0), field))
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
