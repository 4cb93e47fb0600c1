"""Batches for training and evaluation: clip sources, per-rank shards, batch order.

The batch order is a pure function of ``(seed, rank, iteration)``: each epoch of a rank's shard is
a fresh permutation seeded by ``(seed, rank, epoch)``, and iteration ``it`` takes slot
``(it - 1) % steps_per_epoch`` of epoch ``(it - 1) // steps_per_epoch``. A resumed run therefore
sees exactly the clips it would have seen without the interruption.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from predrnn.data.errors import DataError

if TYPE_CHECKING:
    from predrnn.data.store import S3Settings


class ClipSource(Protocol):
    """Anything that can open one split of clips for one rank: ``len(ds)`` and ``ds[i] -> (T, H, W, C)``."""

    def open(self, split: str, *, length: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> Any: ...


@dataclass(frozen=True)
class ZarrSource:
    """A versioned Zarr dataset (``ROOT/NAME@VERSION``, local or ``s3://``) read with ``ClipDataset``."""

    uri: str
    s3: S3Settings | None = field(default=None, hash=False, compare=False)  # None: the S3 client's defaults

    def open(self, split: str, *, length: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> Any:
        """The split's clips as windows of ``length`` frames: the training split draws each window's start
        at random over the whole clip (seeded by ``seed``, the epoch and the clip: every frame is
        reachable, and the order stays a pure function of the iteration); other splits take each clip's
        first ``length`` frames."""
        from predrnn.data import ClipDataset

        return ClipDataset(self.uri, split=split, length=length, rank=rank, world_size=world_size,
                           random_crop=split == "train", seed=seed, s3=self.s3)


def per_worker_batch(global_batch: int, world_size: int) -> int:
    """The batch each rank trains on; the global batch must split evenly."""
    if global_batch % world_size:
        raise ValueError(f"optim.batch_size={global_batch} does not split evenly over {world_size} workers")
    return global_batch // world_size


def steps_per_epoch(shard_size: int, batch: int) -> int:
    """Full batches per pass over a shard (at least one; a shard smaller than a batch wraps around)."""
    return max(1, shard_size // batch)


def epoch_of(it: int, *, shard_size: int, batch: int) -> int:
    """The epoch (pass over a rank's shard) that global iteration ``it`` (from 1) belongs to."""
    return (it - 1) // steps_per_epoch(shard_size, batch)


def batch_indices(it: int, *, shard_size: int, batch: int, seed: int, rank: int) -> list[int]:
    """The shard positions of global iteration ``it`` (counted from 1) on ``rank``."""
    if shard_size < 1:
        raise DataError(f"rank {rank} has an empty shard")
    spe = steps_per_epoch(shard_size, batch)
    epoch, slot = divmod(it - 1, spe)
    gen = torch.Generator().manual_seed(_mix(seed, rank, epoch))
    perm = torch.randperm(shard_size, generator=gen)
    if shard_size < batch:
        perm = perm.repeat((batch + shard_size - 1) // shard_size)
    return perm[slot * batch:(slot + 1) * batch].tolist()


def mask_generator(seed: int, rank: int, it: int) -> torch.Generator:
    """The generator the sampling mask of iteration ``it`` on ``rank`` is drawn from."""
    return torch.Generator().manual_seed(_mix(seed, rank, it, 7))


def _mix(*values: int) -> int:
    """A 63-bit seed from a few integers (deterministic, unlike ``hash``)."""
    h = 1469598103934665603
    for v in values:
        h = ((h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0x7FFFFFFFFFFFFFFF
    return h


def load_batch(dataset: Any, indices: list[int]) -> torch.Tensor:
    """Stack ``dataset[i]`` for ``indices`` into (B, T, H, W, C) float32 (one batched read if supported)."""
    many = getattr(dataset, "__getitems__", None)
    items = many(list(indices)) if many is not None else [dataset[i] for i in indices]
    return torch.stack([torch.as_tensor(x) for x in items]).float()


def iterate_batches(dataset: Any, batch: int, max_clips: int = 0):
    """Every clip of ``dataset`` in order (``max_clips`` first ones if > 0), no clip dropped."""
    n = len(dataset) if not max_clips else min(max_clips, len(dataset))
    for start in range(0, n, batch):
        yield load_batch(dataset, list(range(start, min(start + batch, n))))
