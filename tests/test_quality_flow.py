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
        out = quality_benchmark(iterations=3, seeds=[0], clips=20, datasets=["moving-digits", "storm-cells"],
                                variants=["persistence", "v2_both"], overrides=TINY, root=str(tmp_path / "data"),
                                out=str(tmp_path / "report"), horizon=6)
    rows = out["results"]["moving-digits"]["rows"]
    assert [r["variant"] for r in rows] == ["persistence", "v2_both"]
    for r in rows:
        # trained 4 -> 4 frames, tested 6 frames ahead (as KTH's 10 -> 20): one entry per lead time
        assert len(r["mse_per_frame"]) == 6 and all(v > 0 for v in r["mse_per_frame"])
    assert rows[0]["train_s"] == [0.0] and rows[1]["train_s"][0] > 0
    text = (tmp_path / "report" / "README.md").read_text()
    assert "| persistence |" in text and "| v2_both |" in text
    # storm cells take the pipeline's own path for fields: mm/h, no private rescaling, the scorecard
    storm = out["results"]["storm-cells"]["rows"]
    assert storm[0]["units"] == "mm/h" and storm[0]["ssim"] == [None] and storm[0]["rmse"][0] > 0
    assert set(storm[0]["csi"]) == {"0.5", "2", "5", "10", "30"} and set(storm[0]["fss"]["5"]) == {"1", "9"}
    assert "**CSI at >= 5 mm/h** by lead time" in text and "**FSS at >= 5 mm/h, 9 x 9 pixels**" in text
    assert (tmp_path / "report" / "moving-digits_mse_by_lead_time.png").stat().st_size > 0
    assert "horizon=6" in text and "Test horizon: 6 frames ahead" in text
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    assert saved["iterations"] == 3 and saved["datasets"]["moving-digits"]["uri"].startswith(str(tmp_path))


def test_variant_config_scales_schedules_and_beta():
    from bench.ablation import variant_config
    from predrnn.config import preset

    both = variant_config(preset("quick"), "v2_both", 1000, beta=0.005)
    assert (both.sampling.r_sampling_step_1, both.sampling.r_sampling_step_2) == (250, 650)
    assert both.optim.decouple_beta == 0.005 and both.model.arch == "predrnn_v2"
    assert variant_config(preset("quick"), "v2_rss", 1000, beta=0.005).optim.decouple_beta == 0.0
    v1 = variant_config(preset("quick"), "predrnn_v1", 1000)
    assert v1.sampling.scheme == "ss" and v1.sampling.sampling_stop_iter == 650 and v1.optim.decouple_beta == 0.0


def test_learning_curve_is_recorded_at_the_asked_iterations(tmp_path):
    import torch

    from bench.ablation import train_and_evaluate, variant_config
    from predrnn.config import apply_overrides, preset

    cfg = variant_config(apply_overrides(preset("quick"), TINY), "predrnn_v1", 4)
    clips = torch.rand(12, 8, 32, 32, 1)
    res = train_and_evaluate(cfg, "predrnn_v1", clips[:8], clips[8:], seed=0, eval_at=(2, 4))
    assert [c["iteration"] for c in res["curve"]] == [2, 4]
    assert res["curve"][-1]["mse_per_frame"] == pytest.approx(res["metrics"]["mse_per_frame"], rel=1e-5)


def test_curve_summary_counts_lead_times_against_persistence():
    from bench.ablation import summarize_curves

    pers = [1.0, 2.0, 3.0]

    def curve(variant, seed, beta, final):
        return {"variant": variant, "seed": seed, "beta": beta, "iterations": 20, "persistence": pers,
                "curve": [{"iteration": 10, "mse_per_frame": [9.0, 9.0, 9.0]},
                          {"iteration": 20, "mse_per_frame": final}]}

    table = summarize_curves([
        curve("v2_both", 0, 0.005, [0.5, 2.5, 1.0]),   # loses lead 2
        curve("v2_both", 1, 0.005, [0.7, 1.0, 1.0]),   # beats all; seed mean of lead 2 = 1.75 < 2
        curve("convlstm", 0, 0.1, [1.0, 1.0, 1.0]),    # ties lead 1: a tie is not a win
        {**curve("convlstm", 1, 0.1, [0.5, 0.5, 0.5]), "iterations": 40},  # another budget: its own row
    ])
    lines = table.splitlines()
    assert "| v2_both | 0.005 | 0 | 20 | 0.50 | 2.50 | 1.00 | 1.33 | 2/3 |" in lines
    assert "| v2_both | 0.005 | 0 | 10 | 9.00 | 9.00 | 9.00 | 9.00 | 0/3 |" in lines
    assert "| convlstm | - | 0 | 20 | 1.00 | 1.00 | 1.00 | 1.00 | 2/3 |" in lines  # beta shown only where used
    assert "| v2_both | 0.005 | 20 | 2 | 0.60 | 1.75 | 1.00 | 1.12 | none |" in lines
    assert "| convlstm | - | 20 | 1 | 1.00 | 1.00 | 1.00 | 1.00 | 1 |" in lines
    assert "| convlstm | - | 40 | 1 | 0.50 | 0.50 | 0.50 | 0.50 | none |" in lines
    assert lines.index("| convlstm | - | 0 | 10 | 9.00 | 9.00 | 9.00 | 9.00 | 0/3 |") < lines.index(
        "| v2_both | 0.005 | 0 | 10 | 9.00 | 9.00 | 9.00 | 9.00 | 0/3 |")  # benchmark order
