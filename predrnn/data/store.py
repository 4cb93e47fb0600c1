"""Versioned Zarr stores on a local folder or on S3, and read-only access to published versions.

Layout under a root URI (a local folder or ``s3://bucket/prefix``)::

    ROOT/NAME/data/<token>/           a Zarr v3 group: ``clips`` (N, T, H, W, C) and ``split`` (N,)
    ROOT/NAME/manifests/<version>.json   written last; a version exists iff its manifest exists
    ROOT/NAME/previews/<version>.png     a strip of sample clips (optional)

Data is written under a fresh ``data/<token>`` prefix that nothing refers to until the manifest is
published, so a crash mid-write leaves nothing visible and never touches earlier versions. A
version id is derived from the content hash, so the same content always gets the same id.

A root on S3 is opened with the S3 settings a door resolved (:meth:`predrnn.settings.Settings.s3`:
the endpoint, the region and where credentials come from, never a key) and read and written with
obstore, the one S3 client of the store, the sources and run storage; the keys are found by the
client in its own process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np

from predrnn.data.errors import DataError

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_name(name: str) -> str:
    """Return ``name`` if it is a safe dataset name, else raise a DataError saying why."""
    if not isinstance(name, str) or not name:
        raise DataError("dataset name is empty")
    if "/" in name or "\\" in name or ".." in name:
        raise DataError(f"dataset name {name!r} must not contain path separators or '..'")
    if not _NAME_RE.match(name):
        raise DataError(f"dataset name {name!r} must start with a letter or digit and use only "
                        "letters, digits, '.', '_' and '-' (at most 128 characters)")
    return name


# ---------------------------------------------------------------------------------------------
# Backends: the few object operations the store needs, on a local folder or an S3 prefix.


class Backend:
    """Key/value access below a root; keys are '/'-separated and relative to the root."""

    root_uri: str

    def put_bytes(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def get_bytes(self, key: str) -> bytes:
        """Raises FileNotFoundError when the key does not exist."""
        raise NotImplementedError

    def list_keys(self, prefix: str) -> list[str]:
        """All keys below ``prefix`` (recursive), relative to the root."""
        raise NotImplementedError

    def list_dirs(self, prefix: str) -> list[str]:
        """Names of the immediate sub-prefixes of ``prefix``."""
        raise NotImplementedError

    def delete_prefix(self, prefix: str) -> None:
        raise NotImplementedError

    def zarr_store(self, key: str, *, read_only: bool) -> Any:
        raise NotImplementedError

    def check_writable(self, name: str) -> None:
        """Write and delete a probe object under ``name``; raise DataError if that fails."""
        key = f"{name}/_probe-{uuid.uuid4().hex[:8]}"
        try:
            self.put_bytes(key, b"probe")
            self.delete_prefix(key)
        except DataError:
            raise
        except Exception as err:  # the backends' own errors vary (OSError, obstore errors)
            raise DataError(f"destination {self.root_uri} is not writable: {_short(err)}") from None

    def join(self, key: str) -> str:
        return f"{self.root_uri.rstrip('/')}/{key}"


class LocalBackend(Backend):
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().absolute()
        self.root_uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic: readers see the old file or the whole new one

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(self.join(key)) from None

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())

    def list_dirs(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir())

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()

    def zarr_store(self, key: str, *, read_only: bool) -> Any:
        from zarr.storage import LocalStore

        path = self._path(key)
        if not read_only:
            path.mkdir(parents=True, exist_ok=True)
        return LocalStore(path, read_only=read_only)

    def check_writable(self, name: str) -> None:
        try:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DataError(f"destination {self.root_uri} is not writable: {_short(err)}") from None
        super().check_writable(name)


class S3Settings(TypedDict, total=False):
    """Where S3 is and where credentials come from (:func:`predrnn.settings.s3_settings`), never a key.

    Attributes:
        endpoint: an S3 endpoint other than AWS's (``http://127.0.0.1:8433`` for SeaweedFS).
        region: the region (``us-east-1`` by default).
        credentials: ``environment`` (``AWS_*`` variables), ``profile`` (with ``profile``) or ``default chain``.
        profile: the AWS profile's name.
    """

    endpoint: str
    region: str
    credentials: str
    profile: str


# the keys of the settings that name a place; the rest say where credentials come from
_S3_CLIENT_KEYS = ("endpoint", "region")


_SECRET_KEYS = ("access_key_id", "secret_access_key", "token", "session_token", "aws_access_key_id",
                "aws_secret_access_key", "secret", "key", "password")


def check_s3_settings(s3: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """``s3`` as given, after checking that it names no credential (they are never carried as values).

    Raises:
        ValueError: a key of the settings holds a credential (named; its value is not shown).
    """
    held = sorted(k for k in (s3 or {}) if k.lower() in _SECRET_KEYS)
    if held:
        raise ValueError(f"S3 settings carry credentials ({', '.join(held)}); give where they come from instead "
                         "(the environment's AWS_* variables or an AWS profile), never the keys")
    return s3


def keyless(s3: S3Settings | None) -> S3Settings:
    """A copy of the S3 settings ``s3`` (None: none), checked to hold no key (:func:`check_s3_settings`)."""
    return cast(S3Settings, dict(check_s3_settings(s3) or {}))


def s3_client_config(s3: S3Settings) -> dict[str, Any]:
    """The settings an S3 client is configured with (endpoint, region); credentials are found by the client."""
    given: dict[str, Any] = dict(s3)
    return {k: given[k] for k in _S3_CLIENT_KEYS if given.get(k)}


_OBSTORE_PID: int | None = None


def _obstore_usable() -> bool:
    """Whether obstore can run in this process: its async runtime does not survive ``fork``, so a child
    forked from a process that already used it (a ``DataLoader`` worker started by ``fork``) cannot."""
    global _OBSTORE_PID
    if _OBSTORE_PID is None:
        _OBSTORE_PID = os.getpid()
    return os.getpid() == _OBSTORE_PID


def check_obstore_usable(uri: str) -> None:
    """Raise before an S3 request that would hang in a child forked after obstore started.

    Raises:
        DataError: this process was forked from one that already used S3; the message names the fix
            (``DataLoader(..., multiprocessing_context="forkserver")`` or ``"spawn"``).
    """
    if not _obstore_usable():
        raise DataError(f"{uri} cannot be read in a process forked after S3 was used (obstore's runtime does not "
                        "survive fork): start DataLoader workers with multiprocessing_context='forkserver' "
                        "or 'spawn'")


def obstore_options(s3: S3Settings | None) -> dict[str, Any]:
    """The keyword arguments of an obstore S3 client (``config``, ``client_options``, perhaps
    ``credential_provider``) for the keyless settings ``s3``.

    The endpoint and region come from the settings (None or missing: the client's defaults, AWS's endpoint);
    the keys are found by the client in this process: obstore reads the ``AWS_*`` variables
    (``credentials: environment``), boto3's chain gives a profile, SSO or an instance role (``profile``,
    ``default chain``). None is ever passed in.

    Raises:
        ValueError: the settings carry a key (:func:`check_s3_settings`).
    """
    settings = keyless(s3)
    cfg = s3_client_config(settings)
    kwargs: dict[str, Any] = {"config": cfg,
                              "client_options": {"allow_http": str(cfg.get("endpoint", "")).startswith("http://")}}
    if settings.get("credentials") != "environment":  # obstore reads AWS_* itself; profiles through boto3
        try:
            import boto3
            from obstore.auth.boto3 import Boto3CredentialProvider

            session = boto3.Session(profile_name=settings.get("profile"))
            if session.get_credentials() is not None:
                kwargs["credential_provider"] = Boto3CredentialProvider(session)
        except Exception:  # no usable profile: obstore falls back to its own discovery
            pass
    return kwargs


def obstore_s3(bucket: str, s3: S3Settings | None, *, prefix: str = "") -> Any:
    """An obstore ``S3Store`` of ``bucket`` (under ``prefix``), configured with the keyless settings ``s3``
    (:func:`obstore_options`).

    Raises:
        DataError: this process was forked after obstore started (:func:`check_obstore_usable`).
        ValueError: the settings carry a key (:func:`check_s3_settings`).
    """
    from obstore.store import S3Store

    options = obstore_options(s3)
    check_obstore_usable(f"s3://{bucket}/{prefix}".rstrip("/"))
    return S3Store(bucket, prefix=prefix or None, **options)


class S3Backend(Backend):
    """A root on S3, opened with the S3 settings ``s3`` (:meth:`predrnn.settings.Settings.s3`'s form, as a
    door resolved them; None: the client's defaults) through :func:`obstore_s3`.

    Raises:
        DataError: the URI has no bucket; this process was forked after obstore started.
        ValueError: the settings carry a key (:func:`check_s3_settings`).
    """

    def __init__(self, uri: str, s3: S3Settings | None = None):
        rest = uri[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise DataError(f"S3 URI {uri!r} has no bucket")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.root_uri = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.s3 = keyless(s3)
        self.store = self._make(self.prefix)

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.root_uri, "s3": self.s3}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["uri"], state.get("s3"))  # type: ignore[misc]

    def settings(self) -> S3Settings:
        """The S3 settings this root was opened with (keyless)."""
        return self.s3

    def _make(self, prefix: str) -> Any:
        return obstore_s3(self.bucket, self.s3, prefix=prefix)

    def put_bytes(self, key: str, data: bytes) -> None:
        import obstore

        obstore.put(self.store, key, data)

    def get_bytes(self, key: str) -> bytes:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            return bytes(obstore.get(self.store, key).bytes())
        except (NotFoundError, FileNotFoundError):
            raise FileNotFoundError(self.join(key)) from None

    def list_keys(self, prefix: str) -> list[str]:
        import obstore

        keys: list[str] = []
        for batch in obstore.list(self.store, prefix=prefix.rstrip("/") + "/"):
            keys.extend(str(item["path"]) for item in batch)
        return sorted(keys)

    def list_dirs(self, prefix: str) -> list[str]:
        import obstore

        result = obstore.list_with_delimiter(self.store, prefix=(prefix.rstrip("/") + "/") if prefix else None)
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in result["common_prefixes"])

    def delete_prefix(self, prefix: str) -> None:
        import obstore

        keys = self.list_keys(prefix)
        if not keys:
            with contextlib.suppress(Exception):  # a single object, or nothing there
                obstore.delete(self.store, prefix)
            return
        for i in range(0, len(keys), 500):
            obstore.delete(self.store, keys[i:i + 500])

    def check_writable(self, name: str) -> None:
        import obstore

        try:  # servers that create buckets on upload would hide a missing bucket from the probe write
            obstore.list_with_delimiter(self.store, prefix=f"{name}/")
        except Exception as err:
            raise DataError(f"destination {self.root_uri} is not writable: {_short(err)}") from None
        super().check_writable(name)

    def zarr_store(self, key: str, *, read_only: bool) -> Any:
        from zarr.storage import ObjectStore

        prefix = f"{self.prefix}/{key}" if self.prefix else key
        return ObjectStore(self._make(prefix), read_only=read_only)


def open_backend(root: str | Path, s3: S3Settings | None = None) -> Backend:
    """A backend for a root URI: ``s3://bucket/prefix`` (opened with the S3 settings ``s3``, see
    :class:`S3Backend`) or a local folder (``file://`` allowed)."""
    root = str(root)
    if root.startswith("s3://"):
        return S3Backend(root, s3)
    if root.startswith("file://"):
        root = root[len("file://"):]
    if "://" in root:
        raise DataError(f"unsupported root URI {root!r}: use a local folder or s3://bucket/prefix")
    if not root:
        raise DataError("root URI is empty")
    return LocalBackend(root)


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return "the bucket does not exist (NoSuchBucket)"
    return (text[:300] + "...") if len(text) > 300 else text or type(err).__name__


# ---------------------------------------------------------------------------------------------
# URIs and manifests.


def parse_uri(uri: str) -> tuple[str, str, str]:
    """Split ``ROOT/NAME[@VERSION]`` into (root, name, version); version defaults to ``latest``."""
    uri = str(uri).rstrip("/")
    head, sep, version = uri.rpartition("@")
    if not sep or "/" in version:
        head, version = uri, "latest"
    if not version:
        raise DataError(f"dataset URI {uri!r} has an empty version after '@'")
    root, slash, name = head.rpartition("/")
    if head.startswith("s3://") and root.count("/") < 2:
        raise DataError(f"dataset URI {uri!r} must look like s3://bucket[/prefix]/NAME[@VERSION]")
    check_name(name)
    if not slash:
        root = "."
    return root or "/", name, version


def manifest_key(name: str, version: str) -> str:
    return f"{name}/manifests/{version}.json"


def list_manifests(backend: Backend, name: str) -> list[dict[str, Any]]:
    """Every published manifest of ``name``, oldest first."""
    out = []
    for key in backend.list_keys(f"{name}/manifests"):
        if not key.endswith(".json") or key.rsplit("/", 1)[-1].startswith("."):
            continue
        try:
            out.append(json.loads(backend.get_bytes(key)))
        except (FileNotFoundError, ValueError):
            continue
    return sorted(out, key=lambda m: (m.get("created", ""), m.get("version", "")))


def list_datasets(root: str | Path, s3: S3Settings | None = None) -> list[dict[str, Any]]:
    """Summaries of every dataset and version under ``root`` (newest version last per name); ``s3``: the S3
    settings of a root on S3 (:class:`S3Backend`)."""
    backend = open_backend(root, s3)
    rows = []
    for name in backend.list_dirs(""):
        if not _NAME_RE.match(name):
            continue
        manifests = list_manifests(backend, name)
        for i, m in enumerate(manifests):
            rows.append({"name": name, "version": m["version"], "uri": backend.join(f"{name}@{m['version']}"),
                         "created": m.get("created", ""), "shape": m["shape"], "dtype": np.dtype(m["dtype"]).name,
                         "latest": i == len(manifests) - 1,
                         "splits": m.get("attrs", {}).get("split", {}).get("sizes", {})})
    return rows


def resolve(uri: str, s3: S3Settings | None = None) -> tuple[Backend, dict[str, Any]]:
    """The backend and manifest of a version URI; ``@latest`` is the newest published version."""
    root, name, version = parse_uri(uri)
    backend = open_backend(root, s3)
    if version == "latest":
        manifests = list_manifests(backend, name)
        if not manifests:
            raise DataError(f"no published version of dataset {name!r} under {backend.root_uri}")
        return backend, manifests[-1]
    try:
        return backend, json.loads(backend.get_bytes(manifest_key(name, version)))
    except FileNotFoundError:
        raise DataError(f"version {version!r} of dataset {name!r} not found under {backend.root_uri}") from None


# ---------------------------------------------------------------------------------------------
# Read-only access to a published version.


@dataclass
class Version:
    """A published, immutable dataset version. Data is read lazily, clip by clip."""

    backend: Backend
    manifest: dict[str, Any]
    _pid: int = field(default=-1, repr=False)

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def uri(self) -> str:
        return self.backend.join(f"{self.name}@{self.version}")

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        n, t, h, w, c = (int(x) for x in self.manifest["shape"])
        return n, t, h, w, c

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.manifest["dtype"])

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.manifest["attrs"])

    def __len__(self) -> int:
        return self.shape[0]

    def _group(self) -> Any:
        import zarr

        if self._pid != os.getpid() or "_group_cache" not in self.__dict__:
            store = self.backend.zarr_store(self.manifest["path"], read_only=True)
            self.__dict__["_group_cache"] = zarr.open_group(store, mode="r")
            self._pid = os.getpid()
        return self.__dict__["_group_cache"]

    @property
    def array(self) -> Any:
        """The ``clips`` Zarr array (opened read-only, once per process)."""
        return self._group()["clips"]

    @cached_property
    def split_codes(self) -> np.ndarray:
        return np.asarray(self._group()["split"][:], dtype=np.uint8)

    def split_indices(self, split: str) -> np.ndarray:
        """Clip indices (int64, ascending) of ``split`` in {"train", "val", "test", "all"}."""
        if split == "all":
            return np.arange(self.shape[0], dtype=np.int64)
        if split not in SPLIT_CODES:
            raise DataError(f"unknown split {split!r}; choose train, val, test or all")
        return np.flatnonzero(self.split_codes == SPLIT_CODES[split]).astype(np.int64)

    def valid_times(self, indices: Any) -> np.ndarray | None:
        """The valid time of every frame of the clips at ``indices``: (n, T) datetime64[ns] (or float64 for a
        numeric time coordinate, in the source's units); None when the source had no time coordinate."""
        group = self._group()
        if "valid_time" not in group:
            return None
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        arr: Any = group["valid_time"]
        if idx.size and (idx.min() < 0 or idx.max() >= self.shape[0]):
            raise DataError(f"clip index out of range for {self.uri} with {self.shape[0]} clips")
        t = np.asarray(arr[:])[idx]
        return t.view("datetime64[ns]") if t.dtype == np.int64 else t

    def grid_coords(self) -> dict[str, np.ndarray]:
        """The grid's coordinates recorded at ingest: ``y``, ``x`` (1-D) and ``lat``, ``lon`` ((H, W)) where the
        source had them; empty otherwise. What they mean (units, CRS) is in ``attrs["grid"]``."""
        group = self._group()
        return {k: np.asarray(group[f"grid_{k}"][...]) for k in ("y", "x", "lat", "lon") if f"grid_{k}" in group}

    def read(self, indices: Any) -> np.ndarray:
        """Clips at ``indices`` (any order, repeats allowed) as (n, T, H, W, C) in the stored dtype."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = self.shape[0]
        if idx.size == 0:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        if idx.min() < 0 or idx.max() >= n:
            raise DataError(f"clip index out of range for {self.uri} with {n} clips: "
                            f"{int(idx.min())}..{int(idx.max())}")
        arr = self.array
        if idx.size == 1:
            return np.asarray(arr[int(idx[0])])[None]
        uniq = np.unique(idx)
        if uniq.size == uniq[-1] - uniq[0] + 1:
            block = np.asarray(arr[int(uniq[0]):int(uniq[-1]) + 1])
        else:
            block = np.asarray(arr.get_orthogonal_selection((uniq,)))
        return block[np.searchsorted(uniq, idx)]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_group_cache", None)
        state["_pid"] = -1
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def open_version(uri: str, s3: S3Settings | None = None) -> Version:
    """Open a published version read-only: ``ROOT/NAME@VERSION``, ``ROOT/NAME@latest`` or ``ROOT/NAME``
    (on S3 with the settings ``s3``, see :class:`S3Backend`)."""
    backend, manifest = resolve(uri, s3)
    return Version(backend, manifest)
