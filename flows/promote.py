"""Prefect flow ``promote``: the promotion gate, optionally after evaluating both models on one test set.

With ``dataset`` given, the candidate and the current champion are evaluated on the same split of
that version and those numbers are compared; otherwise the test metrics recorded on each version
at registration are compared (only if they came from the same dataset). Either way the decision
is recorded in MLflow tags and in a Prefect artifact.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.evaluate import evaluate_task
from flows.settings import PipelineSettings

FAILURE_RECORD_WAIT_S = 60.0  # how long a failed promotion waits for the store to record the failure


@task(name="current-champion", retries=2, retry_delay_seconds=5)
def champion_task(model_name: str, tracking_uri: str | None) -> int | None:
    """The champion version, or None (also when the model is not registered yet)."""
    from predrnn.tracking.registry import current_champion

    return current_champion(model_name, tracking_uri=tracking_uri, missing_ok=True)


@task(name="promotion-gate")
def gate_task(model_name: str, version: int, *, force: bool, margin: float, tracking_uri: str,
              candidate: dict[str, Any] | None = None, champion: dict[str, Any] | None = None,
              metric: str = "test_mse", must_beat: str | None = None) -> dict[str, Any]:
    """The gate (:func:`predrnn.jobs.promote.run_promote`) on the evaluations the flow ran (or, without them,
    on the scores recorded at registration); if it passes (or ``force``), ``champion`` moves atomically.

    A promotion that fails (the store down mid-way) is recorded as ``promotion.decision=failed`` with the
    error, waiting up to ``FAILURE_RECORD_WAIT_S`` for the store to come back, and reported as a
    ``promotion`` artifact before the task fails. The alias moves as the promoter
    (``PREDRNN_PROMOTER_USERNAME``/``PREDRNN_PROMOTER_PASSWORD``, the stack's ``promoter`` account)."""
    from predrnn.jobs.promote import prepare_promote, run_promote
    from predrnn.settings import Settings
    from predrnn.tracking.registry import RegistryError, record_failure

    spec = prepare_promote(model_name, version, metric=metric, margin=margin, force=force, tracking_uri=tracking_uri,
                           dataset=candidate["dataset"] if candidate else None, must_beat=must_beat)
    try:  # the promoter's account is read here, in the flow's process: never a parameter of the task
        result = run_promote(spec, promoter=Settings().promoter(), candidate=candidate, champion=champion)
    except RegistryError as err:
        written = record_failure(model_name, version, str(err), tracking_uri=tracking_uri,
                                 wait_s=FAILURE_RECORD_WAIT_S)
        note = ("recorded on the version as `promotion.decision=failed`" if written else
                "the store stayed unreachable: the version reads `pending` until the next promotion settles it")
        create_markdown_artifact(key="promotion", markdown=f"**promotion of {model_name} v{version} failed**: "
                                 f"{err}\n\n{note}", description=f"{model_name} v{version}: failed")
        raise
    return {**result.to_dict(), "markdown": result.decision.markdown()}


def publish_decision(decision: dict[str, Any], extra: str = "") -> None:
    """The decision as a Prefect artifact (key ``promotion``)."""
    create_markdown_artifact(key="promotion", markdown=decision["markdown"] + ("\n\n" + extra if extra else ""),
                             description=f"{decision['model']} v{decision['candidate']}: "
                                         f"{decision['verdict']}")


@flow(name="promote", log_prints=True)
def promote_flow(
    version: Annotated[int, Field(ge=1, description="the candidate model version")],
    model_name: str | None = None,
    force: bool = False,
    margin: Annotated[float | None, Field(ge=0, lt=1)] = None,
    dataset: str | None = None,
    tracking_uri: str | None = None,
    metric: Annotated[str, Field(min_length=2, description="score the gate compares: mse, csi_m, "
                                 "csi_<thr>, fss_<thr>_n<N>, ...")] = "mse",
    must_beat: Annotated[Literal["persistence", "extrapolation", "sprog"] | None, Field(
        description="a baseline the candidate must also beat on the metric (needs dataset)")] = None,
) -> dict[str, Any]:
    """Promote ``version`` of ``model_name`` to ``champion`` if it beats the champion by ``margin`` on ``metric``.

    Args:
        version: the candidate version.
        model_name: registered model (default ``$PREDRNN_MODEL_NAME`` or ``predrnn-v2``).
        force: move the alias whatever the comparison says (recorded as forced).
        margin: relative improvement in test MSE required (default ``$PREDRNN_PROMOTION_MARGIN`` or 0.01).
        dataset: evaluate both models on this version's test split first (recommended).
        tracking_uri: MLflow store (default ``$MLFLOW_TRACKING_URI``).
        metric: the score compared (mean over lead times), its direction known (:mod:`predrnn.scorecard`).
        must_beat: a baseline the candidate must also beat on ``metric`` in its evaluation of ``dataset``.
    """
    from predrnn.jobs.promote import prepare_promote

    settings = PipelineSettings()
    name = model_name or settings.model_name
    # every option checked before any evaluation (an unknown score, a margin out of range)
    spec = prepare_promote(name, version, metric=metric, margin=settings.margin if margin is None else margin,
                           force=force, tracking_uri=settings.tracking(tracking_uri), dataset=dataset,
                           must_beat=must_beat)
    cand = champ = None
    table = ""
    if dataset:
        champion = champion_task(name, spec.tracking_uri)
        cand = evaluate_task(f"models:/{name}/{version}", dataset, "test", 0, spec.tracking_uri,
                             cache_dir=str(settings.model_cache), s3=settings.s3())
        table = f"candidate v{version}:\n```\n{cand['table']}\n```\n\n{cand['scorecard']}"
        if champion is not None and champion != version:
            champ = evaluate_task(f"models:/{name}/{champion}", cand["dataset"], "test", 0, spec.tracking_uri,
                                  cache_dir=str(settings.model_cache), s3=settings.s3())
            table += f"\n\nchampion v{champion}:\n```\n{champ['table']}\n```\n\n{champ['scorecard']}"
    decision = gate_task(name, version, force=force, margin=spec.margin, tracking_uri=spec.tracking_uri,
                         candidate=cand, champion=champ, metric=spec.metric, must_beat=spec.must_beat)
    get_run_logger().info("%s v%s: %s (%s)", name, version, "promoted" if decision["promoted"] else "refused",
                          decision["reason"])
    publish_decision(decision, table)
    return {k: v for k, v in decision.items() if k != "markdown"}
