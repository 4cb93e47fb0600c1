"""Training batches prepared ahead of the model, in a background thread, in the exact order of the run.

A :class:`BatchPrefetcher` reads the batches of iterations ``first..last`` of one rank one after the
other in a single background thread (the Zarr read and the zstd decode release the GIL, and the
store fetches a batch's chunks concurrently), keeping up to ``depth`` finished batches ahead of the
model. One thread, in iteration order, means the batches are exactly those a synchronous loop reads:
each is :func:`predrnn.data.batches.batch_indices` of its iteration, with the dataset's epoch set
first (random windows of long clips), so batch order stays a pure function of (seed, rank,
iteration) and a resumed run reads the same batches.

On CUDA the batch is put in pinned memory in the background, so the copy to the device can be
asynchronous (``non_blocking=True``).

The time the model waits for a batch is counted: :attr:`BatchPrefetcher.stall_s`. Divided by the wall
time of the same span, it is the data-stall fraction (0: the input never held the model back).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import torch

from predrnn.data.batches import batch_indices, epoch_of, load_batch

_DONE = object()


def read_iteration(dataset: Any, it: int, *, batch: int, seed: int, rank: int) -> torch.Tensor:
    """The (B, T, H, W, C) float32 batch of global iteration ``it`` (from 1) on ``rank``: its shard
    positions (:func:`predrnn.data.batches.batch_indices`), read after setting the dataset's epoch."""
    idx = batch_indices(it, shard_size=len(dataset), batch=batch, seed=seed, rank=rank)
    if hasattr(dataset, "set_epoch"):  # new random windows of long clips each epoch, a function of `it`
        dataset.set_epoch(epoch_of(it, shard_size=len(dataset), batch=batch))
    return load_batch(dataset, idx)


class BatchPrefetcher:
    """Batches of iterations ``first..last`` read ahead in one background thread.

    Args:
        dataset: the rank's training shard (``len`` and ``[i]``/``__getitems__``, optionally ``set_epoch``);
            only the background thread touches it while the prefetcher runs.
        first, last: the global iterations (from 1, inclusive) to read.
        batch: clips per batch on this rank.
        seed, rank: of the batch order.
        depth: finished batches kept ahead (0: read synchronously in :meth:`get`, no thread).
        pin_memory: put each batch in page-locked memory (for an asynchronous copy to a GPU).

    Use :meth:`get` with ``first, first + 1, ...`` in order, then :meth:`close` (or a ``with`` block).

    Raises:
        whatever reading a batch raised, from :meth:`get` of that iteration.
    """

    def __init__(self, dataset: Any, first: int, last: int, *, batch: int, seed: int, rank: int,
                 depth: int = 2, pin_memory: bool = False) -> None:
        self.dataset, self.batch, self.seed, self.rank = dataset, batch, seed, rank
        self.next_it, self.last, self.pin = first, last, pin_memory
        self.stall_s = 0.0
        self._stop = threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._thread: threading.Thread | None = None
        if depth > 0 and first <= last:
            self._thread = threading.Thread(target=self._produce, args=(first,), name="predrnn-prefetch",
                                            daemon=True)
            self._thread.start()

    def _read(self, it: int) -> torch.Tensor:
        frames = read_iteration(self.dataset, it, batch=self.batch, seed=self.seed, rank=self.rank)
        return frames.pin_memory() if self.pin else frames

    def _produce(self, first: int) -> None:
        for it in range(first, self.last + 1):
            try:
                item: Any = (it, self._read(it), None)
            except BaseException as err:  # handed to the consumer, raised by its get()
                item = (it, None, err)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self._stop.is_set() or item[2] is not None:
                return

    def get(self, it: int) -> torch.Tensor:
        """The batch of iteration ``it`` (the next one in order); the wait is added to :attr:`stall_s`."""
        if it != self.next_it or it > self.last:
            raise ValueError(f"batches come in order: expected iteration {self.next_it} (up to {self.last}), "
                             f"asked for {it}")
        self.next_it += 1
        t0 = time.perf_counter()
        if self._thread is None:
            frames = self._read(it)
        else:
            got, frames, err = self._queue.get()
            if err is not None:
                raise err
            assert got == it
        self.stall_s += time.perf_counter() - t0
        return frames

    def close(self) -> None:
        """Stop reading ahead (batches not taken are dropped)."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    self._thread.join(timeout=0.1)
            self._thread = None

    def __enter__(self) -> BatchPrefetcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
