"""The model of a job, resolved once: a reference pinned to one registry version and loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from predrnn.config import ExperimentConfig
from predrnn.errors import PredrnnError

if TYPE_CHECKING:
    from predrnn.data.store import S3Settings


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference resolved once at the door.

    Attributes:
        ref: the reference as the user gave it.
        recorded: what jobs record: a registry reference as given, a model directory as its absolute path.
        version: ``models:/NAME/VERSION`` that a registry reference pointed to when it was resolved (an
            alias never moves under a running job); None for a model directory or a ``runs:/`` URI.
        cfg: the model's experiment config (its values: units, normalisation, thresholds).
        net: the loaded forecaster (``nn.Module``), in eval mode.
    """

    ref: str
    recorded: str
    version: str | None
    cfg: ExperimentConfig
    net: Any = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        """What a report calls the model: the pinned version, else the reference."""
        return self.version or self.ref


def resolve_model(ref: str, *, tracking_uri: str | None, cache_dir: Path | None = None) -> ResolvedModel:
    """Resolve and load ``ref`` once: a model directory, a checkout's checkpoint folder (the one holding
    ``train_state.pt``: its ``model/`` is loaded), or a registry reference (``models:/NAME@ALIAS``,
    ``models:/NAME/VERSION``, ``runs:/...``, ``mlflow-artifacts:/...``) in ``tracking_uri``, an alias
    pinned to the version it points to now. Registry versions are kept once downloaded in ``cache_dir``.

    Raises:
        CheckpointError: a model directory that cannot be read.
        TrackingError: the store is unreachable or the reference does not resolve.
    """
    from predrnn.forecaster import is_registry_ref, load_forecaster

    if is_registry_ref(ref):
        from predrnn.tracking.model import pinned_ref

        version = pinned_ref(ref, tracking_uri) if tracking_uri else None
        net, cfg = load_forecaster(version or ref, tracking_uri=tracking_uri, cache_dir=cache_dir)
        return ResolvedModel(ref=ref, recorded=ref, version=version, cfg=cfg, net=net)
    path = Path(ref)
    if (path / "train_state.pt").is_file():  # a checkpoint folder of a run: its exported model
        path = path / "model"
    net, cfg = load_forecaster(str(path))
    return ResolvedModel(ref=ref, recorded=str(Path(ref).resolve()), version=None, cfg=cfg, net=net)


class JobError(PredrnnError, ValueError):
    """A job's options do not fit (one line naming the option and what was expected)."""


def check_pools_and_scales(pools: list[int], scales: list[int]) -> None:
    """Pooled-CSI blocks >= 1 pixel and FSS windows odd and >= 1 pixel (centred windows).

    Raises:
        JobError: naming ``--pool`` or ``--fss-scales``.
    """
    if any(k < 1 for k in pools):
        raise JobError(f"--pool block sizes must be >= 1 pixel, got {pools}")
    if any(n < 1 or n % 2 == 0 for n in scales):
        raise JobError(f"--fss-scales must be odd window sizes >= 1 pixel (centred windows), got {scales}")


def job_precision(requested: str, device: str, task: str = "forecast") -> tuple[str, str]:
    """``requested`` (``auto``/``bf16``/``fp32``) resolved once for ``device`` (``cpu``/``cuda``) and ``task``,
    and the line saying which and why (:func:`predrnn.precision.resolve_precision`, ``describe``).

    Raises:
        JobError: a value that is not ``auto``, ``bf16`` or ``fp32`` (naming ``--precision``).
    """
    from predrnn.precision import PrecisionError, Task, describe, resolve_precision

    kind: Task = "train" if task == "train" else "forecast"
    try:
        resolved = resolve_precision(requested, device, kind)
    except PrecisionError as err:
        raise JobError(f"--precision: {err}") from None
    return resolved, describe(requested, resolved, device, kind)


def check_baselines(names: Any, data: str, split: str, context: int, horizon: int, values: Any,
                    s3: S3Settings | None = None) -> None:
    """Forecast the split's first clip with each baseline, so that one that cannot run on this data (too few
    context frames, too small a grid, values it does not take) is refused before the whole split is read.

    Args:
        names: baseline names (:data:`predrnn.baselines.BASELINES`); persistence needs no check.
        data: the dataset version; ``split``: the split forecast; ``context``, ``horizon``: frames in and out.
        values: the data's :class:`predrnn.config.ValuesConfig`.

    Raises:
        JobError: the baseline's own one-line reason.
    """
    import numpy as np
    import torch

    from predrnn.baselines import baseline_forecast
    from predrnn.data import open_version

    names = [n for n in names if n != "persistence"]
    if not names:
        return
    version = open_version(data, s3)
    index = version.split_indices(split)
    if index.size == 0:
        return  # the job itself reports the empty split
    clip = torch.from_numpy(np.asarray(version.read(index[:1])[:, :context], np.float32))
    for name in names:
        try:
            baseline_forecast(name, clip, horizon, values)
        except ValueError as err:
            raise JobError(str(err)) from None
