"""The search's MLflow record: a parent run for the search, a nested run per trial (opened by the trial,
closed by :class:`TrialRecorder` in the driver process as trials end), the summary on the parent."""

from __future__ import annotations

import math
import sys
from typing import Any

from predrnn.config import ExperimentConfig
from predrnn.tune.plan import Search, TuneResult
from predrnn.tune.report import append_record, read_records


def open_parent(search_spec: Any, cfg: ExperimentConfig, params: dict[str, Any], experiment_dir: str) -> str:
    """The search's MLflow run, with the search settings and ranges as params."""
    from predrnn.tracking import Tracker

    tracker = Tracker(search_spec.tracking_uri, check=False)
    parent = tracker.start_run(cfg, dataset=search_spec.dataset.to_dict(), run_name=search_spec.run_name,
                               tags={"tune.role": "search", "tune.experiment_dir": experiment_dir})
    tracker.log_params(parent, params)
    return parent


def reopen_parent(search: Search) -> None:
    if search.spec.tracking_uri and search.parent_run_id:
        from predrnn.tracking import Tracker

        Tracker(search.spec.tracking_uri).reopen_run(search.parent_run_id)


def trial_tags(search: Search, trial_id: str) -> dict[str, str]:
    return {"tune.trial_id": trial_id, "mlflow.parentRunId": str(search.parent_run_id)}


def open_child_run(search: Search, cfg: ExperimentConfig, trial_id: str, params: dict[str, Any]) -> str:
    """The trial's nested MLflow run: created once, reopened when the trial resumes."""
    from predrnn.tracking import Tracker

    tracker = Tracker(search.spec.tracking_uri, check=False)
    existing = tracker.find_run(cfg.tracking.experiment, trial_tags(search, trial_id))
    if existing is not None:
        tracker.reopen_run(existing)
        return existing
    run_id = tracker.start_run(cfg, dataset=search.spec.dataset.to_dict(),
                               run_name=f"{search.spec.run_name}-{trial_id}",
                               tags={**trial_tags(search, trial_id), "tune.experiment_dir": search.experiment_dir,
                                     "tune.role": "trial"})
    tracker.log_params(run_id, {f"search.{k}": v for k, v in sorted(params.items())})
    return run_id


def _callback_class() -> type:
    from ray.tune import Callback

    class TrialRecorder(Callback):
        """Main-process side: closes each child run and appends the trial's record as trials end."""

        def __init__(self, search: Search) -> None:
            self.search = search

        def _record(self, trial: Any, status: str) -> None:
            search = self.search
            last = trial.last_result or {}
            analysis = (trial.metric_analysis or {}).get("val_mse", {})
            best = float(analysis.get("min", math.nan))
            its = int(last.get("iteration", 0) or 0)
            early = status == "TERMINATED" and its < search.budget
            rec = {"trial_id": trial.trial_id, "params": dict(trial.config), "best_val_mse": best,
                   "last_val_mse": float(last.get("val_mse", math.nan)), "iterations": its,
                   "stopped_early": early, "status": status, "child_run_id": None}
            if search.spec.tracking_uri:
                rec["child_run_id"] = close_child(search, trial.trial_id, rec)
            append_record(search.experiment_dir, rec)
            done = len(read_records(search.experiment_dir))
            val = "nan" if not math.isfinite(best) else f"{best:.3f}"
            print(f"tune: trial {done}/{search.settings.trials} {trial.trial_id} {status.lower()}: best val "
                  f"MSE/frame {val} at {its}/{search.budget} iterations"
                  f"{' (stopped early by ASHA)' if early else ''}", flush=True)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._record(trial, "TERMINATED")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._record(trial, "ERROR")

    TrialRecorder.__module__ = __name__  # where a restored Tuner finds it
    TrialRecorder.__qualname__ = "TrialRecorder"
    return TrialRecorder


def recorder_class() -> type:
    """The Tune callback class (built on first use; it subclasses Ray's ``Callback``)."""
    return globals().get("TrialRecorder") or __getattr__("TrialRecorder")


def __getattr__(name: str) -> Any:
    # The callback subclasses Ray's, so it is built on first use (also when a restored Tuner unpickles it).
    if name == "TrialRecorder":
        cls = _callback_class()
        globals()["TrialRecorder"] = cls
        return cls
    raise AttributeError(name)


def close_child(search: Search, trial_id: str, rec: dict[str, Any]) -> str | None:
    from predrnn.tracking import Tracker

    try:
        tracker = Tracker(search.spec.tracking_uri, check=False)
        run_id = tracker.find_run(search.spec.cfg.tracking.experiment, trial_tags(search, trial_id))
        if run_id is None:
            return None
        metrics = {k: rec[k] for k in ("best_val_mse", "last_val_mse") if math.isfinite(rec[k])}
        metrics["iterations_reached"] = float(rec["iterations"])
        tracker.log_metrics(run_id, metrics, step=rec["iterations"])
        tracker.set_tags(run_id, {"tune.stopped_early": str(rec["stopped_early"]).lower(),
                                  "tune.status": rec["status"]})
        tracker.end_run(run_id, "FINISHED" if rec["status"] == "TERMINATED" else "FAILED")
        return run_id
    except Exception as err:  # a tracking outage must not kill the search; the record still lands
        print(f"warning: closing the MLflow run of trial {trial_id} failed: {err}", file=sys.stderr, flush=True)
        return None


def close_parent(search: Search, status: str, error: str | None = None) -> None:
    if search.spec.tracking_uri and search.parent_run_id:
        from predrnn.tracking import Tracker

        Tracker(search.spec.tracking_uri, check=False).end_run(search.parent_run_id, status, error=error)


def log_parent(search: Search, result: TuneResult, files: dict[str, str]) -> None:
    from predrnn.tracking import Tracker

    tracker = Tracker(search.spec.tracking_uri, check=False)
    run_id = str(search.parent_run_id)
    records = result.trials
    metrics = {"trials_finished": float(len(records)),
               "trials_stopped_early": float(sum(bool(r.get("stopped_early")) for r in records))}
    if result.best is not None:
        metrics["best_val_mse"] = float(result.best["best_val_mse"])
        tracker.set_tags(run_id, {"tune.best_trial_id": result.best["trial_id"]})
    if result.best is not None and not result.interrupted:  # params are immutable: log the final best once
        existing = tracker.run_params(run_id)
        params = {f"best.{k}": v for k, v in sorted(result.best["params"].items())}
        params["best.trial_id"] = result.best["trial_id"]
        try:
            tracker.log_params(run_id, {k: v for k, v in params.items() if k not in existing})
        except Exception as err:  # a resumed search may find a different best: params are immutable
            print(f"warning: best params not logged on the parent run ({err}); see the best_config artifact",
                  file=sys.stderr, flush=True)
    tracker.log_metrics(run_id, metrics, step=len(records))
    for path in files.values():
        tracker.log_artifact(run_id, path)
    tracker.end_run(run_id, "KILLED" if result.interrupted else "FINISHED")
