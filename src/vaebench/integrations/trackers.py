"""Experiment trackers: TensorBoard, MLflow and Weights & Biases as trainer callbacks.

A tracker opens its run when training starts, logs every number of each epoch's record at
step = epoch, and, when training ends, grids of reconstructions and samples; ``close``
then logs what the run left on disk (MLflow) and ends the run. Trackers run in rank 0
alone under ``torchrun``. Each library is imported when its tracker is created, and
everything is written under the run's folder unless told otherwise:

* ``tensorboard``: event files in ``FOLDER/tensorboard/`` (``FOLDER/tensorboard/RUN/`` when
  runs are grouped, as in a benchmark);
* ``mlflow``: a local SQLite store ``FOLDER/mlruns/mlflow.db`` with its artifacts in
  ``FOLDER/mlruns/artifacts/`` (or the store at ``tracking_uri``), one experiment per group;
* ``wandb``: an offline run in ``FOLDER/wandb/`` (``WANDB_MODE`` chooses another mode).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import torch

from vaebench.training.callbacks import Callback

__all__ = ["TRACKERS", "MLflowTracker", "TensorBoardTracker", "TrackedRun", "Tracker",
           "WandbTracker", "create_trackers", "finishing", "image_grids", "prepare_tracking",
           "tracker_names"]

#: Images in the reconstruction grid (originals above, reconstructions below) and samples.
N_RECONSTRUCTIONS = 8
N_SAMPLES = 32
#: Folders of a run that are not logged as MLflow artifacts.
NOT_ARTIFACTS = {"checkpoints", "mlruns", "tensorboard", "wandb"}
#: MLflow refuses longer parameter values in some versions; longer ones are cut.
MAX_PARAM_LENGTH = 500


@dataclass(frozen=True)
class TrackedRun:
    """Where and under which names a run is tracked.

    ``folder`` holds the trackers' files; ``group`` (a benchmark's name) is the MLflow
    experiment and the W&B group, and gives each run its own TensorBoard subfolder;
    ``tags`` label the run; ``tracking_uri`` is an MLflow store other than the local one.
    """

    folder: Path
    name: str
    group: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    tracking_uri: str | None = None


class Tracker(Callback):
    """What the three trackers share: when to log what. A subclass connects one library
    (``_open``, ``_log_metrics``, ``_log_images``, ``_log_summary``, ``_finish``)."""

    name: ClassVar[str]
    main_process_only = True

    def __init__(self, run: TrackedRun, *, images_every: int = 0,
                 close_at_run_end: bool = True):
        """``images_every``: also log the image grids every that many epochs (0: only at
        the end). ``close_at_run_end=False`` leaves the run open after training, for files
        written later; :meth:`close` then ends it."""
        self.library = self.load_library()
        self.run = run
        self.images_every = images_every
        self.close_at_run_end = close_at_run_end
        self.is_open = False
        self.step = 0
        self._images_step: int | None = None

    @classmethod
    def load_library(cls) -> ModuleType:
        """The tracker's library, or an ImportError saying how to install it."""
        try:
            return cls._import()
        except ImportError as err:
            raise ImportError(f"the {cls.name} logger needs a package that is not installed: "
                              f"pip install 'vaebench[{cls.name}]'") from err

    @classmethod
    def prepare(cls, run: TrackedRun) -> None:
        """Make ready what the runs of ``run.group`` share, before any of them starts."""
        cls.load_library()

    # --- the trainer's hooks ------------------------------------------------------------
    def on_run_start(self, trainer: Any) -> None:
        self._open(run_params(trainer))
        self.is_open, self._images_step = True, None
        for record in trainer.history:  # the epochs before a resumed checkpoint
            self._log_record(record)

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        self._log_record(record)
        if self.images_every and record["epoch"] % self.images_every == 0:
            self._log_grids(trainer)

    def on_run_end(self, trainer: Any, history: list[dict[str, Any]]) -> None:
        if self._images_step != self.step:
            self._log_grids(trainer)
        if self.close_at_run_end:
            self.close(trainer.output_dir)

    # --- after training -----------------------------------------------------------------
    def log_summary(self, values: Mapping[str, Any]) -> None:
        """The numbers of ``values`` (nested mappings flattened to dotted names) as the
        run's final figures."""
        if self.is_open:
            self._log_summary(numbers(flat(values)))

    def close(self, folder: str | Path | None = None, *, failed: bool = False) -> None:
        """End the run (MLflow first logs the files of ``folder``); again: nothing."""
        if self.is_open:
            self.is_open = False
            self._finish(Path(folder) if folder is not None else None, failed)

    # --- helpers ------------------------------------------------------------------------
    def _log_record(self, record: dict[str, Any]) -> None:
        self.step = int(record["epoch"])
        self._log_metrics(numbers({k: v for k, v in record.items() if k != "epoch"}),
                          self.step)

    def _log_grids(self, trainer: Any) -> None:
        data = trainer.eval_data if trainer.eval_data is not None else trainer.train_data
        grids = image_grids(trainer.model, data, trainer.config.seed)
        if grids:
            self._log_images(grids, self.step)
        self._images_step = self.step

    # --- one library --------------------------------------------------------------------
    @staticmethod
    def _import() -> ModuleType:
        raise NotImplementedError

    def _open(self, params: dict[str, Any]) -> None:
        raise NotImplementedError

    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def _log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        raise NotImplementedError

    def _log_summary(self, values: dict[str, float]) -> None:
        raise NotImplementedError

    def _finish(self, folder: Path | None, failed: bool) -> None:
        raise NotImplementedError


class TensorBoardTracker(Tracker):
    """Scalars, the config as text and image grids in TensorBoard event files."""

    name = "tensorboard"

    @staticmethod
    def _import() -> ModuleType:
        import tensorboard  # noqa: F401 - torch's writer needs it
        from torch.utils import tensorboard as writers

        return writers

    def _open(self, params: dict[str, Any]) -> None:
        folder = self.run.folder / "tensorboard"
        # purge_step=1 hides the events an earlier run left in the folder (a resumed run
        # logs its history again)
        self.writer = self.library.SummaryWriter(
            str(folder / self.run.name if self.run.group else folder), purge_step=1)
        text = json.dumps({"run": self.run.name, **self.run.tags, **params}, indent=2)
        self.writer.add_text("config", "    " + text.replace("\n", "\n    "))

    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def _log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        for tag, grid in images.items():
            self.writer.add_image(tag, grid, step, dataformats="HW" if grid.ndim == 2 else "HWC")
        self.writer.flush()

    def _log_summary(self, values: dict[str, float]) -> None:
        self._log_metrics({f"final/{tag}": value for tag, value in values.items()}, self.step)

    def _finish(self, folder: Path | None, failed: bool) -> None:
        self.writer.close()


class MLflowTracker(Tracker):
    """An MLflow run: flattened configs as params, metrics by epoch, images and the run's
    files as artifacts."""

    name = "mlflow"

    @staticmethod
    def _import() -> ModuleType:
        import mlflow

        return mlflow

    @classmethod
    def prepare(cls, run: TrackedRun) -> None:
        """Create the store and the experiment once, before runs in several processes
        reach them together."""
        mlflow = cls.load_library()
        _experiment_id(mlflow.tracking.MlflowClient(_tracking_uri(run)), run)

    def _open(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self.client = self.library.tracking.MlflowClient(_tracking_uri(self.run))
        self.run_id = self.client.create_run(
            _experiment_id(self.client, self.run), run_name=self.run.name,
            tags=dict(self.run.tags)).info.run_id
        entries = [Param(key, str(value)[:MAX_PARAM_LENGTH])
                   for key, value in flat(params).items()]
        for start in range(0, len(entries), 100):  # MLflow takes 100 params per batch
            self.client.log_batch(self.run_id, params=entries[start:start + 100])

    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(key, value, now, step) for key, value in metrics.items()])

    def _log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        for tag, grid in images.items():
            self.client.log_image(self.run_id, grid,
                                  artifact_file=f"images/{tag}_epoch{step:04d}.png")

    def _log_summary(self, values: dict[str, float]) -> None:
        self._log_metrics({f"final.{key}": value for key, value in values.items()}, self.step)

    def _finish(self, folder: Path | None, failed: bool) -> None:
        if folder is not None and folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.is_dir() and path.name not in NOT_ARTIFACTS:
                    self.client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
                elif path.is_file():
                    self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


def _tracking_uri(run: TrackedRun) -> str:
    """``run.tracking_uri``, else the SQLite store in ``FOLDER/mlruns`` (created)."""
    if run.tracking_uri:
        return run.tracking_uri
    store = run.folder.resolve() / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def _experiment_id(client: Any, run: TrackedRun) -> str:
    """The id of the experiment named ``run.group`` (else "vaebench"), created if needed,
    its artifacts in ``FOLDER/mlruns/artifacts`` with the local store."""
    name = run.group or "vaebench"
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifacts = None if run.tracking_uri else \
        (run.folder.resolve() / "mlruns" / "artifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifacts)
    except Exception:  # another process created it meanwhile
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


class WandbTracker(Tracker):
    """A Weights & Biases run, offline unless ``WANDB_MODE`` says otherwise: the configs,
    metrics by epoch, images and the final figures as the run's summary."""

    name = "wandb"

    @staticmethod
    def _import() -> ModuleType:
        import wandb

        return wandb

    def _open(self, params: dict[str, Any]) -> None:
        self.run.folder.mkdir(parents=True, exist_ok=True)
        self.wandb_run = self.library.init(
            dir=str(self.run.folder), mode=os.environ.get("WANDB_MODE", "offline"),
            project=os.environ.get("WANDB_PROJECT", "vaebench"), name=self.run.name,
            group=self.run.group, tags=[f"{key}:{value}" for key, value in self.run.tags.items()],
            config={**self.run.tags, **params})

    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.wandb_run.log(metrics, step=step)

    def _log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        self.wandb_run.log({tag: self.library.Image(grid) for tag, grid in images.items()},
                           step=step)

    def _log_summary(self, values: dict[str, float]) -> None:
        self.wandb_run.summary.update({f"final/{key}": value for key, value in values.items()})

    def _finish(self, folder: Path | None, failed: bool) -> None:
        self.wandb_run.finish(exit_code=1 if failed else 0)


#: The trackers by the name ``--log`` gives them.
TRACKERS: dict[str, type[Tracker]] = {
    tracker.name: tracker for tracker in (TensorBoardTracker, MLflowTracker, WandbTracker)}


def tracker_names(names: str | Iterable[str] | None) -> list[str]:
    """The names of a comma-separated text or a list, each a known tracker, once."""
    if names is None:
        return []
    if isinstance(names, str):
        names = names.split(",")
    chosen = list(dict.fromkeys(name.strip() for name in names if name.strip()))
    unknown = [name for name in chosen if name not in TRACKERS]
    if unknown:
        raise ValueError(f"unknown logger {unknown[0]!r}; known loggers: {', '.join(TRACKERS)}")
    return chosen


def create_trackers(names: str | Iterable[str] | None, run: TrackedRun,
                    **options: Any) -> list[Tracker]:
    """The trackers ``names`` of ``run`` (``options``: those of :class:`Tracker`)."""
    return [TRACKERS[name](run, **options) for name in tracker_names(names)]


def prepare_tracking(names: str | Iterable[str] | None, run: TrackedRun) -> None:
    """Check that the libraries of ``names`` are installed and make ready what the runs of
    ``run.group`` share (see :meth:`Tracker.prepare`)."""
    for name in tracker_names(names):
        TRACKERS[name].prepare(run)


@contextlib.contextmanager
def finishing(trackers: list[Tracker], folder: str | Path | None = None) -> Iterator[None]:
    """Close every tracker when the block ends: with the files of ``folder`` (MLflow) after
    success, as failed when the block raises."""
    try:
        yield
    except BaseException:
        for tracker in trackers:
            tracker.close(failed=True)
        raise
    for tracker in trackers:
        tracker.close(folder)


# --- what is logged -----------------------------------------------------------------------
def run_params(trainer: Any) -> dict[str, Any]:
    """The model's config (with its name) and the trainer's, as nested mappings."""
    return {"model": {"name": trainer.model.name, **trainer.model.config.to_dict()},
            "trainer": trainer.config.to_dict()}


def flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping of dotted names."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of ``values`` (not booleans) as floats."""
    return {key: float(value) for key, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def image_grids(model: Any, data: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Grids (uint8) of test images above their reconstructions and, for a model with a
    prior of its own, of samples; {} for data that are not images or a model that needs
    labels. Drawn under ``seed`` without touching the training's random stream."""
    from vaebench import viz
    from vaebench.evaluation import evaluating

    if data is None or not viz.is_image_shape(data.sample_shape) or model.needs_labels:
        return {}
    x = data.take(slice(0, min(N_RECONSTRUCTIONS, len(data)))).to(model.device)
    with evaluating(model, seed):
        grids = {"reconstructions": viz.image_grid(torch.cat([x, model.reconstruct(x)]),
                                                   ncol=len(x))}
        if model.prior is not None:
            grids["samples"] = viz.image_grid(model.generate(N_SAMPLES))
    return grids
