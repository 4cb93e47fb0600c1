"""The whole operations path on one local stack shared by this module (started once, on its default ports
when they are free): up -> deploy -> the Prefect UI lists nightly-retrain with its schedule ->
nightly-retrain started from the UI's Custom run form, and a second one through the Prefect API while it
runs (rejected by the concurrency limit) -> a version registered and promoted, the MLflow UI shows the
champion alias on it -> forecast from @champion by the CLI and over HTTP (equal) -> a nightly run whose
worker and process are killed mid-training ends Crashed and frees its slot, and the next scheduled run
(source unchanged, warm start, refused by the gate) completes -> the evaluate and promote flows, the
promote/champion/rollback commands, MLflow killed mid-promotion -> down, nothing left running. Browser
screenshots are saved under ``.state/test-artifacts/browser``."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser_helpers import (
    browser_page,
    mlflow_model_alias,
    mlflow_model_version,
    prefect_custom_run,
    prefect_deployment_listed,
    prefect_deployment_parameters,
    prefect_run_page,
    shot,
)
from listeners import Watch, exposed, group_family
from ops_helpers import TINY, Receiver

from infra.stack import Stack, StackError, StackSettings, _group_alive, free_ports

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.mlflow, pytest.mark.s3, pytest.mark.prefect]

REPO = Path(__file__).resolve().parents[2]
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
PREFECT_AUTH: dict[str, str] = {}  # the shared stack's Prefect API credentials, as a header


def _api(base: str, path: str, body: Any = None, method: str = "POST") -> Any:
    """One Prefect API call (with the stack's API auth); 503 and 429 (SQLite busy, rate limits: "retry
    later") are retried as Prefect's own client does."""
    for attempt in range(8):
        req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", **PREFECT_AUTH}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:  # noqa: S310 - loopback
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            if err.code not in (429, 503) or attempt == 7:
                raise
            time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


SOURCE = {"num_clips": 48, "frames": 8, "height": 32, "width": 32, "seed": 0}
MODEL = "predrnn-v2"


class Shared:
    """The module's stack and what the tests learn on it, in order."""

    def __init__(self, stack: Stack, defaults_taken: str | None) -> None:
        self.stack, self.defaults_taken = stack, defaults_taken
        self.timings: dict[str, float] = {}
        self.groups: list[int] = []
        self.dataset: str | None = None
        self.receiver: Receiver | None = None

    @property
    def api(self) -> str:
        return self.stack.s.prefect_api_url

    def browser(self) -> Any:
        """A browser page logged in to the stack's UIs (MLflow as its admin, Prefect with its API auth)."""
        secrets = self.stack.secrets
        return browser_page(mlflow_login=("admin", secrets.values()["MLFLOW_ADMIN_PASSWORD"]),
                            prefect_auth=secrets.prefect_auth_string())

    def pgids(self) -> set[int]:
        return {int(v["pgid"]) for v in self.stack.read_state().get("services", {}).values()}


@pytest.fixture(scope="module")
def shared() -> Iterator[Shared]:
    """One stack for the module: on the default ports on a clean state folder (else free ports, saying why),
    up and deployed once, down at the end whatever happened."""
    root = Path(tempfile.mkdtemp(prefix="predrnn-stack-"))
    receiver = Receiver()  # the failure webhook: a failed or crashed nightly posts here
    settings = StackSettings(state_dir=root, failure_webhook=receiver.url("/hooks/e2e"))
    taken = None
    try:
        settings.preflight()
    except StackError as err:
        taken, settings = str(err), settings.with_free_ports()
    sh = Shared(Stack(settings), taken)
    sh.receiver = receiver
    import base64

    PREFECT_AUTH["Authorization"] = "Basic " + base64.b64encode(sh.stack.secrets.prefect_auth_string().encode()
                                                                  ).decode()
    try:
        t0 = time.monotonic()
        state = sh.stack.up(echo=print)
        sh.timings["up"] = time.monotonic() - t0
        sh.groups = [int(v["pgid"]) for v in state["services"].values()]
        t0 = time.monotonic()
        out = sh.stack.deploy(REPO)
        sh.timings["deploy"] = time.monotonic() - t0
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        yield sh
    finally:
        sh.stack.down(echo=print)
        receiver.close()
        print("timings (s):", {k: round(v, 1) for k, v in sh.timings.items()})


def _wait_final(api: str, run_id: str, timeout: float) -> dict[str, Any]:
    t0 = time.monotonic()
    while True:
        run = _api(api, f"/flow_runs/{run_id}", method="GET")
        if run["state"]["type"] in FINAL:
            return dict(run)
        assert time.monotonic() - t0 < timeout, f"run {run_id} still {run['state']} after {timeout} s"
        time.sleep(2)


def _artifacts(api: str, run_id: str) -> dict[str, Any]:
    return {a["key"]: a for a in _api(api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
            if a.get("key")}


def test_stack_up_on_its_defaults(shared):
    if shared.defaults_taken:
        pytest.skip(f"a default port is taken on this machine: {shared.defaults_taken}")
    s, defaults = shared.stack.s, StackSettings()
    assert all(getattr(s, name) == port for name, (_, port) in defaults.ports().items())
    status = shared.stack.status()["services"]
    assert set(status) == {"s3", "mlflow", "prefect", "ray", "worker"} and all(v["healthy"] for v in status.values())
    print(f"up on the defaults in {shared.timings['up']:.1f} s; RSS MB per service:",
          {k: v["rss_mb"] for k, v in status.items()})


def test_the_stack_refuses_callers_without_credentials(shared, tmp_path):
    """Every listening socket of the stack's processes is on loopback; each service refuses a caller without
    its credentials (Ray without the token, MLflow 401, Prefect 401), the pipeline's MLflow account cannot move
    @champion (403) while the promoter's can; no secret is printed or written outside the 0600 secret files."""
    stack = shared.stack
    s, secrets = stack.s, stack.secrets
    assert not exposed(group_family(shared.pgids())), "a stack service listens beyond loopback"

    probe = (f"import ray; ray.init(address={s.ray_address!r}, logging_level='ERROR'); "
             "print('joined', ray.cluster_resources()['CPU'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(tmp_path), RAY_AUTH_MODE="disabled", RAY_py_gcs_connect_timeout_s="5",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "InvalidAuthToken" in out.stderr, out.stderr[-2000:]

    def status(url: str, *, auth: tuple[str, str] | None = None, body: Any = None, method: str = "GET") -> int:
        import base64

        headers = {"Content-Type": "application/json"} if body is not None else {}
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
        req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(), headers=headers,
                                     method=method)
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:  # noqa: S310 - loopback
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    v = secrets.values()
    pipeline, promoter = ("pipeline", v["MLFLOW_PIPELINE_PASSWORD"]), ("promoter", v["MLFLOW_PROMOTER_PASSWORD"])
    mlflow = s.mlflow_url + "/api/2.0/mlflow"
    assert status(f"{mlflow}/experiments/search?max_results=1") == 401
    assert status(f"{mlflow}/experiments/search?max_results=1", auth=("pipeline", "wrong")) == 401
    assert status(f"{mlflow}/registered-models/create", auth=pipeline, body={"name": "security-check"},
                  method="POST") == 200
    move = {"name": "security-check", "alias": "champion", "version": "1"}
    from mlflow.store.model_registry.rest_store import RestStore
    from mlflow.utils.rest_utils import MlflowHostCreds

    store = RestStore(lambda: MlflowHostCreds(s.mlflow_url, username=pipeline[0], password=pipeline[1]))
    store.create_model_version("security-check", source="s3://placeholder/model")
    assert status(f"{mlflow}/registered-models/alias", auth=pipeline, body=move, method="POST") == 403
    assert status(f"{mlflow}/registered-models/alias", auth=pipeline, body={**move, "alias": "staging"},
                  method="POST") == 200  # other aliases stay the pipeline's
    assert status(f"{mlflow}/registered-models/alias", auth=promoter, body=move, method="POST") == 200
    assert status(f"{mlflow}/registered-models/alias?name=security-check&alias=champion", auth=pipeline,
                  method="DELETE") == 403
    assert status(f"{mlflow}/model-versions/delete", auth=pipeline, body={"name": "security-check", "version": "1"},
                  method="DELETE") == 403  # nor by deleting the champion's version
    assert status(f"{mlflow}/registered-models/delete", auth=("admin", v["MLFLOW_ADMIN_PASSWORD"]),
                  body={"name": "security-check"}, method="DELETE") == 200

    assert status(f"{s.prefect_api_url}/flow_runs/filter", body={}, method="POST") == 401
    assert status(f"{s.prefect_api_url}/flow_runs/filter", body={}, method="POST",
                  auth=tuple(secrets.prefect_auth_string().split(":", 1))) == 200  # type: ignore[arg-type]
    assert status(f"{s.prefect_api_url}/health") == 200  # probes stay open

    for path in [secrets.path, secrets.folder / "client.env", secrets.folder / "mlflow_auth.ini", s.ray_token_path]:
        assert path.stat().st_mode & 0o077 == 0, path
    predrnn = str(Path(sys.executable).parent / "predrnn")
    env_out = subprocess.run([predrnn, "stack", "env"], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PREDRNN_STACK_STATE_DIR": str(s.root)})
    assert env_out.returncode == 0, env_out.stderr
    written = [env_out.stdout, stack.state_file.read_text(), *(p.read_text(errors="replace")
                                                                for p in stack.logs.glob("*.log"))]
    for secret in [*v.values(), s.ray_token_path.read_text()]:
        assert not any(secret in text for text in written), "a secret was printed or written outside its file"
    sourced = subprocess.run(["bash", "-c", f'eval "$({predrnn} stack env)" && test -n "$MLFLOW_TRACKING_PASSWORD" '
                              '&& test -n "$AWS_SECRET_ACCESS_KEY" && test -n "$PREFECT_API_AUTH_STRING"'],
                             env={**os.environ, "PREDRNN_STACK_STATE_DIR": str(s.root)}, timeout=120)
    assert sourced.returncode == 0  # `eval "$(predrnn stack env)"` gives a shell the secrets without printing them


def test_stack_nightly_promote_predict_serve(shared, tmp_path, monkeypatch):
    stack, timings = shared.stack, shared.timings
    s = stack.s
    serve: subprocess.Popen[bytes] | None = None
    for k, v in stack.client_env().items():  # this process talks to the stack as a client does
        monkeypatch.setenv(k, v)
    sockets = Watch(pids=lambda: group_family(shared.pgids()), every_s=2.0)  # sampled while the nightly trains
    try:
        api = s.prefect_api_url
        names = {d["name"] for d in _api(api, "/deployments/filter", {})}
        assert {"ingest", "train", "tune", "evaluate", "promote", "nightly-retrain"} <= names
        nightly = _api(api, "/deployments/name/nightly-retrain/nightly-retrain", method="GET")
        assert nightly["schedules"][0]["schedule"]["cron"] == "0 2 * * *"
        assert nightly["global_concurrency_limit"]["limit"] == 1
        small = _api(api, "/deployments/name/nightly-retrain/nightly-retrain-small", method="GET")
        assert small["parameters"]["source_options"] == {**SOURCE, "seed": 0} and small["parameters"]["workers"] == 1
        assert small["schedules"][0]["active"] is False and small["global_concurrency_limit"]["limit"] == 1

        params = {"source_options": SOURCE, "overrides": TINY, "workers": 1, "margin": 0.01}
        ui = api.removesuffix("/api")
        t0 = time.monotonic()
        with shared.browser() as page:
            prefect_deployment_listed(page, ui, "nightly-retrain", "At 02:00 AM every day")
            run_name = prefect_custom_run(page, ui, "nightly-retrain", params)
            prefect_deployment_parameters(page, ui, small["id"], ["source_options", "optim.max_iterations=8",
                                                                  "nightly-small"], "prefect-deployment-parameters")
        timings["ui"] = time.monotonic() - t0
        sockets.__enter__()
        ui_run = _api(api, "/flow_runs/filter", {"flow_runs": {"name": {"any_": [run_name]}}})
        assert len(ui_run) == 1 and ui_run[0]["parameters"]["overrides"] == TINY, ui_run
        t0 = time.monotonic()
        while _api(api, f"/flow_runs/{ui_run[0]['id']}", method="GET")["state"]["type"] not in {"RUNNING", *FINAL}:
            assert time.monotonic() - t0 < 180, "the worker did not start the run triggered from the UI"
            time.sleep(1)
        runs = [ui_run[0], _api(api, f"/deployments/{nightly['id']}/create_flow_run", {"parameters": params})]
        states: dict[str, dict[str, Any]] = {}
        while time.monotonic() - t0 < 400:
            states = {r["id"]: _api(api, f"/flow_runs/{r['id']}", method="GET") for r in runs}
            if all(fr["state"]["type"] in FINAL for fr in states.values()):
                break
            time.sleep(2)
        timings["nightly"] = time.monotonic() - t0
        kinds = sorted(fr["state"]["type"] for fr in states.values())
        assert kinds == ["CANCELLED", "COMPLETED"], {k: v["state"] for k, v in states.items()}
        done = next(fr for fr in states.values() if fr["state"]["type"] == "COMPLETED")
        other = next(fr for fr in states.values() if fr["state"]["type"] == "CANCELLED")
        history = _api(api, f"/flow_run_states/?flow_run_id={other['id']}", method="GET")
        print("second run:", [(h["type"], h["name"], h.get("message")) for h in history])
        assert "RUNNING" not in {h["type"] for h in history}  # rejected by the deployment's limit

        arts = _api(api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [done["id"]]}}})
        report = next(a["data"] for a in arts if a["key"] == "nightly-retrain")
        assert "ingested `s3://datasets/nightly@" in report
        shared.dataset = report.split("ingested `", 1)[1].split("`", 1)[0]
        assert "### scorecard" in report and "persistence MSE/frame" in report
        progress = next(a for a in arts if a["key"] == "nightly-progress")  # training progress in the UI
        assert progress["type"] == "progress" and float(progress["data"]) == 100.0, progress
        assert "promoted" in progress["description"], progress  # the bar ends on the decision
        logs = [rec["message"] for rec in _api(api, "/logs/filter", {
            "logs": {"flow_run_id": {"any_": [done["id"]]}}, "sort": "TIMESTAMP_ASC", "limit": 200})]
        phases = ["1 of 7: checking the data", "2 of 7: starting Ray", "3 of 7: training (iteration",
                  "4 of 7: evaluating", "5 of 7: registering", "6 of 7: comparing with the champion",
                  "7 of 7: promotion gate"]
        at = [next((i for i, line in enumerate(logs) if line.startswith(f"phase {p}")), -1) for p in phases]
        assert -1 not in at and at == sorted(at), logs  # each phase in the log as it starts, in order
        run_md = next(a["data"] for a in arts if a["key"] == "nightly-mlflow-run")
        assert "MLflow run `" in run_md

        uri = s.mlflow_url
        from mlflow import MlflowClient

        from predrnn.tracking.registry import COMPARISON_TAG, DECISION_TAG

        client = MlflowClient(uri, uri)
        # no champion yet is no free pass: v1 is gated on the persistence baseline of the same evaluation
        gate = json.loads(client.get_model_version(MODEL, "1").tags[COMPARISON_TAG])
        assert gate["must_beat"]["baseline"] == "persistence" and gate["must_beat"]["value"] > 0, gate
        beaten = gate["candidate"] < gate["must_beat"]["value"]
        assert gate["must_beat"]["beaten"] is beaten
        if beaten:
            assert "**decision**: promoted v1. no champion yet" in report, report
            assert "beats the persistence baseline's" in report, report
        else:  # 8 iterations rarely beat persistence: refused, then promoted by hand with --force, recorded
            assert "v1 not promoted. no champion yet; test_mse" in report, report
            assert "does not beat the persistence baseline's" in report, report
            from typer.testing import CliRunner

            from predrnn.cli import app

            res = CliRunner().invoke(app, ["promote", MODEL, "1", "--force", "--tracking-uri", uri])
            assert res.exit_code == 0 and "forced; the gate would have refused: no champion yet" in res.output
        mv = client.get_model_version_by_alias("predrnn-v2", "champion")
        assert mv.version == "1" and mv.tags[DECISION_TAG] == "promoted"
        run = client.get_run(mv.run_id)
        # a registry people read: a handful of tags, no path of this machine, a markdown description
        assert len(mv.tags) <= 10 and mv.tags["dataset"] == shared.dataset.rsplit("/", 1)[1], mv.tags
        local = [str(Path.home()), str(stack.s.state_dir.absolute()), "/tmp/"]
        assert not [v for v in (*mv.tags.values(), mv.description) if any(p in v for p in local)], mv.tags
        assert "| mse |" in mv.description and "promoted" in mv.description
        # the dataset input is the resolved version (not @latest), with its content hash
        (ds_input,) = run.inputs.dataset_inputs
        assert ds_input.dataset.name == mv.tags["dataset"] and "@latest" not in ds_input.dataset.name
        assert json.loads(ds_input.dataset.profile)["content_hash"].startswith(ds_input.dataset.digest)
        assert run.data.params["warm_start"] == "none"  # the first nightly starts from scratch
        # the input schema takes a 15-frame uint8 context
        import mlflow
        from mlflow.models.utils import _enforce_schema

        mlflow.set_tracking_uri(uri)
        try:
            schema = mlflow.models.get_model_info(f"models:/{MODEL}/1").signature.inputs
        finally:
            mlflow.set_tracking_uri(None)
        ctx15 = np.zeros((1, 15, 32, 32, 1), np.uint8)
        assert _enforce_schema(ctx15, schema) is ctx15
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        keys = [o["Key"] for o in stack.s3_client().list_objects_v2(Bucket="mlflow").get("Contents", [])]
        assert any(k.endswith("MLmodel") for k in keys)  # the model's files are on S3
        assert done["id"] == ui_run[0]["id"]  # the UI's run ran; the API's was rejected while it did

        # links both ways: the artifact leads to the MLflow run in its experiment, run and version back here
        link = run_md.split("](", 1)[1].split(")", 1)[0]
        assert run.info.experiment_id != "0"  # the runs live in experiment predrnn, not Default
        assert link == f"{uri}/#/experiments/{run.info.experiment_id}/runs/{mv.run_id}"
        back = f"{ui}/runs/flow-run/{done['id']}"
        assert run.data.tags["prefect.flow_run"] == back and mv.tags["prefect.flow_run"] == back
        with shared.browser() as page:
            prefect_run_page(page, ui, done["id"], "Completed", log_text="dataset s3://datasets/nightly@",
                             artifact_key="nightly-progress")
            mlflow_model_alias(page, uri, "predrnn-v2", "1", "champion")
            mlflow_model_version(page, uri, "predrnn-v2", "1", "mlflow-model-version")
            page.goto(link)
            page.get_by_text(run.info.run_name, exact=True).first.wait_for()
            shot(page, "mlflow-run-from-prefect")
            page.goto(back)
            page.get_by_text(done["name"], exact=True).first.wait_for()
            page.get_by_text("Completed", exact=True).first.wait_for()

        # forecast from @champion with the CLI (artifacts come through the server from S3)
        for k, v in stack.client_env().items():
            monkeypatch.setenv(k, v)
        from typer.testing import CliRunner

        from predrnn.cli import app

        ctx = np.random.default_rng(0).random((2, 4, 32, 32, 1), dtype=np.float32)
        np.save(tmp_path / "ctx.npy", ctx)
        res = CliRunner().invoke(app, ["predict", "--model", "models:/predrnn-v2@champion", "--input",
                                       str(tmp_path / "ctx.npy"), "--horizon", "4", "--output",
                                       str(tmp_path / "pred.npy"), "--tracking-uri", uri])
        assert res.exit_code == 0, res.output
        cli_pred = np.load(tmp_path / "pred.npy")

        # the same model served over HTTP
        t0 = time.monotonic()
        port = free_ports(1)[0]
        env = {**os.environ, **stack.client_env()}
        serve = subprocess.Popen([str(Path(sys.executable).parent / "predrnn"), "serve", "--model",
                                  "models:/predrnn-v2@champion", "--port", str(port)], env=env,
                                 start_new_session=True, stdout=open(tmp_path / "serve.log", "wb"),  # noqa: SIM115
                                 stderr=subprocess.STDOUT)
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):  # noqa: S310
                    break
            except OSError:
                assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
                assert time.monotonic() - t0 < 120, "scoring server did not start"
                time.sleep(0.5)
        about = _api(f"http://127.0.0.1:{port}", "/version", method="GET")
        assert (about["model"], about["model_version"], about["requested"]) == ("predrnn-v2", "1",
                                                                              "models:/predrnn-v2@champion"), about
        body = {"inputs": ctx.tolist(), "params": {"horizon": 4}}
        pred = np.asarray(_api(f"http://127.0.0.1:{port}", "/invocations", body)["predictions"], np.float32)
        timings["serve"] = time.monotonic() - t0
        assert pred.shape == cli_pred.shape == (2, 4, 32, 32, 1)
        np.testing.assert_allclose(pred, cli_pred, atol=1e-5)
        sockets.__exit__(None, None, None)
        assert {name for name, _, _ in sockets.seen} >= {"gcs_server", "raylet", "weed"}, sockets.seen
        assert not sockets.outside, f"listening beyond loopback: {sorted(sockets.outside)}"
    finally:
        sockets.__exit__(None, None, None)
        if serve is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(serve.pid, sig)
                    serve.wait(10)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue


def test_a_crashed_nightly_run_frees_its_slot_and_the_next_scheduled_run_completes(shared, monkeypatch):
    """The worker and the run's process die mid-training (a lost machine): the run ends Crashed, its
    concurrency slot is free, and the next scheduled run (same source: its version reused; warm start from
    the champion; a margin no model meets: refused) completes."""
    stack, api = shared.stack, shared.api
    assert shared.dataset, "needs the promoted model of the nightly test above"
    for k, v in stack.client_env().items():
        monkeypatch.setenv(k, v)
    nightly = _api(api, "/deployments/name/nightly-retrain/nightly-retrain", method="GET")
    params = {"source_options": SOURCE, "overrides": TINY, "workers": 1, "init": "champion", "margin": 0.99}
    cut = _api(api, f"/deployments/{nightly['id']}/create_flow_run", {"parameters": params})
    t0 = time.monotonic()
    while "nightly-mlflow-run" not in _artifacts(api, cut["id"]):  # published once training has started
        assert time.monotonic() - t0 < 240, _api(api, f"/flow_runs/{cut['id']}", method="GET")["state"]
        time.sleep(1)
    run = _api(api, f"/flow_runs/{cut['id']}", method="GET")
    assert run["state"]["type"] == "RUNNING"
    os.killpg(stack.read_state()["services"]["worker"]["pgid"], signal.SIGKILL)
    os.kill(int(run["infrastructure_pid"]), signal.SIGKILL)
    time.sleep(1)
    assert _api(api, f"/flow_runs/{cut['id']}", method="GET")["state"]["type"] == "RUNNING"  # nobody told Prefect

    stack.restart("worker", kill=True, echo=print)  # the worker comes back: the cut-off run is settled
    state = _api(api, f"/flow_runs/{cut['id']}", method="GET")["state"]
    assert state["type"] == "CRASHED" and "worker was restarted" in state["message"], state
    assert shared.receiver is not None  # the failure webhook was told, with the run, its state and its page
    note = shared.receiver.wait_for(cut["name"])
    assert note["subject"] == f"nightly-retrain: run {cut['name']} Crashed", note
    assert "worker was restarted" in note["body"] and f"/runs/flow-run/{cut['id']}" in note["body"], note
    with shared.browser() as page:
        prefect_run_page(page, api.removesuffix("/api"), cut["id"], "Crashed", log_text="dataset s3://datasets/nightly@",
                         name="prefect-flow-run-crashed")
    assert nightly["global_concurrency_limit"]["name"]
    limits = _api(api, "/v2/concurrency_limits/filter", {})
    assert [lim["active_slots"] for lim in limits if lim["id"] == nightly["global_concurrency_limit"]["id"]] == [0]

    when = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).isoformat()
    t0 = time.monotonic()
    nxt = _api(api, f"/deployments/{nightly['id']}/create_flow_run", {
        "parameters": params, "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": when}}})
    done = _wait_final(api, nxt["id"], 400)
    shared.timings["nightly-warm"] = time.monotonic() - t0
    assert done["state"]["type"] == "COMPLETED", done["state"]
    report = _artifacts(api, nxt["id"])["nightly-retrain"]["data"]
    assert "source unchanged (fingerprint" in report and f"reused `{shared.dataset}`" in report, report
    assert "warm-started from models:/predrnn-v2/1" in report and "kept champion v1" in report, report

    from mlflow import MlflowClient

    uri = stack.s.mlflow_url
    client = MlflowClient(uri, uri)
    versions = {int(mv.version): mv.tags for mv in client.search_model_versions(f"name='{MODEL}'")}
    assert client.get_model_version_by_alias(MODEL, "champion").version == "1"
    # what the cut-off run had opened, the next run ended: its MLflow run KILLED, its task runs no longer Running
    cut_runs = [r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
                if r.data.tags.get("prefect.flow_run", "").endswith(f"/runs/flow-run/{cut['id']}")]
    assert [r.info.status for r in cut_runs] == ["KILLED"] and cut_runs[0].info.end_time, cut_runs
    assert "Crashed" in cut_runs[0].data.tags["prefect.flow_run.ended"], cut_runs[0].data.tags
    tasks = _api(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [cut["id"]]}}})
    assert "train-new-model" in {t["name"].rsplit("-", 1)[0] for t in tasks}, tasks
    assert not [t["name"] for t in tasks if t["state"]["type"] in ("PENDING", "RUNNING")], tasks
    refused = max(versions)
    assert versions[refused]["promotion.decision"] == "refused", versions[refused]
    assert len(versions[refused]) <= 10, versions[refused]
    warm = client.get_run(client.get_model_version(MODEL, str(refused)).run_id).data.params
    assert warm["warm_start"] == "weights" and warm["warm_start.from"] == "models:/predrnn-v2/1", warm
    shared.refused = refused


def test_evaluate_and_promote_flows_and_the_registry_commands(shared, monkeypatch):
    """Against the stack's Prefect and MLflow: the evaluate flow, the promote flow (both models evaluated on
    one test version; refused), then `promote --force`, `champion`, `rollback`; MLflow killed mid-promotion
    leaves the champion in place and the candidate `promotion.decision=failed` with the error."""
    stack = shared.stack
    candidate = getattr(shared, "refused", None)
    assert candidate, "needs the refused version of the test above"
    for k, v in stack.client_env().items():
        monkeypatch.setenv(k, v)
    uri = stack.s.mlflow_url
    from mlflow import MlflowClient
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings
    from typer.testing import CliRunner

    from flows.evaluate import evaluate_flow
    from flows.promote import promote_flow
    from predrnn.cli import app
    from predrnn.tracking.registry import RegistryError

    client = MlflowClient(uri, uri)
    prefect = {PREFECT_API_URL: stack.s.prefect_api_url, PREFECT_API_AUTH_STRING: stack.secrets.prefect_auth_string()}
    with temporary_settings(updates=prefect):  # flows run in this process
        # fp32, as registration scored it (auto is bf16 on a CPU with native bf16)
        ev = evaluate_flow(model=f"models:/{MODEL}@champion", dataset=shared.dataset, precision="fp32")
        assert ev["clips"] > 0 and ev["mse"] > 0 and ev["dataset"] == shared.dataset and ev["precision"] == "fp32"
        v1_run = client.get_model_version(MODEL, "1").run_id
        assert ev["mse"] == pytest.approx(client.get_run(v1_run).data.metrics["test_mse"], rel=1e-6)

        out = promote_flow(version=candidate, dataset=shared.dataset, margin=0.99)
        assert out["promoted"] is False and out["champion"] == 1 and "is not below" in out["reason"]

        cli = CliRunner()
        res = cli.invoke(app, ["promote", MODEL, str(candidate), "--force", "--tracking-uri", uri])
        assert res.exit_code == 0, res.output
        assert cli.invoke(app, ["champion", MODEL, "--tracking-uri", uri]).output.strip() == str(candidate)
        res = cli.invoke(app, ["rollback", MODEL, "--tracking-uri", uri])
        assert res.exit_code == 0 and json.loads(res.output)["champion"] == 1, res.output
        assert cli.invoke(app, ["champion", MODEL, "--tracking-uri", uri]).output.strip() == "1"
        assert client.get_model_version(MODEL, str(candidate)).tags["promotion.decision"] == "rolled-back"

        # MLflow dies between the recorded decision and the alias move, and comes back seconds later
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        from mlflow.store.model_registry.rest_store import RestStore

        original = RestStore.set_registered_model_alias  # the promoter's alias move goes through this store
        pgid = stack.read_state()["services"]["mlflow"]["pgid"]
        back = threading.Event()

        def dies_first(self, name, alias, version):
            if version == str(candidate) and not back.is_set():
                os.killpg(pgid, signal.SIGKILL)
                threading.Thread(target=lambda: (time.sleep(2), stack.restart("mlflow", echo=print), back.set()),
                                 daemon=True).start()
            return original(self, name, alias, version)

        monkeypatch.setattr(RestStore, "set_registered_model_alias", dies_first)
        with pytest.raises(RegistryError, match=f"moving 'champion' of '{MODEL}' to version {candidate} failed"):
            promote_flow(version=candidate, force=True)
        monkeypatch.setattr(RestStore, "set_registered_model_alias", original)
        assert back.wait(60)
        tags = client.get_model_version(MODEL, str(candidate)).tags
        assert tags["promotion.decision"] == "failed", tags
        assert f"moving 'champion' of '{MODEL}' to version {candidate} failed" in tags["promotion.error"]
        assert client.get_model_version_by_alias(MODEL, "champion").version == "1"


def test_forecast_flow_writes_the_champions_forecasts_to_s3_on_the_stacks_ray(shared, monkeypatch):
    """The forecast flow against the stack (Prefect, MLflow, SeaweedFS, its Ray head): the champion's
    forecasts of the nightly test split become a forecast dataset version on S3 that records the model
    version, equal clip by clip to the library's forecast; the same job again reuses it."""
    assert shared.dataset, "needs the nightly run above"
    stack = shared.stack
    for k, v in stack.client_env().items():
        monkeypatch.setenv(k, v)
    import numpy as np
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from flows.forecast import forecast_flow
    from predrnn.data import open_version
    from predrnn.forecaster import load_forecaster
    from predrnn.precision import resolve_precision
    from predrnn.predict import forecast_array
    from predrnn.settings import s3_settings

    prefect = {PREFECT_API_URL: stack.s.prefect_api_url, PREFECT_API_AUTH_STRING: stack.secrets.prefect_auth_string()}
    with temporary_settings(updates=prefect):
        out = forecast_flow(model=f"models:/{MODEL}@champion", dataset=shared.dataset, workers=1, batch_size=8)
        again = forecast_flow(model=f"models:/{MODEL}@champion", dataset=shared.dataset, workers=1, batch_size=8)
    name = shared.dataset.rsplit("/", 1)[1].split("@")[0]
    assert out["uri"].startswith(f"s3://datasets/{name}-forecast@") and out["clips"] > 0, out
    assert again["reused"] and again["uri"] == out["uri"]
    s3 = s3_settings(stack.client_env())  # what a door resolves: the library reads no environment
    fc, src = open_version(out["uri"], s3), open_version(shared.dataset, s3)
    f = fc.attrs["forecast"]
    assert f["model_version"] == f"models:/{MODEL}/1" and f["source"] == src.uri and f["split"] == "test"
    net, cfg = load_forecaster(f"models:/{MODEL}/1", tracking_uri=stack.s.mlflow_url)
    test = src.split_indices("test")
    assert f["precision"] == resolve_precision("auto", "cpu", "forecast")  # the flow's default, resolved
    want = forecast_array(net, cfg, src.read(test)[:, :f["context"]], f["horizon"], precision=f["precision"])
    atol = 1e-5 if f["precision"] == "fp32" else 1e-2  # bf16 may round batches of other sizes differently
    np.testing.assert_allclose(fc.read(np.arange(test.size)), want, rtol=0, atol=atol)


def _radar_champion(stack: Stack, scans: Path, work: Path, uri: str) -> str:
    """An (untrained) 16x16 field model of the scans' grid, registered as ``radar-nowcast`` v1 and promoted to
    champion with ``promote --force``: what a radar team's training would leave in the registry."""
    from dataclasses import replace

    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from predrnn.checkpoint import save_model_dir
    from predrnn.cli import app
    from predrnn.config import preset
    from predrnn.data import ingest, open_version, validate_dataset
    from predrnn.models import build_model
    from predrnn.tracking.model import log_forecaster
    from predrnn.values import from_dataset_attrs

    data = ingest("netcdf", str(scans), "radar", str(work / "data"), window=7, val_fraction=0.0, test_fraction=0.0)
    q = preset("quick")
    cfg = replace(q, values=from_dataset_attrs(open_version(data).attrs),
                  data=replace(q.data, dataset=data, img_height=16, img_width=16, input_length=4, total_length=7),
                  model=replace(q.model, num_hidden=(8,), filter_size=3, patch_size=4))
    info = validate_dataset(cfg, data, need_val=False)
    model_dir = save_model_dir(work / "model", build_model(cfg), cfg, extra={"iteration": 0,
                                                                             "dataset": info.to_dict()})
    client = MlflowClient(uri, uri)
    experiment = client.create_experiment("radar-nowcast")
    run = client.create_run(experiment)
    model_id, location = log_forecaster(client, experiment, run.info.run_id, model_dir, cfg,
                                 np.zeros((2, 4, 16, 16, 1), np.float32))
    client.set_terminated(run.info.run_id)
    client.create_registered_model("radar-nowcast")
    mv = client.create_model_version("radar-nowcast", source=location, run_id=run.info.run_id,
                                     model_id=model_id)
    first = CliRunner().invoke(app, ["promote", "radar-nowcast", mv.version, "--tracking-uri", uri])
    assert "no champion yet, and no baseline's test_mse to beat" in first.output, first.output  # gated too
    res = CliRunner().invoke(app, ["promote", "radar-nowcast", mv.version, "--force", "--tracking-uri", uri])
    assert res.exit_code == 0 and "forced; the gate would have refused" in res.output, res.output
    return "models:/radar-nowcast@champion"


def test_the_nowcast_deployment_writes_one_nowcast_per_new_scan_and_fails_red_on_a_missing_one(shared, tmp_path,
                                                                                               monkeypatch):
    """Scans dropped one by one into an S3 prefix; each run of the ``nowcast`` deployment (scheduled through
    the API, as its interval schedule schedules them) writes exactly one new ``<reference time>.nc`` to S3;
    a run with no new scan writes none; a run after a missing scan fails with its time named and writes
    nothing; the run's artifact holds the picture (screenshot) and the latency."""
    from predrnn.data.sources.generators import write_scan_archive

    stack, api = shared.stack, shared.api
    for k, v in stack.client_env().items():
        monkeypatch.setenv(k, v)
    dep = _api(api, "/deployments/name/nowcast/nowcast", method="GET")
    assert dep["schedules"][0]["schedule"]["interval"] == 300 and dep["schedules"][0]["active"] is False
    assert dep["global_concurrency_limit"]["limit"] == 1
    step = dt.timedelta(minutes=5)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    last = now.replace(second=0, microsecond=0) - dt.timedelta(minutes=now.minute % 5)
    start = last - 7 * step  # scans 0..7 end at or before now
    files = write_scan_archive(tmp_path / "scans", steps=8, start=start.isoformat(timespec="minutes"), height=16,
                               width=16, episode=8)
    model = _radar_champion(stack, tmp_path / "scans", tmp_path, stack.s.mlflow_url)
    s3 = stack.s3_client()

    def drop(k: int) -> None:
        s3.put_object(Bucket="radar", Key=f"e2e/{files[k].name}", Body=files[k].read_bytes())

    def nowcasts() -> list[str]:
        return sorted(o["Key"] for o in s3.list_objects_v2(Bucket="nowcasts", Prefix="e2e/").get("Contents", []))

    def scheduled_run() -> dict[str, Any]:
        when = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).isoformat()
        params = {"archive": "s3://radar/e2e", "out": "s3://nowcasts/e2e", "model": model, "max_age": 12,
                  "retention_hours": 0.05, "precision": "fp32"}
        run = _api(api, f"/deployments/{dep['id']}/create_flow_run", {
            "parameters": params, "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": when}}})
        done = _wait_final(api, run["id"], 240)
        latency = [ln for ln in _artifacts(api, run["id"]).get("nowcast", {}).get("data", "").splitlines()
                   if ln.startswith("| latency")]
        print("nowcast run:", done["state"]["type"], round(done.get("total_run_time") or 0, 1), "s", latency)
        return done

    def name(k: int) -> str:
        return f"e2e/{(start + k * step):%Y%m%dT%H%M%S}Z.nc"

    for k in range(4):
        drop(k)
    t0 = time.monotonic()
    first = scheduled_run()
    shared.timings["nowcast-run"] = time.monotonic() - t0
    assert first["state"]["type"] == "COMPLETED", first["state"]
    assert nowcasts() == [name(3)]
    arts = _artifacts(api, first["id"])
    report = arts["nowcast"]["data"]
    assert f"| reference time | {start + 3 * step:%Y-%m-%dT%H:%M:%S} |" in report and "| latency |" in report
    assert arts["nowcast-picture"]["data"].startswith("data:image/png;base64,")

    again = scheduled_run()  # no new scan
    assert again["state"]["type"] == "COMPLETED", again["state"]
    assert "Nothing was written" in _artifacts(api, again["id"])["nowcast"]["data"]
    assert nowcasts() == [name(3)]

    drop(4)
    nxt = scheduled_run()
    assert nxt["state"]["type"] == "COMPLETED", nxt["state"]
    assert nowcasts() == [name(4)]  # one new nowcast; the one 5 min older is past the 3 min retention
    import xarray as xr

    (tmp_path / "got.nc").write_bytes(s3.get_object(Bucket="nowcasts", Key=name(4))["Body"].read())
    with xr.open_dataset(tmp_path / "got.nc") as ds:
        assert ds["reference_time"].values[0] == np.datetime64(start + 4 * step, "ns")
        assert (ds.attrs["predrnn_model"], ds.attrs["predrnn_model_version"], ds.attrs["predrnn_model_alias"]) == (
            "radar-nowcast", "1", "champion")

    drop(6)  # scan 5 never arrives
    red = scheduled_run()
    assert red["state"]["type"] == "FAILED", red["state"]
    assert f"{start + 5 * step:%Y-%m-%dT%H:%M:%S} missing" in red["state"]["message"], red["state"]
    assert nowcasts() == [name(4)]

    ui = api.removesuffix("/api")
    with shared.browser() as page:
        page.goto(f"{ui}/artifacts/artifact/{arts['nowcast']['id']}")
        page.get_by_text(f"Nowcast {start + 3 * step:%Y-%m-%dT%H:%M:%S}").first.wait_for()
        page.wait_for_function("() => [...document.images].some(i => i.complete && i.naturalWidth > 100)")
        shot(page, "prefect-nowcast-artifact")
        prefect_run_page(page, ui, red["id"], "Failed", log_text="missing", name="prefect-nowcast-failed")


def test_no_secret_is_written_outside_the_secret_files(shared):
    """After every flow above ran: no credential of the stack, in clear, in any file the services, the
    worker, the flow runs or Ray wrote (databases, logs, run folders, artifacts on S3, Ray's session)."""
    stack, s = shared.stack, shared.stack.s
    secrets = {k: v.encode() for k, v in stack.secrets.values().items()}
    scanned = 0
    for folder in (s.root, s.ray_temp_dir):
        for path in folder.rglob("*"):
            if not path.is_file() or path.is_relative_to(s.secrets_dir):
                continue
            try:
                data = path.read_bytes()
            except OSError:  # gone since the listing (a Ray worker's log rotating)
                continue
            scanned += 1
            leaked = [name for name, secret in secrets.items() if secret in data]
            assert not leaked, f"{path} holds the stack's secret(s) {leaked}"
    assert scanned > 50, scanned


def test_down_leaves_nothing_running(shared):
    stack, s = shared.stack, shared.stack.s
    groups = [int(v["pgid"]) for v in stack.read_state()["services"].values()]
    t0 = time.monotonic()
    stack.down(echo=print)
    shared.timings["down"] = time.monotonic() - t0
    assert not any(_group_alive(g) for g in {*groups, *shared.groups})
    assert not any(_listening(p) for p in (s.prefect_port, s.mlflow_port, s.s3_port, s.ray_port,
                                           s.ray_dashboard_port))
    assert not stack.running()
