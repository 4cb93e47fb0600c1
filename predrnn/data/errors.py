"""The one exception type that data code raises for bad input or an unusable destination."""

from __future__ import annotations

from predrnn.errors import PredrnnError


class DataError(PredrnnError, ValueError):
    """Bad input, a bad dataset name or URI, or a destination that cannot be written.

    The message names the file, the clip and the problem, so the CLI can print it as one line.
    """
