"""Run a benchmark: every (dataset, model, seed) trained, evaluated and saved in its folder.

One run writes ``runs/{dataset}/{model}/seed{seed}/``: ``model/`` (the trained model),
``history.json``, ``figures.safetensors`` (the images the report's figures are made of) and,
last and atomically, ``result.json``. A run whose ``result.json`` says ``"ok"`` with the same
settings is skipped when the benchmark is started again; a failed one is retried only with
``retry_failed=True``; a run that was interrupted has no ``result.json`` and is redone, and
so is one whose ``result.json`` is malformed or says ``"ok"`` without all its metric groups.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from vaebench.benchmark.config import METRICS, BenchmarkConfig, dataset_key
from vaebench.files import write_json

RESULT_FILE = "result.json"
FIGURES_FILE = "figures.safetensors"
#: The probes of the representation metrics are fitted on at most this many training codes.
PROBE_TRAIN_SIZE = 10_000
#: Images kept per run for the report's figures.
N_RECONSTRUCTIONS = 8
N_SAMPLES = 16
TRAVERSAL_STEPS = 7
TRAVERSAL_MAX_DIMS = 16
#: The sample-quality figures kept per sampler (``sample_quality.by_sampler``).
SAMPLER_METRICS = ("fid", "precision", "recall")


class NotApplicable(Exception):  # noqa: N818 - a reason, not an error
    """A metric that does not apply to a model or dataset; the message says why."""


@dataclass(frozen=True)
class Run:
    """One (dataset, model, seed) of a benchmark; ``dataset`` as configured."""

    dataset: str
    model: str
    seed: int

    @property
    def key(self) -> str:
        return dataset_key(self.dataset)

    def folder(self, output: str | Path) -> Path:
        return Path(output) / "runs" / self.key / self.model / f"seed{self.seed}"

    def __str__(self) -> str:
        return f"{self.key} {self.model} seed {self.seed}"


def plan_runs(config: BenchmarkConfig) -> list[Run]:
    """Every run of ``config``: datasets, then models, then seeds, in the configured order."""
    return [Run(dataset, model, seed) for dataset in config.datasets
            for model in config.models for seed in config.seed_list]


def read_result(folder: str | Path) -> dict[str, Any] | None:
    """The ``result.json`` of a run folder, or None if it is missing, unreadable or
    malformed (:func:`load_result` says why)."""
    return load_result(folder)[0]


def load_result(folder: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """(result, None) for a well-formed ``result.json`` of a run folder, (None, None) when
    there is none, (None, what is wrong) when it is unreadable or malformed."""
    path = Path(folder) / RESULT_FILE
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as err:
        return None, f"unreadable: {err.strerror or err}"
    try:
        result = json.loads(text)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        return None, f"not JSON: {_short(str(err), 100)}"
    problem = result_problem(result)
    return (None, problem) if problem else (result, None)


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_mapping(value: Any) -> bool:
    return isinstance(value, dict)


def _is_metric_groups(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(group, dict) for group in value.values())


def _is_messages(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(text, str) for text in value.values())


#: (field, test, what it must be) of the fields every ``result.json`` has ...
_REQUIRED = (
    ("status", lambda value: value in ("ok", "failed"), '"ok" or "failed"'),
    ("dataset", _is_text, "a string"),
    ("model", _is_text, "a string"),
    ("seed", _is_integer, "an integer"),
    ("config", _is_mapping, "an object"),
    ("metrics", _is_metric_groups, "an object of metric groups, each an object"),
)
#: ... and of those it may leave out or set to null.
_OPTIONAL = (
    ("error", _is_text, "a string"),
    ("metric_errors", _is_messages, "an object of messages"),
    ("not_applicable", _is_messages, "an object of messages"),
    ("figures", _is_mapping, "an object"),
    ("samplers", _is_mapping, "an object"),
    ("model_likelihood", _is_mapping, "an object"),
    ("hardware", _is_mapping, "an object"),
    ("seconds", _is_number, "a number"),
    ("train_seconds", _is_number, "a number"),
    ("eval_seconds", _is_number, "a number"),
)


def result_problem(result: Any) -> str | None:
    """What makes ``result`` (a parsed ``result.json``) malformed, or None: it must be an
    object whose fields the benchmark and its report read have their types. Metric values
    are not checked here (the report shows a value that is not a number as missing)."""
    if not isinstance(result, dict):
        return f"a JSON {type(result).__name__}, not an object"
    for key, valid, expected in _REQUIRED:
        if key not in result:
            return f'no "{key}"'
        if not valid(result[key]):
            return f'"{key}" is {describe_value(result[key])}, not {expected}'
    for key, valid, expected in _OPTIONAL:
        if result.get(key) is not None and not valid(result[key]):
            return f'"{key}" is {describe_value(result[key])}, not {expected} or null'
    return None


def unaccounted_metrics(result: dict[str, Any]) -> list[str]:
    """The metric groups an ok ``result`` should have (those its config asks for, every one
    when it says ``"metrics": null``) but neither has values of, nor an error or a reason
    why they do not apply; [] for a failed run or a config that does not say."""
    config = result.get("config") or {}
    if result.get("status") != "ok" or "metrics" not in config:
        return []
    wanted = config["metrics"] if isinstance(config["metrics"], list) else METRICS
    accounted = {*(result.get("metrics") or {}), *(result.get("metric_errors") or {}),
                 *(result.get("not_applicable") or {})}
    return [group for group in wanted if isinstance(group, str) and group not in accounted]


def describe_value(value: Any, limit: int = 60) -> str:
    """``value`` as JSON text (NaN, "abc", null, [...]), shortened to ``limit`` characters."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def hardware(device: torch.device | str | None = None) -> dict[str, Any]:
    """What a run ran on: processor, CPU count, threads, torch version, device (and GPU)."""
    out: dict[str, Any] = {
        "processor": _cpu_name(),
        "platform": platform.platform(terse=True),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device) if device is not None else "cpu",
    }
    if device is not None and torch.device(device).type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def _cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------


def run_benchmark(config: BenchmarkConfig, *, retry_failed: bool = False,
                  stream: TextIO | None = None, report: bool = True,
                  trust_code: bool = False) -> list[dict[str, Any]]:
    """Train and evaluate every run of ``config`` not already done, then write the report.

    Progress goes to ``stream`` (stdout by default), one line per run. Returns the
    ``result.json`` contents of every planned run, in plan order. A run that fails (an
    exception or a non-finite loss) is recorded as failed and the others go on; an
    interrupt (Ctrl-C) stops the benchmark, and the next invocation resumes it. Networks
    named by an unregistered import path are refused before any run unless ``trust_code``.
    """
    from vaebench.nn import trusting_code

    with trusting_code(trust_code):
        check_networks(config)
        if config.log:
            from vaebench.integrations.trackers import prepare_tracking

            prepare_tracking(config.log, tracked_run(config))
        return _run_all(config, retry_failed, stream, report)


def check_networks(config: BenchmarkConfig) -> dict[str, type]:
    """Raise before any run if a network that some model would build is not allowed; return
    the classes of those that are not built in (registered or trusted), by configured name."""
    from vaebench.nn import network_class
    from vaebench.nn.registry import BUILTIN

    custom = {}
    for model in config.models:
        options = config.model_options.get(model, {})
        for role in ("encoder", "decoder"):
            name = options.get(role, getattr(config, role))
            if name is not None:
                network = network_class(role, name)
                if name not in BUILTIN[role]:
                    custom[name] = network
    return custom


def _run_all(config: BenchmarkConfig, retry_failed: bool, stream: TextIO | None,
             report: bool) -> list[dict[str, Any]]:
    from vaebench.benchmark.executors import execute, in_parallel

    stream = stream if stream is not None else sys.stdout
    output = Path(config.output)
    runs = plan_runs(config)
    numbered = {run: f"[{index}/{len(runs)}] {run}" for index, run in enumerate(runs, 1)}
    parallel = in_parallel(config)
    results: dict[Run, dict[str, Any]] = {}
    say = _Say(stream)

    def remaining():
        """The runs to do, read as each starts (or is handed to a worker); a run kept from
        before is said and recorded here."""
        for run in runs:
            kept, reason = _earlier_result(run.folder(output), _jsonable(config.run_config(
                run.dataset, run.model, run.seed)), retry_failed)
            if kept is not None:
                say.line(f"{numbered[run]} ... {reason}")
                results[run] = kept
                continue
            if reason:
                say.line(f"{numbered[run]}: {reason}")
            if not parallel:
                say.start(numbered[run], config.progress)
            yield run

    finished = execute(config, remaining())
    output.mkdir(parents=True, exist_ok=True)
    config.save(output / "benchmark.json")
    say.line(f"benchmark: {len(runs)} runs ({len(config.datasets)} dataset(s) x "
             f"{len(config.models)} model(s) x {len(config.seed_list)} seed(s)) in {output}")
    try:
        for run, result in finished:
            results[run] = result
            say.end(_outcome(result), numbered[run], config.progress or parallel)
    except KeyboardInterrupt:
        where = (f"with {len(results)} of {len(runs)} runs done" if parallel else
                 f"in run {len(results) + 1} of {len(runs)}")
        say.line(f"\ninterrupted {where}; start the same benchmark again to resume (finished "
                 "runs are kept)")
        raise
    ordered = [results[run] for run in runs]
    if report:
        from vaebench.benchmark.report import write_report

        path = write_report(output, config)
        total = sum(r.get("seconds") or 0.0 for r in ordered)
        say.line(f"report: {path} ({_counts(ordered)}, {total:.1f} s of runs)")
    return ordered


def _outcome(result: dict[str, Any]) -> str:
    """How a run ended, for its progress line."""
    if result["status"] != "ok":
        return f"FAILED after {result['seconds']:.1f} s: {_short(result['error'])}"
    loss = result["metrics"].get("loss", {}).get("loss", result.get("best_eval_loss"))
    extra = f" (eval loss {loss:.2f})" if isinstance(loss, float) else ""
    errors = result["metric_errors"]
    if errors:
        extra += f"; metric errors: {', '.join(errors)}"
    return f"done in {result['seconds']:.1f} s{extra}"


def _counts(results: list[dict[str, Any]]) -> str:
    """"3 ok, 1 incomplete, 0 failed": a run with a missing or non-finite metric value is
    not counted as ok."""
    from vaebench.benchmark.report import review_result

    statuses = [review_result(r)["status"] for r in results]
    incomplete = statuses.count("incomplete")
    return (f"{statuses.count('ok')} ok, " + (f"{incomplete} incomplete, " if incomplete else "")
            + f"{statuses.count('failed')} failed")


def _earlier_result(folder: Path, run_config: dict[str, Any], retry_failed: bool
                   ) -> tuple[dict[str, Any] | None, str | None]:
    """What to do with the ``result.json`` a run left in ``folder``: (result, why) to keep it
    and skip the run, or (None, why it runs again; None when there is nothing to say)."""
    previous, problem = load_result(folder)
    if problem:
        return None, f"its {RESULT_FILE} is malformed ({problem}), running it again"
    if previous is None:
        return None, None
    if previous["config"] != run_config:
        return None, "its settings changed since it ran, running it again"
    if previous["status"] == "failed":
        if retry_failed:
            return None, None
        return previous, (f"skipping, failed before ({_short(previous.get('error'))}); "
                          "--retry-failed runs it again")
    missing = unaccounted_metrics(previous)
    if missing:
        return None, (f"its result says ok but has no {', '.join(missing)} metrics (nor an "
                      "error or a reason why they do not apply), running it again")
    return previous, "skipping, done"


class _Say:
    """Progress lines: the start of a run's line, then its end (on a new line when the
    trainer's progress bar was drawn in between)."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def start(self, prefix: str, own_line: bool) -> None:
        if own_line:
            self.line(f"{prefix} ...")
        else:
            self.stream.write(f"{prefix} ... ")
            self.stream.flush()

    def end(self, text: str, prefix: str, own_line: bool) -> None:
        self.line(f"{prefix} ... {text}" if own_line else text)


class _Context:
    """What runs of the same dataset share: the data and the feature network, loaded once."""

    def __init__(self, config: BenchmarkConfig):
        self.config = config
        self._data: dict[str, Any] = {}
        self._features: dict[str, Any] = {}

    def data(self, dataset: str):
        """(train, test) of ``dataset``, loaded as ``vaebench train`` loads it (once)."""
        from vaebench.data import load_train_test

        cfg = self.config
        return _once(self._data, dataset, lambda: load_train_test(
            dataset, train_size=cfg.train_size, seed=cfg.data_seed, data_root=cfg.data_root,
            skip_bad_images=cfg.skip_bad_images, mode_specific=cfg.mode_specific))

    def features(self, dataset: str, sample_shape: tuple[int, ...]):
        """The feature network of the sample-quality metrics for ``dataset`` (once)."""
        return _once(self._features, dataset,
                     lambda: self._build_features(dataset, sample_shape))

    def _build_features(self, dataset: str, sample_shape: tuple[int, ...]):
        from vaebench.metrics import feature_network
        from vaebench.training import resolve_device

        try:
            network = feature_network(self.config.features, dataset, sample_shape,
                                      resolve_device(self.config.device))
        except ValueError as err:
            raise NotApplicable(str(err)) from err
        return CachingFeatures(network)


def _once(memo: dict[str, Any], key: str, build: Callable[[], Any]) -> Any:
    """``memo[key]``, built on first use. A build that raises is remembered too and raised
    again: every run of a dataset would fail the same way (missing data, NotApplicable)."""
    if key not in memo:
        try:
            memo[key] = build()
        except Exception as err:
            memo[key] = err
    value = memo[key]
    if isinstance(value, Exception):
        raise value
    return value


class CachingFeatures:
    """A feature network that remembers the features of the reference (test) image sets it
    was given, so that every run of a dataset compares with them without recomputing them
    (Inception features of a thousand images take minutes on a CPU). Sets are recognised
    by a hash of their pixels; generated batches (tensors) are never remembered.
    """

    def __init__(self, network: Any, max_entries: int = 16):
        self.network = network
        self.name = network.name
        self.dim = network.dim
        self.max_entries = max_entries
        self.hits = 0
        self._memo: dict[str, torch.Tensor] = {}

    def info(self) -> dict[str, Any]:
        info = getattr(self.network, "info", None)
        return info() if callable(info) else {}

    def __call__(self, images: Any) -> torch.Tensor:
        from vaebench.data import ArrayData

        if not isinstance(images, ArrayData):
            return self.network(images)
        pixels = images.take(slice(None)).detach().to("cpu", torch.float32).contiguous()
        key = hashlib.sha1(pixels.numpy().tobytes()).hexdigest() + str(tuple(pixels.shape))
        if key in self._memo:
            self.hits += 1
            return self._memo[key].clone()
        features = self.network(images)
        if len(self._memo) < self.max_entries:
            self._memo[key] = features.clone()
        return features


# --------------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------------


def run_one(config: BenchmarkConfig, run: Run, context: _Context | None = None
            ) -> dict[str, Any]:
    """Train, evaluate and save one run; write and return its ``result.json`` contents.

    Any exception while loading data, building or training the model (including a
    non-finite loss) marks the run failed; each metric is computed on its own, so one that
    fails is recorded in ``metric_errors`` and the run is still ``"ok"``.
    """
    import vaebench

    context = context or _Context(config)
    folder = run.folder(config.output)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result: dict[str, Any] = {
        "dataset": run.key, "dataset_source": run.dataset, "model": run.model,
        "seed": run.seed, "status": "failed", "error": None, "traceback": None,
        "seconds": None, "train_seconds": None, "eval_seconds": None, "best_epoch": None,
        "best_eval_loss": None,
        "n_train": None, "n_test": None, "metrics": {}, "metric_errors": {},
        "not_applicable": {}, "figures": {}, "samplers": None, "model_likelihood": None,
        "config": _jsonable(config.run_config(run.dataset, run.model, run.seed)),
        "hardware": None, "vaebench_version": vaebench.__version__,
    }
    model, trackers = None, []
    try:
        trackers = _run_trackers(config, run)
        train, test = context.data(run.dataset)
        result.update(n_train=len(train), n_test=len(test))
        model, samplers, trainer = _train(config, run, train, test, folder, result, trackers)
        result["hardware"] = hardware(trainer.device)
        result["status"] = "ok"
    except Exception as err:
        result["error"] = f"{type(err).__name__}: {err}"
        result["traceback"] = _traceback_summary(err)
        result["hardware"] = result["hardware"] or hardware(None)
    if result["status"] == "ok":
        eval_start = time.perf_counter()
        features = _lazy_features(context, run.dataset, train.sample_shape)
        result["metrics"], result["metric_errors"], result["not_applicable"] = evaluate_run(
            config, run, model, train, test, features, samplers)
        try:
            result["figures"] = _save_figure_tensors(
                model, samplers[model.default_sampler], test, run, folder)
        except Exception as err:  # figures never fail a run
            result["figures"] = {"error": f"{type(err).__name__}: {err}"}
        result["eval_seconds"] = time.perf_counter() - eval_start
    result["seconds"] = time.perf_counter() - start
    result["finished"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    result = _jsonable(result)
    write_json(folder / RESULT_FILE, result)
    _finish_tracking(trackers, folder, result)
    return result


def tracked_run(config: BenchmarkConfig, run: Run | None = None) -> Any:
    """The :class:`~vaebench.integrations.trackers.TrackedRun` of one run of the benchmark
    (``run`` None: of the benchmark itself), grouped under the benchmark folder's name."""
    from vaebench.integrations.trackers import TrackedRun

    group = Path(config.output).resolve().name
    if run is None:
        return TrackedRun(Path(config.output), group, group, tracking_uri=config.tracking_uri)
    tags = {"benchmark": group, "model": run.model, "dataset": run.key, "seed": str(run.seed)}
    return TrackedRun(Path(config.output), f"{run.model}-{run.key}-seed{run.seed}", group,
                      tags, config.tracking_uri)


def _run_trackers(config: BenchmarkConfig, run: Run) -> list[Any]:
    """The trackers of ``config.log`` for ``run``, closed by :func:`_finish_tracking`."""
    from vaebench.integrations.trackers import create_trackers

    return create_trackers(config.log, tracked_run(config, run), close_at_run_end=False)


def _finish_tracking(trackers: list[Any], folder: Path, result: dict[str, Any]) -> None:
    """Log the run's figures and files and end its tracked runs; a tracker that fails here
    is a warning, the run's result being written already."""
    for tracker in trackers:
        try:
            tracker.log_summary(result["metrics"])
            tracker.close(folder, failed=result["status"] != "ok")
        except Exception as err:
            warnings.warn(f"the {tracker.name} run of {folder} could not be finished: "
                          f"{type(err).__name__}: {err}", RuntimeWarning, stacklevel=2)


def _train(config: BenchmarkConfig, run: Run, train, test, folder: Path,
           result: dict[str, Any], trackers: list[Any] | None = None):
    """Train the run's model, fit its samplers (see :func:`run_samplers`), save them all."""
    from vaebench.data.tables import likelihood_fields
    from vaebench.models import create_model
    from vaebench.samplers import save_sampler
    from vaebench.saved_model import fitted_sampler
    from vaebench.training import Trainer, TrainerConfig

    likelihood = likelihood_fields(train, config.likelihood, config.sigma)
    result["model_likelihood"] = {key: likelihood[key] for key in ("likelihood", "sigma")}
    options: dict[str, Any] = {"input_dim": train.sample_shape, "latent_dim": config.latent_dim,
                               **likelihood, "sigma_per": config.sigma_per}
    options.update({role: getattr(config, role) for role in ("encoder", "decoder")
                    if getattr(config, role) is not None})
    options.update(config.model_options.get(run.model, {}))
    torch.manual_seed(run.seed)
    model = create_model(run.model, **options)
    trainer = Trainer(model, TrainerConfig(
        epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate,
        even_batches=config.even_batches, seed=run.seed, device=config.device,
        progress=config.progress), callbacks=trackers)
    start = time.perf_counter()
    history = trainer.fit(train, test)
    result["train_seconds"] = time.perf_counter() - start
    write_json(folder / "history.json", _jsonable(history))
    result["best_epoch"] = trainer.best_epoch
    result["best_eval_loss"] = trainer.best_eval_loss
    if trainer.best_epoch is None:
        raise FloatingPointError(f"the eval loss was never finite (last: "
                                 f"{history[-1].get('eval_loss')}); nothing to evaluate")
    samplers, result["samplers"] = {}, {}
    for name in run_samplers(model, config.samplers):
        samplers[name], result["samplers"][name] = fitted_sampler(
            name, model, train, seed=run.seed, **config.sampler_options.get(name, {}))
    model.save(folder / "model")
    for sampler in samplers.values():
        save_sampler(sampler, folder / "model")
    return model, samplers, trainer


def run_samplers(model: Any, names: list[str]) -> list[str]:
    """The samplers of a run: the model's own (the one its paper generates with) first,
    then those of ``names`` that serve it."""
    from vaebench.samplers import get_sampler_class
    from vaebench.samplers.base import refusal_of

    own = model.default_sampler
    return [own, *(name for name in names if name != own and
                   not refusal_of(get_sampler_class(name), model))]


def _lazy_features(context: _Context, dataset: str, sample_shape: tuple[int, ...]):
    """A thunk for the feature network: built only if sample quality is computed."""
    return lambda: context.features(dataset, sample_shape)


def evaluate_run(config: BenchmarkConfig, run: Run, model: Any, train, test,
                 features: Callable[[], Any] | Any = None, samplers: dict[str, Any] | None = None
                 ) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """Every metric of ``config`` that applies: (metrics by group, errors, not applicable).
    Sample quality is that of the model's own sampler (the first of ``samplers``, fitted
    :mod:`vaebench.samplers` samplers by name), with FID / precision / recall of every
    sampler under ``by_sampler``; without samplers, of ``model.generate``. A model of a table
    has its per-column NLL in the reconstruction group and the table quality of its
    generated rows as sample quality (:func:`table_sample_quality`) instead of FID.

    Each group is computed on its own: an exception is recorded as that group's error.
    """
    from vaebench import viz
    from vaebench.data.sources import has_class_labels
    from vaebench.data.table_datasets import TABLE_TARGETS
    from vaebench.metrics import (
        disentanglement_report,
        has_likelihood,
        likelihood_report,
        reconstruction_error,
        representation_report,
        sample_quality,
    )
    from vaebench.tabular_likelihood import column_nll, is_tabular
    from vaebench.training import evaluate

    table, target = is_tabular(model), TABLE_TARGETS.get(run.dataset)

    def reconstruction():
        error = reconstruction_error(model, test)
        return {**error, "column_nll": column_nll(model, test)} if table else error

    def likelihood():
        if not has_likelihood(model):
            raise NotApplicable(getattr(model, "no_likelihood_reason", "no likelihood"))
        try:
            return likelihood_report(model, test, k=config.iwae_k, seed=run.seed)
        except TypeError as err:
            raise NotApplicable(str(err)) from err

    def quality():
        if table:
            return table_sample_quality(model, train, test, samplers, n=config.n_fid,
                                        target=target, seed=run.seed)
        if not viz.is_image_shape(test.sample_shape):
            raise NotApplicable("the data are not images")
        network = features() if callable(features) else features
        if network is None:
            raise NotApplicable("no feature network")
        if not samplers:
            return sample_quality(model, test, network, n=config.n_fid, seed=run.seed)
        scores = {name: sample_quality(model, test, network, n=config.n_fid, seed=run.seed,
                                       sampler=sampler) for name, sampler in samplers.items()}
        own = next(iter(scores.values()))
        return {**own, "by_sampler": {name: {key: score[key] for key in SAMPLER_METRICS}
                                      for name, score in scores.items()}}

    def representation():
        if not has_class_labels(train) or not has_class_labels(test):
            raise NotApplicable("needs one integer class label per sample")
        if getattr(model, "needs_labels", False):
            raise NotApplicable("the encoder is given the label: a probe of its codes would "
                                "measure that, not the representation")
        probe_train = train if len(train) <= PROBE_TRAIN_SIZE else \
            train.subset(slice(0, PROBE_TRAIN_SIZE))
        return representation_report(model, probe_train, test)

    def disentanglement():
        if run.dataset != "dsprites":
            raise NotApplicable("needs the ground-truth factors of dsprites")
        return disentanglement_report(model, n=config.dsprites_n, seed=config.data_seed)

    groups = {
        "loss": lambda: evaluate(model, test),
        "reconstruction": reconstruction,
        "likelihood": likelihood,
        "sample_quality": quality,
        "representation": representation,
        "disentanglement": disentanglement,
    }
    metrics: dict[str, Any] = {}
    errors: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name, compute in groups.items():
        if not config.wants(name):
            continue
        try:
            metrics[name] = compute()
        except NotApplicable as reason:
            skipped[name] = str(reason)
        except Exception as err:
            errors[name] = f"{type(err).__name__}: {err}"
    if table and config.wants("sample_quality"):
        skipped.update(table_not_applicable(target))
    return metrics, errors, skipped


def table_sample_quality(model: Any, train, test, samplers: dict[str, Any] | None, *,
                         n: int, target: str | None, seed: int) -> dict[str, Any]:
    """The sample quality of a model of a table: ``n`` rows drawn with each of ``samplers``
    (fitted samplers by name; None: the prior), each scored by
    :func:`~vaebench.metrics.tabular.table_quality` against the training rows ``train``,
    with the held-out rows ``test`` (and the ML efficacy of ``target``, if any). The
    headline figures of the model's own sampler (the first; :func:`table_figures`), those of
    every sampler under ``by_sampler``, and the own sampler's whole report under
    ``table_quality``."""
    from vaebench.saved_model import table_quality_report

    reports = table_quality_report(model, train, test, samplers or {"normal": None},
                                   n_samples=n, target=target, seed=seed)
    figures = {name: table_figures(report) for name, report in reports.items()}
    own = next(iter(reports))
    return {"n": n, "n_reference": len(train), "n_holdout": len(test), "target": target,
            **figures[own], "by_sampler": figures, "table_quality": reports[own]}


def table_figures(report: dict[str, Any]) -> dict[str, float]:
    """The headline figures of a :func:`~vaebench.metrics.tabular.table_quality` report: the
    mean column shape and pair trend, the ML efficacy of the synthetic rows (``ml_accuracy``
    and ``ml_f1``, or ``ml_r2``) and its reference, that of the real training rows
    (``ml_real_...``), the median distance to the closest training row of the synthetic rows
    (``dcr``) and of the held-out ones (``dcr_holdout``), the share of ``copies``, and the
    overfitting protection's score (``privacy``, 1 best). A figure that is undefined (a
    table without pairs of columns) is left out."""
    privacy = report["privacy"]
    figures = {"column_shapes": report["column_shapes"]["mean"],
               "column_pair_trends": report["column_pair_trends"]["mean"],
               "dcr": privacy["synthetic"]["median"], "dcr_holdout": privacy["holdout"]["median"],
               "copies": privacy["synthetic"]["copies"],
               "privacy": privacy["overfitting_protection"]["score"]}
    efficacy = report.get("ml_efficacy", {})
    for rows, prefix in (("synthetic", "ml_"), ("real", "ml_real_")):
        figures.update({prefix + key: value for key, value in efficacy.get(rows, {}).items()})
    return {key: value for key, value in figures.items() if value is not None}


def table_not_applicable(target: str | None) -> dict[str, str]:
    """The image metrics a model of a table has no figure of, and why; the ML efficacy too
    without a ``target`` column."""
    reasons = {"fid": "FID, precision and recall compare images in a feature network's space;"
                      " a table's generated rows are scored by their table quality instead"}
    if target is None:
        reasons["ml_efficacy"] = ("no target column: the ML efficacy predicts a bundled "
                                  "table's label column, and a table file names none")
    return reasons


# --------------------------------------------------------------------------------------------
# the images the report's figures are made of
# --------------------------------------------------------------------------------------------


def _save_figure_tensors(model: Any, sampler: Any, test, run: Run, folder: Path
                         ) -> dict[str, Any]:
    """Save reconstructions of fixed test images, samples and a latent traversal as uint8
    in ``figures.safetensors``; returns what was saved or why not."""
    from vaebench import viz
    from vaebench.evaluation import evaluating
    from vaebench.serialization import save_tensors

    if not viz.is_image_shape(test.sample_shape):
        return {"skipped": "the data are not images"}
    notes: dict[str, Any] = {}
    tensors: dict[str, torch.Tensor] = {}
    index = torch.linspace(0, len(test) - 1, min(N_RECONSTRUCTIONS, len(test))).long()
    x = test.take(index).to(model.device)
    tensors["originals"] = x
    parts = {
        "reconstructions": lambda: model.reconstruct(x),
        "samples": lambda: sampler.generate(model, N_SAMPLES),
    }
    for name, make in parts.items():
        try:
            with evaluating(model, run.seed):
                tensors[name] = make()
        except Exception as err:
            notes[name] = f"{type(err).__name__}: {err}"
    try:
        images, info = latent_traversal(model, x[:1], test)
        tensors["traversal"] = images
        notes["traversal"] = info
    except NotApplicable as reason:
        notes["traversal"] = f"skipped: {reason}"
    except Exception as err:
        notes["traversal"] = f"{type(err).__name__}: {err}"
    save_tensors(folder / FIGURES_FILE, {k: _to_uint8(v) for k, v in tensors.items()})
    notes["saved"] = sorted(tensors)
    return notes


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def latent_traversal(model: Any, x: torch.Tensor, data, steps: int = TRAVERSAL_STEPS,
                     max_dims: int = TRAVERSAL_MAX_DIMS) -> tuple[torch.Tensor, dict[str, Any]]:
    """Decode the code of image ``x`` (1 x C x H x W) with one latent dimension at a time
    set to ``steps`` values: over [-3, 3] for models with a likelihood (a N(0, I)-like
    posterior), else over the observed range of the codes of ``data``. Dimensions are
    ordered by the variance of their codes over ``data`` (the most used first), at most
    ``max_dims``. Returns images (dims x steps, C, H, W) and what was varied.
    """
    from vaebench.evaluation import evaluating
    from vaebench.metrics import has_likelihood, latent_codes
    from vaebench.models import QuantizedAutoencoder

    if isinstance(model, QuantizedAutoencoder):
        raise NotApplicable("the codes are quantized (codebook vectors), not a continuous space")
    if len(model.latent_shape) != 1:
        raise NotApplicable(f"the latent is a grid of shape {model.latent_shape}")
    if getattr(model, "needs_labels", False):
        raise NotApplicable("the model is conditioned on labels")
    reference = data.subset(slice(0, min(len(data), 1000)))
    codes = latent_codes(model, reference)
    order = torch.argsort(codes.var(0), descending=True)[:max_dims]
    gaussian = has_likelihood(model)
    if gaussian:
        low = torch.full((codes.shape[1],), -3.0)
        high = torch.full((codes.shape[1],), 3.0)
    else:
        low, high = codes.min(0).values, codes.max(0).values
    with evaluating(model):
        z0 = model.encode(x).mean.reshape(1, -1)
        rows = []
        for dim in order.tolist():
            z = z0.repeat(steps, 1)
            z[:, dim] = torch.linspace(float(low[dim]), float(high[dim]), steps,
                                       device=z.device)
            rows.append(model.likelihood.mean(model.decode(z)))
    info = {"dims": order.tolist(), "steps": steps,
            "range": "[-3, 3]" if gaussian else "observed range of the test codes"}
    return torch.cat(rows), info


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _traceback_summary(err: BaseException, frames: int = 4) -> str:
    """The last few frames of the traceback and the error, as text."""
    summary = traceback.extract_tb(err.__traceback__)[-frames:]
    lines = traceback.format_list(summary)
    lines += traceback.format_exception_only(type(err), err)
    return "".join(lines).strip()


def _short(error: str | None, limit: int = 200) -> str:
    text = " ".join((error or "unknown error").split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _jsonable(value: Any) -> Any:
    """``value`` with tuples as lists, tensors and numpy scalars as numbers, non-finite
    floats as None: what ``result.json`` can hold and compare after a round trip."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
