"""The promotion direction of every score a scorecard produces, and the gate deciding in that direction.

The names come from real scorecards (an image card with PSNR/SSIM and a field card, both with
thresholds, pooled CSI and FSS), so a score added to the scorecard without a direction pinned here
fails. Errors (MSE, MAE, RMSE) and the false-alarm ratio are better lower; PSNR, SSIM and the skill
scores (CSI, CSI-M, pooled CSI, POD, HSS, FSS) higher. The frequency bias is best at 1, so it has no
direction: the gate refuses to promote on it rather than rank a bias of 3 above one of 1.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from predrnn.config import ValuesConfig
from predrnn.metrics import MetricAccumulator, scorecard
from predrnn.scorecard import lower_is_better, summary_values
from predrnn.tracking.registry import compare, metric_tag, promote

LOWER, HIGHER, NONE = "lower", "higher", "none"
THR = r"-?[0-9][0-9.e+-]*"
# (pattern of a summary_values name, the direction the field gives it)
DIRECTIONS = [
    (r"mse", LOWER), (r"mae", LOWER), (r"rmse", LOWER),
    (r"psnr", HIGHER), (r"ssim", HIGHER),
    (r"csi_m", HIGHER), (rf"csi_{THR}", HIGHER), (rf"csi_pool\d+_{THR}", HIGHER),
    (rf"pod_{THR}", HIGHER), (rf"hss_{THR}", HIGHER), (rf"fss_{THR}_n\d+", HIGHER),
    (rf"far_{THR}", LOWER),
    (rf"bias_{THR}", NONE),  # ideal 1: neither lower nor higher is better
]


def _expected(name: str) -> str:
    hits = [d for pattern, d in DIRECTIONS if re.fullmatch(pattern, name)]
    assert len(hits) == 1, f"score {name!r} has no pinned promotion direction (add it to DIRECTIONS)"
    return hits[0]


def _score_names() -> set[str]:
    """Every name of :func:`summary_values` of an image and a field scorecard with all verification options."""
    g = np.random.default_rng(0)
    truth = g.random((2, 3, 8, 8, 1))
    image = MetricAccumulator(3, thresholds=[0.3, 0.6], pools=[2], fss_scales=[1, 3])
    image.update(np.clip(truth + 0.1 * g.standard_normal(truth.shape), 0.0, 1.0), truth)
    rain = ValuesConfig(kind="field", units="mm/h", mean=3.0, std=2.0, valid_min=0.0, thresholds=(0.5, 2.0))
    field = MetricAccumulator(3, values=rain, thresholds=[0.5, 2.0], pools=[2], fss_scales=[1, 3])
    obs = g.gamma(1.5, 2.5, (2, 3, 8, 8, 1))
    field.update(obs * 1.2, obs)
    names: set[str] = set()
    for acc in (image, field):
        names |= set(summary_values(scorecard(acc.compute())))
    return names


NAMES = sorted(_score_names())


def test_the_cards_produce_every_kind_of_score():
    """The names checked below cover every score family (a card that lost one would hide it here)."""
    for pattern, _ in DIRECTIONS:
        assert any(re.fullmatch(pattern, n) for n in NAMES), f"no score matches {pattern!r} in {NAMES}"


@pytest.mark.parametrize("name", NAMES)
def test_every_score_has_its_direction(name):
    """``lower_is_better`` of each score, by its summary name and by its registration tag (``test_<name>``)."""
    want = _expected(name)
    for metric in (name, metric_tag(name)):
        if want == NONE:
            with pytest.raises(KeyError, match="no promotion direction"):
                lower_is_better(metric)
        else:
            assert lower_is_better(metric) is (want == LOWER), metric


@pytest.mark.parametrize("name", NAMES)
def test_the_gate_promotes_a_better_candidate_and_refuses_a_worse_one(name):
    """The gate's decision (``compare`` in the score's direction, as ``promote`` calls it) for each score;
    a score without a direction is never ranked."""
    metric = metric_tag(name)
    if _expected(name) == NONE:
        with pytest.raises(KeyError):
            lower_is_better(metric)
        return
    lower = lower_is_better(metric)
    champion = 0.5
    better, worse = (0.4, 0.6) if _expected(name) == LOWER else (0.6, 0.4)
    assert compare(better, champion, margin=0.05, metric=metric, lower_is_better=lower)["better"], name
    assert not compare(worse, champion, margin=0.05, metric=metric, lower_is_better=lower)["better"], name


def test_fss_gate_end_to_end():
    """A candidate with the higher FSS is promoted over the champion, one with the lower FSS is not."""
    metric = metric_tag("fss_2_n3")
    lower = lower_is_better(metric)
    up = compare(0.62, 0.55, margin=0.01, metric=metric, lower_is_better=lower)
    down = compare(0.50, 0.55, margin=0.01, metric=metric, lower_is_better=lower)
    assert up["better"] and up["improvement"] > 0 and up["threshold"] == pytest.approx(0.55 * 1.01)
    assert not down["better"] and down["improvement"] < 0


def test_promote_refuses_a_score_without_direction_before_touching_the_store(tmp_path):
    """Asked to gate on a bias, ``promote`` says so at once, without opening the registry."""
    store = f"sqlite:///{tmp_path / 'never' / 'mlflow.db'}"
    with pytest.raises(ValueError, match="no promotion direction for score 'test_bias_2'"):
        promote("m", 1, metric="test_bias_2", tracking_uri=store)
    assert not (tmp_path / "never").exists()
