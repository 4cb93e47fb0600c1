"""The MLflow edge: runs, metrics, artifacts, the logged pyfunc model and the registry.

Only this module and :mod:`predrnn.train` import MLflow, and only inside functions, so importing
``predrnn`` never touches MLflow. The tracking URI is always passed in; when none is configured
the embedded default is a local SQLite store under ``.state/mlflow`` with local artifacts next to
it. An ``http(s)://`` tracking server works the same and is checked for reachability before a
run starts (a clear :class:`TrackingError`, never a silently lost run).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from predrnn import __version__
from predrnn.config import ExperimentConfig
from predrnn.errors import PredrnnError

CHALLENGER = "challenger"


class TrackingError(PredrnnError, RuntimeError):
    """The tracking store cannot be reached or refused a request."""


def state_dir() -> Path:
    """Where the pipeline keeps local state: ``$PREDRNN_STATE_DIR`` or ``./.state``."""
    return Path(os.environ.get("PREDRNN_STATE_DIR") or Path.cwd() / ".state").absolute()


def default_tracking_uri(root: str | Path | None = None) -> str:
    """The embedded default store: ``sqlite:////abs/.state/mlflow/mlflow.db``."""
    base = Path(root).absolute() if root else state_dir() / "mlflow"
    return f"sqlite:///{base / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else the embedded default."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


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


@contextlib.contextmanager
def using(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for the duration of a block, then restore it."""
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)  # the registry URI follows the tracking URI when unset
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]  # None unsets it again


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
        import time

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
        """Record the dataset version as a run input (source = its resolved URI)."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        uri = str(dataset.get("uri", ""))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                source = resolve_dataset_source(uri)
        except Exception:  # an unusual scheme: keep the URI as an opaque source
            from mlflow.data.http_dataset_source import HTTPDatasetSource

            source = HTTPDatasetSource(uri)
        name = f"{dataset.get('name', 'dataset')}@{dataset.get('version', '')}"
        meta = MetaDataset(source=source, name=name,  # type: ignore[abstract]
                           digest=str(dataset.get("version", ""))[:36])
        entity = meta._to_mlflow_entity()
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

    def log_and_register(self, run_id: str, model_dir: str | Path, cfg: ExperimentConfig, example: np.ndarray,
                         *, version_tags: dict[str, Any]) -> dict[str, Any]:
        """Log the model directory as a pyfunc forecaster and register it with alias ``challenger``.

        Args:
            model_dir: a directory written by :func:`predrnn.checkpoint.save_model_dir`.
            example: context clips (B >= 2, input_length, H, W, C) float32 used as the input example.
            version_tags: tags set on the new model version (dataset, test metrics).

        Returns:
            ``{"name", "version", "model_uri" (models:/NAME/VERSION), "logged_model_uri", "alias"}``.
        """
        import mlflow
        import torch
        from mlflow.models import ModelSignature
        from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

        if example.shape[0] < 2:
            raise ValueError("the input example needs at least 2 clips (a batch of 1 pins the batch size)")
        d = cfg.data
        horizon = d.total_length - d.input_length
        # No input schema: MLflow would pin one dtype and one context length, while a forecast takes any
        # T_in >= 1, integers 0..255 or floats of any width, and (without layer norm) any frame size
        # divisible by the patch; the model checks its input itself (predrnn.predict.check_context)
        # and answers a bad one with a one-line error (HTTP 400 in ``serve``).
        size = (d.img_height, d.img_width) if cfg.model.layer_norm else (-1, -1)
        signature = ModelSignature(
            inputs=None,
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, *size, d.img_channel))]),
            params=ParamSchema([ParamSpec("horizon", "long", horizon)]),
        )
        package_dir = Path(__file__).resolve().parent
        reqs = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}", "einops"]
        name = cfg.tracking.registered_model
        with using(self.uri), mlflow.start_run(run_id=run_id), warnings.catch_warnings():
            # MLflow nags about type hints and cloudpickle; the signature above is explicit.
            warnings.simplefilter("ignore", UserWarning)
            info = mlflow.pyfunc.log_model(
                name="model", python_model=forecast_model_class()(), artifacts={"model_dir": str(model_dir)},
                code_paths=[str(package_dir)], signature=signature,
                input_example=example.astype(np.float32), pip_requirements=reqs,
            )
            mv = mlflow.register_model(info.model_uri, name,
                                       tags={k: str(v) for k, v in version_tags.items()})
        self.client.set_registered_model_alias(name, CHALLENGER, mv.version)
        return {"name": name, "version": int(mv.version), "model_uri": f"models:/{name}/{mv.version}",
                "logged_model_uri": info.model_uri, "alias": f"models:/{name}@{CHALLENGER}"}


def _python_model_base() -> type:
    import mlflow.pyfunc

    return mlflow.pyfunc.PythonModel


def _input_error_class() -> type:
    from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

    class ForecastInputError(MlflowException):  # type: ignore[misc]
        """A context the model cannot take: HTTP 400 with the one-line reason.

        MLflow's scoring server prefixes the message of an error raised by ``predict`` with the whole
        request body (``Failed to predict data '<array>'. Error: ...``); the reason alone is kept.
        """

        def __init__(self, message: str) -> None:
            super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

        @property
        def message(self) -> str:
            return self._reason

        @message.setter
        def message(self, value: str) -> None:
            self._reason = value.rsplit("\nError: ", 1)[-1] if value.startswith("Failed to predict data") else value

    return ForecastInputError


def _context_array(model_input: Any) -> np.ndarray:
    """The request's context as an array; JSON nulls (an object array) become NaN, no data."""
    if isinstance(model_input, dict):  # a named-tensor request
        model_input = next(iter(model_input.values()))
    x = np.asarray(model_input)  # integers stay integers (0..255 levels) for image models
    if x.dtype == object:
        try:
            missing = np.vectorize(lambda v: v is None, otypes=[bool])(x)
            x = np.where(missing, np.nan, x).astype(np.float64)
        except (TypeError, ValueError):
            from predrnn.predict import PredictError

            raise PredictError("the context must be numbers (null = no data)") from None
    return x


def _make_forecast_model() -> type:
    base = _python_model_base()
    input_error = _input_error_class()

    class ForecastModel(base):  # type: ignore[misc, valid-type]
        """Pyfunc wrapper: ``predict(context (B, T_in, H, W, C) float32, params={"horizon": N})``.

        The context is in the data's units (an image model: floats in [0, 1] or uint8; a field
        model: e.g. mm/h, NaN = no data); returns the forecast (B, N, H, W, C) float32 in the same
        units (images in [0, 1]). The weights and config (with the values' transform: units, valid
        range, training-split normalisation) are the model directory artifact ``model_dir``;
        ``self.model`` and ``self.cfg`` expose them.
        """

        def load_context(self, context: Any) -> None:
            from predrnn.checkpoint import load_model_dir

            self.model, self.cfg = load_model_dir(context.artifacts["model_dir"])

        def predict(self, context: Any, model_input: np.ndarray,
                    params: dict[str, Any] | None = None) -> np.ndarray:
            from predrnn.predict import PredictError, forecast_array

            cfg = self.cfg
            horizon = int((params or {}).get("horizon") or cfg.data.total_length - cfg.data.input_length)
            try:
                return forecast_array(self.model, cfg, _context_array(model_input), horizon)
            except PredictError as err:  # one line, HTTP 400 in the scoring server; never the array
                raise input_error(str(err)) from None

    ForecastModel.__module__ = __name__
    ForecastModel.__qualname__ = "ForecastModel"
    return ForecastModel


def forecast_model_class() -> type:
    """The pyfunc class; it subclasses MLflow's PythonModel, so it is built on first use only."""
    cls = globals().get("ForecastModel")
    if cls is None:
        with warnings.catch_warnings():  # MLflow warns about the untyped predict() at class creation
            warnings.simplefilter("ignore", UserWarning)
            cls = _make_forecast_model()
        globals()["ForecastModel"] = cls
    return cls


def __getattr__(name: str) -> Any:
    # Unpickling a logged model looks the class up by name: build it then.
    if name == "ForecastModel":
        return forecast_model_class()
    raise AttributeError(name)


def load_forecaster(ref: str, *, tracking_uri: str | None = None) -> tuple[Any, ExperimentConfig]:
    """``(nn.Module, ExperimentConfig)`` of a model directory, or of an MLflow registry URI
    (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/...``) from ``tracking_uri``.

    Raises:
        CheckpointError: a model directory that cannot be read.
        TrackingError: the store is unreachable or the reference does not resolve.
    """
    if ref.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        return load_registered_model(ref, tracking_uri=tracking_uri)
    from predrnn.checkpoint import load_model_dir

    return load_model_dir(ref)


def load_registered_model(ref: str, tracking_uri: str | None = None) -> tuple[Any, ExperimentConfig]:
    """``(nn.Module, ExperimentConfig)`` for ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/...``.

    Raises:
        TrackingError: the store is unreachable or the reference does not resolve.
    """
    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    check_tracking(uri)
    try:
        with using(uri):
            loaded = mlflow.pyfunc.load_model(ref)
    except Exception as err:
        raise TrackingError(f"cannot load {ref} from {uri}: {type(err).__name__}: {err}") from err
    inner = loaded.unwrap_python_model()
    return inner.model, inner.cfg
