"""What a run knows about its dataset, checked against the experiment before any worker starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from predrnn.config import ExperimentConfig
from predrnn.data.errors import DataError

if TYPE_CHECKING:
    from predrnn.data.store import S3Settings


@dataclass(frozen=True)
class DatasetInfo:
    """What training records about its data: the resolved version URI, its shape and what its values are
    (``values``: a :class:`predrnn.config.ValuesConfig` as a dict, normalisation from the training split),
    and ``place`` (:func:`place_of`): the grid, variables, time step and reader options of a gridded
    source, which a nowcast checks an archive against (empty for video and arrays); ``content_hash``: the
    SHA-256 of its content."""

    uri: str
    name: str
    version: str
    shape: tuple[int, ...]
    dtype: str
    splits: dict[str, int]
    values: dict[str, Any] = field(default_factory=dict)
    place: dict[str, Any] = field(default_factory=dict)
    content_hash: str = ""  # SHA-256 of the version's content (the version id is its first 16 hex digits)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# the gridded reader's options that decide how an archive is read (a nowcast reads new scans the same way)
READER_OPTIONS = ("variable", "time_dim", "units", "time_step", "time_tolerance", "channel_dim", "valid_min",
                  "valid_max")


def place_of(attrs: dict[str, Any]) -> dict[str, Any]:
    """What a gridded version records about its place and time, as a model keeps it: ``grid`` (y/x
    coordinates, 2-D lat/lon names, grid mapping), ``channels``, ``variables``, ``time`` (coordinate, kind,
    step, units) and ``reader`` (the source kind and its reading options); empty for a version without a
    time coordinate or grid (video, arrays)."""
    if "grid" not in attrs and "time" not in attrs:
        return {}
    time = attrs.get("time") or {}
    source = attrs.get("source") or {}
    options = source.get("options") or {}
    return {"grid": attrs.get("grid"), "channels": attrs.get("channels"), "variables": attrs.get("variables"),
            "units": attrs.get("units"),
            "time": {k: time[k] for k in ("coordinate", "kind", "step", "units") if k in time},
            "reader": {"kind": source.get("kind"), "options": {k: options[k] for k in READER_OPTIONS
                                                               if options.get(k) is not None}}}


def check_values_match(uri: str, data: Any, model: Any) -> None:
    """A model's normalisation was learnt on values of one kind and unit: the dataset's must be the same.

    Args:
        data, model: :class:`predrnn.config.ValuesConfig` of the dataset and of the model.

    Raises:
        DataError: image data for a field model, a field for an image model, or other units.
    """
    def names(v: Any) -> list[str]:
        return [ch.name for ch in getattr(v, "channels", ())]

    if (model.kind, model.units, names(model)) != (data.kind, data.units, names(data)):
        def what(v: Any) -> str:
            if v.kind == "image":
                return "image data"
            return f"a field in {v.units or 'unnamed units'!r}" + (f" (variables {', '.join(names(v))})"
                                                                    if names(v) else "")
        raise DataError(f"dataset {uri} holds {what(data)} but the model was trained on {what(model)}")


def validate_dataset(cfg: ExperimentConfig, uri: str, *, world_size: int = 1, for_model: bool = False,
                     need_val: bool = True, need_test: bool = False, need_length: int | None = None,
                     s3: S3Settings | None = None) -> DatasetInfo:
    """Open the version behind ``uri`` and check it against the config, before any worker starts.

    Args:
        for_model: ``cfg`` is a trained model's: its values (image or field, units) must be the
            dataset's, since its normalisation was learnt on them (evaluation, scoring).
        need_val: require a validation split (training does; evaluation does not).
        need_test: require a test split (a training run that ends with the test evaluation does).
        s3: S3 settings for a version on S3 (as the door read them); None: the S3 client's defaults.
        need_length: frames per clip the caller reads (default ``data.total_length``), e.g. an
            evaluation at a longer horizon than the training one.

    Raises:
        DataError: the version does not exist or cannot be read, its frames differ from
            ``cfg.data`` (height, width, channels), its clips are shorter than
            ``data.total_length``, the train/val splits are too small for ``world_size`` ranks, a
            split that is needed is empty, or (``for_model``) its values differ from the model's.
    """
    if not uri:
        raise DataError("no dataset given: pass --data ROOT/NAME@VERSION (or set data.dataset)")
    from predrnn.data.store import open_version

    try:
        version = open_version(uri, s3)
    except DataError as err:  # missing path, unknown version: already one line
        raise DataError(f"cannot open dataset {uri!r}: {err}") from err
    except Exception as err:  # unreadable metadata, a store that fails
        raise DataError(f"cannot open dataset {uri!r}: {type(err).__name__}: {err}") from err
    shape = tuple(int(s) for s in version.shape)
    d = cfg.data
    if len(shape) != 5:
        raise DataError(f"dataset {version.uri} has shape {shape}; expected (clips, T, H, W, C)")
    _, t, h, w, c = shape
    want = (d.img_height, d.img_width, d.img_channel)
    if (h, w, c) != want:
        raise DataError(f"dataset {version.uri} has frames of {h}x{w}x{c} (H x W x C) but the config "
                           f"expects {want[0]}x{want[1]}x{want[2]} (data.img_height/img_width/img_channel)")
    if need_length is not None and t < need_length:
        raise DataError(f"dataset {version.uri} has clips of {t} frames; context + horizon need {need_length}")
    if need_length is None and t < d.total_length:
        raise DataError(f"dataset {version.uri} has clips of {t} frames; the config needs "
                           f"data.total_length={d.total_length}")
    splits = {}
    for split in ("train", "val", "test"):
        try:
            splits[split] = len(version.split_indices(split))
        except Exception:  # a dataset may lack a split; train and val are checked below
            splits[split] = 0
    from predrnn.values import from_dataset_attrs

    values = from_dataset_attrs(version.attrs)
    if for_model:
        check_values_match(version.uri, values, cfg.values)
    elif splits["train"] < world_size:
        raise DataError(f"dataset {version.uri} has {splits['train']} training clips; "
                           f"{world_size} workers need at least one each")
    if need_val and not for_model and splits["val"] < 1:
        raise DataError(f"dataset {version.uri} has no validation clips")
    if need_test and splits["test"] < 1:
        raise DataError(f"dataset {version.uri} has no test split, which the run's final evaluation needs: "
                           "ingest a test source or pass --test-fraction to ingest")
    return DatasetInfo(uri=str(version.uri), name=str(version.name), version=str(version.version),
                       shape=shape, dtype=str(version.dtype), splits=splits, values=asdict(values),
                       place=place_of(version.attrs), content_hash=str(version.attrs.get("content_hash", "")))
