"""One trainer for every model: shuffled-index batches, optimizer and scheduler by name,
clipping, seeding, best-model tracking, history and checkpoints."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vaebench.data import ArrayData, as_data
from vaebench.models.base import Autoencoder
from vaebench.serialization import load_tensors, save_model, save_tensors, write_json
from vaebench.training.config import TrainerConfig

_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but CUDA is not available")
    return torch.device(device)


@torch.no_grad()
def evaluate(model: Autoencoder, data: Any, batch_size: int = 512) -> dict[str, float]:
    """Mean loss and mean of each per-sample term over ``data``, in eval mode."""
    data = as_data(data, name="eval data")
    was_training = model.training
    model.eval()
    device = model.device
    totals: dict[str, torch.Tensor] = {}
    try:
        for x in data.batches(batch_size, device=device):
            _accumulate(totals, model(x))
    finally:
        model.train(was_training)
    return {k: float(v) / len(data) for k, v in totals.items()}


def _accumulate(totals: dict[str, torch.Tensor], output: Any) -> None:
    """Add the batch's sums of the loss and of every term to ``totals`` (no sync)."""
    n = output.recon_x.shape[0]
    pairs = [("loss", output.loss.detach() * n)]
    pairs += [(name, term.detach().sum()) for name, term in output.terms.items()]
    for name, value in pairs:
        totals[name] = totals[name] + value if name in totals else value


class Trainer:
    """Train ``model`` with :class:`TrainerConfig`; :meth:`fit` returns the history."""

    def __init__(self, model: Autoencoder, config: TrainerConfig | None = None,
                 callbacks: list[Callable[[dict[str, Any]], None]] | None = None):
        self.model = model
        self.config = config or TrainerConfig()
        self.callbacks = list(callbacks or [])
        self.device = resolve_device(self.config.device)
        self.output_dir = Path(self.config.output_dir) if self.config.output_dir else None
        self.history: list[dict[str, Any]] = []
        self.best_eval_loss = math.inf
        self.best_epoch: int | None = None

    def _build_optimizer(self) -> torch.optim.Optimizer:
        cls = _OPTIMIZERS[self.config.optimizer]
        try:
            return cls(self.model.parameters(), lr=self.config.learning_rate,
                       **self.config.optimizer_kwargs)
        except TypeError as err:
            raise ValueError(f"optimizer_kwargs {self.config.optimizer_kwargs} are not valid for "
                             f"{self.config.optimizer}: {err}") from err

    def _build_scheduler(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
        name, kwargs = self.config.scheduler, dict(self.config.scheduler_kwargs)
        sched = torch.optim.lr_scheduler
        builders = {
            "none": lambda: None,
            "step": lambda: sched.StepLR(optimizer, **{"step_size": 10, **kwargs}),
            "exponential": lambda: sched.ExponentialLR(optimizer, **{"gamma": 0.95, **kwargs}),
            "cosine": lambda: sched.CosineAnnealingLR(
                optimizer, **{"T_max": self.config.epochs, **kwargs}),
            "plateau": lambda: sched.ReduceLROnPlateau(optimizer, **kwargs),
            "onecycle": lambda: sched.OneCycleLR(
                optimizer, **{"max_lr": self.config.learning_rate,
                              "total_steps": self.config.epochs * steps_per_epoch, **kwargs}),
        }
        try:
            return builders[name]()
        except TypeError as err:
            raise ValueError(f"scheduler_kwargs {kwargs} are not valid for {name}: {err}") from err

    def fit(self, train_data: Any, eval_data: Any = None,
            resume_from: str | Path | None = None) -> list[dict[str, Any]]:
        """Train; returns one record per epoch (train and eval loss and every term)."""
        cfg = self.config
        train = as_data(train_data, name="train data")
        train.check(self.model.config.input_dim)
        evaluation = None
        if eval_data is not None:
            evaluation = as_data(eval_data, name="eval data")
            evaluation.check(self.model.config.input_dim)
        torch.manual_seed(cfg.seed)
        shuffle = torch.Generator().manual_seed(cfg.seed)
        model = self.model.to(self.device)
        train = train.to(self.device)
        evaluation = evaluation.to(self.device) if evaluation is not None else None
        model.prepare(train)
        steps = train.num_batches(cfg.batch_size, cfg.drop_last)
        if steps == 0:
            raise ValueError(f"train data has {len(train)} samples, fewer than one batch of "
                             f"{cfg.batch_size} with drop_last=True")
        optimizer = self._build_optimizer()
        scheduler = self._build_scheduler(optimizer, steps)
        first_epoch = 1
        if resume_from is not None:
            first_epoch = self._resume(Path(resume_from), optimizer, scheduler, shuffle) + 1
        best_state = None
        bar = tqdm(total=(cfg.epochs - first_epoch + 1) * steps, disable=not cfg.progress,
                   desc=model.name, unit="step", dynamic_ncols=True)
        try:
            for epoch in range(first_epoch, cfg.epochs + 1):
                record = self._train_epoch(epoch, train, optimizer, scheduler, shuffle, bar)
                if evaluation is not None:
                    record.update({f"eval_{k}": v for k, v in
                                   evaluate(model, evaluation, cfg.eval_batch_size).items()})
                if scheduler is not None and not isinstance(
                        scheduler, torch.optim.lr_scheduler.OneCycleLR):
                    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                        scheduler.step(record.get("eval_loss", record["train_loss"]))
                    else:
                        scheduler.step()
                self.history.append(record)
                if evaluation is not None and record["eval_loss"] < self.best_eval_loss:
                    self.best_eval_loss, self.best_epoch = record["eval_loss"], epoch
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    if self.output_dir is not None:
                        save_model(model, self.output_dir / "model")
                for callback in self.callbacks:
                    callback(record)
                last = epoch == cfg.epochs
                if self.output_dir is not None:
                    write_json(self.output_dir / "history.json", self.history)
                    if last or (cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0):
                        self._checkpoint(epoch, optimizer, scheduler, shuffle)
        finally:
            bar.close()
        if cfg.keep_best and best_state is not None:
            model.load_state_dict(best_state)
        elif self.output_dir is not None:
            save_model(model, self.output_dir / "model")
        return self.history

    def _train_epoch(self, epoch, train: ArrayData, optimizer, scheduler, shuffle, bar):
        cfg, model = self.config, self.model
        model.train()
        start = time.perf_counter()
        totals: dict[str, torch.Tensor] = {}
        one_cycle = isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
        batches = train.batches(cfg.batch_size, shuffle=True, generator=shuffle,
                                drop_last=cfg.drop_last, device=self.device)
        for step, x in enumerate(batches, 1):
            output = model(x)
            optimizer.zero_grad(set_to_none=True)
            output.loss.backward()
            if cfg.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
            optimizer.step()
            if one_cycle:
                scheduler.step()
            _accumulate(totals, output)
            bar.update(1)
            if step % cfg.log_every == 0:
                bar.set_postfix(epoch=epoch, loss=f"{output.loss.item():.2f}")
        seen = train.num_batches(cfg.batch_size, cfg.drop_last) * cfg.batch_size \
            if cfg.drop_last else len(train)
        record: dict[str, Any] = {"epoch": epoch}
        record.update({f"train_{k}": float(v) / seen for k, v in totals.items()})
        if not math.isfinite(record["train_loss"]):
            raise FloatingPointError(
                f"the training loss became {record['train_loss']} in epoch {epoch} of "
                f"{model.name}; lower the learning rate or set grad_clip_norm "
                + ("(the best model so far is saved)" if self.best_epoch else ""))
        record["lr"] = optimizer.param_groups[0]["lr"]
        record["seconds"] = time.perf_counter() - start
        return record

    def _checkpoint(self, epoch, optimizer, scheduler, shuffle) -> None:
        folder = self.output_dir / "checkpoints" / f"epoch_{epoch:04d}"
        save_model(self.model, folder)
        tensors, state = _flatten_optimizer_state(optimizer.state_dict())
        save_tensors(folder / "optimizer.safetensors", tensors)
        write_json(folder / "trainer_state.json", {
            "epoch": epoch,
            "optimizer": state,
            "scheduler": None if scheduler is None else _json_safe(scheduler.state_dict()),
            "shuffle_rng": shuffle.get_state().tolist(),
            "torch_rng": torch.get_rng_state().tolist(),
            "history": self.history,
            "best_eval_loss": self.best_eval_loss,
            "best_epoch": self.best_epoch,
        })

    def _resume(self, folder: Path, optimizer, scheduler, shuffle) -> int:
        state_path = folder / "trainer_state.json"
        if not state_path.is_file():
            raise FileNotFoundError(f"no trainer_state.json in {folder}: not a checkpoint")
        try:
            state = json.loads(state_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{state_path} is corrupt: {err}") from err
        self.model.load_state_dict(load_tensors(folder / "model.safetensors"))
        optimizer.load_state_dict(_unflatten_optimizer_state(
            load_tensors(folder / "optimizer.safetensors"), state["optimizer"]))
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        shuffle.set_state(torch.tensor(state["shuffle_rng"], dtype=torch.uint8))
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        self.history = state["history"]
        self.best_eval_loss, self.best_epoch = state["best_eval_loss"], state["best_epoch"]
        return int(state["epoch"])


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value


def _flatten_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state into tensors (for safetensors) and JSON-able rest."""
    tensors, scalars = {}, {}
    for index, slots in state_dict["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *rest["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}
