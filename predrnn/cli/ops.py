"""Operations commands: ``promote``, ``rollback``, ``champion`` and ``serve``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from predrnn.cli.common import PrecisionOpt, door_precision


def _store(tracking_uri: str | None) -> str:
    """The MLflow store this command uses (tool settings applied first): the option, else the settings."""
    from predrnn.settings import Settings, tool_env

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
    data: Annotated[str | None, typer.Option("--data", help="evaluate the candidate and the champion on this "
                                             "dataset version's test split first (as the promote flow does) "
                                             "and compare those scores")] = None,
    must_beat: Annotated[str | None, typer.Option(
        "--must-beat", help="a baseline the candidate must also beat on --metric in that evaluation: persistence, "
        "extrapolation or sprog (needs --data)")] = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Move alias `champion` to VERSION if it beats the champion by the margin on --metric (test MSE).

    Without --data, compares the test scores recorded on both versions at registration (they must share a
    dataset). Lower is better for mse/mae/rmse/far, higher for csi/pod/hss/fss. With --must-beat the candidate
    must also beat that baseline (e.g. --must-beat extrapolation --metric csi_m). Exit code 1 when the gate
    refuses. On a tracking server with authentication the alias moves as $PREDRNN_PROMOTER_USERNAME (only
    promoters move `champion`).
    """
    from predrnn.jobs.promote import prepare_promote, run_promote
    from predrnn.settings import Settings

    store = _store(tracking_uri)
    settings = Settings()  # read once, here: the promoter's account stays in this process
    spec = prepare_promote(model, version, metric=metric, margin=margin, force=force, tracking_uri=store,
                           dataset=data, cache_dir=settings.model_cache, s3=settings.s3(), must_beat=must_beat)
    result = run_promote(spec, promoter=settings.promoter())
    typer.echo(result.markdown())
    typer.echo(json.dumps(result.to_dict()))
    if not result.decision.promoted:
        raise typer.Exit(1)


def rollback_cmd(
    model: Annotated[str, typer.Argument(help="registered model name")],
    tracking_uri: TrackingOpt = None,
) -> None:
    """Point alias `champion` back at the previous champion (recorded at promotion).

    On a tracking server with authentication the alias moves as $PREDRNN_PROMOTER_USERNAME (only promoters
    move `champion`); the other calls use the MLflow credentials of the environment.
    """
    from predrnn.settings import Settings
    from predrnn.tracking.registry import rollback

    store = _store(tracking_uri)
    typer.echo(json.dumps(rollback(model, tracking_uri=store, promoter=Settings().promoter()).to_dict()))


def champion_cmd(
    model: Annotated[str, typer.Argument(help="registered model name")],
    tracking_uri: TrackingOpt = None,
) -> None:
    """Print the version that alias `champion` points to (empty when none)."""
    from predrnn.tracking.registry import current_champion

    version = current_champion(model, tracking_uri=_store(tracking_uri))
    typer.echo("" if version is None else str(version))


def _serve_token(host: str, require: bool, token_file: Path | None, state: Path) -> tuple[str | None, str]:
    """The bearer token ``serve`` requires, and where it is: none on loopback unless ``require``; else
    ``$PREDRNN_SERVE_TOKEN``, the ``--token-file``, or a token generated once into ``<state>/serve/token``."""
    from predrnn.security import SecurityError, check_private, ensure_secret_file, is_loopback

    if is_loopback(host) and not require and token_file is None:
        return None, ""
    if os.environ.get("PREDRNN_SERVE_TOKEN", "").strip():
        return os.environ["PREDRNN_SERVE_TOKEN"].strip(), "$PREDRNN_SERVE_TOKEN"
    if token_file is not None:
        if not token_file.is_file() or not token_file.read_text().strip():
            raise SecurityError(f"--token-file {token_file} is not a file holding a token")
        check_private(token_file)
        return token_file.read_text().strip(), str(token_file)
    path = ensure_secret_file(state / "serve" / "token")
    return path.read_text().strip(), str(path)


def serve_cmd(
    model: Annotated[str, typer.Option("--model", help="models:/NAME@champion or models:/NAME/VERSION")],
    host: Annotated[str, typer.Option("--host", help="bind address (beyond 127.0.0.1 a bearer token is "
                                      "required)")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="HTTP port")] = 5051,
    require_token: Annotated[bool, typer.Option("--require-token", help="require the bearer token on "
                                                "127.0.0.1 too")] = False,
    token_file: Annotated[Path | None, typer.Option("--token-file", help="file (mode 0600) holding the bearer "
                                                    "token (default: $PREDRNN_SERVE_TOKEN, else one generated "
                                                    "into <state>/serve/token)")] = None,
    tracking_uri: TrackingOpt = None,
    precision: PrecisionOpt = "auto",
) -> None:
    """Serve the model over HTTP (MLflow scoring server, this environment; POST /invocations).

    Request: {"inputs": context clips (B, T_in, H, W, C) in the data's units (image models: [0, 1];
    field models: e.g. mm/h, NaN = no data)}, optional {"params": {"horizon": N}};
    response: {"predictions": (B, N, H, W, C)} in the same units.

    Bound to anything but 127.0.0.1 (or with --require-token) every request but GET /ping and /health
    must send `Authorization: Bearer <token>`, else 401; the token is read from where the first line
    printed says, never printed itself.
    """
    from predrnn.forecaster import is_registry_ref
    from predrnn.settings import Settings
    from predrnn.tracking.serving import run_app, scoring_app

    uri = _store(tracking_uri)  # the tool settings first
    resolved, said = door_precision(precision, "cpu")
    token, where = _serve_token(host, require_token, token_file, Settings().state)
    if is_registry_ref(model):  # a registry version is fetched once into the local cache, then served from there
        import urllib.parse

        from predrnn.tracking.model import fetch_model

        local = fetch_model(model, uri, Settings().model_cache)
        cached = local.is_relative_to(Settings().model_cache)
        about = {"requested": model}
        if cached:  # cache_dir/<store>/<name>/<version>
            about |= {"model": urllib.parse.unquote(local.parent.name), "model_version": local.name}
        typer.echo(f"serving {model} ({about['model']} version {local.name}, from {local})"
                   if cached else f"serving {model} (from {local})")
        model = str(local)
    else:
        about = {"model": Path(model).name, "requested": model}
    app = scoring_app(model, token, resolved, about)  # a model it cannot load fails here, in one line
    typer.echo(said)
    typer.echo(f"listening on http://{host}:{port}; " + (f"requests need 'Authorization: Bearer <token>', the "
                                                        f"token in {where}" if token else
                                                        "no token (loopback only; --require-token adds one)"))
    run_app(app, host, port)
