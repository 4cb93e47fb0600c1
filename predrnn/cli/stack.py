"""``predrnn stack up|down|restart|status|env|settings|deploy``: the local stack (:mod:`infra.stack`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from predrnn.cli.common import fail


def _checkout() -> Path:
    """The repository checkout the stack runs from (its ``infra/`` supervises the services, its ``prefect.yaml``
    deploys the flows): the one this package was installed from in development mode, else the working
    directory or a folder above it. Its root goes on the import path, so :mod:`infra.stack` imports.

    Raises:
        typer.Exit: no checkout found (the wheel installs only the library), in one line.
    """
    import sys

    here = Path.cwd().resolve()
    for root in (Path(__file__).resolve().parents[2], here, *here.parents):
        if (root / "infra" / "stack.py").is_file() and (root / "prefect.yaml").is_file():
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            return root
    raise fail("predrnn stack needs a checkout of the predrnn repository (its infra/ and prefect.yaml); the "
               "installed package holds only the library: run it from the repository root")


def _settings() -> Any:
    """The stack's settings (environment, ``.env``); a bad value is one line naming the variable, a ``.env``
    holding a secret that others can read is refused."""
    from pydantic import ValidationError

    _checkout()
    from infra.stack import StackSettings, check_dotenv

    check_dotenv(Path(".env"))
    try:
        return StackSettings()
    except ValidationError as err:
        first = err.errors()[0]
        where = "PREDRNN_STACK_" + str(first["loc"][0]).upper() if first["loc"] else "the stack settings"
        raise fail(f"{where}: {first['msg']}") from None


def _stack() -> Any:
    _checkout()
    from infra.stack import Stack

    return Stack(_settings())


def up_cmd() -> None:
    """Start every service, wait until healthy, print the URLs and the client environment."""
    st = _stack()
    state = st.up(echo=typer.echo)
    typer.echo(f"stack up in {state['startup_s']} s; state in {st.root}")
    for name, url in state["urls"].items():
        typer.echo(f"{name:14} {url}")
    secrets = state["secrets"]
    typer.echo(f"credentials (mode 0600, never printed) in {secrets['folder']}: {Path(secrets['credentials']).name} "
               "(MLflow admin, pipeline and promoter passwords; Prefect API; S3), ray_auth_token; "
               "the UIs ask for them (MLflow: user admin; Prefect: predrnn:<PREFECT_API_PASSWORD>)")
    typer.echo("client environment (eval \"$(predrnn stack env)\"):")
    for k, v in state["env"].items():
        typer.echo(f"  {k}={v}")
    typer.echo(f"  and the secrets sourced from {secrets['client_env']}")


def down_cmd() -> None:
    """Stop every service of the stack (by process group)."""
    stopped = _stack().down(echo=typer.echo)
    typer.echo("nothing was running" if not stopped else f"stopped {', '.join(stopped)}")


def restart_cmd(
    service: Annotated[str, typer.Argument(help="s3, mlflow, prefect or worker (its unfinished runs end "
                                           "Crashed)")],
    down_s: Annotated[float, typer.Option("--down-s", help="seconds to stay down (an outage drill)")] = 0.0,
    kill: Annotated[bool, typer.Option("--kill", help="SIGKILL instead of a clean stop")] = False,
) -> None:
    """Restart one service on the same ports and state; waits until it is healthy again."""
    _stack().restart(service, down_s=down_s, kill=kill, echo=typer.echo)


def status_cmd(as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False) -> None:
    """Each service's health, memory and URL."""
    status = _stack().status()
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


def env_cmd() -> None:
    """Shell lines for talking to the stack: its settings as exports, its secrets sourced from their file.

    The secrets (S3 key, MLflow and Prefect passwords) are never printed: the last line sources
    ``<state>/secrets/client.env`` (mode 0600), so ``eval "$(predrnn stack env)"`` exports them too.
    """
    import shlex

    st = _stack()
    for k, v in st.s.client_env().items():
        typer.echo(f"export {k}={shlex.quote(v)}")
    typer.echo(f". {shlex.quote(str(st.secrets.write_client_file()))}")


def settings_cmd() -> None:
    """Every stack setting (ports, state folder, services, ...) with its value and where it comes from."""
    for var, value, source in _settings().described():
        typer.echo(f"{var:42} {value:28} {source}")


def deploy_cmd() -> None:
    """Register every deployment of prefect.yaml (repository root) with the stack's Prefect server."""
    stack = _stack()
    out = stack.deploy(_checkout())
    typer.echo(out.stdout[-4000:])
    if out.returncode != 0:
        raise fail(f"prefect deploy failed:\n{out.stderr[-4000:]}")
