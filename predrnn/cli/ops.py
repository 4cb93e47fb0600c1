"""Operations commands: ``promote``, ``rollback``, ``champion`` and ``serve``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from predrnn.cli.common import fail
from predrnn.errors import PredrnnError


def _store(tracking_uri: str | None) -> str:
    """The MLflow store this command uses (tool settings applied first): the option, else the settings."""
    from predrnn.cli.train import tool_env
    from predrnn.settings import Settings

    tool_env()
    return Settings().tracking(tracking_uri)


TrackingOpt = Annotated[str | None, typer.Option("--tracking-uri", help="MLflow store (default: "
                                                 "$MLFLOW_TRACKING_URI, else the local SQLite under .state)")]


def promote_cmd(
    model: Annotated[str, typer.Argument(help="registered model name")],
    version: Annotated[int, typer.Argument(help="the candidate version")],
    force: Annotated[bool, typer.Option("--force", help="promote even if the gate refuses (recorded)")] = False,
    margin: Annotated[float, typer.Option("--margin", help="relative improvement required")] = 0.01,
    metric: Annotated[str, typer.Option("--metric", help="score compared (mean over lead times): mse, mae, "
                                        "rmse, csi_m, csi_<thr>, pod_<thr>, far_<thr>, hss_<thr>, "
                                        "fss_<thr>_n<N>, csi_pool<K>_<thr>; direction known")] = "mse",
    tracking_uri: TrackingOpt = None,
) -> None:
    """Move alias `champion` to VERSION if it beats the champion by the margin on --metric (test MSE).

    Compares the test scores recorded on both versions at registration (they must share a dataset;
    the `promote` flow re-evaluates both on one test version). Lower is better for mse/mae/rmse/far,
    higher for csi/pod/hss/fss. Exit code 1 when the gate refuses.
    """
    from predrnn.tracking.registry import metric_tag, promote

    try:
        decision = promote(model, version, force=force, margin=margin, tracking_uri=_store(tracking_uri),
                           metric=metric_tag(metric))
    except PredrnnError:
        raise  # the CLI's error handler
    except ValueError as err:
        raise fail(str(err)) from None
    typer.echo(decision.markdown())
    typer.echo(json.dumps(decision.to_dict()))
    if not decision.promoted:
        raise typer.Exit(1)


def rollback_cmd(
    model: Annotated[str, typer.Argument(help="registered model name")],
    tracking_uri: TrackingOpt = None,
) -> None:
    """Point alias `champion` back at the previous champion (recorded at promotion)."""
    from predrnn.tracking.registry import rollback

    typer.echo(json.dumps(rollback(model, tracking_uri=_store(tracking_uri)).to_dict()))


def champion_cmd(
    model: Annotated[str, typer.Argument(help="registered model name")],
    tracking_uri: TrackingOpt = None,
) -> None:
    """Print the version that alias `champion` points to (empty when none)."""
    from predrnn.tracking.registry import current_champion

    version = current_champion(model, tracking_uri=_store(tracking_uri))
    typer.echo("" if version is None else str(version))


def serve_cmd(
    model: Annotated[str, typer.Option("--model", help="models:/NAME@champion or models:/NAME/VERSION")],
    host: Annotated[str, typer.Option("--host", help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="HTTP port")] = 5051,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Serve the model over HTTP (MLflow scoring server, this environment; POST /invocations).

    Request: {"inputs": context clips (B, T_in, H, W, C) in the data's units (image models: [0, 1];
    field models: e.g. mm/h, NaN = no data)}, optional {"params": {"horizon": N}};
    response: {"predictions": (B, N, H, W, C)} in the same units.
    """
    from predrnn.forecaster import is_registry_ref

    bindir = str(Path(sys.executable).parent)  # the scoring server runs uvicorn from this environment
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    if is_registry_ref(model):  # a registry version is fetched once into the local cache, then served from there
        from predrnn.settings import Settings
        from predrnn.tracking.model import fetch_model

        uri = _store(tracking_uri)
        local = fetch_model(model, uri, Settings().model_cache)
        typer.echo(f"serving {model} ({local.parent.name} version {local.name}, from {local})"
                   if local.is_relative_to(Settings().model_cache) else f"serving {model} (from {local})")
        env["MLFLOW_TRACKING_URI"] = uri
        model = str(local)
    exe = str(Path(bindir) / "mlflow")
    os.execve(exe, [exe, "models", "serve", "-m", model, "--env-manager", "local", "-h", host, "-p", str(port)], env)
