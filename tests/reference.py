"""An independent float64 reference of PredRNN(-V2), written gate by gate from the equations.

It shares no code with ``predrnn.models``: patching is explicit index arithmetic in NumPy, each
gate has its own convolution with its slice of the weights, layer norm is written out, and the
decoupling loss computes cosines by hand. Parameters come as a flat state dict in the authors'
key layout (``cell_list.{l}.conv_x.0.weight`` ...).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

X_GATES = ("i", "f", "g", "i_p", "f_p", "g_p", "o")
H_GATES = ("i", "f", "g", "o")
M_GATES = ("i_p", "f_p", "g_p")


def ref_patch(frames: np.ndarray, p: int) -> np.ndarray:
    """(B, T, H, W, C) -> (B, T, p*p*C, H/p, W/p) with channel (dy*p + dx)*C + c, by loops."""
    B, T, H, W, C = frames.shape
    out = np.zeros((B, T, p * p * C, H // p, W // p), dtype=frames.dtype)
    for dy in range(p):
        for dx in range(p):
            for c in range(C):
                out[:, :, (dy * p + dx) * C + c] = frames[:, :, dy::p, dx::p, c]
    return out


def ref_unpatch(patches: np.ndarray, p: int, C: int) -> np.ndarray:
    B, T, _, Hp, Wp = patches.shape
    out = np.zeros((B, T, Hp * p, Wp * p, C), dtype=patches.dtype)
    for dy in range(p):
        for dx in range(p):
            for c in range(C):
                out[:, :, dy::p, dx::p, c] = patches[:, :, (dy * p + dx) * C + c]
    return out


def _conv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, w, padding=w.shape[-1] // 2)


def _layer_norm(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalise each sample over all of (channels, H, W), then the elementwise affine."""
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    var = ((y - mean) ** 2).mean(dim=(1, 2, 3), keepdim=True)
    return (y - mean) / torch.sqrt(var + eps) * weight + bias


def _gates(params: dict, prefix: str, inp: torch.Tensor, names: tuple[str, ...], C: int) -> dict:
    w = params[f"{prefix}.0.weight"]
    ln_w = params.get(f"{prefix}.1.weight")
    if ln_w is None:  # one convolution per gate, with that gate's rows of the weight
        return {n: _conv(inp, w[k * C:(k + 1) * C]) for k, n in enumerate(names)}
    stacked = _layer_norm(_conv(inp, w), ln_w, params[f"{prefix}.1.bias"])
    return {n: stacked[:, k * C:(k + 1) * C] for k, n in enumerate(names)}


def ref_cell(params: dict, l: int, x, h, c, m, C: int):
    """Eq. (3)/(5): returns H, C, M, dC, dM of layer ``l``."""
    pre = f"cell_list.{l}"
    gx = _gates(params, f"{pre}.conv_x", x, X_GATES, C)
    gh = _gates(params, f"{pre}.conv_h", h, H_GATES, C)
    gm = _gates(params, f"{pre}.conv_m", m, M_GATES, C)
    i = torch.sigmoid(gx["i"] + gh["i"])
    f = torch.sigmoid(gx["f"] + gh["f"] + 1.0)
    g = torch.tanh(gx["g"] + gh["g"])
    d_c = i * g
    c_new = f * c + d_c
    i_p = torch.sigmoid(gx["i_p"] + gm["i_p"])
    f_p = torch.sigmoid(gx["f_p"] + gm["f_p"] + 1.0)
    g_p = torch.tanh(gx["g_p"] + gm["g_p"])
    d_m = i_p * g_p
    m_new = f_p * m + d_m
    both = torch.cat([c_new, m_new], dim=1)
    w_o = params[f"{pre}.conv_o.0.weight"]
    o_term = _conv(both, w_o)
    if f"{pre}.conv_o.1.weight" in params:
        o_term = _layer_norm(o_term, params[f"{pre}.conv_o.1.weight"], params[f"{pre}.conv_o.1.bias"])
    o = torch.sigmoid(gx["o"] + gh["o"] + o_term)
    h_new = o * torch.tanh(_conv(both, params[f"{pre}.conv_last.weight"]))
    return h_new, c_new, m_new, d_c, d_m


def _rollout(params: dict, frames: np.ndarray, mask: np.ndarray, *, p: int, num_layers: int):
    """Patch-space inputs (B, T, p*p*C, H/p, W/p), predictions of frames 1..T-1 (same layout, torch,
    differentiable in ``params``) and the per-(step, layer) increments."""
    B, T, H, W, Cimg = frames.shape
    x = torch.from_numpy(ref_patch(frames.astype(np.float64), p))
    mask_t = torch.from_numpy(mask.astype(np.float64))
    C = params["cell_list.0.conv_h.0.weight"].shape[1]
    zeros = torch.zeros(B, C, H // p, W // p, dtype=torch.float64)
    h = [zeros.clone() for _ in range(num_layers)]
    c = [zeros.clone() for _ in range(num_layers)]
    m = zeros.clone()
    deltas = []
    preds = []
    prev_pred = None
    for t in range(T - 1):
        if t == 0:
            net = x[:, 0]
        else:
            w = mask_t[:, t - 1][:, None, None, None]
            net = w * x[:, t] + (1 - w) * prev_pred
        inp = net
        for l in range(num_layers):
            h[l], c[l], m, d_c, d_m = ref_cell(params, l, inp, h[l], c[l], m, C)
            deltas.append((d_c, d_m))
            inp = h[l]
        prev_pred = _conv(h[-1], params["conv_last.weight"])
        preds.append(prev_pred)
    return x, torch.stack(preds, 1), deltas


def ref_forward(params: dict, frames: np.ndarray, mask: np.ndarray, *, p: int, num_layers: int):
    """Predictions (B, T-1, H, W, C) and the per-(step, layer) increments, in float64."""
    _, preds, deltas = _rollout(params, frames, mask, p=p, num_layers=num_layers)
    return ref_unpatch(preds.detach().numpy(), p, frames.shape[-1]), deltas


def ref_train_loss(params: dict, frames: np.ndarray, mask: np.ndarray, *, p: int, num_layers: int,
                   beta: float) -> torch.Tensor:
    """PredRNN-V2's training objective: MSE over every predicted element (patch space holds the same
    elements as pixel space) plus ``beta`` times the decoupling term, with gradients through dC and dM
    alike; differentiable in ``params``."""
    x, preds, deltas = _rollout(params, frames, mask, p=p, num_layers=num_layers)
    return ((preds - x[:, 1:]) ** 2).mean() + beta * ref_decouple(params, deltas)


def ref_decouple(params: dict, deltas) -> torch.Tensor:
    """Mean over terms of mean over (sample, channel) of |cos| between adapted dC and dM."""
    a_w = params["adapter.weight"]
    terms = []
    for d_c, d_m in deltas:
        a = _conv(d_c, a_w).flatten(2)
        b = _conv(d_m, a_w).flatten(2)
        cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
        terms.append(cos.abs().mean())
    return torch.stack(terms).mean()


def random_official_state(*, layers: int, width: int, k: int, p: int, img_channel: int, hw: tuple[int, int],
                          v2: bool = True, layer_norm: bool = False, seed: int = 0,
                          scale: float = 0.2) -> dict[str, torch.Tensor]:
    """A random state dict in the authors' key layout, built from the spec's shapes."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale)

    C, cin0 = width, p * p * img_channel
    sd = {}
    for l in range(layers):
        cin = cin0 if l == 0 else C
        for name, shape in (("conv_x", (7 * C, cin, k, k)), ("conv_h", (4 * C, C, k, k)),
                            ("conv_m", (3 * C, C, k, k)), ("conv_o", (C, 2 * C, k, k))):
            sd[f"cell_list.{l}.{name}.0.weight"] = rnd(*shape)
            if layer_norm:
                sd[f"cell_list.{l}.{name}.1.weight"] = 1 + rnd(shape[0], *hw)
                sd[f"cell_list.{l}.{name}.1.bias"] = rnd(shape[0], *hw)
        sd[f"cell_list.{l}.conv_last.weight"] = rnd(C, 2 * C, 1, 1)
    sd["conv_last.weight"] = rnd(cin0, C, 1, 1)
    if v2:
        sd["adapter.weight"] = rnd(C, C, 1, 1)
    return sd
