"""Training checkpoints: everything an exact resume needs, in one directory.

A checkpoint directory ``iter_NNNNNNN`` holds:

* ``model/``: a model directory (``config.json`` + ``model.pt``, see :mod:`predrnn.checkpoint`), so
  any checkpoint can be loaded by ``predrnn predict`` or registered as is;
* ``train_state.pt``: optimiser state, the iteration, the RNG states of every rank, the latest
  validation metrics, the dataset version;
* ``meta.json``: the same small facts in readable form.

The batch order and the sampling masks are pure functions of the iteration (see
:mod:`predrnn.train.data`), so iteration + weights + optimiser already give an exact resume; the
RNG states are restored as well so that any other randomness continues where it stopped.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from predrnn.checkpoint import CheckpointError, load_model_dir, load_state_checked, save_model_dir
from predrnn.config import ExperimentConfig

STATE_FILE = "train_state.pt"
META_FILE = "meta.json"
MODEL_DIR = "model"
_NAME = re.compile(r"^iter_(\d+)(?:\.(\d+))?$")


def checkpoint_name(it: int, session: int = 0) -> str:
    """``iter_0000100``; a resumed session adds ``.N`` so it never overwrites a directory of an earlier
    session (after a fall-back to an older checkpoint the same iterations are trained again)."""
    return f"iter_{it:07d}" + (f".{session}" if session else "")


def order_of(name: str) -> tuple[int, int] | None:
    """``(iteration, session)`` of a checkpoint directory name, or None for other names."""
    m = _NAME.match(Path(name).name)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def iteration_of(name: str) -> int | None:
    """The iteration encoded in a checkpoint directory name, or None for other names."""
    order = order_of(name)
    return order[0] if order else None


def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch, numpy, python; CUDA when present)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),  # noqa: NPY002
                             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainState:
    """A loaded checkpoint."""

    iteration: int
    model: nn.Module
    cfg: ExperimentConfig
    optimizer: dict[str, Any]
    rng: list[dict[str, Any]]
    dataset: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    path: str = ""
    session: int = 0


def save_checkpoint(path: str | Path, *, model: nn.Module, optimizer: torch.optim.Optimizer, iteration: int,
                    cfg: ExperimentConfig, dataset: dict[str, Any], rng: list[dict[str, Any]],
                    metrics: dict[str, float], nodes: list[str] | None = None, session: int = 0) -> Path:
    """Write a checkpoint directory (the model sub-directory is written atomically).

    Args:
        rng: the RNG states of every rank, indexed by rank.
        metrics: the validation metrics of these weights (empty when not evaluated here).
        nodes: the node address of every rank (recorded in ``meta.json``).
        session: 0 for the first training session, +1 for each resume.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_model_dir(path / MODEL_DIR, model, cfg, extra={"iteration": iteration, "dataset": dataset})
    blob = {"iteration": iteration, "optimizer": optimizer.state_dict(), "rng": rng, "dataset": dataset,
            "metrics": metrics, "config": cfg.to_json(), "session": session}
    tmp = path / (STATE_FILE + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path / STATE_FILE)
    meta = {"iteration": iteration, "session": session, "dataset": dataset, "metrics": metrics,
            "world_size": len(rng), "nodes": nodes or []}
    (path / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    return path


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> TrainState:
    """Read a checkpoint directory written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: naming the file that is missing or unreadable.
    """
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise CheckpointError(f"checkpoint file not found: {state_file}")
    if not (path / META_FILE).is_file():  # written last: without it the copy was cut short
        raise CheckpointError(f"incomplete checkpoint: {path / META_FILE} not found")
    try:
        # Optimiser state and numpy RNG states need full unpickling; only our own files are read here.
        blob = torch.load(state_file, map_location=map_location, weights_only=False)
    except Exception as err:
        raise CheckpointError(f"cannot read checkpoint {state_file}: {type(err).__name__}: {err}") from err
    if not isinstance(blob, dict) or "iteration" not in blob or "optimizer" not in blob:
        raise CheckpointError(f"checkpoint {state_file} lacks the iteration or optimiser state")
    model, cfg = load_model_dir(path / MODEL_DIR, map_location=map_location)
    return TrainState(iteration=int(blob["iteration"]), model=model, cfg=cfg, optimizer=blob["optimizer"],
                      rng=list(blob.get("rng") or []), dataset=dict(blob.get("dataset") or {}),
                      metrics=dict(blob.get("metrics") or {}), path=str(path),
                      session=int(blob.get("session") or 0))


def load_weights_into(model: nn.Module, state: TrainState) -> None:
    """Copy the checkpoint's weights into ``model`` (which may be wrapped by DDP or compile)."""
    core = getattr(model, "module", model)
    core = getattr(core, "_orig_mod", core)
    load_state_checked(core, state.model.state_dict(), source=str(Path(state.path) / MODEL_DIR))
