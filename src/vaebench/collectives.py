"""Batch statistics of a data-parallel training step, made those of the whole batch.

In a data-parallel run (:mod:`vaebench.training.distributed`) every process trains on its
part of each batch. State that a training step updates from its batch (EMA codebooks, code
usage, running statistics, ring buffers of codes, random restarts) must make the same update
in every process, the one a single process makes with the whole batch: models compute such
updates from these functions. Outside a data-parallel training step (one process,
evaluation, a user's own loop) each returns its input unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist

__all__ = ["batch_mean", "from_first_rank", "gathered_over_ranks", "summed_over_ranks"]

#: Whether this process adds to the current step's statistics, while a data-parallel
#: training step runs (``None`` otherwise). A process whose part of the batch is empty
#: trains on a stand-in sample and adds nothing.
_contributes: bool | None = None


@contextlib.contextmanager
def data_parallel_step(contributes: bool) -> Iterator[None]:
    """Make the functions of this module exchange with the other processes in the block
    (the trainer runs each data-parallel training step in one)."""
    global _contributes
    previous, _contributes = _contributes, contributes
    try:
        yield
    finally:
        _contributes = previous


def end_data_parallel_steps() -> None:
    """Leave any data-parallel step (when the process group goes away)."""
    global _contributes
    _contributes = None


def summed_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """``values`` (statistics of this process's part of the batch) summed over every
    process: those of the whole batch. The input is left as it is."""
    if _contributes is None:
        return values
    total = values.clone() if _contributes else torch.zeros_like(values)
    dist.all_reduce(total)
    return total


def batch_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of per-sample ``values`` (N,) over the whole batch."""
    if _contributes is None:
        return values.mean()
    total, count = summed_over_ranks(torch.stack([values.sum(), values.new_tensor(len(values))]))
    return total / count


def gathered_over_ranks(rows: torch.Tensor) -> torch.Tensor:
    """The rows (N, ...) of every process's part of the batch, concatenated in rank order:
    the whole batch's rows in the order of one process."""
    if _contributes is None:
        return rows
    rows = rows if _contributes else rows[:0]
    counts = [torch.zeros(1, dtype=torch.long, device=rows.device)
              for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([len(rows)], device=rows.device))
    counts = [int(count) for count in counts]
    padded = rows.new_zeros(max(counts), *rows.shape[1:])
    padded[:len(rows)] = rows
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)])


def from_first_rank(values: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``values`` in every process: a random draw that all processes must share."""
    if _contributes is None:
        return values
    values = values.clone()
    dist.broadcast(values, 0)
    return values
