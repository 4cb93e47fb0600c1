"""The ``predrnn`` command line: each command is one call into the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from predrnn.cli_common import fail
from predrnn.errors import PredrnnError

app = typer.Typer(help="PredRNN-V2 spatiotemporal forecasting: data, training, tuning, tracking, serving.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


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
    from predrnn.checkpoint import import_official

    try:
        model, cfg = import_official(ckpt, out, patch_size=patch_size, channels=channels,
                                     input_length=input_length, img_height=height, img_width=width)
    except PredrnnError as err:
        raise fail(str(err)) from None
    n = sum(p.numel() for p in model.parameters())
    typer.echo(f"imported {cfg.model.arch} {len(cfg.model.num_hidden)}x{cfg.model.num_hidden[0]} "
               f"k={cfg.model.filter_size} layer_norm={cfg.model.layer_norm} ({n:,} parameters) -> {out}")


@app.command("predict")
def predict_cmd(
    model: Annotated[str, typer.Option(
        "--model", help="model directory, or models:/NAME@ALIAS / models:/NAME/VERSION")],
    input: Annotated[Path, typer.Option(
        "--input", help="context clips .npy (clips, T_in, H, W, C) in the data's units: an image model takes "
        "uint8 or floats in [0,1], a field model floats in its units (e.g. mm/h; NaN = no data)")],
    horizon: Annotated[int, typer.Option("--horizon", help="frames to forecast")],
    output: Annotated[Path, typer.Option("--output", help="forecast .npy (clips, N, H, W, C) float32 in the "
                                         "data's units (images: [0,1])")],
    gif: Annotated[Path | None, typer.Option("--gif", help="write a context | truth | forecast GIF")] = None,
    truth: Annotated[Path | None, typer.Option("--truth", help="true future .npy to show in the GIF")] = None,
    tracking_uri: Annotated[str | None, typer.Option(
        "--tracking-uri", help="MLflow tracking URI for models:/ URIs")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="clips per forward pass")] = 16,
) -> None:
    """Forecast N frames for every context clip, in the data's units (the model directory records them)."""
    import numpy as np

    from predrnn.predict import PredictError, check_context, forecast_array
    from predrnn.tracking import load_forecaster

    try:
        net, cfg = load_forecaster(model, tracking_uri=tracking_uri)
        context = np.load(input, allow_pickle=False)
        pred = forecast_array(net, cfg, context, horizon, batch_size=batch_size)
        true = np.load(truth, allow_pickle=False) if truth is not None else None
        if true is not None and true.shape[:1] + true.shape[2:] != context.shape[:1] + context.shape[2:]:
            raise PredictError(f"--truth has shape {true.shape}; expected (clips, T, H, W, C) matching "
                               f"the context {context.shape}")
        ctx_units = check_context(context, cfg)
        true_units = check_context(true, cfg) if true is not None else None
    except (PredrnnError, ValueError, OSError) as err:
        raise fail(str(err)) from None
    output.parent.mkdir(parents=True, exist_ok=True)
    np.save(output, pred)
    from predrnn.values import field_units

    units = f" in {field_units(cfg.values)}" if field_units(cfg.values) else ""
    typer.echo(f"wrote {output} {pred.shape} float32{units}")
    if gif is not None:
        from predrnn.viz import field_colours, forecast_gif

        forecast_gif(gif, ctx_units, pred, true_units, field=field_colours(cfg.values, ctx_units, true_units, pred))
        typer.echo(f"wrote {gif}")


def parse_list(text: str | None, kind: type, option: str) -> list | None:
    """``"0.5,2,5"`` -> ``[0.5, 2.0, 5.0]`` (``kind`` float or int); None stays None; raises typer.Exit(2)."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    examples = {"--thresholds": "0.5,2,5", "--pool": "4,16", "--fss-scales": "1,3,9,27"}
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise fail(f"{option} takes a comma-separated list of {'numbers' if kind is float else 'integers'}, "
                   f"e.g. {examples.get(option, '1,2')}; got {text!r}") from None


def check_pools_and_scales(pools: list[int], scales: list[int]) -> None:
    """Pooled-CSI blocks >= 1 and FSS windows odd and >= 1; raises typer.Exit(2) naming the option."""
    if any(k < 1 for k in pools):
        raise fail(f"--pool block sizes must be >= 1 pixel, got {pools}")
    if any(n < 1 or n % 2 == 0 for n in scales):
        raise fail(f"--fss-scales must be odd window sizes >= 1 pixel (centred windows), got {scales}")


def score_labels(text: str | None) -> list[str] | None:
    """The thresholds as the user wrote them (``"0.5"``, ``"2"``), for the JSON keys."""
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


@app.command("score")
def score_cmd(
    forecast: Annotated[Path, typer.Option("--forecast",
                                           help="forecast .npy (clips, N, H, W, C) in the data's units")],
    truth: Annotated[Path, typer.Option("--truth", help="observed .npy, same shape and units (NaN = no data)")],
    thresholds: Annotated[str | None, typer.Option(
        "--thresholds", help="event thresholds in the data's units, e.g. 0.5,2,5 (event: value >= threshold)")] = None,
    pool: Annotated[str, typer.Option("--pool", help="pooled-CSI block sizes in pixels")] = "4,16",
    fss_scales: Annotated[str, typer.Option("--fss-scales", help="FSS window sizes in pixels (odd)")] = "1,3,9,27",
    mask: Annotated[Path | None, typer.Option(
        "--mask", help="valid-pixel mask .npy (nonzero = scored), broadcastable to the forecast, e.g. (H, W, 1)",
    )] = None,
    units: Annotated[str, typer.Option("--units", help="the data's units; without --thresholds, mm/h and VIL "
                                       "get the HKO-7 / SEVIR thresholds")] = "",
    image: Annotated[bool, typer.Option("--image", help="image data in [0, 1]: clip to [0, 1], add PSNR and "
                                        "SSIM (8-bit)")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="clips scored at a time (memory)")] = 16,
) -> None:
    """Score any forecast against the truth per lead time: MSE/MAE per frame, RMSE, CSI/POD/FAR/bias/HSS,
    pooled CSI, FSS and CSI-M (pysteps / SEVIR definitions). The last line is one JSON object."""
    import numpy as np

    from predrnn.config import ValuesConfig
    from predrnn.metrics import MetricAccumulator, scorecard
    from predrnn.verification import default_thresholds

    thr = parse_list(thresholds, float, "--thresholds")
    labels = score_labels(thresholds)
    if thr is None:
        thr = default_thresholds(units)
        labels = None
    pools = parse_list(pool, int, "--pool") or []
    scales = parse_list(fss_scales, int, "--fss-scales") or []
    check_pools_and_scales(pools, scales)
    if batch_size < 1:
        raise fail("--batch-size must be >= 1")
    try:
        f = np.load(forecast, mmap_mode="r", allow_pickle=False)
        t = np.load(truth, mmap_mode="r", allow_pickle=False)
        m = np.load(mask, allow_pickle=False) if mask is not None else None
    except (OSError, ValueError) as err:
        raise fail(f"cannot read the arrays: {err}") from None
    if f.ndim == 4:
        f, t = f[..., None], (t[..., None] if t.ndim == 4 else t)
    if f.ndim != 5 or f.shape != t.shape:
        raise fail(f"--forecast {f.shape} and --truth {t.shape} must both be (clips, N, H, W, C) of one shape")
    for name, a in (("--forecast", f), ("--truth", t)):
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise fail(f"{name} must hold numbers, got dtype {a.dtype}")
    if image and (np.isnan(t).any() or np.isnan(f).any()):
        raise fail("--image data has no missing values: NaN found; score a physical field without --image")
    if m is not None:
        if m.ndim == 2:  # a (H, W) map, e.g. a radar's range: every channel
            m = m[..., None]
        try:
            m = np.broadcast_to(m.astype(bool), f.shape[1:] if m.ndim < 5 else f.shape)
        except ValueError:
            raise fail(f"--mask {m.shape} does not broadcast to the forecast {f.shape}; give (H, W), (H, W, C), "
                       "(N, H, W, C) or (clips, N, H, W, C)") from None
    values = ValuesConfig() if image else ValuesConfig(kind="field", units=units)
    acc = MetricAccumulator(f.shape[1], values=values, thresholds=thr, pools=pools, fss_scales=scales,
                            labels=labels)
    try:
        for i in range(0, f.shape[0], batch_size):
            fi = np.asarray(f[i:i + batch_size], dtype=np.float64 if not image else np.float32)
            ti = np.asarray(t[i:i + batch_size], dtype=np.float64 if not image else np.float32)
            if image and f.dtype == np.uint8:
                fi, ti = np.divide(fi, 255.0), np.divide(ti, 255.0)
            mi = None if m is None else (m[i:i + batch_size] if m.ndim == 5 and m.shape[0] == f.shape[0]
                                         else np.broadcast_to(m, fi.shape))
            acc.update(fi, ti, mi)
    except ValueError as err:
        raise fail(str(err)) from None
    card = scorecard(acc.compute())
    sq = f" ({units})²" if units else ""
    typer.echo(f"scored {f.shape[0]} clips x {f.shape[1]} lead times; MSE per frame{sq} by lead time: "
               + ", ".join("n/a" if v is None else f"{v:.4g}" for v in card["mse"]))
    if not thr:
        typer.echo("no thresholds: CSI/POD/FAR/bias/HSS/FSS left out (give --thresholds, or --units mm/h or VIL "
                   "for their customary ones)")
    typer.echo(json.dumps(card))


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
