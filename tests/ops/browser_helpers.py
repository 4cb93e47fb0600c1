"""Headless Chromium (Debian's package) driven by Playwright against the local stack's web UIs.

No browser is downloaded: Playwright launches ``/usr/bin/chromium`` (``PREDRNN_CHROMIUM`` overrides it),
which ``make test`` and ``.ci/run`` install with apt when it is missing. Screenshots go to
``$PREDRNN_TEST_ARTIFACTS/browser`` (default ``.state/test-artifacts/browser``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

# Closed network: no background connections, no component updates, a throwaway profile.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def chromium_path() -> str:
    path = os.environ.get("PREDRNN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        raise RuntimeError(f"Chromium not found at {path}: the browser tests need Debian's chromium package "
                           "(`apt-get install chromium`; `make test` installs it)")
    return path


def artifacts_dir() -> Path:
    root = Path(os.environ.get("PREDRNN_TEST_ARTIFACTS") or REPO / ".state" / "test-artifacts")
    out = root / "browser"
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextmanager
def browser_page(mlflow_login: tuple[str, str] | None = None, prefect_auth: str | None = None) -> Iterator[Any]:
    """A fresh page (1400 x 900) in a headless Chromium that is closed afterwards.

    Args:
        mlflow_login: ``(user, password)`` the browser answers MLflow's basic-auth challenge with.
        prefect_auth: the Prefect API's ``user:password``, stored where the Prefect UI's login form keeps it.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            login = {"username": mlflow_login[0], "password": mlflow_login[1]} if mlflow_login else None
            context = browser.new_context(viewport={"width": 1400, "height": 900}, http_credentials=login)
            if prefect_auth:  # what the UI's Login form stores after a successful check
                context.add_init_script(f"window.localStorage.setItem('prefect-password', btoa({prefect_auth!r}))")
            page = context.new_page()
            page.set_default_timeout(45_000)
            yield page
        finally:
            browser.close()


def shot(page: Any, name: str) -> Path:
    path = artifacts_dir() / f"{name}.png"
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")
    return path


def prefect_deployment_listed(page: Any, ui: str, name: str, schedule_text: str) -> None:
    """The deployments page lists ``name`` with its schedule; then its own page shows the schedule."""
    page.goto(f"{ui}/deployments")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))
    row.first.wait_for()
    assert schedule_text in row.first.inner_text(), row.first.inner_text()
    shot(page, "prefect-deployments")
    page.get_by_role("link", name=name, exact=True).first.click()
    page.get_by_text(schedule_text).first.wait_for()
    shot(page, f"prefect-deployment-{name}")


def prefect_deployment_parameters(page: Any, ui: str, deployment_id: str, shown: list[str], name: str) -> None:
    """The deployment's page, its Parameters tab: every text in ``shown`` (parameter names, values) is there."""
    page.goto(f"{ui}/deployments/deployment/{deployment_id}")
    page.get_by_text("Parameters", exact=True).first.click()
    for text in shown:
        wait_for_text(page, text, name)
    shot(page, name)


def prefect_custom_run(page: Any, ui: str, name: str, parameters: dict[str, Any]) -> str:
    """From the deployment page: Run -> Custom run, the parameters filled in, Submit. Returns the run's name.

    The custom-run form takes its initial values from its ``parameters`` query string (JSON, encoded
    twice, as the UI itself writes it); the form is then submitted with its own button.
    """
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run", exact=True).click()
    page.wait_for_url("**/run?**")
    encoded = urllib.parse.quote(urllib.parse.quote(json.dumps(parameters, separators=(",", ":"))))
    page.goto(page.url.split("?")[0] + "?parameters=" + encoded)
    page.wait_for_load_state("networkidle")  # the form is filled in and no overlay covers it
    submit = page.get_by_role("button", name="Submit", exact=True)
    submit.wait_for()
    run_name = page.get_by_role("textbox").first.input_value()
    assert run_name, "the custom-run form has no run name"
    shot(page, f"prefect-custom-run-{name}")
    refused: list[str] = []  # API answers of the submission that were errors, to say why if no run comes
    page.on("response", lambda r: refused.append(f"{r.status} {r.request.method} {r.url}") if r.status >= 400
            and "/api/" in r.url else None)
    submit.click()
    try:
        wait_for_text(page, "scheduled to start", f"prefect-custom-run-{name}")  # the UI's confirmation toast
    except Exception as err:
        raise AssertionError(f"no run was scheduled; API errors during the submission: {refused}") from err
    assert run_name in page.inner_text("body")
    shot(page, f"prefect-custom-run-{name}-submitted")
    return run_name


def wait_for_text(page: Any, text: str, name: str) -> None:
    """Wait until ``text`` shows on the page; if it never does, keep the page's text and a screenshot
    (``<name>-body.txt``, ``<name>-failed``) before the timeout propagates."""
    try:
        page.get_by_text(text).first.wait_for()
    except Exception:
        (artifacts_dir() / f"{name}-body.txt").write_text(page.inner_text("body"))
        shot(page, f"{name}-failed")
        raise


def prefect_run_page(page: Any, ui: str, run_id: str, state: str, *, log_text: str | None = None,
                     artifact_key: str | None = None, name: str = "prefect-flow-run") -> None:
    """The run's page shows ``state`` (and ``log_text`` among its logs); then, with ``artifact_key``, its
    Artifacts tab lists that artifact."""
    page.goto(f"{ui}/runs/flow-run/{run_id}")
    page.get_by_text(state, exact=True).first.wait_for()
    if log_text:
        wait_for_text(page, log_text, name)
    shot(page, name)
    if artifact_key:
        page.get_by_text("Artifacts", exact=True).first.click()
        wait_for_text(page, artifact_key, f"{name}-artifacts")
        shot(page, f"{name}-artifacts")


def mlflow_model_alias(page: Any, url: str, model: str, version: str, alias: str) -> None:
    """The registered model's page shows ``@ alias`` on the row of ``version``."""
    page.goto(f"{url}/#/models")
    page.get_by_role("link", name=model, exact=True).first.wait_for()
    page.keyboard.press("Escape")  # the registry's "new UI" announcement dialog, when shown
    shot(page, "mlflow-registered-models")
    page.goto(f"{url}/#/models/{model}")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=f"Version {version}", exact=True))
    row.first.wait_for()
    text = row.first.inner_text()
    assert alias in text, f"alias {alias!r} not on version {version}'s row: {text!r}"
    page.keyboard.press("Escape")
    shot(page, "mlflow-model-champion")


def mlflow_model_version(page: Any, url: str, model: str, version: str, name: str) -> None:
    """The version's page renders its description as markdown (a table of scores, no raw ``|---|``) and shows
    its input schema."""
    page.goto(f"{url}/#/models/{model}/versions/{version}")
    cell = page.locator("td").filter(has_text=re.compile(r"^\s*mse\s*$"))
    cell.first.wait_for()
    page.keyboard.press("Escape")
    assert page.get_by_text("|---|").count() == 0, "the description shows as raw markdown"
    shot(page, name)
