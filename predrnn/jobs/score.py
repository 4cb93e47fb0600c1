"""Scores of any forecast against the truth, per lead time, in the data's units: arrays (``.npy``) or a
forecast dataset version scored against its own source. ``predrnn score`` runs it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from predrnn.errors import PredrnnError
from predrnn.jobs.model import JobError, check_pools_and_scales

if TYPE_CHECKING:
    from predrnn.data.store import S3Settings


@dataclass(frozen=True)
class ScoreSpec:
    """What is scored, resolved once by :func:`prepare_score`.

    Attributes:
        forecast: a ``.npy`` file, or a forecast dataset version (``dataset`` then holds it opened).
        truth: the observed ``.npy``; None for a forecast dataset (its source is the truth).
        mask: a valid-pixel mask ``.npy`` (nonzero = scored), or None.
        units: the data's units (a forecast dataset's own); empty for images and unitless data.
        image: image data in [0, 1] (PSNR and SSIM added; 8-bit arrays scaled).
        thresholds, labels: event thresholds in the data's units and their JSON keys (None: the thresholds'
            own string form).
        pools, fss_scales: pooled-CSI blocks and FSS windows in pixels.
        batch_size: clips scored at a time.
    """

    forecast: str
    truth: str | None
    mask: Path | None
    units: str
    image: bool
    thresholds: tuple[float, ...]
    labels: tuple[str, ...] | None
    pools: tuple[int, ...]
    fss_scales: tuple[int, ...]
    batch_size: int = 16
    dataset: Any = None  # the opened forecast dataset (predrnn.data.forecasts.ForecastClips), or None


def _is_array_file(path: str) -> bool:
    return path.endswith(".npy") or Path(path).is_file()


def prepare_score(forecast: str, truth: str | None = None, *, mask: Path | None = None, units: str | None = None,
                  image: bool = False, thresholds: list[float] | None = None, labels: list[str] | None = None,
                  pools: Sequence[int] = (4, 16), fss_scales: Sequence[int] = (1, 3, 9, 27),
                  batch_size: int = 16, s3: S3Settings | None = None) -> ScoreSpec:
    """Check what is scored: a forecast dataset brings its units, thresholds and source; arrays need
    ``truth``. Without ``thresholds``: the forecast dataset's recorded ones, else those customary for
    ``units`` (HKO-7 for mm/h, SEVIR for VIL; :func:`predrnn.verification.default_thresholds`).

    Raises:
        JobError (one line naming the option): a bad batch size, pools or scales; ``--truth`` or ``--units``
            or ``--image`` that contradict a forecast dataset; a forecast dataset that cannot be read.
    """
    from predrnn.verification import default_thresholds

    if batch_size < 1:
        raise JobError("--batch-size must be >= 1")
    check_pools_and_scales(list(pools), list(fss_scales))
    recorded: list[float] | None = None
    dataset = None
    if not _is_array_file(forecast):  # a forecast dataset: what its values are is recorded
        from predrnn.data.forecasts import ForecastClips
        from predrnn.values import from_dataset_attrs

        try:
            dataset = ForecastClips(forecast, s3)
        except PredrnnError as err:
            raise JobError(f"cannot read {forecast!r}: {err}") from None
        vals = from_dataset_attrs(dataset.version.attrs)
        if truth is not None:
            raise JobError("a forecast dataset is scored against its own source; leave --truth out (or score "
                           "arrays: --forecast F.npy --truth T.npy)")
        if units is not None and units != vals.units:
            raise JobError(f"--units {units!r}: the forecast dataset's values are in {vals.units or 'no units'!r} "
                           "(recorded); leave --units out")
        if image and vals.kind != "image":
            raise JobError(f"--image: the forecast dataset holds a field in {vals.units!r}, not images")
        image, units = vals.kind == "image", vals.units
        recorded = list(vals.thresholds) or None
    elif truth is None:
        raise JobError("--truth T.npy is needed with a --forecast array (a forecast dataset brings its source)")
    elif not _is_array_file(truth):
        raise JobError(f"--truth {truth!r} is not a .npy file; a forecast dataset is scored against its own "
                       "source (leave --truth out)")
    units = units or ""
    if thresholds is None:
        thresholds, labels = (recorded if recorded is not None else default_thresholds(units)), None
    return ScoreSpec(forecast=forecast, truth=truth, mask=mask, units=units, image=image,
                     thresholds=tuple(thresholds), labels=None if labels is None else tuple(labels),
                     pools=tuple(pools), fss_scales=tuple(fss_scales), batch_size=batch_size, dataset=dataset)


def _read(spec: ScoreSpec) -> tuple[Any, Any, np.ndarray | None]:
    """Forecast and truth as (clips, N, H, W, C) arrays (memory-mapped, or the forecast dataset and its
    source, read a slice at a time) and the mask broadcast to them (or None)."""
    try:
        if spec.dataset is not None:
            f: Any = spec.dataset
            t: Any = spec.dataset.truth()
        else:
            f = np.load(spec.forecast, mmap_mode="r", allow_pickle=False)
            t = np.load(str(spec.truth), mmap_mode="r", allow_pickle=False)
        m = np.load(spec.mask, allow_pickle=False) if spec.mask is not None else None
    except PredrnnError as err:  # the forecast dataset's source cannot be read
        raise JobError(f"cannot read the source of {spec.forecast}: {err}") from None
    except (OSError, ValueError) as err:
        raise JobError(f"cannot read the arrays: {err}") from None
    if isinstance(f, np.ndarray) and f.ndim == 4:
        f, t = f[..., None], (t[..., None] if t.ndim == 4 else t)
    if f.ndim != 5 or tuple(f.shape) != tuple(t.shape):
        raise JobError(f"--forecast {tuple(f.shape)} and --truth {tuple(t.shape)} must both be (clips, N, H, W, C) "
                       "of one shape")
    for name, a in (("--forecast", f), ("--truth", t)):
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise JobError(f"{name} must hold numbers, got dtype {a.dtype}")
    if spec.image and isinstance(t, np.ndarray) and (np.isnan(t).any() or np.isnan(f).any()):
        raise JobError("--image data has no missing values: NaN found; score a physical field without --image")
    return f, t, None if m is None else _broadcast_mask(m, f.shape)


def _broadcast_mask(m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A boolean mask of one clip's shape, or of all clips' when given per clip."""
    if m.ndim == 2:  # a (H, W) map, e.g. a radar's range: every channel
        m = m[..., None]
    try:
        return np.broadcast_to(m.astype(bool), shape[1:] if m.ndim < 5 else shape)
    except ValueError:
        raise JobError(f"--mask {m.shape} does not broadcast to the forecast {shape}; give (H, W), (H, W, C), "
                       "(N, H, W, C) or (clips, N, H, W, C)") from None


@dataclass(frozen=True)
class ScoreResult:
    """The scorecard (:func:`predrnn.metrics.scorecard`: each score per lead time, None where no observation
    exists) and how many clips and lead times were scored."""

    card: dict[str, Any]
    clips: int
    lead_times: int


def run_score(spec: ScoreSpec) -> ScoreResult:
    """Score every clip ``spec.batch_size`` at a time: MSE/MAE per frame, RMSE, CSI/POD/FAR/bias/HSS, pooled
    CSI, FSS and CSI-M (pysteps / SEVIR definitions; images add PSNR and SSIM on 8-bit data); a single field
    also the spectral ratio (:mod:`predrnn.spectra`, km on a forecast dataset whose source has a projected
    grid, else pixels).

    Raises:
        JobError: the arrays cannot be read or do not fit each other or the mask.
    """
    from predrnn.config import ValuesConfig
    from predrnn.metrics import MetricAccumulator, scorecard

    f, t, m = _read(spec)
    values = ValuesConfig() if spec.image else ValuesConfig(kind="field", units=spec.units)
    acc = MetricAccumulator(f.shape[1], values=values, thresholds=spec.thresholds, pools=spec.pools,
                            fss_scales=spec.fss_scales, labels=spec.labels)
    spectra = None  # the spectral ratio of a single field, as evaluate measures it (predrnn.spectra)
    if not spec.image and f.ndim == 5 and f.shape[-1] == 1:
        from predrnn.evaluation import grid_spacing_km
        from predrnn.spectra import SpectrumAccumulator

        source = getattr(spec.dataset, "source", None)
        spectra = SpectrumAccumulator(f.shape[1], spacing=grid_spacing_km(source.attrs) if source else None)
    bs, image = spec.batch_size, spec.image
    try:
        for i in range(0, f.shape[0], bs):
            fi = np.asarray(f[i:i + bs], dtype=np.float64 if not image else np.float32)
            ti = np.asarray(t[i:i + bs], dtype=np.float64 if not image else np.float32)
            if image and f.dtype == np.uint8:  # 8-bit images (either side) to [0, 1]
                fi = np.divide(fi, 255.0)
            if image and t.dtype == np.uint8:
                ti = np.divide(ti, 255.0)
            mi = None if m is None else (m[i:i + bs] if m.ndim == 5 and m.shape[0] == f.shape[0]
                                         else np.broadcast_to(m, fi.shape))
            acc.update(fi, ti, mi)
            if spectra is not None:  # a pixel outside the mask is one without an observation
                spectra.update(fi, ti if mi is None else np.where(np.asarray(mi) != 0, ti, np.nan))
    except ValueError as err:
        raise JobError(str(err)) from None
    block = acc.compute()
    if spectra is not None and spectra.fields.any():
        block["spectrum"] = spectra.compute()
    return ScoreResult(card=scorecard(block), clips=int(f.shape[0]), lead_times=int(f.shape[1]))
