"""Operations benchmark on the local stack: start times, memory per service, a nightly run's fixed overhead,
first-forecast latency of ``predict`` and ``serve`` from the registry.

    .venv/bin/python bench/ops_bench.py [--json]

Runs a whole stack (free ports, a temporary state folder, removed afterwards):

1. ``stack up`` on the empty folder (cold), resident memory per service, ``stack down``, ``stack up`` again
   on the same folder (warm);
2. ``stack deploy``, then one ``nightly-retrain`` run through the worker with a tiny model (48 clips of
   32 x 32, 8 iterations), split into: waiting for the worker and its flow-run process, each task, and the
   training itself (Ray Train's wall time as the run reports it); the rest is the run's fixed overhead;
3. ``predict --model models:/predrnn-v2@champion`` twice (the second finds the version in the local model
   cache) and ``serve`` until its first answer, each as a new process, as a user runs them.

Run it alone (the numbers are wall-clock on a shared machine); prints a table, or one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from infra.stack import Stack, StackSettings, free_ports

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.img_height=32", "data.img_width=32", "data.input_length=4", "data.total_length=8",
        "model.patch_size=4", "model.num_hidden=[8]", "model.filter_size=3", "optim.batch_size=4",
        "optim.max_iterations=8", "optim.eval_interval=4", "optim.checkpoint_interval=4", "optim.eval_clips=8",
        "sampling.r_sampling_step_1=2", "sampling.r_sampling_step_2=12", "sampling.r_exp_alpha=3"]
SOURCE = {"num_clips": 48, "frames": 8, "height": 32, "width": 32, "seed": 0}


def _when(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _api_of(stack: Stack) -> Any:
    def call(path: str, body: Any = None, method: str = "POST") -> Any:
        req = urllib.request.Request(stack.s.prefect_api_url + path,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback
            return json.loads(resp.read() or b"null")

    return call


def nightly_breakdown(stack: Stack, timeout: float = 600) -> dict[str, Any]:
    """Run ``nightly-retrain`` once through the stack's worker; where its wall time went, in seconds."""
    api = _api_of(stack)
    dep = api("/deployments/name/nightly-retrain/nightly-retrain", method="GET")
    run = api(f"/deployments/{dep['id']}/create_flow_run",
              {"parameters": {"source_options": SOURCE, "overrides": TINY, "workers": 1, "margin": 0.01}})
    t0 = time.monotonic()
    while True:
        run = api(f"/flow_runs/{run['id']}", method="GET")
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"nightly-retrain still {run['state']['type']} after {timeout} s")
        time.sleep(1)
    if run["state"]["type"] != "COMPLETED":
        raise RuntimeError(f"nightly-retrain ended {run['state']['type']}: {run['state'].get('message')}")
    tasks = api("/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
    per_task: dict[str, float] = {}
    for t in tasks:
        name = t["name"].rsplit("-", 1)[0]
        per_task[name] = round(per_task.get(name, 0.0) + float(t["total_run_time"]), 1)
    arts = api("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})
    report = next(a["data"] for a in arts if a.get("key") == "nightly-retrain")
    train_s = float(report.split("**training**", 1)[1].split(" s,", 1)[0].rsplit(", ", 1)[1])
    created, started, ended = _when(run["created"]), _when(run["start_time"]), _when(run["end_time"])
    total = ended - created
    return {"total_s": round(total, 1), "to_running_s": round(started - created, 1),
            "flow_s": round(ended - started, 1), "training_s": train_s,
            "overhead_s": round(total - train_s, 1), "tasks_s": per_task}


def _cli(env: dict[str, str], cwd: Path, *args: str) -> float:
    t0 = time.monotonic()
    out = subprocess.run([str(Path(sys.executable).parent / "predrnn"), *args], env=env, cwd=cwd,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"predrnn {args[0]} failed: {out.stdout[-1500:]}{out.stderr[-1500:]}")
    return round(time.monotonic() - t0, 1)


def first_forecasts(stack: Stack, work: Path) -> dict[str, float]:
    """``predict`` (twice) and ``serve`` (until its first answer) of ``models:/predrnn-v2@champion``."""
    env = {**os.environ, **stack.client_env()}
    ctx = np.random.default_rng(0).random((2, 4, 32, 32, 1), dtype=np.float32)
    np.save(work / "ctx.npy", ctx)
    out: dict[str, float] = {}
    for key in ("predict_first_s", "predict_cached_s"):
        out[key] = _cli(env, work, "predict", "--model", "models:/predrnn-v2@champion", "--input",
                        str(work / "ctx.npy"), "--horizon", "10", "--output", str(work / "fc.npy"))
    port = free_ports(1)[0]
    t0 = time.monotonic()
    with open(work / "serve.log", "wb") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "predrnn"), "serve", "--model",
                                 "models:/predrnn-v2@champion", "--port", str(port)], env=env, cwd=work,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    body = json.dumps({"inputs": ctx.tolist(), "params": {"horizon": 10}}).encode()
    try:
        while True:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback
                    resp.read()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError((work / "serve.log").read_text()[-1500:]) from None
                time.sleep(0.2)
        out["serve_first_answer_s"] = round(time.monotonic() - t0, 1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="predrnn-opsbench-"))
    stack = Stack(StackSettings(state_dir=root / "stack").with_free_ports())
    quiet = (lambda _m: None) if args.json else print
    result: dict[str, Any] = {"cpus": os.cpu_count()}
    try:
        t0 = time.monotonic()
        state = stack.up(echo=quiet)
        result["cold_start_s"] = round(time.monotonic() - t0, 1)
        result["ready_s"] = {k: v["ready_s"] for k, v in state["services"].items()}
        result["rss_mb"] = {k: v["rss_mb"] for k, v in stack.status()["services"].items()}
        stack.down(echo=quiet)
        t0 = time.monotonic()
        stack.up(echo=quiet)
        result["warm_start_s"] = round(time.monotonic() - t0, 1)
        deployed = stack.deploy(REPO)
        if deployed.returncode != 0:
            raise RuntimeError(deployed.stderr[-2000:])
        result["nightly"] = nightly_breakdown(stack)
        result.update(first_forecasts(stack, root))
        t0 = time.monotonic()
        stack.down(echo=quiet)
        result["down_s"] = round(time.monotonic() - t0, 1)
    finally:
        stack.down(echo=lambda _m: None)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(stack.s.ray_temp_dir, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        n = result["nightly"]
        print(f"stack up: cold {result['cold_start_s']} s, warm {result['warm_start_s']} s; down {result['down_s']} s")
        print("resident MB: " + ", ".join(f"{k} {v:.0f}" for k, v in result["rss_mb"].items())
              + f" (total {sum(result['rss_mb'].values()):.0f})")
        print(f"nightly-retrain: {n['total_s']} s in all = {n['to_running_s']} s to start + {n['flow_s']} s running;"
              f" training {n['training_s']} s, fixed overhead {n['overhead_s']} s")
        print("  tasks (s): " + ", ".join(f"{k} {v}" for k, v in n["tasks_s"].items()))
        print(f"predict from @champion: first {result['predict_first_s']} s, cached {result['predict_cached_s']} s;"
              f" serve to first answer {result['serve_first_answer_s']} s")
    return result


if __name__ == "__main__":
    main()
