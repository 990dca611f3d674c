"""A saved model's life after training: the data it was trained on, its samplers (fitted
once and kept in its folder), and its evaluation. ``vaebench sample`` and ``vaebench
evaluate`` are thin layers over these functions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from torch import nn

from vaebench.data import ArrayData, load_train_test
from vaebench.evaluation import evaluating
from vaebench.samplers import (
    Sampler,
    create_sampler,
    load_sampler,
    save_sampler,
    saved_samplers,
)
from vaebench.serialization import read_training_data


def training_record(model_dir: str | Path, dataset: str | None = None,
                    data_root: str | None = None) -> dict[str, Any]:
    """How to load a saved model's data (the keyword arguments of
    :func:`vaebench.data.load_train_test`): what its save recorded, or ``dataset``."""
    record = dict(read_training_data(model_dir) or {})
    if dataset is not None and dataset != record.get("dataset"):
        record = {"dataset": dataset}
    if "dataset" not in record:
        raise ValueError(f"{model_dir} does not record the data it was trained on (saved "
                         "by vaebench train since 0.2): give the dataset (--dataset)")
    if data_root is not None:
        record["data_root"] = data_root
    return record


def training_data(model_dir: str | Path, dataset: str | None = None,
                  data_root: str | None = None) -> tuple[ArrayData, ArrayData]:
    """(train, test) of a saved model: the data its save recorded, or ``dataset``."""
    return load_train_test(**training_record(model_dir, dataset, data_root))


def fitted_sampler(name: str, model: nn.Module, train: Any, *, seed: int = 0,
                   progress: bool = False, **options: Any) -> tuple[Sampler, dict[str, Any]]:
    """The sampler ``name`` built for ``model`` and fitted on its training data ``train``
    (if it needs fitting), with a summary of the fit (its seconds included)."""
    sampler = create_sampler(name, model, **options)
    start = time.perf_counter()
    summary = sampler.fit(model, train, seed=seed, progress=progress)
    return sampler, {"sampler": name, "options": sampler.config.to_dict(), **summary,
                     "fit_seconds": time.perf_counter() - start}


def ready_sampler(model_dir: str | Path, model: nn.Module, name: str, *,
                  dataset: str | None = None, data_root: str | None = None,
                  refit: bool = False, seed: int = 0, progress: bool = False,
                  keep: bool = True, **options: Any) -> Sampler:
    """The sampler ``name`` of the model saved in ``model_dir``: the saved one, else (or
    with ``refit`` or other ``options``) a new one, fitted on the model's training data
    if it needs fitting and then saved beside the model (unless ``keep`` is false, as for
    a Hub snapshot, which stays as downloaded)."""
    if name in saved_samplers(model_dir) and not refit and not options:
        return load_sampler(model_dir, name, model)
    sampler = create_sampler(name, model, **options)
    if sampler.needs_fitting:
        train, _ = training_data(model_dir, dataset, data_root)
        sampler.fit(model, train, seed=seed, progress=progress)
        if keep:
            save_sampler(sampler, model_dir)
    return sampler


def evaluate_model(model: nn.Module, test: ArrayData, samplers: dict[str, Sampler], *,
                   k: int = 100, features: Any = None, n_samples: int = 1000,
                   seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Every figure of a trained model on ``test``: the loss and its terms, reconstruction
    errors, the ELBO and importance-sampled log p(x) with ``k`` draws (models with a
    likelihood), and FID / precision / recall of ``n_samples`` draws of each sampler
    against the test images (with a ``features`` network). ``progress``: progress bars."""
    from vaebench.metrics import (
        has_likelihood,
        likelihood_report,
        reconstruction_error,
        sample_quality,
    )
    from vaebench.training import evaluate

    with evaluating(None, seed=seed):  # the loss of a VAE draws codes
        loss = evaluate(model, test)
    report: dict[str, Any] = {"model": model.name, "n_test": len(test), "seed": seed,
                              "loss": loss, "reconstruction": reconstruction_error(model, test)}
    if has_likelihood(model):
        report["likelihood"] = likelihood_report(model, test, k=k, seed=seed,
                                                 progress=progress)
    else:
        report["likelihood"] = {"not_applicable": model.no_likelihood_reason}
    if features is not None:
        report["sample_quality"] = {
            name: sample_quality(model, test, features, n=n_samples, seed=seed, sampler=sampler)
            for name, sampler in samplers.items()}
    return report



def table_quality_report(model: nn.Module, train: Any, test: Any, samplers: dict[str, Sampler],
                         *, n_samples: int = 1000, target: str | None = None,
                         seed: int = 0) -> dict[str, Any]:
    """What FID is to images, for a tabular model: ``n_samples`` rows drawn with each
    sampler, scored by :func:`vaebench.metrics.tabular.table_quality` against the training
    rows ``train`` (shapes, pair trends, distance to the closest record) and the held-out
    rows ``test`` (the distance's reference, and the ML efficacy of ``target``)."""
    from vaebench.metrics.tabular import table_quality
    from vaebench.tabular_likelihood import generate_table

    real, holdout = train.to_frame(), test.to_frame()
    return {name: table_quality(real, generate_table(model, n_samples, sampler=sampler,
                                                     seed=seed),
                                train.schema, target, holdout=holdout, seed=seed)
            for name, sampler in samplers.items()}
