"""A search's plan: its settings, its fixed part (:class:`Search`), its result, and the checks that run
before any trial (plain Python: no Ray, no MLflow)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from predrnn.config import ConfigError, ExperimentConfig
from predrnn.errors import PredrnnError
from predrnn.train.spec import RunSpec
from predrnn.tune.report import summary_markdown, trials_markdown
from predrnn.tune.space import SearchSpace, apply_params


class TuneError(PredrnnError, RuntimeError):
    """A search could not start (cluster, budget, resume path) or failed."""


@dataclass(frozen=True)
class TuneSettings:
    """How the search runs (the space itself is :class:`~predrnn.tune.space.SearchSpace`).

    Attributes:
        trials: number of trials (points sampled).
        max_iterations: each trial's iteration budget; ``None`` keeps the preset's.
        concurrency: trials run at once (each needs its TorchTrainer's workers).
        evaluations: validations per full-length trial; ASHA's rungs sit on them.
        grace_evaluations: evaluations every trial gets before ASHA may stop it.
        reduction_factor: ASHA's halving rate.
        seed: seeds the TPE sampler.
        startup_trials: random trials before TPE models the results; default half the trials (<= 10).
        max_failures: worker-group restarts per trial.
    """

    trials: int = 8
    max_iterations: int | None = None
    concurrency: int = 1
    evaluations: int = 8
    grace_evaluations: int = 1
    reduction_factor: int = 2
    seed: int = 0
    startup_trials: int | None = None
    max_failures: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TuneResult:
    """What a search left: records per trial, the best one and where things are."""

    name: str
    experiment_dir: str
    dataset: str
    tracking_uri: str | None
    parent_run_id: str | None
    settings: dict[str, Any]
    budget: int
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    best_config: dict[str, Any] | None
    best_config_path: str | None
    interrupted: bool
    wall_s: float
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def table(self) -> str:
        return trials_markdown(self.trials, self.budget)

    def markdown(self) -> str:
        return summary_markdown(self.to_dict())


def plan(cfg: ExperimentConfig, settings: TuneSettings) -> tuple[int, int, int]:
    """``(budget, eval_interval, grace_period)`` in iterations, or a ConfigError before anything starts."""
    if settings.trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {settings.trials}")
    if settings.concurrency < 1:
        raise ConfigError(f"--concurrency must be >= 1, got {settings.concurrency}")
    if settings.evaluations < 1 or settings.grace_evaluations < 1 or settings.reduction_factor < 2:
        raise ConfigError("evaluations and grace_evaluations must be >= 1 and reduction_factor >= 2")
    budget = settings.max_iterations or cfg.optim.max_iterations
    if budget < 2:
        raise ConfigError(f"an iteration budget of {budget} is too small: a trial needs at least 2 iterations "
                          "(r_sampling_step_1 < r_sampling_step_2) and one evaluation")
    interval = max(1, budget // settings.evaluations)
    grace = interval * settings.grace_evaluations
    if grace > budget:
        raise ConfigError(f"an iteration budget of {budget} is too small for {settings.grace_evaluations} "
                          f"evaluation(s) every {interval} iterations before ASHA's first rung")
    return budget, interval, grace


def check_search(cfg: ExperimentConfig, settings: TuneSettings, space: SearchSpace) -> tuple[int, int, int]:
    """:func:`plan`, then the space against the config and budget, and the rescaled preset itself: a door
    calls this before resolving the dataset, so a bad search fails first and in milliseconds.

    Raises:
        ConfigError, SpaceError: naming the setting or range.
    """
    budget, interval, grace = plan(cfg, settings)
    space.define_by_run(cfg, budget)
    apply_params(cfg, {}, budget, eval_interval=interval)
    return budget, interval, grace


@dataclass(frozen=True)
class Search:
    """A search's fixed part, written to ``predrnn_tune.json`` and given to every trial.

    ``spec`` is the base run (experiment, dataset, MLflow store, the experiment directory as
    ``spec.run_dir``); ``budget``, ``interval`` and ``grace`` are each trial's iterations, evaluation
    interval and ASHA grace period; ``parent_run_id`` the MLflow run of the search.
    """

    spec: RunSpec
    settings: TuneSettings
    space: dict[str, Any]
    budget: int
    interval: int
    grace: int
    out_dir: str
    parent_run_id: str | None = None

    @property
    def experiment_dir(self) -> str:
        return self.spec.run_dir

    def to_dict(self) -> dict[str, Any]:
        """JSON types; the S3 settings stay out (credentials never go to disk)."""
        return {**dataclasses.asdict(self), "spec": {**self.spec.to_dict(), "s3": {}},
                "settings": self.settings.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Search:
        return cls(**{**data, "spec": RunSpec.from_dict(data["spec"]), "settings": TuneSettings(**data["settings"])})
