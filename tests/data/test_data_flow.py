"""The Prefect ``ingest`` flow through Prefect's real test harness."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from predrnn.data import DataError, list_datasets, open_version

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def _artifacts() -> dict[str, tuple[str, str]]:
    from prefect.client.orchestration import get_client

    async def read() -> dict[str, tuple[str, str]]:
        async with get_client() as client:
            return {a.key: (a.type, str(a.data)) for a in await client.read_artifacts() if a.key}

    return asyncio.run(read())


def test_ingest_flow_publishes_and_reports(prefect_harness, root: Path, tmp_path: Path):
    from flows.ingest import ingest_flow

    uri = ingest_flow(kind="moving-digits", name="flow-mm", root=str(root), num_clips=16, frames=8,
                      height=32, width=32)
    v = open_version(uri)
    assert v.shape == (16, 8, 32, 32, 1)
    arts = _artifacts()
    kind, md = arts["ingest-flow-mm"]
    assert kind == "markdown"
    assert v.uri in md and "| clips | 16 |" in md and "train 12, val 2, test 2" in md and "clips/s" in md
    assert "data:image/png;base64," in md
    assert arts["ingest-flow-mm-samples"][0] == "image"
    # Re-running is a no-op returning the same version.
    assert ingest_flow(kind="moving-digits", name="flow-mm", root=str(root), num_clips=16, frames=8,
                       height=32, width=32) == uri
    assert len(list_datasets(root)) == 1

    # Bad input fails the flow with the library's message, without retries, and publishes nothing.
    np.save(tmp_path / "bad.npy", np.zeros((2, 4, 8), np.uint8))
    with pytest.raises(DataError, match=r"bad\.npy: wrong rank 3"):
        ingest_flow(kind="npy", source=str(tmp_path / "bad.npy"), name="bad", root=str(root))
    assert [r["name"] for r in list_datasets(root)] == ["flow-mm"]


def test_flow_parameters_render_as_a_form():
    from prefect.utilities.callables import parameter_schema

    from flows.ingest import ingest_flow

    schema = parameter_schema(ingest_flow.fn).model_dump()
    props = schema["properties"]
    assert set(schema["required"]) == {"kind", "name", "root"}
    assert "moving-digits" in str(props["kind"]) and props["window"]["description"]
    assert {"source", "num_clips", "stride", "resize", "val_fraction", "split_seed"} <= set(props)
