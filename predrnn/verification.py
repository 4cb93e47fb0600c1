"""Nowcasting verification scores per lead time, with the field's published definitions.

Forecast and truth are ``(B, N, H, W, C)`` in the data's units (B clips, N lead times); every channel
is an independent 2-D field. A pixel counts where ``valid`` is true and the truth is finite (default:
where the truth is finite); a forecast with no value (NaN) where the truth has one is a non-event.

* **Events**: ``value >= threshold`` (not ``>``), on forecast and truth alike. The threshold is taken
  at the data's precision (a float32 field compares with ``float32(threshold)``), so a value written
  as exactly the threshold is an event.
* **Contingency table** per (threshold, lead time): hits ``a``, false alarms ``b``, misses ``c``,
  correct negatives ``d``, exact int64 counts summed over all clips, channels and valid pixels, and
  over every ``update()`` call. Scores are ratios of these sums, never means of per-clip scores:
  ``CSI = a/(a+b+c)``, ``POD = a/(a+c)``, ``FAR = b/(a+b)``, ``bias = (a+b)/(a+c)``,
  ``HSS = 2(ad-bc)/((a+c)(c+d)+(a+b)(b+d))`` (pysteps ``det_cat_fct``, which uses ``>``).
* **Pooled CSI** at block size k (SEVIR's CSI at 4x4 and 16x16, Veillette et al. 2020): both fields
  max-pooled over non-overlapping k x k blocks (rows/columns that fill no whole block dropped),
  invalid pixels ignored in the max, *then* thresholded; blocks with no valid truth pixel excluded.
* **FSS** at odd window n (Roberts and Lean 2008, pysteps ``spatialscores.fss``): binary fields
  (invalid pixels are non-events in both), fractions ``P`` = events in the n x n window centred on a
  pixel / n^2 with zero padding outside the frame, and ``FSS = 1 - sum((Pf-Po)^2) / (sum(Pf^2) +
  sum(Po^2))`` over all clips, channels and pixels of a lead time. Window counts come from integral
  images of the binary fields, so every sum is an exact integer (the n^2 cancels).
* **CSI-M** per lead time: the mean CSI over the thresholds that have one.

A ratio with a zero denominator (0/0: e.g. no event forecast or observed) is ``None`` (JSON null).
Accumulate batch by batch with :class:`ScoreAccumulator`; :func:`verification_scores` is one call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_POOLS = (4, 16)
DEFAULT_FSS_SCALES = (1, 3, 9, 27)

# Pixels per work chunk (one lead time, a run of clips): bounds the working memory (~50 bytes per pixel
# per chunk) and keeps a chunk near the CPU caches. Whole frames: a chunk has at least one.
_CHUNK_PIXELS = 1 << 18

_HKO7_MM_PER_H = [0.5, 2.0, 5.0, 10.0, 30.0]  # HKO-7 (Shi et al. 2017), rain rate in mm/h
_SEVIR_VIL = [16.0, 74.0, 133.0, 160.0, 181.0, 219.0]  # SEVIR (Veillette et al. 2020), digitised VIL 0..255
_RAIN_UNITS = {"mm/h", "mm h-1", "mm/hr", "mm hr-1", "mm h^-1", "mm·h-1"}
_VIL_UNITS = {"vil"}


def threshold_label(x: float | str) -> str:
    """A threshold's key as the user wrote it: ``0.5 -> "0.5"``, ``2.0 -> "2"``, ``16 -> "16"``.

    A string is kept as given; a number becomes its shortest repr (numpy floats at their own
    precision, so ``np.float32(0.1) -> "0.1"``) without a trailing ``.0``.
    """
    if isinstance(x, str):
        return x
    if isinstance(x, (bool, np.bool_)):
        raise ValueError(f"a threshold is a number, got {x!r}")
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    text = str(x) if isinstance(x, np.floating) else repr(float(x))
    text = text[:-2] if text.endswith(".0") else text
    return "0" if text == "-0" else text


def default_thresholds(units: str) -> list[float]:
    """The field's customary thresholds for data in ``units`` (case and spacing ignored).

    ``mm/h`` (also ``mm h-1``, ``mm/hr``): HKO-7's 0.5, 2, 5, 10, 30. ``VIL`` (SEVIR's digitised
    vertically integrated liquid, 0..255): SEVIR's 16, 74, 133, 160, 181, 219. Anything else, VIL in
    kg m-2 included (SEVIR's thresholds are digital levels, not kg m-2): ``[]``, no default.
    """
    key = " ".join(units.strip().lower().split())
    if key in _RAIN_UNITS:
        return list(_HKO7_MM_PER_H)
    if key in _VIL_UNITS:
        return list(_SEVIR_VIL)
    return []


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def _contingency_scores(a: int, b: int, c: int, d: int) -> dict[str, float | None]:
    """CSI, POD, FAR, bias and HSS of one table, in Python integers (products overflow int64)."""
    return {
        "csi": _ratio(a, a + b + c),
        "pod": _ratio(a, a + c),
        "far": _ratio(b, a + b),
        "bias": _ratio(a + b, a + c),
        "hss": _ratio(2 * (a * d - b * c), (a + c) * (c + d) + (a + b) * (b + d)),
    }


def _maxpool(x: np.ndarray, k: int) -> np.ndarray:
    """Max over non-overlapping k x k blocks of frames (F, H, W); partial blocks at the edges dropped.

    A tree of elementwise maxima over strided views: many times faster than ``max(axis=(2, 4))``.
    """
    F, H, W = x.shape
    hk, wk = H // k, W // k
    x = x[:, : hk * k, : wk * k]
    cols = x[:, :, 0::k].copy()  # (F, hk*k, wk)
    for j in range(1, k):
        np.maximum(cols, x[:, :, j::k], out=cols)
    out = cols[:, 0::k, :].copy()  # (F, hk, wk)
    for j in range(1, k):
        np.maximum(out, cols[:, j::k, :], out=out)
    return out


class _Integral:
    """Integral images of integer frames (F, H, W), transposed and padded so that windows are plain slices.

    ``E[f, q, p] = S[f, clip(p - R, 0, H), clip(q - R, 0, W)]`` with ``S[f, i, j]`` the sum of frame f over
    rows ``< i`` and columns ``< j``; the window of radius r <= R centred on (i, j), zero padding outside
    the frame, holds ``S[i+r+1, j+r+1] - S[i+r+1, j-r] - S[i-r, j+r+1] + S[i-r, j-r]`` (indices
    clipped). The image is kept transposed (W before H): numpy's cumsum is fast only along the last
    axis, and the FSS needs only sums over all window counts, which a transpose leaves unchanged. For
    frames of -1, 0, 1 or 2 every value is an integer within +-2*H*W: exact in int32.
    """

    def __init__(self, frames: int, height: int, width: int, radius: int) -> None:
        self.H, self.W, self.R = height, width, radius
        self.E = np.zeros((frames, width + 1 + 2 * radius, height + 1 + 2 * radius), dtype=np.int32)
        self.along_w = np.empty((frames, height, width), dtype=np.int32)
        self.strip = np.empty((frames, width, height + 1 + 2 * radius), dtype=np.int32)
        self.window = np.empty((frames, width, height), dtype=np.int32)

    def fill(self, frames: np.ndarray) -> None:
        H, W, R, E = self.H, self.W, self.R, self.E
        np.cumsum(frames, axis=2, dtype=np.int32, out=self.along_w)
        inner = E[:, R + 1 : R + 1 + W, R + 1 : R + 1 + H]  # first R+1 rows and columns stay 0
        np.cumsum(np.ascontiguousarray(self.along_w.transpose(0, 2, 1)), axis=2, out=inner)
        E[:, R + 1 + W :, R + 1 : R + 1 + H] = E[:, R + W : R + W + 1, R + 1 : R + 1 + H]
        E[:, :, R + 1 + H :] = E[:, :, R + H : R + H + 1]

    def counts(self, r: int) -> np.ndarray:
        """The sum over the (2r+1)^2 window around each pixel, transposed: (F, W, H) int32 (a reused buffer)."""
        H, W, R, E = self.H, self.W, self.R, self.E
        hi, lo = R + r + 1, R - r
        np.subtract(E[:, hi : hi + W], E[:, lo : lo + W], out=self.strip)  # columns j-r..j+r, every row
        np.subtract(self.strip[:, :, hi : hi + H], self.strip[:, :, lo : lo + H], out=self.window)
        return self.window


def _sum_squares(x: np.ndarray) -> int:
    """Exact sum of x**2 of an integer array, accumulated in int64."""
    return int(np.einsum("i,i->", x.ravel(), x.ravel(), dtype=np.int64))


class ScoreAccumulator:
    """Accumulates contingency tables and FSS sums over batches; ``compute()`` gives the scores.

    Args:
        horizon: lead times per clip (N).
        thresholds: event thresholds in the data's units; a string is parsed as a number and kept
            as its key (so ``"0.50"`` stays ``"0.50"``).
        pools: pooled-CSI block sizes in pixels (each >= 1; empty: no pooled CSI).
        fss_scales: FSS window sizes in pixels (odd, >= 1; empty: no FSS).
        labels: the thresholds' keys (default :func:`threshold_label` of each threshold).

    Raises:
        ValueError: an empty or non-finite threshold list, labels that do not match it or repeat,
            an even or < 1 FSS scale, a pool < 1, a repeated pool or scale, or horizon < 1.
    """

    def __init__(self, horizon: int, thresholds: Sequence[float | str], *, pools: Sequence[int] = DEFAULT_POOLS,
                 fss_scales: Sequence[int] = DEFAULT_FSS_SCALES, labels: Sequence[str] | None = None) -> None:
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
        if isinstance(thresholds, str) or len(thresholds) == 0:
            raise ValueError(f"need at least one threshold, got {thresholds!r}")
        try:
            values = [float(t) for t in thresholds]
        except (TypeError, ValueError):
            raise ValueError(f"thresholds must be numbers, got {list(thresholds)!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"thresholds must be finite, got {values}")
        keys = [threshold_label(t) for t in thresholds] if labels is None else [str(s) for s in labels]
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} labels for {len(values)} thresholds")
        if len(set(keys)) != len(keys):
            raise ValueError(f"threshold labels must be distinct, got {keys}")
        self.horizon = int(horizon)
        self.thresholds = values
        self.labels = keys
        self.pools = _sizes(pools, "pool", odd=False)
        self.fss_scales = _sizes(fss_scales, "FSS scale", odd=True)
        T, N = len(values), self.horizon
        self.table = np.zeros((4, T, N), dtype=np.int64)  # hits, false alarms, misses, correct negatives
        self.pooled = np.zeros((len(self.pools), 3, T, N), dtype=np.int64)  # hits, false alarms, misses
        # per FSS scale: sum (cf - co)^2 and sum cf^2 + co^2, cf/co the forecast's/truth's window counts
        self.fss_sums = np.zeros((len(self.fss_scales), 2, T, N), dtype=np.int64)
        self.clips = 0

    def update(self, forecast: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add a batch: ``forecast``, ``truth`` (B, N, H, W, C) in the data's units.

        Args:
            forecast: the forecast; NaN where the truth is valid counts as a non-event.
            truth: the observations; non-finite values are never scored.
            valid: pixels to score, bool, broadcastable to the batch's shape (combined with
                ``isfinite(truth)``); default: every pixel with a finite truth.

        Raises:
            ValueError: not 5-D, shapes that differ, a lead-time count other than ``horizon``, or a
                mask that does not broadcast.
        """
        f, o = np.asarray(forecast), np.asarray(truth)
        if f.ndim != 5 or o.ndim != 5:
            raise ValueError(f"forecast and truth must be (B, N, H, W, C), got {f.shape} and {o.shape}")
        if f.shape != o.shape:
            raise ValueError(f"forecast {f.shape} and truth {o.shape} differ in shape")
        if f.shape[1] != self.horizon:
            raise ValueError(f"expected {self.horizon} lead times, got {f.shape[1]} (shape {f.shape})")
        mask = None
        if valid is not None:
            try:
                mask = np.broadcast_to(np.asarray(valid, dtype=bool), f.shape)
            except ValueError:
                raise ValueError(f"valid {np.shape(valid)} does not broadcast to {f.shape}") from None
        B, N, H, W, C = f.shape
        dtype = np.result_type(f.dtype, o.dtype)
        if not np.issubdtype(dtype, np.floating):
            dtype = np.dtype(np.float64)  # integer data (e.g. digitised VIL): compared exactly in float64
        thresholds = [dtype.type(t) for t in self.thresholds]
        step = max(1, _CHUNK_PIXELS // max(1, H * W * C))
        work: dict[tuple[int, int, int], tuple[_Integral, _Integral]] = {}  # buffers per chunk shape
        for n in range(N):
            for b0 in range(0, B, step):
                sl = (slice(b0, b0 + step), n)
                self._add(n, _frames(f[sl], dtype), _frames(o[sl], dtype),
                          None if mask is None else _frames(mask[sl], np.dtype(bool)), thresholds, work)
        self.clips += B

    def _add(self, n: int, f: np.ndarray, o: np.ndarray, mask: np.ndarray | None, thresholds: list[Any],
             cache: dict[tuple[int, int, int], tuple[_Integral, _Integral]]) -> None:
        """Accumulate one chunk of frames (F, H, W) of lead time ``n``; ``cache`` keeps work buffers."""
        F, H, W = f.shape
        ok = np.isfinite(o)
        if mask is not None:
            ok &= mask
        n_valid = int(np.count_nonzero(ok))
        blocks = []
        if self.pools:
            # invalid pixels (and NaN forecasts) are -inf in the max: ignored, unless the whole block is
            fm = np.where(ok & ~np.isnan(f), f, -np.inf).astype(f.dtype, copy=False)
            om = np.where(ok, o, -np.inf).astype(o.dtype, copy=False)
            done: dict[int, tuple[np.ndarray, np.ndarray]] = {}
            for k in self.pools:
                base = max((j for j in done if k % j == 0), default=1)  # pool 16 from pool 4: 16x less work
                src = (fm, om) if base == 1 else done[base]
                pf, po = _maxpool(src[0], k // base), _maxpool(src[1], k // base)
                done[k] = (pf, po)
                blocks.append((pf, po))
        radii = [s // 2 for s in self.fss_scales if s > 1]
        work = None
        if radii:
            if (F, H, W) not in cache:
                cache[F, H, W] = (_Integral(F, H, W, max(radii)), _Integral(F, H, W, max(radii)))
            work = cache[F, H, W]
        for t, thr in enumerate(thresholds):
            fe = f >= thr  # NaN compares False: a non-event
            fe &= ok
            oe = o >= thr
            oe &= ok
            a = int(np.count_nonzero(fe & oe))
            nf, no = int(np.count_nonzero(fe)), int(np.count_nonzero(oe))
            self.table[:, t, n] += (a, nf - a, no - a, n_valid - nf - no + a)
            for p, (pf, po) in enumerate(blocks):
                # a block without valid truth is -inf in both fields, never an event: it adds to no count
                pfe, poe = pf >= thr, po >= thr
                pa = int(np.count_nonzero(pfe & poe))
                self.pooled[p, :, t, n] += (pa, int(np.count_nonzero(pfe)) - pa, int(np.count_nonzero(poe)) - pa)
            if work is None or (nf == 0 and no == 0):  # only n = 1 (the table's counts), or nothing to count
                for s in range(len(self.fss_scales)):
                    self.fss_sums[s, :, t, n] += (nf + no - 2 * a, nf + no)
                continue
            # By linearity the window counts of D = If - Io and S = If + Io are cf - co and cf + co:
            # sum (cf-co)^2 = sum d^2 and sum cf^2 + co^2 = (sum s^2 + sum d^2) / 2, two sums, not three.
            diff, both = work
            diff.fill(fe.view(np.int8) - oe.view(np.int8))
            both.fill(fe.view(np.int8) + oe.view(np.int8))
            for s, scale in enumerate(self.fss_scales):
                if scale == 1:  # the binary fields themselves: sums of the table's counts
                    self.fss_sums[s, :, t, n] += (nf + no - 2 * a, nf + no)
                    continue
                sdd = _sum_squares(diff.counts(scale // 2))
                sss = _sum_squares(both.counts(scale // 2))
                self.fss_sums[s, :, t, n] += (sdd, (sss + sdd) // 2)

    def compute(self) -> dict[str, Any]:
        """The scores per lead time over every clip seen.

        Returns:
            ``{"csi": {"<thr>": [N]}, "pod", "far", "bias", "hss" (alike), "csi_pool": {"<k>":
            {"<thr>": [N]}}, "fss": {"<thr>": {"<n>": [N]}}, "csi_m": [N], "counts": {"<thr>":
            {"hits": [N], "false_alarms": [N], "misses": [N], "correct_negatives": [N]}}}``; a score
            is a float, or None where its denominator is 0; counts are ints.

        Raises:
            ValueError: no clip was added.
        """
        if self.clips == 0:
            raise ValueError("no clips were evaluated")
        N = self.horizon
        out: dict[str, Any] = {k: {} for k in ("csi", "pod", "far", "bias", "hss")}
        out["counts"] = {}
        for t, label in enumerate(self.labels):
            a, b, c, d = (self.table[i, t].tolist() for i in range(4))
            per = [_contingency_scores(a[n], b[n], c[n], d[n]) for n in range(N)]
            for k in ("csi", "pod", "far", "bias", "hss"):
                out[k][label] = [s[k] for s in per]
            out["counts"][label] = {"hits": a, "false_alarms": b, "misses": c, "correct_negatives": d}
        out["csi_pool"] = {}
        for p, size in enumerate(self.pools):
            tables = self.pooled[p].tolist()
            out["csi_pool"][str(size)] = {
                label: [_ratio(tables[0][t][n], tables[0][t][n] + tables[1][t][n] + tables[2][t][n])
                        for n in range(N)]
                for t, label in enumerate(self.labels)}
        out["fss"] = {}
        for t, label in enumerate(self.labels if self.fss_scales else []):
            out["fss"][label] = {}
            for s, scale in enumerate(self.fss_scales):
                num, den = (self.fss_sums[s, i, t].tolist() for i in range(2))
                # 1 - sum((Pf-Po)^2) / (sum Pf^2 + sum Po^2), P = count / n^2: the n^2 cancels
                out["fss"][label][str(scale)] = [None if den[n] == 0 else 1.0 - num[n] / den[n] for n in range(N)]
        out["csi_m"] = []
        for n in range(N):
            values = [out["csi"][label][n] for label in self.labels if out["csi"][label][n] is not None]
            out["csi_m"].append(sum(values) / len(values) if values else None)
        return out


def verification_scores(forecast: np.ndarray, truth: np.ndarray, thresholds: Sequence[float | str], *,
                        valid: np.ndarray | None = None, pools: Sequence[int] = DEFAULT_POOLS,
                        fss_scales: Sequence[int] = DEFAULT_FSS_SCALES,
                        labels: Sequence[str] | None = None) -> dict[str, Any]:
    """All scores of one batch (B, N, H, W, C) in one call; see :class:`ScoreAccumulator`."""
    if np.ndim(forecast) != 5:
        raise ValueError(f"forecast must be (B, N, H, W, C), got shape {np.shape(forecast)}")
    acc = ScoreAccumulator(np.shape(forecast)[1], thresholds, pools=pools, fss_scales=fss_scales, labels=labels)
    acc.update(forecast, truth, valid)
    return acc.compute()


def _sizes(values: Sequence[int], what: str, *, odd: bool) -> tuple[int, ...]:
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1 or (odd and v % 2 == 0):
            raise ValueError(f"each {what} must be {'an odd' if odd else 'an'} integer >= 1, got {v!r}")
        out.append(int(v))
    if len(set(out)) != len(out):
        raise ValueError(f"{what}s must be distinct, got {out}")
    return tuple(out)


def _frames(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """(b, H, W, C) -> (b*C, H, W) in ``dtype``: each channel its own frame (a view where C == 1)."""
    b, H, W, C = x.shape
    return np.moveaxis(x, -1, 1).reshape(b * C, H, W).astype(dtype, copy=False)
