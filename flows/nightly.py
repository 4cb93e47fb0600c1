"""Prefect flow ``nightly-retrain``: fresh data if the source changed, a new model, a fair comparison, the gate.

1. **Data.** The source is inspected and its content fingerprint looked up among the published
   versions: an unchanged source reuses its version, a changed one is ingested (``ingest`` sub-flow).
2. **Train.** The run is resolved once (:func:`predrnn.jobs.nightly.prepare_nightly`), checking every
   split it will read (train, val, test, and the separate test version if given) before any worker
   starts; then the ``train`` steps on Ray Train (on the
   stack's Ray head when ``ray_address`` is set), from scratch, or warm-started from the champion
   where the training library offers it.
3. **Evaluate.** The new model and the current champion on the *same* held-out test version.
4. **Gate.** Promote only if the new model beats the champion by ``margin`` on ``metric`` (test MSE
   per frame by default; any scorecard score such as ``csi_m`` or ``fss_2_n9``, its direction known);
   otherwise keep the champion and say why. With no champion yet, the new model must beat the strongest
   baseline of its evaluation (persistence, and extrapolation and S-PROG where they apply) on ``metric``.
   The report carries both models' scorecards. Every decision is a Prefect artifact
   (``nightly-retrain``) and MLflow tags.

Two nightly runs never overlap: the deployment has a concurrency limit of 1 (see ``prefect.yaml``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.evaluate import evaluate_task
from flows.ingest import SourceKind, ingest_flow
from flows.progress import NIGHTLY_PHASES, Phases, TrainingProgress, link_model_version
from flows.promote import champion_task, gate_task
from flows.settings import PipelineSettings
from flows.settle import settle_task
from predrnn.jobs.promote import gate_value
from predrnn.scorecard import lower_is_better, markdown, number
from predrnn.tracking.registry import metric_tag


@task(name="check-source", retries=2, retry_delay_seconds=5)
def check_source_task(kind: str, source: str, name: str, root: str, options: dict[str, Any],
                      s3: dict[str, Any] | None = None) -> dict[str, Any]:
    """The source's content fingerprint and the published version made from it, if any; ``s3``: the flow's
    keyless S3 settings."""
    from predrnn.data import find_existing, inspect_source

    info = inspect_source(kind, source or None, s3=s3, **options)
    return {"fingerprint": info["fingerprint"], "existing": find_existing(root, name, info["fingerprint"], s3),
            "clips": info.get("num_clips") or info.get("clips")}


@task(name="prepare-nightly")
def prepare_task(preset: str, overrides: list[str], dataset: str, workers: int, *, test_dataset: str | None,
                 tracking_uri: str, state_dir: str, ray_address: str | None, run_name: str,
                 init_weights: str | None) -> dict[str, Any]:
    """The retraining resolved once (:func:`predrnn.jobs.nightly.prepare_nightly`): every split the run will
    read (train, val, test, and the separate test version if given) and the store, checked before any worker
    starts. Raises :class:`predrnn.data.DataError` (and the other door errors) naming what is missing.
    Returns the spec's dict (no credential: each process reads its S3 keys itself)."""
    from predrnn.config import load_config
    from predrnn.jobs.nightly import prepare_nightly
    from predrnn.train import configure

    settings = PipelineSettings()  # this task's door: where S3 is (never the keys)
    cfg = configure(load_config(preset, None, overrides), workers=workers)
    return prepare_nightly(cfg, data=dataset, test_dataset=test_dataset, tracking_uri=tracking_uri,
                           state_dir=state_dir, ray_address=ray_address, s3=settings.s3(), run_name=run_name,
                           init_weights=init_weights).to_dict()


@task(name="train-new-model")
def train_task(spec: dict[str, Any], out_dir: str, s3: dict[str, Any],
               phases: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train on Ray Train, evaluate the best checkpoint, register it (alias ``challenger``); each step a
    phase of the flow's progress (``phases``)."""
    from predrnn.train import RunSpec, finish, train

    run = RunSpec.from_dict(spec)
    steps = Phases.from_dict(phases) or Phases.create("nightly", NIGHTLY_PHASES)
    with TrainingProgress(steps, run.cfg.optim.max_iterations, run.tracking_uri) as progress:
        result = train(run, on_start=progress.start)
    summary = finish(result, out_dir=Path(out_dir) / run.run_name, s3=s3, on_phase=steps.enter)
    keep = ("model_uri", "model_version", "registered_model", "run_id", "test_mse", "persistence_mse", "dataset")
    note = f"warm-started from {run.init_weights}" if run.init_weights else "from scratch"
    return {**{k: summary.get(k) for k in keep}, "init": note, "train_s": round(result.wall_s, 1)}


def _report(lines: list[str]) -> None:
    create_markdown_artifact(key="nightly-retrain", markdown="\n".join(lines),
                             description="nightly retraining: data, training, evaluation and promotion decision")


@flow(name="nightly-retrain", log_prints=True)
def nightly_retrain(
    kind: SourceKind = "moving-digits",
    source: str = "",
    dataset_name: Annotated[str, Field(min_length=1, max_length=128)] = "nightly",
    datasets_root: str | None = None,
    source_options: dict[str, Any] | None = None,
    preset: str = "quick",
    overrides: list[str] | None = None,
    workers: Annotated[int, Field(ge=1)] = 1,
    init: Literal["scratch", "champion"] = "scratch",
    test_dataset: str | None = None,
    margin: Annotated[float | None, Field(ge=0, lt=1)] = None,
    model_name: str | None = None,
    tracking_uri: str | None = None,
    ray_address: str | None = None,
    metric: Annotated[str, Field(min_length=2, description="score the gate compares: mse, csi_m, csi_<thr>, "
                                 "fss_<thr>_n<N>, ...")] = "mse",
) -> dict[str, Any]:
    """Retrain on the newest data and promote the new model only if it beats the champion.

    Args:
        kind: source kind (as for ``ingest``).
        source: input file or folder (empty for the generators).
        dataset_name: dataset name for new versions.
        datasets_root: where versions live (default ``$PREDRNN_DATASETS_ROOT``).
        source_options: ingest options, e.g. ``{"num_clips": 200, "seed": 0}``.
        preset: training preset.
        overrides: ``section.field=value`` config overrides.
        workers: Ray Train workers.
        init: ``scratch`` or ``champion`` (warm start from the current champion's weights).
        test_dataset: held-out version both models are tested on (default: the training version's test split).
        margin: relative test-MSE improvement needed to promote (default ``$PREDRNN_PROMOTION_MARGIN``).
        model_name: registered model (default ``$PREDRNN_MODEL_NAME``); set as ``tracking.registered_model``.
        tracking_uri: MLflow store (default ``$MLFLOW_TRACKING_URI``).
        ray_address: Ray cluster to train on (default ``$PREDRNN_RAY_ADDRESS``; none: a local Ray).
        metric: the score the gate compares (its mean over lead times): mse, csi_m, fss_2_n9, ...
    """
    log = get_run_logger()
    settings = PipelineSettings()
    root = datasets_root or settings.datasets_root
    name = model_name or settings.model_name
    uri = settings.tracking(tracking_uri)
    address = ray_address or settings.ray_address
    gate_margin = settings.margin if margin is None else margin
    opts = dict(source_options or {})
    report = ["# nightly-retrain", ""]
    lower_is_better(metric)  # an unknown score fails here, before any data or training work
    phases = Phases.create("nightly", NIGHTLY_PHASES)
    phases.enter("checking the data")

    settle_task(uri)  # MLflow runs (and task runs) a crashed earlier run left running end now
    src = check_source_task(kind, source, dataset_name, root, opts, settings.s3())
    if src["existing"]:
        dataset = src["existing"]
        report.append(f"- **data**: source unchanged (fingerprint `{src['fingerprint'][:12]}`); reused `{dataset}`")
    else:
        dataset = ingest_flow(kind=kind, source=source, name=dataset_name, root=root, options=opts)
        report.append(f"- **data**: source changed (fingerprint `{src['fingerprint'][:12]}`); ingested `{dataset}`")
    log.info("dataset %s", dataset)

    champion = champion_task(name, uri)
    warm = f"models:/{name}/{champion}" if init == "champion" and champion is not None else None
    nightly = prepare_task(preset, [*(overrides or []), f"tracking.registered_model={name}"], dataset, workers,
                           test_dataset=test_dataset, tracking_uri=uri, state_dir=str(settings.state),
                           ray_address=address, run_name=f"nightly-{time.strftime('%Y%m%d-%H%M%S')}",
                           init_weights=warm)
    spec, s3 = nightly["run"], settings.s3()
    trained = train_task(spec, str(settings.state / "runs"), s3, phases.to_dict())
    version = int(trained["model_version"])
    link_model_version(uri, name, version)
    report.append(f"- **training**: {name} v{version} ({trained['init']}, {trained['train_s']} s, "
                  f"MLflow run `{trained['run_id']}`)")

    test_uri = nightly["test_dataset"]["uri"]
    phases.enter("comparing with the champion", "both on the same test version" if champion is not None
                 else "no champion yet: with the baselines")
    new = evaluate_task(f"models:/{name}/{version}", test_uri, "test", 0, uri,
                      cache_dir=str(settings.model_cache), s3=s3)
    new_val = gate_value(new, metric)
    rows = [f"| v{version} (new) | {number(new['mse'])} | {number(new['persistence_mse'])} | {number(new_val)} | "
            f"{new['clips']} |"]
    champ_val, old = None, None
    cards = {f"v{version} (new)": new["scores"]["model"]}
    if champion is not None:
        old = evaluate_task(f"models:/{name}/{champion}", test_uri, "test", 0, uri,
                      cache_dir=str(settings.model_cache), s3=s3)
        champ_val = gate_value(old, metric)
        cards[f"v{champion} (champion)"] = old["scores"]["model"]
        rows.append(f"| v{champion} (champion) | {number(old['mse'])} | {number(old['persistence_mse'])} | "
                    f"{number(champ_val)} | {old['clips']} |")
    cards.update({who: card for who, card in new["scores"].items() if who != "model"})  # every baseline
    units = f" ({new['units']})" if new.get("units") else ""
    report += ["", f"evaluated on the test split of `{new['dataset']}`{units}:", "",
               f"| model | test MSE/frame | persistence | {metric} | clips |", "|---|---|---|---|---|", *rows, "",
               "### scorecard", "", markdown(cards, units=new.get("units", "")), ""]

    phases.enter("promotion gate")
    decision = gate_task(name, version, force=False, margin=gate_margin, tracking_uri=uri, candidate=new,
                         champion=old if champion is not None else None, metric=metric_tag(metric))
    verdict = decision["verdict"]
    report += [f"**decision**: {verdict}. {decision['reason']}.", "", decision["markdown"]]
    _report(report)
    log.info("%s: %s", verdict, decision["reason"])
    phases.done(verdict)
    return {"dataset": dataset, "reused_dataset": bool(src["existing"]), "model_version": version,
            "champion_before": champion, "champion": decision["champion"], "promoted": decision["promoted"],
            "reason": decision["reason"], "new_test_mse": new["mse"], "metric": metric, "new_value": new_val,
            "champion_value": champ_val,
            "init": trained["init"], "test_dataset": new["dataset"]}
