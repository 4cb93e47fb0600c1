"""Behaviour: equivariance, determinism, the authors' reverse step, and learning that beats persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from predrnn.config import SamplingConfig
from predrnn.models import ConvLSTM, Persistence, PredRNN
from predrnn.sampling import sampling_mask
from predrnn.steps import evaluate, train_step


def _moving_squares(n: int, T: int, size: int, seed: int, velocities=(-1, 0, 1)) -> torch.Tensor:
    """Clips of one 3x3 bright square moving with a constant velocity (possibly zero)."""
    rng = np.random.default_rng(seed)
    clips = np.zeros((n, T, size, size, 1), np.float32)
    for i in range(n):
        vy, vx = rng.choice(velocities, 2)
        y, x = rng.integers(T - 1, size - 3 - (T - 1) + 1, 2)
        for t in range(T):
            clips[i, t, y + vy * t:y + vy * t + 3, x + vx * t:x + vx * t + 3] = 1.0
    return torch.from_numpy(clips)


def test_shift_by_whole_patches_shifts_the_prediction():
    torch.manual_seed(0)
    model = PredRNN(num_hidden=[4, 4], patch_size=4, filter_size=3, img_height=128, img_width=128).double()
    frames = torch.zeros(1, 4, 128, 128, 1, dtype=torch.float64)
    frames[:, :, 60:68, 60:68] = torch.rand(1, 4, 8, 8, 1, dtype=torch.float64)
    mask = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    with torch.no_grad():
        base = model(frames, mask)
        shifted = model(torch.roll(frames, shifts=(8, -4), dims=(2, 3)), mask)
    assert base.abs().max() > 0
    assert torch.allclose(shifted, torch.roll(base, shifts=(8, -4), dims=(2, 3)), atol=1e-12)


def _train(model, data, iters, *, beta=0.0, reverse=False, seed=0, lr=3e-3, sampling=None):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sampling = sampling or SamplingConfig(scheme="ss", sampling_changing_rate=1.0 / iters, sampling_stop_iter=iters)
    T = data.shape[1]
    losses = []
    for it in range(1, iters + 1):
        idx = torch.randint(0, data.shape[0], (8,), generator=g)
        mask, _, _ = sampling_mask(it, sampling, batch=8, input_length=T // 2, total_length=T, generator=g)
        losses.append(train_step(model, opt, data[idx], mask, beta=beta, reverse_input=reverse).loss)
    return losses, opt


def test_training_is_deterministic_on_cpu():
    data = _moving_squares(16, 6, 16, seed=1)
    params = []
    for _ in range(2):
        torch.manual_seed(3)
        model = PredRNN(num_hidden=[4], patch_size=2, filter_size=3, img_height=16, img_width=16)
        losses, _ = _train(model, data, 3, beta=0.1, reverse=True, sampling=SamplingConfig(
            r_sampling_step_1=1, r_sampling_step_2=3, r_exp_alpha=1.0))
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(params[0], params[1])


def test_reverse_input_takes_a_second_step_on_the_reversed_clip():
    torch.manual_seed(0)
    model = PredRNN(num_hidden=[4], patch_size=2, filter_size=3, img_height=16, img_width=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    frames = _moving_squares(2, 6, 16, seed=0)
    train_step(model, opt, frames, torch.ones(2, 4), beta=0.1, reverse_input=True)
    steps = {int(s["step"]) for s in opt.state.values()}
    assert steps == {2}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["predrnn_v2", "convlstm"])
def test_trained_model_beats_persistence_and_keeps_static_clips_static(arch):
    T, size = 8, 24
    train = _moving_squares(256, T, size, seed=0)
    test = _moving_squares(32, T, size, seed=1, velocities=(-1, 1))
    torch.manual_seed(0)
    if arch == "convlstm":
        model = ConvLSTM(num_hidden=[16, 16], patch_size=2, filter_size=3)
    else:
        model = PredRNN(num_hidden=[16, 16], patch_size=2, filter_size=3, img_height=size, img_width=size)
    losses, _ = _train(model, train, 250, beta=0.1 if arch == "predrnn_v2" else 0.0)
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    res = evaluate(model, [test[:16], test[16:]], T // 2, with_ssim=False)
    assert res["model"]["mse"] < 0.6 * res["persistence"]["mse"], res
    static = _moving_squares(8, T, size, seed=2, velocities=(0,))
    out = model.forecast(static[:, : T // 2], T // 2)
    moving_pers = res["persistence"]["mse"]
    static_err = ((out.clamp(0, 1) - static[:, T // 2:]) ** 2).sum(dim=(2, 3, 4)).mean().item()
    assert static_err < 0.3 * moving_pers


def test_persistence_repeats_the_last_context_frame():
    clips = torch.rand(2, 6, 4, 4, 1)
    out = Persistence().forecast(clips[:, :3], 3)
    assert torch.equal(out, clips[:, 2:3].expand(-1, 3, -1, -1, -1))
