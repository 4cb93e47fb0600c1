"""The promotion gate on a real MLflow registry (SQLite store): refuse, force, rollback, records."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from predrnn.tracking.registry import (
    COMPARISON_TAG,
    DECISION_TAG,
    PREVIOUS_TAG,
    RegistryError,
    compare,
    current_champion,
    promote,
    rollback,
)

pytestmark = [pytest.mark.mlflow]

NAME = "gate-model"


def add_version(uri: str, test_mse: float, dataset: str = "ds@v1", persistence_mse: float = 99.0,
                as_tags: bool = False, **scores: float) -> int:
    """A registered version as training registers it: its run holds the test scores as metrics (``test_mse``,
    ``test_persistence_mse``, ``test_csi_m`` ...) and the version a ``dataset`` tag; ``as_tags``: the scores
    as version tags and no run (versions registered before the scores moved to the run)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri, uri)
    with contextlib.suppress(Exception):  # already registered
        client.create_registered_model(NAME)
    values = {"test_mse": test_mse, "test_persistence_mse": persistence_mse,
              **{f"test_{k}": v for k, v in scores.items()}}
    if as_tags:
        tags = {"dataset": dataset, **{k: f"{v:.6g}" for k, v in values.items()}}
        return int(client.create_model_version(NAME, "file:///nonexistent/model", tags=tags).version)
    exp = client.get_experiment_by_name("gate") or client.get_experiment(client.create_experiment("gate"))
    run = client.create_run(exp.experiment_id)
    for k, v in values.items():
        client.log_metric(run.info.run_id, k, v, step=8)
    mv = client.create_model_version(NAME, "file:///nonexistent/model", run_id=run.info.run_id,
                                     tags={"dataset": dataset, "test_mse": f"{test_mse:.6g}"})
    return int(mv.version)


def test_the_gate_reads_the_runs_scores_and_a_legacy_versions_tags(uri):
    """The scores live on the registering run (a version carries a handful of tags); a version registered
    with score tags only is still read."""
    from mlflow import MlflowClient

    legacy = add_version(uri, 2.0, as_tags=True, csi_m=0.30)
    assert promote(NAME, legacy, tracking_uri=uri, metric="test_csi_m", first_must_beat=("persistence", 0.1)).promoted
    newer = add_version(uri, 2.0, csi_m=0.40)
    assert "test_csi_m" not in MlflowClient(uri, uri).get_model_version(NAME, str(newer)).tags
    decision = promote(NAME, newer, tracking_uri=uri, metric="test_csi_m")
    assert decision.promoted and decision.comparison["candidate"] == pytest.approx(0.40)
    assert decision.comparison["champion"] == pytest.approx(0.30)
    # the run's metric is what counts, not a stale tag of the same name
    client = MlflowClient(uri, uri)
    stale = add_version(uri, 5.0)
    client.set_model_version_tag(NAME, str(stale), "test_mse", "0.001")
    refused = promote(NAME, stale, tracking_uri=uri)
    assert not refused.promoted and refused.comparison["candidate"] == pytest.approx(5.0)


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_compare_is_relative_and_lower_is_better():
    assert compare(0.9, 1.0, margin=0.05)["better"]
    assert not compare(0.96, 1.0, margin=0.05)["better"]
    assert compare(5.0, None)["better"] and not compare(float("nan"), 1.0)["better"]
    with pytest.raises(ValueError):
        compare(1.0, 1.0, margin=1.5)


def test_compare_knows_each_scores_direction():
    assert compare(0.55, 0.5, margin=0.05, lower_is_better=False)["better"]  # CSI: higher is better
    assert not compare(0.52, 0.5, margin=0.05, lower_is_better=False)["better"]
    assert not compare(0.4, 0.5, margin=0.0, lower_is_better=False)["better"]
    # a negative skill score: the margin is relative to its size, in the better direction
    assert compare(-0.09, -0.1, margin=0.05, lower_is_better=False)["better"]
    assert compare(0.5, 1.0, margin=0.0)["improvement"] == pytest.approx(0.5)
    assert compare(0.6, 0.5, margin=0.0, lower_is_better=False)["improvement"] == pytest.approx(0.2)


def test_gate_on_csi_m_promotes_the_higher_score(uri):
    v1 = add_version(uri, 10.0, csi_m=0.40)
    assert promote(NAME, v1, tracking_uri=uri, metric="test_csi_m", first_must_beat=("persistence", 0.2)).promoted
    worse_mse_better_csi = add_version(uri, 11.0, csi_m=0.45)
    assert not promote(NAME, worse_mse_better_csi, tracking_uri=uri).promoted  # default: test MSE
    decision = promote(NAME, worse_mse_better_csi, tracking_uri=uri, metric="test_csi_m", margin=0.05)
    assert decision.promoted and decision.comparison["lower_is_better"] is False and ">=" in decision.reason
    lower_csi = add_version(uri, 1.0, csi_m=0.30)
    refused = promote(NAME, lower_csi, tracking_uri=uri, metric="test_csi_m")
    assert not refused.promoted and "not above" in refused.reason
    with pytest.raises(ValueError, match="no promotion direction for score 'test_bias_2'"):
        promote(NAME, lower_csi, tracking_uri=uri, metric="test_bias_2")


def test_the_gate_refuses_a_candidate_that_does_not_beat_the_named_baseline(uri):
    """``must_beat``: the first model, and a model better than the champion, are refused when the baseline
    scores better on the same test split; recorded on the version, overridden only by force."""
    from mlflow import MlflowClient

    v1 = add_version(uri, 10.0, csi_m=0.40)
    first = promote(NAME, v1, tracking_uri=uri, metric="test_csi_m", candidate_value=0.40, dataset="ds@v1",
                    must_beat=("extrapolation", 0.45))
    assert not first.promoted and current_champion(NAME, tracking_uri=uri, missing_ok=True) is None
    assert "does not beat the extrapolation baseline's 0.45" in first.reason
    assert first.comparison["must_beat"] == {"baseline": "extrapolation", "value": 0.45, "beaten": False}
    tags = MlflowClient(uri, uri).get_model_version(NAME, str(v1)).tags
    assert tags[DECISION_TAG] == "refused" and json.loads(tags[COMPARISON_TAG])["must_beat"]["beaten"] is False
    ok = promote(NAME, v1, tracking_uri=uri, metric="test_csi_m", candidate_value=0.40, dataset="ds@v1",
                 must_beat=("extrapolation", 0.35))
    assert ok.promoted and ok.comparison["must_beat"]["beaten"]
    v2 = add_version(uri, 9.0, csi_m=0.50)  # beats the champion by far, not the baseline
    refused = promote(NAME, v2, tracking_uri=uri, metric="test_csi_m", candidate_value=0.50, champion_value=0.40,
                      dataset="ds@v1", must_beat=("sprog", 0.52))
    assert not refused.promoted and "sprog baseline's 0.52" in refused.reason
    mse = promote(NAME, v2, tracking_uri=uri, metric="test_mse", candidate_value=9.0, champion_value=10.0,
                  dataset="ds@v1", must_beat=("persistence", 8.0))  # lower is better: 9 does not beat 8
    assert not mse.promoted and "does not beat the persistence baseline's 8" in mse.reason
    forced = promote(NAME, v2, tracking_uri=uri, metric="test_csi_m", candidate_value=0.50, champion_value=0.40,
                     dataset="ds@v1", must_beat=("sprog", 0.52), force=True)
    assert forced.promoted and forced.forced and forced.reason.startswith("forced; the gate would have refused")


def test_the_first_model_must_beat_a_baseline_too(uri):
    """No champion yet is no free pass: the first candidate is refused when a baseline scores better (its
    evaluation's strongest one, or the persistence MSE recorded at registration), and when no baseline value
    is known; force promotes it, recorded as forced."""
    from mlflow import MlflowClient

    from predrnn.jobs.promote import strongest_baseline

    lost = add_version(uri, 10.0, persistence_mse=8.0)  # training recorded persistence beating it
    refused = promote(NAME, lost, tracking_uri=uri)
    assert not refused.promoted and current_champion(NAME, tracking_uri=uri, missing_ok=True) is None
    assert refused.reason == ("no champion yet; test_mse 10 does not beat the persistence baseline's 8 "
                              "on the same test split")
    report = refused.markdown()  # what the artifact and the nightly report show: no champion to have kept
    assert report.startswith(f"## {NAME}: v{lost} not promoted") and "None" not in report, report
    assert "| persistence baseline | 8 | < 8 | no |" in report and "champion v" not in report, report
    assert MlflowClient(uri, uri).get_model_version(NAME, str(lost)).tags[DECISION_TAG] == "refused"
    unknown = promote(NAME, lost, tracking_uri=uri, metric="test_csi_m")  # no baseline CSI on record
    assert not unknown.promoted and "no baseline's test_csi_m to beat" in unknown.reason
    evaluation = {"baseline_summaries": {"persistence": {"csi_m": 0.30}, "extrapolation": {"csi_m": 0.42},
                                         "sprog": {"csi_m": 0.38}}}
    best = strongest_baseline(evaluation, "test_csi_m")
    assert best == ("extrapolation", 0.42)
    assert strongest_baseline({"baseline_summaries": {"persistence": {"mse": 9.0}, "sprog": {"mse": 7.5}}},
                              "test_mse") == ("sprog", 7.5)  # lower is better
    v2 = add_version(uri, 10.0, csi_m=0.40)
    no = promote(NAME, v2, tracking_uri=uri, metric="test_csi_m", candidate_value=0.40, dataset="ds@v1",
                 first_must_beat=best)
    assert not no.promoted and "extrapolation baseline's 0.42" in no.reason
    forced = promote(NAME, lost, tracking_uri=uri, force=True)
    assert forced.promoted and forced.reason.startswith("forced; the gate would have refused: no champion yet")
    assert forced.verdict == f"promoted v{lost} (forced)" and forced.to_dict()["verdict"] == forced.verdict
    assert MlflowClient(uri, uri).get_model_version(NAME, str(lost)).tags[DECISION_TAG] == "promoted"
    beats = add_version(uri, 7.0, persistence_mse=8.0)
    rollback_free = promote(NAME, beats, tracking_uri=uri)  # a champion now: compared with it, as before
    assert rollback_free.promoted and "champion v1" in rollback_free.reason
    report = rollback_free.markdown()
    assert report.startswith(f"## {NAME}: promoted v{beats}") and "None" not in report, report
    assert f"| champion v{lost} | 10 | <= 9.9 (0.01 margin) | yes |" in report, report


def test_a_baseline_to_beat_needs_a_known_name_and_a_dataset(uri):
    from predrnn.jobs.model import JobError
    from predrnn.jobs.promote import prepare_promote

    with pytest.raises(JobError, match="--must-beat 'optical-flow' is no baseline; choose from persistence, "
                                       "extrapolation, sprog"):
        prepare_promote(NAME, 1, tracking_uri=uri, dataset="ds@v1", must_beat="optical-flow")
    with pytest.raises(JobError, match=r"--must-beat needs a dataset .* \(--data\)"):
        prepare_promote(NAME, 1, tracking_uri=uri, must_beat="extrapolation")


def test_gate_refuses_worse_forces_and_rolls_back(uri):
    from mlflow import MlflowClient

    v1 = add_version(uri, 10.0)
    first = promote(NAME, v1, tracking_uri=uri)
    assert first.promoted and first.previous is None and current_champion(NAME, tracking_uri=uri) == v1

    worse = add_version(uri, 10.5)
    refused = promote(NAME, worse, tracking_uri=uri, margin=0.01)
    assert not refused.promoted and refused.champion == v1 and "not below" in refused.reason
    assert refused.markdown().startswith(f"## {NAME}: kept champion v{v1}"), refused.markdown()
    assert f"| champion v{v1} | 10 | <= 9.9 (0.01 margin) | no |" in refused.markdown()
    assert current_champion(NAME, tracking_uri=uri) == v1
    client = MlflowClient(uri, uri)
    assert client.get_model_version(NAME, str(worse)).tags[DECISION_TAG] == "refused"

    slightly = add_version(uri, 9.95)  # better, but not by 1 %
    assert not promote(NAME, slightly, tracking_uri=uri, margin=0.01).promoted
    assert promote(NAME, slightly, tracking_uri=uri, margin=0.0).promoted
    assert current_champion(NAME, tracking_uri=uri) == slightly

    forced = promote(NAME, worse, tracking_uri=uri, force=True)
    assert forced.promoted and forced.forced and forced.previous == slightly and "forced" in forced.reason
    mv = client.get_model_version(NAME, str(worse))
    assert mv.tags[PREVIOUS_TAG] == str(slightly) and mv.tags[DECISION_TAG] == "promoted"
    comparison = json.loads(mv.tags[COMPARISON_TAG])
    assert comparison["candidate"] == pytest.approx(10.5) and comparison["champion"] == pytest.approx(9.95)
    assert "forced" in mv.description

    back = rollback(NAME, tracking_uri=uri)
    assert back.champion == slightly and current_champion(NAME, tracking_uri=uri) == slightly
    assert rollback(NAME, tracking_uri=uri).champion == v1  # the chain goes on
    with pytest.raises(RegistryError, match="no previous"):
        rollback(NAME, tracking_uri=uri)


def test_measured_values_replace_tags_and_datasets_must_match(uri):
    v1 = add_version(uri, 10.0, dataset="ds@a")
    promote(NAME, v1, tracking_uri=uri)
    v2 = add_version(uri, 1.0, dataset="ds@b")
    refused = promote(NAME, v2, tracking_uri=uri)
    assert not refused.promoted and "not comparable" in refused.reason
    ok = promote(NAME, v2, tracking_uri=uri, candidate_value=4.0, champion_value=5.0, dataset="ds@c")
    assert ok.promoted and ok.comparison["dataset"] == "ds@c"


def test_unknown_model_and_unreachable_server_are_clear(uri):
    with pytest.raises(RegistryError, match="cannot read registered model"):
        promote("nope", 1, tracking_uri=uri)
    with pytest.raises(RegistryError, match="not started.*unreachable"):
        promote(NAME, 1, tracking_uri="http://127.0.0.1:9")
