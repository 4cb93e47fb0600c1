"""``python -m predrnn.cli ...``: the ``predrnn`` command."""

from predrnn.cli import main

main()
