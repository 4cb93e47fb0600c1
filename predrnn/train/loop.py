"""The per-worker training loop that Ray Train runs on every rank.

Every rank builds the model, restores the latest readable checkpoint (falling back to older ones
when the newest is corrupt), wraps the model in DDP (gloo on CPU, NCCL on GPU) and then runs
``train_step`` on its own shard of the training split. Rank 0 alone evaluates, writes
checkpoints and talks to MLflow; every rank calls ``ray.train.report`` at checkpoint iterations
because reports are collective in Ray Train V2.

Batch semantics: ``optim.batch_size`` is the global (effective) batch, split evenly over the
workers, and the learning rate is used as given. Changing the number of workers therefore keeps
the optimisation problem the same (up to the data order); it only changes the speed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from predrnn.checkpoint import CheckpointError, load_state_checked
from predrnn.data.batches import per_worker_batch
from predrnn.data.prefetch import BatchPrefetcher
from predrnn.models import build_model
from predrnn.train.rank_loop import DIVERGED, SELECTION, WORST, RankLoop, WorkerJob, train_iteration
from predrnn.train.state import TrainState, load_checkpoint, load_weights_into, order_of, set_rng_state

__all__ = ["DIVERGED", "SELECTION", "WORST", "RankLoop", "WorkerJob", "restore_latest", "train_iteration",
           "train_loop_per_worker"]


def restore_latest(checkpoint: Any) -> TrainState:
    """Load the newest readable checkpoint among ``checkpoint`` (a ``ray.train.Checkpoint``) and its
    sibling ``iter_*`` directories in the same run storage.

    A sibling newer than Ray's pick is a checkpoint written completely before the run was stopped but
    not yet registered by Ray: training continues from it, so no interval is lost. Each unreadable
    candidate (corrupt, or cut short by the stop) is reported on stderr with the file that failed, and
    the next older one is tried.
    """
    from ray.train import Checkpoint

    from predrnn.train.storage import checkpoint_dirs

    fs, path = checkpoint.filesystem, checkpoint.path
    parent = str(Path(path).parent)
    own = order_of(path)
    candidates = [checkpoint]
    try:
        others = [(o, p) for o, p in reversed(checkpoint_dirs(fs, parent)) if o != own]
        newer = [Checkpoint(p, filesystem=fs) for o, p in others if own is not None and o > own]
        older = [Checkpoint(p, filesystem=fs) for o, p in others if own is None or o < own]
        candidates = [*newer, checkpoint, *older]
    except OSError as err:
        print(f"warning: cannot list older checkpoints in {parent}: {err}", file=sys.stderr, flush=True)
    for cand in candidates:
        try:
            with cand.as_directory() as local:
                state = load_checkpoint(local)
            state.path = cand.path
            return state
        except CheckpointError as err:
            print(f"warning: checkpoint {cand.path} is unusable ({err}); trying the previous one",
                  file=sys.stderr, flush=True)
    raise CheckpointError(f"no readable checkpoint in {parent} (tried {[c.path for c in candidates]})")


def _quiet_train_reports() -> None:
    """Ray Train logs every report at INFO under a logger named by its file path; keep warnings only."""
    import logging

    try:
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    except ImportError:  # another Ray layout: the extra lines are harmless
        pass


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: ``config["job"]`` is the rank's :class:`WorkerJob`."""
    import ray.train
    import ray.train.torch as rtt

    job: WorkerJob = config["job"]
    spec, cfg = job.spec, job.spec.cfg
    o, d, c = cfg.optim, cfg.data, cfg.compute

    _quiet_train_reports()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = rtt.get_device()
    if c.threads > 0:
        torch.set_num_threads(c.threads)
    elif device.type == "cpu":
        torch.set_num_threads(max(1, int(c.cpus_per_worker)))
    batch = per_worker_batch(o.batch_size, world)

    torch.manual_seed(o.seed)
    model = build_model(cfg)
    state: TrainState | None = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        state = restore_latest(ckpt)
        load_weights_into(model, state)
        if rank == 0:
            print(f"resuming from {state.path} at iteration {state.iteration}", flush=True)
    elif spec.fork_checkpoint:  # a new run from another run's full training state
        from predrnn.train import storage

        state = restore_latest(storage.checkpoint(spec.fork_checkpoint, spec.s3))
        load_weights_into(model, state)
        if rank == 0:
            print(f"fork: starting from {state.path} at iteration {state.iteration}", flush=True)
    elif job.init_state is not None:
        load_state_checked(model, job.init_state, source="warm-start weights")
        if rank == 0:
            print("warm start: initialised from the given model's weights", flush=True)
    start = state.iteration if state else 0
    forked = ckpt is None and state is not None
    session = 0 if forked or state is None else state.session + 1

    on_gpu = device.type == "cuda"
    if on_gpu and c.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    unused = getattr(model, "decouple", False) and o.decouple_beta == 0
    ddp_kwargs = {"find_unused_parameters": True} if unused else None
    model = rtt.prepare_model(model, parallel_strategy_kwargs=ddp_kwargs)
    core = getattr(model, "module", model)
    optimizer = torch.optim.Adam(model.parameters(), lr=o.lr)
    if state is not None:
        optimizer.load_state_dict(state.optimizer)
        for group in optimizer.param_groups:  # the run's own learning rate (a fork may change it)
            group["lr"] = o.lr
        if len(state.rng) == world:
            set_rng_state(state.rng[rank])
    if c.compile:
        model = torch.compile(model)  # type: ignore[assignment]

    train_ds = job.source.open("train", length=d.total_length, rank=rank, world_size=world, seed=o.seed)
    val_ds = job.source.open("val", length=d.total_length, rank=0, world_size=1) if rank == 0 else None
    if rank == 0:
        print(f"training in {spec.precision}", flush=True)  # resolved once at the door (RunSpec.precision)

    logger = None
    if rank == 0 and spec.mlflow_run_id and spec.tracking_uri:
        from predrnn.tracking import MetricLogger

        logger = MetricLogger(spec.tracking_uri, spec.mlflow_run_id)
        if state is not None:
            logger.log({"resumed_from_iteration": float(state.iteration)}, step=state.iteration)

    # the next batches are read in the background while the model trains (same order as reading each one
    # when needed); the time spent waiting for them is the data stall
    prefetcher = BatchPrefetcher(train_ds, start + 1, o.max_iterations, batch=batch, seed=o.seed, rank=rank,
                                 depth=d.prefetch, pin_memory=on_gpu)
    rank_loop = RankLoop(job=job, model=model, core=core, optimizer=optimizer, val_ds=val_ds, rank=rank,
                         world=world, batch=batch, device=device, logger=logger, session=session,
                         last_val=dict(state.metrics) if state else {})
    try:
        rank_loop.run(prefetcher, start)
    finally:
        prefetcher.close()


