"""The documentation site: it builds in strict mode, its generated reference pages list every command and
every configuration key of the code, and its pages render in a real browser.

The site is built once per module into a temporary folder with ``mkdocs build --strict``, so a link to a
missing page or anchor, or a page left out of the nav, fails here. The expected commands and keys are read
from the code itself (the typer app's click objects, ``ExperimentConfig().flat()``), not from the hook that
writes the pages. The browser is the one the UI tests use (Debian's Chromium driven by Playwright).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def _commands(group: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    """Every command below a click group, with the words that call it (``["predrnn", "data", "show"]``)."""
    for name, cmd in group.commands.items():
        if getattr(cmd, "hidden", False):
            continue
        yield [*path, name], cmd
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, [*path, name])


def _section(page: str, anchor: str) -> str:
    """The HTML of one command's section: from its heading to the next command heading."""
    start = page.find(f'id="{anchor}"')
    assert start >= 0, f"no heading #{anchor} on the CLI reference page"
    nxt = re.compile(r"<h[1-6] id=").search(page, start + 1)
    return page[start:nxt.start() if nxt else len(page)]


def test_cli_reference_lists_every_command_and_option(site: Path) -> None:
    import typer

    from predrnn.cli import app

    page = (site / "reference" / "cli" / "index.html").read_text()
    commands = list(_commands(typer.main.get_command(app), ["predrnn"]))
    paths = {" ".join(p) for p, _ in commands}
    assert {"predrnn train", "predrnn data show", "predrnn stack up"} <= paths  # sub-commands are walked
    for path, cmd in commands:
        section = _section(page, "-".join(path))
        assert " ".join(path) in section, f"{' '.join(path)} is not in its own section"
        for param in cmd.params:
            if param.name == "help":
                continue
            for flag in [*param.opts, *param.secondary_opts]:
                assert flag in section, f"{' '.join(path)}: {flag} missing from the CLI reference"


def test_config_reference_lists_every_key(site: Path) -> None:
    from predrnn.config import PRESETS, ExperimentConfig

    page = (site / "reference" / "config" / "index.html").read_text()
    keys = ExperimentConfig().flat()
    assert "model.num_hidden" in keys and "compute.amp" in keys
    missing = [k for k in keys if f"<code>{k}</code>" not in page]
    assert not missing, f"keys missing from the configuration reference: {missing}"
    for name in PRESETS:
        assert f"<code>{name}</code>" in page, f"preset {name} missing from the configuration reference"


@pytest.fixture()
def served(site: Path) -> Iterator[str]:
    """The built site over HTTP on 127.0.0.1 (a free port), stopped afterwards."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_pages_render_in_the_browser(served: str) -> None:
    from ops.browser_helpers import browser_page, shot

    with browser_page() as page:
        page.goto(f"{served}/")
        assert "predrnn" in page.title()
        heading = page.locator("article h1").first
        heading.wait_for()
        assert heading.inner_text().strip().startswith("predrnn")
        assert page.get_by_text("make run", exact=False).first.is_visible()
        shot(page, "docs-home")

        page.get_by_role("link", name="Command line", exact=True).first.click()  # through the navigation
        page.wait_for_url("**/reference/cli/")
        assert "Command line reference" in page.locator("article h1").first.inner_text()
        train = page.locator("h2#predrnn-train")
        train.scroll_into_view_if_needed()
        assert train.is_visible() and "predrnn train" in train.inner_text()
        assert "Usage: predrnn train [OPTIONS]" in page.inner_text("article")
        shot(page, "docs-cli")
