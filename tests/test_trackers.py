"""The trainer's callback interface and the TensorBoard, MLflow and W&B trackers: each test
reads back, with the library's own reader, what was written."""

import contextlib
import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from vaebench import Trainer, TrainerConfig, create_model
from vaebench.benchmark import BenchmarkConfig, run_benchmark
from vaebench.cli import main
from vaebench.data import load_dataset
from vaebench.integrations.trackers import TrackedRun, create_trackers
from vaebench.training import Callback
from vaebench.training.distributed import DataParallel


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")[0][:256], load_dataset("digits", "test")[0][:64]


def _model():
    torch.manual_seed(0)
    return create_model("vae", input_dim=(1, 8, 8), latent_dim=4, likelihood="bernoulli",
                        encoder_kwargs={"hidden": [32]}, decoder_kwargs={"hidden": [32]})


def _config(**fields):
    return TrainerConfig(**{"epochs": 2, "batch_size": 64, "progress": False, **fields})


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory):
    """W&B in its default (offline) mode, its settings and caches kept out of the home."""
    home = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("WANDB_MODE", raising=False)
        patch.delenv("WANDB_PROJECT", raising=False)
        for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            patch.setenv(name, str(home / name.lower()))
        patch.setenv("WANDB_SILENT", "true")
        yield


@contextlib.contextmanager
def _scratch_folder(tmp_path_factory):
    """A new folder, in memory where the system has a memory file system: creating MLflow's
    SQLite store on a disk takes seconds of synchronous writes."""
    memory = Path("/dev/shm")
    if not memory.is_dir():
        yield tmp_path_factory.mktemp("scratch")
        return
    folder = Path(tempfile.mkdtemp(dir=memory))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def scratch(tmp_path_factory):
    with _scratch_folder(tmp_path_factory) as folder:
        yield folder


@pytest.fixture(scope="module")
def tracked(digits, tmp_path_factory, wandb_env):
    """One two-epoch run logged to all three trackers (images every epoch)."""
    with _scratch_folder(tmp_path_factory) as folder:
        trackers = create_trackers("tensorboard,mlflow,wandb", TrackedRun(folder, "vae-digits"),
                                   images_every=1)
        history = Trainer(_model(), _config(output_dir=str(folder)),
                          callbacks=trackers).fit(*digits)
        yield folder, history


def _figures(history):
    """Every number the trackers log: each record's entries but the epoch."""
    return {key for key in history[0] if key != "epoch"}


# --- the callback interface -------------------------------------------------------------
class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_run_start(self, trainer):
        self.events.append(("run_start", len(trainer.history)))

    def on_epoch_end(self, trainer, record):
        self.events.append(("epoch_end", record["epoch"]))

    def on_checkpoint(self, trainer, folder):
        assert (folder / "trainer_state.json").is_file()
        self.events.append(("checkpoint", folder.name))

    def on_run_end(self, trainer, history):
        if trainer.output_dir is not None:
            assert (trainer.output_dir / "model" / "config.json").is_file()
        self.events.append(("run_end", len(history)))


def test_callbacks_are_called_in_order_and_functions_still_work(digits, tmp_path):
    recorder, records = Recorder(), []
    history = Trainer(_model(), _config(output_dir=str(tmp_path)),
                      callbacks=[recorder, records.append]).fit(*digits)
    assert recorder.events == [("run_start", 0), ("epoch_end", 1), ("epoch_end", 2),
                               ("checkpoint", "epoch_0002"), ("run_end", 2)]
    assert records == history
    with pytest.raises(TypeError, match="a callback must be"):
        Trainer(_model(), callbacks=["not callable"])


def test_main_process_only_callbacks_skip_other_ranks(digits, monkeypatch):
    every, main_only = Recorder(), Recorder()
    main_only.main_process_only = True
    monkeypatch.setattr(DataParallel, "is_main", property(lambda self: False))
    Trainer(_model(), _config(epochs=1), callbacks=[every, main_only]).fit(digits[0])
    assert every.events == [("run_start", 0), ("epoch_end", 1), ("run_end", 1)]
    assert main_only.events == []


# --- the three trackers -------------------------------------------------------------------
def test_tensorboard_holds_every_epoch_figure_and_the_images(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder, history = tracked
    events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert _figures(history) <= set(events.Tags()["scalars"])
    for key in _figures(history):
        logged = events.Scalars(key)
        assert [e.step for e in logged] == [1, 2]
        assert [e.value for e in logged] == pytest.approx([r[key] for r in history], rel=1e-6)
    for tag in ("reconstructions", "samples"):
        assert [image.step for image in events.Images(tag)] == [1, 2]
    grid = events.Images("reconstructions")[0]
    assert (grid.width, grid.height) == (8 * 10 + 2, 2 * 10 + 2)  # 8 originals over 8


def test_mlflow_run_has_params_metric_history_and_artifacts(tracked):
    from mlflow.tracking import MlflowClient

    folder, history = tracked
    client = MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("vaebench")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "vae-digits" and run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.name"] == "vae" and params["model.latent_dim"] == "4"
    assert params["trainer.epochs"] == "2" and params["trainer.learning_rate"] == "0.001"
    for key in _figures(history):
        logged = client.get_metric_history(run.info.run_id, key)
        assert [(m.step, m.value) for m in logged] == [(r["epoch"], r[key]) for r in history]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "history.json", "images"} <= artifacts
    assert not artifacts & {"checkpoints", "mlruns", "tensorboard", "wandb"}
    images = {a.path for a in client.list_artifacts(run.info.run_id, "images")}
    assert "images/samples_epoch0002.png" in images


def _wandb_records(path):
    """The protobuf records of a ``.wandb`` file: a 7-byte header, then LevelDB-style log
    blocks of 32 KiB whose chunks each have a 7-byte header (CRC, length, type)."""
    from wandb.proto import wandb_internal_pb2

    data, position, pending = path.read_bytes(), 7, b""
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # a block's padding
            position += 32768 - position % 32768
            continue
        length, kind = struct.unpack("<HB", data[position + 4:position + 7])
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def test_wandb_offline_run_holds_the_losses(tracked):
    folder, history = tracked
    (run_folder,) = (folder / "wandb").glob("offline-run-*")
    (log,) = run_folder.glob("run-*.wandb")
    steps = {}
    for record in _wandb_records(log):
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                     for item in record.history.item}
            steps.setdefault(record.history.step.num, {}).update(items)
    for record in history:
        logged = steps[record["epoch"]]
        assert logged["train_loss"] == pytest.approx(record["train_loss"], rel=1e-12)
        assert logged["eval_loss"] == pytest.approx(record["eval_loss"], rel=1e-12)
    assert list((run_folder / "files" / "media" / "images").glob("samples_*.png"))


def test_tensorboard_shows_only_the_latest_run_of_a_folder(digits, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    histories = []
    for epochs in (2, 1):  # the second run overwrites the first
        (tracker,) = create_trackers("tensorboard", TrackedRun(tmp_path, "again"))
        histories.append(Trainer(_model(), _config(epochs=epochs, output_dir=str(tmp_path),
                                                   overwrite=True, seed=epochs),
                                 callbacks=[tracker]).fit(digits[0]))
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    (logged,) = events.Scalars("train_loss")
    assert (logged.step, logged.value) == (1, pytest.approx(histories[1][0]["train_loss"]))


def test_wandb_mode_comes_from_the_environment(tmp_path, wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    (tracker,) = create_trackers("wandb", TrackedRun(tmp_path, "off"))
    trainer = Trainer(_model(), _config())
    tracker.on_run_start(trainer)
    tracker.on_epoch_end(trainer, {"epoch": 1, "train_loss": 1.0})
    tracker.close()
    assert not list(tmp_path.glob("wandb/offline-run-*"))


# --- command line and benchmark -------------------------------------------------------------
def test_cli_train_logs_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["train", "--model", "vae", "--dataset", "digits", "--train-size", "200",
                 "--latent-dim", "4", "--epochs", "1", "--iwae-k", "2", "--no-progress",
                 "--output", str(out), "--log", "tensorboard"]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    history = json.loads((out / "history.json").read_text())
    assert events.Scalars("train_loss")[0].value == pytest.approx(history[0]["train_loss"])
    assert "final/eval_mse_per_dim" in events.Tags()["scalars"]  # metrics.json's figures


def test_benchmark_tracks_each_run_grouped_by_benchmark(scratch, capsys):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    bench = scratch / "tiny-bench"
    settings = dict(models=["vae", "ae"], datasets=["digits"], seeds=1, epochs=1,
                    train_size=200, latent_dim=4, metrics=["loss"], samplers=[],
                    output=str(bench))
    run_benchmark(BenchmarkConfig(**settings, log="tensorboard,mlflow"), report=False)
    runs = sorted(p.name for p in (bench / "tensorboard").iterdir())
    assert runs == ["ae-digits-seed0", "vae-digits-seed0"]
    events = EventAccumulator(str(bench / "tensorboard" / "vae-digits-seed0"))
    events.Reload()
    assert "final/loss.loss" in events.Tags()["scalars"]  # result.json's figures
    client = MlflowClient(f"sqlite:///{bench / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny-bench")
    tracked = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(tracked) == runs
    vae = tracked["vae-digits-seed0"]
    assert vae.data.tags["model"] == "vae" and vae.data.tags["seed"] == "0"
    assert "final.loss.loss" in vae.data.metrics
    assert "result.json" in {a.path for a in client.list_artifacts(vae.info.run_id)}
    run_benchmark(BenchmarkConfig(**settings), report=False)  # the loggers are no setting
    assert capsys.readouterr().out.count("skipping, done") == 2


def test_unknown_or_missing_logger_is_one_line_error(tmp_path, capsys, monkeypatch):
    args = ["--dataset", "digits", "--output", str(tmp_path)]
    assert main(["train", *args, "--log", "tensorboard,comet"]) == 2
    err = capsys.readouterr().err
    assert err == ("vaebench: error: unknown logger 'comet'; known loggers: tensorboard, "
                   "mlflow, wandb\n")
    assert main(["benchmark", "--models", "vae", *args, "--log", "comet"]) == 2
    assert "unknown logger 'comet'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    assert main(["train", *args, "--log", "wandb"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'vaebench[wandb]'" in err
    assert main(["benchmark", "--models", "vae", *args, "--log", "wandb"]) == 2
    assert "pip install 'vaebench[wandb]'" in capsys.readouterr().err
