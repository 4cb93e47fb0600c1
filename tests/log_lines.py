"""A logging handler that keeps each record's message, for tests that read what a flow logged."""

from __future__ import annotations

import logging


class Lines(logging.Handler):
    """Collects ``record.getMessage()`` of every record it handles, in order, in :attr:`lines`."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
