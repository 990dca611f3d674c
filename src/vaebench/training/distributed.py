"""Data-parallel training: the trainer's side of a run under ``torchrun``.

``torchrun --nproc_per_node N`` starts N processes with ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK`` set; :func:`data_parallel` joins them in a process group (gloo on CPU, nccl
on CUDA, each process on ``cuda:LOCAL_RANK``) unless one exists, and :class:`DataParallel`
is what the trainer does differently with it:

* every process draws the same shuffled order; global batch i is what one process with
  batch N * batch_size takes, and process r trains on its r-th contiguous part (sizes differ
  by at most one row; a process whose part is empty trains on a stand-in sample that
  counts for nothing);
* before each optimizer step the gradients of the group are summed over the processes in
  one flat buffer, each weighted by its share of the batch: the gradient of the batch mean;
* models' batch statistics are exchanged through :mod:`vaebench.collectives`; parameters
  and buffers are broadcast from rank 0 when training starts, buffers again at the end of
  every epoch;
* evaluation sums are summed over the processes; only rank 0 writes files.

With one process every method does what a single process does.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.rendezvous import rendezvous

from vaebench import collectives

__all__ = ["DataParallel", "data_parallel", "is_main_process", "process_device"]

#: torchrun's key-value store, joined once per process, and the groups made on it so far.
_store: dist.Store | None = None
_groups_made = 0


def launched_processes() -> int:
    """The number of processes ``torchrun`` started (``WORLD_SIZE``), 1 without it."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this process is rank 0 (the one that writes and prints), or alone."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def process_device(device: torch.device) -> torch.device:
    """``device``, or ``cuda:LOCAL_RANK`` for a CUDA device when several processes run."""
    if device.type == "cuda" and launched_processes() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@contextlib.contextmanager
def data_parallel(device: torch.device) -> Iterator[DataParallel]:
    """The :class:`DataParallel` of this process for the block: the process group that
    exists, or one created from the environment (and destroyed after the block) when
    ``torchrun`` started several processes, or a single process."""
    created = False
    if dist.is_available() and not dist.is_initialized() and launched_processes() > 1:
        _make_process_group(device)
        created = True
    joined = dist.is_available() and dist.is_initialized()
    parallel = (DataParallel(dist.get_rank(), dist.get_world_size(), device) if joined
                else DataParallel(device=device))
    try:
        yield parallel
        parallel.barrier()  # rank 0's files are complete when fit returns anywhere
    finally:
        collectives.end_data_parallel_steps()
        if created:
            dist.destroy_process_group()


def _make_process_group(device: torch.device) -> None:
    """The default process group of torchrun's processes, its keys under a prefix of its
    own: torch names every new default group alike, and a group made after another was
    destroyed (a second fit) would read the first one's stale keys."""
    global _store, _groups_made
    if _store is None:
        _store, _, _ = next(rendezvous("env://"))
    _groups_made += 1
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            store=dist.PrefixStore(f"vaebench_{_groups_made}", _store),
                            rank=int(os.environ["RANK"]), world_size=launched_processes())


class DataParallel:
    """This process's place in a data-parallel run (rank ``rank`` of ``world_size``)."""

    def __init__(self, rank: int = 0, world_size: int = 1,
                 device: torch.device | None = None):
        self.rank, self.world_size = rank, world_size
        self.device = device or torch.device("cpu")
        self.share = 1.0  # this process's fraction of the current batch

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def part(self) -> tuple[int, int] | None:
        """``ArrayData.batches``'s ``part`` for this process's share of each batch."""
        return (self.rank, self.world_size) if self.active else None

    def global_batch(self, batch_size: int) -> int:
        """The batch of all processes together, ``batch_size`` being one process's."""
        return batch_size * self.world_size

    def seed(self, seed: int) -> int:
        """The seed of this process's global random stream: ``seed + rank``."""
        return seed + self.rank

    def check_size(self, data: Any) -> None:
        """Refuse data with fewer samples than processes."""
        if len(data) < self.world_size:
            raise ValueError(f"{data.name} has {len(data)} samples, fewer than the "
                             f"{self.world_size} data-parallel processes")

    # --- training steps -----------------------------------------------------------------
    def training_batches(self, batches: Iterator[Any],
                         sizes: list[int]) -> Iterator[Any]:
        """This process's ``(x, inputs)`` of each global batch (of ``sizes[i]`` rows), each
        yielded inside a data-parallel step with :attr:`share` set; an empty part becomes a
        stand-in (the previous part's first sample) whose share is 0."""
        if not self.active:
            yield from batches
            return
        previous: Any = None
        for size, (x, inputs) in zip(sizes, batches, strict=True):
            self.share = len(x) / size
            if len(x) == 0:
                x, inputs = previous[0][:1], {k: v[:1] for k, v in previous[1].items()}
            previous = (x, inputs)
            with collectives.data_parallel_step(contributes=self.share > 0):
                yield x, inputs
        self.share = 1.0

    def counted(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A step's batch sums as this process adds them: zeros for a stand-in."""
        return sums if self.share > 0 else {k: torch.zeros_like(v) for k, v in sums.items()}

    def average_gradients(self, parameters: list[nn.Parameter]) -> None:
        """Make each gradient the share-weighted sum over the processes (the gradient of
        the global batch mean), one all-reduce per dtype. A gradient missing here but
        present elsewhere counts as zeros; one missing everywhere stays ``None``."""
        if not self.active:
            return
        for dtype in sorted({p.dtype for p in parameters}, key=str):
            self._average_gradients([p for p in parameters if p.dtype == dtype])

    def _average_gradients(self, parameters: list[nn.Parameter]) -> None:
        present = [p.grad is not None for p in parameters]
        flat = [(p.grad if has else torch.zeros_like(p)).reshape(-1) * self.share
                for p, has in zip(parameters, present, strict=True)]
        flat.append(torch.tensor(present, dtype=parameters[0].dtype, device=self.device))
        bucket = torch.cat(flat)
        dist.all_reduce(bucket)
        gradients = bucket.split([p.numel() for p in parameters] + [len(parameters)])
        anywhere = (gradients[-1] > 0).tolist()
        for param, gradient, needed in zip(parameters, gradients[:-1], anywhere, strict=True):
            if needed:
                if param.grad is None:
                    param.grad = torch.empty_like(param)
                param.grad.copy_(gradient.view_as(param))

    # --- state --------------------------------------------------------------------------
    def broadcast_state(self, model: nn.Module) -> None:
        """Every parameter and buffer of rank 0 in every process."""
        self._broadcast([*model.parameters(), *model.buffers()])

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Every buffer of rank 0 in every process (the end of an epoch: statistics no
        model exchanges itself, such as BatchNorm's running averages, become rank 0's)."""
        self._broadcast(list(model.buffers()))

    def _broadcast(self, tensors: list[torch.Tensor]) -> None:
        if not self.active:
            return
        with torch.no_grad():
            for tensor in tensors:
                dist.broadcast(tensor.data, 0)

    def summed(self, records: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        """Records of scalar sums (same names everywhere) summed over the processes, in
        one all-reduce (in float64)."""
        if not self.active or not records:
            return records
        names = list(records[0])
        table = torch.stack([torch.stack([r[n].double() for n in names]) for r in records])
        dist.all_reduce(table)
        return [{n: value.to(r[n].dtype) for n, value in zip(names, row, strict=True)}
                for r, row in zip(records, table, strict=True)]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    # --- random streams in checkpoints --------------------------------------------------
    def rng_states(self) -> list[list[int]] | None:
        """Every process's global random state (rank order), for a checkpoint."""
        if not self.active:
            return None
        state = torch.get_rng_state().to(self._wire_device)
        states = [torch.empty_like(state) for _ in range(self.world_size)]
        dist.all_gather(states, state)
        return [s.cpu().tolist() for s in states]

    def restore_rng(self, saved: list[list[int]] | None, seed: int, epoch: int) -> None:
        """After rank 0's random state is restored: this process's own, if the checkpoint
        was written by as many processes, else a fresh stream for ranks > 0."""
        if not self.active:
            return
        if isinstance(saved, list) and len(saved) == self.world_size:
            torch.set_rng_state(torch.tensor(saved[self.rank], dtype=torch.uint8))
        elif self.rank > 0:
            torch.manual_seed(self.seed(seed) + self.world_size * epoch)

    @property
    def _wire_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")
