"""Reduced precision stays inside the networks.

Under an active ``torch.autocast`` a model's encoder and decoder run in bfloat16 or float16
(their matrix products and convolutions are where the speed is) and hand back float32;
every term of the objective (likelihood, KL, regularizers, flows, quantizers) is computed
with autocast off, on float32 inputs. Evaluation runs in float32 throughout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

HALF_DTYPES = (torch.float16, torch.bfloat16)


def as_float32(value: Any) -> Any:
    """``value`` with its half-precision tensors cast to float32 (also inside tuples and
    lists); anything else is returned as it is."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in HALF_DTYPES else value
    if isinstance(value, (tuple, list)):
        return type(value)(as_float32(item) for item in value)
    return value


def full_precision(device_type: str) -> torch.autocast:
    """A context in which autocast is off for ``device_type`` ('cpu', 'cuda', ...)."""
    return torch.autocast(device_type, enabled=False)


@contextlib.contextmanager
def replaced_forward(module: nn.Module,
                     wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Iterator[None]:
    """Within the block ``module.forward`` is ``wrap(forward)``; afterwards the forward it
    had is back. Parameters and state-dict keys are untouched."""
    own = module.__dict__.get("forward")
    module.forward = wrap(module.forward)
    try:
        yield
    finally:
        if own is None:
            del module.forward
        else:
            module.forward = own


def _autocast_then_float32(device_type: str, dtype: torch.dtype):
    """A ``wrap`` for :func:`replaced_forward`: forward under autocast, float32 out."""

    def wrap(forward: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            with torch.autocast(device_type, dtype=dtype):
                return as_float32(forward(*args, **kwargs))

        return run

    return wrap


@contextlib.contextmanager
def autocast_in_networks_only(model: nn.Module, device_type: str) -> Iterator[None]:
    """Run the block (a model's objective) with any active autocast kept to the model's
    ``encoder`` and ``decoder``, whose outputs come back float32; elsewhere autocast is off,
    so the terms are computed in float32. Without an active autocast it changes nothing."""
    if not torch.is_autocast_enabled(device_type):
        yield
        return
    wrap = _autocast_then_float32(device_type, torch.get_autocast_dtype(device_type))
    with contextlib.ExitStack() as stack:
        for network in (model.encoder, model.decoder):
            stack.enter_context(replaced_forward(network, wrap))
        stack.enter_context(full_precision(device_type))
        yield
