"""Dependency direction: the library never imports flows/, and its core imports no orchestration tools."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "predrnn"
CORE = ["config.py", "patching.py", "sampling.py", "losses.py", "metrics.py", "steps.py", "checkpoint.py",
        "predict.py", "viz.py", "bench.py", "models", "data"]
EDGE_TOOLS = {"prefect", "ray", "mlflow"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_library_never_imports_flows():
    offenders = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py") if "flows" in _imports(p)]
    assert offenders == []


def test_core_imports_no_orchestration_tools():
    files = [f for name in CORE for f in ((ROOT / name).rglob("*.py") if (ROOT / name).is_dir() else [ROOT / name])]
    offenders = {str(f.relative_to(ROOT)): sorted(_imports(f) & EDGE_TOOLS) for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}
