"""The field's nowcasting baselines as forecasters: persistence, Lagrangian extrapolation and S-PROG.

Every baseline has persistence's interface, ``forecast(context, horizon, values)``: ``context`` is
(B, T_in, H, W, C) in the data's units (e.g. mm/h, NaN = no data) and the forecast is
(B, horizon, H, W, C) float32 in the same units, on the context's device. Radar nowcasting is judged
against these (pysteps' guidance, pySTEPS/pysteps#160: compare an MSE-trained model with extrapolation,
which keeps the field's variance, *and* with a smoothing nowcast such as S-PROG, which minimises MSE):

* ``persistence``: the last context frame repeated (:func:`predrnn.steps.persistence_forecast`).
* ``extrapolation``: a motion field estimated from the last context frames (pysteps
  ``motion.get_method``: dense Lucas-Kanade ``"LK"`` by default, ``"VET"`` (Laroche and Zawadzki 1995)
  or ``"DARTS"`` (Ruzanski et al. 2011) by option), and semi-Lagrangian backward advection of the last
  frame along it (pysteps ``nowcasts.get_method("extrapolation")``, Germann and Zawadzki 2002),
  linear interpolation, the motion held constant over the horizon.
* ``sprog``: pysteps S-PROG (``nowcasts.get_method("sprog")``; Seed 2003, the deterministic core of
  STEPS, Bowler et al. 2006): the field in dB (``pysteps.utils.transformation.dB_transform``, threshold
  0.1 in the data's units, values below it set to the zero value ``threshold_dB - 5``, -15 dB at 0.1)
  decomposed into a cascade of spatial scales, each advected and evolved by its own AR(2) model
  (small scales lose predictability first and are smoothed away), then back-transformed to the units
  (values under the threshold -> 0).

Motion, for both, as the pysteps examples estimate it: on the dB-transformed field for a non-negative
quantity (rain rate, VIL: a declared ``valid_min >= 0`` or rain/VIL units), on the values as they are
for any other field.

**Missing data (NaN).** The project's scores refuse a NaN forecast where the truth has a value (an
absent forecast must never pass for a perfect one, :func:`predrnn.metrics.frame_metrics`), so every
baseline forecasts every pixel, and a pixel without data is forecast with a stated value, then scored
like any other:

* motion: NaN pixels are masked (LK and VET take a masked array and track only where there is data;
  DARTS takes no mask, so its frames have NaN filled with the frame's minimum, as LK fills its mask);
  a clip whose motion frames hold no value at all gets no motion.
* ``extrapolation``: the last frame's NaN pixels are filled before it is advected, and pixels advected
  in from outside the domain (pysteps' ``outval``) take the same value: for a non-negative quantity its
  lower bound (``valid_min``, else 0: no rain, what S-PROG gives there), for any other field the
  training mean (``values.mean``, what persistence and the model are fed).
* ``sprog``: NaN pixels take the transform's zero value (no rain), as the pysteps examples fill them
  before a nowcast, and are forecast as the field around them evolves; pixels that pysteps leaves NaN
  (advected in from outside the domain) are no rain, 0.

Baselines apply to single-channel physical fields only (:func:`applicable_baselines`): on images
(8-bit intensities, where motion and a rain transform mean nothing) and on several variables (one motion
field for fields in different units, advected as one, is not sound; they are not run per channel either)
they are refused with a one-line ``ValueError``. S-PROG also needs a non-negative quantity (the dB
transform), at least ``ar_order + 1`` = 3 context frames and a grid of at least 16 pixels on its longer
side.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from predrnn.config import ValuesConfig
from predrnn.models.predrnn import Persistence
from predrnn.values import channel_values, clip_valid, fill_missing, is_field
from predrnn.verification import default_thresholds

BASELINES = ("persistence", "extrapolation", "sprog")
MOTION_METHODS = ("LK", "VET", "DARTS")

# pysteps' rain conventions (its example gallery): 0.1 mm/h is the smallest rain rate, and the dB zero value
# lies 5 dB below the threshold (-15 dB at 0.1 mm/h).
DEFAULT_THRESHOLD = 0.1
_ZERO_BELOW_DB = 5.0
_MIN_SPROG_GRID = 16  # 3 cascade levels, the fewest pysteps' Gaussian filter bank takes
_MAX_CASCADE_LEVELS = 8  # pysteps' example for a 700 x 700 km grid at 1 km
# the pysteps examples' last three frames; DARTS takes the whole context
_MOTION_FRAMES: dict[str, int] = {"LK": 3, "VET": 3}
_DARTS_N_T = 4  # DARTS' default number of temporal DFT coefficients; it needs T > N_t + 1 frames


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """pysteps prints its configuration file at import and S-PROG its parameters on every call."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _pysteps() -> Any:
    """pysteps, imported on first use (1.6 s, and a banner on stdout that we swallow)."""
    with _quiet():
        import pysteps
        import pysteps.motion
        import pysteps.nowcasts
        import pysteps.utils.transformation
    return pysteps


def _single_field(context: torch.Tensor, values: ValuesConfig, name: str) -> ValuesConfig:
    """The one channel's values of a single-channel physical field; a one-line ValueError otherwise."""
    if context.ndim != 5:
        raise ValueError(f"{name}: the context must be (B, T, H, W, C), got shape {tuple(context.shape)}")
    if not is_field(values):
        raise ValueError(f"{name} applies to physical fields (values kind 'field'), not to image intensities: "
                         "motion and a rain transform mean nothing on 8-bit images")
    channels = channel_values(values)
    C = context.shape[-1]
    if len(channels) != 1 or C != 1:
        raise ValueError(f"{name} applies to single-channel fields, got {max(len(channels), C)} channels: one "
                         "motion field for variables in different units is not sound")
    return channels[0]


def _non_negative(values: ValuesConfig) -> bool:
    """A quantity that is never negative (rain rate, VIL): declared ``valid_min >= 0``, or rain/VIL units."""
    return (values.valid_min is not None and values.valid_min >= 0) or bool(default_thresholds(values.units))


def _no_data_value(values: ValuesConfig) -> float:
    """What extrapolation puts where there is no data: a non-negative quantity's lower bound (no rain),
    else the training mean."""
    if _non_negative(values):
        return float(values.valid_min) if values.valid_min is not None else 0.0
    return float(values.mean)


def _horizon(horizon: int, name: str) -> int:
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"{name}: horizon must be an integer >= 1, got {horizon!r}")
    return int(horizon)


def _to_db(frames: np.ndarray, threshold: float) -> np.ndarray:
    """pysteps' dB transform with its zero value ``threshold_dB - 5``; NaN stays NaN."""
    zero = 10.0 * math.log10(threshold) - _ZERO_BELOW_DB
    out, _ = _pysteps().utils.transformation.dB_transform(frames, threshold=threshold, zerovalue=zero)
    return np.asarray(out)


def _motion(frames: np.ndarray, method: str) -> np.ndarray:
    """A motion field (2, H, W), pixels per time step (x then y, pysteps' order), from frames (T, H, W).

    NaN is masked for LK and VET and filled with the frame's minimum for DARTS; frames without any value
    give no motion (zeros), and so do frames with nothing to track, where the estimate is singular (a field
    without texture or features: uniform, or all below the threshold).
    """
    ps = _pysteps()
    T, H, W = frames.shape
    take = _MOTION_FRAMES.get(method, T)
    frames = frames[T - take:]
    if not np.isfinite(frames).reshape(frames.shape[0], -1).any(axis=1).all():
        return np.zeros((2, H, W))
    estimate = ps.motion.get_method(method)
    try:
        if method == "DARTS":
            filled = np.where(np.isfinite(frames), frames, np.nanmin(frames, axis=(1, 2), keepdims=True))
            velocity = estimate(filled, verbose=False)
        else:
            velocity = estimate(np.ma.masked_invalid(frames), verbose=False)
    except np.linalg.LinAlgError:  # nothing to track (pysteps' least squares on a featureless field)
        return np.zeros((2, H, W))
    return np.nan_to_num(np.asarray(velocity, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def _check_method(method: str, frames: int, name: str) -> None:
    if method not in MOTION_METHODS:
        raise ValueError(f"{name}: unknown motion method {method!r}; choose one of {', '.join(MOTION_METHODS)}")
    need = _DARTS_N_T + 2 if method == "DARTS" else 2
    if frames < need:
        raise ValueError(f"{name}: {method} motion needs at least {need} context frames, got {frames}")


def _numpy_clips(context: torch.Tensor) -> np.ndarray:
    """(B, T, H, W, 1) -> (B, T, H, W) float64 on the CPU."""
    return context.detach().to("cpu", torch.float64).numpy()[..., 0]


def _as_forecast(out: np.ndarray, like: torch.Tensor, values: ValuesConfig) -> torch.Tensor:
    """(B, N, H, W) float -> (B, N, H, W, 1) float32 on the context's device, clipped to the valid range."""
    pred = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)[..., None]).to(like.device)
    return clip_valid(pred, values)


def persistence(context: torch.Tensor, horizon: int, values: ValuesConfig) -> torch.Tensor:
    """The last context frame repeated ``horizon`` times, (B, horizon, H, W, C) in the data's units.

    The same as :func:`predrnn.steps.persistence_forecast`: a pixel with no data in the last frame takes
    the training mean. Applies to any data (images and several channels included).
    """
    return Persistence().forecast(fill_missing(context, values), _horizon(horizon, "persistence")).float()


def extrapolation(context: torch.Tensor, horizon: int, values: ValuesConfig, *, method: str = "LK",
                  threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """Lagrangian persistence: the last frame advected along the motion of the context (pysteps).

    The motion field (pysteps ``motion.get_method(method)``) comes from the last 3 context frames for
    LK and VET, from the whole context for DARTS, on the dB field (``threshold`` in the data's units)
    for a non-negative quantity; it is held constant and the last frame advected backward along it
    ``horizon`` steps, semi-Lagrangian with linear interpolation (pysteps'
    ``nowcasts.get_method("extrapolation")``, Germann and Zawadzki 2002). Each clip on its own.

    Args:
        context: (B, T_in, H, W, 1) in the data's units, NaN = no data (the module's NaN policy: NaN
            in the last frame and inflow from outside the domain take :func:`_no_data_value`).
        horizon: lead times to forecast.
        values: the data's values; a single-channel field.
        method: ``"LK"`` (dense Lucas-Kanade, needs OpenCV), ``"VET"`` or ``"DARTS"``.
        threshold: the dB transform's threshold for the motion of a non-negative field.

    Returns:
        (B, horizon, H, W, 1) float32 in the data's units, finite, clipped to the valid range.

    Raises:
        ValueError: images, several channels, an unknown method, fewer context frames than the motion
            needs (2; DARTS 6), or horizon < 1.
    """
    name = "extrapolation"
    one = _single_field(context, values, name)
    N = _horizon(horizon, name)
    _check_method(method, context.shape[1], name)
    ps = _pysteps()
    advect = ps.nowcasts.get_method("extrapolation")
    fill = _no_data_value(one)
    clips = _numpy_clips(context)
    out = np.empty((clips.shape[0], N, *clips.shape[2:]))
    for b, frames in enumerate(clips):
        velocity = _motion(_to_db(frames, threshold) if _non_negative(one) else frames, method)
        last = np.where(np.isfinite(frames[-1]), frames[-1], fill)
        out[b] = advect(last, velocity, N, extrap_kwargs={"outval": fill, "interp_order": 1})
    return _as_forecast(out, context, one)


def cascade_levels(height: int, width: int) -> int:
    """S-PROG's cascade levels for a grid: about one octave of scale per level, 3 to 8.

    pysteps' Gaussian filter bank spreads ``n`` levels logarithmically from the domain to 2 pixels, a
    ratio of ``(L/2)**(1/n)`` per level (L the longer side): ``n = floor(log2(L/2))`` makes it about 2,
    as pysteps' own example (8 levels on 700 x 700). 64 x 64 -> 5, 256 x 256 -> 7.

    Raises:
        ValueError: a grid under 16 pixels on its longer side (fewer than the 3 levels pysteps takes).
    """
    L = max(int(height), int(width))
    if L < _MIN_SPROG_GRID:
        raise ValueError(f"S-PROG needs a grid of at least {_MIN_SPROG_GRID} pixels on its longer side "
                         f"(3 cascade levels), got {height}x{width}")
    return min(_MAX_CASCADE_LEVELS, int(math.floor(math.log2(L / 2))))


def sprog(context: torch.Tensor, horizon: int, values: ValuesConfig, *, method: str = "LK",
          threshold: float = DEFAULT_THRESHOLD, n_cascade_levels: int | None = None,
          ar_order: int = 2) -> torch.Tensor:
    """The S-PROG nowcast (Seed 2003; the deterministic core of STEPS, Bowler et al. 2006), by pysteps.

    Per clip: the context in dB (``dB_transform(threshold=threshold, zerovalue=threshold_dB - 5)``),
    motion from its last 3 frames (``method``, NaN masked), NaN -> the zero value, then ``nowcasts.get_method("sprog")``
    on the last ``ar_order + 1`` dB frames with ``precip_thr`` = the threshold in dB, ``n_cascade_levels``
    (default :func:`cascade_levels` of the grid), ``ar_order``, pysteps' defaults otherwise (Gaussian
    band-pass filters, FFT decomposition, semi-Lagrangian advection, CDF matching to the last field,
    unconditional statistics), and back to the units with the inverse transform (values below the
    threshold -> 0). Where S-PROG is undefined, a clip gets the last frame advected along the motion
    instead (Lagrangian persistence; all zero for a dry last frame): a rain-free frame (nothing at or above
    ``threshold``) among the last ``ar_order + 1`` (a cascade without variance), or a field that does not
    evolve at all (correlation 1: singular Yule-Walker equations).

    Args:
        context: (B, T_in, H, W, 1) in the data's units, non-negative (rain rate, VIL), NaN = no data.
        horizon: lead times to forecast.
        values: the data's values; a single-channel field.
        method: the motion method (``"LK"``, ``"VET"``, ``"DARTS"``).
        threshold: the smallest value that is not zero (rain), in the data's units.
        n_cascade_levels: spatial scales of the cascade (>= 3); default from the grid size.
        ar_order: order of each level's autoregressive model (pysteps' 2).

    Returns:
        (B, horizon, H, W, 1) float32 in the data's units, finite, clipped to the valid range.

    Raises:
        ValueError: images, several channels, a field not declared non-negative (``valid_min >= 0`` or
            rain-rate / VIL units) or negative values in its context, fewer than ``ar_order + 1``
            context frames, a grid too small for the cascade, fewer than 3 levels, an unknown method,
            or horizon < 1.
    """
    name = "sprog"
    one = _single_field(context, values, name)
    N = _horizon(horizon, name)
    B, T, H, W, _ = context.shape
    if isinstance(ar_order, bool) or not isinstance(ar_order, int) or ar_order < 1:
        raise ValueError(f"sprog: ar_order must be an integer >= 1, got {ar_order!r}")
    if ar_order >= T:
        raise ValueError(f"sprog: an AR({ar_order}) model needs at least {ar_order + 1} context frames, got {T}")
    _check_method(method, T, name)
    levels = cascade_levels(H, W) if n_cascade_levels is None else int(n_cascade_levels)
    if levels < 3:
        raise ValueError(f"sprog: pysteps needs at least 3 cascade levels, got {levels}")
    if not threshold > 0:
        raise ValueError(f"sprog: the dB threshold must be > 0, got {threshold!r}")
    if not _non_negative(one):
        raise ValueError(f"sprog: the dB transform is for a non-negative quantity (rain rate, VIL), and "
                         f"{one.units or 'this field'} declares none (valid_min >= 0, or rain-rate units)")
    clips = _numpy_clips(context)
    finite = clips[np.isfinite(clips)]
    if finite.size and finite.min() < 0:
        raise ValueError(f"sprog: the dB transform takes a non-negative quantity (rain rate), the context holds "
                         f"values down to {finite.min():.4g} {one.units}".rstrip())
    ps = _pysteps()
    nowcast = ps.nowcasts.get_method("sprog")
    advect = ps.nowcasts.get_method("extrapolation")
    thr_db = 10.0 * math.log10(threshold)
    out = np.empty((B, N, H, W))
    for b, frames in enumerate(clips):
        db = _to_db(frames, threshold)
        velocity = _motion(db, method)  # NaN masked, as for extrapolation
        last = np.where(np.isfinite(frames[-1]), frames[-1], 0.0)
        # S-PROG is undefined where its AR models are: a frame of the window without rain (a cascade level
        # without variance) or a field that does not evolve at all (correlation 1, singular Yule-Walker
        # equations); such a clip gets what S-PROG tends to when nothing evolves, the last frame advected
        if not all(np.any(np.nan_to_num(f, nan=0.0) >= threshold) for f in frames[-(ar_order + 1):]):
            out[b] = advect(last, velocity, N, extrap_kwargs={"outval": 0.0, "interp_order": 1})
            continue
        db[~np.isfinite(db)] = thr_db - _ZERO_BELOW_DB
        try:
            with _quiet():
                fc = nowcast(db[-(ar_order + 1):], velocity, N, precip_thr=thr_db, n_cascade_levels=levels,
                             ar_order=ar_order)
        except np.linalg.LinAlgError:
            out[b] = advect(last, velocity, N, extrap_kwargs={"outval": 0.0, "interp_order": 1})
            continue
        back, _ = ps.utils.transformation.dB_transform(np.asarray(fc), threshold=thr_db, inverse=True)
        out[b] = np.nan_to_num(back, nan=0.0)  # pysteps' NaN: advected in from outside the domain
    return _as_forecast(out, context, one)


def applicable_baselines(values: ValuesConfig, channels: int) -> tuple[str, ...]:
    """The baselines that apply to data with these values and ``channels`` channels, in :data:`BASELINES`
    order: persistence always; extrapolation for a single-channel field; S-PROG for a single-channel
    field of a non-negative quantity (declared ``valid_min >= 0``, or rain-rate / VIL units)."""
    if not is_field(values) or channels != 1 or len(channel_values(values)) != 1:
        return ("persistence",)
    one = channel_values(values)[0]
    return ("persistence", "extrapolation") + (("sprog",) if _non_negative(one) else ())


def baseline_forecast(name: str, context: torch.Tensor, horizon: int, values: ValuesConfig,
                      **options: Any) -> torch.Tensor:
    """The forecast of baseline ``name`` (one of :data:`BASELINES`), (B, horizon, H, W, C) in the data's units.

    ``options`` go to the baseline (``extrapolation``: ``method``, ``threshold``; ``sprog``: also
    ``n_cascade_levels``, ``ar_order``; ``persistence`` takes none).

    Raises:
        ValueError: an unknown name, options for persistence, or the baseline's own refusals.
    """
    if name == "persistence":
        if options:
            raise ValueError(f"persistence takes no options, got {', '.join(sorted(options))}")
        return persistence(context, horizon, values)
    if name == "extrapolation":
        return extrapolation(context, horizon, values, **options)
    if name == "sprog":
        return sprog(context, horizon, values, **options)
    raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")


__all__ = ["BASELINES", "DEFAULT_THRESHOLD", "MOTION_METHODS", "applicable_baselines", "baseline_forecast",
           "cascade_levels", "extrapolation", "persistence", "sprog"]
