"""``predrnn train`` and ``predrnn evaluate`` (the main job is ``python -m flows.run``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from predrnn.cli.common import PrecisionOpt, fail, parse_list, score_labels

if TYPE_CHECKING:
    from predrnn.config import ExperimentConfig
    from predrnn.data.store import S3Settings


def _check_start(resume: str | None, fork: str | None, init_weights: str | None, preset: str | None,
                 config: Path | None) -> None:
    """One way to start a run; --resume and --fork bring their own config. Raises typer.Exit(2)."""
    chosen = [flag for flag, v in (("--resume", resume), ("--fork", fork), ("--init-weights", init_weights)) if v]
    if len(chosen) > 1:
        raise fail(f"{' and '.join(chosen)} exclude each other: --resume continues a run, --fork starts a "
                   "new run from a run's training state, --init-weights a new run from weights only")
    if (resume or fork) and (preset or config):
        raise fail("--resume continues the run with its own config; drop --preset/--config (the one change it "
                   "accepts is --set optim.max_iterations=N, larger)" if resume else
                   "--fork starts from the run's own config; drop --preset/--config and change it with --set")


def _train_config(resume: str | None, fork: str | None, preset: str | None, config: Path | None,
                  overrides: list[str], tracking_uri: str | None, s3: S3Settings) -> ExperimentConfig:
    """The run's config before the command-line settings: the resumed or forked run's, else the preset's or
    the file's; with the --set overrides."""
    from predrnn.config import apply_overrides, load_config
    from predrnn.train import run_config

    if resume or fork:
        return apply_overrides(run_config(resume or fork or "", tracking_uri, s3), overrides)
    return load_config(None if config else preset, str(config) if config else None, overrides)


def train_cmd(
    data: Annotated[str | None, typer.Option("--data", help="dataset version URI ROOT/NAME@VERSION "
                                             "(or @latest); local path or s3://")] = None,
    preset: Annotated[str | None, typer.Option("--preset", help="named preset, e.g. quick, "
                                               "moving_mnist_v2")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="JSON config file instead of a "
                                                "preset")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override section.field=value "
                                                   "(repeatable)")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Ray Train workers (DDP ranks); "
                                                "optim.batch_size is the global batch")] = None,
    gpus_per_worker: Annotated[float | None, typer.Option("--gpus-per-worker",
                                                          help="GPUs per worker (0: CPU + gloo)")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="run directory, checkpoint "
                                               "directory or MLflow run id to continue (same run; only "
                                               "--set optim.max_iterations=N, larger, is accepted)")] = None,
    fork: Annotated[str | None, typer.Option("--fork", help="a run (as for --resume) whose latest "
                                             "training state a new run starts from, with its config "
                                             "changed by --set")] = None,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="MLflow store (default: "
                                                     "local SQLite under .state/mlflow)")] = None,
    storage: Annotated[str | None, typer.Option("--storage", help="Ray run storage (path or s3://); "
                                                "default .state/ray/results")] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="existing Ray cluster "
                                                    "HOST:PORT (default: start a local one)")] = None,
    max_failures: Annotated[int, typer.Option("--max-failures", help="worker-group restarts "
                                              "allowed")] = 2,
    out: Annotated[Path | None, typer.Option("--out", help="folder for the GIF, plots and test "
                                             "metrics (default: .state/runs/<run>)")] = None,
    register_model: Annotated[bool, typer.Option("--register/--no-register", help="log and register "
                                                 "the model in MLflow")] = True,
    init_weights: Annotated[str | None, typer.Option("--init-weights", help="warm start from a model "
                                                     "directory or models:/NAME@ALIAS")] = None,
    precision: Annotated[str | None, typer.Option(
        "--precision", help="training precision: auto (bf16 on GPUs, fp32 on CPUs), bf16 or fp32; sets "
        "compute.amp, over any --set compute.amp (default: the config's)")] = None,
) -> None:
    """Train on Ray Train, evaluate the best checkpoint on the test split, register it in MLflow.

    The last line printed is a JSON summary (model URI, test and persistence MSE per frame).
    """
    from predrnn.settings import Settings, tool_env

    root = tool_env()
    from predrnn.train import configure, finish, prepare, train

    _check_start(resume, fork, init_weights, preset, config)
    from predrnn.precision import PrecisionError, describe, normalise

    overrides = list(set_ or [])
    if precision is not None:
        try:
            overrides.append(f"compute.amp={normalise(precision)}")
        except PrecisionError as err:
            raise fail(f"--precision: {err}") from None
    settings = Settings()  # read once, here; everything below takes values
    uri, s3 = settings.tracking(tracking_uri), settings.s3()
    cfg = configure(_train_config(resume, fork, preset, config, overrides, uri, s3), workers=workers,
                    gpus_per_worker=gpus_per_worker)
    spec = prepare(cfg, data=data, tracking_uri=uri, storage_path=storage, state_dir=root,
                   ray_address=ray_address or settings.ray_address, s3=s3, resume=resume, fork=fork,
                   init_weights=init_weights)
    device = "cuda" if spec.cfg.compute.gpus_per_worker > 0 else "cpu"
    typer.echo(describe(spec.cfg.compute.amp, spec.precision, device, "train"), err=True)
    result = train(spec, max_failures=max_failures)
    summary = finish(result, out_dir=out or root / "runs" / spec.run_name, register=register_model)
    summary["precision"] = spec.precision  # the training's; the recorded test scores are fp32
    typer.echo(summary.pop("table"))
    typer.echo(json.dumps(summary))


def evaluate_cmd(
    model: Annotated[str, typer.Option("--model", help="model directory, checkpoint directory, or "
                                       "models:/NAME@ALIAS / models:/NAME/VERSION")],
    data: Annotated[str, typer.Option("--data", help="dataset version URI ROOT/NAME@VERSION")],
    split: Annotated[str, typer.Option("--split", help="train, val, test or all")] = "test",
    max_clips: Annotated[int, typer.Option("--max-clips", help="evaluate the first N clips only "
                                           "(0: all)")] = 0,
    thresholds: Annotated[str | None, typer.Option(
        "--thresholds", help="verification thresholds in the data's units, e.g. 0.5,2,5 (default: the "
        "dataset's, recorded at ingest; images: none)")] = None,
    horizon: Annotated[int | None, typer.Option(
        "--horizon", help="lead times to forecast and score (default: the model's training horizon; "
        "e.g. 20 for KTH's 10 -> 20 protocol)")] = None,
    context: Annotated[int | None, typer.Option(
        "--context", help="context frames (default: the model's training input length)")] = None,
    pool: Annotated[str, typer.Option("--pool", help="pooled-CSI block sizes in pixels")] = "4,16",
    fss_scales: Annotated[str, typer.Option("--fss-scales", help="FSS window sizes in pixels (odd)")] = "1,3,9,27",
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="MLflow store for "
                                                     "models:/ URIs and --log")] = None,
    log: Annotated[bool, typer.Option("--log", help="record the metrics as a new MLflow run")] = False,
    precision: PrecisionOpt = "auto",
    baselines: Annotated[str | None, typer.Option(
        "--baselines", help="baselines scored beside the model: persistence, extrapolation (pysteps optical flow "
        "+ advection), sprog (pysteps S-PROG), comma-separated (default: all that apply; images and several "
        "variables: persistence)")] = None,
) -> None:
    """Per-lead-time scores of a model and of its baselines, in the data's units.

    MSE/MAE per frame, RMSE (and PSNR/SSIM for images); at thresholds CSI/POD/FAR/bias/HSS,
    pooled CSI, FSS and CSI-M; for a single field, the spectral ratio (forecast / observed power) at 8, 16,
    32 and 64 km (pixels without a projected grid). The last line is one JSON object whose "model" and
    "baselines" (persistence, extrapolation, sprog) hold the per-lead-time scorecards (the keys of
    `predrnn score`).
    """
    from predrnn.settings import tool_env

    tool_env()
    from predrnn.evaluation import channel_units, lead_time_table
    from predrnn.jobs import prepare_evaluate, run_evaluate
    from predrnn.settings import Settings

    settings = Settings()  # read once, here; everything below takes values
    spec = prepare_evaluate(model, data, split=split, max_clips=max_clips,
                            thresholds=parse_list(thresholds, float, "--thresholds"), labels=score_labels(thresholds),
                            pools=parse_list(pool, int, "--pool") or [],
                            fss_scales=parse_list(fss_scales, int, "--fss-scales") or [], context=context,
                            horizon=horizon, precision=precision, tracking_uri=settings.tracking(tracking_uri),
                            cache_dir=settings.model_cache, record=log, s3=settings.s3(),
                            baselines=[b.strip() for b in baselines.split(",") if b.strip()] if baselines else None)
    result = run_evaluate(spec)
    typer.echo(spec.precision_note, err=True)
    typer.echo(lead_time_table(result.metrics, units=result.units, channel_units=channel_units(spec.model.cfg)))
    typer.echo(json.dumps(result.to_json()))
