"""How the runs of a benchmark are executed: one after another in this process (the default),
in ``jobs`` local worker processes, or each as a Ray task (``executor="ray"``).

An executor only calls :func:`vaebench.benchmark.runner.run_one`: which runs remain, the
progress lines, the results and the report are the runner's, the same for every executor.
Each run writes its ``result.json`` where it runs, so a killed sweep resumes as a sequential
one does. A worker process uses ``cpus_per_run`` torch threads, so that the workers do not
oversubscribe the cores, and registers the custom networks the benchmark was allowed to build.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import torch

from vaebench.benchmark import runner
from vaebench.benchmark.config import BenchmarkConfig
from vaebench.benchmark.runner import RESULT_FILE, Run

#: (run, its result.json contents) as each run finishes.
Finished = Iterator[tuple[Run, dict[str, Any]]]


def in_parallel(config: BenchmarkConfig) -> bool:
    """Whether runs of ``config`` go several at once, each in a worker process."""
    return config.executor == "ray" or config.jobs > 1


def execute(config: BenchmarkConfig, runs: Iterable[Run]) -> Finished:
    """Every run of ``runs`` executed as ``config`` says, with its result as it finishes.

    ``runs`` is read lazily, a run as it is started (as it is handed to a worker process or
    to Ray). Raises ImportError at once when Ray is asked for and not installed.
    """
    if config.executor == "ray":
        return _on_ray(_import_ray(), config, runs)
    if config.jobs > 1:
        return _in_processes(config, runs)
    return _one_after_another(config, runs)


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Within the block torch uses ``count`` threads (None: as many as before)."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _one_after_another(config: BenchmarkConfig, runs: Iterable[Run]) -> Finished:
    context = runner._Context(config)
    with torch_threads(config.cpus_per_run):
        for run in runs:
            yield run, runner.run_one(config, run, context)


@dataclass(frozen=True)
class _Worker:
    """What a worker process needs besides its run: its torch threads and the classes of the
    custom networks the driver allowed, by configured name (see ``check_networks``)."""

    threads: int
    networks: dict[str, type]


def _run_in_worker(config: BenchmarkConfig, run: Run, worker: _Worker) -> dict[str, Any]:
    """:func:`~vaebench.benchmark.runner.run_one` in a worker process."""
    from vaebench.nn import register_network

    for name, network in worker.networks.items():
        register_network(network, name=name)
    with torch_threads(worker.threads):
        return runner.run_one(config, run, _worker_context(config))


#: The context of the benchmark a worker process last ran a run of.
_CONTEXTS: dict[str, Any] = {}


def _worker_context(config: BenchmarkConfig) -> Any:
    """The data and feature network of ``config``'s runs, kept for this worker's next run of
    the same benchmark."""
    key = json.dumps(config.to_dict(), sort_keys=True)
    if key not in _CONTEXTS:
        _CONTEXTS.clear()
        _CONTEXTS[key] = runner._Context(config)
    return _CONTEXTS[key]


def _in_processes(config: BenchmarkConfig, runs: Iterable[Run]) -> Finished:
    """``config.jobs`` local worker processes (spawned: no state copied from this one). A run
    is handed over only when a worker is free, so that an interrupt stops every worker after
    its current run at the latest."""
    threads = config.cpus_per_run or max(1, (os.cpu_count() or 1) // config.jobs)
    worker = _Worker(threads, runner.check_networks(config))
    waiting = iter(runs)
    running: dict[Future, Run] = {}
    with ProcessPoolExecutor(config.jobs, mp_context=get_context("spawn")) as pool:

        def hand_over(count: int) -> None:
            for run in itertools.islice(waiting, count):
                running[pool.submit(_run_in_worker, config, run, worker)] = run

        hand_over(config.jobs)
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                hand_over(1)
                yield running.pop(future), future.result()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise ImportError("the Ray executor needs Ray, which is not installed: "
                          "pip install 'vaebench[ray]'") from err
    return ray


def _on_ray(ray: Any, config: BenchmarkConfig, runs: Iterable[Run]) -> Finished:
    """One Ray task per run, on the Ray this process is connected to, else on the cluster at
    ``config.address`` (None: $RAY_ADDRESS, else a local Ray started for the sweep)."""
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=config.address)
    worker = _Worker(config.cpus_per_run or 1, runner.check_networks(config))
    task = ray.remote(_run_in_worker).options(num_cpus=worker.threads,
                                              num_gpus=_gpus_per_run(ray, config))
    pending: dict[Any, Run] = {}
    try:
        pending = {task.remote(config, run, worker): run for run in runs}
        while pending:
            [done], _ = ray.wait(list(pending))
            run = pending.pop(done)
            yield run, _seen_here(ray.get(done), run, config)
    finally:
        for ref in pending:
            ray.cancel(ref)
        if started_here:
            ray.shutdown()


def _gpus_per_run(ray: Any, config: BenchmarkConfig) -> int:
    """1 when the runs train on CUDA (device "auto": when the cluster has GPUs), else 0."""
    if config.device == "auto":
        return int(ray.cluster_resources().get("GPU", 0) > 0)
    return int(config.device.startswith("cuda"))


def _seen_here(result: dict[str, Any], run: Run, config: BenchmarkConfig) -> dict[str, Any]:
    """``result``, once sure that its run folder is where this process reads results."""
    folder = run.folder(config.output)
    if not (folder / RESULT_FILE).is_file():
        raise OSError(f"run {run} wrote its files where this machine does not see them, not "
                      f"in {folder}: give --output a folder every Ray node shares, by the "
                      "same absolute path")
    return result
