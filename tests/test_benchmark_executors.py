"""Benchmark sweeps in worker processes (--jobs) and on Ray (--executor ray) give the same
run folders and results as the sequential sweep, and resume the same way."""

import io
import json
import re
import shutil
import sys

import pytest
import ray
from pydantic import ValidationError

from vaebench.benchmark import BenchmarkConfig, run_benchmark
from vaebench.cli import main

#: 2 models x 2 seeds on 300 digits (8 x 8), one epoch: about a second per run.
SWEEP = {"models": ["vae", "ae"], "datasets": ["digits"], "seeds": 2, "epochs": 1,
         "train_size": 300, "latent_dim": 4, "likelihood": "bernoulli", "n_fid": 64,
         "iwae_k": 10}
SWEEP_FLAGS = ["--models", "vae,ae", "--dataset", "digits", "--seeds", "2", "--epochs", "1",
               "--train-size", "300", "--latent-dim", "4", "--likelihood", "bernoulli",
               "--n-fid", "64", "--iwae-k", "10"]


def _results(folder):
    """Every result.json under ``folder``, by run folder, without what the clock decides."""
    return {path.parent.relative_to(folder).as_posix(): _timeless(json.loads(path.read_text()))
            for path in sorted(folder.glob("runs/*/*/seed*/result.json"))}


def _timeless(value):
    if isinstance(value, dict):
        return {key: _timeless(item) for key, item in value.items()
                if not key.endswith("seconds") and key != "finished"}
    return value


def _flat(value, prefix=""):
    """Nested dicts and lists as {path: leaf}."""
    if isinstance(value, dict | list):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return {path: leaf for key, item in items
                for path, leaf in _flat(item, f"{prefix}/{key}").items()}
    return {prefix: value}


def _assert_same_results(folder, reference):
    """The same run folders, files, result keys and (to float rounding) values."""
    ours, theirs = _results(folder), _results(reference)
    assert sorted(ours) == sorted(theirs) == ["runs/digits/ae/seed0", "runs/digits/ae/seed1",
                                               "runs/digits/vae/seed0", "runs/digits/vae/seed1"]
    for run, result in ours.items():
        assert result["status"] == "ok"
        assert _flat(result) == pytest.approx(_flat(theirs[run])), run
        files = {p.relative_to(folder / run) for p in (folder / run).rglob("*")}
        assert files == {p.relative_to(reference / run) for p in (reference / run).rglob("*")}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """The sweep run one after another in this process, with 1 torch thread (read-only)."""
    out = tmp_path_factory.mktemp("sequential")
    run_benchmark(BenchmarkConfig(**SWEEP, cpus_per_run=1, output=str(out)),
                  stream=io.StringIO())
    return out


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_sweep_matches_the_sequential_one(sequential, local_ray, tmp_path, capsys):
    out = tmp_path / "ray"
    assert main(["benchmark", *SWEEP_FLAGS, "--executor", "ray", "--cpus-per-run", "1",
                 "--output", str(out)]) == 0
    _assert_same_results(out, sequential)
    printed = capsys.readouterr().out
    finished = re.findall(r"^\[\d/4\] digits (?:vae|ae) seed \d \.\.\. done in [\d.]+ s",
                          printed, re.MULTILINE)
    assert len(finished) == 4  # one line per finished run
    assert _report_tables(out) == _report_tables(sequential)


def _report_tables(folder):
    """The report from its first table on, without the last cell of each table line (the
    training seconds of the main table)."""
    text = (folder / "report.md").read_text()
    tables = text[text.index("## digits"):]
    return [line.rsplit("|", 2)[0] if line.startswith("| ") else line
            for line in tables.splitlines()]


def test_jobs_sweep_matches_the_sequential_one(sequential, tmp_path):
    out = tmp_path / "jobs"
    results = run_benchmark(BenchmarkConfig(**SWEEP, jobs=2, cpus_per_run=1, output=str(out)),
                            stream=io.StringIO())
    assert [(r["model"], r["seed"]) for r in results] == [("vae", 0), ("vae", 1), ("ae", 0),
                                                          ("ae", 1)]  # plan order
    assert {r["hardware"]["threads"] for r in results} == {1}
    _assert_same_results(out, sequential)


def test_an_interrupted_parallel_sweep_redoes_only_the_unfinished_runs(sequential, local_ray,
                                                                      tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(sequential, out)
    for run in ("vae/seed1", "ae/seed0"):
        shutil.rmtree(out / "runs" / "digits" / run)
    kept = {path: path.stat().st_mtime_ns for path in out.glob("runs/*/*/*/result.json")}
    progress = io.StringIO()
    run_benchmark(BenchmarkConfig(**SWEEP, executor="ray", output=str(out)), stream=progress)
    lines = progress.getvalue()
    assert "[1/4] digits vae seed 0 ... skipping, done" in lines
    assert "[4/4] digits ae seed 1 ... skipping, done" in lines
    assert re.search(r"\[2/4\] digits vae seed 1 \.\.\. done in", lines)
    assert re.search(r"\[3/4\] digits ae seed 0 \.\.\. done in", lines)
    assert {path: path.stat().st_mtime_ns for path in kept} == kept  # not run again
    _assert_same_results(out, sequential)


def test_the_ray_executor_without_ray_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails
    out = tmp_path / "out"
    assert main(["benchmark", *SWEEP_FLAGS, "--executor", "ray", "--output", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        "vaebench: error: the Ray executor needs Ray, which is not installed: "
        "pip install 'vaebench[ray]'")
    assert not out.exists()


@pytest.mark.parametrize(("settings", "field"), [
    ({"executor": "dask"}, "executor"),
    ({"address": "ray://head:10001"}, "address"),
    ({"executor": "ray", "jobs": 2}, "jobs"),
    ({"executor": "ray", "device": "cuda:1"}, "executor"),
    ({"cpus_per_run": 0}, "cpus_per_run"),
])
def test_executor_settings_are_checked(settings, field):
    with pytest.raises(ValidationError) as caught:
        BenchmarkConfig(models=["vae"], **settings)
    assert [error["loc"] for error in caught.value.errors()] == [(field,)]


def test_how_a_sweep_runs_is_not_a_setting_of_its_runs():
    plain = BenchmarkConfig(models=["vae"])
    on_ray = BenchmarkConfig(models=["vae"], executor="ray", address="auto", cpus_per_run=4)
    assert plain.run_config("digits", "vae", 0) == on_ray.run_config("digits", "vae", 0)


def test_workers_build_the_networks_registered_here(tmp_path, monkeypatch):
    from custom_nets import TinyEncoder

    from vaebench import register_network
    from vaebench.nn import registry

    # this process's registry as it was afterwards: TinyEncoder keeps its import-path name
    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))
    register_network(TinyEncoder, name="executors_test_encoder")
    config = BenchmarkConfig(**{**SWEEP, "models": ["ae"], "seeds": 1, "metrics": ["loss"]},
                             encoder="executors_test_encoder", jobs=2,
                             model_options={"ae": {"encoder_kwargs": {"features": 64, "out": 4}}},
                             output=str(tmp_path))
    (result,) = run_benchmark(config, stream=io.StringIO())
    assert result["status"] == "ok", result["error"]


class _Cluster:
    """The part of the ray module that decides a run's GPU request."""

    def __init__(self, gpus):
        self.gpus = gpus

    def cluster_resources(self):
        return {"CPU": 16.0, "GPU": self.gpus} if self.gpus else {"CPU": 16.0}


@pytest.mark.parametrize(("device", "cluster_gpus", "gpus"), [
    ("auto", 0, 0), ("auto", 2, 1), ("cpu", 2, 0), ("cuda", 0, 1), ("cuda:0", 1, 1)])
def test_a_ray_task_asks_for_a_gpu_when_its_run_trains_on_cuda(device, cluster_gpus, gpus):
    from vaebench.benchmark.executors import _gpus_per_run

    config = BenchmarkConfig(models=["vae"], executor="ray", device=device)
    assert _gpus_per_run(_Cluster(cluster_gpus), config) == gpus
