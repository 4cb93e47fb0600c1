"""The search space: constraints hold for every sampled point, schedules keep their shape at any budget,
and bad spaces and budgets are refused before a search starts."""

from __future__ import annotations

import optuna
import pytest
from tune_helpers import TINY

from predrnn.config import ConfigError, load_config
from predrnn.sampling import probabilities
from predrnn.tune import SearchSpace, SpaceError, TuneSettings, apply_params, plan, scale_schedule


def _points(space: SearchSpace, cfg, budget: int, n: int, seed: int = 0) -> list[dict]:
    """``n`` points drawn by a real Optuna study through the define-by-run space."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    fn = space.define_by_run(cfg, budget)
    out = []
    for _ in range(n):
        trial = study.ask()
        fn(trial)
        out.append(dict(trial.params))
        study.tell(trial, 0.0)
    return out


@pytest.mark.parametrize("budget", [2, 7, 60, 600])
def test_sampled_points_respect_the_constraints(budget):
    cfg = load_config("quick")
    for params in _points(SearchSpace(), cfg, budget, 60, seed=budget):
        c = apply_params(cfg, params, budget)
        s = c.sampling
        assert 0 <= s.r_sampling_step_1 < s.r_sampling_step_2 <= budget == c.optim.max_iterations
        assert s.r_exp_alpha > 0 and 1e-4 <= c.optim.lr <= 1e-2 and 1e-3 <= c.optim.decouple_beta <= 1
        assert s.rss_curve in ("exp", "linear", "sigmoid")
        assert ("rss_alpha_frac" in params) == (params["rss_curve"] != "linear")


def test_ss_dimensions_for_v1_and_none_for_rss():
    v1 = load_config("moving_mnist_v1")
    dims = SearchSpace().dimensions(v1)
    assert dims == ["ss_stop_frac", "ss_rate_frac", "lr"]  # V1: no RSS, no decoupling
    for params in _points(SearchSpace(), v1, 1000, 20):
        s = apply_params(v1, params, 1000).sampling
        assert 1 <= s.sampling_stop_iter <= 1000 and s.sampling_changing_rate > 0
    assert "ss_stop_frac" not in SearchSpace().dimensions(load_config("quick"))


def test_schedules_scale_with_the_budget():
    """A short trial sees the same schedule shape: r_eta/eta at the same fraction of training agree."""
    cfg = load_config("quick")  # 600 iterations, RSS 150 / 400, alpha 40
    point = {"rss_step1_frac": 0.25, "rss_step2_frac": 0.75, "rss_curve": "sigmoid", "rss_alpha_frac": 0.05,
             "lr": 1e-3, "decouple_beta": 0.1}
    long, short = apply_params(cfg, point, 6000), apply_params(cfg, point, 600)
    assert (short.sampling.r_sampling_step_1, short.sampling.r_sampling_step_2) == (150, 450)
    assert (long.sampling.r_sampling_step_1, long.sampling.r_sampling_step_2) == (1500, 4500)
    for frac in (0.1, 0.3, 0.5, 0.7, 0.9):
        a = probabilities(round(frac * 6000), long.sampling)
        b = probabilities(round(frac * 600), short.sampling)
        assert a == pytest.approx(b, abs=1e-9)
    # dimensions that are not searched keep the preset's shape, rescaled
    kept = scale_schedule(cfg, 60).sampling
    assert (kept.r_sampling_step_1, kept.r_sampling_step_2, kept.r_exp_alpha) == (15, 40, pytest.approx(4.0))


def test_best_point_is_a_preset_compatible_config(tmp_path):
    cfg = load_config("quick", overrides=TINY)
    params = _points(SearchSpace(), cfg, 40, 1)[0]
    c = apply_params(cfg, params, 40, eval_interval=5)
    path = tmp_path / "best.json"
    path.write_text(c.to_json())
    again = load_config(None, str(path))
    assert again == c and again.optim.eval_interval == again.optim.checkpoint_interval == 5


@pytest.mark.parametrize("overrides, message", [
    (["rss_step1_frac=[0.6,0.9]", "rss_step2_frac=[0.2,0.5]"], "contradictory RSS range"),
    (["rss_step1_frac=[0.5,0.5]", "rss_step2_frac=[0.5,0.5]"], "contradictory RSS range"),
    (["ss_rate_frac=[-1,2]"], "rates must be positive"),
    (["lr=[-1e-3,1e-2]"], "must be positive"),
    (["lr=[1e-2,1e-4]"], "empty range"),
    (["rss_step2_frac=[0.5,1.5]"], "must lie in [0, 1]"),
    (["rss_curves=[]"], "non-empty subset"),
    (["rss_curves=[\"cubic\"]"], "non-empty subset"),
    (["rss_step1_frac=null", "rss_step2_frac=null", "rss_curves=null", "rss_alpha_frac=null",
      "decouple_beta=null", "lr=null"], "search space is empty"),
    (["rss_step1_frac=0.2", "rss_step2_frac=0.6", "rss_curves=[\"exp\"]", "rss_alpha_frac=0.1",
      "decouple_beta=0.1", "lr=0.001"], "every dimension"),
])
def test_bad_spaces_are_refused(overrides, message):
    space = SearchSpace().with_overrides(overrides)
    with pytest.raises(SpaceError, match=message.replace("[", r"\[").replace("]", r"\]")):
        space.check(load_config("quick"), 600)


def test_unknown_dimension_and_bad_value():
    with pytest.raises(SpaceError, match="unknown search dimension 'momentum'"):
        SearchSpace().with_overrides(["momentum=[0,1]"])
    with pytest.raises(SpaceError, match=r"expected \[low, high\]"):
        SearchSpace().with_overrides(["lr=[1,2,3]"])
    assert SearchSpace().with_overrides(["lr=3e-4"]).lr == (3e-4, 3e-4)
    assert SearchSpace.from_dict(SearchSpace().to_dict()) == SearchSpace()


def test_budget_too_small_for_an_evaluation():
    cfg = load_config("quick")
    with pytest.raises(ConfigError, match="too small"):
        plan(cfg, TuneSettings(max_iterations=1))
    with pytest.raises(ConfigError, match="too small for 3 evaluation"):
        plan(cfg, TuneSettings(max_iterations=10, evaluations=2, grace_evaluations=3))
    with pytest.raises(ConfigError, match="--trials"):
        plan(cfg, TuneSettings(trials=0))
    assert plan(cfg, TuneSettings(max_iterations=80, evaluations=8)) == (80, 10, 10)
    # a budget that cannot hold step_1 < step_2 for the requested fractions
    with pytest.raises(SpaceError, match="cannot hold"):
        SearchSpace().with_overrides(["rss_step1_frac=[0.4,0.45]", "rss_step2_frac=[0.45,0.5]"]).check(cfg, 2)
