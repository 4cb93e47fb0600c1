"""A real two-node Ray cluster on this machine (head 127.0.0.2, second node 127.0.0.3): one rank per node."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import free_port, tiny_config

from predrnn.train import configure, prepare, train
from predrnn.train.state import META_FILE

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _ray_cli() -> str:
    return str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def two_nodes(short_tmp: str):
    """``ray start`` a head on 127.0.0.2 and a node on 127.0.0.3, each in its own process group."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    temp = os.path.join(short_tmp, f"n{free_port()}")
    os.makedirs(temp)
    port = free_port()
    # a cluster asked for by address: its nodes join each other (on loopback addresses here), under the
    # suite's token (RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH, from conftest)
    assert os.environ["RAY_AUTH_MODE"] == "token"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "AUTOSCALER_METRIC_PORT": str(free_port()), "DASHBOARD_METRIC_PORT": str(free_port())}
    common = ["--num-cpus=1", "--object-store-memory=200000000", f"--temp-dir={temp}",
              "--disable-usage-stats"]
    groups: list[int] = []
    try:
        head = ["--head", "--node-ip-address=127.0.0.2", f"--port={port}", '--resources={"head_node": 1}',
                "--include-dashboard=false"]
        node = [f"--address=127.0.0.2:{port}", "--node-ip-address=127.0.0.3",
                '--resources={"worker_node": 1}']
        for args in (head, node):
            proc = subprocess.Popen([_ray_cli(), "start", *args, *common], env=env, start_new_session=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            groups.append(proc.pid)  # start_new_session: pid == pgid, inherited by the daemons
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, out
        ray.init(address=f"127.0.0.2:{port}", _node_ip_address="127.0.0.2", logging_level="WARNING")
        deadline = time.time() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.time() < deadline:
            time.sleep(0.5)
        yield f"127.0.0.2:{port}"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for pgid in reversed(groups):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    break
                time.sleep(2)
        shutil.rmtree(temp, ignore_errors=True)


def test_one_worker_per_node(two_nodes, tiny_dataset, tmp_path):
    cfg = configure(tiny_config(), workers=2)
    result = train(prepare(cfg, data=tiny_dataset, storage_path=str(tmp_path / "runs")),
                           placement_strategy="STRICT_SPREAD", log_every=2)
    meta = json.loads((Path(result.latest_checkpoint) / META_FILE).read_text())
    assert sorted(meta["nodes"]) == ["127.0.0.2", "127.0.0.3"]
    assert meta["iteration"] == 8 and meta["world_size"] == 2
