"""``predrnn bench``: the figures users compare (parameters, GMAC per clip, clips/s), recorded in MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from predrnn.cli import app

# one layer of 8 channels, patch 2, 3x3 kernels, 8x8x1 frames, 2 -> 2 frames, batch 2
TINY = ["model.num_hidden=[8]", "model.patch_size=2", "model.filter_size=3", "data.img_height=8",
        "data.img_width=8", "data.input_length=2", "data.total_length=4", "optim.batch_size=2"]


def _last_json(output: str) -> dict:
    return json.loads([line for line in output.splitlines() if line.startswith("{")][-1])


@pytest.mark.mlflow
def test_bench_counts_parameters_and_macs_by_hand_and_logs_the_run(tmp_path: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["bench", "--reps", "1", "--log", "--tracking-uri", uri]
    for item in TINY:
        args += ["--set", item]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = _last_json(res.output)
    # on the 4x4 grid of 4 patch channels, per step and clip: conv_x 4->56, conv_h 8->32, conv_m 8->24 and
    # conv_o 16->8 (3x3), the cell's 1x1 16->8 and the output 1x1 8->4; 3 steps to forecast 2 frames from 2
    per_step = 16 * (56 * 4 * 9 + 32 * 8 * 9 + 24 * 8 * 9 + 8 * 16 * 9 + 8 * 16 + 4 * 8)
    assert out["gmac_per_clip_forecast"] == pytest.approx(3 * per_step / 1e9, rel=1e-12)
    # the same kernels' weights, plus the 1x1 decoupling adapter 8->8
    assert out["params"] == 56 * 4 * 9 + 32 * 8 * 9 + 24 * 8 * 9 + 8 * 16 * 9 + 8 * 16 + 4 * 8 + 8 * 8
    assert out["train_clips_per_s"] == pytest.approx(2 / out["train_step_s"])
    assert out["forecast_clips_per_s"] == pytest.approx(2 / out["forecast_s"])
    assert (out["device"], out["batch_size"], out["input"]) == ("cpu", 2, "8x8x1, 2 -> 2 frames")
    assert "parameters; per clip" in res.output and "logged as MLflow run" in res.output

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("predrnn-bench").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["train_clips_per_s"] == pytest.approx(out["train_clips_per_s"])
    assert runs[0].data.params["device"] == "cpu" and runs[0].data.params["input"] == "8x8x1, 2 -> 2 frames"

    # a result printed on another machine (the GPU bench's last line) is recorded as it is
    gpu = {"device": "NVIDIA H200", "batch": 64, "ours_bf16_cl_forecast_clips_per_s": 512.5, "skipped": []}
    (tmp_path / "gpu.txt").write_text("ours_bf16_cl_forecast_s  0.1249\n" + json.dumps(gpu) + "\n")
    res = CliRunner().invoke(app, ["bench", "--log-json", str(tmp_path / "gpu.txt"), "--tracking-uri", uri])
    assert res.exit_code == 0, res.output
    runs = client.search_runs([runs[0].info.experiment_id], filter_string="params.device = 'NVIDIA H200'")
    assert runs[0].data.metrics["ours_bf16_cl_forecast_clips_per_s"] == 512.5


def test_log_json_without_a_result_is_one_line(tmp_path: Path):
    (tmp_path / "empty.txt").write_text("no numbers here\n")
    res = CliRunner().invoke(app, ["bench", "--log-json", str(tmp_path / "empty.txt")])
    assert res.exit_code == 2 and "no JSON result line" in res.output
    assert len(res.output.strip().splitlines()) == 1
