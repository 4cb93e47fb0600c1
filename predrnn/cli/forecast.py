"""``predrnn import-official``, ``predict`` and ``forecast``: a model's forecasts (``score`` and ``bench`` are
:mod:`.score` and :mod:`.bench`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from predrnn.cli.common import PrecisionOpt, door_precision, fail
from predrnn.errors import PredrnnError

if TYPE_CHECKING:
    import numpy as np

    from predrnn.config import ExperimentConfig


def import_official_cmd(
    ckpt: Annotated[Path, typer.Argument(help="authors'-format file holding {'net_param': state_dict}")],
    patch_size: Annotated[int, typer.Option("--patch-size", help="space-to-depth factor the model was trained with")],
    channels: Annotated[int, typer.Option("--channels", help="image channels (1 for Moving MNIST / KTH)")],
    out: Annotated[Path, typer.Option("--out", help="model directory to write")],
    input_length: Annotated[int, typer.Option("--input-length", help="context frames")] = 10,
    height: Annotated[int | None, typer.Option("--height", help="frame height (inferred with layer norm)")] = None,
    width: Annotated[int | None, typer.Option("--width", help="frame width (inferred with layer norm)")] = None,
) -> None:
    """Convert an authors' checkpoint (architecture read from its tensor shapes) into a model directory."""
    from predrnn.checkpoint import import_official

    model, cfg = import_official(ckpt, out, patch_size=patch_size, channels=channels,
                                 input_length=input_length, img_height=height, img_width=width)
    n = sum(p.numel() for p in model.parameters())
    typer.echo(f"imported {cfg.model.arch} {len(cfg.model.num_hidden)}x{cfg.model.num_hidden[0]} "
               f"k={cfg.model.filter_size} layer_norm={cfg.model.layer_norm} ({n:,} parameters) -> {out}")


def _forecast(model: str, input: Path, horizon: int, truth: Path | None, tracking_uri: str | None,
              batch_size: int, precision: str) -> tuple[ExperimentConfig, np.ndarray, np.ndarray, np.ndarray | None]:
    """The model's config, the forecast, and the context and truth in the data's units (for the GIF)."""
    import numpy as np

    from predrnn.forecaster import is_registry_ref, load_forecaster
    from predrnn.predict import PredictError, check_context, forecast_array
    from predrnn.settings import Settings

    registry = is_registry_ref(model)  # the store is resolved only for a registry URI
    if registry:
        from predrnn.settings import tool_env

        tool_env()  # MLflow's telemetry off; its download bar only on a terminal
    settings = Settings()
    net, cfg = load_forecaster(model, tracking_uri=settings.tracking(tracking_uri) if registry else None,
                               cache_dir=settings.model_cache)
    context = np.load(input, allow_pickle=False)
    pred = forecast_array(net, cfg, context, horizon, batch_size=batch_size, precision=precision)
    true = np.load(truth, allow_pickle=False) if truth is not None else None
    if true is not None and true.shape[:1] + true.shape[2:] != context.shape[:1] + context.shape[2:]:
        raise PredictError(f"--truth has shape {true.shape}; expected (clips, T, H, W, C) matching "
                           f"the context {context.shape}")
    ctx_units = check_context(context, cfg)
    true_units = check_context(true, cfg) if true is not None else None
    return cfg, pred, ctx_units, true_units


def predict_cmd(
    model: Annotated[str, typer.Option(
        "--model", help="model directory, or models:/NAME@ALIAS / models:/NAME/VERSION")],
    input: Annotated[str, typer.Option(
        "--input", help="context clips .npy (clips, T_in, H, W, C) in the data's units (an image model takes "
        "uint8 or floats in [0,1], a field model floats in its units, NaN = no data); or an archive of a "
        "gridded model: a NetCDF file, a folder of one file per scan, a glob or a Zarr store (local or "
        "s3://), whose newest T_in regular frames are the context")],
    horizon: Annotated[int | None, typer.Option("--horizon", help="frames to forecast (an archive: default "
                                                "the model's output length)")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="forecast .npy (clips, N, H, W, C) float32 in the "
                                                "data's units; from an archive a CF-1.10 .nc or .zarr with "
                                                "reference, lead and valid times and the archive's grid")] = None,
    at: Annotated[str | None, typer.Option("--at", help="an archive: the forecast time (ISO 8601, UTC unless "
                                           "an offset is given); the context ends at the newest frame at or "
                                           "before it (default: now)")] = None,
    max_age: Annotated[float, typer.Option("--max-age", help="an archive: how many time steps old the newest "
                                           "frame may be at the forecast time")] = 3,
    gif: Annotated[Path | None, typer.Option("--gif", help="write a context | truth | forecast GIF")] = None,
    truth: Annotated[Path | None, typer.Option("--truth", help="true future .npy to show in the GIF")] = None,
    tracking_uri: Annotated[str | None, typer.Option(
        "--tracking-uri", help="MLflow tracking URI for models:/ URIs")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="clips per forward pass")] = 16,
    precision: PrecisionOpt = "auto",
) -> None:
    """Forecast N frames for every context clip, in the data's units (the model directory records them); or,
    from an archive, one dated nowcast from its newest frames, written as a CF-1.10 file. An archive with a
    gap inside the context, fewer frames than the model's context, a newest frame older than --max-age or
    another grid, variable or units than the model's is refused before the model loads."""
    import numpy as np

    if output is None:
        raise fail("--output is required: a .npy file, or from an archive a .nc or .zarr file")
    if not input.endswith(".npy"):
        _predict_archive(model, input, horizon, output, at, max_age, tracking_uri, precision, gif)
        return
    if horizon is None:
        raise fail("--horizon is required with a .npy context")
    resolved, said = door_precision(precision, "cpu")
    try:
        cfg, pred, ctx_units, true_units = _forecast(model, Path(input), horizon, truth, tracking_uri, batch_size,
                                                     resolved)
    except PredrnnError:
        raise  # the CLI's error handler
    except (ValueError, OSError) as err:
        raise fail(str(err)) from None
    output.parent.mkdir(parents=True, exist_ok=True)
    np.save(output, pred)
    from predrnn.values import field_units

    units = f" in {field_units(cfg.values)}" if field_units(cfg.values) else ""
    typer.echo(said, err=True)
    typer.echo(f"wrote {output} {pred.shape} float32{units}")
    if gif is not None:
        from predrnn.viz import field_colours, forecast_gif

        forecast_gif(gif, ctx_units, pred, true_units, field=field_colours(cfg.values, ctx_units, true_units, pred))
        typer.echo(f"wrote {gif}")


def _predict_archive(model: str, archive: str, horizon: int | None, output: Path, at: str | None, max_age: float,
                     tracking_uri: str | None, precision: str, gif: Path | None) -> None:
    """``predict --input ARCHIVE``: :func:`predrnn.jobs.nowcast.prepare_nowcast`, then run and write."""
    import numpy as np

    from predrnn.forecaster import is_registry_ref
    from predrnn.jobs.nowcast import prepare_nowcast, run_nowcast, write_nowcast
    from predrnn.settings import Settings, tool_env

    if output.suffix.lower() not in (".nc", ".zarr"):
        raise fail(f"--output from an archive is a CF file: name it .nc or .zarr, got {output.name!r}")
    if is_registry_ref(model):
        tool_env()
    settings = Settings()  # read once, here
    spec = prepare_nowcast(model, archive, horizon=horizon, at=at, max_age_steps=max_age, precision=precision,
                           tracking_uri=settings.tracking(tracking_uri) if is_registry_ref(model) else None,
                           cache_dir=settings.model_cache, s3=settings.s3())
    typer.echo(spec.describe(), err=True)
    result = run_nowcast(spec)
    write_nowcast(result, str(output))
    from predrnn.values import field_units

    typer.echo(f"wrote {output} reference time {np.datetime_as_string(spec.reference_time, unit='s')}Z, "
               f"{spec.horizon} lead times, {field_units(spec.cfg.values)}")
    if gif is not None:
        from predrnn.viz import field_colours, forecast_gif

        ctx, leads = spec.context, spec.context.step * np.arange(1, spec.horizon + 1)
        valid = np.concatenate([ctx.times, ctx.reference_time + leads])[None]
        forecast_gif(gif, ctx.frames, result.forecast, None, field=field_colours(spec.cfg.values, ctx.frames,
                                                                                   result.forecast),
                     coords=ctx.coords, grid=ctx.place.get("grid"), valid_times=valid)
        typer.echo(f"wrote {gif}")


def forecast_cmd(
    model: Annotated[str, typer.Option(
        "--model", help="model directory, models:/NAME@ALIAS / models:/NAME/VERSION, or a baseline: "
        "persistence, extrapolation (pysteps optical flow + advection), sprog (pysteps S-PROG)")],
    data: Annotated[str, typer.Option("--data", help="source dataset version ROOT/NAME[@VERSION] (local or s3://)")],
    out: Annotated[str, typer.Option("--out", help="forecast dataset ROOT/NAME (a new version is added)")],
    split: Annotated[str, typer.Option("--split", help="train, val, test or all")] = "test",
    horizon: Annotated[int | None, typer.Option(
        "--horizon", help="frames to forecast (default: the model's output length)")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Ray Data actors, each holding the model")] = 1,
    gpus_per_worker: Annotated[float, typer.Option("--gpus-per-worker", help="GPUs per actor (0: CPU)")] = 0.0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="clips per forward pass")] = 16,
    tracking_uri: Annotated[str | None, typer.Option(
        "--tracking-uri", help="MLflow tracking URI for models:/ URIs")] = None,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="existing Ray cluster HOST:PORT (default: the stack's, else a local one)")] = None,
    precision: PrecisionOpt = "auto",
    context: Annotated[int | None, typer.Option(
        "--context", help="a baseline's context frames (default: the clip's frames before the horizon)")] = None,
) -> None:
    """Forecast every clip of a dataset split on Ray Data into a new forecast dataset version (Zarr, atomic,
    resumable). The clips' first context frames are the input; the last line printed is the version's URI.
    A baseline (--model persistence|extrapolation|sprog, with --horizon) forecasts in this process into a
    forecast dataset that `score` and the exports treat like a model's."""
    from predrnn.forecaster import is_registry_ref
    from predrnn.jobs import prepare_forecast, run_forecast
    from predrnn.settings import Settings, tool_env

    root = tool_env()
    settings = Settings()  # read once, here; everything below takes values
    spec = prepare_forecast(model, data, out, split=split, horizon=horizon, workers=workers,
                            gpus_per_worker=gpus_per_worker, batch_size=batch_size, precision=precision,
                            tracking_uri=settings.tracking(tracking_uri) if is_registry_ref(model) else None,
                            cache_dir=settings.model_cache, ray_address=ray_address or settings.ray_address,
                            ray_temp_dir=str(root / "ray" / "forecast"), s3=settings.s3(), context=context)
    typer.echo(spec.describe())
    result = run_forecast(spec, progress=typer.echo, progress_bars=sys.stderr.isatty())
    if not result["reused"]:
        rate = f" ({result['clips_per_s']} clips/s)" if result["clips_per_s"] else ""
        typer.echo(f"forecast {result['clips']} clips in {result['forecast_s']:.1f} s{rate}"
                   + (f"; {result['resumed']} written by an earlier run" if result["resumed"] else ""))
    typer.echo(result["uri"])
