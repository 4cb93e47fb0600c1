"""Where training runs live: a local folder or ``s3://bucket/prefix``, through pyarrow's filesystems.

An ``s3://`` location is opened with the project's S3 settings, the same as the dataset store's
(:func:`predrnn.data.store.s3_settings`: ``PREDRNN_S3_ENDPOINT_URL`` for SeaweedFS or MinIO, the
standard ``AWS_*`` variables or the AWS default chain), so a run directory, its checkpoints and its
records are reachable wherever the datasets are. Ray Train receives the same filesystem
(``RunConfig(storage_filesystem=...)``) instead of resolving the URI by itself.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


def _s3(options: dict[str, Any] | None = None) -> Any:
    import pyarrow.fs as pafs

    from predrnn.data.store import check_s3_settings, s3_settings

    cfg = (check_s3_settings(options) or {}) if options is not None else s3_settings()
    kwargs: dict[str, Any] = {"region": cfg.get("region", "us-east-1")}
    endpoint = cfg.get("endpoint")
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs["endpoint_override"] = parsed.netloc + parsed.path.rstrip("/")
        kwargs["scheme"] = parsed.scheme or "https"
    # no keys are passed: the AWS SDK finds them in this process (AWS_* variables, AWS_PROFILE, SSO, roles)
    return pafs.S3FileSystem(**kwargs)


def filesystem(location: str, s3: dict[str, Any] | None = None) -> tuple[Any, str]:
    """``(pyarrow filesystem, path inside it)`` of a local path or a URI; ``s3://`` opened with the S3
    settings ``s3`` (:meth:`predrnn.settings.Settings.s3`, read at the door; None: read now)."""
    import pyarrow.fs as pafs

    if location.startswith("s3://"):
        return _s3(s3), location[len("s3://"):].rstrip("/")
    if "://" in location and not location.startswith("file://"):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), str(Path(location.removeprefix("file://")).absolute())


def scheme_of(location: str) -> str:
    """``"s3://"`` (or another scheme) of a URI; empty for a local path."""
    return location.split("://", 1)[0] + "://" if "://" in location and not location.startswith("file://") else ""


def write_json(location: str, name: str, record: dict[str, Any], s3: dict[str, Any] | None = None) -> None:
    """Write ``record`` as JSON to ``location/name`` (the folder is created if needed)."""
    fs, path = filesystem(location, s3)
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path}/{name}") as fh:
        fh.write(json.dumps(record, indent=2).encode())


def read_json(location: str, name: str, s3: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The JSON record ``location/name``, or None when absent."""
    fs, path = filesystem(location, s3)
    try:
        with fs.open_input_stream(f"{path}/{name}") as fh:
            return dict(json.loads(fh.read()))
    except (FileNotFoundError, OSError):
        return None


def remove(location: str, name: str, s3: dict[str, Any] | None = None) -> None:
    """Delete ``location/name`` if present."""
    fs, path = filesystem(location, s3)
    with contextlib.suppress(FileNotFoundError, OSError):
        fs.delete_file(f"{path}/{name}")


def checkpoint(location: str, s3: dict[str, Any] | None = None) -> Any:
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


def latest_checkpoint(run_dir: str, s3: dict[str, Any] | None = None) -> str | None:
    """The newest ``iter_*`` checkpoint directory of a run (same form as ``run_dir``), or None."""
    fs, path = filesystem(run_dir, s3)
    try:
        found = checkpoint_dirs(fs, path)
    except (FileNotFoundError, OSError):
        return None
    return scheme_of(run_dir) + found[-1][1] if found else None
