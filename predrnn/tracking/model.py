"""The logged model: a pyfunc forecaster around a model directory, logged and loaded through a client.

No process-wide tracking URI is set: logging goes through the caller's ``MlflowClient`` (MLflow 3's
logged-model API), loading downloads the artifacts from the store named by the caller.
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from predrnn.config import ExperimentConfig
from predrnn.tracking.runs import CHALLENGER, TrackingError, check_tracking, resolve_tracking_uri

MODEL_NAME = "model"


def signature(cfg: ExperimentConfig) -> Any:
    """The pyfunc signature: what ``predict`` takes and gives, as MLflow shows it under Schema.

    Input: the context (clips, T_in, H, W, C) with any number of clips and any context length T_in >= 1;
    an image model takes 8-bit levels (uint8 0..255), a field model float32 in the data's units (NaN = no
    data). H and W are the trained frame size with layer norm, else any (multiples of the patch size).
    Output: the forecast (clips, horizon, H, W, C) float32 in the data's units; ``params={"horizon": N}``.

    MLflow enforces the input's dtype exactly (:func:`mlflow.pyfunc.load_model`'s ``predict``); ``predict``,
    ``forecast`` and ``serve`` take more (image floats in [0, 1], integer levels of any width, fields of any
    float width: :func:`predrnn.predict.check_context`), checked by the model itself.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    d = cfg.data
    size = (d.img_height, d.img_width) if cfg.model.layer_norm else (-1, -1)
    return ModelSignature(inputs=Schema([TensorSpec(input_dtype(cfg), (-1, -1, *size, d.img_channel))]),
                          outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, *size, d.img_channel))]),
                          params=ParamSchema([ParamSpec("horizon", "long", d.total_length - d.input_length)]))


def input_dtype(cfg: ExperimentConfig) -> np.dtype:
    """The dtype of the input schema: uint8 for an image model (8-bit levels), float32 for a field."""
    return np.dtype(np.float32) if cfg.values.kind == "field" else np.dtype(np.uint8)


def schema_example(cfg: ExperimentConfig, example: np.ndarray) -> np.ndarray:
    """Context clips in the data's units (images as floats in [0, 1]) as the input schema's dtype."""
    if input_dtype(cfg) == np.uint8:
        return np.clip(np.rint(np.asarray(example, np.float64) * 255.0), 0, 255).astype(np.uint8)
    return np.asarray(example, np.float32)


def log_forecaster(client: Any, experiment_id: str, run_id: str, model_dir: str | Path, cfg: ExperimentConfig,
                   example: np.ndarray) -> tuple[str, str]:
    """Log ``model_dir`` as a pyfunc model of run ``run_id``; returns the logged model's id and artifact
    location.

    Raises:
        ValueError: ``example`` holds fewer than 2 clips (a batch of 1 would pin the batch size).
    """
    import mlflow
    import torch
    from mlflow.entities import LoggedModelStatus
    from mlflow.models import Model

    if example.shape[0] < 2:
        raise ValueError("the input example needs at least 2 clips (a batch of 1 pins the batch size)")
    package_dir = Path(__file__).resolve().parents[1]
    reqs = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}", "einops"]
    logged = client.create_logged_model(experiment_id=experiment_id, name=MODEL_NAME, source_run_id=run_id)
    try:
        with tempfile.TemporaryDirectory(prefix="predrnn-pyfunc-") as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # type hints and cloudpickle nags; the signature is explicit
            local = Path(tmp) / MODEL_NAME
            meta = Model(artifact_path=MODEL_NAME, run_id=run_id, model_id=logged.model_id)
            mlflow.pyfunc.save_model(str(local), mlflow_model=meta, python_model=forecast_model_class()(),
                                     artifacts={"model_dir": str(model_dir)}, code_paths=[str(package_dir)],
                                     signature=signature(cfg), input_example=schema_example(cfg, example),
                                     pip_requirements=reqs)
            client.log_model_artifacts(logged.model_id, str(local))
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return str(logged.model_id), str(logged.artifact_location)


def register_forecaster(tracker: Any, run_id: str, model_dir: str | Path, cfg: ExperimentConfig, example: np.ndarray,
                        *, version_tags: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    """Log the model directory as a pyfunc forecaster of run ``run_id`` and register it as a new version of
    ``cfg.tracking.registered_model`` with alias ``challenger``, through ``tracker``'s client.

    Args:
        tracker: a :class:`predrnn.tracking.Tracker` on the run's store.
        model_dir: a directory written by :func:`predrnn.checkpoint.save_model_dir`.
        example: context clips (B >= 2, input_length, H, W, C) float32 used as the input example.
        version_tags: tags set on the new model version (dataset, the gate's test scores).
        description: the version's description (markdown).

    Returns:
        ``{"name", "version", "model_uri" (models:/NAME/VERSION), "logged_model_uri", "alias"}``.
    """
    client = tracker.client
    name = cfg.tracking.registered_model
    experiment_id = client.get_run(run_id).info.experiment_id
    model_id, location = log_forecaster(client, experiment_id, run_id, model_dir, cfg, example)
    with contextlib.suppress(Exception):  # already registered
        client.create_registered_model(name)
    mv = client.create_model_version(name, source=location, run_id=run_id, model_id=model_id,
                                     tags={k: str(v) for k, v in version_tags.items()}, description=description)
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    return {"name": name, "version": int(mv.version), "model_uri": f"models:/{name}/{mv.version}",
            "logged_model_uri": f"models:/{model_id}", "alias": f"models:/{name}@{CHALLENGER}"}


def artifact_location(client: Any, ref: str) -> str:
    """Where the files of ``ref`` are, asked of ``client``'s store (never of a process-wide URI):
    ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/MODEL_ID`` (a logged model) or
    ``runs:/RUN_ID/PATH``; any other URI is returned as it is."""
    if ref.startswith("models:/"):
        body = ref[len("models:/"):].strip("/")
        if "@" in body:
            name, alias = body.split("@", 1)
            source = client.get_model_version_by_alias(name, alias).source
        elif "/" in body:
            name, version = body.split("/", 1)
            source = client.get_model_version(name, version).source
        else:
            return str(client.get_logged_model(body).artifact_location)
        return artifact_location(client, source) if str(source).startswith("models:/") else str(source)
    if ref.startswith("runs:/"):
        run_id, _, path = ref[len("runs:/"):].partition("/")
        return f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{path}"
    return ref


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
        ``self.model`` and ``self.cfg`` expose them; ``self.precision`` (``fp32`` unless the server sets
        ``bf16``, :mod:`predrnn.precision`) is the forecast's precision.
        """

        precision = "fp32"

        def load_context(self, context: Any) -> None:
            from predrnn.checkpoint import load_model_dir

            self.model, self.cfg = load_model_dir(context.artifacts["model_dir"])

        def predict(self, context: Any, model_input: np.ndarray,
                    params: dict[str, Any] | None = None) -> np.ndarray:
            from predrnn.predict import PredictError, forecast_array

            cfg = self.cfg
            horizon = int((params or {}).get("horizon") or cfg.data.total_length - cfg.data.input_length)
            try:
                return forecast_array(self.model, cfg, _context_array(model_input), horizon,
                                      precision=self.precision)
            except PredictError as err:  # one line, HTTP 400 in the scoring server; never the array
                raise input_error(str(err)) from None

    ForecastModel.__module__ = "predrnn.tracking"  # where pickles look it up
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




def registry_version(client: Any, ref: str) -> tuple[str, str] | None:
    """``(name, version)`` that ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` points to now, else None
    (a logged model id or a ``runs:/`` URI)."""
    if not ref.startswith("models:/"):
        return None
    body = ref[len("models:/"):].strip("/")
    if "@" in body:
        name, alias = body.split("@", 1)
        return name, str(client.get_model_version_by_alias(name, alias).version)
    if "/" in body:
        name, version = body.split("/", 1)
        return name, str(client.get_model_version(name, version).version)
    return None


def pinned_ref(ref: str, tracking_uri: str) -> str | None:
    """``models:/NAME/VERSION`` that ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` points to now (one
    request to the store), so a job records and loads one fixed version; None for other references.

    Raises:
        TrackingError: the store is unreachable or the reference does not resolve.
    """
    from predrnn.tracking.runs import _client

    if not ref.startswith("models:/"):
        return None
    uri = resolve_tracking_uri(tracking_uri)
    try:
        found = registry_version(_client(uri), ref)
    except Exception as err:
        raise TrackingError(f"cannot load {ref} from {uri}: {type(err).__name__}: {err}") from err
    return None if found is None else f"models:/{found[0]}/{found[1]}"


def fetch_model(ref: str, tracking_uri: str, cache_dir: Path | None = None) -> Path:
    """A local directory holding the MLflow model behind ``ref`` (``models:/NAME@ALIAS``,
    ``models:/NAME/VERSION``, ``models:/MODEL_ID``, ``runs:/...``).

    With ``cache_dir``, a registry version's files are kept under
    ``cache_dir/<store digest>/<name>/<version>`` and downloaded once: an alias is resolved to its
    version on every call (one request), and a version's files never change. The directory appears
    atomically (downloaded beside it, then renamed), so concurrent callers never see half a model.
    Without ``cache_dir`` (or for a non-registry reference) the files go to a new temporary folder
    that the caller owns.

    Raises:
        TrackingError: the store is unreachable or the reference does not resolve.
    """
    import hashlib
    import shutil
    import urllib.parse

    import mlflow

    from predrnn.tracking.runs import _client

    uri = resolve_tracking_uri(tracking_uri)
    check_tracking(uri)
    try:
        client = _client(uri)
        version = registry_version(client, ref) if cache_dir is not None else None
        if cache_dir is None or version is None:
            tmp = tempfile.mkdtemp(prefix="predrnn-model-")
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_location(client, ref),
                                                            dst_path=tmp, tracking_uri=uri))
        name, number = version
        store = hashlib.sha1(uri.encode()).hexdigest()[:12]
        final = Path(cache_dir) / store / urllib.parse.quote(name, safe="") / number
        if (final / "MLmodel").is_file():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{number}-", dir=final.parent))
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=artifact_location(client, f"models:/{name}/"
                                                        f"{number}"), dst_path=str(staging), tracking_uri=uri)
            with contextlib.suppress(FileExistsError, OSError):  # another caller finished first: use theirs
                Path(local).rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final
    except Exception as err:
        raise TrackingError(f"cannot load {ref} from {uri}: {type(err).__name__}: {err}") from err


def registered_model_dir(ref: str, tracking_uri: str | None, cache_dir: Path | None = None) -> Path:
    """The model directory (``config.json``, ``model.pt``, ``extra.json``) inside the registered model behind
    ``ref``, downloaded once into ``cache_dir`` (:func:`fetch_model`); nothing is loaded.

    Raises:
        TrackingError: the store is unreachable, the reference does not resolve, or the model holds no model
            directory.
    """
    uri = resolve_tracking_uri(tracking_uri)
    local = fetch_model(ref, uri, cache_dir)
    found = sorted(p.parent for p in (local / "artifacts").rglob("config.json") if (p.parent / "model.pt").is_file())
    if not found:
        raise TrackingError(f"{ref} in {uri} holds no model directory (artifacts/*/config.json and model.pt)")
    return found[0]


def load_registered_model(ref: str, tracking_uri: str | None = None,
                          cache_dir: Path | None = None) -> tuple[Any, ExperimentConfig]:
    """``(nn.Module, ExperimentConfig)`` for ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/...``;
    registry versions are kept in ``cache_dir`` when given (:func:`fetch_model`).

    Raises:
        TrackingError: the store is unreachable or the reference does not resolve.
    """
    import shutil

    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    local = fetch_model(ref, uri, cache_dir)
    try:
        loaded = mlflow.pyfunc.load_model(str(local))
    except Exception as err:
        raise TrackingError(f"cannot load {ref} from {uri}: {type(err).__name__}: {err}") from err
    finally:
        if cache_dir is None or not local.is_relative_to(cache_dir):
            shutil.rmtree(local.parent if local.parent.name.startswith("predrnn-model-") else local,
                          ignore_errors=True)
    inner = loaded.unwrap_python_model()
    return inner.model, inner.cfg
