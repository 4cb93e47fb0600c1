"""``predrnn train`` and ``predrnn evaluate`` (the main job is ``python -m flows.run``), and :func:`tool_env`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from predrnn.cli.common import PrecisionOpt, check_pools_and_scales, door_precision, fail, parse_list, score_labels
from predrnn.errors import PredrnnError

if TYPE_CHECKING:
    from predrnn.config import ExperimentConfig


def tool_env(state: Path | None = None) -> Path:
    """Keep every tool's state under the state folder (``PREDRNN_STATE_DIR``, default ``./.state``),
    switch telemetry off and put Ray under token authentication (:func:`predrnn.security.ray_auth_env`),
    before the tools import; returns the state folder.

    Raises:
        SecurityError: ``RAY_AUTH_MODE`` asks for no authentication, or ``RAY_AUTH_TOKEN_PATH`` is unusable.
    """
    from predrnn.security import ray_auth_env
    from predrnn.settings import Settings

    root = (state or Settings().state).absolute()
    os.environ.setdefault("PREDRNN_STATE_DIR", str(root))
    os.environ.update(ray_auth_env(root, os.environ))
    defaults = {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    }
    if not sys.stderr.isatty():  # progress bars on a terminal; in a log or a pipe, only the plain lines
        defaults.update({"TQDM_DISABLE": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # Prefect creates only the leaf
    return root


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
                  overrides: list[str], tracking_uri: str | None, s3: dict[str, Any]) -> ExperimentConfig:
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
    root = tool_env()
    from predrnn.settings import Settings
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


def _log_evaluation(tracking_uri: str | None, cfg: ExperimentConfig, model: str, info: Any, split: str,
                    metrics: dict[str, Any], cards: dict[str, Any], units: str, precision: str) -> tuple[str, str]:
    """Record an evaluation as a new MLflow run (the forecast precision as a param, metrics, scorecards as
    artifacts); return (run id, store URI)."""
    import tempfile

    from predrnn.evaluation import evaluation_metrics, write_scorecard
    from predrnn.tracking import Tracker
    from predrnn.train.finalize import log_scorecard

    tracker = Tracker(tracking_uri)
    run_id = tracker.open_run(cfg.tracking.experiment, run_name=f"evaluate-{split}",
                              tags={"model": model, "dataset.uri": info.uri})
    tracker.log_dataset(run_id, info.to_dict(), context=split)
    tracker.log_params(run_id, {"precision": precision})
    tracker.log_metrics(run_id, evaluation_metrics(metrics, split))
    log_scorecard(tracker, run_id, cards, split)
    with tempfile.TemporaryDirectory() as tmp:
        for path in write_scorecard(tmp, cards, units=units):
            tracker.log_artifact(run_id, path, "evaluation")
    tracker.end_run(run_id)
    return run_id, tracker.uri


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
) -> None:
    """Per-lead-time scores of a model and of persistence, in the data's units.

    MSE/MAE per frame, RMSE (and PSNR/SSIM for images); at thresholds CSI/POD/FAR/bias/HSS,
    pooled CSI, FSS and CSI-M. The last line is one JSON object whose "model" and
    "persistence" hold the per-lead-time scorecards (the keys of `predrnn score`).
    """
    tool_env()
    from predrnn.data import validate_dataset
    from predrnn.data.batches import ZarrSource
    from predrnn.evaluation import channel_units, evaluate_split, lead_time_table, protocol, scorecards
    from predrnn.forecaster import load_forecaster
    from predrnn.settings import Settings
    from predrnn.values import score_units

    settings = Settings()
    tracking_uri = settings.tracking(tracking_uri)

    thr = parse_list(thresholds, float, "--thresholds")
    pools = parse_list(pool, int, "--pool") or []
    scales = parse_list(fss_scales, int, "--fss-scales") or []
    check_pools_and_scales(pools, scales)
    resolved, said = door_precision(precision, "cpu")
    try:
        ref = str(Path(model) / "model") if (Path(model) / "train_state.pt").is_file() else model
        net, cfg = load_forecaster(ref, tracking_uri=tracking_uri, cache_dir=settings.model_cache)
        n_in, n_out = protocol(cfg, context, horizon)
        info = validate_dataset(cfg, data, for_model=True, need_length=n_in + n_out)
        metrics = evaluate_split(net, cfg, ZarrSource(info.uri), split, max_clips=max_clips,
                                 thresholds=thr, pools=pools, fss_scales=scales, labels=score_labels(thresholds),
                                 context=n_in, horizon=n_out, precision=resolved)
    except PredrnnError:
        raise  # the CLI's error handler
    except ValueError as err:
        raise fail(str(err)) from None
    units = score_units(cfg.values)
    typer.echo(said, err=True)
    typer.echo(lead_time_table(metrics, units=units, channel_units=channel_units(cfg)))
    cards = scorecards(metrics)
    out = {"model_ref": model, "dataset": info.uri, "split": split, "clips": metrics["model"]["clips"],
           "units": units, "precision": resolved,
           f"{split}_mse_per_frame": metrics["model"]["mse_per_frame"],
           "persistence_mse_per_frame": metrics["persistence"]["mse_per_frame"],
           f"{split}_mse": metrics["model"]["mse"], "persistence_mse": metrics["persistence"]["mse"],
           "model": cards["model"], "persistence": cards["persistence"]}
    if log:
        out["run_id"], out["tracking_uri"] = _log_evaluation(tracking_uri, cfg, model, info, split, metrics,
                                                              cards, units, resolved)
    typer.echo(json.dumps(out))
