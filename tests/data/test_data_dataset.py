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


def test_float_data_comes_in_its_units_with_no_data_as_nan(root: Path):
    uri = ingest("storm-cells", "", "storm", str(root), num_clips=12, frames=6, height=24, width=24,
                 radar_mask=True, val_fraction=0.0, test_fraction=0.0)
    ds = ClipDataset(uri, split="all")
    x = torch.stack([ds[i] for i in range(len(ds))])
    stored = open_version(uri).read(np.arange(12))
    np.testing.assert_array_equal(x.numpy(), stored)  # mm/h as stored, NaN = outside the radar's range
    assert torch.isnan(x[:, :, 0, 0]).all() and not torch.isnan(x[:, :, 12, 12]).any()
    v = ds.values
    assert (v.kind, v.units, v.valid_min, v.valid_max) == ("field", "mm/h", 0.0, None)
    assert v.thresholds == (0.5, 2.0, 5.0, 10.0, 30.0)  # HKO-7's rain-rate thresholds for mm/h
    finite = stored[np.isfinite(stored)].astype(np.float64)
    assert v.mean == pytest.approx(finite.mean(), rel=1e-6) and v.std == pytest.approx(finite.std(), rel=1e-5)


def test_normalisation_comes_from_the_training_split_only(tmp_path: Path, root: Path):
    """A test split with another mean must not move the statistics the model is normalised with."""
    rng = np.random.default_rng(0)
    train = rng.gamma(2.0, 1.0, (6, 4, 8, 8)).astype(np.float32)  # mean about 2 mm/h
    test = train + 50.0  # a very different regime, only in the test split
    folder = tmp_path / "arrays"
    folder.mkdir()
    np.save(folder / "train.npy", train)
    np.save(folder / "valid.npy", train[:2])
    np.save(folder / "test.npy", test)
    uri = ingest("npy", str(folder), "rain", str(root), units="mm/h", valid_min=0)
    v = ClipDataset(uri, "train").values
    assert v.mean == pytest.approx(float(train.astype(np.float64).mean()), rel=1e-6)
    assert v.std == pytest.approx(float(train.astype(np.float64).std()), rel=1e-5)
    attrs = open_version(uri).attrs
    assert attrs["values"]["statistics_split"] == "train"
    assert attrs["stats"]["max"] >= 50  # the all-split statistics still describe the whole version


def test_valid_range_is_checked_and_part_of_the_version(tmp_path: Path, root: Path):
    rain = np.random.default_rng(1).gamma(2.0, 1.0, (4, 4, 8, 8)).astype(np.float32)
    np.save(tmp_path / "rain.npy", rain)
    with pytest.raises(DataError, match="below the declared valid_min=1"):
        ingest("npy", str(tmp_path / "rain.npy"), "rain", str(root), units="mm/h", valid_min=1)
    a = ingest("npy", str(tmp_path / "rain.npy"), "rain", str(root), units="mm/h", valid_min=0)
    b = ingest("npy", str(tmp_path / "rain.npy"), "rain", str(root), units="mm/h", valid_min=0, valid_max=500)
    assert a != b  # same bytes, other meaning: another version, not the first one's manifest
    assert ClipDataset(b, "all").values.valid_max == 500
    with pytest.raises(DataError, match="physical fields"):
        ingest("npy", str(tmp_path / "rain.npy"), "img", str(root), image=True, valid_min=0)


def test_dataloader_with_two_workers(digits: str):
    ds = ClipDataset(digits, split="all")
    loader = DataLoader(ds, batch_size=8, num_workers=2, shuffle=False)
    batches = list(loader)
    assert [tuple(b.shape) for b in batches] == [(8, 10, 32, 32, 1), (8, 10, 32, 32, 1), (7, 10, 32, 32, 1)]
    expect = open_version(digits).read(np.arange(23)).astype(np.float32) / 255
    np.testing.assert_allclose(torch.cat(batches).numpy(), expect)
