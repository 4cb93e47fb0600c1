"""A failed or crashed nightly tells someone: the stack's Prefect automation posts to the configured webhook
(a local receiver here), with the run's name, state, reason and page; other deployments stay quiet, and the
webhook's URL is kept as a block secret, never in the automation, a state file or a log."""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ops_helpers import Receiver

from infra.stack import Stack, StackSettings

pytestmark = [pytest.mark.prefect]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


@pytest.fixture(scope="module")
def stack(receiver: Receiver) -> Iterator[Stack]:
    """The stack's Prefect server alone, with a failure webhook whose path holds a token (as Slack's does)."""
    token = secrets.token_urlsafe(16)
    root = Path(tempfile.mkdtemp(prefix="predrnn-stack-"))
    st = Stack(StackSettings(state_dir=root, services=["prefect"],
                             failure_webhook=receiver.url(f"/hooks/{token}")).with_free_ports())
    st.up(echo=print)
    try:
        yield st
    finally:
        st.down(echo=print)


def _failed_run(stack: Stack, deployment: str, state: str, message: str) -> dict[str, Any]:
    """A run of ``deployment`` that started and then ended in ``state`` (as a worker reports it)."""
    api = stack._prefect_api
    flow = api("/flows/", {"name": deployment})
    dep = api("/deployments/", {"name": deployment, "flow_id": flow["id"]})
    run = api(f"/deployments/{dep['id']}/create_flow_run", {})
    api(f"/flow_runs/{run['id']}/set_state", {"state": {"type": "RUNNING"}, "force": True})
    api(f"/flow_runs/{run['id']}/set_state", {"state": {"type": state, "message": message}, "force": True})
    return run


def _events(stack: Stack, run_id: str, event: str) -> int:
    found = stack._prefect_api("/events/filter", {"filter": {"event": {"name": [event]},
                                                             "resource": {"id": [f"prefect.flow-run.{run_id}"]}}})
    return len(found.get("events", []))


def test_a_failed_or_crashed_nightly_posts_to_the_webhook_and_other_deployments_do_not(stack, receiver):
    quiet = _failed_run(stack, "ingest", "FAILED", "not a nightly")
    t0 = time.monotonic()
    while not _events(stack, quiet["id"], "prefect.flow-run.Failed"):  # the event is in before the nightly's
        assert time.monotonic() - t0 < 60, "no Failed event for the ingest run"
        time.sleep(0.2)
    failed = _failed_run(stack, "nightly-retrain", "FAILED", "cannot reach the MLflow server")
    (path, note), = receiver.wait(1)
    assert path.startswith("/hooks/")
    assert note["subject"] == f"nightly-retrain: run {failed['name']} Failed", note
    body = note["body"]
    assert "Reason: cannot reach the MLflow server" in body and f"Flow run: {failed['name']}" in body, body
    page = body.split("Page: ", 1)[1].strip()
    assert page == f"{stack.s.urls()['prefect_ui']}/runs/flow-run/{failed['id']}", body
    crashed = _failed_run(stack, "nightly-retrain-small", "CRASHED", "the worker was restarted")
    second = receiver.wait(2)[1][1]
    assert second["subject"] == f"nightly-retrain-small: run {crashed['name']} Crashed", second
    assert not any("not a nightly" in n["body"] for _, n in receiver.got)


def test_the_webhook_url_is_a_block_secret_and_nowhere_else(stack, receiver):
    hook = stack.s.failure_webhook.get_secret_value()
    api = stack._prefect_api
    (auto,) = api("/automations/filter", {"automations": {"name": {"any_": ["predrnn: notify a failed run"]}}})
    assert hook not in json.dumps(auto)
    block = api("/block_types/slug/custom-webhook/block_documents/name/predrnn-failure-webhook", method="GET")
    assert block["data"]["secrets"] == {"url": "********"} and block["data"]["url"] == "{{url}}"
    written = [p for p in stack.root.rglob("*") if p.is_file()]  # state, logs, Prefect's database (encrypted)
    assert written and not [p for p in written if hook.encode() in p.read_bytes()]
    shown = dict((var, value) for var, value, _ in stack.s.described(env={}, dotenv=None))
    assert shown["PREDRNN_STACK_FAILURE_WEBHOOK"] == "********"
