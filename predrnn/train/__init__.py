"""Distributed training on Ray Train (the edge that imports Ray; MLflow through :mod:`predrnn.tracking`).

``train()`` validates and runs a ``TorchTrainer``; ``finish()`` evaluates the best checkpoint,
writes pictures and registers the model. Ray and MLflow are imported inside functions only.
"""

from predrnn.train.data import DatasetError, DatasetInfo, ZarrSource, validate_dataset
from predrnn.train.driver import TrainError, TrainResult, configure, run_config, train
from predrnn.train.finalize import evaluate_split, finish, lead_time_table

__all__ = ["DatasetError", "DatasetInfo", "TrainError", "TrainResult", "ZarrSource", "configure",
           "evaluate_split", "finish", "lead_time_table", "run_config", "train", "validate_dataset"]
