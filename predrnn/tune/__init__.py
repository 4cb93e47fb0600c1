"""Hyperparameter search over sampling schedules, decoupling weight and learning rate (Ray Tune edge).

:mod:`predrnn.tune.space` and :mod:`predrnn.tune.plan` are plain Python (the space, how a point becomes
a config, the search's settings and checks); :mod:`predrnn.tune.driver` drives Ray Tune over Ray Train
trials; :mod:`predrnn.tune.recorder` records the search in MLflow. Ray and MLflow are imported inside
functions only.
"""

from predrnn.tune.driver import finalize, resume, tune
from predrnn.tune.plan import Search, TuneError, TuneResult, TuneSettings, check_search, plan
from predrnn.tune.space import SearchSpace, SpaceError, apply_params, scale_schedule

__all__ = ["Search", "SearchSpace", "SpaceError", "TuneError", "TuneResult", "TuneSettings", "apply_params",
           "check_search", "finalize", "plan", "resume", "scale_schedule", "tune"]
