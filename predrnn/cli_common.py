"""What every CLI command shares: the one way a command fails."""

from __future__ import annotations

import typer


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: <message>`` (one line) on stderr and return the exit to raise (code 2: bad input,
    as for every :class:`predrnn.errors.PredrnnError`)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)
