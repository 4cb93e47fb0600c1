"""Hyperparameter search over sampling schedules, decoupling weight and learning rate (Ray Tune edge).

:mod:`predrnn.tune.space` is plain Python (the space and how a point becomes a config);
:mod:`predrnn.tune.driver` drives Ray Tune over Ray Train and records the search in MLflow, importing
Ray and MLflow inside functions only.
"""

from predrnn.tune.driver import TuneError, TuneResult, TuneSettings, finalize, plan, resume, tune
from predrnn.tune.space import SearchSpace, SpaceError, apply_params, scale_schedule

__all__ = ["SearchSpace", "SpaceError", "TuneError", "TuneResult", "TuneSettings", "apply_params", "finalize",
           "plan", "resume", "scale_schedule", "tune"]
