"""After training: the test evaluation of the best checkpoint, pictures, the MLflow model and its
registry version; the run's MLflow run ends here."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from predrnn.data.batches import ClipSource, ZarrSource, load_batch
from predrnn.data.store import open_version
from predrnn.evaluation import (
    baseline_plan,
    channel_units,
    evaluate_split,
    evaluation_metrics,
    grid_spacing_km,
    lead_time_plot,
    lead_time_table,
    pictures,
    scorecards,
    spectra_of,
    write_scorecard,
)
from predrnn.train.state import MODEL_DIR, iteration_of
from predrnn.values import score_units

if TYPE_CHECKING:
    from predrnn.data.store import S3Settings


def local_checkpoint(path: str, dest: str | Path, s3: S3Settings | None = None) -> Path:
    """A local copy of checkpoint ``path`` (returned as is when already local; ``s3://`` opened with ``s3``)."""
    if "://" not in path and Path(path).is_dir():
        return Path(path)
    from predrnn.train import storage

    return Path(storage.checkpoint(path, s3).to_directory(str(dest)))


def log_scorecard(tracker: Any, run_id: str, cards: dict[str, dict[str, Any]], split: str) -> None:
    """Every score per lead time as tracker metrics with the lead time as the step."""
    from predrnn.scorecard import lead_time_metrics

    for who, card in cards.items():
        prefix = f"{split}_lead" if who == "model" else f"{split}_{who}_lead"
        for lead, values in lead_time_metrics(card, prefix).items():
            if values:
                tracker.log_metrics(run_id, values, step=lead)


def lead_time_means(cards: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each scorecard's scores as means over the lead times (:func:`predrnn.scorecard.summary_values`),
    keyed by who was scored (``model``, ``persistence``, each baseline)."""
    from predrnn.scorecard import summary_values

    return {who: summary_values(card) for who, card in cards.items()}


def score_means(means: dict[str, dict[str, float]], split: str) -> dict[str, float]:
    """Every score's mean over the lead times (from :func:`lead_time_means`) as run metrics:
    ``test_csi_m``, ``test_fss_2_n9`` ... for the model and ``test_persistence_csi_m`` ... for each
    baseline; what a promotion gate on that score reads (:func:`predrnn.tracking.registry.promote`)."""
    out: dict[str, float] = {}
    for who, values in means.items():
        prefix = split if who == "model" else f"{split}_{who}"
        out.update({f"{prefix}_{k}": float(v) for k, v in values.items()})
    return out


HEADLINE = ("mse", "mae", "csi_m")  # the description's rows, then each CSI threshold


def version_description(means: dict[str, dict[str, float]], *, split: str, dataset: str, units: str,
                        iterations: Any, run_name: str) -> str:
    """A model version's description (markdown): what it was trained on and its headline test scores
    beside each baseline's (``means`` from :func:`lead_time_means`, in the data's units ``units``)."""
    rows = [k for k in HEADLINE if k in means["model"]]
    rows += sorted((k for k in means["model"] if k.startswith("csi_") and k[4:].replace(".", "", 1).isdigit()),
                   key=lambda k: float(k[4:]))
    who = list(means)
    lines = [f"Trained on `{dataset}` ({iterations} iterations, run `{run_name}`); scores on its {split} split, "
             f"the mean over lead times{f', in {units}' if units else ''}.", "",
             "| score | " + " | ".join(who) + " |", "|---|" + "---|" * len(who)]
    lines += [f"| {k} | " + " | ".join(f"{means[w][k]:.4g}" if k in means[w] else "" for w in who) + " |"
              for k in rows]
    return "\n".join(lines)


def finish(result: Any, *, out_dir: str | Path, split: str = "test", register: bool = True,
           source: ClipSource | None = None, s3: S3Settings | None = None,
           on_phase: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Evaluate the best checkpoint on ``split``, write pictures, log everything, register the model.

    Args:
        result: a :class:`predrnn.train.driver.TrainResult`.
        out_dir: where the GIF, PNG grid, plot and metrics JSON are written.
        register: log the model to MLflow and register a new version with alias ``challenger``.
        s3: S3 settings for a checkpoint on ``s3://`` (default the ones the run was trained with).
        on_phase: called with ``"evaluating"`` before the evaluation and ``"registering"`` before the
            model is logged and registered (e.g. a flow's progress report).

    Returns:
        A summary dict (paths, metrics, model URIs, ``iterations``: the last trained iteration,
        ``run_id``).

    The run's MLflow run (if any) ends here: FINISHED after the test metrics (and, with ``register``,
    the model) are logged, FAILED with the error as the tag ``error`` if this raises, KILLED on an
    interrupt.
    """
    tracker = None
    if result.run_id and result.tracking_uri:
        from predrnn.tracking import Tracker

        tracker = Tracker(result.tracking_uri, check=False)
    try:
        summary = _finish(result, tracker, out_dir=out_dir, split=split, register=register, source=source,
                          s3=getattr(result, "s3", None) if s3 is None else s3, on_phase=on_phase or _quiet)
    except Exception as err:
        if tracker is not None:
            tracker.end_run(result.run_id, "FAILED", error=f"final evaluation failed: {type(err).__name__}: {err}")
        raise
    except BaseException:
        if tracker is not None:
            tracker.end_run(result.run_id, "KILLED", error="stopped (signal or interrupt)")
        raise
    if tracker is not None:
        tracker.end_run(result.run_id)
    return summary


def _quiet(phase: str) -> None:
    return None


def _finish(result: Any, tracker: Any, *, out_dir: str | Path, split: str, register: bool,
            source: ClipSource | None, s3: S3Settings | None, on_phase: Callable[[str], None]) -> dict[str, Any]:
    from predrnn.checkpoint import load_model_dir

    on_phase("evaluating")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = source or ZarrSource(result.dataset["uri"], s3 or None)
    tmp = tempfile.mkdtemp(prefix="predrnn-best-")
    try:
        ckpt = local_checkpoint(result.best_checkpoint, tmp, s3)
        model_dir = out / "model"
        if model_dir.exists():
            shutil.rmtree(model_dir)
        shutil.copytree(ckpt / MODEL_DIR, model_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    model, cfg = load_model_dir(model_dir)
    names, with_spectra = baseline_plan(cfg, None, cfg.data.input_length)  # every baseline that applies
    spacing = grid_spacing_km(open_version(result.dataset["uri"], s3).attrs) if with_spectra else None
    torch.set_grad_enabled(False)
    try:
        metrics = evaluate_split(model, cfg, source, split, baselines=names, spectra=with_spectra, spacing=spacing)
        pics = pictures(out, model, cfg, source, split)
    finally:
        torch.set_grad_enabled(True)
    plot = lead_time_plot(out / "lead_time_metrics.png", metrics)
    (out / f"{split}_metrics.json").write_text(json.dumps(metrics, indent=2))
    cards = scorecards(metrics)
    units = score_units(cfg.values)
    card_files = write_scorecard(out, cards, units=units, channel_units=channel_units(cfg),
                                 spectra=spectra_of(metrics))
    card_md = card_files[0]
    (out / "config.json").write_text(cfg.to_json())
    summary: dict[str, Any] = {
        "dataset": result.dataset["uri"], "run_dir": result.run_dir,
        "best_checkpoint": result.best_checkpoint,
        "model_dir": str(model_dir), "gif": str(pics["gif"]), "png": str(pics["png"]), "plot": str(plot),
        f"{split}_mse_per_frame": metrics["model"]["mse_per_frame"],
        "persistence_mse_per_frame": metrics["persistence"]["mse_per_frame"],
        f"{split}_mse": metrics["model"]["mse"], "persistence_mse": metrics["persistence"]["mse"],
        f"{split}_ssim": metrics["model"].get("ssim"), "tracking_uri": result.tracking_uri,
        "run_id": result.run_id, "table": lead_time_table(metrics, units=units, channel_units=channel_units(cfg)),
        "scores": cards,
        "units": units, "scorecard": str(card_md),
        "iterations": iteration_of(result.latest_checkpoint) or (result.last_report or {}).get("iteration"),
    }
    means = lead_time_means(cards)
    if tracker is not None:  # test metrics and pictures belong to the run, registered or not
        flat = evaluation_metrics(metrics, split)
        flat.update({k: v for k, v in score_means(means, split).items() if k not in flat})
        tracker.log_metrics(result.run_id, flat, step=cfg.optim.max_iterations)
        log_scorecard(tracker, result.run_id, cards, split)
        for path in (pics["png"], pics["gif"], plot, out / "config.json", out / f"{split}_metrics.json",
                     *card_files):
            tracker.log_artifact(result.run_id, path, "evaluation")
    if register and tracker is not None:
        on_phase("registering")
        ds = source.open(split, length=cfg.data.total_length, rank=0, world_size=1)
        example = load_batch(ds, [0, 1 % len(ds)])[:, : cfg.data.input_length].numpy()
        dataset = f"{result.dataset.get('name', 'dataset')}@{result.dataset.get('version', '')}"
        # a handful of tags a registry page can show: the rest are the run's metrics and the description
        tags = {"dataset": dataset, f"{split}_mse": f"{flat[f'{split}_mse']:.6g}",
                f"{split}_persistence_mse": f"{flat[f'{split}_persistence_mse']:.6g}"}
        from predrnn.tracking.model import register_forecaster

        description = version_description(means, split=split, dataset=dataset, units=units,
                                          iterations=summary["iterations"], run_name=Path(result.run_dir).name)
        reg = register_forecaster(tracker, result.run_id, model_dir, cfg, example, version_tags=tags,
                                  description=description)
        summary.update(model_uri=reg["model_uri"], model_alias_uri=reg["alias"],
                       logged_model_uri=reg["logged_model_uri"], registered_model=reg["name"],
                       model_version=reg["version"])
    return summary
