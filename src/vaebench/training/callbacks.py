"""What the trainer tells its callbacks: a run starts, an epoch ends, a checkpoint is
written, the run ends.

Subclass :class:`Callback` and override the methods you need (each does nothing by
default); a plain function given to ``Trainer(callbacks=[fn])`` is called with each
epoch's record, as :meth:`Callback.on_epoch_end`.

Under ``torchrun`` every process calls its callbacks (each process sees the same records:
the figures are those of the whole batches), except ``on_checkpoint``, called where the
checkpoint is written, and callbacks whose ``main_process_only`` is true (the loggers of
:mod:`vaebench.integrations.trackers`): those run in rank 0 alone, the process that writes
the run's files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vaebench.training.trainer import Trainer

__all__ = ["Callback", "as_callback"]


class Callback:
    """Hooks of one :meth:`Trainer.fit <vaebench.training.Trainer.fit>`, in this order:
    ``on_run_start`` once, ``on_epoch_end`` after every epoch, ``on_checkpoint`` after
    every checkpoint written, ``on_run_end`` once training has finished (not when it
    stops with an exception)."""

    #: True: called in rank 0 only when several processes train data-parallel.
    main_process_only = False

    def on_run_start(self, trainer: Trainer) -> None:
        """Training starts (after a resumed checkpoint was read: ``trainer.history`` then
        holds the epochs done before)."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """An epoch ended; ``record`` is its history entry (epoch, train_* and eval_*
        terms, lr, seconds)."""

    def on_checkpoint(self, trainer: Trainer, folder: Path) -> None:
        """A resumable checkpoint was written to ``folder`` (called in rank 0 alone, the
        process that writes checkpoints)."""

    def on_run_end(self, trainer: Trainer, history: list[dict[str, Any]]) -> None:
        """Training ended; the model holds the weights it keeps and, with an output folder,
        ``model/`` and ``history.json`` are written."""


class _EpochFunction(Callback):
    """A plain function called with each epoch's record."""

    def __init__(self, function: Callable[[dict[str, Any]], Any]):
        self.function = function

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.function(record)


def as_callback(callback: Callback | Callable[[dict[str, Any]], Any]) -> Callback:
    """``callback`` itself, or a plain function wrapped as an ``on_epoch_end`` callback."""
    if isinstance(callback, Callback):
        return callback
    if not callable(callback):
        raise TypeError(f"a callback must be a Callback or a function of the epoch record, "
                        f"got {type(callback).__name__}")
    return _EpochFunction(callback)
