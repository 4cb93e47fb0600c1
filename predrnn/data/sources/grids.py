"""Gridded fields with a time dimension (radar rainfall, reanalysis): NetCDF files or Zarr stores.

The variable is read window by window (never whole); masked or ``_FillValue`` cells become NaN.
Dimensions are arranged as (time, y, x[, channel]): time moved first, and for 4-D variables the
smallest remaining dimension becomes the channel.

A grid is one time-ordered sequence, so it is split by **contiguous time blocks**, not window by window
(neighbouring windows share frames or are strongly correlated): the time axis is cut into
``split_blocks`` equal blocks, each divided in time order into train, val and test segments of
``1 - val_fraction - test_fraction``, ``val_fraction`` and ``test_fraction`` of its steps, with
``split_gap`` steps dropped between two segments of different splits. Windows of ``window`` steps every
``stride`` steps are cut inside each segment only, so no time step reaches two splits.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from predrnn.data.errors import DataError
from predrnn.data.sources.base import Clip, Source, SourceInfo, as_physical, files_checksum

_TIME_NAMES = ("time", "t", "times", "valid_time", "datetime")


class _Var:
    """A lazily sliced variable with named dimensions, from netCDF4 or Zarr."""

    def __init__(self, name: str, dims: tuple[str, ...], shape: tuple[int, ...], getter: Any, units: str,
                 fill: Any):
        self.name, self.dims, self.shape, self.getter, self.units, self.fill = name, dims, shape, getter, units, fill

    def read(self, index: tuple[slice, ...]) -> np.ndarray:
        x = self.getter[index]
        if np.ma.isMaskedArray(x):
            x = np.ma.filled(x.astype(np.float32), np.nan)
        x = np.asarray(x)
        if self.fill is not None and x.dtype.kind in "fiu":
            x = x.astype(np.float32)
            x[x == np.float32(self.fill)] = np.nan
        return x


class GridSource(Source):
    """A NetCDF file (``.nc``) or a Zarr store (folder) holding a variable with a time dimension."""

    kind = "netcdf"
    OPTIONS = {"variable": None, "window": 20, "stride": None, "time_dim": None, "units": None,
               "split_gap": 0, "split_blocks": 1}
    time_ordered = True

    def __init__(self, source: str | Path | None, options: dict[str, Any]):
        super().__init__(source, options)
        self._handle: Any = None

    def _is_zarr(self) -> bool:
        assert self.path is not None
        return self.path.is_dir() or self.path.suffix == ".zarr"

    def _variables(self) -> list[_Var]:
        assert self.path is not None
        if self._is_zarr():
            import zarr

            try:
                node = zarr.open(str(self.path), mode="r")
            except Exception as err:  # zarr raises several types for a non-store folder
                raise DataError(f"{self.path}: not a readable Zarr store ({err})") from None
            arrays = [(node.basename or self.path.stem, node)] if isinstance(node, zarr.Array) else list(node.arrays())
            out = []
            for name, arr in arrays:
                found: Any = getattr(arr.metadata, "dimension_names", None) or arr.attrs.get("_ARRAY_DIMENSIONS")
                names = tuple(str(d) for d in found) if found else tuple(f"dim_{i}" for i in range(arr.ndim))
                out.append(_Var(name, names, tuple(arr.shape), arr, str(arr.attrs.get("units", "")),
                                arr.attrs.get("_FillValue")))
            return out
        import netCDF4

        try:
            self._handle = netCDF4.Dataset(str(self.path), "r")
        except OSError as err:
            raise DataError(f"{self.path}: corrupt or unreadable NetCDF file ({err})") from None
        return [_Var(name, tuple(v.dimensions), tuple(v.shape), v, str(getattr(v, "units", "")), None)
                for name, v in self._handle.variables.items()]

    def _pick(self) -> tuple[_Var, int]:
        assert self.path is not None
        variables = self._variables()
        want = self.opts["variable"]
        tdim = self.opts["time_dim"]

        def time_axis(v: _Var) -> int | None:
            if tdim:
                return v.dims.index(tdim) if tdim in v.dims else None
            for i, d in enumerate(v.dims):
                if d.lower() in _TIME_NAMES:
                    return i
            return None

        if want:
            match = [v for v in variables if v.name == want]
            if not match:
                raise DataError(f"{self.path}: no variable {want!r} (variables: {[v.name for v in variables]})")
            var = match[0]
            axis = time_axis(var)
            if axis is None:
                axis = 0 if not tdim else None
            if axis is None:
                raise DataError(f"{self.path}: variable {want!r} has no time dimension {tdim!r} (dims {var.dims})")
        else:
            cands = [(v, time_axis(v)) for v in variables if len(v.shape) in (3, 4)]
            cands = [(v, a) for v, a in cands if a is not None]
            if len(cands) != 1:
                names = [v.name for v, _ in cands] or [v.name for v in variables]
                raise DataError(f"{self.path}: choose the variable with option variable "
                                f"({'candidates' if cands else 'no 3-D/4-D variable with a time dimension; have'}: "
                                f"{names})")
            var, axis = cands[0]
        assert axis is not None
        if len(var.shape) not in (3, 4):
            raise DataError(f"{self.path}: variable {var.name!r} has wrong rank {len(var.shape)} (dims {var.dims}); "
                            "expected (time, y, x) or (time, y, x, channel)")
        return var, axis

    def _layout(self, var: _Var, axis: int) -> tuple[list[int], int, int, int]:
        """Axis order putting time first and the channel last; (order, H, W, C)."""
        rest = [i for i in range(len(var.shape)) if i != axis]
        if len(rest) == 3:
            ch = min(rest, key=lambda i: var.shape[i])
            rest = [i for i in rest if i != ch] + [ch]
        order = [axis, *rest]
        h, w = var.shape[rest[0]], var.shape[rest[1]]
        c = var.shape[rest[2]] if len(rest) == 3 else 1
        return order, h, w, c

    def _window_stride(self) -> tuple[int, int]:
        window = int(self.opts["window"])
        stride = int(self.opts["stride"] or window)
        if window < 1 or stride < 1:
            raise DataError(f"window and stride must be >= 1, got window={window}, stride={stride}")
        return window, stride

    def segments(self, total: int) -> list[tuple[str, int, int]]:
        """The time-block split of ``total`` steps: ``[(split, first, stop), ...]`` in time order.

        Raises:
            DataError: a bad option, or a split asked for (fraction > 0) whose segments hold no whole
                window, naming the segment length and what would make it fit.
        """
        window, _ = self._window_stride()
        gap, blocks = self.opts["split_gap"], self.opts["split_blocks"]
        for key, v, low in (("split_gap", gap, 0), ("split_blocks", blocks, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise DataError(f"option {key} must be an integer >= {low}, got {v!r}")
        fractions = {"val": float(self.opts["val_fraction"]), "test": float(self.opts["test_fraction"])}
        fractions["train"] = 1.0 - fractions["val"] - fractions["test"]
        edges = np.linspace(0, total, blocks + 1).round().astype(int)
        out: list[tuple[str, int, int]] = []
        for b0, b1 in zip(edges[:-1], edges[1:], strict=True):
            length = int(b1 - b0)
            bounds = np.round(np.cumsum([0.0] + [fractions[s] for s in ("train", "val", "test")]) * length)
            parts = [(s, int(b0 + bounds[i]), int(b0 + bounds[i + 1])) for i, s in enumerate(("train", "val", "test"))]
            parts = [p for p in parts if p[2] > p[1]]
            for split, first, stop in parts:
                # the gap is taken from the later segment's start (the earlier one keeps its windows)
                if out and out[-1][0] != split:
                    first = min(stop, first + gap)
                out.append((split, first, stop))
        for split in ("train", "val", "test"):
            if fractions[split] <= 0:
                continue
            steps = [stop - first for s, first, stop in out if s == split]
            if not any(n >= window for n in steps):
                longest = max(steps, default=0)
                raise DataError(
                    f"{self.path}: the longest {split} time block holds {longest} of {total} time steps, fewer than "
                    f"window={window} (split_blocks={blocks}, split_gap={gap}, val_fraction={fractions['val']:g}, "
                    f"test_fraction={fractions['test']:g}); raise the {split} fraction, lower split_blocks or the "
                    f"window, or set the fraction to 0")
        return out

    def _windows(self, total: int) -> list[tuple[str, int, int, int]]:
        """Every window as ``(split, first step, segment first, segment stop)``, in time order."""
        window, stride = self._window_stride()
        out = [(split, t0, first, stop) for split, first, stop in self.segments(total)
               for t0 in range(first, stop - window + 1, stride)]
        if not out:
            raise DataError(f"{self.path}: empty source: {total} time steps, fewer than window={window}")
        return out

    def _close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def inspect(self) -> SourceInfo:
        assert self.path is not None
        try:
            var, axis = self._pick()
            _, h, w, c = self._layout(var, axis)
            self.check_frame_size(h, w, f"{self.path} [{var.name}]")
            window, _ = self._window_stride()
            n = len(self._windows(var.shape[axis]))
        finally:
            self._close()
        files = sorted(p for p in self.path.rglob("*") if p.is_file()) if self.path.is_dir() else [self.path]
        root = self.path if self.path.is_dir() else self.path.parent
        return SourceInfo(kind=self.kind, location=str(self.path),
                          description=f"{'Zarr' if self._is_zarr() else 'NetCDF'} grid, variable {var.name} "
                                      f"dims {var.dims}",
                          checksum=files_checksum(root, files), frame_shape=(h, w, c), frames=window,
                          dtype=self.opts["float_dtype"], value_kind="physical",
                          units=str(self.opts["units"] or var.units), clips_hint=n,
                          has_source_split=True,
                          extra={"variable": var.name, "dims": list(var.dims),
                                 "time_blocks": [list(seg) for seg in self.segments(var.shape[axis])]})

    def clips(self) -> Iterator[Clip]:
        try:
            var, axis = self._pick()
            order, _, _, _ = self._layout(var, axis)
            window, _ = self._window_stride()
            for k, (split, t0, first, stop) in enumerate(self._windows(var.shape[axis])):
                index = tuple(slice(t0, t0 + window) if i == axis else slice(None) for i in range(len(var.shape)))
                where = f"{self.path} [{var.name}]: clip {k} (time {t0}..{t0 + window - 1})"
                try:
                    x = var.read(index)
                except (OSError, RuntimeError, IndexError) as err:
                    raise DataError(f"{where}: unreadable data ({err})") from None
                x = np.transpose(x, order)
                if x.ndim == 3:
                    x = x[..., None]
                yield Clip(as_physical(x, where, self.opts["float_dtype"]), where, split=split,
                           group=f"time {first}..{stop - 1}")
        finally:
            self._close()
