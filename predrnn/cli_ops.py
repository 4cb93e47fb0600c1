"""Operations commands: ``promote``, ``rollback``, ``champion``, ``serve`` and ``stack up|down|status|deploy``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from predrnn.cli_common import fail


def _tool_env() -> None:
    for key, value in {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "RAY_USAGE_STATS_ENABLED": "0",
                       "RAY_AUTH_MODE": "disabled", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}.items():
        os.environ.setdefault(key, value)


TrackingOpt = Annotated[str | None, typer.Option("--tracking-uri", help="MLflow store (default: "
                                                 "$MLFLOW_TRACKING_URI, else the local SQLite under .state)")]


def register(app: typer.Typer) -> None:
    """Add the operations commands to ``app``."""

    @app.command("promote")
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
        _tool_env()
        from predrnn.registry import RegistryError, metric_tag, promote

        try:
            decision = promote(model, version, force=force, margin=margin, tracking_uri=tracking_uri,
                               metric=metric_tag(metric))
        except (RegistryError, ValueError) as err:
            raise fail(str(err)) from None
        typer.echo(decision.markdown())
        typer.echo(json.dumps(decision.to_dict()))
        if not decision.promoted:
            raise typer.Exit(1)

    @app.command("rollback")
    def rollback_cmd(
        model: Annotated[str, typer.Argument(help="registered model name")],
        tracking_uri: TrackingOpt = None,
    ) -> None:
        """Point alias `champion` back at the previous champion (recorded at promotion)."""
        _tool_env()
        from predrnn.registry import RegistryError, rollback

        try:
            decision = rollback(model, tracking_uri=tracking_uri)
        except RegistryError as err:
            raise fail(str(err)) from None
        typer.echo(json.dumps(decision.to_dict()))

    @app.command("champion")
    def champion_cmd(
        model: Annotated[str, typer.Argument(help="registered model name")],
        tracking_uri: TrackingOpt = None,
    ) -> None:
        """Print the version that alias `champion` points to (empty when none)."""
        _tool_env()
        from predrnn.registry import RegistryError, current_champion

        try:
            version = current_champion(model, tracking_uri=tracking_uri)
        except RegistryError as err:
            raise fail(str(err)) from None
        typer.echo("" if version is None else str(version))

    @app.command("serve")
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
        _tool_env()
        from predrnn.tracking import resolve_tracking_uri

        bindir = str(Path(sys.executable).parent)  # the scoring server runs uvicorn from this environment
        env = {**os.environ, "MLFLOW_TRACKING_URI": resolve_tracking_uri(tracking_uri),
               "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
        exe = str(Path(bindir) / "mlflow")
        os.execve(exe, [exe, "models", "serve", "-m", model, "--env-manager", "local", "-h", host, "-p", str(port)],
                  env)

    stack = typer.Typer(help="The local stack: Prefect, MLflow (S3 artifacts), SeaweedFS S3, Ray head.",
                        no_args_is_help=True)
    app.add_typer(stack, name="stack")

    @stack.command("up")
    def stack_up() -> None:
        """Start every service, wait until healthy, print the URLs and the client environment."""
        from predrnn.stack import Stack, StackError

        st = Stack()
        try:
            state = st.up(echo=typer.echo)
        except StackError as err:
            raise fail(str(err)) from None
        typer.echo(f"stack up in {state['startup_s']} s; state in {st.root}")
        for name, url in state["urls"].items():
            typer.echo(f"{name:14} {url}")
        typer.echo("client environment (eval \"$(predrnn stack env)\"):")
        for k, v in state["env"].items():
            typer.echo(f"  {k}={v}")

    @stack.command("down")
    def stack_down() -> None:
        """Stop every service of the stack (by process group)."""
        from predrnn.stack import Stack

        stopped = Stack().down(echo=typer.echo)
        typer.echo("nothing was running" if not stopped else f"stopped {', '.join(stopped)}")

    @stack.command("restart")
    def stack_restart(
        service: Annotated[str, typer.Argument(help="s3, mlflow or prefect")],
        down_s: Annotated[float, typer.Option("--down-s", help="seconds to stay down (an outage drill)")] = 0.0,
        kill: Annotated[bool, typer.Option("--kill", help="SIGKILL instead of a clean stop")] = False,
    ) -> None:
        """Restart one service on the same ports and state; waits until it is healthy again."""
        from predrnn.stack import Stack, StackError

        try:
            Stack().restart(service, down_s=down_s, kill=kill, echo=typer.echo)
        except StackError as err:
            raise fail(str(err)) from None

    @stack.command("status")
    def stack_status(as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False) -> None:
        """Each service's health, memory and URL."""
        from predrnn.stack import Stack

        status = Stack().status()
        if as_json:
            typer.echo(json.dumps(status))
            return
        if not status["services"]:
            typer.echo(f"no stack running from {status['root']}")
        for name, info in status["services"].items():
            state = "healthy" if info["healthy"] else ("up, not healthy" if info["alive"] else "stopped")
            typer.echo(f"{name:8} {state:16} {info['rss_mb']:8.0f} MB  {info['url']}  (log {info['log']})")
        for name, url in status["urls"].items():
            typer.echo(f"{name:14} {url}")
        if any(i["healthy"] for i in status["services"].values()):
            raise typer.Exit(0)
        raise typer.Exit(1)

    @stack.command("env")
    def stack_env() -> None:
        """Shell exports for talking to the stack (the S3 secret included)."""
        from predrnn.stack import StackSettings

        for k, v in StackSettings().client_env().items():
            typer.echo(f"export {k}={v}")

    @stack.command("settings")
    def stack_settings() -> None:
        """Every stack setting (ports, state folder, services, ...) with its value and where it comes from."""
        from predrnn.stack import StackSettings

        for var, value, source in StackSettings().described():
            typer.echo(f"{var:42} {value:28} {source}")

    @stack.command("deploy")
    def stack_deploy() -> None:
        """Register every deployment of prefect.yaml (repository root) with the stack's Prefect server."""
        from predrnn.stack import Stack

        project = Path(__file__).resolve().parent.parent
        out = Stack().deploy(project)
        typer.echo(out.stdout[-4000:])
        if out.returncode != 0:
            raise fail(f"prefect deploy failed:\n{out.stderr[-4000:]}")
