"""Prefect flow ``ingest``: inspect -> validate -> write -> verify -> publish, then a report artifact.

Each task calls one function of :mod:`predrnn.data.pipeline` and returns something small. Only the
I/O steps retry, and never on a :class:`~predrnn.data.DataError` (bad input does not heal).

    from flows.ingest import ingest_flow
    uri = ingest_flow(kind="moving-digits", name="mnist", root="/data/datasets", num_clips=1000)
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_image_artifact, create_markdown_artifact
from pydantic import Field

from flows.settings import PipelineSettings
from predrnn.data import DataError, pipeline
from predrnn.data.report import version_report

SourceKind = Literal["thuml-npz", "mnist-seq-npy", "video-folder", "frames-folder", "npy", "netcdf",
                     "moving-digits", "storm-cells"]


def _retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    exc = getattr(state, "data", None)
    if not isinstance(exc, BaseException):
        try:
            state.result()
        except DataError:
            return False
        except BaseException:
            return True
        return False
    return not isinstance(exc, DataError)


_IO = {"retries": 2, "retry_delay_seconds": 2, "retry_condition_fn": _retry_unless_bad_input}


@task(name="inspect", **_IO)
def inspect_task(kind: str, source: str, options: dict[str, Any], s3: dict[str, Any] | None = None) -> dict[str, Any]:
    return pipeline.inspect_source(kind, source or None, s3=s3, **options)


@task(name="find-existing", **_IO)
def existing_task(root: str, name: str, fingerprint: str, s3: dict[str, Any] | None = None) -> str | None:
    return pipeline.find_existing(root, name, fingerprint, s3)


@task(name="validate")
def validate_task(kind: str, source: str, options: dict[str, Any], s3: dict[str, Any] | None = None) -> dict[str, Any]:
    return pipeline.validate_source(kind, source or None, s3=s3, **options)


@task(name="write", **_IO)
def write_task(kind: str, source: str, name: str, root: str, options: dict[str, Any],
               s3: dict[str, Any] | None = None) -> dict[str, Any]:
    return pipeline.write_version(kind, source or None, name, root, s3=s3, **options)


@task(name="verify", **_IO)
def verify_task(staged: dict[str, Any], s3: dict[str, Any] | None = None) -> dict[str, Any]:
    return pipeline.verify_version(staged, s3)


@task(name="publish", **_IO)
def publish_task(staged: dict[str, Any], s3: dict[str, Any] | None = None) -> str:
    return pipeline.publish_version(staged, s3=s3)


@task(name="discard")
def discard_task(staged: dict[str, Any], s3: dict[str, Any] | None = None) -> bool:
    """Best effort: with the store still failing the prefix stays, unreferenced, for ``gc_orphans``."""
    try:
        pipeline.discard_version(staged, s3)
        return True
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        get_run_logger().warning("could not remove staged data %s/%s (%s); gc_orphans removes it later",
                                 staged["root"], staged["key"], first)
        return False


@task(name="report", **_IO)
def report_task(uri: str, seconds: float, name: str, s3: dict[str, Any] | None = None) -> str:
    rep = version_report(uri, seconds, s3=s3)
    key = "ingest-" + re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    create_markdown_artifact(markdown=rep["markdown"], key=key, description=f"ingest of {rep['uri']}")
    create_image_artifact(image_url=f"data:image/png;base64,{rep['png_base64']}", key=key + "-samples",
                          description=f"sample clips of {rep['uri']}")
    return rep["uri"]


@flow(name="ingest", log_prints=True)
def ingest_flow(
    kind: SourceKind,
    name: Annotated[str, Field(min_length=1, max_length=128)],
    root: Annotated[str, Field(min_length=1)],
    source: str = "",
    num_clips: Annotated[int | None, Field(ge=1)] = None,
    frames: Annotated[int | None, Field(ge=1)] = None,
    height: Annotated[int | None, Field(ge=1)] = None,
    width: Annotated[int | None, Field(ge=1)] = None,
    seed: int | None = None,
    window: Annotated[int | None, Field(ge=1)] = None,
    stride: Annotated[int | None, Field(ge=1)] = None,
    resize: str | None = None,
    grayscale: bool | None = None,
    variable: str | None = None,
    val_fraction: Annotated[float | None, Field(ge=0, lt=1)] = None,
    test_fraction: Annotated[float | None, Field(ge=0, lt=1)] = None,
    split_seed: int | None = None,
    split: Literal["auto", "seeded", "source", "kth", "time"] | None = None,
    options: dict[str, Any] | None = None,
) -> str:
    """Ingest a source into a new immutable, verified dataset version and return its URI.

    Args:
        kind: source kind.
        name: dataset name (letters, digits, '.', '_', '-').
        root: destination root, a folder or s3://bucket/prefix.
        source: input file or folder (empty for the generators).
        num_clips: generators, clips to make.
        frames: generators, frames per clip.
        height: generators, frame height.
        width: generators, frame width.
        seed: generators, random seed.
        window: frames per clip, cut inside each source sequence (video, frame folder, array row,
            authors' npz clip, grid time block).
        stride: frames between clip starts (default: window).
        resize: video/frames, N or HxW.
        grayscale: video/frames, greyscale (true) or RGB (false).
        variable: netcdf/zarr grids, the variable to read, or several comma-separated (one channel
            each); other grid options (``time_step``, ``channel_dim``, ``time_dim``) go in ``options``.
        val_fraction: share of sequences (grids: of time steps) for validation.
        test_fraction: share of sequences (grids: of time steps) for test.
        split_seed: seeded split, its seed.
        split: auto (the source's own split if it has one, else seeded), seeded, source, kth or time
            (grids: contiguous time blocks, the only split that applies to them).
        options: any other source option, e.g. {"max_frame_side": 512} or, for grids,
            {"split_gap": 6, "split_blocks": 12}.
    """
    started = time.perf_counter()
    given = {"num_clips": num_clips, "frames": frames, "height": height, "width": width, "seed": seed,
             "window": window, "stride": stride, "resize": resize, "grayscale": grayscale, "variable": variable,
             "val_fraction": val_fraction, "test_fraction": test_fraction, "split_seed": split_seed,
             "split": split}
    opts = {**{k: v for k, v in given.items() if v is not None}, **(options or {})}
    s3 = PipelineSettings().s3()  # where S3 is and where credentials come from (never the keys)
    info = inspect_task(kind, source, opts, s3)
    uri = existing_task(root, name, info["fingerprint"], s3)
    if uri is None:
        validate_task(kind, source, opts, s3)
        staged = write_task(kind, source, name, root, opts, s3)
        try:
            verify_task(staged, s3)
            uri = publish_task(staged, s3)
        except BaseException:
            discard_task(staged, s3)  # retries are spent: nothing of this attempt stays behind
            raise
    else:
        print(f"{name}: same source and options as {uri}; nothing to do")
    report_task(uri, time.perf_counter() - started, name, s3)
    print(f"committed {uri}")
    return uri


if __name__ == "__main__":  # pragma: no cover
    import sys

    print(ingest_flow(kind="moving-digits", name=sys.argv[1] if len(sys.argv) > 1 else "moving-digits",
                      root=sys.argv[2] if len(sys.argv) > 2 else ".state/datasets", num_clips=200))
