"""The model equals the independent float64 reference written from the equations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import random_official_state, ref_decouple, ref_forward

from predrnn.checkpoint import load_state_checked
from predrnn.losses import decoupling_loss
from predrnn.models import PredRNN

P, K, C_IMG, H, W, T = 2, 3, 2, 8, 12, 7  # non-square frames, two image channels


def _model(layers: int, width: int, layer_norm: bool, dtype=torch.float64, seed: int = 0):
    sd = random_official_state(layers=layers, width=width, k=K, p=P, img_channel=C_IMG, hw=(H // P, W // P),
                               layer_norm=layer_norm, seed=seed)
    model = PredRNN(num_hidden=[width] * layers, img_channel=C_IMG, patch_size=P, filter_size=K,
                    img_height=H, img_width=W, layer_norm=layer_norm, decouple=True).to(dtype)
    load_state_checked(model, sd)
    return model, sd


def _inputs(kind: str, B: int = 3, seed: int = 1):
    rng = np.random.default_rng(seed)
    frames = rng.random((B, T, H, W, C_IMG))
    if kind == "rss":  # 0/1 draws on encoder and decoder columns
        mask = (rng.random((B, T - 2)) < 0.5).astype(np.float64)
    elif kind == "ss":  # encoder true, decoder sampled
        mask = np.concatenate([np.ones((B, 2)), (rng.random((B, T - 4)) < 0.5)], axis=1).astype(np.float64)
    else:  # fractional probabilities exercise the mixing formula itself
        mask = rng.random((B, T - 2))
    return frames, mask


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("mask_kind", ["rss", "ss", "soft"])
def test_forward_matches_reference_float64(layer_norm, mask_kind):
    model, sd = _model(layers=3, width=4, layer_norm=layer_norm)
    frames, mask = _inputs(mask_kind)
    ref_pred, ref_deltas = ref_forward(sd, frames, mask, p=P, num_layers=3)
    pred, d_c, d_m = model(torch.from_numpy(frames), torch.from_numpy(mask), return_deltas=True)
    assert pred.shape == (3, T - 1, H, W, C_IMG)
    assert np.abs(pred.detach().numpy() - ref_pred).max() <= 1e-10
    assert len(d_c) == len(ref_deltas) == (T - 1) * 3
    for (rc, rm), c, m in zip(ref_deltas, d_c, d_m, strict=True):
        assert torch.allclose(c, rc, rtol=0, atol=1e-10) and torch.allclose(m, rm, rtol=0, atol=1e-10)
    dec = decoupling_loss(model.adapter, d_c, d_m)
    assert abs(float(dec) - float(ref_decouple(sd, ref_deltas))) <= 1e-10


@pytest.mark.parametrize("layer_norm", [False, True])
def test_forward_matches_reference_float32(layer_norm):
    model, sd = _model(layers=2, width=4, layer_norm=layer_norm, dtype=torch.float32)
    frames, mask = _inputs("rss")
    ref_pred, _ = ref_forward(sd, frames, mask, p=P, num_layers=2)
    pred = model(torch.from_numpy(frames).float(), torch.from_numpy(mask).float())
    assert np.abs(pred.detach().numpy() - ref_pred).max() <= 1e-5


def test_forecast_uses_test_time_masks():
    model, sd = _model(layers=2, width=4, layer_norm=False)
    frames, _ = _inputs("rss")
    t_in = 3
    mask = np.zeros((3, T - 2))
    mask[:, : t_in - 1] = 1.0
    ref_pred, _ = ref_forward(sd, frames, mask, p=P, num_layers=2)
    out = model.forecast(torch.from_numpy(frames[:, :t_in]), T - t_in)
    assert out.shape == (3, T - t_in, H, W, C_IMG)
    assert np.abs(out.numpy() - ref_pred[:, t_in - 1:]).max() <= 1e-10


def test_decoupling_gradient_reaches_adapter_and_cells():
    model, _ = _model(layers=2, width=4, layer_norm=False)
    frames, mask = _inputs("rss")
    _, d_c, d_m = model(torch.from_numpy(frames), torch.from_numpy(mask), return_deltas=True)
    decoupling_loss(model.adapter, d_c, d_m).backward()
    assert model.adapter.weight.grad is not None and model.adapter.weight.grad.abs().sum() > 0
    for cell in model.cell_list:
        assert cell.conv_x[0].weight.grad.abs().sum() > 0
        assert cell.conv_m[0].weight.grad.abs().sum() > 0
    # With true frames everywhere the output conv feeds no dC or dM: the term must not touch it.
    model.zero_grad(set_to_none=True)
    _, d_c, d_m = model(torch.from_numpy(frames), torch.ones(3, T - 2, dtype=torch.float64), return_deltas=True)
    decoupling_loss(model.adapter, d_c, d_m).backward()
    assert model.conv_last.weight.grad is None or model.conv_last.weight.grad.abs().sum() == 0
    assert model.adapter.weight.grad.abs().sum() > 0


def _swap_blocks(w: torch.Tensor, a: int, b: int, C: int) -> torch.Tensor:
    w = w.clone()
    w[a * C:(a + 1) * C], w[b * C:(b + 1) * C] = w[b * C:(b + 1) * C].clone(), w[a * C:(a + 1) * C].clone()
    return w


@pytest.mark.parametrize(("conv", "a", "b"), [("conv_x", 0, 1), ("conv_x", 2, 5), ("conv_h", 2, 3),
                                               ("conv_m", 0, 1)])
def test_reference_catches_swapped_gate_order(conv, a, b):
    """Mutation check: a model that reads two gates in swapped order must disagree with the reference."""
    model, sd = _model(layers=2, width=4, layer_norm=False)
    frames, mask = _inputs("rss")
    ref_pred, _ = ref_forward(sd, frames, mask, p=P, num_layers=2)
    mutant = dict(sd)
    key = f"cell_list.0.{conv}.0.weight"
    mutant[key] = _swap_blocks(sd[key], a, b, 4)
    load_state_checked(model, mutant)
    pred = model(torch.from_numpy(frames), torch.from_numpy(mask))
    assert np.abs(pred.detach().numpy() - ref_pred).max() > 1e-4


def test_authors_parameter_count():
    model = PredRNN(num_hidden=[128] * 4, img_channel=1, patch_size=4, filter_size=5)
    assert sum(p.numel() for p in model.parameters()) == 23_855_104
