"""The trainer's fast paths: mixed precision (bf16, or fp16 with loss scaling), compiled
networks and the channels-last memory format.

A precision is refused where it would not pay off (emulated half precision runs many times
slower than fp32) rather than silently slowing training down. Reduced precision reaches
only the encoder and decoder; every loss term is computed in float32
(:mod:`vaebench.precision`). Compiling and channels-last last for one fit: afterwards the
networks are plain again, and their state-dict keys never change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaebench.precision import full_precision, replaced_forward
from vaebench.training.config import TrainerConfig

#: /proc/cpuinfo flags of native bfloat16 arithmetic: x86 (AVX-512 BF16, AMX) and Arm.
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
_HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The processor's feature flags (empty where ``cpuinfo`` cannot be read)."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return set()
    return {flag for line in lines if line.startswith(("flags", "Features"))
            for flag in line.partition(":")[2].split()}


def cpu_has_native_bf16() -> bool:
    """Whether this processor computes in bfloat16 natively."""
    return bool(CPU_BF16_FLAGS & cpu_flags())


def precision_refusal(precision: str, device: torch.device) -> str | None:
    """Why ``precision`` should not train on ``device``; None when it may."""
    if precision == "fp32" or device.type == "cuda" and precision == "fp16":
        return None
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return None
        return ("precision='bf16' needs a GPU with native bfloat16 (compute capability 8.0 or "
                "later); use precision='fp16' (--precision fp16) on this GPU")
    if device.type == "cpu" and precision == "bf16":
        if cpu_has_native_bf16():
            return None
        return ("precision='bf16' on a CPU needs native bfloat16 (the avx512_bf16 or amx_bf16 "
                "instructions), which this processor lacks: emulated bfloat16 trains many "
                "times slower than fp32. Use precision='fp32' (--precision fp32) or a CUDA "
                "device")
    if device.type == "cpu":
        return ("precision='fp16' needs a CUDA device: on a CPU float16 is emulated and trains "
                "many times slower than fp32. Use precision='bf16' on a CPU with native "
                "bfloat16, or precision='fp32'")
    return (f"precision={precision!r} runs on CUDA devices and on CPUs with native bfloat16, "
            f"not on {device.type}; use precision='fp32'")


def _channels_last_inputs(forward: Callable[..., Any]) -> Callable[..., Any]:
    """A ``replaced_forward`` wrap: 4-D tensor arguments (image batches) in channels-last."""

    def run(*args: Any, **kwargs: Any) -> Any:
        return forward(*(_channels_last(value) for value in args), **kwargs)

    return run


def _channels_last(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() == 4:
        return value.contiguous(memory_format=torch.channels_last)
    return value


class FastPaths:
    """The precision, compiling and memory format a :class:`TrainerConfig` asks for, on
    ``device``; a refused precision raises ``ValueError`` here, before any training."""

    def __init__(self, config: TrainerConfig, device: torch.device):
        refusal = precision_refusal(config.precision, device)
        if refusal is not None:
            raise ValueError(refusal)
        self.config = config
        self.device_type = device.type
        self.dtype = _HALF_DTYPES.get(config.precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
        self._undo = contextlib.ExitStack()

    # --- one training step ----------------------------------------------------------------
    def autocast(self) -> torch.autocast:
        """The context of a training step: autocast in the chosen precision (off for fp32)."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def backward(self, loss: torch.Tensor, **options: Any) -> None:
        """Back-propagate ``loss`` (multiplied by the loss scale under fp16), autocast off."""
        with full_precision(self.device_type):
            self.scaler.scale(loss).backward(**options)

    def step(self, optimizer: torch.optim.Optimizer, parameters: list[torch.Tensor],
             max_norm: float | None) -> None:
        """Clip the true (unscaled) gradients of ``parameters`` to ``max_norm`` if given,
        then step ``optimizer``; under fp16 a step with overflowed gradients is skipped."""
        if max_norm is not None:
            self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(parameters, max_norm)
        self.scaler.step(optimizer)

    def update_scale(self) -> None:
        """After the optimizer steps of one update: adjust the fp16 loss scale."""
        self.scaler.update()

    # --- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The loss scaler's state (empty unless fp16), JSON-serializable."""
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Go on with a checkpoint's loss scale (a run without one starts afresh)."""
        if state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state)

    # --- the networks, for one fit --------------------------------------------------------
    def apply(self, model: nn.Module) -> None:
        """Put the model's encoder and decoder in channels-last format and compile them, as
        the config asks, until :meth:`restore`."""
        for network in (model.encoder, model.decoder):
            if self.config.channels_last:
                network.to(memory_format=torch.channels_last)
                self._undo.callback(network.to, memory_format=torch.contiguous_format)
                self._undo.enter_context(replaced_forward(network, _channels_last_inputs))
            if self.config.compile:
                self._undo.enter_context(replaced_forward(network, self._compiled))

    def restore(self) -> None:
        """Undo :meth:`apply`: plain forwards, weights in the default memory format."""
        self._undo.close()

    def _compiled(self, forward: Callable[..., Any]) -> Callable[..., Any]:
        return torch.compile(forward, backend=self.config.compile_backend)
