"""Numeric precision of a run: fp32, or bf16 autocast where the processor computes bf16 natively.

Under bf16 autocast (:func:`torch.autocast`) the convolutions and matrix products take bfloat16 inputs
and accumulate in fp32; the weights stay fp32 and every output this package returns is fp32 in the
data's units. bf16 pays only where the processor has bf16 arithmetic: CUDA GPUs that support it, and
CPUs with AVX512-BF16 or AMX (recent Xeons, AMD Zen 4 and later). Elsewhere PyTorch emulates it, and
emulated bf16 is many times slower than fp32 (measured on an AVX2 CPU: forecast x20, training step
x13 slower), so ``auto`` never picks it there.

``auto`` per task (the measurements behind it are in ``docs/precision.md``):

- ``forecast`` (predict, forecast, serve, evaluate): bf16 on CUDA and on CPUs with native bf16; fp32
  elsewhere.
- ``train``: bf16 on CUDA (as the authors' GPU setting allows); fp32 on every CPU, because bf16
  training on the CPU has not been shown to keep the scores (``compute.amp=bf16`` opts in).

Only PyTorch and the standard library are imported here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Literal

import torch

from predrnn.errors import PredrnnError

Precision = Literal["bf16", "fp32"]
Requested = Literal["auto", "bf16", "fp32"]
Task = Literal["forecast", "train"]
CHOICES: tuple[str, ...] = ("auto", "bf16", "fp32")


class PrecisionError(PredrnnError, ValueError):
    """A precision that is not one of ``auto``, ``bf16``, ``fp32``."""


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles), as PyTorch detects it.

    PyTorch builds without the CPU-feature queries count as False (fp32 is never the wrong choice)."""
    cpu: Any = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def has_native_bf16(device: torch.device | str) -> bool:
    """True when ``device`` (``cpu``, ``cuda``, ``cuda:N``) computes bf16 natively.

    A CUDA device this process cannot see (Ray workers on GPU nodes, driven from a CPU machine) is
    taken to have it, as every GPU since Ampere has."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return True
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def normalise(requested: str) -> str:
    """``auto``, ``bf16`` or ``fp32`` (``none``, the older spelling of fp32, is read as ``fp32``).

    Raises:
        PrecisionError: any other value, naming the choices.
    """
    value = {"none": "fp32", "fp32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16",
             "auto": "auto"}.get(str(requested).strip().lower())
    if value is None:
        raise PrecisionError(f"precision must be one of auto, bf16, fp32; got {requested!r}")
    return value


def resolve_precision(requested: str, device: torch.device | str, task: Task,
                      native_bf16: Callable[[torch.device], bool] = has_native_bf16) -> Precision:
    """The precision to run ``task`` with on ``device``: ``bf16`` or ``fp32``.

    ``bf16`` and ``fp32`` are kept as asked (bf16 on a processor without it runs, emulated and slow);
    ``auto`` follows the rule in this module's docstring. ``native_bf16`` is the hardware check (by
    default :func:`has_native_bf16`), injectable for tests and for a driver that resolves for workers.

    Raises:
        PrecisionError: ``requested`` is not ``auto``, ``bf16`` or ``fp32``.
    """
    value = normalise(requested)
    if value != "auto":
        return "bf16" if value == "bf16" else "fp32"
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if native_bf16(device) else "fp32"
    if task == "forecast" and native_bf16(device):
        return "bf16"
    return "fp32"


def describe(requested: str, resolved: str, device: torch.device | str, task: Task = "forecast") -> str:
    """One line for the user, e.g. ``precision bf16 (auto: this CPU has native bf16)``."""
    device = torch.device(device)
    where = "GPU" if device.type == "cuda" else "CPU"
    if normalise(requested) != "auto":
        if resolved == "bf16" and not has_native_bf16(device):
            return (f"precision bf16 (asked; this {where} has no native bf16: PyTorch emulates it, which is often "
                    "many times slower than fp32)")
        return f"precision {resolved} (asked)"
    if resolved == "bf16":
        return f"precision bf16 (auto: this {where} has native bf16)"
    if task == "train" and device.type == "cpu":
        return "precision fp32 (auto: training on the CPU stays fp32; --precision bf16 opts in)"
    return f"precision fp32 (auto: this {where} has no native bf16)"


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of a resolved precision: bf16 autocast on ``device``'s type, or nothing for fp32.

    Raises:
        PrecisionError: ``precision`` is not ``bf16`` or ``fp32`` (resolve ``auto`` first).
    """
    value = normalise(precision)
    if value == "auto":
        raise PrecisionError("precision 'auto' must be resolved (resolve_precision) before it is used")
    if value == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
