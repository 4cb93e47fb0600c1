"""The ``predrnn`` command line: each command is one call into the library.

The commands are plain functions in this package's modules (:mod:`.forecast`, :mod:`.score`, :mod:`.bench`,
:mod:`.ingest`, :mod:`.data`, :mod:`.train`, :mod:`.ops`, :mod:`.stack`, :mod:`.tune`), each an adapter of a use case of
:mod:`predrnn.jobs` (or of training); they are registered here, each behind the one error handler
:func:`~predrnn.cli.common.guarded` (a :class:`~predrnn.errors.PredrnnError` -> ``error: <message>``, exit 2).
"""

from __future__ import annotations

import typer

from predrnn.cli import bench, data, forecast, ingest, ops, score, stack, train, tune
from predrnn.cli.common import guarded

app = typer.Typer(help="PredRNN-V2 spatiotemporal forecasting: data, training, tuning, tracking, serving.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

app.command("import-official")(guarded(forecast.import_official_cmd))
app.command("predict")(guarded(forecast.predict_cmd))
app.command("forecast")(guarded(forecast.forecast_cmd))
app.command("score")(guarded(score.score_cmd))
app.command("bench")(guarded(bench.bench_cmd))
app.command("ingest")(guarded(ingest.ingest_cmd))
app.command("train")(guarded(train.train_cmd))
app.command("evaluate")(guarded(train.evaluate_cmd))
app.command("promote")(guarded(ops.promote_cmd))
app.command("rollback")(guarded(ops.rollback_cmd))
app.command("champion")(guarded(ops.champion_cmd))
app.command("serve")(guarded(ops.serve_cmd))
app.command("tune")(guarded(tune.tune_cmd))

data_app = typer.Typer(help="Inspect and export dataset versions.", no_args_is_help=True)
data_app.command("ls")(guarded(data.ls_cmd))
data_app.command("show")(guarded(data.show_cmd))
data_app.command("export")(guarded(data.export_cmd))
app.add_typer(data_app, name="data")

stack_app = typer.Typer(help="The local stack: Prefect, MLflow (S3 artifacts), SeaweedFS S3, Ray head.",
                        no_args_is_help=True)
stack_app.command("up")(guarded(stack.up_cmd))
stack_app.command("down")(guarded(stack.down_cmd))
stack_app.command("restart")(guarded(stack.restart_cmd))
stack_app.command("status")(guarded(stack.status_cmd))
stack_app.command("env")(guarded(stack.env_cmd))
stack_app.command("settings")(guarded(stack.settings_cmd))
stack_app.command("deploy")(guarded(stack.deploy_cmd))
app.add_typer(stack_app, name="stack")


def main(argv: list[str] | None = None) -> None:
    """The console entry (``predrnn``, ``python -m predrnn.cli``): the app, with usage mistakes (an unknown or
    missing option, a value of the wrong type) reported like every bad input: one line ``error: <message>``
    naming the command and its ``--help``, exit code 2.

    Raises:
        SystemExit: with the command's exit code.
    """
    try:  # typer >= 0.24 runs on a click of its own
        from typer._click.exceptions import NoArgsIsHelpError, UsageError
    except ImportError:  # pragma: no cover - typer on the installed click
        from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[no-redef,assignment]

    try:
        code = app(args=argv, prog_name="predrnn", standalone_mode=False)
    except NoArgsIsHelpError as err:  # a command group alone: its help, as --help shows it
        typer.echo(err.ctx.get_help() if err.ctx is not None else str(err))
        raise SystemExit(2) from None
    except UsageError as err:
        where = f" (see `{err.ctx.command_path} --help`)" if err.ctx is not None else ""
        typer.echo(f"error: {' '.join(err.format_message().split())}{where}", err=True)
        raise SystemExit(2) from None
    except typer.Abort:
        typer.echo("aborted", err=True)
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)
