"""Secrets at rest and Ray's token settings (predrnn.security), and what the doors refuse."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from predrnn.security import (
    SecurityError,
    ensure_secret_file,
    is_loopback,
    ray_auth_env,
    write_private,
)

REPO = Path(__file__).resolve().parents[1]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_files_are_owner_only_from_creation(tmp_path):
    path = write_private(tmp_path / "secrets" / "token", "abc")
    assert path.read_text() == "abc" and _mode(path) == 0o600 and _mode(path.parent) == 0o700
    write_private(path, "def")  # replaced atomically, still private, no stray temporary file
    assert path.read_text() == "def" and _mode(path) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["token"]


def test_a_secret_is_generated_once_and_kept(tmp_path):
    path = ensure_secret_file(tmp_path / "ray" / "auth_token")
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0  # 256 bits, hex
    assert ensure_secret_file(path).read_text() == token
    path.chmod(0o644)
    with pytest.raises(SecurityError, match="chmod 600"):
        ensure_secret_file(path)


def test_ray_auth_env_generates_the_state_folders_token(tmp_path):
    env = ray_auth_env(tmp_path, {})
    assert env["RAY_AUTH_MODE"] == "token"
    token_file = Path(env["RAY_AUTH_TOKEN_PATH"])
    assert token_file == tmp_path / "ray" / "auth_token" and _mode(token_file) == 0o600
    assert token_file.read_text() not in "".join(env.values())  # a path, never the token itself
    assert ray_auth_env(tmp_path, {})["RAY_AUTH_TOKEN_PATH"] == str(token_file)  # the same token next time


def test_ray_auth_env_takes_the_users_token(tmp_path):
    assert ray_auth_env(tmp_path, {"RAY_AUTH_TOKEN": "t0k3n"}) == {"RAY_AUTH_MODE": "token"}
    given = write_private(tmp_path / "cluster-token", "t0k3n")
    assert ray_auth_env(tmp_path / "state", {"RAY_AUTH_TOKEN_PATH": str(given)}) == {"RAY_AUTH_MODE": "token"}
    assert not (tmp_path / "state").exists()  # nothing generated beside the user's token


@pytest.mark.parametrize("environ, message", [
    ({"RAY_AUTH_MODE": "disabled"}, "token authentication only"),
    ({"RAY_AUTH_TOKEN_PATH": "/nonexistent/token"}, "not a file holding a token"),
])
def test_ray_auth_env_refuses_weaker_settings(tmp_path, environ, message):
    with pytest.raises(SecurityError, match=message):
        ray_auth_env(tmp_path, environ)


def test_ray_auth_env_refuses_a_token_file_others_can_read(tmp_path):
    shared = tmp_path / "token"
    shared.write_text("t0k3n")
    shared.chmod(0o644)
    with pytest.raises(SecurityError, match="mode"):
        ray_auth_env(tmp_path, {"RAY_AUTH_TOKEN_PATH": str(shared)})


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.1:6390", True), ("localhost:6390", True), ("[::1]:6390", True),
    ("127.0.0.2", True), (None, True), ("0.0.0.0", False), ("10.0.0.5:6379", False), ("ray-head:6379", False),
    ("[::]:80", False),
])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_ensure_ray_refuses_ray_without_token_auth(monkeypatch):
    from predrnn.train.launch import ensure_ray

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(SecurityError, match="token authentication"):
        ensure_ray(None, num_cpus=1)


def test_cli_refuses_disabled_ray_auth_in_one_line(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PREDRNN_STATE_DIR": str(tmp_path)}
    out = subprocess.run([str(Path(sys.executable).parent / "predrnn"), "train", "--preset", "quick",
                          "--data", str(tmp_path / "none@latest")], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "RAY_AUTH_MODE=disabled" in lines[0], out.stderr


def test_env_files_are_ignored_by_git():
    for name in (".env", "infra/.env", ".state/stack/secrets/credentials.env"):
        assert subprocess.run(["git", "check-ignore", "-q", name], cwd=REPO).returncode == 0, name
