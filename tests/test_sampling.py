import math

import pytest
import torch

from predrnn.config import SamplingConfig
from predrnn.sampling import (
    mask_from_probabilities,
    probabilities,
    rss_decoder_probability,
    rss_encoder_probability,
    sampling_mask,
    ss_probability,
)

S1, S2, ALPHA = 25_000, 50_000, 2_500.0


@pytest.mark.parametrize("curve", ["exp", "linear", "sigmoid"])
def test_rss_breakpoints(curve):
    f = lambda it: rss_encoder_probability(it, s1=S1, s2=S2, alpha=ALPHA, curve=curve)  # noqa: E731
    assert f(1) == 0.5 and f(S1 - 1) == 0.5
    assert f(S1) == pytest.approx(0.5, abs=1e-12)
    assert f(S2) == 1.0 and f(10**6) == 1.0
    values = [f(it) for it in range(S1, S2, 997)]
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))  # monotone rise


def test_rss_closed_forms_inside_the_ramp():
    it = S1 + 3_000
    assert rss_encoder_probability(it, s1=S1, s2=S2, alpha=ALPHA) == pytest.approx(1 - 0.5 * math.exp(-3_000 / ALPHA))
    assert rss_encoder_probability(it, s1=S1, s2=S2, alpha=ALPHA, curve="linear") == pytest.approx(
        0.5 + 0.5 * 3_000 / 25_000)
    mid = (S1 + S2) // 2
    assert rss_encoder_probability(mid, s1=S1, s2=S2, alpha=ALPHA, curve="sigmoid") == pytest.approx(0.75)
    assert rss_decoder_probability(S1 - 1, s1=S1, s2=S2) == 0.5
    assert rss_decoder_probability(S1, s1=S1, s2=S2) == 0.5
    assert rss_decoder_probability(mid, s1=S1, s2=S2) == pytest.approx(0.25)
    assert rss_decoder_probability(S2, s1=S1, s2=S2) == 0.0


def test_ss_closed_form():
    assert ss_probability(1, start=1.0, rate=2e-5, stop=50_000) == pytest.approx(1 - 2e-5)
    assert ss_probability(25_000, start=1.0, rate=2e-5, stop=50_000) == pytest.approx(0.5)
    assert ss_probability(49_999, start=1.0, rate=2e-5, stop=50_000) == pytest.approx(2e-5)
    assert ss_probability(50_000, start=1.0, rate=2e-5, stop=50_000) == 0.0
    assert ss_probability(40_000, start=1.0, rate=1e-4, stop=50_000) == 0.0  # clamped, never negative


def test_probabilities_per_scheme():
    assert probabilities(10, SamplingConfig(scheme="ss")) == (1.0, pytest.approx(1 - 2e-4))
    assert probabilities(10, SamplingConfig(scheme="none")) == (1.0, 0.0)
    assert probabilities(10, SamplingConfig()) == (0.5, 0.5)


def test_mask_layout_and_rates():
    g = torch.Generator().manual_seed(0)
    m = mask_from_probabilities(0.9, 0.1, batch=4000, input_length=10, total_length=20, generator=g)
    assert m.shape == (4000, 18) and set(m.unique().tolist()) <= {0.0, 1.0}
    assert m[:, :9].mean().item() == pytest.approx(0.9, abs=0.01)
    assert m[:, 9:].mean().item() == pytest.approx(0.1, abs=0.01)
    # SS: encoder columns always true.
    m2, r_eta, eta = sampling_mask(1, SamplingConfig(scheme="ss"), batch=64, input_length=10, total_length=20,
                                   generator=g)
    assert r_eta == 1.0 and bool((m2[:, :9] == 1).all())


def test_masks_are_reproducible_from_the_generator():
    cfg = SamplingConfig()
    a, *_ = sampling_mask(30_000, cfg, batch=8, input_length=10, total_length=20,
                          generator=torch.Generator().manual_seed(7))
    b, *_ = sampling_mask(30_000, cfg, batch=8, input_length=10, total_length=20,
                          generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
