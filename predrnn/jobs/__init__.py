"""The use cases, each resolved once at its door: a frozen spec built by one ``prepare_*()`` from the
settings and options, and one ``run_*()`` that takes the spec as it is and returns a typed result.

The CLI commands (:mod:`predrnn.cli`) and the Prefect flows (``flows/``) only adapt: parse their
arguments, read the settings once, call ``prepare_*`` then ``run_*``, and print or return the result.
Nothing below a ``prepare_*`` re-resolves a model reference, re-checks a dataset or reads the
environment.

- training: :func:`predrnn.train.prepare` / :func:`predrnn.train.train` (:class:`predrnn.train.RunSpec`);
- evaluation: :func:`prepare_evaluate` / :func:`run_evaluate`, with its optional MLflow record;
- a forecast dataset: :func:`prepare_forecast` / :func:`run_forecast` (the model pinned and loaded once,
  the job checked once);
- scores of any forecast: :func:`prepare_score` / :func:`run_score`;
- the promotion gate: :func:`prepare_promote` / :func:`run_promote` (optionally after evaluating both models
  on one test version);
- the nightly retraining's run and test version: :func:`predrnn.jobs.nightly.prepare_nightly`.
"""

from predrnn.jobs.evaluate import EvaluateResult, EvaluateSpec, prepare_evaluate, run_evaluate
from predrnn.jobs.forecast import ForecastSpec, prepare_forecast, run_forecast
from predrnn.jobs.model import ResolvedModel, resolve_model
from predrnn.jobs.promote import PromoteResult, PromoteSpec, prepare_promote, run_promote
from predrnn.jobs.score import ScoreResult, ScoreSpec, prepare_score, run_score

__all__ = ["EvaluateResult", "EvaluateSpec", "ForecastSpec", "PromoteResult", "PromoteSpec", "ResolvedModel",
           "ScoreResult", "ScoreSpec", "prepare_evaluate", "prepare_forecast", "prepare_promote", "prepare_score",
           "resolve_model", "run_evaluate", "run_forecast", "run_promote", "run_score"]
