"""Training batches read ahead in the background are exactly the batches a synchronous read gives, in the
same order, across epochs and from a resumed iteration; a failed read surfaces at its iteration; the wait
for data is counted."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from predrnn.data import ClipDataset, ingest
from predrnn.data.batches import batch_indices, epoch_of, load_batch
from predrnn.data.prefetch import BatchPrefetcher, read_iteration


@pytest.fixture(scope="module")
def long_clips(tmp_path_factory):
    """A real Zarr version whose clips (12 frames) are longer than a training window (6): random windows."""
    root = tmp_path_factory.mktemp("prefetch")
    return ingest("moving-digits", None, "long", str(root), num_clips=30, frames=12, height=32, width=32, seed=3)


def _synchronous(ds, it: int, batch: int, seed: int, rank: int) -> torch.Tensor:
    """What the training loop read before prefetching existed (kept here as the reference)."""
    idx = batch_indices(it, shard_size=len(ds), batch=batch, seed=seed, rank=rank)
    ds.set_epoch(epoch_of(it, shard_size=len(ds), batch=batch))
    return load_batch(ds, idx)


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetched_batches_equal_the_synchronous_ones_across_epochs_and_after_a_resume(long_clips, depth):
    def shard():
        return ClipDataset(long_clips, "train", length=6, random_crop=True, seed=5, rank=1, world_size=2)

    ref_ds = shard()
    batch, last = 4, 3 * (len(ref_ds) // 4) + 2  # more than three epochs of the shard
    want = [_synchronous(ref_ds, it, batch, 5, 1) for it in range(1, last + 1)]
    assert not torch.equal(want[0], want[len(ref_ds) // 4])  # epochs differ (order and windows)
    with BatchPrefetcher(shard(), 1, last, batch=batch, seed=5, rank=1, depth=depth) as pre:
        got = [pre.get(it) for it in range(1, last + 1)]
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    resume_at = len(ref_ds) // 4 + 2  # a resumed run starts inside the second epoch
    with BatchPrefetcher(shard(), resume_at, last, batch=batch, seed=5, rank=1, depth=depth) as pre:
        tail = [pre.get(it) for it in range(resume_at, last + 1)]
    assert all(torch.equal(g, w) for g, w in zip(tail, want[resume_at - 1:], strict=True))
    assert torch.equal(read_iteration(shard(), 7, batch=batch, seed=5, rank=1), want[6])
    with BatchPrefetcher(shard(), 1, last, batch=batch, seed=5, rank=1, depth=depth) as pre:
        pre.get(1)
        with pytest.raises(ValueError, match="expected iteration 2"):
            pre.get(3)


class _Slow:
    """A clip source whose every batch read takes ``delay`` seconds and whose clip ``bad`` cannot be read."""

    def __init__(self, n: int, delay: float, bad: int = -1) -> None:
        self.n, self.delay, self.bad = n, delay, bad

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        time.sleep(self.delay / 4)
        if i == self.bad:
            raise OSError(f"chunk {i} unreadable")
        return np.full((2, 1, 1, 1), i, np.float32)


def test_a_failed_read_is_raised_at_its_iteration_and_the_thread_stops():
    src = _Slow(16, 0.0, bad=13)
    bad = next(it for it in range(1, 20) if 13 in batch_indices(it, shard_size=16, batch=4, seed=0, rank=0))
    with BatchPrefetcher(src, 1, 19, batch=4, seed=0, rank=0, depth=2) as pre:
        for it in range(1, bad):
            pre.get(it)
        with pytest.raises(OSError, match="chunk 13 unreadable"):
            pre.get(bad)
    assert pre._thread is None


def test_the_wait_for_data_is_counted_and_hidden_behind_a_slower_step():
    read_s, n = 0.08, 8
    with BatchPrefetcher(_Slow(16, read_s), 1, n, batch=4, seed=0, rank=0, depth=2) as pre:
        for it in range(1, n + 1):  # a model that takes no time waits for every read
            pre.get(it)
    assert pre.stall_s >= 0.8 * n * read_s
    with BatchPrefetcher(_Slow(16, read_s), 1, n, batch=4, seed=0, rank=0, depth=2) as pre:
        time.sleep(2 * read_s)
        for it in range(1, n + 1):
            pre.get(it)
            time.sleep(2 * read_s)  # a step twice as long as a read: the next batch is ready
    assert pre.stall_s < 0.25 * n * read_s
    with BatchPrefetcher(_Slow(16, read_s), 1, n, batch=4, seed=0, rank=0, depth=0) as pre:
        for it in range(1, n + 1):  # no read-ahead: every read is a wait, however slow the step
            pre.get(it)
            time.sleep(read_s)
    assert pre.stall_s >= 0.8 * n * read_s
