"""Evaluation metrics."""

from __future__ import annotations

from typing import Any

import torch

from vaebench.data import as_data


@torch.no_grad()
def reconstruction_mse(model: Any, data: Any, batch_size: int = 512) -> float:
    """Mean squared error per dimension between x and its reconstruction (posterior mean)."""
    data = as_data(data, name="data")
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64)
    try:
        for x in data.batches(batch_size, device=model.device):
            total += ((model.reconstruct(x) - x) ** 2).sum().double().cpu()
    finally:
        model.train(was_training)
    return float(total) / (len(data) * data.x[0].numel())


__all__ = ["reconstruction_mse"]
