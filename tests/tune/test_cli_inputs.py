"""``predrnn tune`` refuses bad input with a clear one-line error before Ray or any trial starts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from predrnn.cli import app


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("PREDRNN_STATE_DIR", str(tmp_path / "state"))
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["tune", *args])

    return invoke


@pytest.mark.parametrize("args, message", [
    (["--space", "rss_step1_frac=[0.6,0.9]", "--space", "rss_step2_frac=[0.1,0.5]"], "contradictory RSS range"),
    (["--space", "ss_rate_frac=[-0.5,1]", "--preset", "moving_mnist_v1"], "rates must be positive"),
    (["--space", "lr=null", "--space", "decouple_beta=null", "--space", "rss_step1_frac=null",
      "--space", "rss_step2_frac=null", "--space", "rss_curves=null", "--space", "rss_alpha_frac=null"],
     "search space is empty"),
    (["--max-iterations", "1"], "too small"),
    (["--max-iterations", "10", "--evaluations", "2", "--grace", "3"], "too small for 3 evaluation"),
    (["--trials", "0"], "--trials must be >= 1"),
    (["--preset", "nope"], "unknown preset"),
    (["--set", "optim.nope=1"], "unknown config key"),
])
def test_bad_input_fails_before_any_trial(run, tmp_path, args, message):
    result = run("--data", str(tmp_path / "missing@v1"), "--storage", str(tmp_path / "tune"), *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "tune").exists()  # nothing started


def test_missing_dataset_and_bad_resume(run, tmp_path):
    result = run("--data", str(tmp_path / "missing@v1"), "--storage", str(tmp_path / "tune"))
    assert result.exit_code == 2 and "cannot open dataset" in result.output
    result = run("--resume", str(tmp_path))
    assert result.exit_code == 2 and "is not a predrnn search directory" in result.output
