"""Evaluation of one model on one split of a dataset version, per lead time, in the data's units; with
its optional MLflow record. ``predrnn evaluate``, the ``evaluate`` flow and the nightly and promotion
flows all run it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from predrnn.data.info import DatasetInfo
from predrnn.data.store import S3Settings, keyless
from predrnn.errors import PredrnnError
from predrnn.jobs.model import (
    JobError,
    ResolvedModel,
    check_baselines,
    check_pools_and_scales,
    job_precision,
    resolve_model,
)


@dataclass(frozen=True)
class EvaluateSpec:
    """One evaluation, resolved once by :func:`prepare_evaluate`.

    Attributes:
        model: the model, pinned and loaded.
        dataset: the dataset version checked against the model (frames, channels, values, clip length).
        split: ``train``, ``val``, ``test`` or ``all``.
        context, horizon: frames given and forecast (the model's training lengths unless asked).
        max_clips: the first N clips only (0: all).
        thresholds: verification thresholds in the data's units; None: the dataset's (images: none).
        labels: the thresholds as the user wrote them (the JSON keys), or None.
        pools, fss_scales: pooled-CSI blocks and FSS windows in pixels; None: the defaults.
        precision: the forecasts' precision (``fp32``/``bf16``), resolved for this machine.
        precision_note: the line saying which precision and why (:func:`predrnn.precision.describe`).
        record: the MLflow store that records the evaluation as a new run; None: not recorded.
        s3: the S3 settings of a dataset on S3 (:func:`predrnn.settings.s3_settings`'s keyless form).
        baselines: the baselines scored beside the model on the same context (:data:`predrnn.baselines.BASELINES`).
        spectra: also the power spectra of every forecaster and the truth per lead time (single-channel fields),
            on a grid ``spacing`` km apart (None: scales in pixels).
    """

    model: ResolvedModel
    dataset: DatasetInfo
    split: str
    context: int
    horizon: int
    max_clips: int = 0
    thresholds: tuple[float, ...] | None = None
    labels: tuple[str, ...] | None = None
    pools: tuple[int, ...] | None = None
    fss_scales: tuple[int, ...] | None = None
    precision: str = "fp32"
    precision_note: str = ""
    record: str | None = None
    s3: S3Settings = field(default_factory=S3Settings)
    baselines: tuple[str, ...] = ("persistence",)
    spectra: bool = False
    spacing: float | None = None


@dataclass(frozen=True)
class EvaluateResult:
    """What :func:`run_evaluate` found.

    Attributes:
        spec: the evaluation.
        metrics: ``{"model": ..., "<baseline>": ...}`` as :func:`predrnn.evaluation.evaluate_split` returns.
        cards: the per-lead-time scorecards of the model and of each baseline (the keys of ``predrnn score``).
        units: the units the scores are in (``(mm/h)²``, ...), empty for images.
        table: the per-lead-time table; ``scorecard``: the scorecard as markdown.
        run_id: the MLflow run that records the evaluation, when recorded.
    """

    spec: EvaluateSpec
    metrics: dict[str, Any] = field(repr=False)
    cards: dict[str, dict[str, Any]] = field(repr=False)
    units: str
    table: str
    scorecard: str
    run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON line ``predrnn evaluate`` prints."""
        s, m, p = self.spec, self.metrics["model"], self.metrics["persistence"]
        out = {"model_ref": s.model.ref, "dataset": s.dataset.uri, "split": s.split, "clips": m["clips"],
               "units": self.units, "precision": s.precision,
               f"{s.split}_mse_per_frame": m["mse_per_frame"], "persistence_mse_per_frame": p["mse_per_frame"],
               f"{s.split}_mse": m["mse"], "persistence_mse": p["mse"],
               "model": self.cards["model"], "persistence": self.cards["persistence"],
               "baselines": {who: card for who, card in self.cards.items() if who != "model"}}
        if self.run_id:
            out["run_id"], out["tracking_uri"] = self.run_id, s.record
        return out

    def summary(self) -> dict[str, Any]:
        """What a flow returns and compares: headline scores, the scorecards, the gate's summary values, the
        table and the markdown scorecard."""
        from predrnn.scorecard import summary_values

        s, m, p = self.spec, self.metrics["model"], self.metrics["persistence"]
        return {"model": s.model.ref, "model_version": s.model.version, "dataset": s.dataset.uri, "split": s.split,
                "clips": m["clips"], "units": self.units, "precision": s.precision, "mse": m["mse"],
                "persistence_mse": p["mse"], "mse_per_frame": m["mse_per_frame"], "ssim": m.get("ssim"),
                "scores": self.cards, "summary": summary_values(self.cards["model"]),
                "persistence_summary": summary_values(self.cards["persistence"]),
                "baseline_summaries": {who: summary_values(card) for who, card in self.cards.items() if who != "model"},
                "table": self.table,
                "scorecard": self.scorecard, **({"run_id": self.run_id} if self.run_id else {})}


def prepare_evaluate(model: str, data: str, *, split: str = "test", max_clips: int = 0,
                     thresholds: list[float] | None = None, labels: list[str] | None = None,
                     pools: list[int] | None = None, fss_scales: list[int] | None = None,
                     context: int | None = None, horizon: int | None = None, precision: str = "auto",
                     tracking_uri: str | None = None, cache_dir: Path | None = None,
                     record: bool = False, s3: S3Settings | None = None,
                     baselines: list[str] | None = None) -> EvaluateSpec:
    """Resolve an evaluation once, checking everything before any clip is forecast.

    Args:
        model: a model directory, a run's checkpoint folder, or a registry reference (:func:`resolve_model`).
        data: the dataset version ``ROOT/NAME@VERSION``.
        split, max_clips, thresholds, labels, pools, fss_scales, context, horizon: as :class:`EvaluateSpec`.
        precision: ``auto``, ``bf16`` or ``fp32``, resolved here for the CPU (:mod:`predrnn.precision`).
        tracking_uri: the MLflow store of registry references, and of the record.
        cache_dir: where registry versions are kept once downloaded.
        record: record the evaluation as a new MLflow run in ``tracking_uri``.
        s3: the door's S3 settings for a dataset on S3 (:func:`predrnn.settings.s3_settings`).
        baselines: the baselines to score beside the model (persistence always among them); None: every one
            that applies to the data (:func:`predrnn.baselines.applicable_baselines`).

    Raises:
        PredrnnError (one line): bad pools or scales, an unknown precision, a model that cannot be loaded, a
            dataset that does not fit the model or lacks the split or the clip length.
    """
    from predrnn.data import validate_dataset
    from predrnn.evaluation import protocol
    if max_clips < 0:
        raise JobError(f"--max-clips must be >= 0, got {max_clips}")
    check_pools_and_scales(list(pools or []), list(fss_scales or []))
    resolved, note = job_precision(precision, "cpu")
    if record and not tracking_uri:
        raise JobError("recording an evaluation needs an MLflow store (--tracking-uri)")
    chosen = resolve_model(model, tracking_uri=tracking_uri, cache_dir=cache_dir)
    try:
        n_in, n_out = protocol(chosen.cfg, context, horizon)
    except ValueError as err:
        raise JobError(str(err)) from None
    info = validate_dataset(chosen.cfg, data, for_model=True, need_length=n_in + n_out, s3=s3)
    names, spectra = _baselines(chosen.cfg, baselines, n_in)
    check_baselines(names, info.uri, split, n_in, n_out, chosen.cfg.values, s3)
    spacing = None
    if spectra:
        from predrnn.data import open_version
        from predrnn.evaluation import grid_spacing_km

        spacing = grid_spacing_km(open_version(info.uri, s3).attrs)
    return EvaluateSpec(model=chosen, dataset=info, split=split, context=n_in, horizon=n_out, max_clips=max_clips,
                        thresholds=None if thresholds is None else tuple(thresholds),
                        labels=None if labels is None else tuple(labels),
                        pools=None if pools is None else tuple(pools),
                        fss_scales=None if fss_scales is None else tuple(fss_scales),
                        precision=resolved, precision_note=note,
                        record=tracking_uri if record else None, s3=keyless(s3), baselines=names,
                        spectra=spectra, spacing=spacing)


def _baselines(cfg: Any, asked: list[str] | None, context: int) -> tuple[tuple[str, ...], bool]:
    """:func:`predrnn.evaluation.baseline_plan`, its refusal as a one-line JobError."""
    from predrnn.evaluation import baseline_plan

    try:
        return baseline_plan(cfg, asked, context)
    except ValueError as err:
        raise JobError(str(err)) from None


def run_evaluate(spec: EvaluateSpec) -> EvaluateResult:
    """Forecast and score every clip of the split (model and persistence), then record it if asked.

    Raises:
        PredrnnError: the split is empty or cannot be read; the store refuses the record.
    """
    from predrnn.data.batches import ZarrSource
    from predrnn.evaluation import channel_units, evaluate_split, lead_time_table, scorecards
    from predrnn.scorecard import markdown
    from predrnn.values import score_units

    cfg = spec.model.cfg
    try:
        metrics = evaluate_split(spec.model.net, cfg, ZarrSource(spec.dataset.uri, spec.s3 or None), spec.split,
                                 max_clips=spec.max_clips, thresholds=spec.thresholds, pools=spec.pools,
                                 fss_scales=spec.fss_scales, labels=spec.labels, context=spec.context,
                                 horizon=spec.horizon, precision=spec.precision, baselines=spec.baselines,
                                 spectra=spec.spectra, spacing=spec.spacing)
    except PredrnnError:
        raise
    except ValueError as err:  # e.g. an empty split
        raise JobError(str(err)) from None
    units = score_units(cfg.values)
    cards = scorecards(metrics)
    per_channel = channel_units(cfg)
    result = EvaluateResult(spec=spec, metrics=metrics, cards=cards, units=units,
                            table=lead_time_table(metrics, units=units, channel_units=per_channel),
                            scorecard=markdown(cards, units=units, channel_units=per_channel))
    if spec.record:
        from dataclasses import replace

        result = replace(result, run_id=_record(result))
    return result


def _record(result: EvaluateResult) -> str:
    """The evaluation as a new MLflow run: the model and dataset as tags and input, the precision as a param,
    the metrics per lead time, the scorecards as artifacts; returns its run id."""
    import tempfile

    from predrnn.evaluation import evaluation_metrics, spectra_of, write_scorecard
    from predrnn.tracking import Tracker
    from predrnn.train.finalize import log_scorecard

    spec = result.spec
    tracker = Tracker(spec.record)
    run_id = tracker.open_run(spec.model.cfg.tracking.experiment, run_name=f"evaluate-{spec.split}",
                              tags={"model": spec.model.ref, "dataset.uri": spec.dataset.uri,
                                    **({"model.version": spec.model.version} if spec.model.version else {})})
    tracker.log_dataset(run_id, spec.dataset.to_dict(), context=spec.split)
    tracker.log_params(run_id, {"precision": spec.precision})
    tracker.log_metrics(run_id, evaluation_metrics(result.metrics, spec.split))
    log_scorecard(tracker, run_id, result.cards, spec.split)
    with tempfile.TemporaryDirectory() as tmp:
        for path in write_scorecard(tmp, result.cards, units=result.units, spectra=spectra_of(result.metrics)):
            tracker.log_artifact(run_id, path, "evaluation")
    tracker.end_run(run_id)
    return run_id
