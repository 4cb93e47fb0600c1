"""Dependency direction, enforced by import-linter's contracts in pyproject.toml: the library never
imports flows/, the core (model, data, metrics, steps, predict, checkpoint) imports neither the
orchestration and tracking tools nor the library's edges, and no import circle joins two modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept():
    res = _lint_imports(ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "Contracts: 4 kept, 0 broken." in res.stdout


def test_a_core_module_reaching_for_an_edge_breaks_a_contract(tmp_path):
    """The contracts bite: a copy of the package whose metrics module imports MLflow and the tracking
    edge is refused, naming both imports."""
    import shutil

    for package in ("predrnn", "flows", "infra", "bench"):  # every root package the contracts name
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    metrics = tmp_path / "predrnn" / "metrics.py"
    leak = "\n\ndef _leak():\n    import mlflow\n\n    from predrnn import tracking\n"
    metrics.write_text(metrics.read_text() + leak)
    res = _lint_imports(tmp_path)
    assert res.returncode != 0
    assert "predrnn.metrics -> mlflow" in res.stdout and "predrnn.metrics -> predrnn.tracking" in res.stdout
