"""ClipDataset: values, crops, splits, sharding and a multi-worker DataLoader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from predrnn.data import ClipDataset, DataError, ingest, open_version


@pytest.fixture()
def digits(root: Path) -> str:
    return ingest("moving-digits", "", "mm", str(root), num_clips=23, frames=10, height=32, width=32)


def test_items_are_unit_floats_of_the_stored_clips(digits: str):
    v = open_version(digits)
    ds = ClipDataset(digits, split="train")
    assert len(ds) == v.split_indices("train").size == 19
    x = ds[0]
    assert x.dtype == torch.float32 and tuple(x.shape) == (10, 32, 32, 1)
    expect = v.read(v.split_indices("train")[:1])[0].astype(np.float32) / 255
    np.testing.assert_allclose(x.numpy(), expect)
    assert float(x.max()) == 1.0 and float(x.min()) == 0.0
    assert torch.equal(ds[-1], ds[len(ds) - 1])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_length_and_random_crop(digits: str):
    full = ClipDataset(digits, split="val")
    first = ClipDataset(digits, split="val", length=4)
    assert torch.equal(first[1], full[1][:4])
    crop = ClipDataset(digits, split="val", length=4, random_crop=True, seed=5)
    again = ClipDataset(digits, split="val", length=4, random_crop=True, seed=5)
    assert all(torch.equal(crop[i], again[i]) for i in range(len(crop)))  # reproducible
    starts = set()
    for epoch in range(6):
        crop.set_epoch(epoch)
        y = crop[0]
        starts.add(next(s for s in range(7) if torch.equal(y, full[0][s:s + 4])))
    assert len(starts) > 1  # the window moves between epochs
    with pytest.raises(DataError, match="length"):
        ClipDataset(digits, length=11)


@pytest.mark.parametrize("world", [2, 3, 4])
def test_shards_are_disjoint_and_balanced(digits: str, world: int):
    v = open_version(digits)
    shards = [ClipDataset(digits, split="train", rank=r, world_size=world) for r in range(world)]
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 19
    union = np.concatenate([s.indices for s in shards])
    assert np.array_equal(np.sort(union), v.split_indices("train"))
    with pytest.raises(DataError, match="rank"):
        ClipDataset(digits, rank=world, world_size=world)


def test_float_data_is_standardised(root: Path):
    uri = ingest("storm-cells", "", "storm", str(root), num_clips=12, frames=6, height=24, width=24,
                 radar_mask=True, val_fraction=0.0, test_fraction=0.0)
    ds = ClipDataset(uri, split="all")
    x = torch.stack([ds[i] for i in range(len(ds))])
    assert not torch.isnan(x).any()  # NaN (no data) -> 0 after standardisation
    valid = x[:, :, 12, 12]
    raw = ClipDataset(uri, split="all", normalise=False)
    r = torch.stack([raw[i] for i in range(len(raw))])
    assert torch.isnan(r).any()
    stats = open_version(uri).attrs["stats"]
    np.testing.assert_allclose(valid.numpy(), (r[:, :, 12, 12].numpy() - stats["mean"]) / stats["std"],
                               rtol=1e-5, atol=1e-5)
    finite = r[~torch.isnan(r)]
    assert abs(float(((finite - stats["mean"]) / stats["std"]).mean())) < 1e-3


def test_dataloader_with_two_workers(digits: str):
    ds = ClipDataset(digits, split="all")
    loader = DataLoader(ds, batch_size=8, num_workers=2, shuffle=False)
    batches = list(loader)
    assert [tuple(b.shape) for b in batches] == [(8, 10, 32, 32, 1), (8, 10, 32, 32, 1), (7, 10, 32, 32, 1)]
    expect = open_version(digits).read(np.arange(23)).astype(np.float32) / 255
    np.testing.assert_allclose(torch.cat(batches).numpy(), expect)
