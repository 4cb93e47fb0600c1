"""Where training runs live: a local folder or ``s3://bucket/prefix``, as pyarrow filesystems.

An ``s3://`` location is read and written by the dataset store's S3 client (obstore, through its
fsspec filesystem under pyarrow's ``PyFileSystem``), with the S3 settings the door resolved
(:func:`predrnn.settings.s3_settings`: the endpoint, the region and where credentials come from), so a
run directory, its checkpoints and its records are reachable wherever the datasets are. Ray Train
receives the same filesystem (``RunConfig(storage_filesystem=...)``) instead of resolving the URI by
itself.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from predrnn.data.store import S3Settings


class _BytesWriter:
    """A writable file that hands obstore's writer ``bytes``: its writer takes unsigned-byte buffers only,
    and pyarrow's streams pass their own buffer type."""

    def __init__(self, raw: Any):
        self.raw = raw

    def write(self, data: Any) -> int:
        return int(self.raw.write(bytes(data)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


def _s3(options: S3Settings | None = None) -> Any:
    """A pyarrow filesystem over obstore's S3 client with the keyless settings ``options``; paths are
    ``bucket/key``.

    Raises:
        DataError: this process was forked after obstore started.
        ValueError: the settings carry a key.
    """
    import pyarrow as pa
    import pyarrow.fs as pafs
    from obstore.fsspec import FsspecStore

    from predrnn.data.store import check_obstore_usable, obstore_options

    kwargs = obstore_options(options)
    check_obstore_usable("s3:// run storage")

    class Handler(pafs.FSSpecHandler):
        def open_output_stream(self, path: str, metadata: Any) -> Any:
            return pa.PythonFile(_BytesWriter(self.fs.open(path, mode="wb")), mode="w")

    make: Any = FsspecStore  # skip_instance_cache is fsspec's, outside obstore's typed signature
    return pafs.PyFileSystem(Handler(make("s3", skip_instance_cache=True, **kwargs)))


def filesystem(location: str, s3: S3Settings | None = None) -> tuple[Any, str]:
    """``(pyarrow filesystem, path inside it)`` of a local path or a URI; ``s3://`` opened with the S3
    settings ``s3`` (:func:`predrnn.settings.s3_settings`, read at the door; None: the client's defaults)."""
    import pyarrow.fs as pafs

    if location.startswith("s3://"):
        return _s3(s3), location[len("s3://"):].rstrip("/")
    if "://" in location and not location.startswith("file://"):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), str(Path(location.removeprefix("file://")).absolute())


def scheme_of(location: str) -> str:
    """``"s3://"`` (or another scheme) of a URI; empty for a local path."""
    return location.split("://", 1)[0] + "://" if "://" in location and not location.startswith("file://") else ""


def write_json(location: str, name: str, record: dict[str, Any], s3: S3Settings | None = None) -> None:
    """Write ``record`` as JSON to ``location/name`` (the folder is created if needed)."""
    fs, path = filesystem(location, s3)
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path}/{name}") as fh:
        fh.write(json.dumps(record, indent=2).encode())


def read_json(location: str, name: str, s3: S3Settings | None = None) -> dict[str, Any] | None:
    """The JSON record ``location/name``, or None when absent."""
    fs, path = filesystem(location, s3)
    try:
        with fs.open_input_stream(f"{path}/{name}") as fh:
            return dict(json.loads(fh.read()))
    except (FileNotFoundError, OSError):
        return None


def remove(location: str, name: str, s3: S3Settings | None = None) -> None:
    """Delete ``location/name`` if present."""
    fs, path = filesystem(location, s3)
    with contextlib.suppress(FileNotFoundError, OSError):
        fs.delete_file(f"{path}/{name}")


def checkpoint(location: str, s3: S3Settings | None = None) -> Any:
    """A ``ray.train.Checkpoint`` of the checkpoint directory ``location`` on its filesystem."""
    from ray.train import Checkpoint

    fs, path = filesystem(location, s3)
    return Checkpoint(path, filesystem=fs)


def checkpoint_dirs(fs: Any, path: str) -> list[tuple[tuple[int, int], str]]:
    """``[((iteration, session), path)]`` of the ``iter_*`` directories under ``path`` on ``fs``, oldest
    first. Raises OSError when the folder cannot be listed."""
    import pyarrow.fs as pafs

    from predrnn.train.state import order_of

    infos = fs.get_file_info(pafs.FileSelector(path))
    return sorted((o, i.path) for i in infos if i.type == pafs.FileType.Directory
                  and (o := order_of(i.path)) is not None)


def latest_checkpoint(run_dir: str, s3: S3Settings | None = None) -> str | None:
    """The newest ``iter_*`` checkpoint directory of a run (same form as ``run_dir``), or None."""
    fs, path = filesystem(run_dir, s3)
    try:
        found = checkpoint_dirs(fs, path)
    except (FileNotFoundError, OSError):
        return None
    return scheme_of(run_dir) + found[-1][1] if found else None
