"""Distributed training on Ray Train (the edge that imports Ray; MLflow through :mod:`predrnn.tracking`).

A door resolves a run once with :func:`prepare` (a frozen :class:`RunSpec`); ``train(spec)`` runs
it on a ``TorchTrainer`` (:mod:`predrnn.train.launch`); ``finish()`` evaluates the best checkpoint,
writes pictures and registers the model. Ray and MLflow are imported inside functions only.
"""

from predrnn.train.driver import TrainResult, train
from predrnn.train.finalize import finish
from predrnn.train.spec import RunSpec, TrainError, configure, prepare, run_config

__all__ = ["RunSpec", "TrainError", "TrainResult", "configure", "finish", "prepare", "run_config", "train"]
