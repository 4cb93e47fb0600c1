"""The search space over sampling schedules, decoupling weight and learning rate, and how a point becomes a config.

Schedule iterations are searched as *fractions of the trial's iteration budget*, so a short trial
tests the same schedule shape as a long run: ``r_sampling_step_1 = round(f1 * budget)``,
``r_exp_alpha = fa * budget``, the SS stop iteration ``round(fs * budget)`` and the SS rate
``fr / budget`` (``fr`` is the total drop of ``eta`` over the budget). Parameters that are not
searched keep the preset's shape: they are rescaled from the preset's ``optim.max_iterations`` to
the budget first.

The constraint ``0 <= r_sampling_step_1 < r_sampling_step_2 <= max_iterations`` holds by
construction: the space is define-by-run (Optuna style), ``step_2``'s range starts above the
sampled ``step_1``. Contradictory ranges are refused by :meth:`SearchSpace.check` before a search
starts. Only the standard library is used here; the ``trial`` passed to the space is anything with
Optuna's ``suggest_float`` / ``suggest_categorical``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from predrnn.config import ConfigError, ExperimentConfig

CURVES = ("exp", "linear", "sigmoid")
LOG_DIMS = ("rss_alpha_frac", "ss_rate_frac", "decouple_beta", "lr")
FRACTION_DIMS = ("rss_step1_frac", "rss_step2_frac", "ss_stop_frac")


class SpaceError(ConfigError):
    """The search space is empty, contradictory or out of range."""


class Suggester(Protocol):
    """The part of ``optuna.Trial`` the space uses."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


Range = tuple[float, float] | None


@dataclass(frozen=True)
class SearchSpace:
    """Ranges ``(low, high)`` of each searched quantity; ``None`` keeps the preset's value (rescaled).

    Fractions are of the trial's iteration budget. ``low == high`` fixes a value. Dimensions that
    do not apply to the base config are left out of the search: RSS ones unless
    ``sampling.scheme=rss``, SS ones unless ``scheme=ss``, ``decouple_beta`` unless the model is
    ``predrnn_v2``, ``rss_alpha_frac`` when the sampled curve is ``linear`` (it has no alpha).
    """

    rss_step1_frac: Range = (0.0, 0.5)
    rss_step2_frac: Range = (0.3, 1.0)
    rss_curves: tuple[str, ...] | None = CURVES
    rss_alpha_frac: Range = (0.01, 0.2)  # log scale; the exp time constant / sigmoid scale
    ss_stop_frac: Range = (0.3, 1.0)
    ss_rate_frac: Range = (0.5, 4.0)  # log scale; eta's total drop over the budget
    decouple_beta: Range = (1e-3, 1.0)  # log scale
    lr: Range = (1e-4, 1e-2)  # log scale

    # -----------------------------------------------------------------------------------------
    # construction

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        space = cls()
        return space.with_overrides(f"{k}={json.dumps(v)}" for k, v in data.items())

    def with_overrides(self, items: Iterable[str]) -> SearchSpace:
        """Apply ``name=value`` strings: ``lr=[1e-4,1e-2]``, ``lr=3e-4`` (fixed), ``decouple_beta=null``
        (not searched), ``rss_curves=["exp","sigmoid"]``."""
        names = [f.name for f in dataclasses.fields(self)]
        out = self
        for item in items:
            if "=" not in item:
                raise SpaceError(f"space override {item!r} must look like name=[low,high]")
            key, raw = (s.strip() for s in item.split("=", 1))
            if key not in names:
                raise SpaceError(f"unknown search dimension {key!r}; known: {names}")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            out = dataclasses.replace(out, **{key: _parse_dimension(key, value)})
        return out

    # -----------------------------------------------------------------------------------------
    # checks

    def dimensions(self, cfg: ExperimentConfig) -> list[str]:
        """The searched names that apply to ``cfg`` (fixed ones included)."""
        dims: list[str] = []
        scheme = cfg.sampling.scheme
        if scheme == "rss":
            dims += [n for n in ("rss_step1_frac", "rss_step2_frac", "rss_curves", "rss_alpha_frac")
                     if getattr(self, n) is not None]
        elif scheme == "ss":
            dims += [n for n in ("ss_stop_frac", "ss_rate_frac") if getattr(self, n) is not None]
        if cfg.model.arch == "predrnn_v2" and self.decouple_beta is not None:
            dims.append("decouple_beta")
        if self.lr is not None:
            dims.append("lr")
        return dims

    def check(self, cfg: ExperimentConfig, budget: int) -> None:
        """Refuse an empty, contradictory or out-of-range space for ``cfg`` at ``budget`` iterations.

        Raises:
            SpaceError: naming every problem found.
        """
        errors: list[str] = []
        for name in (*FRACTION_DIMS, "rss_alpha_frac", "ss_rate_frac", "decouple_beta", "lr"):
            rng = getattr(self, name)
            if rng is None:
                continue
            lo, hi = rng
            if not (math.isfinite(lo) and math.isfinite(hi)):
                errors.append(f"{name}: bounds must be finite, got {rng}")
            elif lo > hi:
                errors.append(f"{name}: low {lo} > high {hi} (empty range)")
            elif name in LOG_DIMS and lo <= 0:
                what = "rates" if name == "ss_rate_frac" else "values"
                errors.append(f"{name}: {what} must be positive (log scale), got {rng}")
            elif name in FRACTION_DIMS and not (lo >= 0 and hi <= 1):
                errors.append(f"{name}: fractions of the iteration budget must lie in [0, 1], got {rng}")
        if self.rss_curves is not None:
            bad = [c for c in self.rss_curves if c not in CURVES]
            if not self.rss_curves or bad:
                errors.append(f"rss_curves: need a non-empty subset of {list(CURVES)}, got {list(self.rss_curves)}")
        dims = self.dimensions(cfg)
        if cfg.sampling.scheme == "rss" and not errors:
            s1 = self.rss_step1_frac or _frac_pair(cfg)[0]
            s2 = self.rss_step2_frac or _frac_pair(cfg)[1]
            if s1[0] >= s2[1]:
                errors.append(f"contradictory RSS range: r_sampling_step_1 must be < r_sampling_step_2, but "
                              f"every step_1 fraction in {list(s1)} is >= every step_2 fraction in {list(s2)}")
            elif round(s1[0] * budget) >= min(budget, round(s2[1] * budget)):
                errors.append(f"a budget of {budget} iterations cannot hold r_sampling_step_1 < "
                              f"r_sampling_step_2 for the ranges {list(s1)} and {list(s2)}")
        if not dims:
            errors.append(f"the search space is empty for {cfg.name} (scheme {cfg.sampling.scheme}, arch "
                          f"{cfg.model.arch}): every dimension is switched off")
        elif not errors and all(self._fixed(n) for n in dims):
            errors.append(f"the search space is empty: every dimension ({', '.join(dims)}) is fixed")
        if errors:
            raise SpaceError("; ".join(errors))

    def _fixed(self, name: str) -> bool:
        value = getattr(self, name)
        if name == "rss_curves":
            return len(value) == 1
        return value[0] == value[1]

    # -----------------------------------------------------------------------------------------
    # sampling

    def define_by_run(self, cfg: ExperimentConfig, budget: int) -> DefineByRun:
        """The Optuna define-by-run function for ``cfg`` at ``budget`` iterations (picklable)."""
        self.check(cfg, budget)
        return DefineByRun(self, tuple(self.dimensions(cfg)), budget, _frac_pair(cfg))


@dataclass(frozen=True)
class DefineByRun:
    """Suggests one point; ``step_2``'s range starts one iteration above the sampled ``step_1``."""

    space: SearchSpace
    dims: tuple[str, ...]
    budget: int
    preset_fracs: tuple[tuple[float, float], tuple[float, float]]

    def __call__(self, trial: Suggester) -> None:
        s = self.space
        gap = 1.0 / self.budget
        if "rss_step1_frac" in self.dims or "rss_step2_frac" in self.dims:
            r1 = s.rss_step1_frac or self.preset_fracs[0]
            r2 = s.rss_step2_frac or self.preset_fracs[1]
            f1 = trial.suggest_float("rss_step1_frac", r1[0], max(r1[0], min(r1[1], r2[1] - gap)))
            trial.suggest_float("rss_step2_frac", min(r2[1], max(r2[0], f1 + gap)), r2[1])
        curve = None
        if "rss_curves" in self.dims:
            curve = trial.suggest_categorical("rss_curve", list(s.rss_curves or CURVES))
        if "rss_alpha_frac" in self.dims and curve != "linear":
            trial.suggest_float("rss_alpha_frac", *s.rss_alpha_frac, log=True)  # type: ignore[misc]
        if "ss_stop_frac" in self.dims:
            trial.suggest_float("ss_stop_frac", *s.ss_stop_frac)  # type: ignore[misc]
        if "ss_rate_frac" in self.dims:
            trial.suggest_float("ss_rate_frac", *s.ss_rate_frac, log=True)  # type: ignore[misc]
        if "decouple_beta" in self.dims:
            trial.suggest_float("decouple_beta", *s.decouple_beta, log=True)  # type: ignore[misc]
        if "lr" in self.dims:
            trial.suggest_float("lr", *s.lr, log=True)  # type: ignore[misc]


def _parse_dimension(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key == "rss_curves":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SpaceError(f"{key}: expected a list of curve names, got {value!r}")
        return tuple(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (float(value), float(value))
    if (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
        return (float(value[0]), float(value[1]))
    raise SpaceError(f"{key}: expected [low, high], a number or null, got {value!r}")


def _frac_pair(cfg: ExperimentConfig) -> tuple[tuple[float, float], tuple[float, float]]:
    """The preset's RSS steps as fixed fraction ranges of its own budget."""
    n = cfg.optim.max_iterations
    f1 = min(1.0, cfg.sampling.r_sampling_step_1 / n)
    f2 = min(1.0, cfg.sampling.r_sampling_step_2 / n)
    return (f1, f1), (f2, f2)


def scale_schedule(cfg: ExperimentConfig, budget: int) -> ExperimentConfig:
    """``cfg`` with its schedules rescaled from ``optim.max_iterations`` to ``budget`` iterations."""
    s, n = cfg.sampling, cfg.optim.max_iterations
    k = budget / n
    s1 = round(s.r_sampling_step_1 * k)
    s2 = max(s1 + 1, round(s.r_sampling_step_2 * k))
    sampling = dataclasses.replace(
        s, r_sampling_step_1=s1, r_sampling_step_2=s2, r_exp_alpha=max(s.r_exp_alpha * k, 1e-3),
        sampling_stop_iter=max(1, round(s.sampling_stop_iter * k)), sampling_changing_rate=s.sampling_changing_rate / k)
    optim = dataclasses.replace(cfg.optim, max_iterations=budget)
    return dataclasses.replace(cfg, sampling=sampling, optim=optim)


def apply_params(cfg: ExperimentConfig, params: dict[str, Any], budget: int, *,
                 eval_interval: int | None = None) -> ExperimentConfig:
    """The experiment a search point stands for, at ``budget`` iterations (validated).

    Args:
        cfg: the base config (a preset with overrides).
        params: a point suggested by :class:`DefineByRun` (missing names keep the rescaled preset).
        budget: the trial's ``optim.max_iterations``.
        eval_interval: validation (and checkpoint) interval; default keeps the preset's, rescaled.
    """
    base = scale_schedule(cfg, budget)
    s, o = base.sampling, base.optim
    sampling: dict[str, Any] = {}
    if "rss_step1_frac" in params:
        s1 = min(budget - 1, max(0, round(float(params["rss_step1_frac"]) * budget)))
        s2 = min(budget, max(s1 + 1, round(float(params["rss_step2_frac"]) * budget)))
        sampling.update(r_sampling_step_1=s1, r_sampling_step_2=s2)
    if "rss_curve" in params:
        sampling["rss_curve"] = params["rss_curve"]
    if "rss_alpha_frac" in params:
        sampling["r_exp_alpha"] = max(float(params["rss_alpha_frac"]) * budget, 1e-3)
    if "ss_stop_frac" in params:
        sampling["sampling_stop_iter"] = min(budget, max(1, round(float(params["ss_stop_frac"]) * budget)))
    if "ss_rate_frac" in params:
        sampling["sampling_changing_rate"] = float(params["ss_rate_frac"]) / budget
    optim: dict[str, Any] = {}
    if "decouple_beta" in params:
        optim["decouple_beta"] = float(params["decouple_beta"])
    if "lr" in params:
        optim["lr"] = float(params["lr"])
    if eval_interval is None:
        eval_interval = max(1, round(o.eval_interval * budget / cfg.optim.max_iterations))
    optim.update(eval_interval=eval_interval, checkpoint_interval=eval_interval)
    return dataclasses.replace(base, sampling=dataclasses.replace(s, **sampling),
                               optim=dataclasses.replace(o, **optim))
