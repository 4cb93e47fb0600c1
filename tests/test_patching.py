import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import ref_patch

from predrnn.patching import patch, patch_channels_last, unpatch, unpatch_channels_last


@pytest.mark.parametrize(("h", "w", "c", "p"), [(8, 8, 1, 4), (6, 10, 3, 2), (4, 4, 2, 1)])
def test_patch_matches_index_formula_and_round_trips(h, w, c, p):
    x = torch.rand(2, 3, h, w, c, dtype=torch.float64)
    y = patch(x, p)
    assert np.array_equal(y.numpy(), ref_patch(x.numpy(), p))
    assert torch.equal(unpatch(y, p, c), x)
    z = patch_channels_last(x, p)
    assert torch.equal(z.permute(0, 1, 4, 2, 3), y)
    assert torch.equal(unpatch_channels_last(z, p, c), x)


def test_patch_equals_pixel_unshuffle_with_channel_last():
    x = torch.rand(2, 3, 8, 8, 3)
    p = 2
    # pixel_unshuffle orders channels c*p*p + dy*p + dx; ours (dy*p + dx)*C + c.
    pu = F.pixel_unshuffle(x.flatten(0, 1).permute(0, 3, 1, 2), p)  # (BT, C*p*p, H/p, W/p)
    pu = pu.view(6, 3, p * p, 4, 4).transpose(1, 2).reshape(2, 3, 12, 4, 4)
    assert torch.equal(patch(x, p), pu)


def test_patch_rejects_indivisible_frames():
    with pytest.raises(ValueError, match="not divisible by patch size 4"):
        patch(torch.zeros(1, 2, 10, 8, 1), 4)
