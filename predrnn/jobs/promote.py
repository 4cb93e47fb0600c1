"""The promotion gate: move ``@champion`` to a candidate version only if it beats the champion by a margin
on a score, optionally after evaluating both on one held-out test version. ``predrnn promote``, the
``promote`` flow and the nightly retraining run it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from predrnn.data.store import S3Settings, keyless
from predrnn.jobs.model import JobError


@dataclass(frozen=True)
class PromoteSpec:
    """One promotion, resolved once by :func:`prepare_promote`.

    Attributes:
        model_name: the registered model; ``version``: the candidate version.
        metric: the score compared (its version tag, ``test_mse``, ``test_csi_m``, ...), its direction known.
        margin: the relative improvement required (0.01: 1 %); ``force``: move the alias whatever the gate says.
        tracking_uri: the MLflow store.
        dataset: a dataset version both models are evaluated on first (its test split); None: the scores
            recorded on the versions at registration are compared (only if from the same dataset).
        cache_dir: where registry versions are kept once downloaded (for the evaluations).
        s3: the S3 settings of a dataset on S3 (:func:`predrnn.settings.s3_settings`'s keyless form).
        must_beat: a baseline (:data:`predrnn.baselines.BASELINES`) the candidate must also beat on the metric,
            in the same evaluation of ``dataset``; None: only the champion is compared.
    """

    model_name: str
    version: int
    metric: str
    margin: float
    force: bool
    tracking_uri: str
    dataset: str | None = None
    cache_dir: Path | None = None
    s3: S3Settings = field(default_factory=S3Settings)
    must_beat: str | None = None

    @property
    def score(self) -> str:
        """The metric's scorecard name (``mse``, ``csi_m``, ...)."""
        return self.metric.removeprefix("test_")


@dataclass(frozen=True)
class PromoteResult:
    """The decision (:class:`predrnn.tracking.registry.Decision`) and the evaluations it was based on
    (:meth:`predrnn.jobs.EvaluateResult.summary` of the candidate and of the champion), if any."""

    decision: Any
    candidate: dict[str, Any] | None = None
    champion: dict[str, Any] | None = None

    def markdown(self) -> str:
        """The decision and, when evaluated, both models' tables and scorecards."""
        out = self.decision.markdown()
        for title, ev in ((f"candidate v{self.decision.candidate}", self.candidate),
                          (f"champion v{self.decision.previous}", self.champion)):
            if ev is not None:
                out += f"\n\n{title}:\n```\n{ev['table']}\n```\n\n{ev['scorecard']}"
        return out

    def to_dict(self) -> dict[str, Any]:
        return self.decision.to_dict()


def gate_value(evaluation: dict[str, Any], metric: str) -> float | None:
    """The model's value of ``metric`` (mean over lead times) in an evaluation's summary
    (:meth:`predrnn.jobs.EvaluateResult.summary`).

    Raises:
        JobError: the evaluation has no such score (e.g. CSI at a threshold that was not scored).
    """
    name = metric.removeprefix("test_")
    summary = evaluation["summary"]
    if name not in summary:
        raise JobError(f"the evaluation has no score {name!r}; it has {sorted(summary)}")
    return float(summary[name])


def baseline_value(evaluation: dict[str, Any], baseline: str, metric: str) -> float | None:
    """Baseline ``baseline``'s value of ``metric`` (mean over lead times) in an evaluation's summary.

    Raises:
        JobError: the evaluation did not score that baseline, or has no such score.
    """
    summaries = evaluation.get("baseline_summaries") or {}
    if baseline not in summaries:
        raise JobError(f"the evaluation has no {baseline} baseline; it scored {', '.join(summaries) or 'none'}")
    return gate_value({"summary": summaries[baseline]}, metric)


def strongest_baseline(evaluation: dict[str, Any], metric: str) -> tuple[str, float] | None:
    """``(name, value)`` of the baseline with the best ``metric`` (mean over lead times, its direction known)
    among those an evaluation scored (persistence always; extrapolation and S-PROG where they apply), or None
    when none has that score: what a first model must beat, with no champion to compare with."""
    import math

    from predrnn.scorecard import lower_is_better

    lower = lower_is_better(metric.removeprefix("test_"))
    found = []
    for name in evaluation.get("baseline_summaries") or {}:
        try:
            value = baseline_value(evaluation, name, metric)
        except JobError:
            continue
        if value is not None and math.isfinite(value):
            found.append((value if lower else -value, name, value))
    return (min(found)[1], min(found)[2]) if found else None


def prepare_promote(model_name: str, version: int, *, metric: str = "mse", margin: float = 0.01, force: bool = False,
                    tracking_uri: str, dataset: str | None = None, cache_dir: Path | None = None,
                    s3: S3Settings | None = None, must_beat: str | None = None) -> PromoteSpec:
    """Check a promotion's options before anything is evaluated or moved.

    Raises:
        JobError: a version below 1, a margin outside [0, 1), a score whose direction is unknown (named,
            with the known ones), an unknown baseline, or a baseline to beat without a dataset to evaluate on.
    """
    from predrnn.baselines import BASELINES
    from predrnn.scorecard import lower_is_better
    from predrnn.tracking.registry import metric_tag

    if int(version) < 1:
        raise JobError(f"the candidate version must be >= 1, got {version}")
    if not 0 <= margin < 1:
        raise JobError(f"--margin is a relative improvement in [0, 1), got {margin}")
    try:
        lower_is_better(metric)
    except KeyError as err:
        raise JobError(str(err).strip("'\"")) from None
    if must_beat is not None and must_beat not in BASELINES:
        raise JobError(f"--must-beat {must_beat!r} is no baseline; choose from {', '.join(BASELINES)}")
    if must_beat is not None and not dataset:
        raise JobError("--must-beat needs a dataset to evaluate the candidate and the baseline on (--data)")
    return PromoteSpec(model_name=model_name, version=int(version), metric=metric_tag(metric), margin=margin,
                       force=force, tracking_uri=tracking_uri, dataset=dataset, cache_dir=cache_dir,
                       s3=keyless(s3), must_beat=must_beat)


def evaluate_models(spec: PromoteSpec) -> tuple[int | None, dict[str, Any], dict[str, Any] | None]:
    """The current champion, and the candidate's and the champion's evaluations on ``spec.dataset``'s test
    split (fp32, as the gate compares models); the champion's is None when there is none or it is the
    candidate."""
    from predrnn.jobs.evaluate import prepare_evaluate, run_evaluate
    from predrnn.tracking.registry import current_champion

    champion = current_champion(spec.model_name, tracking_uri=spec.tracking_uri, missing_ok=True)

    def evaluate(version: int) -> dict[str, Any]:
        return run_evaluate(prepare_evaluate(f"models:/{spec.model_name}/{version}", str(spec.dataset),
                                             precision="fp32", tracking_uri=spec.tracking_uri,
                                             cache_dir=spec.cache_dir, s3=spec.s3)).summary()

    cand = evaluate(spec.version)
    champ = evaluate(champion) if champion is not None and champion != spec.version else None
    return champion, cand, champ


def run_promote(spec: PromoteSpec, *, promoter: Any = None, candidate: dict[str, Any] | None = None,
                champion: dict[str, Any] | None = None) -> PromoteResult:
    """Decide and, if the gate passes (or ``spec.force``), move ``@champion`` atomically; the decision is
    recorded on the version's tags (:func:`predrnn.tracking.registry.promote`).

    With ``spec.dataset`` both models are compared on their evaluations of that version: ``candidate`` and
    ``champion`` as a caller ran them (a flow, as tasks of its own), else evaluated here.

    Args:
        promoter: the account that moves the alias (:class:`predrnn.security.Account`, read at the door), or
            None for the store's own credentials.

    Raises:
        RegistryError: the store is unreachable, the version unknown, or the alias move failed (restored).
        JobError: an evaluation lacks the gate's score.
    """
    from predrnn.tracking.registry import promote

    if spec.dataset and candidate is None:
        _, candidate, champion = evaluate_models(spec)
    values: dict[str, Any] = {}
    if candidate is not None:
        values = {"candidate_value": gate_value(candidate, spec.metric), "dataset": candidate["dataset"],
                  "champion_value": None if champion is None else gate_value(champion, spec.metric)}
        if spec.must_beat:
            values["must_beat"] = (spec.must_beat, baseline_value(candidate, spec.must_beat, spec.metric))
        else:
            values["first_must_beat"] = strongest_baseline(candidate, spec.metric)
    decision = promote(spec.model_name, spec.version, force=spec.force, margin=spec.margin,
                       tracking_uri=spec.tracking_uri, metric=spec.metric, promoter=promoter, **values)
    return PromoteResult(decision=decision, candidate=candidate, champion=champion)
