"""Progress where the user looks: a flow's phases on one Prefect progress artifact, and the MLflow run.

:class:`Phases` is a flow's list of phases (checking the data, starting Ray, training, evaluating,
registering, comparing, the promotion gate), each with its share of the bar; entering one moves the progress
artifact ``<key>-progress`` to its start, names it in the artifact's description and writes a line in
the flow-run log. Tasks get it as a dict and move the same artifact.

Training runs in Ray workers that log their metrics to the MLflow run. While the task waits on it,
:class:`TrainingProgress` reads the run's latest logged iteration every second and moves the bar
within the training phase (iteration, ETA); until the first iteration is logged the phase is "starting
Ray". At the start it publishes the MLflow run (id, store, a link to its page in its experiment) as a
markdown artifact and tags the run with the Prefect flow run's page, so each leads to the other.
"""

from __future__ import annotations

import contextvars
import threading
import time
from types import TracebackType
from typing import Any

FLOW_RUN_TAG = "prefect.flow_run"  # on the MLflow run and the model version: the Prefect flow run's page


def flow_run_url() -> str | None:
    """The Prefect UI page of the flow run this code runs in (None outside a flow run), at the UI's own path
    ``<ui>/runs/flow-run/<id>`` (the one its links and the failure notification use)."""
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_UI_URL

    run_id, ui = flow_run.id, PREFECT_UI_URL.value()
    return f"{str(ui).rstrip('/')}/runs/flow-run/{run_id}" if run_id and ui else None


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


NIGHTLY_PHASES = {"checking the data": 5, "starting Ray": 10, "training": 50, "evaluating": 10, "registering": 5,
                  "comparing with the champion": 15, "promotion gate": 5}
TRAIN_PHASES = {"resolving the run": 5, "starting Ray": 10, "training": 65, "evaluating": 15, "registering": 5}


def _minutes(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class Phases:
    """A flow's phases on the progress artifact ``<key>-progress`` and in the flow-run log.

    Args:
        key: the artifact's key prefix (lowercase letters, digits, dashes).
        weights: phase name -> its share of the bar (any positive numbers, in the phases' order).
        artifact_id: the artifact to move (None: :meth:`create` makes it).
        t0: the flow's start (epoch seconds), for the elapsed time in each log line.

    A progress report never stops the work it reports on: a failed update is a warning in the log.
    """

    def __init__(self, key: str, weights: dict[str, float], artifact_id: str | None = None,
                 t0: float | None = None) -> None:
        self.key, self.weights, self.artifact_id = key, dict(weights), artifact_id
        self.t0 = time.time() if t0 is None else t0
        total = sum(self.weights.values())
        edges, acc = {}, 0.0
        for name, w in self.weights.items():
            edges[name] = (100.0 * acc / total, 100.0 * (acc + w) / total)
            acc += w
        self._edges = edges
        self.current: str | None = None
        self._tenths = 0  # tenths of the current phase already written to the log

    @classmethod
    def create(cls, key: str, weights: dict[str, float]) -> Phases:
        """The phases with a new progress artifact at 0 % (call in the flow, once)."""
        from prefect.artifacts import create_progress_artifact

        first = next(iter(weights))
        phases = cls(key, weights)
        phases.artifact_id = str(create_progress_artifact(progress=0.0, key=f"{key}-progress",
                                                          description=f"1 of {len(weights)}: {first}"))
        return phases

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "weights": self.weights, "artifact_id": self.artifact_id, "t0": self.t0}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Phases | None:
        return None if data is None else cls(data["key"], data["weights"], data.get("artifact_id"), data.get("t0"))

    def enter(self, name: str, detail: str = "") -> None:
        """Phase ``name`` starts: the bar at its start, its name in the description, a log line.

        Raises:
            KeyError: ``name`` is not one of the phases.
        """
        lo, _ = self._edges[name]
        self.current, self._tenths = name, 0
        self._show(lo, detail)

    def within(self, fraction: float, detail: str) -> None:
        """The current phase is ``fraction`` (0..1) done; ``detail`` says how far (e.g. the iteration).

        The bar moves at every call; the log gets a line each time another tenth of the phase is done."""
        if self.current is None:
            return
        lo, hi = self._edges[self.current]
        fraction = min(max(fraction, 0.0), 1.0)
        tenths = int(fraction * 10 + 1e-9)
        log = tenths > self._tenths
        self._tenths = max(self._tenths, tenths)
        self._show(lo + (hi - lo) * fraction, detail, log=log)

    def done(self, detail: str = "done") -> None:
        """Every phase is done: the bar at 100 %."""
        self.current = None
        text = f"{detail} (after {_minutes(time.time() - self.t0)})"
        self._update(100.0, text, text)

    def _show(self, progress: float, detail: str, log: bool = True) -> None:
        assert self.current is not None
        number = list(self.weights).index(self.current) + 1
        text = f"{number} of {len(self.weights)}: {self.current}" + (f" ({detail})" if detail else "")
        self._update(progress, text, f"phase {text}; {_minutes(time.time() - self.t0)} since the start" if log
                     else None)

    def _update(self, progress: float, description: str, line: str | None) -> None:
        from prefect import get_run_logger
        from prefect.artifacts import update_progress_artifact

        log = get_run_logger()
        if line is not None:
            log.info("%s", line)
        if self.artifact_id is None:
            return
        try:
            update_progress_artifact(self.artifact_id, progress=round(progress, 1), description=description)
        except Exception as err:
            log.warning("progress report failed: %s", err)


class TrainingProgress:
    """Use as ``with TrainingProgress(phases, total, tracking_uri) as p: train(spec, on_start=p.start)``.

    Args:
        phases: the flow's :class:`Phases` (with ``starting Ray`` and ``training``).
        total: the run's last iteration (``optim.max_iterations``).
        tracking_uri: the MLflow store the run logs to.
        every_s: seconds between two reads of the run's metrics.
    """

    def __init__(self, phases: Phases, total: int, tracking_uri: str | None, every_s: float = 1.0) -> None:
        self.phases, self.total, self.uri, self.every_s = phases, max(1, int(total)), tracking_uri, every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._run_id: str | None = None
        self._last = -1
        self._first: tuple[float, int] | None = None  # (when, iteration) of the first iteration seen

    def __enter__(self) -> TrainingProgress:
        return self

    def start(self, run_id: str) -> None:
        """The MLflow run is open: publish it, enter ``starting Ray`` and follow its iterations."""
        from prefect import get_run_logger
        from prefect.artifacts import create_markdown_artifact

        from predrnn.tracking import ui_command

        self._run_id = run_id
        where = self.uri or ""
        experiment = link_run(where, run_id)
        link = (f"[open the run]({where.rstrip('/')}/#/experiments/{experiment}/runs/{run_id})"
                if where.startswith(("http://", "https://")) and experiment else f"`{ui_command(where)}`")
        create_markdown_artifact(key=f"{self.phases.key}-mlflow-run", description="the MLflow run of this training",
                                 markdown=f"MLflow run `{run_id}` in `{where}`: {link}")
        get_run_logger().info("MLflow run %s in %s", run_id, where)
        self.phases.enter("starting Ray", "the cluster and the workers")
        ctx = contextvars.copy_context()  # the Prefect client and run context follow into the thread
        self._thread = threading.Thread(target=ctx.run, args=(self._follow,), daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.wait(self.every_s):
            self._update()

    def _update(self) -> None:
        from prefect import get_run_logger

        from predrnn.tracking import Tracker

        if self._run_id is None or not self.uri:
            return
        try:
            step = Tracker(self.uri, check=False).last_step(self._run_id, "loss") or 0
        except Exception as err:  # a progress report never stops training
            get_run_logger().warning("progress report failed: %s", err)
            return
        if step == self._last or step <= 0:
            return
        self._last = step
        now = time.time()
        if self._first is None:
            self._first = (now, step)
            self.phases.enter("training")
        since, at = self._first
        eta = ""
        if step > at and step < self.total:
            eta = f", about {_minutes((self.total - step) * (now - since) / (step - at))} left"
        self.phases.within(step / self.total, f"iteration {min(step, self.total)} of {self.total}{eta}")

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if kind is None:
            self._update()
