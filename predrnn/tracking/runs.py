"""MLflow runs: the store check, a run's params, metrics, artifacts and dataset input, and its model.

MLflow is imported inside functions only, so importing ``predrnn`` never touches MLflow. The tracking
URI is always passed in (a door resolves it: :meth:`predrnn.settings.Settings.tracking`, whose default
is a local SQLite store under the state folder with local artifacts next to it). An ``http(s)://``
tracking server works the same and is checked for reachability before a run starts (a clear
:class:`TrackingError`, never a silently lost run).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from predrnn import __version__
from predrnn.config import ExperimentConfig
from predrnn.errors import PredrnnError

CHALLENGER = "challenger"


class TrackingError(PredrnnError, RuntimeError):
    """The tracking store cannot be reached or refused a request."""


def default_tracking_uri(root: str | Path) -> str:
    """The embedded store in folder ``root``: ``sqlite:////abs/root/mlflow.db``."""
    return f"sqlite:///{Path(root).absolute() / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | None) -> str:
    """``uri`` (resolved at the door, :meth:`predrnn.settings.Settings.tracking`).

    Raises:
        TrackingError: no store given.
    """
    if not uri:
        raise TrackingError("no MLflow tracking URI given (the command or flow resolves it from its settings)")
    return uri


def artifact_root(uri: str) -> str | None:
    """Artifact location for new experiments: next to a SQLite file; the server decides otherwise."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return None


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on this store."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    root = artifact_root(uri)
    extra = f" --default-artifact-root {root}" if root else ""
    return f"mlflow ui --backend-store-uri {uri}{extra} --host 127.0.0.1 --port 5000"


def check_tracking(uri: str, *, timeout: float = 5.0) -> None:
    """Fail fast when the store is unusable: an unreachable server or an unwritable SQLite folder.

    Raises:
        TrackingError: naming the URI and the cause.
    """
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our own URI
                if resp.status != 200:
                    raise TrackingError(f"MLflow tracking server {uri} answered {resp.status} on /health")
        except (urllib.error.URLError, OSError) as err:
            raise TrackingError(f"MLflow tracking server {uri} is unreachable ({err}); start it, pass "
                                "--tracking-uri, or leave it empty for the local SQLite store") from err
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrackingError(f"cannot create the tracking folder {folder}: {err}") from err


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def git_commit() -> str | None:
    """The commit of the source tree this package runs from, if it is a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class MetricLogger:
    """Logs metric dicts to one run; a failing store is reported on stderr, training goes on."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self._client: Any = None
        self.failures = 0

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        if self._client is None:
            self._client = _client(self.tracking_uri)
        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, int(step)) for k, v in metrics.items() if np.isfinite(v)]
        try:
            for i in range(0, len(items), 1000):
                self._client.log_batch(self.run_id, metrics=items[i:i + 1000])
        except Exception as err:  # the run must survive a tracking outage; checkpoints still land
            self.failures += 1
            print(f"warning: MLflow logging failed at step {step} ({type(err).__name__}: {err}); "
                  "training continues", file=sys.stderr, flush=True)


class Tracker:
    """One training run in MLflow (driver side)."""

    def __init__(self, tracking_uri: str | None = None, *, check: bool = True) -> None:
        self.uri = resolve_tracking_uri(tracking_uri)
        if check:
            check_tracking(self.uri)
        self.client = _client(self.uri)

    def experiment_id(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return str(exp.experiment_id)
        return str(self.client.create_experiment(name, artifact_location=artifact_root(self.uri)))

    def start_run(self, cfg: ExperimentConfig, *, dataset: dict[str, Any], run_name: str,
                  tags: dict[str, str] | None = None) -> str:
        """Create the run: every config value as a param, the dataset as an input, source tags."""
        from mlflow.entities import Param

        all_tags = {"predrnn.version": __version__, "dataset.uri": dataset.get("uri", ""),
                    "dataset.version": str(dataset.get("version", "")), **(tags or {})}
        commit = git_commit()
        if commit:
            all_tags["mlflow.source.git.commit"] = commit
        try:
            run = self.client.create_run(self.experiment_id(cfg.tracking.experiment), run_name=run_name,
                                         tags=all_tags)
        except Exception as err:
            raise TrackingError(f"cannot create an MLflow run in {self.uri}: {err}") from err
        run_id = run.info.run_id
        params = [Param(k, json.dumps(v) if isinstance(v, list | dict) else str(v))
                  for k, v in cfg.flat().items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[i:i + 100])
        self.log_dataset(run_id, dataset)
        return run_id

    def log_dataset(self, run_id: str, dataset: dict[str, Any], context: str = "training") -> None:
        """Record the resolved dataset version as a run input: name ``NAME@VERSION``, digest the version id
        (the content hash's first 16 hex digits), source its URI, and a profile with the full SHA-256
        ``content_hash``, the clip count and the splits (``dataset``: :meth:`predrnn.data.info.DatasetInfo.to_dict`)."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.entities import Dataset, DatasetInput, InputTag

        uri = str(dataset.get("uri", ""))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                source = resolve_dataset_source(uri)
        except Exception:  # an unusual scheme: keep the URI as an opaque source
            from mlflow.data.http_dataset_source import HTTPDatasetSource

            source = HTTPDatasetSource(uri)
        shape = list(dataset.get("shape") or [])
        profile = {"content_hash": dataset.get("content_hash", ""), "clips": shape[0] if shape else None,
                   "splits": dataset.get("splits", {})}
        schema = {"clips": {"shape": shape, "dtype": dataset.get("dtype", ""),
                            "axes": ["clip", "time", "y", "x", "channel"]}}
        entity = Dataset(name=f"{dataset.get('name', 'dataset')}@{dataset.get('version', '')}",
                         digest=str(dataset.get("version", ""))[:36], source_type=source._get_source_type(),
                         source=source.to_json(), schema=json.dumps(schema), profile=json.dumps(profile))
        self.client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context",
                                                                                      context)])])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        MetricLogger(self.uri, run_id).log(metrics, step)

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v))

    def end_run(self, run_id: str, status: str = "FINISHED", error: str | None = None) -> None:
        """End the run FINISHED, FAILED or KILLED; ``error`` (one line) is kept as the tag ``error``."""
        if error:
            self.client.set_tag(run_id, "error", error.strip().splitlines()[0][:4000] if error.strip() else error)
        self.client.set_terminated(run_id, status=status)

    def reopen_run(self, run_id: str) -> None:
        """Mark a resumed run RUNNING again (it ended FINISHED, FAILED or KILLED before)."""
        self.client.update_run(run_id, status="RUNNING")

    def open_run(self, experiment: str, *, run_name: str, tags: dict[str, str]) -> str:
        """A bare run (no config params) in ``experiment``, e.g. an evaluation; returns its id."""
        try:
            return str(self.client.create_run(self.experiment_id(experiment), run_name=run_name,
                                              tags=tags).info.run_id)
        except Exception as err:
            raise TrackingError(f"cannot create an MLflow run in {self.uri}: {err}") from err

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Log params (values as strings; MLflow keeps a param's first value for good)."""
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def run_params(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.params)

    def run_tags(self, run_id: str) -> dict[str, str]:
        """The tags of run ``run_id``.

        Raises:
            TrackingError: no such run in this store.
        """
        try:
            return dict(self.client.get_run(run_id).data.tags)
        except Exception as err:
            raise TrackingError(f"no MLflow run {run_id} in {self.uri}: {err}") from err

    def last_step(self, run_id: str, key: str) -> int | None:
        """The latest step logged for metric ``key`` of run ``run_id`` (None: none yet)."""
        history = self.client.get_metric_history(run_id, key)
        return max((int(m.step) for m in history), default=None)

    def find_run(self, experiment: str, tags: dict[str, str]) -> str | None:
        """The id of the run of ``experiment`` carrying all ``tags``, or None."""
        where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self.experiment_id(experiment)], filter_string=where, max_results=1)
        return str(runs[0].info.run_id) if runs else None


def log_benchmark(result: dict[str, Any], tracking_uri: str, *, experiment: str = "predrnn-bench",
                  run_name: str | None = None) -> str:
    """Record one benchmark result as an MLflow run: its numbers as metrics, everything else (device,
    torch version, config) as params; returns the run id.

    Raises:
        TrackingError: the store is unreachable.
    """
    from mlflow.entities import Metric, Param

    tracker = Tracker(tracking_uri)
    tags = {"predrnn.version": __version__, "predrnn.kind": "benchmark"}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    try:
        run = tracker.client.create_run(tracker.experiment_id(experiment), run_name=run_name, tags=tags)
    except Exception as err:
        raise TrackingError(f"cannot create an MLflow run in {tracker.uri}: {err}") from err
    run_id = run.info.run_id
    ts = int(time.time() * 1000)
    metrics = [Metric(k, float(v), ts, 0) for k, v in result.items()
               if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)]
    params = [Param(k, (json.dumps(v) if isinstance(v, list | dict) else str(v))[:6000]) for k, v in result.items()
              if not (isinstance(v, int | float) and not isinstance(v, bool))]
    tracker.client.log_batch(run_id, metrics=metrics, params=params)
    tracker.client.set_terminated(run_id, "FINISHED")
    return str(run_id)
