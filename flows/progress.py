"""Training progress where the user looks: a Prefect progress artifact and the MLflow run, from a flow task.

Training runs in Ray workers that log their metrics to the MLflow run. While the task waits on it,
:class:`TrainingProgress` reads the run's latest logged iteration every few seconds and moves a
Prefect progress artifact (0..100 %), with a line in the flow-run log at each change; at the start
it publishes the MLflow run (id, store, a link to its page in its experiment) as a markdown artifact and
tags the run with the Prefect flow run's page, so each leads to the other.
"""

from __future__ import annotations

import contextvars
import threading
from types import TracebackType
from typing import Any

FLOW_RUN_TAG = "prefect.flow_run"  # on the MLflow run and the model version: the Prefect flow run's page


def flow_run_url() -> str | None:
    """The Prefect UI page of the flow run this code runs in (None outside a flow run)."""
    from prefect.runtime import flow_run

    return flow_run.ui_url


def link_run(tracking_uri: str, run_id: str) -> str | None:
    """Tag the MLflow run with the Prefect flow run's page (:data:`FLOW_RUN_TAG`); returns the run's
    experiment id (for a link to the run's page), None when the store cannot say. A link never stops
    training: a failure is logged."""
    from prefect import get_run_logger

    from predrnn.tracking import Tracker

    try:
        client = Tracker(tracking_uri, check=False).client
        url = flow_run_url()
        if url:
            client.set_tag(run_id, FLOW_RUN_TAG, url)
        return str(client.get_run(run_id).info.experiment_id)
    except Exception as err:
        get_run_logger().warning("could not link the MLflow run %s to this flow run: %s", run_id, err)
        return None


def link_model_version(tracking_uri: str, name: str, version: int | str) -> None:
    """Tag a registered model version with the Prefect flow run that made it (:data:`FLOW_RUN_TAG`)."""
    from prefect import get_run_logger

    from predrnn.tracking import Tracker

    url = flow_run_url()
    if not url:
        return
    try:
        Tracker(tracking_uri, check=False).client.set_model_version_tag(name, str(version), FLOW_RUN_TAG, url)
    except Exception as err:
        get_run_logger().warning("could not link %s v%s to this flow run: %s", name, version, err)


class TrainingProgress:
    """Use as ``with TrainingProgress(key, total, tracking_uri) as p: train(spec, on_start=p.start)``.

    Args:
        key: the artifacts' key prefix (lowercase letters, digits, dashes).
        total: the run's last iteration (``optim.max_iterations``).
        tracking_uri: the MLflow store the run logs to.
        every_s: seconds between two reads of the run's metrics.
    """

    def __init__(self, key: str, total: int, tracking_uri: str | None, every_s: float = 5.0) -> None:
        self.key, self.total, self.uri, self.every_s = key, max(1, int(total)), tracking_uri, every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._artifact: Any = None
        self._run_id: str | None = None
        self._last = -1

    def __enter__(self) -> TrainingProgress:
        from prefect.artifacts import create_progress_artifact

        self._artifact = create_progress_artifact(progress=0.0, key=f"{self.key}-progress",
                                                  description=f"training: iteration 0 of {self.total}")
        return self

    def start(self, run_id: str) -> None:
        """The MLflow run is open: publish it and start following its iterations."""
        from prefect import get_run_logger
        from prefect.artifacts import create_markdown_artifact

        from predrnn.tracking import ui_command

        self._run_id = run_id
        where = self.uri or ""
        experiment = link_run(where, run_id)
        link = (f"[open the run]({where.rstrip('/')}/#/experiments/{experiment}/runs/{run_id})"
                if where.startswith(("http://", "https://")) and experiment else f"`{ui_command(where)}`")
        create_markdown_artifact(key=f"{self.key}-mlflow-run", description="the MLflow run of this training",
                                 markdown=f"MLflow run `{run_id}` in `{where}`: {link}")
        get_run_logger().info("MLflow run %s in %s", run_id, where)
        ctx = contextvars.copy_context()  # the Prefect client and run context follow into the thread
        self._thread = threading.Thread(target=ctx.run, args=(self._follow,), daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.wait(self.every_s):
            self._update()

    def _update(self) -> None:
        from prefect import get_run_logger
        from prefect.artifacts import update_progress_artifact

        from predrnn.tracking import Tracker

        if self._run_id is None or not self.uri:
            return
        try:
            step = Tracker(self.uri, check=False).last_step(self._run_id, "loss") or 0
            if step != self._last:
                self._last = step
                update_progress_artifact(self._artifact, progress=100.0 * min(step, self.total) / self.total,
                                         description=f"training: iteration {step} of {self.total}")
                get_run_logger().info("training: iteration %d of %d", step, self.total)
        except Exception as err:  # a progress report never stops training
            get_run_logger().warning("progress report failed: %s", err)

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if kind is None:
            self._update()
