"""Datasets: versioned Zarr stores on a local folder or S3, streaming sources, a torch Dataset.

>>> uri = ingest("moving-digits", "", "mm", "/data/root", num_clips=100)   # doctest: +SKIP
>>> v = open_version(uri); ds = ClipDataset(uri, split="train")            # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from predrnn.data.errors import DataError
from predrnn.data.info import DatasetInfo, validate_dataset
from predrnn.data.pipeline import (
    discard_version,
    find_existing,
    gc_orphans,
    ingest,
    inspect_source,
    publish_version,
    validate_source,
    verify_version,
    write_version,
)
from predrnn.data.sources import KINDS
from predrnn.data.store import Version, list_datasets, open_version, parse_uri

if TYPE_CHECKING:
    from predrnn.data.dataset import ClipDataset


def __getattr__(name: str) -> Any:
    # torch is imported only when the Dataset is asked for.
    if name == "ClipDataset":
        from predrnn.data.dataset import ClipDataset

        return ClipDataset
    raise AttributeError(name)


__all__ = ["KINDS", "ClipDataset", "DataError", "DatasetInfo", "Version", "discard_version", "find_existing",
           "gc_orphans", "ingest", "inspect_source", "list_datasets", "open_version", "parse_uri", "publish_version",
           "validate_dataset", "validate_source", "verify_version", "write_version"]
