"""The ``predrnn`` command line: each command is one call into the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="PredRNN-V2 spatiotemporal forecasting: data, training, tuning, tracking, serving.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@app.command("import-official")
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
    from predrnn.checkpoint import CheckpointError, import_official
    from predrnn.config import ConfigError

    try:
        model, cfg = import_official(ckpt, out, patch_size=patch_size, channels=channels,
                                     input_length=input_length, img_height=height, img_width=width)
    except (CheckpointError, ConfigError) as err:
        raise fail(str(err)) from None
    n = sum(p.numel() for p in model.parameters())
    typer.echo(f"imported {cfg.model.arch} {len(cfg.model.num_hidden)}x{cfg.model.num_hidden[0]} "
               f"k={cfg.model.filter_size} layer_norm={cfg.model.layer_norm} ({n:,} parameters) -> {out}")


@app.command("predict")
def predict_cmd(
    model: Annotated[str, typer.Option(
        "--model", help="model directory, or models:/NAME@ALIAS / models:/NAME/VERSION")],
    input: Annotated[Path, typer.Option(
        "--input", help="context clips .npy (clips, T_in, H, W, C), [0,1] float or uint8")],
    horizon: Annotated[int, typer.Option("--horizon", help="frames to forecast")],
    output: Annotated[Path, typer.Option("--output", help="forecast .npy (clips, N, H, W, C) float32 in [0,1]")],
    gif: Annotated[Path | None, typer.Option("--gif", help="write a context | truth | forecast GIF")] = None,
    truth: Annotated[Path | None, typer.Option("--truth", help="true future .npy to show in the GIF")] = None,
    tracking_uri: Annotated[str | None, typer.Option(
        "--tracking-uri", help="MLflow tracking URI for models:/ URIs")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="clips per forward pass")] = 16,
) -> None:
    """Forecast N frames for every context clip."""
    import numpy as np

    from predrnn.checkpoint import CheckpointError
    from predrnn.predict import PredictError, forecast_array, load_forecaster

    try:
        net, cfg = load_forecaster(model, tracking_uri=tracking_uri)
        context = np.load(input, allow_pickle=False)
        pred = forecast_array(net, cfg, context, horizon, batch_size=batch_size)
        true = np.load(truth, allow_pickle=False) if truth is not None else None
        if true is not None and true.shape[:1] + true.shape[2:] != context.shape[:1] + context.shape[2:]:
            raise PredictError(f"--truth has shape {true.shape}; expected (clips, T, H, W, C) matching "
                               f"the context {context.shape}")
    except (PredictError, CheckpointError, ValueError, OSError) as err:
        raise fail(str(err)) from None
    output.parent.mkdir(parents=True, exist_ok=True)
    np.save(output, pred)
    typer.echo(f"wrote {output} {pred.shape} float32")
    if gif is not None:
        from predrnn.predict import as_unit_float
        from predrnn.viz import forecast_gif

        forecast_gif(gif, as_unit_float(context), pred, as_unit_float(true) if true is not None else None)
        typer.echo(f"wrote {gif}")


@app.command("bench")
def bench_cmd(
    preset: Annotated[str | None, typer.Option(
        "--preset", help="start from a preset instead of the default bench config")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. model.num_hidden=[64,64]")] = None,
    reps: Annotated[int, typer.Option("--reps", help="timed repetitions per measurement")] = 5,
    json_only: Annotated[bool, typer.Option("--json", help="print only the JSON line")] = False,
) -> None:
    """Time a training step and a forecast for our model and an authors'-style eager baseline."""
    from predrnn.bench import run_bench
    from predrnn.config import ConfigError

    try:
        result = run_bench(preset=preset, overrides=set_ or [], reps=reps, verbose=not json_only)
    except ConfigError as err:
        raise fail(str(err)) from None
    typer.echo(json.dumps(result))


# Commands that live in their own modules register themselves here.
def _register_optional() -> None:
    import importlib

    for module in ("predrnn.cli_data", "predrnn.cli_train", "predrnn.cli_ops", "predrnn.cli_tune"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            continue
        mod.register(app)


_register_optional()


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
