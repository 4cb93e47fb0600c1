"""Dependency direction, enforced by import-linter's contracts in pyproject.toml: the library never
imports flows/, the core (model, data, metrics, steps, predict, checkpoint) imports neither the
orchestration and tracking tools nor the library's edges, no flow imports the command line, and no
import circle joins two modules. And who reads the environment: the settings and the doors only."""

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
    assert "Contracts: 6 kept, 0 broken." in res.stdout


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


# The modules that read the process environment: the settings and the command line (the doors). Ray's own
# variables, which Ray reads from the environment, are read and written through predrnn.settings too.
ENV_READERS = {"predrnn/settings.py", "predrnn/cli/ops.py"}


def _env_readers(root: Path) -> set[str]:
    import ast

    found = set()
    for path in sorted((root / "predrnn").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb")
                    and isinstance(node.value, ast.Name) and node.value.id == "os"):
                found.add(str(path.relative_to(root)))
    return found


def test_only_the_settings_and_the_doors_read_the_environment(tmp_path):
    """Below the doors every value is passed in: a library module that starts reading ``os.environ`` is
    caught (the check itself is shown to bite on a copy of a core module that reads it)."""
    assert _env_readers(ROOT) == ENV_READERS
    copy = tmp_path / "predrnn" / "metrics.py"
    copy.parent.mkdir()
    copy.write_text((ROOT / "predrnn" / "metrics.py").read_text() + "\n\nimport os\nDEBUG = os.environ.get('X')\n")
    assert _env_readers(tmp_path) == {"predrnn/metrics.py"}


_BARE = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"pydantic", "pydantic_core", "pydantic_settings", "mlflow", "ray", "prefect", "zarr"}:
            raise ImportError("not on a bare GPU machine: " + name)
        return None
sys.meta_path.insert(0, Block())
import torch
from predrnn.perf import bench_config
from predrnn.models import build_model, rollout_forecast
cfg = bench_config(batch_size=2, num_hidden=(8, 8))
net = build_model(cfg)
out = rollout_forecast(net, torch.zeros(2, 10, 64, 64, 1), 3)
print(tuple(out.shape))
"""


def test_the_model_core_and_the_gpu_bench_config_need_only_torch_numpy_einops():
    """The GPU machine has torch, numpy and einops only: building the bench config and a forecast must
    not import pydantic, MLflow, Ray, Prefect or Zarr."""
    res = subprocess.run([sys.executable, "-c", _BARE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("(2, 3, 64, 64, 1)"), res.stdout
