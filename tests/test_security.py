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


def test_s3_settings_say_where_credentials_come_from_never_the_keys(monkeypatch):
    """What a door reads for S3 travels in specs, task parameters and run records: the endpoint, the region
    and the credentials' source, never a key; settings that carry one are refused by name, value unshown."""
    from predrnn.data.store import check_s3_settings
    from predrnn.settings import Settings

    key, secret = "AKIA-canary-id", "canary-secret-value"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "canary-token")
    monkeypatch.setenv("PREDRNN_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    s3 = Settings.s3()
    assert s3 == {"endpoint": "http://127.0.0.1:9", "region": s3["region"], "credentials": "environment"}
    assert not any(v in repr(s3) for v in (key, secret, "canary-token"))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.setenv("AWS_PROFILE", "radar")
    assert Settings.s3()["credentials"] == "profile" and Settings.s3()["profile"] == "radar"
    with pytest.raises(ValueError, match=r"carry credentials \(secret_access_key\)") as err:
        check_s3_settings({"endpoint": "http://x", "secret_access_key": secret})
    assert secret not in str(err.value)


def test_a_run_spec_holding_an_s3_key_is_refused(tmp_path):
    """RunSpec refuses credentials in its S3 settings, so no spec, task parameter or run record can hold one."""
    import dataclasses

    from predrnn.config import load_config
    from predrnn.data import ingest
    from predrnn.train import configure, prepare

    uri = ingest("moving-digits", "", "d", str(tmp_path / "data"), num_clips=8, frames=8, height=32, width=32)
    cfg = configure(load_config("quick", None, ["data.img_height=32", "data.img_width=32", "data.input_length=4",
                                                "data.total_length=8", "optim.batch_size=2"]), workers=1)
    where = {"region": "us-east-1", "credentials": "environment"}
    spec = prepare(cfg, data=uri, state_dir=tmp_path / "state", s3=where)
    assert spec.to_dict()["s3"] == where
    with pytest.raises(ValueError, match="carry credentials"):
        dataclasses.replace(spec, s3={"access_key_id": "AKIA", "secret_access_key": "s"})
