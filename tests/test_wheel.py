"""The wheel installs the library only: ``pip install .`` puts ``predrnn`` and nothing else at the top
level of site-packages (``bench`` and ``flows`` are names of other distributions on the package index), and
the command line works from it: ``predrnn --help``, ``predrnn bench`` (its benchmark is in the package),
and ``predrnn stack`` says in one line that it needs a checkout of the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh virtualenv with the wheel built from this checkout installed into it (no dependencies: those
    come from this environment's site-packages on ``PYTHONPATH``, where no ``.pth`` file is read, so neither
    the development install nor the checkout is on the path)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # the whole checkout, as `pip install .` sees it (building writes into the tree)
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", ".state", "site", "build", "*.egg-info",
                                                             "__pycache__", ".*_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp / "dist"), str(src)], check=True, capture_output=True, text=True)
    wheel = next((tmp / "dist").glob("predrnn-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    uv = Path(sys.executable).parent / "uv"
    subprocess.run([str(uv), "pip", "install", "--python", str(venv / "bin" / "python"), "--no-deps", "-q",
                    str(wheel)], check=True, capture_output=True, text=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]  # the dependencies only
    return venv, env


def _site_packages(venv: Path) -> Path:
    return next(venv.glob("lib/python3*/site-packages"))


def test_the_wheel_installs_predrnn_and_nothing_else_at_the_top_level(installed):
    venv, _ = installed
    top = sorted(p.name for p in _site_packages(venv).iterdir()
                 if not p.name.endswith((".dist-info", ".pth")) and p.name not in ("__pycache__", "_virtualenv.py"))
    assert top == ["predrnn"]


def test_the_command_line_works_from_the_wheel(installed, tmp_path):
    venv, env = installed
    cli = str(venv / "bin" / "predrnn")
    out = subprocess.run([cli, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "train" in out.stdout and "forecast" in out.stdout
    code = "import predrnn.perf, predrnn; print(predrnn.__file__)"
    where = subprocess.run([str(venv / "bin" / "python"), "-c", code],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(_site_packages(venv))  # the wheel's copy, not the checkout's
    for module in ("flows", "infra", "bench"):
        gone = subprocess.run([str(venv / "bin" / "python"), "-c", f"import {module}"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
        assert gone.returncode != 0, f"{module} is importable from the wheel's environment"


def test_stack_says_it_needs_the_repository_outside_a_checkout(installed, tmp_path):
    venv, env = installed
    out = subprocess.run([str(venv / "bin" / "predrnn"), "stack", "status"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a checkout of the predrnn repository" in lines[0], out.stderr
