"""Shared pieces of the operations tests (a module of its own: test files never import conftest)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from infra.stack import Stack, StackSettings

TINY = [
    "data.img_height=32", "data.img_width=32", "data.input_length=4", "data.total_length=8",
    "model.patch_size=4", "model.num_hidden=[8]", "model.filter_size=3",
    "optim.batch_size=4", "optim.max_iterations=8", "optim.eval_interval=4", "optim.checkpoint_interval=4",
    "optim.eval_clips=8", "optim.keep_best=2",
    "sampling.r_sampling_step_1=2", "sampling.r_sampling_step_2=12", "sampling.r_exp_alpha=3",
]


def make_stack(services: list[str]) -> Stack:
    """A stack with free ports under a fresh temporary folder."""
    root = Path(tempfile.mkdtemp(prefix="predrnn-stack-"))
    return Stack(StackSettings(state_dir=root, services=services).with_free_ports())
