"""The nightly retraining, resolved once before any worker starts: the training run (:func:`predrnn.train.prepare`:
config, every split of the training version, the store) and the held-out version both the new model and the
champion are tested on. The ``nightly-retrain`` flow runs it; the training, evaluation and gate are the
training, :mod:`predrnn.jobs.evaluate` and registry use cases."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from predrnn.config import ExperimentConfig
from predrnn.data.info import DatasetInfo
from predrnn.train.spec import RunSpec

if TYPE_CHECKING:
    from predrnn.data.store import S3Settings


@dataclass(frozen=True)
class NightlySpec:
    """One nightly retraining, resolved once by :func:`prepare_nightly`.

    Attributes:
        run: the training run (its dataset's train, val and test splits checked).
        test_dataset: the version both models are tested on: the given one, checked against the model
            (a test split, the same frames, channels and values), else the training version.
    """

    run: RunSpec
    test_dataset: DatasetInfo

    def to_dict(self) -> dict[str, Any]:
        """JSON types only, no credential (what a flow passes between its tasks)."""
        return {"run": self.run.to_dict(), "test_dataset": self.test_dataset.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NightlySpec:
        info = dict(data["test_dataset"])
        info["shape"] = tuple(info["shape"])
        return cls(run=RunSpec.from_dict(data["run"]), test_dataset=DatasetInfo(**info))


def prepare_nightly(cfg: ExperimentConfig, *, data: str, test_dataset: str | None = None,
                    tracking_uri: str | None = None, state_dir: str | Path = ".state", ray_address: str | None = None,
                    s3: S3Settings | None = None, run_name: str | None = None,
                    init_weights: str | None = None) -> NightlySpec:
    """Resolve a nightly retraining: the run as :func:`predrnn.train.prepare` resolves it (the training
    version's train, val and test splits, enough clips for the workers, clips of ``data.total_length``
    frames, a reachable store), and ``test_dataset`` checked against the model the run will train.

    Raises:
        ConfigError, DataError, TrackingError, TrainError: naming what does not fit, before any worker starts.
    """
    from predrnn.data import validate_dataset
    from predrnn.train import prepare

    run = prepare(cfg, data=data, tracking_uri=tracking_uri, state_dir=state_dir, ray_address=ray_address, s3=s3,
                  run_name=run_name, init_weights=init_weights, need_test=True)
    test = run.dataset if not test_dataset else validate_dataset(run.cfg, test_dataset, for_model=True,
                                                                   need_val=False, need_test=True, s3=s3 or None)
    return NightlySpec(run=run, test_dataset=test)
