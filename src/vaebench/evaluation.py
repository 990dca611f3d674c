"""Running a model for evaluation: eval mode, no gradients, float32, optionally a private
seed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from vaebench.precision import full_precision


@contextlib.contextmanager
def evaluating(module: nn.Module | None, seed: int | None = None) -> Iterator[None]:
    """Run the block with ``module`` in eval mode under ``no_grad`` and in float32 (autocast
    off), then restore its mode.

    With ``seed``, the block draws from the global RNG seeded with it and the RNG state
    from before the block is restored afterwards, so results are repeatable and the
    caller's random stream is untouched.
    """
    was_training = bool(module is not None and module.training)
    devices: list[torch.device] = []
    if module is not None:
        devices = sorted({p.device for p in module.parameters() if p.device.type == "cuda"},
                         key=str)
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        if module is not None:
            for device_type in {p.device.type for p in module.parameters()}:
                stack.enter_context(full_precision(device_type))
        if seed is not None:
            stack.enter_context(torch.random.fork_rng(devices=devices))
            torch.manual_seed(seed)
        if module is not None:
            module.eval()
        try:
            yield
        finally:
            if module is not None:
                module.train(was_training)
