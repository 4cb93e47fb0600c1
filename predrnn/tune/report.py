"""Trial records and the tables made from them (plain data; no Ray, no MLflow).

A record is one finished trial: its searched point, the best and last validation MSE per frame,
the iteration it reached, whether ASHA stopped it early, its status and its MLflow child run.
Records are appended as JSON lines to ``trials.jsonl`` in the experiment directory as trials end,
so an interrupted search keeps them and a resumed one adds the rest.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

RECORDS = "trials.jsonl"


def append_record(experiment_dir: str | Path, record: dict[str, Any]) -> None:
    """Add one trial record (one JSON line)."""
    with open(Path(experiment_dir) / RECORDS, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def read_records(experiment_dir: str | Path) -> list[dict[str, Any]]:
    """Every trial record, the latest per trial id, in the order trials ended."""
    path = Path(experiment_dir) / RECORDS
    if not path.is_file():
        return []
    latest: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            latest.pop(rec["trial_id"], None)
            latest[rec["trial_id"]] = rec
    return list(latest.values())


def best_record(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The terminated trial with the lowest best validation MSE (``None`` when none has one)."""
    scored = [r for r in records if r.get("status") == "TERMINATED" and _finite(r.get("best_val_mse"))]
    return min(scored, key=lambda r: r["best_val_mse"]) if scored else None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan"
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def trials_markdown(records: list[dict[str, Any]], budget: int | None = None) -> str:
    """A markdown table: one row per trial, searched params, best val MSE, iterations, early stop."""
    if not records:
        return "_no trial finished_\n"
    names: list[str] = []
    for rec in records:
        for key in rec.get("params", {}):
            if key not in names:
                names.append(key)
    best = best_record(records)
    head = ["trial", *names, "best val MSE", "iterations", "stopped early", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec in records:
        mark = " **(best)**" if best is not None and rec["trial_id"] == best["trial_id"] else ""
        its = rec.get("iterations")
        its_s = f"{its}/{budget}" if budget else str(its)
        row = [rec["trial_id"] + mark, *(_fmt(rec.get("params", {}).get(n, "-")) for n in names),
               _fmt(rec.get("best_val_mse", math.nan)), its_s, "yes" if rec.get("stopped_early") else "no",
               str(rec.get("status", ""))]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def summary_markdown(result: dict[str, Any]) -> str:
    """The search summary: settings, the trials table and the best config (as JSON)."""
    best = result.get("best")
    parts = [f"# Tune search `{result.get('name', '')}`", "",
             f"- dataset: `{result.get('dataset', '')}`",
             f"- trials: {len(result.get('trials', []))} finished of {result.get('settings', {}).get('trials')}, "
             f"budget {result.get('budget')} iterations per trial, ASHA on `val_mse`",
             f"- MLflow: `{result.get('tracking_uri', '')}`, parent run `{result.get('parent_run_id', '')}`",
             f"- experiment directory: `{result.get('experiment_dir', '')}`"]
    if result.get("interrupted"):
        parts.append("- **interrupted**: resume with `predrnn tune --resume " + str(result.get("experiment_dir")) + "`")
    parts += ["", "## Trials", "", trials_markdown(result.get("trials", []), result.get("budget"))]
    if best:
        parts += ["## Best config", "",
                  f"Trial `{best['trial_id']}`: best validation MSE/frame {_fmt(best['best_val_mse'])}; "
                  f"file `{result.get('best_config_path', '')}`", "", "```json",
                  json.dumps(result.get("best_config", {}), indent=2, sort_keys=True), "```", ""]
    return "\n".join(parts)
