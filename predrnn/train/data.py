"""Dataset access for training: validation against the config, per-rank shards, batch order.

The batch order is a pure function of ``(seed, rank, iteration)``: each epoch of a rank's shard is
a fresh permutation seeded by ``(seed, rank, epoch)``, and iteration ``it`` takes slot
``(it - 1) % steps_per_epoch`` of epoch ``(it - 1) // steps_per_epoch``. A resumed run therefore
sees exactly the clips it would have seen without the interruption.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch

from predrnn.config import ExperimentConfig
from predrnn.errors import PredrnnError


class DatasetError(PredrnnError, ValueError):
    """The dataset is missing, unreadable or does not fit the experiment config."""


class ClipSource(Protocol):
    """Anything that can open one split of clips for one rank: ``len(ds)`` and ``ds[i] -> (T, H, W, C)``."""

    def open(self, split: str, *, length: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> Any: ...


@dataclass(frozen=True)
class DatasetInfo:
    """What training records about its data: the resolved version URI, its shape and what its values are
    (``values``: a :class:`predrnn.config.ValuesConfig` as a dict, normalisation from the training split)."""

    uri: str
    name: str
    version: str
    shape: tuple[int, ...]
    dtype: str
    splits: dict[str, int]
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ZarrSource:
    """A versioned Zarr dataset (``ROOT/NAME@VERSION``, local or ``s3://``) read with ``ClipDataset``."""

    uri: str

    def open(self, split: str, *, length: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> Any:
        """The split's clips as windows of ``length`` frames: the training split draws each window's start
        at random over the whole clip (seeded by ``seed``, the epoch and the clip: every frame is
        reachable, and the order stays a pure function of the iteration); other splits take each clip's
        first ``length`` frames."""
        from predrnn.data import ClipDataset

        return ClipDataset(self.uri, split=split, length=length, rank=rank, world_size=world_size,
                           random_crop=split == "train", seed=seed)


def validate_dataset(cfg: ExperimentConfig, uri: str, *, world_size: int = 1, for_model: bool = False,
                     need_val: bool = True, need_test: bool = False, need_length: int | None = None) -> DatasetInfo:
    """Open the version behind ``uri`` and check it against the config, before any worker starts.

    Args:
        for_model: ``cfg`` is a trained model's: its values (image or field, units) must be the
            dataset's, since its normalisation was learnt on them (evaluation, scoring).
        need_val: require a validation split (training does; evaluation does not).
        need_test: require a test split (a training run that ends with the test evaluation does).
        need_length: frames per clip the caller reads (default ``data.total_length``), e.g. an
            evaluation at a longer horizon than the training one.

    Raises:
        DatasetError: the version does not exist or cannot be read, its frames differ from
            ``cfg.data`` (height, width, channels), its clips are shorter than
            ``data.total_length``, the train/val splits are too small for ``world_size`` ranks, a
            split that is needed is empty, or (``for_model``) its values differ from the model's.
    """
    if not uri:
        raise DatasetError("no dataset given: pass --data ROOT/NAME@VERSION (or set data.dataset)")
    try:
        from predrnn.data import open_version

        version = open_version(uri)
    except ImportError as err:
        raise DatasetError(f"the dataset package is not available: {err}") from err
    except Exception as err:  # missing path, unknown version, unreadable metadata
        raise DatasetError(f"cannot open dataset {uri!r}: {type(err).__name__}: {err}") from err
    shape = tuple(int(s) for s in version.shape)
    d = cfg.data
    if len(shape) != 5:
        raise DatasetError(f"dataset {version.uri} has shape {shape}; expected (clips, T, H, W, C)")
    _, t, h, w, c = shape
    want = (d.img_height, d.img_width, d.img_channel)
    if (h, w, c) != want:
        raise DatasetError(f"dataset {version.uri} has frames of {h}x{w}x{c} (H x W x C) but the config "
                           f"expects {want[0]}x{want[1]}x{want[2]} (data.img_height/img_width/img_channel)")
    if need_length is not None and t < need_length:
        raise DatasetError(f"dataset {version.uri} has clips of {t} frames; context + horizon need {need_length}")
    if need_length is None and t < d.total_length:
        raise DatasetError(f"dataset {version.uri} has clips of {t} frames; the config needs "
                           f"data.total_length={d.total_length}")
    splits = {}
    for split in ("train", "val", "test"):
        try:
            splits[split] = len(version.split_indices(split))
        except Exception:  # a dataset may lack a split; train and val are checked below
            splits[split] = 0
    from predrnn.values import from_dataset_attrs

    values = from_dataset_attrs(version.attrs)
    if for_model:
        mine = cfg.values
        if (mine.kind, mine.units) != (values.kind, values.units):
            def what(v: Any) -> str:
                return "image data" if v.kind == "image" else f"a field in {v.units or 'unnamed units'!r}"
            raise DatasetError(f"dataset {version.uri} holds {what(values)} but the model was trained on "
                               f"{what(mine)}")
    elif splits["train"] < world_size:
        raise DatasetError(f"dataset {version.uri} has {splits['train']} training clips; "
                           f"{world_size} workers need at least one each")
    if need_val and not for_model and splits["val"] < 1:
        raise DatasetError(f"dataset {version.uri} has no validation clips")
    if need_test and splits["test"] < 1:
        raise DatasetError(f"dataset {version.uri} has no test split, which the run's final evaluation needs: "
                           "ingest a test source or pass --test-fraction to ingest")
    return DatasetInfo(uri=str(version.uri), name=str(version.name), version=str(version.version),
                       shape=shape, dtype=str(version.dtype), splits=splits, values=asdict(values))


def steps_per_epoch(shard_size: int, batch: int) -> int:
    """Full batches per pass over a shard (at least one; a shard smaller than a batch wraps around)."""
    return max(1, shard_size // batch)


def epoch_of(it: int, *, shard_size: int, batch: int) -> int:
    """The epoch (pass over a rank's shard) that global iteration ``it`` (from 1) belongs to."""
    return (it - 1) // steps_per_epoch(shard_size, batch)


def batch_indices(it: int, *, shard_size: int, batch: int, seed: int, rank: int) -> list[int]:
    """The shard positions of global iteration ``it`` (counted from 1) on ``rank``."""
    if shard_size < 1:
        raise DatasetError(f"rank {rank} has an empty shard")
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
