"""One trainer for every model: shuffled-index batches, optimizer and scheduler by name,
clipping, seeding, best-model tracking, history and checkpoints."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vaebench.data import ArrayData, as_data
from vaebench.data.sources import batch_bounds
from vaebench.evaluation import evaluating
from vaebench.files import read_json_object, replacing_folder
from vaebench.models.base import Autoencoder
from vaebench.serialization import (
    is_model_file,
    load_tensors,
    save_model,
    save_tensors,
    write_json,
    write_model_files,
)
from vaebench.training.callbacks import Callback, as_callback
from vaebench.training.config import TrainerConfig
from vaebench.training.distributed import DataParallel, data_parallel, process_device
from vaebench.training.fast_paths import FastPaths

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


def model_batches(model: Autoencoder, data: ArrayData, batch_size: int, **options: Any):
    """Batches as ``(x, inputs)``: the keyword inputs the model needs besides x."""
    if model.needs_labels:
        for x, labels in data.batches(batch_size, with_labels=True, **options):
            yield x, {"labels": labels}
    else:
        for x in data.batches(batch_size, **options):
            yield x, {}


def evaluate(model: Autoencoder, data: Any, batch_size: int = 512,
             parallel: DataParallel | None = None) -> dict[str, float]:
    """Mean loss and mean of each per-sample term over ``data``, in eval mode. With
    ``parallel`` (data-parallel processes, ``batch_size`` each) every process evaluates its
    part and returns the figures of the whole data."""
    parallel = parallel or DataParallel()
    data = as_data(data, name="eval data")
    totals: dict[str, torch.Tensor] = {}
    with evaluating(model):
        for x, inputs in model_batches(model, data, parallel.global_batch(batch_size),
                                       device=model.device, part=parallel.part):
            if len(x):
                _accumulate(totals, model(x, **inputs))
    (totals,) = parallel.summed([totals])
    return {k: float(v) / len(data) for k, v in totals.items()}


def _batch_sums(output: Any) -> dict[str, torch.Tensor]:
    """The batch's sums of the loss and of every term (no sync)."""
    sums = {"loss": output.loss.detach() * output.z.shape[0]}
    sums.update({name: term.detach().sum() for name, term in output.terms.items()})
    return sums


def _accumulate(totals: dict[str, torch.Tensor], output: Any) -> None:
    """Add the batch's sums of the loss and of every term to ``totals`` (no sync)."""
    for name, value in _batch_sums(output).items():
        totals[name] = totals[name] + value if name in totals else value


class TrainingDiverged(FloatingPointError):
    """The loss or one of its terms became NaN or infinite; the message says where."""


class Trainer:
    """Train ``model`` with :class:`TrainerConfig`; :meth:`fit` returns the history.

    ``callbacks``: :class:`~vaebench.training.callbacks.Callback` objects, or plain functions
    called with each epoch's record. During :meth:`fit`, ``train_data`` and ``eval_data``
    hold the data it trains and evaluates on.
    """

    def __init__(self, model: Autoencoder, config: TrainerConfig | None = None,
                 callbacks: list[Callback | Callable[[dict[str, Any]], Any]] | None = None):
        self.model = model
        self.config = config or TrainerConfig()
        self.callbacks = [as_callback(callback) for callback in callbacks or []]
        self.train_data: ArrayData | None = None
        self.eval_data: ArrayData | None = None
        self.device = process_device(resolve_device(self.config.device))
        self._parallel = DataParallel(device=self.device)
        self.fast_paths = FastPaths(self.config, self.device)  # refuses a slow precision
        self.output_dir = Path(self.config.output_dir) if self.config.output_dir else None
        self.history: list[dict[str, Any]] = []
        self.best_eval_loss = math.inf
        self.best_epoch: int | None = None
        self._best_state: dict[str, torch.Tensor] | None = None

    def _build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One optimizer per parameter group of the model."""
        cfg = self.config
        groups = self.model.parameter_groups()
        unknown = set(cfg.group_optimizers) - set(groups)
        if unknown:
            raise ValueError(f"group_optimizers names {sorted(unknown)}, but "
                             f"{self.model.name} has parameter groups {sorted(groups)}")
        defaults = self.model.optimizer_defaults()
        optimizers = {}
        for group, params in groups.items():
            settings = {"optimizer": cfg.optimizer, "learning_rate": cfg.learning_rate,
                        "optimizer_kwargs": cfg.optimizer_kwargs,
                        **defaults.get(group, {}), **cfg.group_optimizers.get(group, {})}
            extra = set(settings) - {"optimizer", "learning_rate", "optimizer_kwargs"}
            if extra or settings["optimizer"] not in _OPTIMIZERS:
                raise ValueError(f"invalid optimizer settings for group {group!r}: {settings}")
            try:
                optimizers[group] = _OPTIMIZERS[settings["optimizer"]](
                    params, lr=settings["learning_rate"], **settings["optimizer_kwargs"])
            except TypeError as err:
                raise ValueError(f"optimizer_kwargs {settings['optimizer_kwargs']} are not valid "
                                 f"for {settings['optimizer']}: {err}") from err
        return optimizers

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
        """Train; returns one record per epoch (train and eval loss and every term).

        With ``resume_from`` (a checkpoint folder) training goes on from that checkpoint and
        ends exactly as the uninterrupted run would have, best model included.

        Under ``torchrun`` the processes train data-parallel, ``batch_size`` being each
        one's (see :mod:`vaebench.training.distributed`); only rank 0 writes files.
        """
        with data_parallel(self.device) as self._parallel:
            return self._fit(train_data, eval_data, resume_from)

    def _fit(self, train_data: Any, eval_data: Any,
             resume_from: str | Path | None) -> list[dict[str, Any]]:
        """:meth:`fit` in this process's place among the data-parallel processes."""
        cfg = self.config
        train, evaluation = self._checked_data(train_data, eval_data)
        self._claim_output(resuming=resume_from is not None)
        torch.manual_seed(self._parallel.seed(cfg.seed))
        shuffle = torch.Generator().manual_seed(cfg.seed)
        model = self.model.to(self.device)
        train = train.to(self.device)
        evaluation = evaluation.to(self.device) if evaluation is not None else None
        self.train_data, self.eval_data = train, evaluation
        model.prepare(train)
        global_batch = self._parallel.global_batch(cfg.batch_size)
        steps = train.num_batches(global_batch, cfg.drop_last)
        if steps == 0:
            raise ValueError(f"train data has {len(train)} samples, fewer than one batch of "
                             f"{global_batch} with drop_last=True")
        optimizers = self._build_optimizers()
        schedulers = {group: self._build_scheduler(opt, steps)
                      for group, opt in optimizers.items()}
        self._best_state = None
        first_epoch = 1
        if resume_from is not None:
            first_epoch = self._resume(Path(resume_from), optimizers, schedulers, shuffle) + 1
        self._parallel.broadcast_state(model)
        self._notify("on_run_start")
        bar = tqdm(total=(cfg.epochs - first_epoch + 1) * steps,
                   disable=not cfg.progress or not self._parallel.is_main,
                   desc=model.name, unit="step", dynamic_ncols=True, mininterval=0.5)
        self.fast_paths.apply(model)
        try:
            for epoch in range(first_epoch, cfg.epochs + 1):
                record = self._train_epoch(epoch, train, optimizers, schedulers, shuffle, bar)
                if evaluation is not None:
                    record.update({f"eval_{k}": v for k, v in evaluate(
                        model, evaluation, cfg.eval_batch_size, self._parallel).items()})
                self._step_schedulers(schedulers, record)
                self.history.append(record)
                if evaluation is not None and record["eval_loss"] < self.best_eval_loss:
                    self._new_best(epoch, record["eval_loss"])
                self._notify("on_epoch_end", record)
                if self.output_dir is not None:
                    if self._parallel.is_main:
                        write_json(self.output_dir / "history.json", self.history)
                    if epoch == cfg.epochs or (cfg.checkpoint_every
                                               and epoch % cfg.checkpoint_every == 0):
                        written = self._checkpoint(epoch, optimizers, schedulers, shuffle)
                        if written is not None:  # rank 0 wrote it
                            self._notify("on_checkpoint", written)
        except TrainingDiverged:
            self._restore_best()
            raise
        finally:
            bar.close()
            self.fast_paths.restore()
        self._restore_best()
        if self.output_dir is not None and self._parallel.is_main:  # the returned weights
            save_model(model, self.output_dir / "model")
        self._notify("on_run_end", self.history)
        return self.history

    def _notify(self, event: str, *args: Any) -> None:
        """Call ``event`` of every callback (those for rank 0 only in rank 0)."""
        for callback in self.callbacks:
            if self._parallel.is_main or not callback.main_process_only:
                getattr(callback, event)(self, *args)

    def _checked_data(self, train_data: Any, eval_data: Any):
        """Train and eval data as :class:`ArrayData`, checked against the model: shape,
        finite values, the likelihood's support."""
        datasets = []
        for data, name in ((train_data, "train data"), (eval_data, "eval data")):
            if data is None:
                datasets.append(None)
                continue
            data = as_data(data, name=name)
            data.check(self.model.config.input_dim)
            self.model.likelihood.check_support(data)
            self._parallel.check_size(data)
            datasets.append(data)
        return tuple(datasets)

    def _claim_output(self, resuming: bool) -> None:
        """Refuse an output folder that holds another run, unless resuming it or told to
        overwrite it (then the old run's checkpoints go, so none can be resumed by mistake)."""
        if self.output_dir is None or resuming:
            return
        found = [name for name in ("history.json", "model", "checkpoints")
                 if (self.output_dir / name).exists()]
        if not found:
            return
        if not self.config.overwrite:
            raise ValueError(f"{self.output_dir} already holds a run ({', '.join(found)}): "
                             "resume it (resume_from=..., --resume on the command line) or "
                             "set overwrite=True (--overwrite) to replace it")
        if self._parallel.is_main:
            shutil.rmtree(self.output_dir / "checkpoints", ignore_errors=True)

    def _step_schedulers(self, schedulers, record: dict[str, Any]) -> None:
        """Step the per-epoch schedulers (plateau on the eval loss, else the train loss)."""
        for scheduler in schedulers.values():
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(record.get("eval_loss", record["train_loss"]))
            elif scheduler is not None and not _per_step(scheduler):
                scheduler.step()

    @property
    def kept(self) -> dict[str, Any]:
        """Which epoch's weights the model holds after :meth:`fit`, and why."""
        if self.config.keep_best and self.best_epoch is not None:
            return {"epoch": self.best_epoch, "why": "lowest eval loss (keep best)",
                    "eval_loss": self.best_eval_loss}
        last = self.history[-1] if self.history else {}
        why = "last epoch (keep last)" if not self.config.keep_best else \
            "last epoch (no finite eval loss to choose by)"
        return {"epoch": last.get("epoch"), "why": why, "eval_loss": last.get("eval_loss")}

    def _new_best(self, epoch: int, eval_loss: float) -> None:
        """Remember (and save) the weights of a new best eval epoch."""
        self.best_eval_loss, self.best_epoch = eval_loss, epoch
        self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.output_dir is not None and self._parallel.is_main:
            save_model(self.model, self.output_dir / "model")

    def _restore_best(self) -> None:
        """Load the best eval epoch's weights into the model if ``keep_best``."""
        if self.config.keep_best and self._best_state is not None:
            self.model.load_state_dict(self._best_state)

    def _update(self, optimizers, schedulers):
        """The ``update`` callback handed to ``model.training_step``.

        ``update(group, loss)`` back-propagates ``loss`` and steps the optimizer of
        ``group``. ``update({group: loss, ...})`` updates several groups from one graph:
        each loss reaches only its own group's parameters, and every gradient is computed
        before any parameter changes (PIWAE's decoder and encoder targets). Data-parallel,
        each group's gradients are summed over the processes right before its step.
        """
        clip = self.config.grad_clip_norm

        def update(group: str | dict[str, torch.Tensor], loss: torch.Tensor | None = None):
            losses = {group: loss} if isinstance(group, str) else dict(group)
            for index, (name, value) in enumerate(losses.items()):
                optimizers[name].zero_grad(set_to_none=True)
                inputs = _parameters(optimizers[name]) if len(losses) > 1 else None
                self.fast_paths.backward(value, inputs=inputs,
                                         retain_graph=index < len(losses) - 1)
            for name in losses:
                parameters = _parameters(optimizers[name])
                self._parallel.average_gradients(parameters)
                self.fast_paths.step(optimizers[name], parameters, clip)
                if _per_step(schedulers[name]):
                    schedulers[name].step()
            self.fast_paths.update_scale()

        return update

    def _train_epoch(self, epoch, train: ArrayData, optimizers, schedulers, shuffle, bar):
        cfg, model = self.config, self.model
        model.train()
        model.on_epoch_start()
        start = time.perf_counter()
        totals: dict[str, torch.Tensor] = {}
        window: list[dict[str, torch.Tensor]] = []  # batch sums since the last check
        update = self._update(optimizers, schedulers)
        size = self._parallel.global_batch(cfg.batch_size)
        sizes = [end - start for start, end in
                 batch_bounds(len(train), size, cfg.drop_last, cfg.even_batches)]
        steps = len(sizes)
        batches = self._parallel.training_batches(model_batches(
            model, train, size, shuffle=True, generator=shuffle, drop_last=cfg.drop_last,
            even=cfg.even_batches, device=self.device, part=self._parallel.part), sizes)
        for step, (x, inputs) in enumerate(batches, 1):
            with self.fast_paths.autocast():
                output = model.training_step(x, update, **inputs)
            model.num_steps += 1
            window.append(self._parallel.counted(_batch_sums(output)))
            bar.update(1)
            if step % cfg.log_every == 0 or step == steps:
                window = self._parallel.summed(window)  # the whole batches' sums
                self._check_finite(window, epoch, step - len(window) + 1, steps)
                for sums in window:
                    for name, value in sums.items():
                        totals[name] = totals[name] + value if name in totals else value
                window = []
                bar.set_postfix(epoch=epoch, loss=f"{output.loss.item():.2f}")
        self._parallel.broadcast_buffers(model)
        seen = sum(sizes)
        record: dict[str, Any] = {"epoch": epoch}
        record.update({f"train_{k}": float(v) / seen for k, v in totals.items()})
        record.update({f"train_{k}": v for k, v in model.epoch_metrics().items()})
        record["lr"] = optimizers["model"].param_groups[0]["lr"] if "model" in optimizers \
            else next(iter(optimizers.values())).param_groups[0]["lr"]
        record["seconds"] = time.perf_counter() - start
        return record

    def _check_finite(self, window: list[dict[str, torch.Tensor]], epoch: int,
                      first_step: int, steps: int) -> None:
        """Raise :class:`TrainingDiverged` at the first step of ``window`` whose loss or a
        term is not finite (one synchronization per check)."""
        stacked = {name: torch.stack([sums[name] for sums in window]) for name in window[0]}
        finite = torch.stack([torch.isfinite(v) for v in stacked.values()]).all(0)
        if bool(finite.all()):
            return
        index = int((~finite).nonzero()[0])
        bad = ", ".join(f"{name} = {float(values[index])}" for name, values in stacked.items()
                        if not math.isfinite(float(values[index])))
        raise TrainingDiverged(
            f"training of {self.model.name} diverged in epoch {epoch}, step "
            f"{first_step + index} of {steps}: {bad} (summed over the batch). "
            f"{self._last_good_model()} Lower the learning rate or set grad_clip_norm "
            "(--grad-clip).")

    def _last_good_model(self) -> str:
        """Where the last good weights are, for the divergence message."""
        if self._best_state is not None and self.output_dir is not None:
            where = f"is saved in {self.output_dir / 'model'}"
        elif self._best_state is not None:
            where = "is kept in memory"
        else:
            return "No model was kept (no eval epoch finished; give eval data to keep one)."
        restored = " and restored into the model" if self.config.keep_best else ""
        return f"The best model so far (epoch {self.best_epoch}) {where}{restored}."

    def _checkpoint(self, epoch, optimizers, schedulers, shuffle) -> Path | None:
        """Write a resumable checkpoint folder as a whole (atomically) and return it;
        data-parallel, rank 0 writes it, with the random state of every process (the
        others return None)."""
        rank_rngs = self._parallel.rng_states()
        if not self._parallel.is_main:
            return None
        target = self.output_dir / "checkpoints" / f"epoch_{epoch:04d}"
        with replacing_folder(target, owns=_is_checkpoint_file) as folder:
            write_model_files(self.model, folder)
            if self._best_state is not None:
                save_tensors(folder / BEST_WEIGHTS_FILE, self._best_state)
            optimizer_states = {}
            for group, optimizer in optimizers.items():
                tensors, rest = _flatten_optimizer_state(optimizer.state_dict())
                save_tensors(folder / f"optimizer_{group}.safetensors", tensors)
                optimizer_states[group] = rest
            write_json(folder / STATE_FILE, {
                "epoch": epoch,
                "optimizers": optimizer_states,
                "schedulers": {g: None if s is None else _json_safe(s.state_dict())
                               for g, s in schedulers.items()},
                "shuffle_rng": shuffle.get_state().tolist(),
                "torch_rng": torch.get_rng_state().tolist(),
                "rank_torch_rngs": rank_rngs,
                "history": self.history,
                "best_eval_loss": self.best_eval_loss,
                "best_epoch": self.best_epoch,
                "grad_scaler": self.fast_paths.state_dict(),
            })
        return target

    def _resume(self, folder: Path, optimizers, schedulers, shuffle) -> int:
        state = read_checkpoint_state(folder)
        if set(state["optimizers"]) != set(optimizers):
            raise ValueError(f"checkpoint {folder} has optimizers {sorted(state['optimizers'])}"
                             f", the model has parameter groups {sorted(optimizers)}")
        _check_same_model(self.model, folder)
        self.model.load_state_dict(load_tensors(folder / "model.safetensors"))
        if (folder / BEST_WEIGHTS_FILE).is_file():
            self._best_state = load_tensors(folder / BEST_WEIGHTS_FILE)
        for group, optimizer in optimizers.items():
            tensors = load_tensors(folder / f"optimizer_{group}.safetensors")
            optimizer.load_state_dict(
                _unflatten_optimizer_state(tensors, state["optimizers"][group]))
            if schedulers[group] is not None and state["schedulers"][group] is not None:
                schedulers[group].load_state_dict(state["schedulers"][group])
        shuffle.set_state(torch.tensor(state["shuffle_rng"], dtype=torch.uint8))
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        self._parallel.restore_rng(state.get("rank_torch_rngs"), self.config.seed,
                                   int(state["epoch"]))
        self.history = state["history"]
        self.best_eval_loss = state["best_eval_loss"]
        self.best_epoch = state["best_epoch"]
        self.fast_paths.load_state_dict(state.get("grad_scaler"))
        return int(state["epoch"])


STATE_FILE = "trainer_state.json"
BEST_WEIGHTS_FILE = "best_model.safetensors"
_STATE_FIELDS = {
    "epoch": (int, "an integer"), "optimizers": (dict, "a mapping"),
    "schedulers": (dict, "a mapping"), "shuffle_rng": (list, "a list of bytes"),
    "torch_rng": (list, "a list of bytes"), "history": (list, "a list of epoch records"),
    "best_eval_loss": ((int, float), "a number"),
    "best_epoch": ((int, type(None)), "an integer or null"),
}


def _is_checkpoint_file(name: str) -> bool:
    return (is_model_file(name) or name in (STATE_FILE, BEST_WEIGHTS_FILE)
            or (name.startswith("optimizer_") and name.endswith(".safetensors")))


def read_checkpoint_state(folder: Path) -> dict[str, Any]:
    """The checked ``trainer_state.json`` of a checkpoint folder."""
    return read_json_object(Path(folder) / STATE_FILE, "checkpoint", _STATE_FIELDS)


def latest_checkpoint(output_dir: str | Path) -> Path:
    """The checkpoint of the latest epoch under ``output_dir/checkpoints``."""
    folder = Path(output_dir) / "checkpoints"
    found = sorted(folder.glob("epoch_[0-9][0-9][0-9][0-9]")) if folder.is_dir() else []
    if not found:
        raise FileNotFoundError(f"no checkpoint in {folder} to resume from (checkpoints are "
                                "written every checkpoint_every epochs and at the end)")
    return found[-1]


def _check_same_model(model: Autoencoder, folder: Path) -> None:
    """Refuse a checkpoint written by another model or config, naming what differs."""
    from vaebench.serialization import read_config

    saved = read_config(folder)
    if saved["model"] != model.name:
        raise ValueError(f"checkpoint {folder} holds a {saved['model']!r} model, not "
                         f"{model.name!r}")
    ours = model.config.to_dict()
    differ = sorted(k for k in set(ours) | set(saved["config"])
                    if ours.get(k) != saved["config"].get(k))
    if differ:
        shown = ", ".join(f"{k}: {saved['config'].get(k)!r} there, {ours.get(k)!r} here"
                          for k in differ[:4])
        raise ValueError(f"checkpoint {folder} was written with another {model.name} config "
                         f"({shown})")


def _parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]


def _per_step(scheduler: Any) -> bool:
    """Schedulers stepped after every update rather than every epoch."""
    return isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)


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
