"""Split first, then window: no frame is shared between splits, whatever the source and the windows.

Every source frame is stamped with a unique value, so a frame that reached two splits would show up as
the same stamp in both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from predrnn.data import ClipDataset, ingest, open_version
from predrnn.data.store import SPLITS


def _stamps(uri: str) -> dict[str, set[int]]:
    v = open_version(uri)
    return {s: {int(x) for x in np.unique(v.read(v.split_indices(s))[..., 0, 0, 0])} for s in SPLITS}


def test_kth_layout_overlapping_windows_persons_and_validation(root: Path, tmp_path: Path):
    """The authors' KTH layout, windows overlapping (stride 3 < window 6): persons 1-16 train+val, 17-25 test."""
    persons = (1, 2, 3, 4, 5, 17, 18)
    stamp = 1
    for p in persons:
        d = tmp_path / "kth" / "boxing" / f"person{p:02d}_boxing_d1_uncomp"
        d.mkdir(parents=True)
        for k in range(12):
            Image.fromarray(np.full((8, 8), stamp, np.uint8)).save(d / f"image_{k + 1:04d}.png")
            stamp += 1
    uri = ingest("frames-folder", str(tmp_path / "kth"), "kth", str(root), window=6, stride=3, split="kth",
                 val_fraction=0.4)
    v = open_version(uri)
    names = v.attrs["split"]["sequence_names"]
    assert names["test"] == ["person17", "person18"]
    assert len(names["val"]) == 2 and set(names["val"]) | set(names["train"]) == {f"person0{i}" for i in range(1, 6)}
    assert not set(names["val"]) & set(names["train"])  # whole persons
    assert v.attrs["split"]["sizes"] == {"train": 3 * 3, "val": 2 * 3, "test": 2 * 3}  # 3 windows per video
    seen = _stamps(uri)
    assert all(seen[s] for s in SPLITS)
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])


def test_long_npy_clips_are_windowed_inside_their_split(root: Path, tmp_path: Path):
    """53-frame rows cut into overlapping 20-frame windows: every window of a row in one split."""
    rows = 10
    clips = np.arange(rows * 53, dtype=np.float32).reshape(rows, 53, 1, 1, 1) * np.ones((1, 1, 4, 4, 1), np.float32)
    np.save(tmp_path / "long.npy", clips)
    uri = ingest("npy", str(tmp_path / "long.npy"), "long", str(root), window=20, stride=10, units="K",
                 val_fraction=0.2, test_fraction=0.2)
    v = open_version(uri)
    assert v.shape == (rows * 4, 20, 4, 4, 1)  # starts 0, 10, 20, 30
    assert v.attrs["split"]["sequences"] == {"train": 6, "val": 2, "test": 2}
    seen = _stamps(uri)
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])
    assert len(seen["train"] | seen["val"] | seen["test"]) == rows * 50  # frames 50..52 of a row fit no window


def test_training_windows_reach_every_frame_of_a_long_clip(root: Path, tmp_path: Path):
    clips = np.arange(2 * 30, dtype=np.float32).reshape(2, 30, 1, 1, 1) * np.ones((1, 1, 2, 2, 1), np.float32)
    np.save(tmp_path / "c.npy", clips)
    uri = ingest("npy", str(tmp_path / "c.npy"), "c", str(root), val_fraction=0.0, test_fraction=0.0)
    ds = ClipDataset(uri, "train", length=8, random_crop=True, seed=3)
    reached: set[int] = set()
    for epoch in range(40):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            reached |= {int(x) for x in torch.unique(ds[i][:, 0, 0, 0])}
    assert reached == set(range(60))  # not only frames 0..7 of each clip
    ds.set_epoch(5)
    again = ClipDataset(uri, "train", length=8, random_crop=True, seed=3)
    again.set_epoch(5)
    assert torch.equal(ds[0], again[0])  # a pure function of (seed, epoch, clip): resume stays exact


def test_an_option_that_does_not_apply_to_the_split_is_refused(root: Path, tmp_path: Path):
    import pytest

    from predrnn.data import DataError

    d = tmp_path / "kth" / "walking" / "person01_walking_d1_uncomp"
    d.mkdir(parents=True)
    for k in range(4):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / f"image_{k + 1:04d}.png")
    with pytest.raises(DataError, match="--test-fraction does not apply to split=kth"):
        ingest("frames-folder", str(tmp_path / "kth"), "kth", str(root), window=2, split="kth", test_fraction=0.2)


def test_a_grid_is_split_by_time_blocks_with_a_gap(root: Path, tmp_path: Path):
    """A NetCDF time series, overlapping windows (stride 2 < window 4): train, val, test in time order, the
    gap steps in no split, and no time step in two splits (each step stamped with its index)."""
    import pytest
    from data_helpers import write_netcdf

    from predrnn.data import DataError

    steps = 100
    data = np.arange(steps, dtype=np.float32)[:, None, None] * np.ones((1, 3, 4), np.float32)
    src = write_netcdf(tmp_path / "radar.nc", data)
    uri = ingest("netcdf", str(src), "radar", str(root), window=4, stride=2, val_fraction=0.2, test_fraction=0.2,
                 split_gap=3)
    v = open_version(uri)
    split = v.attrs["split"]
    assert split["method"] == "time"
    assert split["sequence_names"] == {"train": ["time 0..59"], "val": ["time 63..79"], "test": ["time 83..99"]}
    got = _stamps(uri)
    assert got["train"] == set(range(0, 60)) and got["val"] == set(range(63, 79)) and got["test"] == set(range(83, 99))
    assert split["sizes"] == {"train": 29, "val": 7, "test": 7}  # starts 0..56, 63..75, 83..95 every 2 steps
    # clips stay in time order, so an evaluation's clips follow the calendar
    firsts = v.read(np.arange(v.shape[0]))[:, 0, 0, 0, 0]
    assert (np.diff(firsts) > 0).all()

    # interleaved blocks (a season in every split): 2 blocks of 50 steps, each train/val/test
    uri2 = ingest("netcdf", str(src), "radar2", str(root), window=4, stride=4, val_fraction=0.2, test_fraction=0.2,
                  split_blocks=2)
    names = open_version(uri2).attrs["split"]["sequence_names"]
    assert names == {"train": ["time 0..29", "time 50..79"], "val": ["time 30..39", "time 80..89"],
                     "test": ["time 40..49", "time 90..99"]}

    # a split asked for that cannot hold one window is refused up front, naming what to change
    with pytest.raises(DataError, match=r"the longest test time block holds 5 of 100 time steps, fewer than window=8"):
        ingest("netcdf", str(src), "radar3", str(root), window=8, test_fraction=0.05)
    with pytest.raises(DataError, match="split=seeded does not apply to kind netcdf"):
        ingest("netcdf", str(src), "radar3", str(root), window=4, split="seeded")


def test_authors_npz_with_overlapping_clips_keeps_each_video_in_one_split(root: Path, tmp_path: Path):
    """The authors' KTH-style npz: clips index overlapping 8-frame windows (start every 2 frames) of 6
    videos of 20 frames; each frame stamped. Overlapping clips form one sequence (a video), so no frame
    reaches two splits; --window 4 --stride 4 cuts each clip into two 4-frame clips of the same split."""
    videos, frames_per_video, clip_len = 6, 20, 8
    raw = np.arange(videos * frames_per_video, dtype=np.float32).reshape(-1, 1, 1, 1) * np.ones((1, 1, 4, 4),
                                                                                                np.float32)
    starts = [v * frames_per_video + k for v in range(videos) for k in range(0, frames_per_video - clip_len + 1, 2)]
    index = np.zeros((2, len(starts), 2), np.int32)
    index[0, :, 0], index[0, :, 1] = starts, clip_len // 2
    index[1, :, 0], index[1, :, 1] = np.array(starts) + clip_len // 2, clip_len // 2
    np.savez(tmp_path / "kth_like.npz", input_raw_data=raw / 255.0, clips=index, dims=np.array([[1, 4, 4]], np.int32))
    uri = ingest("thuml-npz", str(tmp_path / "kth_like.npz"), "kthnpz", str(root), window=4, stride=4,
                 val_fraction=0.2, test_fraction=0.2)
    v = open_version(uri)
    assert v.shape == (2 * len(starts), 4, 4, 4, 1)
    split = v.attrs["split"]
    assert split["sequences"] == {"train": 4, "val": 1, "test": 1}
    assert sorted(n for s in SPLITS for n in split["sequence_names"][s]) == sorted(
        f"kth_like.npz:frames {v * 20}..{v * 20 + 19}" for v in range(videos))
    seen = _stamps(uri)
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])
    assert seen["train"] | seen["val"] | seen["test"] == set(range(videos * frames_per_video))
