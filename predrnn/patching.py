"""Space-to-depth patching with the authors' channel order.

A frame (H, W, C) becomes (H/p, W/p, p*p*C) with channel index ``(dy*p + dx)*C + c``: the same as
``pixel_unshuffle`` applied with the image channel last. The model works channels-first, so the
helpers here also move the channel axis.
"""

from __future__ import annotations

import torch
from einops import rearrange


def patch(frames: torch.Tensor, p: int) -> torch.Tensor:
    """(B, T, H, W, C) -> (B, T, p*p*C, H/p, W/p), channel index (dy*p + dx)*C + c."""
    _check(frames, p)
    return rearrange(frames, "b t (h dy) (w dx) c -> b t (dy dx c) h w", dy=p, dx=p)


def unpatch(patches: torch.Tensor, p: int, channels: int) -> torch.Tensor:
    """Inverse of :func:`patch`: (B, T, p*p*C, H/p, W/p) -> (B, T, H, W, C)."""
    return rearrange(patches, "b t (dy dx c) h w -> b t (h dy) (w dx) c", dy=p, dx=p, c=channels)


def patch_channels_last(frames: torch.Tensor, p: int) -> torch.Tensor:
    """The authors' layout: (B, T, H, W, C) -> (B, T, H/p, W/p, p*p*C)."""
    _check(frames, p)
    return rearrange(frames, "b t (h dy) (w dx) c -> b t h w (dy dx c)", dy=p, dx=p)


def unpatch_channels_last(patches: torch.Tensor, p: int, channels: int) -> torch.Tensor:
    return rearrange(patches, "b t h w (dy dx c) -> b t (h dy) (w dx) c", dy=p, dx=p, c=channels)


def _check(frames: torch.Tensor, p: int) -> None:
    if frames.ndim != 5:
        raise ValueError(f"expected frames of shape (B, T, H, W, C), got {tuple(frames.shape)}")
    h, w = frames.shape[2], frames.shape[3]
    if h % p or w % p:
        raise ValueError(f"frame size {h}x{w} is not divisible by patch size {p}")
