"""The quality benchmark runs as a Prefect flow on tiny settings and reports every variant."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.prefect]

TINY = ["data.img_height=32", "data.img_width=32", "data.input_length=4", "data.total_length=8",
        "model.patch_size=4", "model.num_hidden=[8]", "model.filter_size=3", "optim.batch_size=4"]


def test_quality_flow_reports_each_variant(tmp_path):
    from prefect.testing.utilities import prefect_test_harness

    from flows.quality import quality_benchmark

    with prefect_test_harness(server_startup_timeout=90):
        out = quality_benchmark(iterations=3, seeds=[0], clips=20, datasets=["moving-digits"],
                                variants=["persistence", "v2_both"], overrides=TINY, root=str(tmp_path / "data"),
                                out=str(tmp_path / "report"))
    rows = out["results"]["moving-digits"]["rows"]
    assert [r["variant"] for r in rows] == ["persistence", "v2_both"]
    for r in rows:
        assert len(r["mse_per_frame"]) == 4 and all(v > 0 for v in r["mse_per_frame"])
    assert rows[0]["train_s"] == [0.0] and rows[1]["train_s"][0] > 0
    text = (tmp_path / "report" / "README.md").read_text()
    assert "| persistence |" in text and "| v2_both |" in text
    assert (tmp_path / "report" / "moving-digits_mse_by_lead_time.png").stat().st_size > 0
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    assert saved["iterations"] == 3 and saved["datasets"]["moving-digits"]["uri"].startswith(str(tmp_path))
