"""The blur measure: power spectra of forecast and truth, their ratio at named scales, golden values.

A Gaussian blur of width sigma (pixels) multiplies the Fourier transform by exp(-2 pi^2 sigma^2 f^2),
so the power at wavelength lambda keeps exp(-4 pi^2 sigma^2 / lambda^2) of the truth's: with sigma = 1,
0.085 at 4 px, 0.54 at 8 px, 0.86 at 16 px, 0.96 at 32 px, 0.99 at 64 px. On white noise every ring
holds power at all its directions alike, so the measured ratio is that factor averaged over the ring.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from predrnn.spectra import SpectrumAccumulator, plot_spectra, power_spectra


def noise(B: int = 4, N: int = 3, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((B, N, size, size))


def blurred(x: np.ndarray, sigma: float) -> np.ndarray:
    """Each field blurred on the torus (``wrap``: a circulant filter, exact in Fourier space)."""
    return gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="wrap")


def test_a_forecast_equal_to_the_truth_has_ratio_one_at_every_scale_and_lead():
    truth = noise()
    truth[0, 1, 10:20, 5:30] = np.nan  # missing truth is filled alike in both
    out = power_spectra(truth.copy(), truth, scales=(4, 8, 16, 32, 64))
    assert set(out["ratio"]) == {"4", "8", "16", "32", "64"}
    for values in out["ratio"].values():
        assert values == [1.0, 1.0, 1.0]
    assert out["units"] == "px" and out["fields"] == [4, 4, 4] and out["filled_forecast_pixels"] == [0, 0, 0]


def test_a_blurred_forecast_loses_power_at_small_scales_only_golden():
    truth = noise(seed=1)
    out = power_spectra(blurred(truth, 1.0), truth, scales=(4, 8, 16, 32, 64))
    for key, lam in (("4", 4), ("8", 8), ("16", 16), ("32", 32), ("64", 64)):
        golden = math.exp(-4 * math.pi**2 / lam**2)
        assert np.allclose(out["ratio"][key], golden, atol=0.04), (key, out["ratio"][key], golden)
    assert all(r < 0.6 for r in out["ratio"]["8"]) and all(r > 0.97 for r in out["ratio"]["64"])
    # blurring more loses more, at every scale
    more = power_spectra(blurred(truth, 2.0), truth, scales=(8, 16))
    assert all(m < r for m, r in zip(more["ratio"]["8"], out["ratio"]["8"], strict=True))


def test_scales_in_km_and_scales_beyond_the_domain_are_skipped():
    truth = noise(B=1, N=2)
    out = power_spectra(blurred(truth, 1.0), truth, spacing=2.0, scales=(2, 8, 16, 32, 64, 128, 256))
    assert out["units"] == "km" and out["spacing"] == 2.0
    assert list(out["ratio"]) == ["8", "16", "32", "64", "128"]
    assert "longer than the domain (128 km)" in out["skipped_scales"]["256"]
    assert "shorter than the smallest" in out["skipped_scales"]["2"]
    assert out["scale_wavelength"]["8"] == pytest.approx(8.0) and out["scale_wavelength"]["128"] == 128.0
    assert out["wavelength"][0] == 128.0 and len(out["wavelength"]) == 31  # rings 1..31 of a 64-px grid
    # 8 km is 4 px: the blur's golden value at 4 px
    assert np.allclose(out["ratio"]["8"], math.exp(-4 * math.pi**2 / 16), atol=0.04)


def test_missing_forecast_is_never_a_perfect_one():
    truth = noise(B=2, N=2)
    holes = truth.copy()
    holes[:, :, 16:48, 16:48] = np.nan  # the forecast has no value where the truth has one
    out = power_spectra(holes, truth)
    assert out["filled_forecast_pixels"] == [2 * 32 * 32] * 2
    assert all(r < 0.9 for values in out["ratio"].values() for r in values)
    nothing = power_spectra(np.full_like(truth, np.nan), truth)
    assert all(r == 0.0 for values in nothing["ratio"].values() for r in values)
    # a field whose truth has no value is skipped, not scored
    gone = truth.copy()
    gone[1, 0] = np.nan
    assert power_spectra(truth, gone)["fields"] == [1, 2]


def test_batches_accumulate_as_one_ratio_of_sums_and_take_5d_and_torch():
    truth = noise(B=4, N=2)
    fc = blurred(truth, 1.0)
    acc = SpectrumAccumulator(2)
    acc.update(torch.from_numpy(fc[:1, ..., None]), torch.from_numpy(truth[:1, ..., None]))
    acc.update(fc[1:], truth[1:])
    one = power_spectra(fc, truth)
    got = acc.compute()
    for key in one["ratio"]:
        np.testing.assert_allclose(got["ratio"][key], one["ratio"][key], rtol=1e-12)
    np.testing.assert_allclose(got["observed"], one["observed"], rtol=1e-12)


def test_refusals():
    x = noise(B=1, N=2)
    with pytest.raises(ValueError, match="single-channel"):
        power_spectra(np.stack([x, x], axis=-1), np.stack([x, x], axis=-1))
    with pytest.raises(ValueError, match="differ in shape"):
        power_spectra(x, x[:, :1])
    with pytest.raises(ValueError, match="expected 3 lead times"):
        SpectrumAccumulator(3).update(x, x)
    with pytest.raises(ValueError, match="positive number of km"):
        SpectrumAccumulator(2, spacing=0.0)
    with pytest.raises(ValueError, match="no fields"):
        SpectrumAccumulator(2).compute()


def test_the_plot_draws_every_forecaster_against_the_observed_spectrum(tmp_path):
    truth = noise(B=2, N=6)
    spectra = {"model": power_spectra(blurred(truth, 1.5), truth, spacing=1.0),
               "extrapolation": power_spectra(truth, truth, spacing=1.0),
               "sprog": power_spectra(blurred(truth, 3.0), truth, spacing=1.0)}
    path = plot_spectra(tmp_path / "spectra" / "spectra.png", spectra, units="mm/h")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(ValueError, match="1..6"):
        plot_spectra(tmp_path / "bad.png", spectra, leads=[7])
