"""Fault: the S3 server is restarted while the ingest flow is writing to it.

The ``write`` task fails while the server is down, Prefect retries it, and the flow publishes the
same version (same content hash) that an undisturbed ingest makes. Nothing is lost: the dataset
published before the outage still reads back bit for bit, no half-written version is ever listed,
and what the failed attempt left behind is only an unreferenced data prefix that ``gc_orphans``
removes.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infra.stack import Stack, StackSettings

pytestmark = [pytest.mark.slow, pytest.mark.s3, pytest.mark.prefect]

GEN = {"num_clips": 600, "frames": 10, "height": 64, "width": 64, "seed": 3}


def _clips(uri: str, s3: dict[str, Any] | None = None) -> np.ndarray:
    from predrnn.data import open_version

    return np.asarray(open_version(uri, s3).array[:])


def test_s3_restart_during_ingest_flow(prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.ingest import ingest_flow
    from predrnn.data import gc_orphans, ingest, list_datasets, open_version
    from predrnn.settings import s3_settings

    stack = Stack(StackSettings(state_dir=Path(tempfile.mkdtemp(prefix="predrnn-s3fault-")),
                                services=["s3"]).with_free_ports())
    stack.up(echo=print)
    try:
        for k, v in stack.client_env().items():
            monkeypatch.setenv(k, v)
        root, cfg = "s3://datasets", s3_settings(stack.client_env())
        before = ingest("moving-digits", None, "before", root, num_clips=24, frames=8, height=32, width=32, seed=1,
                        s3=cfg)
        before_clips = _clips(before, cfg)
        reference = ingest("moving-digits", None, "digits", str(tmp_path / "local"), **GEN)  # undisturbed

        s3 = stack.s3_client()
        outage: dict[str, Any] = {}

        def restart_once_writing() -> None:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 120:
                try:
                    keys = s3.list_objects_v2(Bucket="datasets", Prefix="digits/data/").get("KeyCount", 0)
                except Exception:
                    keys = 0
                if keys >= 20:  # chunks of the staged group are arriving: the write task is mid-way
                    outage["objects_when_killed"] = keys
                    outage["back_after_s"] = stack.restart("s3", down_s=4.0, kill=True, echo=print)
                    return
                time.sleep(0.05)

        watcher = threading.Thread(target=restart_once_writing, daemon=True)
        watcher.start()
        state = ingest_flow(kind="moving-digits", name="digits", root=root, return_state=True, **GEN)
        watcher.join(timeout=180)
        assert outage.get("back_after_s"), "the S3 server was never restarted during the write"
        print("outage:", outage)

        assert state.is_completed(), state
        uri = state.result()
        assert uri.split("@")[1] == reference.split("@")[1]  # the same content hash as the undisturbed ingest
        np.testing.assert_array_equal(_clips(uri, cfg), _clips(reference))

        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
        write = [r for r in runs if r.name.startswith("write")]
        assert len(write) == 1 and write[0].run_count >= 2, [(r.name, r.run_count) for r in runs]  # retried

        # nothing lost, nothing half-written
        np.testing.assert_array_equal(_clips(before, cfg), before_clips)
        listed = {d["name"]: d for d in list_datasets(root, cfg)}
        assert set(listed) == {"before", "digits"}
        assert open_version(f"{root}/digits@latest", cfg).version == uri.split("@")[1]
        removed = gc_orphans(root, "digits", older_than_s=0, s3=cfg)
        assert len(removed) <= write[0].run_count - 1  # at most one leftover prefix per failed attempt
        np.testing.assert_array_equal(_clips(uri, cfg), _clips(reference))
    finally:
        stack.down(echo=print)
    assert not stack.running()
