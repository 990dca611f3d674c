"""Reconstruction error on held-out data."""

from __future__ import annotations

import math
from typing import Any

import torch

from vaebench.data import as_data
from vaebench.evaluation import evaluating


def reconstruction_error(model: Any, data: Any, batch_size: int = 512) -> dict[str, float]:
    """Squared error between each x and its reconstruction ``model.reconstruct(x)`` (the
    mean of p(x | z) at the posterior mean), in eval mode without gradients.

    Returns ``sse``: the per-sample squared error summed over the sample's dimensions,
    averaged over samples; ``sse_std``: its standard deviation over samples; ``mse``: the
    mean per dimension (``sse / D``), the figure comparable across image sizes.
    """
    data = as_data(data, name="data")
    if len(data) == 0:
        raise ValueError("reconstruction_error needs at least one sample")
    per_sample = []
    with evaluating(model):
        for x in data.batches(batch_size, device=model.device):
            error = (model.reconstruct(x) - x).double() ** 2
            per_sample.append(error.flatten(1).sum(1).cpu())
    sse = torch.cat(per_sample)
    dims = math.prod(data.sample_shape)
    std = float(sse.std()) if len(sse) > 1 else 0.0
    return {"sse": float(sse.mean()), "sse_std": std, "mse": float(sse.mean()) / dims}


def reconstruction_mse(model: Any, data: Any, batch_size: int = 512) -> float:
    """Mean squared error per dimension: ``reconstruction_error(...)["mse"]``."""
    return reconstruction_error(model, data, batch_size)["mse"]
