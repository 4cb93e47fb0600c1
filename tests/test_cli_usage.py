"""The console command reports a usage mistake like every bad input: one line ``error: <message>`` naming the
problem and the command's ``--help``, exit code 2, before anything runs; a command group alone prints its help."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "predrnn.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("args", "message"), [
    (["promote", "m", "1", "--workers", "2"], "No such option: --workers"),
    (["forecast", "--model", "m", "--data", "d", "--out", "o", "--workers", "abc"], "Invalid value for '--workers'"),
    (["evaluate", "--model", "m"], "Missing option '--data'"),
    (["nosuch"], "No such command 'nosuch'"),
    (["forecast", "--model", "m", "--data", "d", "--out", "o", "--workers", "0"], "--workers must be >= 1, got 0"),
    (["promote", "m", "1", "--margin", "1.5"], "--margin is a relative improvement in [0, 1), got 1.5"),
    (["evaluate", "--model", "m", "--data", "d", "--fss-scales", "2"], "--fss-scales must be odd window sizes"),
])
def test_a_usage_mistake_is_one_line_with_exit_2(args, message):
    out = _run(*args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr
    assert out.stdout == ""


def test_a_group_alone_prints_its_help():
    out = _run("data")
    assert out.returncode == 2 and "ls" in out.stdout and "export" in out.stdout and out.stderr == ""
