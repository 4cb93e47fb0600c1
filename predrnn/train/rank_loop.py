"""The iterations of one rank, in the loop's order: step (the sampling schedule's mask and the rank's
batch), log at the log interval, validate at the evaluation interval, checkpoint and report at the
checkpoint interval. :func:`predrnn.train.loop.train_loop_per_worker` builds a :class:`RankLoop` and
runs it; a diverged loss stops every rank at the same iteration."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from predrnn.config import ExperimentConfig
from predrnn.data.batches import iterate_batches, mask_generator
from predrnn.data.prefetch import BatchPrefetcher, read_iteration
from predrnn.evaluation import evaluation_metrics
from predrnn.sampling import sampling_mask
from predrnn.steps import StepResult, evaluate, train_step
from predrnn.train.spec import RunSpec
from predrnn.train.state import checkpoint_name, rng_state, save_checkpoint
from predrnn.values import score_units

# Ray keeps the ``keep_best`` checkpoints of lowest SELECTION (plus the latest). A checkpoint saved without
# an evaluation ranks last with a finite WORST: Ray's run snapshot stores NaN as null, which it cannot
# score again when the run is resumed.
SELECTION = "selection_val_mse"
WORST = 1e300
DIVERGED = "diverged.json"  # written into the run directory by rank 0 when training diverges


@dataclass(frozen=True)
class WorkerJob:
    """What the driver hands every rank (Ray Train's ``train_loop_config`` is ``{"job": WorkerJob}``).

    Attributes:
        spec: the run, resolved once at the door (:class:`predrnn.train.RunSpec`; its S3 settings hold no
            credential: each rank's S3 client reads its own).
        source: the clip source every rank opens its shard of (:class:`predrnn.data.batches.ZarrSource`).
        init_state: warm-start weights (a state dict) or None.
        log_every: iterations between progress lines (and MLflow training metrics).
    """

    spec: RunSpec
    source: Any
    init_state: dict[str, Any] | None = None
    log_every: int = 10

    def config(self) -> dict[str, Any]:
        """The ``train_loop_config`` that carries this job to :func:`train_loop_per_worker`."""
        return {"job": self}


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


@dataclass
class ProgressWindow:
    """This rank's training losses and data stall since the last progress line."""

    loss: float = 0.0
    mse: float = 0.0
    decouple: float = 0.0
    n: int = 0
    stall_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def add(self, res: StepResult, stall_s: float) -> None:
        self.loss, self.mse, self.decouple = self.loss + res.loss, self.mse + res.mse, self.decouple + res.decouple
        self.n, self.stall_s = self.n + 1, self.stall_s + stall_s

    def close(self, world: int, global_batch: int) -> dict[str, float]:
        """The window's means over its iterations and over every rank (a collective when ``world`` > 1):
        ``loss``, ``mse``, ``decouple``, ``data_stall_fraction``, and ``clips_per_s`` of the global batch;
        then a new window starts."""
        now = time.perf_counter()
        span = max(now - self.started, 1e-9)
        n = max(1, self.n)
        stats = torch.tensor([self.loss, self.mse, self.decouple, self.stall_s / span * n], dtype=torch.float64)
        if world > 1:
            torch.distributed.all_reduce(stats)
            stats /= world
        stats /= n
        out = {"loss": float(stats[0]), "mse": float(stats[1]), "decouple": float(stats[2]),
               "data_stall_fraction": float(stats[3]), "clips_per_s": self.n * global_batch / span}
        self.loss = self.mse = self.decouple = self.stall_s = 0.0
        self.n, self.started = 0, now
        return out


@dataclass
class RankLoop:
    """The iterations of one rank: what they share (model, optimiser, validation data, logger) and the
    steps of an iteration, each a method: :meth:`run` reads like the loop it is."""

    job: WorkerJob
    model: Any  # the model as trained (DDP, compiled)
    core: torch.nn.Module  # the plain module: evaluated and saved
    optimizer: torch.optim.Optimizer
    val_ds: Any
    rank: int
    world: int
    batch: int
    device: torch.device
    logger: Any
    session: int
    last_val: dict[str, float]

    @property
    def cfg(self) -> ExperimentConfig:
        return self.job.spec.cfg

    def run(self, prefetcher: BatchPrefetcher, start: int) -> None:
        """Iterations ``start + 1 .. optim.max_iterations``: step (the schedule's mask and batch), log at the
        log interval, validate at the evaluation interval, checkpoint and report at the checkpoint interval;
        a diverged loss stops every rank at the same iteration."""
        o = self.cfg.optim
        window, timer = ProgressWindow(), _StepTimer(start)
        if self.rank == 0:
            print(f"training {self.cfg.name}: iterations {start + 1}..{o.max_iterations}, {self.world} worker(s) x "
                  f"batch {self.batch} (global {o.batch_size}), lr {o.lr}, device {self.device}", flush=True)
        for it in range(start + 1, o.max_iterations + 1):
            stalled = prefetcher.stall_s
            frames = prefetcher.get(it)
            res, r_eta, eta = train_iteration(self.model, self.optimizer, prefetcher.dataset, it, self.cfg,
                                              rank=self.rank, batch=self.batch, device=self.device,
                                              precision=self.job.spec.precision, frames=frames)
            if self.diverged(it, res):
                return
            window.add(res, prefetcher.stall_s - stalled)
            timer.step(it)
            last = it == o.max_iterations
            if it % self.job.log_every == 0 or last:
                self.log(it, window.close(self.world, o.batch_size), r_eta, eta, timer)
            evaluated = self.rank == 0 and (it % o.eval_interval == 0 or last) and self.validate(it)
            if it % o.checkpoint_interval == 0 or last:
                self.save_and_report(it, r_eta, eta, timer.steady(it), evaluated)
        if self.rank == 0:
            print(f"training finished at iteration {o.max_iterations} in {timer.elapsed():.0f} s "
                  f"(pid {os.getpid()})", flush=True)

    def diverged(self, it: int, res: StepResult) -> bool:
        """Whether any rank's loss diverged at ``it`` (all-reduced, so every rank stops together); rank 0
        records it in the run directory, where the driver finds it and marks the run FAILED, with nothing
        registered and no worker-group restart."""
        o, spec = self.cfg.optim, self.job.spec
        if not diverged(res.loss, o.divergence_loss, self.world, self.device):
            return False
        if self.rank == 0:
            print(f"it {it:>6}  training diverged: loss {res.loss:.4g}"
                  + (f" above optim.divergence_loss={o.divergence_loss:g}" if math.isfinite(res.loss) else ""),
                  flush=True)
            from predrnn.train import storage

            storage.write_json(spec.run_dir, DIVERGED, {"iteration": it, "loss": repr(float(res.loss))}, spec.s3)
        return True

    def log(self, it: int, stats: dict[str, float], r_eta: float, eta: float, timer: _StepTimer) -> None:
        """One progress line (rank 0) and the training metrics in MLflow."""
        if self.rank != 0:
            return
        o = self.cfg.optim
        metrics = {"loss": stats["loss"], "mse": stats["mse"], "decouple": stats["decouple"], "r_eta": r_eta,
                   "eta": eta, "lr": self.optimizer.param_groups[0]["lr"], "clips_per_s": stats["clips_per_s"],
                   "data_stall_fraction": stats["data_stall_fraction"]}
        norm = " (normalised)" if self.cfg.values.kind == "field" else ""
        print(f"it {it:>6}/{o.max_iterations}  loss{norm} {metrics['loss']:.5f}  mse {metrics['mse']:.5f}  "
              f"decouple {metrics['decouple']:.4f}  r_eta {r_eta:.3f}  eta {eta:.3f}  "
              f"{metrics['clips_per_s']:.1f} clips/s  stall {100 * metrics['data_stall_fraction']:.0f}%  "
              f"ETA {_fmt_eta(timer.remaining(it, o.max_iterations))}", flush=True)
        if self.logger:
            self.logger.log(metrics, step=it)

    def validate(self, it: int) -> bool:
        """Rank 0: the model and persistence on ``optim.eval_clips`` validation clips, in the data's units;
        printed, logged, and kept for the next checkpoint. Returns True."""
        cfg, o, d = self.cfg, self.cfg.optim, self.cfg.data
        result = evaluate(self.core, iterate_batches(self.val_ds, 2 * self.batch, o.eval_clips), d.input_length,
                          device=self.device, precision=self.job.spec.precision, values=cfg.values)
        self.last_val = val = evaluation_metrics(result, "val")
        base = val.get("val_persistence_mse", float("nan"))
        u = score_units(cfg.values)
        units = f" ({u})²" if u else ""
        extra = (f"  SSIM {val['val_ssim']:.3f}" if "val_ssim" in val
                 else f"  RMSE {val.get('val_rmse', float('nan')):.4g}{f' {u}' if u else ''}")
        print(f"it {it:>6}  validation on {result['model']['clips']} clips: MSE/frame "
              f"{val['val_mse']:.4g}{units} (persistence {base:.4g}){extra}", flush=True)
        if self.logger:
            self.logger.log(val, step=it)
        return True

    def save_and_report(self, it: int, r_eta: float, eta: float, steady_s: float, evaluated: bool) -> None:
        """Every rank's RNG state and node gathered; rank 0 saves the full training state as a checkpoint and
        reports it with the iteration's metrics, the others report the metrics (reports are collective in Ray
        Train V2). A checkpoint without a validation ranks last (:data:`WORST`)."""
        import ray.train
        import ray.util

        mine = (rng_state(), ray.util.get_node_ip_address())
        gathered = [mine]
        if self.world > 1:
            gathered = [None] * self.world  # type: ignore[list-item]
            torch.distributed.all_gather_object(gathered, mine)
        val_mse = self.last_val.get("val_mse", math.nan) if evaluated else math.nan
        report = {"iteration": it, "r_eta": r_eta, "eta": eta, "seconds_per_iteration": steady_s,
                  "val_mse": val_mse, SELECTION: val_mse if math.isfinite(val_mse) else WORST}
        if self.rank != 0:
            ray.train.report(report)
            return
        tmp = tempfile.mkdtemp(prefix="predrnn-ckpt-")
        try:
            save_checkpoint(tmp, model=self.core, optimizer=self.optimizer, iteration=it, cfg=self.cfg,
                            dataset=self.job.spec.dataset.to_dict(), rng=[g[0] for g in gathered],  # type: ignore[index]
                            metrics=self.last_val if evaluated else {},
                            nodes=[g[1] for g in gathered], session=self.session)  # type: ignore[index]
            ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=checkpoint_name(it, self.session))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class _StepTimer:
    """Wall time of this session's iterations: the rate for the ETA, and the steady-state seconds per
    iteration after a few warm-up iterations (first all-reduce, caches)."""

    def __init__(self, start: int) -> None:
        self.start, self.warmup = start, start + 5
        self.t0 = self.t_end = time.perf_counter()
        self.t_steady: float | None = None

    def step(self, it: int) -> None:
        self.t_end = time.perf_counter()
        if it == self.warmup:
            self.t_steady = self.t_end

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def remaining(self, it: int, last: int) -> float:
        rate = (it - self.start) / max(self.elapsed(), 1e-9)
        return (last - it) / rate if rate > 0 else math.inf

    def steady(self, it: int) -> float:
        if self.t_steady is None or it <= self.warmup:
            return math.nan
        return (self.t_end - self.t_steady) / (it - self.warmup)
