"""PredRNN and PredRNN-V2: the Spatiotemporal LSTM cell and the stack with the zigzag memory.

Wang et al., "PredRNN: A Recurrent Neural Network for Spatiotemporal Predictive Learning",
TPAMI 2022, arXiv:2103.09504. Equation numbers refer to that paper (Eq. 3 is the ST-LSTM cell,
Eq. 5 the V2 cell with the increments dC, dM; Eq. 6 the decoupling loss, which lives in
:mod:`predrnn.losses`).

Where the paper and the authors' public code differ we follow the code, so their checkpoints and
numbers carry over:

* every convolution is bias-free and the forget gates get a constant +1.0;
* the input conv produces the seven x-terms in the order ``i, f, g, i', f', g', o`` and the
  output gate also sees ``W_o * [C_new, M_new]`` (a k x k conv, not a Hadamard peephole);
* optional layer norm normalises the whole stacked output of each conv, not each gate.

Module attribute names (``cell_list.{l}.conv_x.0``, ``conv_last``, ``adapter``) equal the
authors' state-dict keys, so their checkpoints load without renaming.

The model is pure: ``forward(frames, mask)`` takes frames in [0, 1] shaped (B, T, H, W, C) and
returns the T-1 next-frame predictions; it reads no environment and writes nothing. The device
and dtype come from the inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from predrnn.patching import patch, unpatch

FORGET_BIAS = 1.0


def _conv_block(c_in: int, c_out: int, k: int, layer_norm: bool, hw: tuple[int, int]) -> nn.Sequential:
    """A bias-free k x k conv, optionally followed by LayerNorm over its whole (c_out, H, W) output."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False)]
    if layer_norm:
        layers.append(nn.LayerNorm([c_out, *hw]))
    return nn.Sequential(*layers)


class SpatioTemporalLSTMCell(nn.Module):
    """ST-LSTM cell (Eq. 3); also returns the increments dC, dM that V2 decouples (Eq. 5).

    V1 and V2 compute the same states; V2 additionally uses dC = i . g and dM = i' . g'.

    Args:
        in_channels: channels of the input X (frame patches for layer 0, H of the layer below).
        num_hidden: width C of H, C and M.
        filter_size: kernel size k of every k x k conv.
        hw: spatial size (H/p, W/p) of the states; used only by layer norm.
        layer_norm: normalise each conv's stacked output.
    """

    def __init__(self, in_channels: int, num_hidden: int, filter_size: int, hw: tuple[int, int],
                 layer_norm: bool = False) -> None:
        super().__init__()
        C, k = num_hidden, filter_size
        self.num_hidden = C
        self.conv_x = _conv_block(in_channels, 7 * C, k, layer_norm, hw)  # W_x: i, f, g, i', f', g', o
        self.conv_h = _conv_block(C, 4 * C, k, layer_norm, hw)  # W_h: i, f, g, o
        self.conv_m = _conv_block(C, 3 * C, k, layer_norm, hw)  # W_m: i', f', g'
        self.conv_o = _conv_block(2 * C, C, k, layer_norm, hw)  # W_o on [C_new, M_new]
        self.conv_last = nn.Conv2d(2 * C, C, 1, bias=False)  # W_1x1 on [C_new, M_new]

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, m: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step. x: (B, C_in, H, W); h, c, m: (B, C, H, W). Returns H, C, M, dC, dM."""
        C = self.num_hidden
        i_x, f_x, g_x, i_x_p, f_x_p, g_x_p, o_x = torch.split(self.conv_x(x), C, dim=1)
        i_h, f_h, g_h, o_h = torch.split(self.conv_h(h), C, dim=1)
        i_m, f_m, g_m = torch.split(self.conv_m(m), C, dim=1)

        # Temporal memory C: the standard LSTM path along time within the layer.
        i = torch.sigmoid(i_x + i_h)
        f = torch.sigmoid(f_x + f_h + FORGET_BIAS)
        g = torch.tanh(g_x + g_h)
        delta_c = i * g  # (B, C, H, W)
        c_new = f * c + delta_c

        # Spatiotemporal memory M: arrives from the layer below (or the top layer at t-1).
        i_p = torch.sigmoid(i_x_p + i_m)
        f_p = torch.sigmoid(f_x_p + f_m + FORGET_BIAS)
        g_p = torch.tanh(g_x_p + g_m)
        delta_m = i_p * g_p
        m_new = f_p * m + delta_m

        # Output: both memories feed the output gate and, through a 1x1 conv, the hidden state.
        mem = torch.cat([c_new, m_new], dim=1)  # (B, 2C, H, W)
        o = torch.sigmoid(o_x + o_h + self.conv_o(mem))
        h_new = o * torch.tanh(self.conv_last(mem))
        return h_new, c_new, m_new, delta_c, delta_m


class PredRNN(nn.Module):
    """The stacked ST-LSTM with the zigzag memory flow; ``decouple=True`` gives PredRNN-V2.

    At each step t the input frame goes up through layers 0..L-1; M flows up through the layers
    and then from the top layer at t to the bottom layer at t+1; a 1x1 conv on the top H predicts
    frame t+1 in patch space. V2 adds the 1x1 ``adapter`` (C -> C) used only by the decoupling
    loss: it exists in training and is ignored at inference, so the forecaster does not grow.

    Args:
        num_hidden: widths of the L layers (all equal: M passes between layers).
        img_channel: channels of a frame.
        patch_size: space-to-depth factor p.
        filter_size: kernel size of the cell convs.
        img_height, img_width: frame size (any, divisible by p; used by layer norm).
        layer_norm: layer norm inside the cells.
        decouple: build the V2 adapter and return dC, dM for the decoupling loss.
    """

    def __init__(self, *, num_hidden: list[int], img_channel: int = 1, patch_size: int = 4,
                 filter_size: int = 5, img_height: int = 64, img_width: int = 64,
                 layer_norm: bool = False, decouple: bool = True) -> None:
        super().__init__()
        if len(set(num_hidden)) != 1:
            raise ValueError(f"PredRNN layers share one width, got {num_hidden}")
        self.num_layers = len(num_hidden)
        self.num_hidden = list(num_hidden)
        self.patch_size = patch_size
        self.img_channel = img_channel
        self.decouple = decouple
        C, p = num_hidden[0], patch_size
        hw = (img_height // p, img_width // p)
        frame_channels = p * p * img_channel
        self.cell_list = nn.ModuleList(
            SpatioTemporalLSTMCell(frame_channels if l == 0 else C, C, filter_size, hw, layer_norm)
            for l in range(self.num_layers)
        )
        self.conv_last = nn.Conv2d(C, frame_channels, 1, bias=False)
        if decouple:
            self.adapter = nn.Conv2d(C, C, 1, bias=False)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor, return_deltas: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Roll the model over a clip.

        Args:
            frames: (B, T, H, W, C) in [0, 1]. Frames the mask never selects may be anything finite.
            mask: (B, T-2) probabilities of feeding the true frame at steps t = 1..T-2 (column t-1);
                the input at step t is ``mask * frame_t + (1 - mask) * prediction_t``.
            return_deltas: also return the per-(step, layer) increments dC, dM (V2 training).

        Returns:
            Predictions of frames 1..T-1, shape (B, T-1, H, W, C); with ``return_deltas`` also the
            lists of dC and dM, each (T-1)*L tensors of shape (B, C, H/p, W/p).
        """
        x = patch(frames, self.patch_size).contiguous()  # (B, T, p*p*C_img, H/p, W/p)
        B, T, _, Hp, Wp = x.shape
        if mask.shape != (B, T - 2):
            raise ValueError(f"mask must have shape {(B, T - 2)} for {T} frames, got {tuple(mask.shape)}")
        mask = mask.to(x.dtype)
        zeros = x.new_zeros(B, self.num_hidden[0], Hp, Wp)
        h = [zeros] * self.num_layers
        c = [zeros] * self.num_layers
        memory = zeros  # M: the zigzag memory
        deltas_c: list[torch.Tensor] = []
        deltas_m: list[torch.Tensor] = []
        preds: list[torch.Tensor] = []
        x_gen = x[:, 0]
        for t in range(T - 1):
            if t == 0:
                net = x[:, 0]
            else:
                w = mask[:, t - 1].view(B, 1, 1, 1)
                net = w * x[:, t] + (1 - w) * x_gen
            for l, cell in enumerate(self.cell_list):
                h[l], c[l], memory, d_c, d_m = cell(net if l == 0 else h[l - 1], h[l], c[l], memory)
                if return_deltas:
                    deltas_c.append(d_c)
                    deltas_m.append(d_m)
            x_gen = self.conv_last(h[-1])  # (B, p*p*C_img, H/p, W/p)
            preds.append(x_gen)
        out = unpatch(torch.stack(preds, dim=1), self.patch_size, self.img_channel)
        if return_deltas:
            return out, deltas_c, deltas_m
        return out

    @torch.no_grad()
    def forecast(self, context: torch.Tensor, horizon: int) -> torch.Tensor:
        """Forecast ``horizon`` frames after ``context`` (B, T_in, H, W, C) with the test-time masks."""
        return rollout_forecast(self, context, horizon)


def rollout_forecast(model: nn.Module, context: torch.Tensor, horizon: int) -> torch.Tensor:
    """Test-time rollout of any next-frame model with the ``forward(frames, mask)`` interface.

    The context frames are fed as truth; afterwards the model's own predictions (mask 0).
    Returns (B, horizon, H, W, C).
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    B, t_in = context.shape[:2]
    frames = torch.cat([context, context.new_zeros(B, horizon, *context.shape[2:])], dim=1)
    mask = test_time_mask(B, t_in, t_in + horizon, device=context.device, dtype=context.dtype)
    preds = model(frames, mask)
    return preds[:, t_in - 1:]


def test_time_mask(batch: int, input_length: int, total_length: int, *, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, T-2): true frames for the context (steps 1..input_length-1), predictions after."""
    mask = torch.zeros(batch, total_length - 2, device=device, dtype=dtype)
    mask[:, : input_length - 1] = 1.0
    return mask


class Persistence(nn.Module):
    """The baseline every model must beat: the next frame equals the current input frame.

    Under the test-time mask this repeats the last context frame over the whole horizon.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_dummy", torch.zeros(()), persistent=False)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T = frames.shape[:2]
        preds = []
        net = frames[:, 0]
        for t in range(T - 1):
            if t > 0:
                w = mask[:, t - 1].to(frames.dtype).view(B, 1, 1, 1)
                net = w * frames[:, t] + (1 - w) * net
            preds.append(net)
        return torch.stack(preds, dim=1)

    @torch.no_grad()
    def forecast(self, context: torch.Tensor, horizon: int) -> torch.Tensor:
        return context[:, -1:].expand(-1, horizon, *context.shape[2:]).clone()


__all__ = ["PredRNN", "SpatioTemporalLSTMCell", "Persistence", "rollout_forecast", "test_time_mask"
           ]
