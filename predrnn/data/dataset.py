"""A torch Dataset over a published version: random access by clip, never loading the whole array."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from predrnn.data.errors import DataError
from predrnn.data.store import Version, open_version
from predrnn.values import from_dataset_attrs

if TYPE_CHECKING:
    from predrnn.data.store import S3Settings


class ClipDataset(Dataset):
    """Clips of one split of a dataset version as float32 tensors (T or ``length``, H, W, C) in the data's units.

    uint8 (image) data is scaled to [0, 1]; float (physical) data is returned as stored, in its
    units, NaN = no data. The model-side transform (standardisation by the training split's
    statistics) is :mod:`predrnn.values`, driven by :attr:`values` (what this version records).

    Args:
        uri: ``ROOT/NAME@VERSION`` (or ``@latest``).
        split: ``train``, ``val``, ``test`` or ``all``.
        length: frames per item (default: the stored clip length); a window of the clip.
        random_crop: draw the window's start at random (seeded by ``seed``, the epoch and the clip)
            instead of taking the first ``length`` frames.
        seed: seed of the random crops.
        rank: this worker's rank when sharding across ``world_size`` distributed workers; shards are
            disjoint, cover the split and differ in size by at most one clip.
        world_size: number of shards.
        s3: S3 settings for a version on S3 (as a door read them); None: the S3 client's defaults.
    """

    def __init__(self, uri: str | Version, split: str = "train", *, length: int | None = None,
                 random_crop: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                 s3: S3Settings | None = None):
        self.version = uri if isinstance(uri, Version) else open_version(uri, s3)
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.split = split
        self.indices = self.version.split_indices(split)[rank::world_size]
        _, t, _, _, _ = self.version.shape
        self.length = t if length is None else int(length)
        if not 1 <= self.length <= t:
            raise DataError(f"length must be in 1..{t} (the stored clip length), got {length}")
        self.random_crop, self.seed, self.rank = random_crop, seed, rank
        self.epoch = 0
        self.image = self.version.dtype == np.uint8
        self.values = from_dataset_attrs(self.version.attrs)

    def set_epoch(self, epoch: int) -> None:
        """Change the random crops from one epoch to the next."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.indices.size)

    def _start(self, clip: int) -> int:
        spare = self.version.shape[1] - self.length
        if spare == 0 or not self.random_crop:
            return 0
        return int(np.random.default_rng([self.seed, self.epoch, clip]).integers(0, spare + 1))

    def _tensor(self, x: np.ndarray, clip: int) -> torch.Tensor:
        s = self._start(clip)
        x = x[s:s + self.length]
        if self.image:
            return torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)
        return torch.from_numpy(np.asarray(x, dtype=np.float32).copy())

    def _clip_ids(self, items: Any) -> np.ndarray:
        pos = np.asarray(items, dtype=np.int64).reshape(-1)
        n = len(self)
        if pos.size and (pos.min() < -n or pos.max() >= n):
            raise IndexError(f"index out of range for a dataset of {n} clips")
        return self.indices[pos % n] if n else pos

    def __getitem__(self, i: int) -> torch.Tensor:
        clip = int(self._clip_ids([i])[0])
        return self._tensor(self.version.read([clip])[0], clip)

    def __getitems__(self, items: list[int]) -> list[torch.Tensor]:
        """A batch in one read (the DataLoader uses this): fewer, concurrent chunk requests."""
        clips = self._clip_ids(items)
        data = self.version.read(clips)
        return [self._tensor(x, int(c)) for x, c in zip(data, clips, strict=True)]
