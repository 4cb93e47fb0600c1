"""How blurred a forecast is: its radially averaged power spectrum against the observed one, per lead time.

An MSE-trained forecast loses power at the small scales it cannot predict (it smooths), while
extrapolation keeps the field's variance; the ratio of forecast to observed power at a spatial scale
measures that loss (1: as sharp as the observations; < 1: smoothed; > 1: noisier).

* **Spectrum** of one 2-D field: pysteps' RAPSD (``pysteps.utils.spectral.rapsd`` with
  ``fft_method=np.fft``; Ruzanski and Chandrasekar 2011), ``|FFT|^2 / (H W)`` averaged over rings of
  integer radius ``r`` (wavenumber) around the centred spectrum, ``r = 0 .. L/2 - 1`` with ``L =
  max(H, W)``; the ring ``r >= 1`` has wavelength ``L d / r``, ``d`` the grid spacing (km when the
  grid has one, else 1 pixel). The mean (``r = 0``) is left out.
* **Accumulated** per lead time over every clip: the mean spectrum of the forecasts and of the truth
  over the same fields, and the **ratio** of these means at each named scale (wavelengths, default 8,
  16, 32, 64, in km with a spacing, else pixels), read at the ring nearest to it, ``r = round(L d /
  wavelength)``: a ratio of sums over all fields, never a mean of per-field ratios. A scale longer than
  the domain (``L d``) or shorter than the smallest resolved wavelength is skipped (listed with why).
* **Missing data (NaN)**: the FFT needs a value at every pixel. A pixel where the truth has none is
  set to ``fill_value`` (default 0, no rain) in **both** fields: there is nothing to compare there, and
  identical fields keep identical spectra. A pixel where the truth has a value but the forecast has
  none is ``fill_value`` in the forecast only and counted (``filled_forecast_pixels``): a missing
  forecast is a forecast of ``fill_value``, never a copy of the truth. A field whose truth has no value
  at all is skipped (``fields`` counts those used). A ratio whose observed power is 0 is None.

:class:`SpectrumAccumulator` accumulates batch by batch; :func:`power_spectra` is one call;
:func:`plot_spectra` draws the spectra of several forecasters against the observed one.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from predrnn.verification import threshold_label

DEFAULT_SCALES = (8.0, 16.0, 32.0, 64.0)


def _rapsd() -> Any:
    """pysteps' RAPSD, imported on first use (pysteps prints a banner at import, which we swallow)."""
    with contextlib.redirect_stdout(io.StringIO()):
        from pysteps.utils.spectral import rapsd
    return rapsd


def _fields(x: Any, what: str) -> np.ndarray:
    """(B, N, H, W) or (B, N, H, W, 1), numpy or torch -> (B, N, H, W) float64."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 5:
        if a.shape[-1] != 1:
            raise ValueError(f"spectra are of single-channel fields, the {what} has {a.shape[-1]} channels")
        a = a[..., 0]
    if a.ndim != 4:
        raise ValueError(f"the {what} must be (B, N, H, W) or (B, N, H, W, 1), got shape {a.shape}")
    return a


class SpectrumAccumulator:
    """Accumulates the power spectra of forecasts and truth per lead time; ``compute()`` gives the ratios.

    Args:
        horizon: lead times per clip (N).
        spacing: the grid spacing in km; None: the grid has none and scales are in pixels.
        scales: wavelengths at which the ratio is reported, in km with a spacing, else pixels.
        fill_value: the value put where the truth (both fields) or the forecast has none.

    Raises:
        ValueError: horizon < 1, a spacing that is not a positive number, an empty, non-positive or
            repeated scale list.
    """

    def __init__(self, horizon: int, *, spacing: float | None = None, scales: Sequence[float] = DEFAULT_SCALES,
                 fill_value: float = 0.0) -> None:
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
        if spacing is not None and not (math.isfinite(float(spacing)) and float(spacing) > 0):
            raise ValueError(f"the grid spacing must be a positive number of km, got {spacing!r}")
        wavelengths = [float(s) for s in scales]
        if not wavelengths or not all(math.isfinite(s) and s > 0 for s in wavelengths):
            raise ValueError(f"scales must be positive wavelengths, got {list(scales)!r}")
        if len(set(wavelengths)) != len(wavelengths):
            raise ValueError(f"scales must be distinct, got {wavelengths}")
        self.horizon = int(horizon)
        self.spacing = None if spacing is None else float(spacing)
        self.scales = wavelengths
        self.fill_value = float(fill_value)
        self.shape: tuple[int, int] | None = None
        self.sums: np.ndarray | None = None  # (2, N, rings): forecast, observed power summed over fields
        self.fields = np.zeros(self.horizon, dtype=np.int64)
        self.filled = np.zeros(self.horizon, dtype=np.int64)

    @property
    def units(self) -> str:
        return "px" if self.spacing is None else "km"

    def update(self, forecast: Any, truth: Any) -> None:
        """Add a batch: ``forecast`` and ``truth`` (B, N, H, W) or (B, N, H, W, 1) in the data's units.

        Raises:
            ValueError: shapes that differ, several channels, a lead-time count other than ``horizon``,
                or a grid other than the first batch's.
        """
        f, o = _fields(forecast, "forecast"), _fields(truth, "truth")
        if f.shape != o.shape:
            raise ValueError(f"forecast {f.shape} and truth {o.shape} differ in shape")
        B, N, H, W = f.shape
        if self.horizon != N:
            raise ValueError(f"expected {self.horizon} lead times, got {N} (shape {f.shape})")
        if self.shape is None:
            self.shape = (H, W)
        elif self.shape != (H, W):
            raise ValueError(f"every batch must be on the first batch's {self.shape[0]}x{self.shape[1]} grid, "
                             f"got {H}x{W}")
        rapsd = _rapsd()
        for n in range(N):
            for b in range(B):
                seen = np.isfinite(o[b, n])
                if not seen.any():
                    continue
                missing = seen & ~np.isfinite(f[b, n])
                obs = np.where(seen, o[b, n], self.fill_value)
                fc = np.where(seen & ~missing, f[b, n], self.fill_value)
                pf, po = rapsd(fc, fft_method=np.fft), rapsd(obs, fft_method=np.fft)
                if self.sums is None:
                    self.sums = np.zeros((2, self.horizon, len(pf) - 1))
                self.sums[0, n] += pf[1:]
                self.sums[1, n] += po[1:]
                self.fields[n] += 1
                self.filled[n] += int(np.count_nonzero(missing))

    def wavelengths(self) -> np.ndarray:
        """The rings' wavelengths ``L d / r``, r = 1 .. L/2 - 1, in km or pixels (descending)."""
        if self.shape is None or self.sums is None:
            raise ValueError("no fields were added")
        L = max(self.shape)
        d = 1.0 if self.spacing is None else self.spacing
        return L * d / np.arange(1, self.sums.shape[2] + 1)

    def compute(self) -> dict[str, Any]:
        """The spectra and ratios per lead time over every field seen.

        Returns:
            ``{"units": "km"|"px", "spacing": d or None, "lead_times": N, "wavelength": [rings],
            "forecast": [N][rings], "observed": [N][rings]`` (mean power per ring in the data's units
            squared, None for a lead time without fields), ``"ratio": {"<scale>": [N]}`` (float or
            None), ``"scale_wavelength": {"<scale>": the ring's wavelength}``, ``"skipped_scales":
            {"<scale>": why}``, ``"fields": [N]``, ``"filled_forecast_pixels": [N]}``.

        Raises:
            ValueError: no field was added (or every truth was missing).
        """
        if self.sums is None or self.shape is None or not self.fields.any():
            raise ValueError("no fields were added (or the truth had no value in any)")
        wl = self.wavelengths()
        L = max(self.shape)
        d = 1.0 if self.spacing is None else self.spacing
        units = self.units
        ratio: dict[str, list[float | None]] = {}
        where: dict[str, float] = {}
        skipped: dict[str, str] = {}
        for s in self.scales:
            key = threshold_label(s)
            r = int(round(L * d / s))
            if s > L * d:
                skipped[key] = f"longer than the domain ({L * d:g} {units})"
                continue
            if r > len(wl):
                skipped[key] = f"shorter than the smallest resolved wavelength ({wl[-1]:.3g} {units})"
                continue
            where[key] = float(wl[r - 1])
            ratio[key] = [None if self.fields[n] == 0 or self.sums[1, n, r - 1] <= 0
                          else float(self.sums[0, n, r - 1] / self.sums[1, n, r - 1]) for n in range(self.horizon)]
        means = [[None if self.fields[n] == 0 else (self.sums[i, n] / self.fields[n]).tolist()
                  for n in range(self.horizon)] for i in range(2)]
        return {"units": units, "spacing": self.spacing, "lead_times": self.horizon, "wavelength": wl.tolist(),
                "forecast": means[0], "observed": means[1], "ratio": ratio, "scale_wavelength": where,
                "skipped_scales": skipped, "fields": self.fields.tolist(),
                "filled_forecast_pixels": self.filled.tolist()}


def power_spectra(forecast: Any, truth: Any, *, spacing: float | None = None,
                  scales: Sequence[float] = DEFAULT_SCALES, fill_value: float = 0.0) -> dict[str, Any]:
    """The spectra and ratios of one batch (B, N, H, W[, 1]) in one call; see :class:`SpectrumAccumulator`."""
    acc = SpectrumAccumulator(_fields(forecast, "forecast").shape[1], spacing=spacing, scales=scales,
                              fill_value=fill_value)
    acc.update(forecast, truth)
    return acc.compute()


def plot_spectra(path: str | Path, spectra: Mapping[str, Mapping[str, Any]], *, leads: Sequence[int] | None = None,
                 units: str = "") -> Path:
    """A PNG: power against wavelength (log-log, large scales left), one panel per lead time, the observed
    spectrum (black) beside each forecaster's.

    Args:
        spectra: ``{forecaster: SpectrumAccumulator.compute()}`` over the same truth (model and
            baselines); the observed spectrum is drawn from the first.
        leads: lead times to draw (1-based); default all up to 4, else 4 from the first to the last.
        units: the data's units, for the power axis.

    Raises:
        ValueError: no spectra, spectra on different wavelengths, or a lead time out of range.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    if not spectra:
        raise ValueError("plot_spectra() got no spectra")
    first = next(iter(spectra.values()))
    N = int(first["lead_times"])
    for who, s in spectra.items():
        if s["wavelength"] != first["wavelength"] or s["units"] != first["units"]:
            raise ValueError(f"{who}'s spectra are on other wavelengths than {next(iter(spectra))}'s")
    chosen = list(leads) if leads is not None else (
        list(range(1, N + 1)) if N <= 4 else sorted({int(round(x)) for x in np.linspace(1, N, 4)}))
    if not chosen or any(not 1 <= n <= N for n in chosen):
        raise ValueError(f"lead times to draw must lie in 1..{N}, got {chosen}")
    wl = np.asarray(first["wavelength"])
    fig, axes = plt.subplots(1, len(chosen), figsize=(4.2 * len(chosen), 3.6), squeeze=False, sharey=True)
    ticks = sorted({*first["scale_wavelength"].values(), float(wl[0]), float(wl[-1])})
    for ax, n in zip(axes[0], chosen, strict=True):
        for j, (who, s) in enumerate(spectra.items()):
            if s["forecast"][n - 1] is not None:
                ax.loglog(wl, _positive(s["forecast"][n - 1]), color=f"C{j}", lw=1.5, label=who)
        obs = first["observed"][n - 1]
        if obs is not None:  # drawn last, dashed: a forecaster that keeps the observed power shows beneath it
            ax.loglog(wl, _positive(obs), color="black", lw=1.5, ls="--", label="observed")
        for scale in first["scale_wavelength"].values():
            ax.axvline(scale, color="grey", lw=0.5, ls=":")
        ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.invert_xaxis()
        ax.set_xlabel(f"wavelength ({first['units']})")
        ax.set_title(f"lead time {n}")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel(f"power{f' ({units})²' if units else ''}")
    axes[0][-1].legend(fontsize=7)
    from predrnn.viz import save_figure

    return save_figure(fig, path)


def _positive(values: Sequence[float]) -> np.ndarray:
    """Power for a log axis: zeros (a constant field's rings) are not drawn."""
    a = np.asarray(values, dtype=np.float64)
    return np.where(a > 0, a, np.nan)


__all__ = ["DEFAULT_SCALES", "SpectrumAccumulator", "plot_spectra", "power_spectra"]
