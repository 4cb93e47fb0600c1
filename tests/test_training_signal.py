"""PredRNN-V2's training signal reaches the weights as the paper defines it: the prediction MSE plus
beta times the decoupling term, through both memories' increments, under the schedule's sampling mask.

The update of one real ``train_step`` (plain SGD, learning rate 1, so the update is minus the
gradient) is compared with the gradient of the independent float64 reference objective; the training
loop's own iteration is checked to feed the schedule's mask.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import random_official_state, ref_train_loss

from predrnn.checkpoint import load_state_checked
from predrnn.models import PredRNN
from predrnn.steps import train_step

P, K, C_IMG, H, W, T, LAYERS, WIDTH = 2, 3, 1, 8, 8, 6, 2, 4


def _model_and_state():
    sd = random_official_state(layers=LAYERS, width=WIDTH, k=K, p=P, img_channel=C_IMG, hw=(H // P, W // P),
                               layer_norm=False, seed=3)
    model = PredRNN(num_hidden=[WIDTH] * LAYERS, img_channel=C_IMG, patch_size=P, filter_size=K,
                    img_height=H, img_width=W, layer_norm=False, decouple=True).to(torch.float64)
    load_state_checked(model, sd)
    return model, sd


@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_one_train_step_follows_the_gradient_of_the_v2_objective(beta):
    model, sd = _model_and_state()
    rng = np.random.default_rng(0)
    frames = rng.random((3, T, H, W, C_IMG))
    mask = np.array([[1, 0, 1, 0], [0, 0, 1, 1], [1, 1, 0, 0]], np.float64)  # true and predicted inputs
    params = {k: v.detach().clone().to(torch.float64).requires_grad_(True) for k, v in sd.items()}
    loss = ref_train_loss(params, frames, mask, p=P, num_layers=LAYERS, beta=beta)
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True), strict=True))

    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    res = train_step(model, torch.optim.SGD(model.parameters(), lr=1.0), torch.from_numpy(frames),
                     torch.from_numpy(mask), beta=beta)
    assert res.loss == pytest.approx(float(loss), rel=1e-6)
    moved = 0
    for name, p in model.named_parameters():
        want = grads[name] if grads[name] is not None else torch.zeros_like(p)
        torch.testing.assert_close(before[name] - p.detach(), want, rtol=1e-4, atol=1e-9, msg=name)
        moved += int(want.abs().sum() > 0)
    # the adapter moves only through the decoupling term
    assert (grads["adapter.weight"] is not None and grads["adapter.weight"].abs().sum() > 0) == (beta > 0)
    assert moved >= len(grads) - (0 if beta > 0 else 1)


def test_the_training_loop_feeds_the_schedules_mask(monkeypatch):
    """An iteration of the loop hands ``train_step`` the mask of the sampling schedule (reverse scheduled
    sampling here: encoder inputs partly replaced by predictions), not an all-true mask."""
    from predrnn.config import load_config
    from predrnn.data.batches import mask_generator
    from predrnn.sampling import sampling_mask
    from predrnn.train import rank_loop as loop

    cfg = load_config("quick", overrides=["data.img_height=8", "data.img_width=8", "data.input_length=3",
                                          "data.total_length=6", "model.patch_size=2", "model.num_hidden=[4]",
                                          "model.filter_size=3", "optim.batch_size=4"])
    seen: list[torch.Tensor] = []

    def spy(model, optimizer, frames, mask, **kwargs):
        seen.append(mask.clone())
        assert kwargs["beta"] == cfg.optim.decouple_beta
        return loop.StepResult(0.0, 0.0, 0.0)

    monkeypatch.setattr(loop, "train_step", spy)
    clips = torch.rand(8, 6, 8, 8, 1)
    it = 60  # early in the schedule: r_eta ~ 0.5, so the encoder part of the mask is mixed
    res, r_eta, eta = loop.train_iteration(None, None, clips, it, cfg, rank=1, batch=4)
    want, want_r, want_e = sampling_mask(it, cfg.sampling, batch=4, input_length=3, total_length=6,
                                         generator=mask_generator(cfg.optim.seed, 1, it))
    assert (r_eta, eta) == (want_r, want_e) and 0 < r_eta < 1
    assert torch.equal(seen[0], want)
    assert not bool(seen[0].all()) and bool(seen[0].any())
