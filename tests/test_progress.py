"""A flow's phases (flows/progress.Phases): where the bar stands in each phase, and which moves reach the log."""

from __future__ import annotations

import logging

import pytest
from log_lines import Lines

from flows.progress import Phases


@pytest.fixture
def phases(monkeypatch):
    """Phases of weights 10/80/10 writing to a logger of their own; the artifact updates recorded."""
    import prefect
    import prefect.artifacts

    seen = Lines()
    logger = logging.getLogger("test-phases")
    logger.setLevel(logging.INFO)
    logger.addHandler(seen)
    moves: list[tuple[float, str]] = []
    monkeypatch.setattr(prefect, "get_run_logger", lambda: logger)
    monkeypatch.setattr(prefect.artifacts, "update_progress_artifact",
                        lambda _id, progress, description: moves.append((progress, description)))
    p = Phases("t", {"starting Ray": 10, "training": 80, "evaluating": 10}, artifact_id="a", t0=0.0)
    yield p, seen.lines, moves
    logger.removeHandler(seen)


def test_each_phase_starts_at_its_share_of_the_bar_and_is_logged_in_order(phases):
    p, lines, moves = phases
    p.enter("starting Ray", "the cluster")
    p.enter("training")
    p.within(0.5, "iteration 4 of 8")
    p.enter("evaluating")
    p.done("registered v1")
    assert [m[0] for m in moves] == [0.0, 10.0, 50.0, 90.0, 100.0]
    assert moves[2][1] == "2 of 3: training (iteration 4 of 8)"
    assert [line.split(";")[0] for line in lines[:4]] == [
        "phase 1 of 3: starting Ray (the cluster)", "phase 2 of 3: training",
        "phase 2 of 3: training (iteration 4 of 8)", "phase 3 of 3: evaluating"]
    assert lines[4].startswith("registered v1 (after ") and moves[4][1] == lines[4]
    with pytest.raises(KeyError):
        p.enter("promotion gate")


def test_the_bar_moves_at_every_iteration_the_log_at_each_tenth(phases):
    p, lines, moves = phases
    p.enter("training")
    for k in range(1, 41):  # 40 iterations, each read once
        p.within(k / 40, f"iteration {k} of 40")
    assert len(moves) == 41 and moves[-1][0] == 90.0  # the training phase ends at 10 + 80 %
    logged = [line.split("(")[1].split(")")[0] for line in lines[1:]]
    assert logged == [f"iteration {k} of 40" for k in range(4, 41, 4)]  # one line per tenth, the last included
    p.enter("training")  # a phase entered again logs its tenths again
    p.within(0.15, "iteration 6 of 40")
    assert lines[-1].startswith("phase 2 of 3: training (iteration 6 of 40)")
