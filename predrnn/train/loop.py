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

import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from predrnn.checkpoint import CheckpointError, load_state_checked
from predrnn.config import ExperimentConfig
from predrnn.data.batches import iterate_batches, mask_generator, per_worker_batch
from predrnn.data.prefetch import BatchPrefetcher, read_iteration
from predrnn.evaluation import evaluation_metrics
from predrnn.models import build_model
from predrnn.sampling import sampling_mask
from predrnn.steps import StepResult, evaluate, train_step
from predrnn.train.state import (
    TrainState,
    checkpoint_name,
    load_checkpoint,
    load_weights_into,
    order_of,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from predrnn.values import score_units

# Ray keeps the ``keep_best`` checkpoints of lowest SELECTION (plus the latest). A checkpoint saved without
# an evaluation ranks last with a finite WORST: Ray's run snapshot stores NaN as null, which it cannot
# score again when the run is resumed.
SELECTION = "selection_val_mse"
WORST = 1e300
DIVERGED = "diverged.json"  # written into the run directory by rank 0 when training diverges


def diverged(loss: float, bound: float, world: int, device: torch.device) -> bool:
    """True on every rank when any rank's training loss is non-finite or above ``bound`` (> 0)."""
    bad = not math.isfinite(loss) or (bound > 0 and loss > bound)
    if world > 1:
        flag = torch.tensor([1.0 if bad else 0.0], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        bad = bool(flag.item() > 0)
    return bad


def train_iteration(model: torch.nn.Module, optimizer: torch.optim.Optimizer, train_ds: Any, it: int,
                    cfg: ExperimentConfig, *, rank: int, batch: int, device: torch.device | str = "cpu",
                    precision: str = "fp32", frames: torch.Tensor | None = None) -> tuple[StepResult, float, float]:
    """Global iteration ``it`` (from 1) on one rank: its batch of its shard (``frames``, (B, T, H, W, C),
    when already read, e.g. by a :class:`predrnn.data.prefetch.BatchPrefetcher`; else read here), the
    sampling mask of the schedule (reverse scheduled sampling or scheduled sampling,
    :func:`predrnn.sampling.sampling_mask`, drawn from a generator seeded by (seed, rank, iteration)), and
    one :func:`predrnn.steps.train_step` with the decoupling weight ``optim.decouple_beta``. Returns the
    step's losses and the schedule's ``(r_eta, eta)``; batch, mask and update are a pure function of
    (seed, rank, iteration, weights)."""
    o, d = cfg.optim, cfg.data
    if frames is None:
        frames = read_iteration(train_ds, it, batch=batch, seed=o.seed, rank=rank)
    frames = frames.to(device, non_blocking=True)
    mask, r_eta, eta = sampling_mask(it, cfg.sampling, batch=batch, input_length=d.input_length,
                                     total_length=d.total_length, generator=mask_generator(o.seed, rank, it))
    res = train_step(model, optimizer, frames, mask.to(device), beta=o.decouple_beta,
                     reverse_input=o.reverse_input, grad_clip=o.grad_clip, precision=precision, values=cfg.values)
    return res, r_eta, eta


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


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
    """Ray Train entry point. ``config``: ``spec`` (a :class:`predrnn.train.RunSpec` as a dict: the
    experiment, dataset, MLflow store and run, run directory, S3 settings, fork checkpoint),
    ``source`` (the clip source), ``init_state`` (warm-start weights or None) and ``log_every``."""
    import ray.train
    import ray.train.torch as rtt
    import ray.util

    from predrnn.train.spec import RunSpec

    spec = RunSpec.from_dict(config["spec"])
    cfg = spec.cfg
    source = config["source"]
    dataset_info: dict[str, Any] = spec.dataset.to_dict()
    log_every = int(config.get("log_every") or 10)
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
    elif config.get("init_state") is not None:
        load_state_checked(model, config["init_state"], source="warm-start weights")
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

    train_ds = source.open("train", length=d.total_length, rank=rank, world_size=world, seed=o.seed)
    val_ds = source.open("val", length=d.total_length, rank=0, world_size=1) if rank == 0 else None
    precision = spec.precision  # resolved once at the door (predrnn.train.spec.prepare)
    if rank == 0:
        print(f"training in {precision}", flush=True)

    logger = None
    if rank == 0 and spec.mlflow_run_id and spec.tracking_uri:
        from predrnn.tracking import MetricLogger

        logger = MetricLogger(spec.tracking_uri, spec.mlflow_run_id)
        if state is not None:
            logger.log({"resumed_from_iteration": float(state.iteration)}, step=state.iteration)

    last_val: dict[str, float] = dict(state.metrics) if state else {}
    window = {"loss": 0.0, "mse": 0.0, "decouple": 0.0, "n": 0, "stall_s": 0.0}
    # the next batches are read in the background while the model trains (same order as reading each one
    # when needed); the time spent waiting for them is the data stall
    prefetcher = BatchPrefetcher(train_ds, start + 1, o.max_iterations, batch=batch, seed=o.seed, rank=rank,
                                 depth=d.prefetch, pin_memory=on_gpu)
    try:
        _train(model, optimizer, core, prefetcher, val_ds, cfg, spec, start=start, rank=rank, world=world,
               batch=batch, device=device, precision=precision, logger=logger, last_val=last_val, window=window,
               log_every=log_every, session=session, dataset_info=dataset_info)
    finally:
        prefetcher.close()


def _train(model: Any, optimizer: torch.optim.Optimizer, core: torch.nn.Module, prefetcher: BatchPrefetcher,
           val_ds: Any, cfg: ExperimentConfig, spec: Any, *, start: int, rank: int, world: int, batch: int,
           device: torch.device, precision: str, logger: Any, last_val: dict[str, float], window: dict[str, float],
           log_every: int, session: int, dataset_info: dict[str, Any]) -> None:
    """Iterations ``start + 1 .. optim.max_iterations`` of one rank (see :func:`train_loop_per_worker`)."""
    import ray.train
    import ray.util

    o, d = cfg.optim, cfg.data
    train_ds = prefetcher.dataset
    t_start = t_window = time.perf_counter()
    done_here = 0
    warmup = start + 5  # steady-state timing starts after a few iterations (first all-reduce, caches)
    t_steady: float | None = None
    t_step_end = t_start
    if rank == 0:
        print(f"training {cfg.name}: iterations {start + 1}..{o.max_iterations}, {world} worker(s) x batch "
              f"{batch} (global {o.batch_size}), lr {o.lr}, device {device}", flush=True)

    for it in range(start + 1, o.max_iterations + 1):
        stalled = prefetcher.stall_s
        frames = prefetcher.get(it)
        window["stall_s"] += prefetcher.stall_s - stalled
        res, r_eta, eta = train_iteration(model, optimizer, train_ds, it, cfg, rank=rank, batch=batch,
                                          device=device, precision=precision, frames=frames)
        if diverged(res.loss, o.divergence_loss, world, device):
            # every rank stops at the same iteration (the flag is all-reduced), reports once and returns:
            # the driver marks the run FAILED and nothing is registered; no worker-group restart
            if rank == 0:
                print(f"it {it:>6}  training diverged: loss {res.loss:.4g}"
                      + (f" above optim.divergence_loss={o.divergence_loss:g}" if math.isfinite(res.loss) else ""),
                      flush=True)
                from predrnn.train import storage

                storage.write_json(spec.run_dir, DIVERGED, {"iteration": it, "loss": repr(float(res.loss))}, spec.s3)
            return
        window["loss"] += res.loss
        window["mse"] += res.mse
        window["decouple"] += res.decouple
        window["n"] += 1
        done_here += 1  # noqa: SIM113 - counts this session's iterations, not the loop index
        t_step_end = time.perf_counter()
        if it == warmup:
            t_steady = t_step_end
        last = it == o.max_iterations

        if it % log_every == 0 or last:
            now = time.perf_counter()
            stall = window["stall_s"] / max(now - t_window, 1e-9)  # this rank's data-stall fraction
            stats = torch.tensor([window["loss"], window["mse"], window["decouple"], stall * max(1, window["n"])],
                                 dtype=torch.float64)
            if world > 1:
                torch.distributed.all_reduce(stats)
                stats /= world
            stats /= max(1, window["n"])
            clips_s = window["n"] * o.batch_size / max(now - t_window, 1e-9)
            rate = done_here / max(now - t_start, 1e-9)
            if rank == 0:
                metrics = {"loss": float(stats[0]), "mse": float(stats[1]), "decouple": float(stats[2]),
                           "r_eta": r_eta, "eta": eta, "lr": optimizer.param_groups[0]["lr"],
                           "clips_per_s": clips_s, "data_stall_fraction": float(stats[3])}
                norm = " (normalised)" if cfg.values.kind == "field" else ""
                print(f"it {it:>6}/{o.max_iterations}  loss{norm} {metrics['loss']:.5f}  mse {metrics['mse']:.5f}  "
                      f"decouple {metrics['decouple']:.4f}  r_eta {r_eta:.3f}  eta {eta:.3f}  "
                      f"{clips_s:.1f} clips/s  stall {100 * float(stats[3]):.0f}%  "
                      f"ETA {_fmt_eta((o.max_iterations - it) / rate)}", flush=True)
                if logger:
                    logger.log(metrics, step=it)
            window.update(loss=0.0, mse=0.0, decouple=0.0, n=0, stall_s=0.0)
            t_window = now

        evaluated = False
        if rank == 0 and (it % o.eval_interval == 0 or last):
            result = evaluate(core, iterate_batches(val_ds, 2 * batch, o.eval_clips), d.input_length,
                              device=device, precision=precision, values=cfg.values)
            last_val = evaluation_metrics(result, "val")
            evaluated = True
            base = last_val.get("val_persistence_mse", float("nan"))
            u = score_units(cfg.values)
            units = f" ({u})²" if u else ""
            extra = (f"  SSIM {last_val['val_ssim']:.3f}" if "val_ssim" in last_val
                     else f"  RMSE {last_val.get('val_rmse', float('nan')):.4g}{f' {u}' if u else ''}")
            print(f"it {it:>6}  validation on {result['model']['clips']} clips: MSE/frame "
                  f"{last_val['val_mse']:.4g}{units} (persistence {base:.4g}){extra}", flush=True)
            if logger:
                logger.log(last_val, step=it)

        if it % o.checkpoint_interval == 0 or last:
            mine = (rng_state(), ray.util.get_node_ip_address())
            gathered = [mine]
            if world > 1:
                gathered = [None] * world  # type: ignore[list-item]
                torch.distributed.all_gather_object(gathered, mine)
            rngs = [g[0] for g in gathered]  # type: ignore[index]
            nodes = [g[1] for g in gathered]  # type: ignore[index]
            steady = math.nan
            if t_steady is not None and it > warmup:
                steady = (t_step_end - t_steady) / (it - warmup)
            val_mse = last_val.get("val_mse", math.nan) if evaluated else math.nan
            report = {"iteration": it, "r_eta": r_eta, "eta": eta, "seconds_per_iteration": steady,
                      "val_mse": val_mse, SELECTION: val_mse if math.isfinite(val_mse) else WORST}
            if rank == 0:
                tmp = tempfile.mkdtemp(prefix="predrnn-ckpt-")
                try:
                    save_checkpoint(tmp, model=core, optimizer=optimizer, iteration=it, cfg=cfg,
                                    dataset=dataset_info, rng=rngs, metrics=last_val if evaluated else {},
                                    nodes=nodes, session=session)
                    ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                                     checkpoint_dir_name=checkpoint_name(it, session))
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
            else:
                ray.train.report(report)
    if rank == 0:
        print(f"training finished at iteration {o.max_iterations} in {time.perf_counter() - t_start:.0f} s "
              f"(pid {os.getpid()})", flush=True)
