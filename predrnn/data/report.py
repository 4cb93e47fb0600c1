"""Human summaries of a version: a markdown table and a base64 PNG strip (for flow artifacts)."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import numpy as np

from predrnn.data.preview import strip_png
from predrnn.data.store import SPLIT_CODES, SPLITS, Version, open_version

if TYPE_CHECKING:
    from predrnn.data.store import S3Settings

_OVERLAP_KEYS = ("frames", "unique_frames", "constant_frames", "shared_frames", "frame_check")
_PER_SPLIT_KEYS = ("sizes", "sequences", "sequence_names", *_OVERLAP_KEYS)
_READ_BYTES = 8 << 20  # --check-overlap reads the clips in slices of about this size


def overlap_from_data(v: Version) -> dict[str, Any]:
    """The ingest-time frame overlap record of ``v``, recomputed by reading every stored clip.

    For versions ingested before the record existed. Clips are read in slices of about 8 MiB, so memory
    stays flat apart from 8 bytes per frame of digests.

    Returns:
        the same keys as :func:`predrnn.data.pipeline.frame_overlap` (``frames``, ``unique_frames``,
        ``constant_frames``, ``shared_frames``, ``frame_check``).

    Raises:
        DataError: the data cannot be read as the manifest describes it.
    """
    from predrnn.data.pipeline import frame_digests, frame_overlap

    n, t = v.shape[:2]
    clip_bytes = max(1, int(np.prod(v.shape[1:])) * v.dtype.itemsize)
    step = max(1, min(256, _READ_BYTES // clip_bytes))
    digests = np.zeros((n, t), np.uint64)
    arr = v.array
    for i in range(0, n, step):
        digests[i:i + step] = frame_digests(np.asarray(arr[i:i + step]))
    return frame_overlap(digests, v.split_codes)


def split_summary(v: Version, *, check_overlap: bool = False) -> dict[str, Any]:
    """Per-split counts of a version and the frames two splits share, JSON-able.

    Args:
        v: an open version.
        check_overlap: recompute the frame overlap from the data (:func:`overlap_from_data`) instead of
            taking the record made at ingest; versions made before that record need it.

    Returns:
        ``{"split_method", "split": the other split attributes (seed, fractions, ...), "splits": {split: {"clips",
        "sequences", "frames" (clips x T), "unique_frames", "constant_frames"[, "sequence_names"]}},
        "shared_frames": {"train/test": k, "train/val": k, "val/test": k} or None, "overlap_check":
        "ingest" | "computed" | "not recorded" | "not applicable"}`` (the last: a forecast dataset).
        Counts not recorded (older versions) are None.
    """
    info = dict(v.attrs.get("split", {}))
    t = v.shape[1]
    sizes = info.get("sizes") or {s: int((v.split_codes == SPLIT_CODES[s]).sum()) for s in SPLITS}
    if check_overlap:
        info.update(overlap_from_data(v))
        how = "computed"
    elif isinstance(v.attrs.get("forecast"), dict):
        how = "not applicable"  # forecasts: their source's splits were checked when it was ingested
    else:
        how = "ingest" if "shared_frames" in info else "not recorded"
    splits: dict[str, dict[str, Any]] = {}
    for s in SPLITS:
        row: dict[str, Any] = {"clips": int(sizes.get(s, 0)),
                               "sequences": info.get("sequences", {}).get(s),
                               "frames": int(sizes.get(s, 0)) * t,
                               "unique_frames": info.get("unique_frames", {}).get(s),
                               "constant_frames": info.get("constant_frames", {}).get(s)}
        if "sequence_names" in info:
            row["sequence_names"] = list(info["sequence_names"].get(s, []))
        splits[s] = row
    rest = {k: val for k, val in info.items() if k not in _PER_SPLIT_KEYS}
    return {"split_method": info.get("method"), "split": rest, "splits": splits,
            "shared_frames": info.get("shared_frames"), "frame_check": info.get("frame_check"),
            "overlap_check": how}


def shared_warning(shared: dict[str, int] | None) -> str | None:
    """One ``WARNING: ...`` line naming the split pairs that share frame contents; None when none do."""
    pairs = [(k, int(n)) for k, n in (shared or {}).items() if n]
    if not pairs:
        return None
    parts = [f"{n} in both {k.replace('/', ' and ')}" for k, n in pairs]
    parts[0] = parts[0].replace(" in both", " frame(s) appear in both", 1)
    return ("WARNING: " + ", ".join(parts) + " (identical non-constant frames in two splits: scores on the "
            "held-out split are not independent of training; look for duplicated clips or sequences)")


def version_report(uri: str, seconds: float | None = None, *, clips: int = 4,
                   s3: S3Settings | None = None) -> dict[str, Any]:
    """``{"uri", "markdown", "png_base64"}`` describing a published version (``s3``: the S3 settings of a version
    on S3)."""
    v = open_version(uri, s3)
    a = v.attrs
    st = a.get("stats", {})
    sizes = a.get("split", {}).get("sizes", {})
    rows = [
        ("version", f"`{v.uri}`"),
        ("clips", f"{v.shape[0]}"),
        ("shape (clips, T, H, W, C)", f"{v.shape} {v.dtype}"),
        ("source", f"{a['source']['kind']} {a['source'].get('location') or ''} ({a['source'].get('description', '')})"),
        ("values", f"{a.get('value_kind')} {a.get('value_range')} {a.get('units', '')}"),
        ("stats", ", ".join(f"{k} {st[k]:.4g}" for k in ("mean", "std", "min", "max", "nan_fraction") if k in st)),
        ("split", f"{a.get('split', {}).get('method')}: train {sizes.get('train', 0)}, val {sizes.get('val', 0)}, "
                  f"test {sizes.get('test', 0)}"),
        *_split_rows(split_summary(v)),
        ("content hash", f"`{a.get('content_hash', '')[:32]}...`"),
        ("created", a.get("created", "")),
    ]
    if seconds is not None:
        rows.append(("time", f"{seconds:.2f} s ({v.shape[0] / max(seconds, 1e-9):.0f} clips/s)"))
    png = strip_png(v, clips=clips)
    b64 = base64.b64encode(png).decode()
    md = "\n".join([f"## Dataset {v.name}", "", "| field | value |", "|---|---|",
                    *[f"| {k} | {str(val).replace('|', '/')} |" for k, val in rows], "",
                    "Sample clips (rows) by frame (columns):", "",
                    f"![samples](data:image/png;base64,{b64})"])
    return {"uri": v.uri, "markdown": md, "png_base64": b64}


def _split_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """Markdown rows: one per split (clips, sequences, frames, distinct frames), then the overlap check."""
    rows = []
    for s, r in summary["splits"].items():
        seq = "?" if r["sequences"] is None else r["sequences"]
        uniq = "" if r["unique_frames"] is None else f" ({r['unique_frames']} distinct)"
        rows.append((f"split {s}", f"{r['clips']} clips, {seq} sequences, {r['frames']} frames{uniq}"))
    shared = summary["shared_frames"]
    if summary["overlap_check"] == "not applicable":
        rows.append(("shared frames", "not applicable: forecasts of the source's clips"))
    elif shared is None:
        rows.append(("shared frames", "not recorded at ingest (`predrnn data show URI --check-overlap`)"))
    else:
        warning = shared_warning(shared)
        rows.append(("shared frames", f"**{warning}**" if warning else
                     "none between splits (constant frames not compared)"))
    return rows
