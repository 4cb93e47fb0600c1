"""Sources on S3: ``--source s3://bucket/key`` for every file-based kind.

The decoders (the zip/npy :class:`~predrnn.data.sources.arrays.ArrayReader`, ffmpeg, Pillow, netCDF4,
zarr) read local files, so the objects under the URI are first fetched into a private temporary folder
that mirrors their key layout below the URI; the kind's own reader then runs on that copy unchanged
(KTH persons in paths, train/valid/test in file names, one folder per frame sequence, a ``.zarr``
folder). A URI naming one object gives one local file of the same name; any other URI is a prefix and
gives a folder of everything below it.

* The S3 client is the store's (obstore, :func:`predrnn.data.store.obstore_s3`), configured with the
  keyless S3 settings the door resolved (:func:`predrnn.settings.s3_settings`: the endpoint, the
  region and where credentials come from); the keys are found by the client in this process.
* Memory stays flat in object size: objects are read in ranged GETs of :data:`PART_BYTES`, each
  written to disk before the next is asked for, at most :data:`WORKERS` objects at a time; every part
  is read ``If-Match`` the ETag listed, so an object replaced mid-fetch is an error, not a mix of two.
* One copy per process and content: the copy is keyed by the URI and the listed (key, size, ETag)
  triples, so the pipeline's inspect, validate and write steps (each making its own source) list the
  prefix again but fetch once, and a changed object is fetched again. A copy no live source uses is
  removed when another S3 source is fetched, by :func:`clear_cache`, and with the whole temporary
  folder (under ``TMPDIR``) when the interpreter exits; folders left by killed processes are removed by
  the next process that fetches.
* The dataset records the URI as its source location and a content checksum of the copy (the same as
  for identical local files), so re-ingesting an unchanged S3 source is a no-op. Error messages name
  the objects by their ``s3://`` URIs, never the temporary paths.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from predrnn.data.errors import DataError

if TYPE_CHECKING:
    from predrnn.data.store import S3Settings

log = logging.getLogger("predrnn.data")

PART_BYTES = 8 << 20  # bytes per ranged GET (and the most one object holds in memory)
WORKERS = 8  # objects fetched at a time
_BATCH = 1024  # objects submitted to the pool at a time (bounds the futures kept for huge prefixes)
_DIR_PREFIX = "predrnn-s3-src-"  # the per-process folder under TMPDIR: predrnn-s3-src-<pid>-<random>
_STALE_AFTER_S = 3600.0  # a dead process's folder is removed only once it is this old


def is_s3_uri(source: Any) -> bool:
    """True for ``s3://bucket[/key]`` (a str or anything whose str() is one)."""
    return source is not None and str(source).startswith("s3://")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> (bucket, key); the key may be empty (the whole bucket) or end in '/'.

    Raises:
        DataError: no bucket in the URI.
    """
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise DataError(f"source {uri}: no bucket in the S3 URI (expected s3://bucket/key)")
    return bucket, key


# ---------------------------------------------------------------------------------------------
# The local copy.


@dataclass
class Mirror:
    """A fetched S3 source: ``path`` (a local file for one object, else a folder) stands for ``uri``.

    ``objects`` and ``size`` (bytes) count what was fetched. A source holding a Mirror keeps its files
    from being removed (see :func:`clear_cache`).
    """

    uri: str
    path: Path
    objects: int
    size: int

    def translate(self, text: str) -> str:
        """``text`` with the local path replaced by the S3 URI (for messages and clip origins)."""
        return text.replace(str(self.path), self.uri)

    @contextlib.contextmanager
    def translating(self) -> Iterator[None]:
        """Re-raise a DataError from the block with the local paths in its message as S3 URIs."""
        try:
            yield
        except DataError as err:
            message = self.translate(str(err))
            if message == str(err):
                raise
            raise DataError(message) from None


@dataclass
class _Entry:
    folder: Path  # removed as a whole: <cache root>/<digest>
    path: Path  # the file or folder standing for the URI, inside ``folder``
    objects: int
    size: int
    ref: weakref.ref[Mirror] | None = None


@dataclass(frozen=True)
class _Object:
    key: str  # the full key in the bucket
    rel: str  # the local path below the mirror's path ('' for a single object)
    size: int
    etag: str | None


_lock = threading.Lock()
_entries: dict[str, _Entry] = {}
_root: dict[str, Any] = {"pid": None, "path": None}


def fetch(uri: str, s3: S3Settings | None = None) -> Mirror:
    """The local copy of the object or prefix at ``uri``, fetched unless this process holds it already.

    Args:
        uri: ``s3://bucket/key``: one object (local copy: a file of the key's last name) or a prefix
            (a folder of that name holding every object below it, in the same layout). A trailing '/'
            means a prefix; ``s3://bucket`` is the whole bucket.
        s3: the S3 settings (:func:`predrnn.settings.s3_settings`'s keyless form; None: the client's
            defaults).

    Returns:
        A :class:`Mirror` whose ``path`` the kind's reader opens like a local source.

    Raises:
        DataError (one line, naming the URI): the bucket is missing, nothing is stored at the key, the
            prefix is empty, the endpoint cannot be reached, access is denied, an object changes or
            disappears while being fetched, or the temporary folder lacks the space.
    """
    uri_clean = uri.rstrip("/") if uri.count("/") > 2 else uri
    bucket, key = split_s3_uri(uri)
    with _lock:
        root = _cache_root()
        client = _Client(bucket, s3)
        objects, name = _listing(client, uri, bucket, key)
        h = hashlib.sha256(uri_clean.encode())
        for o in objects:
            h.update(f"\n{o.key}\0{o.size}\0{o.etag}".encode())
        digest = h.hexdigest()[:24]
        entry = _entries.get(digest)
        if entry is None or not entry.path.exists():
            _evict(keep=digest)
            entry = _download(client, uri_clean, objects, root, digest, name)
            _entries[digest] = entry
        mirror = entry.ref() if entry.ref is not None else None
        if mirror is None:
            mirror = Mirror(uri_clean, entry.path, entry.objects, entry.size)
            entry.ref = weakref.ref(mirror)
        return mirror


def clear_cache() -> int:
    """Remove every local copy that no live source uses; returns how many were removed.

    With none left in use, the process's temporary folder goes too (the next fetch makes a new one).
    For long-running processes (a worker ingesting many S3 sources) and for processes that leave
    through ``os._exit``, which skips the exit handler; a CLI run cleans up at exit by itself.
    """
    with _lock:
        if _root["pid"] != os.getpid():
            return 0
        removed = _evict(keep=None)
        if not _entries:
            _remove_root()
            _root["pid"] = _root["path"] = None
        return removed


def _evict(keep: str | None) -> int:
    removed = 0
    for digest, entry in list(_entries.items()):
        if digest != keep and (entry.ref is None or entry.ref() is None):
            shutil.rmtree(entry.folder, ignore_errors=True)
            del _entries[digest]
            removed += 1
    return removed


def _cache_root() -> Path:
    """This process's folder under TMPDIR (a forked child makes its own, never touching the parent's)."""
    pid = os.getpid()
    if _root["pid"] != pid:
        _entries.clear()
        _remove_stale()
        _root["path"] = Path(tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{pid}-"))
        _root["pid"] = pid
    path = _root["path"]
    assert isinstance(path, Path)
    return path


@atexit.register
def _remove_root() -> None:
    if _root["pid"] == os.getpid() and _root["path"] is not None:
        shutil.rmtree(_root["path"], ignore_errors=True)


def _remove_stale() -> None:
    """Remove folders of ours whose process is gone (killed before its exit handler ran)."""
    now = time.time()
    for folder in Path(tempfile.gettempdir()).glob(f"{_DIR_PREFIX}*"):
        try:
            pid = int(folder.name[len(_DIR_PREFIX):].split("-")[0])
            st = folder.stat()
        except (ValueError, OSError):
            continue
        if st.st_uid == os.getuid() and now - st.st_mtime > _STALE_AFTER_S and not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's process
        return True
    return True


# ---------------------------------------------------------------------------------------------
# Listing and fetching.


def _listing(client: _Client, uri: str, bucket: str, key: str) -> tuple[list[_Object], str]:
    """The objects at ``uri`` and the local name of the copy (the key's last part, or the bucket)."""
    try:
        if key and not key.endswith("/"):
            below = client.list(key + "/")
            if not below:
                one = client.head(key)
                if one is None:
                    raise DataError(f"source {uri}: no such object or prefix in bucket {bucket}")
                size, etag = one
                return [_Object(key, "", size, etag)], key.rsplit("/", 1)[-1]
        else:
            below = client.list(key)
    except DataError:
        raise
    except Exception as err:  # obstore and botocore raise their own types
        raise DataError(f"source {uri}: {_problem(err, client.endpoint)}") from None
    prefix = key if not key or key.endswith("/") else key + "/"
    folders = {k.rsplit("/", 1)[0] for k, _, _ in below if "/" in k}
    objects = []
    for k, size, etag in below:
        rel = k[len(prefix):]
        if size == 0 and (k.endswith("/") or k in folders):  # a "folder" marker some tools write (obstore
            continue  # lists "a/" as "a")
        if any(part in ("", ".", "..") for part in rel.split("/")):
            raise DataError(f"source {uri}: object key {k!r} cannot be copied to a local path "
                            "(empty, '.' or '..' path part)")
        objects.append(_Object(k, rel, size, etag))
    if not objects:
        raise DataError(f"source {uri}: empty prefix (no objects below it in bucket {bucket})")
    name = key.rstrip("/").rsplit("/", 1)[-1] if key.strip("/") else bucket
    return sorted(objects, key=lambda o: o.key), name


def _download(client: _Client, uri: str, objects: list[_Object], root: Path, digest: str, name: str) -> _Entry:
    """Fetch ``objects`` into ``root/<digest>/<name>`` (through a partial folder, renamed when complete)."""
    total = sum(o.size for o in objects)
    free = shutil.disk_usage(root).free
    if total > free - (64 << 20):
        raise DataError(f"source {uri}: {total / 1e9:.2f} GB to fetch but only {free / 1e9:.2f} GB free in "
                        f"{root.parent}; point TMPDIR at a larger disk")
    partial = root / f".partial-{digest}-{uuid.uuid4().hex[:8]}"
    single = len(objects) == 1 and objects[0].rel == ""
    started = time.perf_counter()
    try:
        partial.mkdir()
        with ThreadPoolExecutor(max_workers=min(WORKERS, len(objects))) as pool:
            for i in range(0, len(objects), _BATCH):
                futures = [pool.submit(_fetch_one, client, uri, o,
                                       partial / name if single else partial / name / o.rel)
                           for o in objects[i:i + _BATCH]]
                try:
                    for f in futures:
                        f.result()
                finally:
                    for f in futures:
                        f.cancel()
                    wait(futures)
        if not single:
            (partial / name).mkdir(exist_ok=True)
        folder = root / digest
        if folder.exists():  # an earlier copy whose files were removed from under it
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    log.info("fetched %d object(s), %.1f MB, from %s in %.1f s", len(objects), total / 1e6, uri, seconds)
    return _Entry(folder, folder / name, len(objects), total)


def _fetch_one(client: _Client, uri: str, obj: _Object, dest: Path) -> None:
    """Stream one object to ``dest`` in ranged GETs of PART_BYTES (each checked against the listed ETag)."""
    where = f"s3://{client.bucket}/{obj.key}"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as fh:
            for start in range(0, obj.size, PART_BYTES):
                end = min(start + PART_BYTES, obj.size)
                data = client.read(obj.key, start, end, obj.etag)
                if len(data) != end - start:
                    raise DataError(f"source {uri}: {where} changed while being fetched (got "
                                    f"{len(data)} bytes for {start}..{end - 1}); run again")
                fh.write(data)
    except DataError:
        raise
    except OSError as err:
        raise DataError(f"source {uri}: cannot copy {where} to a local file ({_first_line(err)})") from None
    except Exception as err:
        text = str(err)
        if "Precondition" in text or "412" in text:
            raise DataError(f"source {uri}: {where} changed while being fetched; run again") from None
        if "NotFound" in text or "NoSuchKey" in text or "404" in text:
            raise DataError(f"source {uri}: {where} disappeared while being fetched; run again") from None
        raise DataError(f"source {uri}: reading {where} failed: {_problem(err, client.endpoint)}") from None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    line = " ".join(lines[0].split()) if lines else type(err).__name__
    return line[:300] + ("..." if len(line) > 300 else "")


def _problem(err: BaseException, endpoint: str | None) -> str:
    """What went wrong with an S3 request to ``endpoint`` (None: AWS's), in a few words (one line)."""
    text = " ".join(str(err).split())
    low = text.lower()
    if "nosuchbucket" in low or "bucket does not exist" in low:
        return "the bucket does not exist (NoSuchBucket)"
    for code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken"):
        if code.lower() in low:
            return f"access denied ({code}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the AWS profile"
    if "unable to locate credentials" in low or "nocredentials" in low:
        return "no S3 credentials: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or an AWS profile"
    if any(w in low for w in ("error sending request", "connection refused", "could not connect", "connect timeout",
                              "timed out", "dns error", "failed to establish", "name or service not known")):
        return (f"cannot reach the S3 endpoint {endpoint or 'of AWS'} (connection failed; check "
                "PREDRNN_S3_ENDPOINT_URL)")
    return _first_line(err)


# ---------------------------------------------------------------------------------------------
# The store's S3 client (obstore) over the door's settings.


class _Client:
    """Listing, metadata and ranged reads of one bucket through obstore.

    Raises:
        DataError: this process was forked after obstore started (:func:`predrnn.data.store.obstore_s3`).
    """

    def __init__(self, bucket: str, s3: S3Settings | None):
        from predrnn.data.store import keyless, obstore_s3, s3_client_config

        self.bucket = bucket
        self.endpoint: str | None = s3_client_config(keyless(s3)).get("endpoint")
        self.store = obstore_s3(bucket, s3)

    def list(self, prefix: str) -> list[tuple[str, int, str | None]]:
        """(key, size, ETag) of every object whose key starts with ``prefix`` ('' for all)."""
        import obstore

        out: list[tuple[str, int, str | None]] = []
        for batch in obstore.list(self.store, prefix=prefix or None):
            for m in batch:
                key = str(m["path"])
                if key.startswith(prefix):  # obstore matches whole path parts; S3 prefixes are strings
                    out.append((key, int(m["size"]), m.get("e_tag")))
        return out

    def head(self, key: str) -> tuple[int, str | None] | None:
        """(size, ETag) of one object, or None when there is none."""
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            m = obstore.head(self.store, key)
        except (NotFoundError, FileNotFoundError):
            return None
        return int(m["size"]), m.get("e_tag")

    def read(self, key: str, start: int, end: int, etag: str | None) -> Any:
        """Bytes ``start:end`` (a bytes-like object), failing if the object's ETag is no longer ``etag``."""
        import obstore

        options: dict[str, Any] = {"range": (start, end)}
        if etag:
            options["if_match"] = etag
        return obstore.get(self.store, key, options=options).bytes()  # type: ignore[arg-type]
