"""Model directories and interop with the authors' checkpoint files.

Our model directory holds ``config.json`` (the full :class:`ExperimentConfig`) and ``model.pt``
(a plain state dict). Writes go to a temporary sibling that is renamed into place, so a directory
is either complete or absent.

The authors' files hold ``{'net_param': state_dict}`` with keys ``cell_list.{l}.conv_x.0.weight``
etc. (see :mod:`predrnn.models.predrnn`). Our module names equal theirs, so the mapping is the
identity; the work is inferring the architecture from tensor shapes and checking every key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from predrnn.config import DataConfig, ExperimentConfig, ModelConfig, SamplingConfig
from predrnn.errors import PredrnnError
from predrnn.models import build_model

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"


class CheckpointError(PredrnnError, ValueError):
    """A checkpoint file or directory is missing, corrupt or does not fit the model."""


def save_model_dir(path: str | Path, model: nn.Module, cfg: ExperimentConfig,
                   extra: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` + ``model.pt`` atomically (temp dir, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        core = getattr(model, "module", model)
        state = {k: v.detach().cpu().contiguous() for k, v in core.state_dict().items()}
        torch.save(state, tmp / WEIGHTS_FILE)
        meta = cfg.to_dict()
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        if extra:
            (tmp / "extra.json").write_text(json.dumps(extra, indent=2, sort_keys=True))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_model_dir(path: str | Path, *, map_location: str | torch.device = "cpu"
                   ) -> tuple[nn.Module, ExperimentConfig]:
    """Load a model directory written by :func:`save_model_dir` (weights-only unpickling)."""
    path = Path(path)
    cfg_file, weights = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not cfg_file.is_file() or not weights.is_file():
        raise CheckpointError(f"{path} is not a model directory (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    cfg = ExperimentConfig.from_json(cfg_file.read_text())
    model = build_model(cfg)
    state = _torch_load(weights, map_location)
    load_state_checked(model, state, source=str(weights))
    model.eval()
    return model, cfg


def _torch_load(file: str | Path, map_location: str | torch.device) -> Any:
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file not found: {file}") from None
    except Exception as err:  # corrupt zip, truncated file, unsafe pickle...
        raise CheckpointError(f"cannot read checkpoint {file}: {type(err).__name__}: {err}") from err


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], *, source: str = "state dict") -> None:
    """Load ``state`` into ``model`` after checking keys and shapes; the error names the first mismatch."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise CheckpointError(f"{source}: missing key {key!r} (expected shape {tuple(tensor.shape)})")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{source}: key {key!r} has shape {tuple(state[key].shape)}, "
                                  f"model expects {tuple(tensor.shape)}")
    for key in state:
        if key not in expected:
            raise CheckpointError(f"{source}: unexpected key {key!r}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


# ---------------------------------------------------------------------------------------------
# The authors' format.

_CELL_KEY = re.compile(r"^cell_list\.(\d+)\.")


def read_official(file: str | Path) -> dict[str, torch.Tensor]:
    """The state dict inside an authors'-format file (saved on GPU or CPU)."""
    blob = _torch_load(file, "cpu")
    if not isinstance(blob, dict) or "net_param" not in blob:
        raise CheckpointError(f"{file}: expected a dict with key 'net_param' (the authors' format)")
    state = blob["net_param"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{file}: 'net_param' is not a state dict of tensors")
    # DataParallel-saved files prefix every key with "module.".
    return {k.removeprefix("module."): v for k, v in state.items()}


def infer_official_config(state: dict[str, torch.Tensor], *, patch_size: int, channels: int,
                          input_length: int = 10, total_length: int | None = None,
                          img_height: int | None = None, img_width: int | None = None) -> ExperimentConfig:
    """Architecture from tensor shapes: V1/V2, layers, width, kernel, layer norm (and frame size if LN).

    Without layer norm the network is fully convolutional: the frame size recorded (``img_height``/
    ``img_width``, default 64) only sets the default, and forecasts take any size divisible by the patch.

    Raises:
        CheckpointError: not a PredRNN state dict, channels that disagree with ``patch_size`` and
            ``channels``, or an action-conditioned (BAIR) checkpoint.
    """
    action = sorted(k for k in state if re.search(r"(^|\.)conv_a(\.|$)|action", k))
    if action:
        raise CheckpointError(f"{action[0]}: an action-conditioned checkpoint (the authors' BAIR model, "
                              "predrnn_v2 with actions); conditioning on actions is not supported")
    layers = sorted({int(m.group(1)) for k in state if (m := _CELL_KEY.match(k))})
    if not layers or layers != list(range(len(layers))):
        raise CheckpointError("no cell_list.{l}.* keys found: not a PredRNN checkpoint")
    key_h = "cell_list.0.conv_h.0.weight"
    key_x = "cell_list.0.conv_x.0.weight"
    for key in (key_h, key_x, "conv_last.weight"):
        if key not in state:
            raise CheckpointError(f"missing key {key!r}")
    width, k = state[key_h].shape[1], state[key_h].shape[-1]
    cin = state[key_x].shape[1]
    if cin != patch_size * patch_size * channels:
        raise CheckpointError(f"{key_x} has {cin} input channels; --patch-size {patch_size} and "
                              f"--channels {channels} give {patch_size * patch_size * channels}")
    layer_norm = "cell_list.0.conv_x.1.weight" in state
    if layer_norm:
        _, hp, wp = state["cell_list.0.conv_x.1.weight"].shape
        img_height, img_width = hp * patch_size, wp * patch_size
    arch: Literal["predrnn_v2", "predrnn"] = "predrnn_v2" if "adapter.weight" in state else "predrnn"
    base = ExperimentConfig(name="imported")
    cfg = dataclasses.replace(
        base,
        model=ModelConfig(arch=arch, num_hidden=(int(width),) * len(layers), filter_size=int(k),
                          patch_size=patch_size, layer_norm=layer_norm),
        sampling=SamplingConfig(scheme="rss" if arch == "predrnn_v2" else "ss"),
        data=DataConfig(img_height=img_height or 64, img_width=img_width or 64, img_channel=channels,
                        input_length=input_length, total_length=total_length or 2 * input_length),
        optim=dataclasses.replace(base.optim, decouple_beta=base.optim.decouple_beta if arch == "predrnn_v2"
                                  else 0.0),
    )
    return cfg


def import_official(file: str | Path, out_dir: str | Path, *, patch_size: int, channels: int,
                    input_length: int = 10, img_height: int | None = None,
                    img_width: int | None = None) -> tuple[nn.Module, ExperimentConfig]:
    """Read an authors'-format file and write our model directory; returns the loaded model."""
    state = read_official(file)
    cfg = infer_official_config(state, patch_size=patch_size, channels=channels, input_length=input_length,
                                img_height=img_height, img_width=img_width)
    model = build_model(cfg)
    load_state_checked(model, state, source=str(file))
    model.eval()
    save_model_dir(out_dir, model, cfg, extra={"imported_from": str(file)})
    return model, cfg


def export_official(model: nn.Module, file: str | Path) -> None:
    """Write ``{'net_param': state_dict}`` with the authors' key layout."""
    core = getattr(model, "module", model)
    state = {k: v.detach().cpu() for k, v in core.state_dict().items()}
    torch.save({"net_param": state}, file)
