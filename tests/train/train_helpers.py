"""Helpers shared by the training tests: tiny configs and free ports."""

from __future__ import annotations

import json
import os
import socket

from predrnn.config import ExperimentConfig, load_config

TINY = [
    "data.img_height=32", "data.img_width=32", "data.input_length=4", "data.total_length=8",
    "model.patch_size=4", "model.num_hidden=[8]", "model.filter_size=3",
    "optim.batch_size=4", "optim.max_iterations=8", "optim.eval_interval=4", "optim.checkpoint_interval=4",
    "optim.eval_clips=8", "optim.keep_best=2",
    "sampling.r_sampling_step_1=2", "sampling.r_sampling_step_2=12", "sampling.r_exp_alpha=3",
]


def tiny_config(*extra: str) -> ExperimentConfig:
    """The ``quick`` preset shrunk to 32x32 frames, 8 frames, one 8-channel layer."""
    return load_config("quick", overrides=[*TINY, *extra])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def last_json(output: str) -> dict:
    """The last JSON line (worker log lines of the shared Ray instance may arrive after it)."""
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON line in: {output[-2000:]}")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (read from /proc): this test process's own Ray processes only."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def train_workers() -> list[int]:
    """The Ray Train worker processes of this test process's Ray (never another Ray's on the machine)."""
    pids = []
    for pid in descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"RayTrainWorker" in fh.read():
                    pids.append(pid)
        except OSError:
            continue
    return pids
