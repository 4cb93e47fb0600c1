"""``predrnn serve`` beyond loopback: a forecaster's scoring server that refuses requests without the token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from train_helpers import free_port, tiny_config

from predrnn.checkpoint import save_model_dir
from predrnn.models import build_model

pytestmark = [pytest.mark.slow, pytest.mark.mlflow]


def _post(url: str, body: dict, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - loopback
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture(scope="module")
def pyfunc_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny forecaster saved as the registry stores it (MLflow pyfunc with the model directory)."""
    import mlflow
    import torch

    from predrnn.tracking.model import forecast_model_class, signature

    torch.manual_seed(5)
    cfg = tiny_config()
    root = tmp_path_factory.mktemp("serve")
    model_dir = save_model_dir(root / "tiny", build_model(cfg), cfg)
    out = root / "pyfunc"
    mlflow.pyfunc.save_model(str(out), python_model=forecast_model_class()(), artifacts={"model_dir": str(model_dir)},
                             code_paths=[str(Path(__file__).resolve().parents[2] / "predrnn")],
                             signature=signature(cfg))
    return out


def test_serve_beyond_loopback_requires_the_bearer_token(pyfunc_model, tmp_path):
    port = free_port()
    state = tmp_path / "state"
    log = tmp_path / "serve.log"
    env = {**os.environ, "PREDRNN_STATE_DIR": str(state)}
    env.pop("PREDRNN_SERVE_TOKEN", None)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "predrnn"), "serve", "--model", str(pyfunc_model),
                             "--host", "0.0.0.0", "--port", str(port), "--precision", "bf16"], env=env,  # noqa: S104
                            start_new_session=True,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    try:
        t0 = time.monotonic()
        while True:  # the health probe stays open
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):  # noqa: S310
                    break
            except OSError:
                assert proc.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() - t0 < 120, "scoring server did not start"
                time.sleep(0.5)
        token_file = state / "serve" / "token"
        token = token_file.read_text().strip()
        assert token_file.stat().st_mode & 0o077 == 0 and len(token) == 64
        ctx = np.random.default_rng(0).random((2, 4, 32, 32, 1), dtype=np.float32)
        body = {"inputs": ctx.tolist(), "params": {"horizon": 4}}
        url = f"http://127.0.0.1:{port}/invocations"
        assert _post(url, body)[0] == 401
        assert _post(url, body, token="not-the-token")[0] == 401
        status, out = _post(url, body, token=token)
        assert status == 200 and np.asarray(out["predictions"]).shape == (2, 4, 32, 32, 1)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/version", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            about = json.loads(resp.read())
        import mlflow

        from predrnn import __version__

        assert about == {"model": "pyfunc", "requested": str(pyfunc_model), "precision": "bf16",
                         "predrnn": __version__, "mlflow": mlflow.__version__}  # the model's, not only MLflow's
        text = log.read_text()
        assert str(token_file) in text and token not in text  # where the token is, never the token
        # the server forecasts in the precision it was asked for, and says so
        from predrnn.checkpoint import load_model_dir
        from predrnn.predict import forecast_array

        net, cfg = load_model_dir(pyfunc_model.parent / "tiny")
        got = np.asarray(out["predictions"], dtype=np.float32)
        np.testing.assert_allclose(got, forecast_array(net, cfg, ctx, 4, precision="bf16"), rtol=0, atol=1e-5)
        assert np.abs(got - forecast_array(net, cfg, ctx, 4, precision="fp32")).max() > 0
        assert "precision bf16 (asked" in text
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def test_serve_on_loopback_needs_no_token_unless_asked(tmp_path, monkeypatch):
    from predrnn.cli.ops import _serve_token

    assert _serve_token("127.0.0.1", False, None, tmp_path) == (None, "")
    token, where = _serve_token("127.0.0.1", True, None, tmp_path)
    assert token and where == str(tmp_path / "serve" / "token")
    assert _serve_token("10.1.2.3", False, None, tmp_path)[0] == token  # the same generated token
    monkeypatch.setenv("PREDRNN_SERVE_TOKEN", "from-the-environment")
    assert _serve_token("0.0.0.0", False, None, tmp_path) == ("from-the-environment",  # noqa: S104
                                                               "$PREDRNN_SERVE_TOKEN")


def test_serve_refuses_a_model_directory_in_one_line_before_listening(pyfunc_model, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from predrnn.cli import app

    monkeypatch.setenv("PREDRNN_STATE_DIR", str(tmp_path / "state"))
    res = CliRunner().invoke(app, ["serve", "--model", str(pyfunc_model.parent / "tiny"), "--port", str(free_port())])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: --model ") and "is a model directory" in res.output
    assert len(res.output.strip().splitlines()) == 1 and "listening" not in res.output
