"""``predrnn ingest``: a source into a new dataset version (one call into :func:`predrnn.data.ingest`)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from predrnn.cli.common import fail


def _parse_option(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise fail(f"--option {item!r} must look like key=value")
    key, raw = item.split("=", 1)
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().replace("-", "_"), value


def _echo_progress(n: int) -> None:
    typer.echo(f"  {n} clips written", err=True)


def ingest_cmd(
    kind: Annotated[str, typer.Option("--kind", help="thuml-npz, mnist-seq-npy, video-folder, frames-folder, "
                                      "npy, netcdf, moving-digits or storm-cells")],
    name: Annotated[str, typer.Option("--name", help="dataset name (letters, digits, '.', '_', '-')")],
    root: Annotated[str, typer.Option("--root", help="destination root: a folder or s3://bucket/prefix")],
    source: Annotated[str, typer.Option("--source", help="input file or folder, or s3://bucket/key "
                                                 "(an object or a prefix); empty for generators")] = "",
    num_clips: Annotated[int | None, typer.Option("--num-clips", help="generators: clips to make")] = None,
    frames: Annotated[int | None, typer.Option("--frames", help="generators: frames per clip")] = None,
    height: Annotated[int | None, typer.Option("--height", help="generators: frame height")] = None,
    width: Annotated[int | None, typer.Option("--width", help="generators: frame width")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="generators: random seed")] = None,
    window: Annotated[int | None, typer.Option("--window", help="frames per clip, cut from each "
                                               "sequence (video, frame folder, array row, npz clip, grid)")] = None,
    stride: Annotated[int | None, typer.Option("--stride", help="frames between window starts "
                                               "(default: --window)")] = None,
    resize: Annotated[str | None, typer.Option("--resize", help="video/frames: N or HxW")] = None,
    grayscale: Annotated[bool | None, typer.Option("--grayscale/--rgb", help="video/frames: colour mode")] = None,
    variable: Annotated[str | None, typer.Option("--variable", help="netcdf/zarr grids: variable name, or several "
                                                     "(t2m,u10,v10: one channel each)")] = None,
    layout: Annotated[str | None, typer.Option("--layout", help="npy: axis order NTHWC (default), NTCHW "
                                               "(channels first) or NTHW")] = None,
    val_fraction: Annotated[float | None, typer.Option("--val-fraction", help="validation share of the "
                                                     "sequences (grids: of the time steps)")] = None,
    test_fraction: Annotated[float | None, typer.Option("--test-fraction", help="test share of the "
                                                      "sequences (grids: of the time steps)")] = None,
    split_seed: Annotated[int | None, typer.Option("--split-seed", help="seeded split: seed")] = None,
    split: Annotated[str | None, typer.Option("--split", help="auto, seeded, source, kth or time "
                                              "(grids; -o split_gap=N -o split_blocks=K)")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="any other source option, key=value "
                                                     "(value parsed as JSON), e.g. -o max_frame_side=512")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress on stderr")] = False,
) -> None:
    """Ingest a source into a new immutable dataset version; the last line printed is its URI."""
    from predrnn.data import ingest
    from predrnn.settings import s3_settings

    given = {"num_clips": num_clips, "frames": frames, "height": height, "width": width, "seed": seed,
             "window": window, "stride": stride, "resize": resize, "grayscale": grayscale, "variable": variable,
             "layout": layout,
             "val_fraction": val_fraction, "test_fraction": test_fraction, "split_seed": split_seed,
             "split": split}
    options = {k: v for k, v in given.items() if v is not None}
    options.update(dict(_parse_option(o) for o in option or []))
    typer.echo(ingest(kind, source or None, name, root, progress=None if quiet else _echo_progress,
                      s3=s3_settings(), **options))
