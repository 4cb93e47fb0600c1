"""Human summaries of a version: a markdown table and a base64 PNG strip (for flow artifacts)."""

from __future__ import annotations

import base64
from typing import Any

from predrnn.data.preview import strip_png
from predrnn.data.store import open_version


def version_report(uri: str, seconds: float | None = None, *, clips: int = 4) -> dict[str, Any]:
    """``{"uri", "markdown", "png_base64"}`` describing a published version."""
    v = open_version(uri)
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
