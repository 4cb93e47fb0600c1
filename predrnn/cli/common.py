"""What every CLI command shares: the one way a command fails, the one handler of the library's errors,
the ``--precision`` option, and the list options of ``score`` and ``evaluate``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, ParamSpec, TypeVar

import typer

from predrnn.errors import PredrnnError

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: <message>`` (one line) on stderr and return the exit to raise (code 2: bad input,
    as for every :class:`predrnn.errors.PredrnnError`)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """The CLI's one error handler: a :class:`~predrnn.errors.PredrnnError` raised by the command ``fn``
    becomes ``error: <message>`` on stderr and exit code 2 (no traceback).

    The wrapper keeps ``fn``'s name, docstring and signature (``functools.wraps``), which typer reads for
    the command's options and help.
    """

    @functools.wraps(fn)
    def command(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except PredrnnError as err:
            raise fail(str(err)) from None

    return command


PrecisionOpt = Annotated[str, typer.Option(
    "--precision", help="auto (bf16 where the processor computes bf16 natively: CUDA, CPUs with AVX512-BF16 or "
    "AMX; else fp32), bf16 or fp32 (weights and outputs stay fp32)")]


def door_precision(requested: str, device: str, task: str = "forecast") -> tuple[str, str]:
    """``--precision`` resolved once for ``device`` (``cpu``/``cuda``) and ``task`` (``forecast``/``train``):
    ``(precision, line)``, the line saying which and why, for the command to print once its input is checked
    (a refused input stays a one-line error); the jobs' own rule (:func:`predrnn.jobs.model.job_precision`).
    Raises typer.Exit(2) for a value that is not ``auto``, ``bf16`` or ``fp32``."""
    from predrnn.jobs.model import JobError, job_precision

    try:
        return job_precision(requested, device, task)
    except JobError as err:
        raise fail(str(err)) from None


def parse_list(text: str | None, kind: type, option: str) -> list | None:
    """``"0.5,2,5"`` -> ``[0.5, 2.0, 5.0]`` (``kind`` float or int); None stays None; raises typer.Exit(2)."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    examples = {"--thresholds": "0.5,2,5", "--pool": "4,16", "--fss-scales": "1,3,9,27"}
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise fail(f"{option} takes a comma-separated list of {'numbers' if kind is float else 'integers'}, "
                   f"e.g. {examples.get(option, '1,2')}; got {text!r}") from None


def score_labels(text: str | None) -> list[str] | None:
    """The thresholds as the user wrote them (``"0.5"``, ``"2"``), for the JSON keys."""
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]
