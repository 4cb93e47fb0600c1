"""Tiny inputs for the data tests, written in their real formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def moving_blobs(n: int, t: int, h: int = 16, w: int = 16, seed: int = 0) -> np.ndarray:
    """(n, t, h, w) uint8 clips of a bright square moving one pixel per frame."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, t, h, w), np.uint8)
    for i in range(n):
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 4 - t // 2)
        for k in range(t):
            xx = min(x + k // 2, w - 4)
            out[i, k, y:y + 4, xx:xx + 4] = 50 + 10 * i % 200
    return out


def write_thuml_npz(path: Path, clips: np.ndarray, *, compressed: bool = False) -> Path:
    """The authors' layout: input_raw_data [n*T, 1, H, W] float in [0, 1], clips [2, n, 2], dims."""
    n, t, h, w = clips.shape
    half = t // 2
    raw = (clips.reshape(n * t, 1, h, w).astype(np.float32) / 255.0)
    index = np.zeros((2, n, 2), np.int32)
    index[0, :, 0] = np.arange(n) * t
    index[0, :, 1] = half
    index[1, :, 0] = np.arange(n) * t + half
    index[1, :, 1] = t - half
    save = np.savez_compressed if compressed else np.savez
    save(path, input_raw_data=raw, clips=index, dims=np.array([[1, h, w]], np.int32))
    return path


def write_video(path: Path, frames: np.ndarray, fps: int = 10) -> Path:
    import imageio.v3 as iio

    if path.suffix == ".gif":
        iio.imwrite(path, frames, duration=100, loop=0)
    else:
        iio.imwrite(path, frames, fps=fps, macro_block_size=1)
    return path


def write_netcdf(path: Path, data: np.ndarray, *, var: str = "rain", units: str = "mm/h",
                 fill: float = -999.0) -> Path:
    import netCDF4

    with netCDF4.Dataset(path, "w") as ds:
        t, h, w = data.shape
        ds.createDimension("time", t)
        ds.createDimension("y", h)
        ds.createDimension("x", w)
        ds.createVariable("time", "f8", ("time",))[:] = np.arange(t)
        v = ds.createVariable(var, "f4", ("time", "y", "x"), fill_value=fill)
        v.units = units
        v[:] = data
    return path
