"""The one error family of the library.

Every error raised for input that cannot be used (a config, a dataset, a model, a context array, a
tracking store, a run to resume) derives from :class:`PredrnnError`, so a door (the CLI, a flow)
handles them all in one place: the message is one line naming the problem and what was expected,
and the CLI exits with code 2. Each kind also keeps its built-in base (``ValueError`` for bad
values, ``RuntimeError`` for a failing resource), as before.
"""

from __future__ import annotations


class PredrnnError(Exception):
    """Base of the library's errors; ``str(err)`` is the one-line message a user sees."""
