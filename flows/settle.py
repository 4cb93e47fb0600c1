"""What a flow run killed mid-way could not end itself: its MLflow run and its task runs.

A flow run whose process is killed (a lost machine, ``kill -9``, a worker restart) is set to ``Crashed``
by whoever notices (the stack's worker restart, Prefect's heartbeat automation), but the MLflow run it
had opened still reads ``RUNNING`` with no end time, and its task runs still read ``Running``. Each train
and nightly run starts by settling those: an MLflow run tagged with a flow run's page
(:data:`flows.progress.FLOW_RUN_TAG`) whose flow run is over ends ``KILLED``, with the flow run's final
state as a tag, and that flow run's unfinished task runs end ``Crashed``. Runs of flow runs still going
are left alone, so two runs at once do not settle each other.
"""

from __future__ import annotations

from uuid import UUID

from prefect import get_run_logger, task

from flows.progress import FLOW_RUN_TAG

FINAL = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")
ENDED_TAG = "prefect.flow_run.ended"  # on a settled MLflow run: the flow run's final state and its message


def settle_cut_off_runs(tracking_uri: str, *, own: str | None = None) -> list[str]:
    """End the MLflow runs left ``RUNNING`` by flow runs that are over, and those flow runs' task runs.

    Args:
        tracking_uri: the MLflow store (every experiment of it is searched).
        own: this flow run's id, never settled.

    Returns:
        The ids of the MLflow runs ended ``KILLED``.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    from predrnn.tracking import Tracker

    mlflow = Tracker(tracking_uri, check=False).client
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    if not experiments:
        return []
    running = [r for r in mlflow.search_runs(experiments, filter_string="attributes.status = 'RUNNING'",
                                             max_results=1000) if r.data.tags.get(FLOW_RUN_TAG)]
    ended: list[str] = []
    with get_client(sync_client=True) as client:
        for run in running:
            flow_run_id = run.data.tags[FLOW_RUN_TAG].rstrip("/").rsplit("/", 1)[-1]
            if flow_run_id == own:
                continue
            try:
                state = client.read_flow_run(UUID(flow_run_id)).state
            except Exception:  # noqa: BLE001 - a run of another Prefect, or one deleted: not ours to settle
                continue
            if state is None or state.type.value not in FINAL:
                continue
            why = f"its flow run ended {state.name}" + (f": {state.message}" if state.message else "")
            mlflow.set_tag(run.info.run_id, ENDED_TAG, why[:5000])
            mlflow.set_terminated(run.info.run_id, "KILLED")
            ended.append(str(run.info.run_id))
            unfinished = TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(
                any_=[StateType.PENDING, StateType.RUNNING])))
            for task_run in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(
                    any_=[UUID(flow_run_id)])), task_run_filter=unfinished):
                client.set_task_run_state(task_run.id, Crashed(message=why), force=True)
    return ended


@task(name="settle-cut-off-runs")
def settle_task(tracking_uri: str) -> list[str]:
    """:func:`settle_cut_off_runs` at the start of a flow run (never settling it); a failure is a warning, never
    the end of the run."""
    from prefect.runtime import flow_run

    log = get_run_logger()
    try:
        ended = settle_cut_off_runs(tracking_uri, own=flow_run.id)
    except Exception as err:  # noqa: BLE001 - housekeeping never stops a training
        log.warning("could not settle the runs of earlier crashed flow runs: %s", err)
        return []
    if ended:
        log.info("ended %d MLflow run(s) left RUNNING by flow runs that are over: %s", len(ended), ", ".join(ended))
    return ended
