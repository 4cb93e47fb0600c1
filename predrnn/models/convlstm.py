"""ConvLSTM baseline (Shi et al., NeurIPS 2015, arXiv:1506.04214) with PredRNN's interface.

Same patching, masks and bias-free convolutions with forget bias +1 as :mod:`predrnn.models.predrnn`,
so the two compare at equal budgets; the memory C moves only along time inside each layer.
"""

from __future__ import annotations

import torch
from torch import nn

from predrnn.models.predrnn import rollout_forecast
from predrnn.patching import patch, unpatch

FORGET_BIAS = 1.0


class ConvLSTMCell(nn.Module):
    def __init__(self, in_channels: int, num_hidden: int, filter_size: int) -> None:
        super().__init__()
        self.num_hidden = num_hidden
        k = filter_size
        self.conv_x = nn.Conv2d(in_channels, 4 * num_hidden, k, padding=k // 2, bias=False)  # i, f, g, o
        self.conv_h = nn.Conv2d(num_hidden, 4 * num_hidden, k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i_x, f_x, g_x, o_x = torch.split(self.conv_x(x), self.num_hidden, dim=1)
        i_h, f_h, g_h, o_h = torch.split(self.conv_h(h), self.num_hidden, dim=1)
        i = torch.sigmoid(i_x + i_h)
        f = torch.sigmoid(f_x + f_h + FORGET_BIAS)
        g = torch.tanh(g_x + g_h)
        o = torch.sigmoid(o_x + o_h)
        c_new = f * c + i * g
        h_new = o * torch.tanh(c_new)
        return h_new, c_new


class ConvLSTM(nn.Module):
    """Stacked ConvLSTM; layer widths may differ. ``forward(frames, mask)`` as in PredRNN."""

    decouple = False

    def __init__(self, *, num_hidden: list[int], img_channel: int = 1, patch_size: int = 4,
                 filter_size: int = 5, **_: object) -> None:
        super().__init__()
        self.num_hidden = list(num_hidden)
        self.patch_size = patch_size
        self.img_channel = img_channel
        frame_channels = patch_size * patch_size * img_channel
        widths = [frame_channels, *num_hidden]
        self.cell_list = nn.ModuleList(
            ConvLSTMCell(widths[l], widths[l + 1], filter_size) for l in range(len(num_hidden))
        )
        self.conv_last = nn.Conv2d(num_hidden[-1], frame_channels, 1, bias=False)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = patch(frames, self.patch_size)
        B, T, _, Hp, Wp = x.shape
        if mask.shape != (B, T - 2):
            raise ValueError(f"mask must have shape {(B, T - 2)} for {T} frames, got {tuple(mask.shape)}")
        mask = mask.to(x.dtype)
        h = [x.new_zeros(B, w, Hp, Wp) for w in self.num_hidden]
        c = [x.new_zeros(B, w, Hp, Wp) for w in self.num_hidden]
        preds = []
        x_gen = x[:, 0]
        for t in range(T - 1):
            if t == 0:
                net = x[:, 0]
            else:
                w = mask[:, t - 1].view(B, 1, 1, 1)
                net = w * x[:, t] + (1 - w) * x_gen
            for l, cell in enumerate(self.cell_list):
                h[l], c[l] = cell(net if l == 0 else h[l - 1], h[l], c[l])
            x_gen = self.conv_last(h[-1])
            preds.append(x_gen)
        return unpatch(torch.stack(preds, dim=1), self.patch_size, self.img_channel)

    @torch.no_grad()
    def forecast(self, context: torch.Tensor, horizon: int) -> torch.Tensor:
        return rollout_forecast(self, context, horizon)
