"""``predrnn serve``: MLflow's scoring server for a model, behind a bearer token when asked.

The app is MLflow's own pyfunc scoring server (``POST /invocations``, ``GET /ping``, ``/health``), with
``/version`` saying which model is served (its registered name and version) and the package versions.
With a token every request except the health probes (``/ping``, ``/health``, which carry no data) must
send ``Authorization: Bearer <token>`` or gets 401. The token is compared in constant time and never
logged.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

OPEN_PATHS = frozenset({"/ping", "/health"})


def scoring_app(model_path: str | Path, token: str | None, precision: str = "fp32",
                about: dict[str, str] | None = None) -> Any:
    """The FastAPI app serving the pyfunc model at ``model_path``; ``token``: the bearer token required
    (None: no authentication, for a server on loopback only); ``precision``: ``fp32`` or ``bf16``, the
    forecasts' precision (:mod:`predrnn.precision`, resolved by the caller); ``about``: what ``GET /version``
    says of the model (e.g. ``{"model": "predrnn-v2", "model_version": "3", "requested":
    "models:/predrnn-v2@champion"}``; default: its path), with the ``precision`` and the ``predrnn`` and
    ``mlflow`` versions added. MLflow's own ``/version`` (its package version only) is replaced.

    Raises:
        TrackingError: ``model_path`` is not an MLflow pyfunc model (a plain model directory is named as such).
    """
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from mlflow.pyfunc import load_model
    from mlflow.pyfunc.scoring_server import init

    from predrnn.precision import normalise
    from predrnn.tracking.runs import TrackingError

    path = Path(model_path)
    if not (path / "MLmodel").is_file():
        what = ("is a model directory (config.json, model.pt)" if (path / "config.json").is_file()
                else "holds no MLflow model (no MLmodel file)")
        raise TrackingError(f"--model {model_path} {what}; serve takes a registered model (models:/NAME@ALIAS, "
                            "models:/NAME/VERSION) or an MLflow pyfunc folder; for a model directory use predict "
                            "or forecast")
    pyfunc = load_model(str(model_path))
    inner = pyfunc.unwrap_python_model()
    if hasattr(inner, "precision"):  # a predrnn forecaster
        inner.precision = normalise(precision)
        sig = pyfunc.metadata.signature
        if sig is not None and sig.inputs is not None:
            # The model checks a request itself (dtype, range, shape: predict.check_context). MLflow would cast
            # the JSON to the schema's dtype first, truncating an image model's floats in [0, 1] to uint8 zeros.
            from mlflow.models import ModelSignature

            pyfunc.metadata.signature = ModelSignature(inputs=None, outputs=sig.outputs, params=sig.params)
    app = init(pyfunc)
    import mlflow

    from predrnn import __version__

    said = {**(about or {"model": str(model_path)}), "precision": normalise(precision), "predrnn": __version__,
            "mlflow": mlflow.__version__}
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != "/version"]

    @app.get("/version")
    def version() -> dict[str, str]:
        return said

    if token is None:
        return app
    expected = f"Bearer {token}".encode()

    @app.middleware("http")
    async def bearer_token(request: Request, call_next: Any) -> Any:
        if request.url.path in OPEN_PATHS and request.method == "GET":
            return await call_next(request)
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return JSONResponse({"error_code": "UNAUTHENTICATED",
                                 "message": "send 'Authorization: Bearer <token>' (the token predrnn serve was "
                                            "started with)"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    return app


def serve(model_path: str | Path, host: str, port: int, token: str | None, precision: str = "fp32") -> None:
    """Serve :func:`scoring_app` with uvicorn on ``host:port`` until stopped."""
    run_app(scoring_app(model_path, token, precision), host, port)


def run_app(app: Any, host: str, port: int) -> None:
    """Serve an app made by :func:`scoring_app` with uvicorn on ``host:port`` until stopped."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")
