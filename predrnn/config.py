"""Typed configuration: one frozen dataclass per concern, composed into :class:`ExperimentConfig`.

A config validates on construction (field types by pydantic at the JSON/override door, cross-field
rules in ``ExperimentConfig.__post_init__``), so an ``ExperimentConfig`` that exists is a valid one.
Presets are functions returning a complete config (``moving_mnist_v2()``); overrides are dotted
``section.field=value`` strings whose values are parsed as JSON (falling back to a bare string)
and checked against the field's type, so ``model.num_hidden=[64,64]`` works and
``model.num_hidden=64`` is refused with a message that names the key and the expected type.
Sequences are tuples. Where a run is tracked, stored or executed is not part of the experiment: it
travels in :class:`predrnn.train.RunSpec`.

Building configs needs only the standard library (the model core stays importable with torch
alone); pydantic is imported when a config is read from JSON or overrides.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from predrnn.errors import PredrnnError


class ConfigError(PredrnnError, ValueError):
    """A configuration value, key or combination is invalid."""


# pydantic reads this from each section: unknown keys are errors, not silently dropped.
_STRICT_KEYS = {"extra": "forbid"}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture. ``arch``: ``predrnn_v2`` (decoupling adapter), ``predrnn`` (V1) or ``convlstm``."""

    __pydantic_config__ = _STRICT_KEYS

    arch: Literal["predrnn_v2", "predrnn", "convlstm"] = "predrnn_v2"
    num_hidden: tuple[int, ...] = (128, 128, 128, 128)
    filter_size: int = 5
    patch_size: int = 4
    layer_norm: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_hidden", tuple(self.num_hidden))


@dataclass(frozen=True)
class SamplingConfig:
    """Probability of feeding the true frame, as pure functions of the global iteration.

    ``scheme``: ``rss`` (reverse scheduled sampling on the encoder + scheduled sampling on the
    decoder, PredRNN-V2), ``ss`` (scheduled sampling on the decoder only, PredRNN V1), ``none``
    (encoder always true frames, decoder always own predictions).
    """

    __pydantic_config__ = _STRICT_KEYS

    scheme: Literal["rss", "ss", "none"] = "rss"
    rss_curve: Literal["exp", "linear", "sigmoid"] = "exp"
    r_sampling_step_1: int = 25_000
    r_sampling_step_2: int = 50_000
    r_exp_alpha: float = 2_500.0
    sampling_start_value: float = 1.0
    sampling_changing_rate: float = 2e-5
    sampling_stop_iter: int = 50_000


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation. ``decouple_beta`` multiplies the mean-reduced decoupling loss (authors' code)."""

    __pydantic_config__ = _STRICT_KEYS

    lr: float = 1e-4
    batch_size: int = 8
    max_iterations: int = 80_000
    decouple_beta: float = 0.1
    reverse_input: bool = True
    grad_clip: float = 0.0  # 0 disables clipping
    divergence_loss: float = 0.0  # stop when the training loss exceeds this (0: only a non-finite loss stops)
    seed: int = 0
    eval_interval: int = 5_000
    checkpoint_interval: int = 5_000
    keep_best: int = 3
    eval_clips: int = 0  # 0: the whole validation split


@dataclass(frozen=True)
class DataConfig:
    """Frames and sequence lengths. ``dataset`` is a version URI (``ROOT/NAME@VERSION``)."""

    __pydantic_config__ = _STRICT_KEYS

    dataset: str = ""
    img_height: int = 64
    img_width: int = 64
    img_channel: int = 1
    input_length: int = 10
    total_length: int = 20
    prefetch: int = 2  # training batches read ahead in a background thread (0: read when needed)


@dataclass(frozen=True)
class ChannelValues:
    """One channel of a multi-variable field (one variable of a gridded source): its name, units, the
    training split's mean/std that standardise it, its valid range and its verification thresholds."""

    __pydantic_config__ = _STRICT_KEYS

    name: str = ""
    units: str = ""
    mean: float = 0.0
    std: float = 1.0
    valid_min: float | None = None
    valid_max: float | None = None
    thresholds: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))


@dataclass(frozen=True)
class ValuesConfig:
    """What the data's values are, and how the model sees them (resolved from the dataset at the door).

    ``kind``: ``image`` (intensities; the data's units are floats in [0, 1], uint8 / 255) or
    ``field`` (a physical quantity in ``units``, NaN = no data). A field is standardised for the
    model, ``(x - mean) / std``, with ``mean``/``std`` from the **training split only**; missing
    values enter the model as the training mean (0 after standardisation). Forecasts leave the model
    in the data's units, clipped to ``[valid_min, valid_max]`` (either may be None: unbounded); an
    image forecast is clipped to [0, 1]. ``thresholds`` are the default verification thresholds in
    the data's units (e.g. mm/h 0.5, 2, 5, 10, 30 as HKO-7).

    ``channels``: a field of several variables (t2m in K, u10 in m s-1, ...) has one
    :class:`ChannelValues` per channel, in channel order, and each channel is standardised, clipped and
    scored on its own; the scalar ``mean``/``std``/``valid_*``/``thresholds`` then do not apply (0, 1,
    None, ()) and ``units`` lists the channels' units. Empty for one channel (or images).
    """

    __pydantic_config__ = _STRICT_KEYS

    kind: Literal["image", "field"] = "image"
    units: str = ""
    mean: float = 0.0
    std: float = 1.0
    valid_min: float | None = None
    valid_max: float | None = None
    thresholds: tuple[float, ...] = ()
    channels: tuple[ChannelValues, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))


@dataclass(frozen=True)
class ComputeConfig:
    """Where and how to run.

    ``amp``: the training precision, ``auto``, ``bf16`` or ``fp32`` (:mod:`predrnn.precision`): ``auto``
    is bf16 autocast on GPUs and fp32 on CPUs; ``none`` is read as ``fp32`` (its earlier name).
    """

    __pydantic_config__ = _STRICT_KEYS

    num_workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    threads: int = 0  # torch intra-op threads per worker; 0 keeps torch's default
    amp: Literal["auto", "bf16", "fp32", "none"] = "auto"
    channels_last: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        if self.amp == "none":
            object.__setattr__(self, "amp", "fp32")


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow names: the experiment a run is logged under and the registered model it produces.

    The tracking URI is the machine's, not the experiment's: it is resolved at the door and travels
    in :class:`predrnn.train.RunSpec`.
    """

    __pydantic_config__ = _STRICT_KEYS

    experiment: str = "predrnn"
    registered_model: str = "predrnn-v2"


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    values: ValuesConfig = field(default_factory=ValuesConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        _validate(self)

    def validate(self) -> ExperimentConfig:
        """The config itself: it was validated on construction (kept so calls chain)."""
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        """The config of a ``to_dict()`` mapping (JSON types: lists for tuples).

        Raises:
            ConfigError: an unknown key, a value of the wrong type (key and expected type named), or
                a contradiction between fields.
        """
        return _from_dict(data)

    @classmethod
    def from_json(cls, text: str) -> ExperimentConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"config is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError("config JSON must be an object")
        return cls.from_dict(data)

    def flat(self) -> dict[str, Any]:
        """``{"model.num_hidden": [..], ...}``: every leaf with its dotted key, sequences as lists (for
        tracking and for comparing configs with their JSON form)."""
        out: dict[str, Any] = {}
        for section, values in self.to_dict().items():
            if isinstance(values, dict):
                for key, value in values.items():
                    out[f"{section}.{key}"] = list(value) if isinstance(value, tuple) else value
            else:
                out[section] = values
        return out


# ---------------------------------------------------------------------------------------------
# Presets: the authors' recipes (arXiv 2103.09504, section 5 and their scripts) and a CPU one.


def moving_mnist_v2() -> ExperimentConfig:
    """PredRNN-V2 on Moving MNIST: 4 x 128, patch 4, lr 1e-4, batch 8, 80k its, RSS 25k/50k/2500."""
    return ExperimentConfig(name="moving_mnist_v2")


def moving_mnist_v1() -> ExperimentConfig:
    """PredRNN (V1) on Moving MNIST: lr 3e-4, scheduled sampling 1.0 - 2e-5/it until 50k."""
    return ExperimentConfig(
        name="moving_mnist_v1",
        model=ModelConfig(arch="predrnn"),
        sampling=SamplingConfig(scheme="ss"),
        optim=OptimConfig(lr=3e-4, decouple_beta=0.0, reverse_input=False),
        tracking=TrackingConfig(registered_model="predrnn-v1"),
    )


def kth_v2() -> ExperimentConfig:
    """PredRNN-V2 on KTH actions: 128x128 grey, 10 -> 10 in training, batch 4, beta 0.01, RSS 5k/50k/2000."""
    return ExperimentConfig(
        name="kth_v2",
        sampling=SamplingConfig(r_sampling_step_1=5_000, r_sampling_step_2=50_000, r_exp_alpha=2_000.0),
        optim=OptimConfig(batch_size=4, decouple_beta=0.01),
        data=DataConfig(img_height=128, img_width=128),
    )


def quick() -> ExperimentConfig:
    """A CPU preset: 64x64, patch 8, 2 x 32, schedules scaled to 600 iterations."""
    return ExperimentConfig(
        name="quick",
        model=ModelConfig(num_hidden=(32, 32), filter_size=5, patch_size=8),
        sampling=SamplingConfig(r_sampling_step_1=150, r_sampling_step_2=400, r_exp_alpha=40.0,
                                sampling_stop_iter=400, sampling_changing_rate=1.0 / 400),
        optim=OptimConfig(lr=1e-3, batch_size=8, max_iterations=600, decouple_beta=0.1,
                          reverse_input=False, eval_interval=200, checkpoint_interval=100,
                          eval_clips=64),
    )


PRESETS: dict[str, Callable[[], ExperimentConfig]] = {
    "moving_mnist_v2": moving_mnist_v2,
    "moving_mnist_v1": moving_mnist_v1,
    "kth_v2": kth_v2,
    "quick": quick,
}


def preset(name: str) -> ExperimentConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def load_config(preset_name: str | None = None, config_file: str | None = None,
                overrides: Iterable[str] = ()) -> ExperimentConfig:
    """A preset or a JSON file (not both), then overrides (the result is validated on construction)."""
    if preset_name and config_file:
        raise ConfigError("give a preset or a config file, not both")
    if config_file:
        with open(config_file, encoding="utf-8") as fh:
            cfg = ExperimentConfig.from_json(fh.read())
    else:
        cfg = preset(preset_name or "quick")
    return apply_overrides(cfg, overrides)


# ---------------------------------------------------------------------------------------------
# Overrides and reading configs: field types checked by pydantic, one construction at the end.

# Keys that older configs carry and that no longer belong to the experiment (dropped when read).
_RETIRED_KEYS = {("tracking", "tracking_uri"), ("data", "loader_workers")}


def apply_overrides(cfg: ExperimentConfig, overrides: Iterable[str]) -> ExperimentConfig:
    """Apply ``section.field=value`` strings (values parsed as JSON, else a bare string) to ``cfg``.

    All overrides land before the config is rebuilt, so their order never matters.

    Raises:
        ConfigError: a malformed item, an unknown section or key (the known ones listed), a value of
            the wrong type (the key and expected type named), or a contradiction in the result.
    """
    data = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if parts == ["name"]:
            data["name"] = raw
            continue
        if len(parts) != 2:
            raise ConfigError(f"override key {key!r} must be section.field, e.g. model.num_hidden")
        section, name = parts
        sections = _section_types()
        if section not in sections:
            raise ConfigError(f"unknown config section {section!r} in {key!r}; known sections: {sorted(sections)}")
        known = [f.name for f in dataclasses.fields(sections[section])]
        if name not in known:
            raise ConfigError(f"unknown config key {key!r}; {section} has: {sorted(known)}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        data[section][name] = value
    return ExperimentConfig.from_dict(data)


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(ExperimentConfig)
    return {k: v for k, v in hints.items() if isinstance(v, type) and dataclasses.is_dataclass(v)}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"list[{', '.join(_type_name(a) for a in typing.get_args(tp) if a is not Ellipsis)}]"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _from_dict(data: dict[str, Any]) -> ExperimentConfig:
    from pydantic import TypeAdapter, ValidationError

    sections = _section_types()
    unknown = sorted(set(data) - {"name", *sections})
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; known: {sorted(['name', *sections])}")
    if "name" in data and not isinstance(data["name"], str):
        raise ConfigError(f"name: expected str, got {data['name']!r}")
    built: dict[str, Any] = {}
    for section, value in data.items():
        if section == "name":
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{section}: expected an object")
        value = {k: v for k, v in value.items() if (section, k) not in _RETIRED_KEYS}
        try:
            built[section] = TypeAdapter(sections[section]).validate_json(json.dumps(value), strict=True)
        except ValidationError as err:
            raise _type_error(section, value, err) from None
    return ExperimentConfig(**({"name": data["name"]} if "name" in data else {}), **built)


def _type_error(section: str, value: dict[str, Any], err: Any) -> ConfigError:
    """The first of pydantic's errors as one line: ``section.key[i]: expected TYPE, got VALUE``."""
    first = err.errors()[0]
    loc = first["loc"]
    name = str(loc[0]) if loc else ""
    key = f"{section}.{name}" + "".join(f"[{i}]" for i in loc[1:] if isinstance(i, int))
    if first["type"] == "unexpected_keyword_argument":
        known = sorted(f.name for f in dataclasses.fields(_section_types()[section]))
        return ConfigError(f"unknown config key {key!r}; {section} has: {known}")
    hint = typing.get_type_hints(_section_types()[section]).get(name)
    for i in loc[1:]:  # the element type of a sequence
        if isinstance(i, int) and hint is not None:
            hint = next((a for a in typing.get_args(hint) if a is not Ellipsis), hint)
    got = first.get("input", value.get(name))
    return ConfigError(f"{key}: expected {_type_name(hint)}, got {got!r}")


def _validate(cfg: ExperimentConfig) -> None:
    m, s, o, d, c = cfg.model, cfg.sampling, cfg.optim, cfg.data, cfg.compute
    errors: list[str] = []
    if not m.num_hidden or any(h <= 0 for h in m.num_hidden):
        errors.append("model.num_hidden must be a non-empty list of positive widths")
    elif m.arch != "convlstm" and len(set(m.num_hidden)) != 1:
        errors.append("model.num_hidden: PredRNN layers share one width (the zigzag memory M passes "
                      f"between layers), got {m.num_hidden}")
    if m.filter_size < 1 or m.filter_size % 2 == 0:
        errors.append(f"model.filter_size must be odd and positive, got {m.filter_size}")
    if m.patch_size < 1:
        errors.append("model.patch_size must be >= 1")
    elif d.img_height % m.patch_size or d.img_width % m.patch_size:
        errors.append(f"data.img_height/img_width ({d.img_height}x{d.img_width}) must be divisible by "
                      f"model.patch_size ({m.patch_size})")
    if d.img_channel < 1:
        errors.append("data.img_channel must be >= 1")
    if d.prefetch < 0:
        errors.append(f"data.prefetch (batches read ahead) must be >= 0, got {d.prefetch}")
    if not 1 <= d.input_length < d.total_length:
        errors.append(f"need 1 <= data.input_length < data.total_length, got {d.input_length}, "
                      f"{d.total_length}")
    if not 0 <= s.r_sampling_step_1 < s.r_sampling_step_2:
        errors.append(f"need 0 <= sampling.r_sampling_step_1 < r_sampling_step_2, got "
                      f"{s.r_sampling_step_1}, {s.r_sampling_step_2}")
    if s.r_exp_alpha <= 0:
        errors.append("sampling.r_exp_alpha must be > 0")
    if not 0 <= s.sampling_start_value <= 1 or s.sampling_changing_rate < 0:
        errors.append("sampling.sampling_start_value must be in [0, 1] and sampling_changing_rate >= 0")
    if o.lr <= 0 or o.batch_size < 1 or o.max_iterations < 1:
        errors.append("optim.lr, batch_size and max_iterations must be positive")
    if o.decouple_beta < 0 or o.grad_clip < 0 or o.divergence_loss < 0:
        errors.append("optim.decouple_beta, grad_clip and divergence_loss must be >= 0")
    if o.decouple_beta > 0 and m.arch != "predrnn_v2":
        errors.append(f"optim.decouple_beta > 0 needs model.arch=predrnn_v2 (got {m.arch})")
    if o.eval_interval < 1 or o.checkpoint_interval < 1 or o.keep_best < 1:
        errors.append("optim.eval_interval, checkpoint_interval and keep_best must be >= 1")
    v = cfg.values
    if not (v.std > 0 and v.std < float("inf")) or v.mean != v.mean:
        errors.append(f"values.std must be positive and finite and values.mean a number, got {v.mean}, {v.std}")
    if v.valid_min is not None and v.valid_max is not None and not v.valid_min < v.valid_max:
        errors.append(f"need values.valid_min < values.valid_max, got {v.valid_min}, {v.valid_max}")
    if v.channels and (v.kind != "field" or len(v.channels) != cfg.data.img_channel):
        errors.append(f"values.channels ({len(v.channels)}) apply to a field and need one per channel "
                      f"(data.img_channel={cfg.data.img_channel})")
    for ch in v.channels:
        if not (0 < ch.std < float("inf")) or ch.mean != ch.mean:
            errors.append(f"values.channels[{ch.name}].std must be positive and finite, got {ch.std}")
        if ch.valid_min is not None and ch.valid_max is not None and not ch.valid_min < ch.valid_max:
            errors.append(f"need valid_min < valid_max for channel {ch.name}, got {ch.valid_min}, {ch.valid_max}")
    if c.num_workers < 1 or c.gpus_per_worker < 0 or c.cpus_per_worker <= 0:
        errors.append("compute.num_workers >= 1, gpus_per_worker >= 0, cpus_per_worker > 0 required")
    if errors:
        raise ConfigError("; ".join(errors))
