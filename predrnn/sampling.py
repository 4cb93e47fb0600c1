"""Sampling schedules: the probability of feeding the TRUE frame, as pure functions of the iteration.

Reverse scheduled sampling (RSS, PredRNN-V2, arXiv:2103.09504 section 4.2) raises the encoder's
probability ``r_eta`` from 0.5 to 1 between ``s1`` and ``s2``, while scheduled sampling (SS) lowers
the decoder's ``eta`` from 0.5 to 0. Plain SS (PredRNN V1) lowers ``eta`` from ``start`` by ``rate``
per iteration until ``stop`` and keeps the encoder on true frames.

Iterations are counted from 1 as in the authors' trainer. Because every value is a closed form of
the global iteration, a resumed run reproduces the schedule exactly.

Mask layout: ``(B, T-2)``, column ``t-1`` for input step ``t = 1..T-2``; the first
``input_length - 1`` columns are encoder steps, the rest decoder steps. One Bernoulli draw per
(sample, step), constant over space and channels, all drawn in one call from a passed generator.
"""

from __future__ import annotations

import math

import torch

from predrnn.config import SamplingConfig


def rss_encoder_probability(it: int, *, s1: int, s2: int, alpha: float, curve: str = "exp") -> float:
    """``r_eta``: 0.5 before ``s1``, rising to 1 between ``s1`` and ``s2``, 1 from ``s2`` on.

    ``exp`` is the authors' curve ``1 - 0.5 exp(-(it - s1)/alpha)`` (which reaches 1 only
    asymptotically, then jumps to exactly 1 at ``s2``, as in their code); ``linear`` goes straight
    from 0.5 to 1; ``sigmoid`` is a logistic curve centred between ``s1`` and ``s2`` with scale
    ``alpha``, rescaled to equal 0.5 at ``s1`` and 1 at ``s2``.
    """
    if it < s1:
        return 0.5
    if it >= s2:
        return 1.0
    if curve == "exp":
        return 1.0 - 0.5 * math.exp(-(it - s1) / alpha)
    if curve == "linear":
        return 0.5 + 0.5 * (it - s1) / (s2 - s1)
    if curve == "sigmoid":
        mid = 0.5 * (s1 + s2)

        def logistic(v: float) -> float:
            return 1.0 / (1.0 + math.exp(-(v - mid) / alpha))

        lo, hi = logistic(s1), logistic(s2)
        return 0.5 + 0.5 * (logistic(it) - lo) / (hi - lo)
    raise ValueError(f"unknown RSS curve {curve!r}; use exp, linear or sigmoid")


def rss_decoder_probability(it: int, *, s1: int, s2: int) -> float:
    """``eta`` under RSS: 0.5 before ``s1``, linearly down to 0 at ``s2``, 0 after."""
    if it < s1:
        return 0.5
    if it >= s2:
        return 0.0
    return 0.5 - 0.5 * (it - s1) / (s2 - s1)


def ss_probability(it: int, *, start: float, rate: float, stop: int) -> float:
    """``eta`` under plain SS after iteration ``it``: ``start - rate*it`` (>= 0) until ``stop``, then 0."""
    if it >= stop:
        return 0.0
    return max(0.0, start - rate * it)


def probabilities(it: int, cfg: SamplingConfig) -> tuple[float, float]:
    """``(r_eta, eta)`` for the encoder and decoder steps at global iteration ``it``."""
    if cfg.scheme == "rss":
        r_eta = rss_encoder_probability(it, s1=cfg.r_sampling_step_1, s2=cfg.r_sampling_step_2,
                                        alpha=cfg.r_exp_alpha, curve=cfg.rss_curve)
        eta = rss_decoder_probability(it, s1=cfg.r_sampling_step_1, s2=cfg.r_sampling_step_2)
        return r_eta, eta
    if cfg.scheme == "ss":
        return 1.0, ss_probability(it, start=cfg.sampling_start_value, rate=cfg.sampling_changing_rate,
                                   stop=cfg.sampling_stop_iter)
    if cfg.scheme == "none":
        return 1.0, 0.0
    raise ValueError(f"unknown sampling scheme {cfg.scheme!r}")


def mask_from_probabilities(r_eta: float, eta: float, *, batch: int, input_length: int, total_length: int,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw the (B, T-2) 0/1 mask: encoder columns true with prob ``r_eta``, decoder with ``eta``."""
    n_enc, n_dec = input_length - 1, total_length - input_length - 1
    thresholds = torch.tensor([r_eta] * n_enc + [eta] * n_dec, dtype=torch.float32)
    u = torch.rand(batch, n_enc + n_dec, generator=generator)
    return (u < thresholds).to(torch.float32)


def sampling_mask(it: int, cfg: SamplingConfig, *, batch: int, input_length: int, total_length: int,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, float, float]:
    """The training mask at iteration ``it`` and the ``(r_eta, eta)`` it was drawn with."""
    r_eta, eta = probabilities(it, cfg)
    mask = mask_from_probabilities(r_eta, eta, batch=batch, input_length=input_length,
                                   total_length=total_length, generator=generator)
    return mask, r_eta, eta
