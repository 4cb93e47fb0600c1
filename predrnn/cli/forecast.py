"""``predrnn import-official``, ``predict``, ``forecast``, ``score`` and ``bench``: forecasts and their scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from predrnn.cli.common import PrecisionOpt, check_pools_and_scales, door_precision, fail, parse_list, score_labels
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
        from predrnn.cli.train import tool_env

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
    precision: PrecisionOpt = "auto",
) -> None:
    """Forecast N frames for every context clip, in the data's units (the model directory records them)."""
    import numpy as np

    resolved, said = door_precision(precision, "cpu")
    try:
        cfg, pred, ctx_units, true_units = _forecast(model, input, horizon, truth, tracking_uri, batch_size,
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


def forecast_cmd(
    model: Annotated[str, typer.Option(
        "--model", help="model directory, or models:/NAME@ALIAS / models:/NAME/VERSION")],
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
) -> None:
    """Forecast every clip of a dataset split on Ray Data into a new forecast dataset version (Zarr, atomic,
    resumable). The clips' first context frames are the input; the last line printed is the version's URI."""
    import sys

    from predrnn.batch_forecast import check_job, forecast_dataset
    from predrnn.cli.train import tool_env
    from predrnn.forecaster import is_registry_ref, load_forecaster
    from predrnn.settings import Settings

    if workers < 1 or batch_size < 1 or gpus_per_worker < 0:
        raise fail("--workers and --batch-size must be >= 1, --gpus-per-worker >= 0")
    resolved, said = door_precision(precision, "cuda" if gpus_per_worker > 0 else "cpu")
    root = tool_env()
    settings = Settings()
    s3 = settings.s3()
    registry = is_registry_ref(model)
    uri = settings.tracking(tracking_uri) if registry else None
    from predrnn.tracking.model import pinned_ref

    version = pinned_ref(model, uri) if uri else None  # the job loads and records this one version
    net, cfg = load_forecaster(version or model, tracking_uri=uri, cache_dir=settings.model_cache)
    job = check_job(cfg, data, out, split=split, horizon=horizon, s3=s3)  # before any worker starts
    typer.echo(f"forecasting {job.source_index.size} {split} clips of {job.source_uri}: {job.context} context "
               f"frames -> {job.horizon} lead times, with {version or model} on {workers} worker(s); {said}")
    ref = model if registry else str(Path(model).resolve())  # recorded as given for the registry, else absolute
    result = forecast_dataset(net, cfg, job, model_ref=ref, model_version=version, workers=workers,
                              gpus_per_worker=gpus_per_worker, batch_size=batch_size,
                              ray_address=ray_address or settings.ray_address,
                              ray_temp_dir=str(root / "ray" / "forecast"), s3=s3,
                              progress_bars=sys.stderr.isatty(), progress=typer.echo, precision=resolved)
    if not result["reused"]:
        rate = f" ({result['clips_per_s']} clips/s)" if result["clips_per_s"] else ""
        typer.echo(f"forecast {result['clips']} clips in {result['forecast_s']:.1f} s{rate}"
                   + (f"; {result['resumed']} written by an earlier run" if result["resumed"] else ""))
    typer.echo(result["uri"])


class _ForecastClips:
    """The clips of a forecast dataset version: an array of shape (clips, N, H, W, C) read a slice at a
    time, as :func:`_accumulate` reads it; :meth:`truth` is its source's frames at the same lead times."""

    def __init__(self, uri: str) -> None:
        from predrnn.data import open_version

        self.version = fc = open_version(uri)
        meta = fc.attrs.get("forecast")
        if not isinstance(meta, dict):
            raise fail(f"{fc.uri} is not a forecast dataset (written by `predrnn forecast`); score arrays with "
                       "--forecast F.npy --truth T.npy")
        self.meta: dict[str, Any] = meta
        self.shape, self.dtype, self.ndim = fc.shape, fc.dtype, 5

    def __getitem__(self, sl: slice) -> Any:
        import numpy as np

        return self.version.read(np.arange(self.shape[0])[sl])

    def truth(self) -> _SourceFrames:
        return _SourceFrames(self)


class _SourceFrames:
    """The frames of a forecast dataset's source that it forecast: clip ``source_index[i]``, frames
    context .. context + horizon - 1, in the source's stored dtype, read a slice at a time."""

    def __init__(self, fc: _ForecastClips) -> None:
        import numpy as np
        import zarr

        from predrnn.data import open_version

        meta, v = fc.meta, fc.version
        self.source = open_version(meta["source"])
        group: Any = zarr.open_group(v.backend.zarr_store(v.manifest["path"], read_only=True), mode="r")
        self.index = np.asarray(group["source_index"][:], np.int64)
        self.context, self.horizon = int(meta["context"]), int(meta["horizon"])
        t_src = self.source.shape[1]
        if t_src < self.context + self.horizon:
            raise fail(f"the source {self.source.uri} has clips of {t_src} frames: no truth for lead times "
                       f"beyond {t_src - self.context} of the {self.horizon} forecast")
        self.shape, self.dtype, self.ndim = fc.shape, self.source.dtype, 5

    def __getitem__(self, sl: slice) -> Any:
        return self.source.read(self.index[sl])[:, self.context:self.context + self.horizon]


def _is_array_file(path: str) -> bool:
    return path.endswith(".npy") or Path(path).is_file()


def _read_scored(forecast: str | _ForecastClips, truth: str | None, mask: Path | None,
                 image: bool) -> tuple[Any, Any, Any]:
    """Forecast and truth as (clips, N, H, W, C) arrays (memory-mapped, or an opened forecast dataset and its
    source, read a slice at a time) and the mask broadcast to them (or None); raises typer.Exit(2) naming
    the option that does not fit."""
    import numpy as np

    try:
        if isinstance(forecast, _ForecastClips):
            f: Any = forecast
        elif truth is None:
            raise fail("--truth T.npy is needed with a --forecast array (a forecast dataset brings its source)")
        else:
            f = np.load(forecast, mmap_mode="r", allow_pickle=False)
        if isinstance(f, _ForecastClips):
            t: Any = f.truth()
        elif truth is not None and _is_array_file(truth):
            t = np.load(truth, mmap_mode="r", allow_pickle=False)
        else:
            raise fail(f"--truth {truth!r} is not a .npy file; a forecast dataset is scored against its own "
                       "source (leave --truth out)")
        m = np.load(mask, allow_pickle=False) if mask is not None else None
    except PredrnnError as err:  # the forecast dataset's source cannot be read
        where = forecast.version.uri if isinstance(forecast, _ForecastClips) else forecast
        raise fail(f"cannot read the source of {where}: {err}") from None
    except (OSError, ValueError) as err:
        raise fail(f"cannot read the arrays: {err}") from None
    if isinstance(f, np.ndarray) and f.ndim == 4:
        f, t = f[..., None], (t[..., None] if t.ndim == 4 else t)
    if f.ndim != 5 or tuple(f.shape) != tuple(t.shape):
        raise fail(f"--forecast {tuple(f.shape)} and --truth {tuple(t.shape)} must both be (clips, N, H, W, C) "
                   "of one shape")
    for name, a in (("--forecast", f), ("--truth", t)):
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise fail(f"{name} must hold numbers, got dtype {a.dtype}")
    if image and isinstance(t, np.ndarray) and (np.isnan(t).any() or np.isnan(f).any()):
        raise fail("--image data has no missing values: NaN found; score a physical field without --image")
    return f, t, None if m is None else _broadcast_mask(m, f.shape)


def _broadcast_mask(m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A boolean mask of one clip's shape, or of all clips' when given per clip."""
    import numpy as np

    if m.ndim == 2:  # a (H, W) map, e.g. a radar's range: every channel
        m = m[..., None]
    try:
        return np.broadcast_to(m.astype(bool), shape[1:] if m.ndim < 5 else shape)
    except ValueError:
        raise fail(f"--mask {m.shape} does not broadcast to the forecast {shape}; give (H, W), (H, W, C), "
                   "(N, H, W, C) or (clips, N, H, W, C)") from None


def _accumulate(acc: Any, f: Any, t: Any, m: np.ndarray | None, batch_size: int, image: bool) -> None:
    """Feed the clips to the accumulator ``batch_size`` at a time (images: 8-bit data scaled to [0, 1])."""
    import numpy as np

    try:
        for i in range(0, f.shape[0], batch_size):
            fi = np.asarray(f[i:i + batch_size], dtype=np.float64 if not image else np.float32)
            ti = np.asarray(t[i:i + batch_size], dtype=np.float64 if not image else np.float32)
            if image and f.dtype == np.uint8:  # 8-bit images (either side) to [0, 1]
                fi = np.divide(fi, 255.0)
            if image and t.dtype == np.uint8:
                ti = np.divide(ti, 255.0)
            mi = None if m is None else (m[i:i + batch_size] if m.ndim == 5 and m.shape[0] == f.shape[0]
                                         else np.broadcast_to(m, fi.shape))
            acc.update(fi, ti, mi)
    except ValueError as err:
        raise fail(str(err)) from None


def score_cmd(
    forecast: Annotated[str, typer.Option(
        "--forecast", help="forecast .npy (clips, N, H, W, C) in the data's units, or a forecast dataset "
        "ROOT/NAME@VERSION written by `predrnn forecast` (scored against its source)")],
    truth: Annotated[str | None, typer.Option(
        "--truth", help="observed .npy, same shape and units (NaN = no data); not with a forecast dataset")] = None,
    thresholds: Annotated[str | None, typer.Option(
        "--thresholds", help="event thresholds in the data's units, e.g. 0.5,2,5 (event: value >= threshold)")] = None,
    pool: Annotated[str, typer.Option("--pool", help="pooled-CSI block sizes in pixels")] = "4,16",
    fss_scales: Annotated[str, typer.Option("--fss-scales", help="FSS window sizes in pixels (odd)")] = "1,3,9,27",
    mask: Annotated[Path | None, typer.Option(
        "--mask", help="valid-pixel mask .npy (nonzero = scored), broadcastable to the forecast, e.g. (H, W, 1)",
    )] = None,
    units: Annotated[str | None, typer.Option(
        "--units", help="the data's units; without --thresholds, mm/h and VIL get the HKO-7 / SEVIR thresholds "
        "(a forecast dataset: its own units and thresholds)")] = None,
    image: Annotated[bool, typer.Option("--image", help="image data in [0, 1]: clip to [0, 1], add PSNR and "
                                        "SSIM (8-bit); a forecast dataset of images sets it")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="clips scored at a time (memory)")] = 16,
) -> None:
    """Score any forecast against the truth per lead time: MSE/MAE per frame, RMSE, CSI/POD/FAR/bias/HSS,
    pooled CSI, FSS and CSI-M (pysteps / SEVIR definitions). A forecast dataset is scored against the
    frames of its source that it forecast, in the units and at the thresholds the source records. The last
    line is one JSON object."""
    from predrnn.config import ValuesConfig
    from predrnn.metrics import MetricAccumulator, scorecard
    from predrnn.verification import default_thresholds

    if batch_size < 1:
        raise fail("--batch-size must be >= 1")
    recorded: list[float] | None = None
    scored: str | _ForecastClips = forecast
    if not _is_array_file(forecast):  # a forecast dataset: what its values are is recorded
        from predrnn.values import from_dataset_attrs

        try:
            scored = _ForecastClips(forecast)
        except PredrnnError as err:
            raise fail(f"cannot read {forecast!r}: {err}") from None
        vals = from_dataset_attrs(scored.version.attrs)
        if truth is not None:
            raise fail("a forecast dataset is scored against its own source; leave --truth out (or score arrays: "
                       "--forecast F.npy --truth T.npy)")
        if units is not None and units != vals.units:
            raise fail(f"--units {units!r}: the forecast dataset's values are in {vals.units or 'no units'!r} "
                       "(recorded); leave --units out")
        if image and vals.kind != "image":
            raise fail(f"--image: the forecast dataset holds a field in {vals.units!r}, not images")
        image = vals.kind == "image"
        units = vals.units
        recorded = list(vals.thresholds) or None
    units = units or ""
    thr = parse_list(thresholds, float, "--thresholds")
    labels = score_labels(thresholds)
    if thr is None:
        thr = recorded if recorded is not None else default_thresholds(units)
        labels = None
    pools = parse_list(pool, int, "--pool") or []
    scales = parse_list(fss_scales, int, "--fss-scales") or []
    check_pools_and_scales(pools, scales)
    f, t, m = _read_scored(scored, truth, mask, image)
    values = ValuesConfig() if image else ValuesConfig(kind="field", units=units)
    acc = MetricAccumulator(f.shape[1], values=values, thresholds=thr, pools=pools, fss_scales=scales,
                            labels=labels)
    _accumulate(acc, f, t, m, batch_size, image)
    card = scorecard(acc.compute())
    sq = f" ({units})²" if units else ""
    typer.echo(f"scored {f.shape[0]} clips x {f.shape[1]} lead times; MSE per frame{sq} by lead time: "
               + ", ".join("n/a" if v is None else f"{v:.4g}" for v in card["mse"]))
    if not thr:
        typer.echo("no thresholds: CSI/POD/FAR/bias/HSS/FSS left out (give --thresholds, or --units mm/h or VIL "
                   "for their customary ones)")
    typer.echo(json.dumps(card))


def bench_cmd(
    preset: Annotated[str | None, typer.Option(
        "--preset", help="start from a preset instead of the default bench config")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. model.num_hidden=[64,64]")] = None,
    reps: Annotated[int, typer.Option("--reps", help="timed repetitions per measurement")] = 5,
    json_only: Annotated[bool, typer.Option("--json", help="print only the JSON line")] = False,
    bf16: Annotated[bool, typer.Option("--bf16/--no-bf16", help="also time our model under bf16 autocast (once "
                                       "only where the CPU emulates bf16: many times slower)")] = True,
    log: Annotated[bool, typer.Option("--log/--no-log", help="record the result as a run of the MLflow "
                                      "experiment predrnn-bench")] = False,
    log_json: Annotated[Path | None, typer.Option(
        "--log-json", help="record a result printed elsewhere instead (the last JSON line of a file, e.g. "
        "bench/gpu_bench.py's output on a GPU machine); runs nothing")] = None,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="MLflow store for --log")] = None,
) -> None:
    """Time a training step and a forecast for our model (fp32 and bf16) and an authors'-style eager fp32
    baseline: parameters, GMAC per clip, clips/s, peak memory. The last line is one JSON object."""
    if log_json is not None:
        try:
            lines = [ln for ln in log_json.read_text().splitlines() if ln.startswith("{")]
            result = json.loads(lines[-1])
        except (OSError, IndexError, ValueError) as err:
            raise fail(f"--log-json {log_json}: no JSON result line ({err})") from None
    else:
        from predrnn.perf import run_bench

        result = run_bench(preset=preset, overrides=set_ or [], reps=reps, verbose=not json_only, bf16=bf16)
    if log or log_json is not None:
        from predrnn.cli.train import tool_env
        from predrnn.settings import Settings
        from predrnn.tracking.runs import log_benchmark

        tool_env()
        uri = Settings().tracking(tracking_uri)
        run_id = log_benchmark(result, uri, run_name=f"bench-{result.get('device', 'cpu')}")
        if not json_only:
            typer.echo(f"logged as MLflow run {run_id} (experiment predrnn-bench) in {uri}")
    typer.echo(json.dumps(result))
