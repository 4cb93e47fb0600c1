"""``predrnn score``: any forecast against the truth, per lead time, in the data's units (:mod:`predrnn.jobs.score`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from predrnn.cli.common import parse_list, score_labels


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
    from predrnn.jobs import prepare_score, run_score
    from predrnn.settings import s3_settings

    spec = prepare_score(forecast, truth, mask=mask, units=units, image=image,
                         thresholds=parse_list(thresholds, float, "--thresholds"), labels=score_labels(thresholds),
                         pools=parse_list(pool, int, "--pool") or [], fss_scales=parse_list(fss_scales, int,
                                                                                            "--fss-scales") or [],
                         batch_size=batch_size, s3=s3_settings())
    result = run_score(spec)
    card = result.card
    sq = f" ({spec.units})²" if spec.units else ""
    typer.echo(f"scored {result.clips} clips x {result.lead_times} lead times; MSE per frame{sq} by lead time: "
               + ", ".join("n/a" if v is None else f"{v:.4g}" for v in card["mse"]))
    if not spec.thresholds:
        typer.echo("no thresholds: CSI/POD/FAR/bias/HSS/FSS left out (give --thresholds, or --units mm/h or VIL "
                   "for their customary ones)")
    typer.echo(json.dumps(card))
