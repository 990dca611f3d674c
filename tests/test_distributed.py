"""Data-parallel training: two gloo processes under torchrun against one process with the
global batch (distributed_worker.py runs the two-process side)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from distributed_worker import BATCH, EVAL_SIZE, RANKS, TRAIN_SIZE, build, config, dataset, train

from vaebench import Trainer
from vaebench.data import ArrayData
from vaebench.data.sources import part_bounds
from vaebench.serialization import load_tensors
from vaebench.training.distributed import DataParallel

TESTS = Path(__file__).parent


def torchrun(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run`` with RANKS processes on a free local port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(RANKS),
               "--master_addr", "127.0.0.1", "--master_port", str(port), *arguments]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=cwd, env=environment, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The one-process runs (batch RANKS * BATCH) and the folder of the two-process ones,
    which resume the one-process checkpoint of epoch 1."""
    folder = tmp_path_factory.mktemp("data_parallel")
    alone = {name: train(name, RANKS * BATCH) for name in ("ae", "vqvae")}
    alone["ae_even"] = train("ae", RANKS * BATCH, even_batches=True)
    train("ae", RANKS * BATCH, output_dir=str(folder / "alone"), checkpoint_every=1)
    checkpoint = folder / "alone" / "checkpoints" / "epoch_0001"
    torchrun(str(TESTS / "distributed_worker.py"), str(folder), str(checkpoint), cwd=TESTS)
    return alone, folder


def per_rank(folder: Path, scenario: str) -> list[tuple[dict, list]]:
    """Each rank's final state and history of ``scenario``."""
    return [(load_tensors(folder / f"{scenario}_rank{rank}.safetensors"),
             json.loads((folder / f"{scenario}_rank{rank}.json").read_text()))
            for rank in range(RANKS)]


def assert_same_states(first: dict, second: dict, atol: float = 0.0) -> None:
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], atol=atol, rtol=0.0, msg=name)


def test_parts_of_a_batch_cover_it_in_order():
    assert [part_bounds(11, k, 2) for k in range(2)] == [(0, 6), (6, 11)]
    assert [part_bounds(1, k, 2) for k in range(2)] == [(0, 1), (1, 1)]
    data = ArrayData(torch.arange(23.0).view(23, 1))
    whole = list(data.batches(8, shuffle=True, generator=torch.Generator().manual_seed(0)))
    parts = [list(data.batches(8, shuffle=True, generator=torch.Generator().manual_seed(0),
                               part=(k, 3))) for k in range(3)]
    for batch, *shares in zip(whole, *parts, strict=True):
        assert torch.equal(torch.cat(shares), batch)


def test_data_smaller_than_the_processes_is_refused():
    with pytest.raises(ValueError, match="fewer than the 2 data-parallel processes"):
        DataParallel(0, 2).check_size(ArrayData(torch.zeros(1, 3), name="train data"))


@pytest.mark.parametrize("scenario", ["ae", "ae_even"])
def test_ae_ends_as_one_process_with_the_global_batch(runs, scenario):
    """91 samples: batches of 16 and a last one of 11, split 6 + 5; in even batches (the
    ``ae_even`` scenario), five of 15 (split 8 + 7) and one of 16."""
    alone, folder = runs
    (first, history), (second, _) = per_rank(folder, scenario)
    assert_same_states(first, second)
    assert_same_states(first, alone[scenario][0].state_dict(), atol=1e-5)
    for record, reference in zip(history, alone[scenario][1], strict=True):
        assert record["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-6)
    other = alone["ae_even" if scenario == "ae" else "ae"][0].state_dict()
    assert not torch.allclose(first["encoder.net.0.weight"], other["encoder.net.0.weight"],
                              atol=1e-3)


def test_eval_metrics_are_those_of_one_process_on_every_rank(runs):
    """37 eval samples in batches of 8 per rank."""
    alone, folder = runs
    (_, first), (_, second) = per_rank(folder, "ae")
    for record, other, reference in zip(first, second, alone["ae"][1], strict=True):
        assert record["eval_loss"] == other["eval_loss"]
        assert record["eval_loss"] == pytest.approx(reference["eval_loss"], rel=1e-6)


def test_ema_codebooks_stay_identical_and_match_one_process(runs):
    """97 samples leave a last batch of 1: rank 1 trains on a stand-in that counts for
    nothing. EMA counts and sums, k-means initialisation and dead-code restarts all take
    the whole batch."""
    alone, folder = runs
    (first, history), (second, _) = per_rank(folder, "vqvae")
    assert_same_states(first, second)
    assert_same_states(first, alone["vqvae"][0].state_dict(), atol=1e-5)
    assert [r["train_restarts"] for r in history] == \
        [r["train_restarts"] for r in alone["vqvae"][1]]


def test_two_group_model_keeps_ranks_identical(runs):
    """FactorVAE (model and discriminator groups) draws its codes and permutations from
    each rank's own random stream, so it cannot equal one process; its ranks must agree."""
    (first, _), (second, _) = per_rank(runs[1], "factor_vae")
    assert_same_states(first, second)


def test_checkpoint_of_two_ranks_resumes_in_one_process(runs):
    alone, folder = runs
    resumed = build("ae")
    Trainer(resumed, config(RANKS * BATCH)).fit(
        dataset(TRAIN_SIZE, 0), dataset(EVAL_SIZE, 1),
        resume_from=folder / "ae_run" / "checkpoints" / "epoch_0001")
    assert_same_states(resumed.state_dict(), per_rank(folder, "ae")[0][0], atol=1e-5)


def test_checkpoint_of_one_process_resumes_under_two_ranks(runs):
    alone, folder = runs
    for state, history in per_rank(folder, "ae_resumed"):
        assert_same_states(state, alone["ae"][0].state_dict(), atol=1e-5)
        assert [r["epoch"] for r in history] == [1, 2]


def test_command_line_under_torchrun_prints_and_writes_once(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((200, 6), dtype=np.float32))
    result = torchrun("-m", "vaebench.cli", "train", "--model", "ae", "--dataset", "x.npy",
                      "--latent-dim", "2", "--epochs", "2", "--batch-size", "16",
                      "--output", "run", cwd=tmp_path)
    assert result.stdout.count("report in run") == 1
    assert result.stderr.count("vaebench: fitting the") == 1
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    assert (tmp_path / "run" / "metrics.json").is_file()
