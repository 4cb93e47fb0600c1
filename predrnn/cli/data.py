"""``predrnn data ls|show|export``: each one call into :mod:`predrnn.data` (``ingest`` is :mod:`.ingest`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from predrnn.cli.common import fail

if TYPE_CHECKING:
    from predrnn.data import Version


def ls_cmd(root: Annotated[str, typer.Argument(help="a root folder or s3://bucket/prefix")]) -> None:
    """List datasets and their versions (newest last; * marks latest)."""
    from predrnn.data import list_datasets
    from predrnn.settings import s3_settings

    rows = list_datasets(root, s3_settings())
    if not rows:
        typer.echo(f"no datasets under {root}")
        return
    for r in rows:
        sizes = "/".join(str(r["splits"].get(s, 0)) for s in ("train", "val", "test"))
        typer.echo(f"{'*' if r['latest'] else ' '} {r['uri']}  {r['created'][:19]}  "
                   f"{'x'.join(str(s) for s in r['shape'])} {r['dtype']}  train/val/test {sizes}")


def _model_view(attrs: dict[str, Any]) -> str:
    """How a model trains on these values: the transform, valid range and default thresholds."""
    from predrnn.values import describe, from_dataset_attrs

    v = from_dataset_attrs(attrs)
    if v.channels:
        return "; ".join(f"{ch.name}: (x - {ch.mean:.4g}) / {ch.std:.4g}" for ch in v.channels) + \
            f" (training split, each channel on its own), NaN -> mean; {describe(v)}"
    if v.kind != "field":
        return "intensities in [0, 1] (uint8 / 255)" + (f"; thresholds {v.thresholds}" if v.thresholds else "")
    thr = f"; thresholds {v.thresholds}" if v.thresholds else "; no default thresholds"
    return f"(x - {v.mean:.4g}) / {v.std:.4g} (training split), NaN -> mean; {describe(v)}{thr}"


def _names(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)})" if len(names) > limit else "")


def _split_lines(summary: dict[str, Any]) -> list[str]:
    """The per-split table, the overlap line and (when splits share frames) one WARNING line."""
    from predrnn.data.report import shared_warning

    def cell(x: Any) -> str:
        return "-" if x is None else str(x)

    pad = " " * 12
    lines = [f"{pad}{'split':<6}{'clips':>9}{'sequences':>11}{'frames':>10}{'unique frames':>15}"]
    for s, r in summary["splits"].items():
        names = f"  {_names(r['sequence_names'])}" if r.get("sequence_names") else ""
        lines.append(f"{pad}{s:<6}{r['clips']:>9}{cell(r['sequences']):>11}{r['frames']:>10}"
                     f"{cell(r['unique_frames']):>15}{names}")
    shared = summary["shared_frames"]
    if summary["overlap_check"] == "not applicable":
        lines.append("overlap:    not applicable (forecasts of the source's clips, in its splits)")
        return lines
    if shared is None:
        lines.append("overlap:    not recorded at ingest (a version made before the check); --check-overlap "
                     "computes it from the data")
        return lines
    pairs = ", ".join(f"{k} {n}" for k, n in shared.items())
    where = "computed from the data" if summary["overlap_check"] == "computed" else "recorded at ingest"
    lines.append(f"overlap:    distinct frames shared by two splits: {pairs} ({where}; constant frames not "
                 "compared)")
    warning = shared_warning(shared)
    if warning:
        lines.append(warning)
    return lines


def _show_lines(v: Version, summary: dict[str, Any]) -> list[str]:
    """The human-readable summary of a version, one field a line."""
    a = v.attrs
    return [
        f"uri:        {v.uri}",
        f"shape:      {v.shape} (clips, T, H, W, C)  dtype {v.dtype}",
        f"created:    {a.get('created', '')}",
        f"source:     {a['source']['kind']} {a['source'].get('location', '')} - "
        f"{a['source'].get('description', '')}",
        *_value_lines(a),
        f"model sees: {_model_view(a)}",
        f"split:      {a['split'].get('method')} {a['split'].get('sizes')}",
        *grid_lines(a),
        *_forecast_lines(a),
        *_split_lines(summary),
        f"content:    sha256 {a.get('content_hash', '')}",
    ]


def _value_lines(a: dict[str, Any]) -> list[str]:
    """The ``values:`` and ``stats:`` lines: per variable when the version has several."""
    per = a.get("channel_stats")
    if not per:
        return [f"values:     {a.get('value_kind')} range {a.get('value_range')} {a.get('units', '')}",
                "stats:      " + ", ".join(f"{k} {val:.4g}" for k, val in a.get("stats", {}).items())]
    out = [f"values:     {a.get('value_kind')}, {len(per)} variables (one channel each)"]
    for c in per:
        out.append(f"  {c['name']}: range [{c['min']:.4g}, {c['max']:.4g}] {c['units']}; mean {c['mean']:.4g}, "
                   f"std {c['std']:.4g}, nan_fraction {c['nan_fraction']:.4g}")
    return out


def grid_lines(a: dict[str, Any]) -> list[str]:
    """Time, place and variables of a gridded version (``time:``, ``grid:``, ``variables:`` lines); nothing
    for other versions."""
    out = []
    t = a.get("time")
    if isinstance(t, dict):
        if t.get("coordinate") is None:
            out.append(f"time:       {t.get('note', 'no time coordinate')}")
        else:
            gaps = t.get("gaps") or []
            n_gaps = int(t.get("gap_count", len(gaps)))
            shown = ", ".join(f"{g.get('missing') or g.get('jump')} missing after {g['after']}" for g in gaps[:4])
            gap_text = (f"{n_gaps} gap{'s' if n_gaps != 1 else ''}: {shown}{', ...' if n_gaps > 4 else ''}"
                        if n_gaps else "no gaps")
            units = f" {t['units']}" if t.get("units") else ""
            out.append(f"time:       {t['first']} .. {t['last']}{units}, {t['steps']} steps every {t['step']}"
                       f"{' (given)' if t.get('step_given') else ''}; {gap_text}; "
                       f"{t.get('steps_in_no_window', 0)} steps could not hold a window")
            if t.get("reordered"):
                out.append("            the source's frames were not in time order: sorted by their time values")
    g = a.get("grid")
    if isinstance(g, dict):
        def axis(d: dict[str, Any]) -> str:
            what = " ".join(str(d[k]) for k in ("standard_name", "units") if d.get(k))
            span = (f" {d['first']:g}..{d['last']:g}" if d.get("first") is not None else "")
            return f"{d['dim']}{' (' + what + ')' if what else ''}{span}"

        ll = g.get("latlon")
        gm = g.get("grid_mapping")
        out.append(f"grid:       y {axis(g['y'])}; x {axis(g['x'])}"
                   f"{'; 2-D ' + ll['lat'] + '/' + ll['lon'] if ll else ''}"
                   f"{'; grid mapping ' + str(gm.get('grid_mapping_name', gm['name'])) if gm else ''}")
    chans = a.get("channels")
    if isinstance(chans, list) and chans:
        def chan(c: dict[str, Any]) -> str:
            bits = [str(c[k]) for k in ("standard_name", "units") if c.get(k)]
            return f"{c['name']}{' (' + ', '.join(bits) + ')' if bits else ''}"

        out.append(f"variables:  {'; '.join(chan(c) for c in chans[:8])}"
                   f"{f' ... ({len(chans)})' if len(chans) > 8 else ''}")
    return out


def _forecast_lines(a: dict[str, Any]) -> list[str]:
    """What made a forecast dataset (model, weights, source, lead times); nothing for other versions."""
    f = a.get("forecast")
    if not isinstance(f, dict):
        return []
    made = (f"the {f['baseline']} baseline" if f.get("baseline") else
            f"{f.get('model_version') or f.get('model')} (weights sha256 {str(f.get('weights_sha256', ''))[:16]}...)")
    return [f"forecast:   {made} on {f.get('source')} ({f.get('split')}): "
            f"{f.get('context')} context frames -> lead times 1..{f.get('horizon')}"
            + (f", precision {f['precision']}" if f.get("precision") else "")]


def _show_record(v: Version, summary: dict[str, Any], sample: Path | None) -> dict[str, Any]:
    """The summary of a version as one JSON object (``data show --json``)."""
    a = v.attrs
    return {"uri": v.uri, "name": v.name, "version": v.version, "shape": list(v.shape),
            "dtype": v.dtype.name, "created": a.get("created", ""), "source": a.get("source", {}),
            "value_kind": a.get("value_kind"), "value_range": a.get("value_range"),
            "units": a.get("units", ""), "values": a.get("values"), "stats": a.get("stats", {}),
            "channel_stats": a.get("channel_stats"),
            "model_sees": _model_view(a), **summary, "forecast": a.get("forecast"),
            "time": a.get("time"), "grid": a.get("grid"), "channels": a.get("channels"),
            "content_hash": a.get("content_hash", ""),
            "sample": None if sample is None else str(sample)}


def _write_sample(v: Version, png: Path | None, clips: int) -> Path:
    """Write the PNG strip of sample clips (default ``NAME@VERSION.png``); return its path."""
    from predrnn.data.preview import strip_png

    out = png or Path(f"{v.name}@{v.version}.png")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(strip_png(v, clips=clips))
    except OSError as err:
        raise fail(f"cannot write {out}: {err}") from None
    return out


def show_cmd(
    uri: Annotated[str, typer.Argument(help="ROOT/NAME[@VERSION|@latest]")],
    png: Annotated[Path | None, typer.Option("--png", help="sample strip to write (default NAME@VERSION.png; "
                                             "with --json only when given)")] = None,
    clips: Annotated[int, typer.Option("--clips", help="clips in the sample strip")] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object (nothing else on stdout)")] = False,
    check_overlap: Annotated[bool, typer.Option("--check-overlap", help="read every clip to count the frames "
                                                "shared between splits (for versions made before that "
                                                "check was recorded at ingest)")] = False,
) -> None:
    """Print a version's summary, its splits (clips, sequences, frames) and frames shared between splits;
    write a PNG strip of sample clips."""
    from predrnn.data import open_version
    from predrnn.data.report import split_summary
    from predrnn.settings import s3_settings

    try:
        v = open_version(uri, s3_settings())
        summary = split_summary(v, check_overlap=check_overlap)
        lines = _show_lines(v, summary)
    except OSError as err:
        raise fail(f"cannot read {uri}: {err}") from None
    out = _write_sample(v, png, clips) if png is not None or not as_json else None
    if as_json:
        typer.echo(json.dumps(_show_record(v, summary, out), default=str))
        return
    typer.echo("\n".join(lines))
    typer.echo(f"sample:     {out}")


def export_cmd(
    uri: Annotated[str, typer.Argument(help="ROOT/NAME[@VERSION|@latest]")],
    out: Annotated[Path, typer.Option("--out", help="the file to write: .npy, .nc (NetCDF-4) or .zarr")],
    split: Annotated[str, typer.Option("--split", help="all, train, val or test")] = "all",
    fmt: Annotated[str | None, typer.Option(
        "--format", help="npy (one array), netcdf or zarr (CF-1.10 with coordinates, valid times and units); "
        "default: from the suffix of --out")] = None,
    truth: Annotated[bool, typer.Option("--truth", help="netcdf/zarr of a forecast dataset: add the observed "
                                        "frames at the same valid times (<variable>_observed)")] = False,
) -> None:
    """Write the clips of a split: as one (clips, T, H, W, C) array in stored order (npy), or as a CF-1.10
    NetCDF file or Zarr store with the grid's coordinates, the valid time of every frame and each variable's
    units (a forecast dataset: dimensions reference_time, lead_time, y, x and the model's attributes).
    Streamed, not in RAM; written aside and moved into place last."""
    from predrnn.data import open_version
    from predrnn.settings import s3_settings

    suffixes = {".npy": "npy", ".nc": "netcdf", ".nc4": "netcdf", ".netcdf": "netcdf", ".zarr": "zarr"}
    chosen = fmt or suffixes.get(out.suffix.lower())
    if chosen not in ("npy", "netcdf", "zarr"):
        raise fail(f"--format must be npy, netcdf or zarr, got {fmt!r}" if fmt else
                   f"cannot tell the format from {out.name!r}: name it .npy, .nc or .zarr, or pass --format")
    if truth and chosen == "npy":
        raise fail("--truth needs --format netcdf or zarr (an .npy file holds one array)")
    s3 = s3_settings()
    if chosen != "npy":
        from predrnn.data.cf import export_version

        try:
            done = export_version(uri, out, chosen, split=split, truth=truth, s3=s3)  # type: ignore[arg-type]
        except OSError as err:
            raise fail(f"cannot write {out}: {err}") from None
        typer.echo(f"wrote {done['out']} ({done['clips']} clips along {done['dims']}; variables "
                   f"{', '.join(done['variables'])}; {chosen}, CF-1.10)")
        return
    import numpy as np

    try:
        v = open_version(uri, s3)
        idx = v.split_indices(split)
        if idx.size == 0:
            raise fail(f"{v.uri} has no {split!r} clips (splits: "
                       f"{', '.join(f'{k} {n}' for k, n in v.attrs.get('split', {}).get('sizes', {}).items())})")
        out.parent.mkdir(parents=True, exist_ok=True)
        arr = np.lib.format.open_memmap(out, mode="w+", dtype=v.dtype, shape=(idx.size, *v.shape[1:]))
        step = 64
        for i in range(0, idx.size, step):
            arr[i:i + step] = v.read(idx[i:i + step])
        arr.flush()
        del arr
    except OSError as err:
        raise fail(f"cannot write {out}: {err}") from None
    typer.echo(f"wrote {out} ({idx.size}, {', '.join(str(s) for s in v.shape[1:])}) {v.dtype}")
