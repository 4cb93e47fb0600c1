"""Sources that need no download: bouncing digits and an advected storm-cell field.

Each clip is drawn from its own generator seeded by ``(seed, clip index)``, so clips stream one at
a time and any clip can be reproduced alone.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from predrnn.data.errors import DataError
from predrnn.data.sources.base import Clip, Source, SourceInfo, file_sha256, params_checksum

if TYPE_CHECKING:
    from predrnn.data.store import S3Settings


_GEN_OPTIONS = {"num_clips": 1000, "frames": 20, "height": 64, "width": 64, "seed": 0}


def _positive(src: Source, *keys: str) -> None:
    for key in keys:
        value = src.opts[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"option {key} must be a positive integer, got {value!r}")


def read_idx_images(path: Path) -> np.ndarray:
    """Images (N, H, W) uint8 from an MNIST IDX file (``.gz`` accepted)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(4)
            if len(head) != 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08 or head[3] != 3:
                raise DataError(f"{path}: not an MNIST IDX image file (magic {head.hex()}, expected 00000803)")
            dims = np.frombuffer(fh.read(12), dtype=">u4").astype(np.int64)
            n, h, w = (int(d) for d in dims)
            raw = fh.read(n * h * w)
    except OSError as err:
        raise DataError(f"{path}: unreadable IDX file ({err})") from None
    if len(raw) != n * h * w or n == 0:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} of {n * h * w} bytes)")
    return np.frombuffer(raw, dtype=np.uint8).reshape(n, h, w)


def _sklearn_digits_8x8() -> np.ndarray:
    """scikit-learn's bundled 8x8 digits (N, 8, 8) in 0..16, read from its data file without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",", dtype=np.float32)
            return table[:, :64].reshape(-1, 8, 8)
    from sklearn.datasets import load_digits

    return load_digits().images.astype(np.float32)


@lru_cache(maxsize=1)
def bundled_digit_glyphs() -> np.ndarray:
    """scikit-learn's 1,797 8x8 digits upscaled to MNIST's layout: a 20x20 glyph centred in 28x28."""
    small = _sklearn_digits_8x8() / 16.0  # (N, 8, 8) in [0, 1]
    out = np.zeros((small.shape[0], 28, 28), np.uint8)
    for i, img in enumerate(small):
        big = np.asarray(Image.fromarray(img).resize((20, 20), Image.Resampling.BICUBIC))
        out[i, 4:24, 4:24] = np.rint(np.clip(big, 0, 1) * 255)
    return out


class MovingDigits(Source):
    """Digits bouncing in a canvas (the Moving MNIST recipe): 2 digits, 64x64, 20 frames by default.

    Glyphs come from an MNIST IDX file (option ``digits_idx``) or scikit-learn's bundled digits.
    """

    kind = "moving-digits"
    needs_source = False
    OPTIONS = {**_GEN_OPTIONS, "digits": 2, "digits_idx": None, "min_speed": 2.0, "max_speed": 5.0}

    def __init__(self, source: str | Path | None, options: dict, *, s3: S3Settings | None = None) -> None:
        super().__init__(source, options, s3=s3)
        _positive(self, "num_clips", "frames", "height", "width", "digits")
        if self.opts["digits_idx"] is None and source:
            self.opts["digits_idx"] = str(source)
        self._glyphs: np.ndarray | None = None

    def glyphs(self) -> np.ndarray:
        if self._glyphs is None:
            idx = self.opts["digits_idx"]
            self._glyphs = read_idx_images(Path(idx).expanduser()) if idx else bundled_digit_glyphs()
        return self._glyphs

    def inspect(self) -> SourceInfo:
        g = self.glyphs()
        h, w = int(self.opts["height"]), int(self.opts["width"])
        if g.shape[1] > h or g.shape[2] > w:
            raise DataError(f"glyphs of {g.shape[1]}x{g.shape[2]} do not fit a {h}x{w} canvas")
        self.check_frame_size(h, w, "moving-digits")
        params = self.options_fingerprint()
        if self.opts["digits_idx"]:
            params["digits_idx"] = file_sha256(Path(self.opts["digits_idx"]).expanduser())
        origin = f"MNIST IDX {self.opts['digits_idx']}" if self.opts["digits_idx"] else "scikit-learn digits"
        return SourceInfo(kind=self.kind, location=str(self.opts["digits_idx"] or ""),
                          description=f"moving digits generator ({self.opts['digits']} digits from {origin})",
                          checksum=params_checksum(params), frame_shape=(h, w, 1),
                          frames=int(self.opts["frames"]), dtype="uint8", value_kind="image",
                          units="intensity (0..255)", clips_hint=int(self.opts["num_clips"]))

    def clip(self, i: int) -> np.ndarray:
        """Clip ``i`` as (T, H, W, 1) uint8."""
        g = self.glyphs()
        T, H, W = int(self.opts["frames"]), int(self.opts["height"]), int(self.opts["width"])
        gh, gw = g.shape[1:]
        rng = np.random.default_rng([int(self.opts["seed"]), i])
        out = np.zeros((T, H, W), np.uint8)
        lim = np.array([H - gh, W - gw], np.float64)
        for _ in range(int(self.opts["digits"])):
            glyph = g[rng.integers(len(g))]
            pos = rng.random(2) * lim
            angle = rng.random() * 2 * np.pi
            speed = rng.uniform(float(self.opts["min_speed"]), float(self.opts["max_speed"]))
            vel = speed * np.array([np.sin(angle), np.cos(angle)])
            for t in range(T):
                y, x = (int(round(v)) for v in pos)
                np.maximum(out[t, y:y + gh, x:x + gw], glyph, out=out[t, y:y + gh, x:x + gw])
                pos = pos + vel
                for d in range(2):  # bounce off the walls
                    if pos[d] < 0:
                        pos[d], vel[d] = -pos[d], -vel[d]
                    elif pos[d] > lim[d]:
                        pos[d], vel[d] = 2 * lim[d] - pos[d], -vel[d]
                pos = np.clip(pos, 0, lim)
        return out[..., None]

    def clips(self) -> Iterator[Clip]:
        for i in range(int(self.opts["num_clips"])):
            yield Clip(self.clip(i), f"moving-digits clip {i}")


class StormCells(Source):
    """A radar nowcasting stand-in: Gaussian rain cells advected by a uniform wind, growing and decaying.

    Values are rain rates in mm/h (float). With ``radar_mask=True`` pixels outside the radar's
    circular range are NaN (no data). Rain rate is never negative: ``valid_min`` defaults to 0.
    """

    kind = "storm-cells"
    needs_source = False
    OPTIONS = {**_GEN_OPTIONS, "cells": 6, "max_wind": 2.5, "radar_mask": False, "valid_min": 0.0}

    def __init__(self, source: str | Path | None, options: dict, *, s3: S3Settings | None = None) -> None:
        super().__init__(source, options, s3=s3)
        _positive(self, "num_clips", "frames", "height", "width", "cells")

    def inspect(self) -> SourceInfo:
        h, w = int(self.opts["height"]), int(self.opts["width"])
        self.check_frame_size(h, w, "storm-cells")
        return SourceInfo(kind=self.kind, location="", description="storm-cell generator (advected Gaussian "
                          "cells with growth and decay)", checksum=params_checksum(self.options_fingerprint()),
                          frame_shape=(h, w, 1), frames=int(self.opts["frames"]), dtype=self.opts["float_dtype"],
                          value_kind="physical", units="mm/h", clips_hint=int(self.opts["num_clips"]))

    def clip(self, i: int) -> np.ndarray:
        """Clip ``i`` as (T, H, W, 1) float."""
        T, H, W = int(self.opts["frames"]), int(self.opts["height"]), int(self.opts["width"])
        rng = np.random.default_rng([int(self.opts["seed"]), i, 7])
        k = 1 + rng.poisson(self.opts["cells"])
        angle = rng.random() * 2 * np.pi
        wind = rng.uniform(0.3, float(self.opts["max_wind"])) * np.array([np.sin(angle), np.cos(angle)])
        # Start cells upwind so that they drift across the frame during the clip.
        start = rng.random((k, 2)) * [H, W] - wind * T / 2
        spread = rng.normal(0.0, 0.3, (k, 2))  # each cell's own drift around the wind
        birth = rng.uniform(-T / 2, T * 0.8, k)
        life = rng.uniform(T * 0.5, T * 2.0, k)
        peak = rng.gamma(2.0, 10.0, k) + 2.0
        sigma0 = rng.uniform(2.0, 5.0, k) * min(H, W) / 64
        yy, xx = np.arange(H, dtype=np.float32), np.arange(W, dtype=np.float32)
        out = np.zeros((T, H, W), np.float32)
        for t in range(T):
            age = (t - birth) / life
            amp = np.where((age >= 0) & (age <= 1), peak * np.sin(np.pi * np.clip(age, 0, 1)), 0.0)
            sigma = sigma0 * (1.0 + 0.5 * np.clip(age, 0, 1))
            centre = start + (wind + spread) * t
            gy = np.exp(-((yy[None] - centre[:, :1]) ** 2) / (2 * sigma[:, None] ** 2))  # (k, H)
            gx = np.exp(-((xx[None] - centre[:, 1:]) ** 2) / (2 * sigma[:, None] ** 2))  # (k, W)
            out[t] = np.einsum("k,kh,kw->hw", amp, gy, gx)
        if self.opts["radar_mask"]:
            r = min(H, W) / 2
            outside = (yy[:, None] - (H - 1) / 2) ** 2 + (xx[None] - (W - 1) / 2) ** 2 > r * r
            out[:, outside] = np.nan
        return out[..., None].astype(self.opts["float_dtype"])

    def clips(self) -> Iterator[Clip]:
        for i in range(int(self.opts["num_clips"])):
            yield Clip(self.clip(i), f"storm-cells clip {i}")


def write_scan_archive(folder: str | Path, *, steps: int = 600, start: str = "2026-06-01T00:00",
                       step_minutes: int = 5, missing: tuple[tuple[int, int], ...] = ((200, 6), (420, 12)),
                       height: int = 64, width: int = 64, episode: int = 48, seed: int = 0) -> list[Path]:
    """Write a radar archive as operational services ship it: one CF-1.10 NetCDF file per scan.

    Each file holds one time step of ``rainfall_rate`` (mm h-1) packed as int16 counts of 0.01 mm h-1
    (``scale_factor``, ``_FillValue`` -1 outside the radar's circular range, ``valid_min`` 0), with a
    ``time`` coordinate, projection x/y coordinates in metres (1 km pixels) and a polar stereographic
    grid mapping. The rain comes from :class:`StormCells` episodes of ``episode`` scans. ``missing``:
    ``(first step, count)`` pairs of scans that are not written (a radar outage: a gap in time).

    Returns:
        the files written, in time order (names ``RAD_YYYYmmdd_HHMM.nc``).

    Raises:
        DataError: a non-positive size or step.
    """
    import pandas as pd
    import xarray as xr

    if min(steps, step_minutes, height, width, episode) < 1:
        raise DataError("steps, step_minutes, height, width and episode must be >= 1")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    skip = {s + k for s, k in missing for k in range(k)}
    gen = StormCells(None, {"frames": episode, "height": height, "width": width, "seed": seed, "radar_mask": True,
                            "num_clips": 1 + steps // episode})
    times = pd.date_range(start, periods=steps, freq=f"{step_minutes}min")
    y = (np.arange(height) - height // 2) * 1000.0
    x = (np.arange(width) - width // 2) * 1000.0
    written = []
    clip = None
    for i, t in enumerate(times):
        if i % episode == 0:
            clip = gen.clip(i // episode)
        if i in skip:
            continue
        assert clip is not None
        rain = clip[i % episode, ..., 0][None]
        ds = xr.Dataset(
            {"rainfall_rate": (("time", "y", "x"), rain,
                               {"units": "mm h-1", "standard_name": "rainfall_rate", "long_name": "radar rain rate",
                                "grid_mapping": "projection", "valid_min": np.int16(0)}),
             "projection": ((), np.int32(0), {"grid_mapping_name": "polar_stereographic",
                                              "straight_vertical_longitude_from_pole": 0.0,
                                              "latitude_of_projection_origin": 90.0,
                                              "standard_parallel": 60.0})},
            coords={"time": [t.to_datetime64()],
                    "y": ("y", y, {"standard_name": "projection_y_coordinate", "units": "m"}),
                    "x": ("x", x, {"standard_name": "projection_x_coordinate", "units": "m"})},
            attrs={"Conventions": "CF-1.10", "title": "synthetic radar scan (storm cells)"})
        ds["rainfall_rate"].encoding.update(dtype="int16", scale_factor=0.01, add_offset=0.0, _FillValue=np.int16(-1))
        ds["time"].encoding.update(units="minutes since 1970-01-01 00:00:00", dtype="int64")
        path = out / f"RAD_{t:%Y%m%d_%H%M}.nc"
        ds.to_netcdf(path, engine="netcdf4")
        written.append(path)
    return written
