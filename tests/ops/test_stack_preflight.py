"""`stack up` checks its ports and state folder before starting anything, and fails in seconds naming
the port, the service and the setting that moves it."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from ops_helpers import make_stack

from infra.stack import StackError, StackSettings


def test_a_port_held_by_another_program_is_named_before_anything_starts():
    stack = make_stack(["s3", "mlflow", "prefect", "ray"])
    port = stack.s.mlflow_port
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        t0 = time.monotonic()
        with pytest.raises(StackError) as err:
            stack.up(echo=lambda _m: None)
        assert time.monotonic() - t0 < 5
    assert str(err.value) == (f"port {port} on 127.0.0.1 (mlflow, setting mlflow_port) is in use by another program: "
                              "stop it, or move the stack's port with PREDRNN_STACK_MLFLOW_PORT=PORT (or every port "
                              "with PREDRNN_STACK_PORT_BASE=OFFSET)")
    assert not stack.running() and not (stack.root / "logs").exists()


def test_two_settings_on_one_port_and_the_defaults():
    s = StackSettings().with_free_ports()
    clash = s.model_copy(update={"weed_metrics_port": s.ray_port})
    with pytest.raises(StackError, match=r"set for both weed_metrics_port and ray_port; move one with "
                                         r"PREDRNN_STACK_RAY_PORT=PORT"):
        clash.preflight()
    defaults = StackSettings().ports()
    assert len({p for _, p in defaults.values()}) == len(defaults)  # no two services share a default port
    # SeaweedFS's own default listeners (Iceberg 8181, Lance 9101: the default metrics port) are switched off,
    # so the stack binds only the ports its settings name
    from infra.stack import Stack

    cmd = Stack(StackSettings()).s3_command(Path("/tmp/unused"))
    assert "-s3.port.iceberg=0" in cmd and "-s3.port.lance=0" in cmd and "-metricsPort=9101" in cmd
    assert {"prefect_port", "mlflow_port", "s3_port", "ray_port", "ray_client_port", "ray_agent_port"} <= set(defaults)
    assert "ray_dashboard_port" not in defaults  # no dashboard unless PREDRNN_STACK_RAY_DASHBOARD=true
    assert "ray_dashboard_port" in StackSettings(ray_dashboard=True).ports()
    # Ray's workers take ports from their own range, which no stack port may fall into (Ray's default range,
    # 10002-19999, holds SeaweedFS's gRPC ports)
    low, high = StackSettings().ray_worker_port_min, StackSettings().ray_worker_port_max
    assert not any(low <= port <= high for _, port in defaults.values())
    inside = s.model_copy(update={"s3_grpc_port": low + 1})
    with pytest.raises(StackError, match=rf"port {low + 1} \(s3_grpc_port\) lies in Ray's worker port range"):
        inside.preflight()
    ray_cmd_ports = ("--ray-client-server-port", "--dashboard-agent-listen-port", "--min-worker-port")
    assert all(any(a.startswith(flag) for a in Stack(StackSettings()).ray_command()) for flag in ray_cmd_ports)
    assert set(StackSettings(services=["mlflow"]).ports()) == {"mlflow_port"}


def test_one_port_base_moves_every_port_not_set_on_its_own(monkeypatch):
    defaults = StackSettings()
    monkeypatch.setenv("PREDRNN_STACK_PORT_BASE", "1000")
    monkeypatch.setenv("PREDRNN_STACK_MLFLOW_PORT", "7777")  # set alone: kept as given
    moved = StackSettings()
    names = [n for n in type(defaults).model_fields if n.endswith("_port") or n.startswith("ray_worker_port_")]
    assert len(names) >= 20
    for name in names:
        want = 7777 if name == "mlflow_port" else getattr(defaults, name) + 1000
        assert getattr(moved, name) == want, name
    assert moved.prefect_api_url == "http://127.0.0.1:5210/api" and moved.ray_worker_port_min == 21400
    assert moved.mlflow_url == "http://127.0.0.1:7777"
    source = {var: src for var, _, src in moved.described(dotenv=None)}  # `stack settings` says why each moved
    assert source["PREDRNN_STACK_PREFECT_PORT"] == "default + PORT_BASE 1000"
    assert source["PREDRNN_STACK_MLFLOW_PORT"] == source["PREDRNN_STACK_PORT_BASE"] == "environment"
    assert source["PREDRNN_STACK_RAY_CPUS"] == "default"
    monkeypatch.setenv("PREDRNN_STACK_PORT_BASE", "30000")
    with pytest.raises(ValueError, match=r"PREDRNN_STACK_PORT_BASE=30000 moves \w+_port to \d+, beyond 65535"):
        StackSettings()


def test_settings_are_listed_with_their_source(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from predrnn.cli import app

    (tmp_path / ".env").write_text("PREDRNN_STACK_PREFECT_PORT=4300\n# a comment\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREDRNN_STACK_MLFLOW_PORT", "5999")
    res = CliRunner().invoke(app, ["stack", "settings"])
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line.split()[1:] for line in res.output.strip().splitlines()}
    assert rows["PREDRNN_STACK_MLFLOW_PORT"] == ["5999", "environment"]
    assert rows["PREDRNN_STACK_PREFECT_PORT"] == ["4300", ".env"]
    assert rows["PREDRNN_STACK_RAY_PORT"] == ["6390", "default"]
    assert rows["PREDRNN_STACK_S3_SECRET_KEY"][0] == "(generated"  # never a default secret in the repository
    assert rows["PREDRNN_STACK_S3_SECRET_KEY"][-1] == "default"

    monkeypatch.setenv("PREDRNN_STACK_S3_SECRET_KEY", "s3cr3t-value")
    res = CliRunner().invoke(app, ["stack", "settings"])
    rows = {line.split()[0]: line.split()[1:] for line in res.output.strip().splitlines()}
    assert rows["PREDRNN_STACK_S3_SECRET_KEY"] == ["********", "environment"]
    assert "s3cr3t-value" not in res.output


def test_a_dotenv_holding_a_secret_must_be_private(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from predrnn.cli import app

    dotenv = tmp_path / ".env"
    dotenv.write_text("PREDRNN_STACK_S3_SECRET_KEY=s3cr3t-value\n")
    dotenv.chmod(0o644)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["stack", "settings"])
    assert res.exit_code == 2 and "chmod 600" in res.output and "s3cr3t-value" not in res.output, res.output
    dotenv.chmod(0o600)
    res = CliRunner().invoke(app, ["stack", "settings"])
    assert res.exit_code == 0 and "s3cr3t-value" not in res.output, res.output


def test_a_bad_setting_is_one_line_naming_the_variable(monkeypatch):
    from typer.testing import CliRunner

    from predrnn.cli import app

    monkeypatch.setenv("PREDRNN_STACK_ZOMBIE_AFTER_S", "59")
    res = CliRunner().invoke(app, ["stack", "up"])
    assert res.exit_code == 2
    assert res.output.strip() == "error: PREDRNN_STACK_ZOMBIE_AFTER_S: Input should be greater than or equal to 60"
    monkeypatch.setenv("PREDRNN_STACK_ZOMBIE_AFTER_S", "70")
    monkeypatch.setenv("PREDRNN_STACK_HEARTBEAT_SECONDS", "40")
    res = CliRunner().invoke(app, ["stack", "settings"])
    assert res.exit_code == 2 and res.output.strip() == (
        "error: the stack settings: Value error, zombie_after_s (70) must be at least twice heartbeat_seconds (40), "
        "or a live run would be crashed between two heartbeats")
