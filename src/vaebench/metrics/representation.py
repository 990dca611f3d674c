"""Representation quality: how well the latent means predict the labels.

Two standard read-outs of the posterior means (flattened to one vector per sample): a
linear probe (multinomial logistic regression on standardized codes) and a k-nearest-
neighbour classifier (Euclidean distance on the raw codes), both fitted on the training
codes and scored on the test codes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vaebench.data import as_data
from vaebench.evaluation import evaluating

__all__ = ["knn_accuracy", "latent_codes", "linear_probe_accuracy", "representation_report"]


def latent_codes(model: Any, data: Any, batch_size: int = 512) -> torch.Tensor:
    """Posterior means ``model.encode(x).mean`` of ``data``, flattened to N x d (CPU float32).

    The model runs in eval mode under ``no_grad``; its previous mode is restored.
    """
    data = as_data(data, name="data")
    codes = []
    with evaluating(model):
        for x in data.batches(batch_size, device=model.device):
            posterior = model.encode(x)
            mean = getattr(posterior, "mean", None)
            if not isinstance(mean, torch.Tensor):
                raise TypeError(f"{type(model).__name__}.encode(x) must return a posterior "
                                f"with a tensor .mean, got {type(posterior).__name__}")
            codes.append(mean.flatten(1).to("cpu", torch.float32))
    if not codes:
        raise ValueError("data is empty")
    return torch.cat(codes)


def _xy(codes: Any, labels: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    x = np.asarray(codes, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if x.ndim != 2:
        raise ValueError(f"{what} codes must be N x d, got shape {x.shape}")
    if len(y) != len(x):
        raise ValueError(f"{what}: {len(y)} labels for {len(x)} codes")
    if len(x) == 0:
        raise ValueError(f"{what} codes are empty")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} codes contain NaN or infinite values")
    return x, y


def linear_probe_accuracy(train_codes: Any, train_labels: Any, test_codes: Any,
                          test_labels: Any, *, C: float = 1.0, max_iter: int = 2000) -> float:
    """Test accuracy of a logistic regression (L2, strength 1/C) on standardized codes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y_train = _xy(train_codes, train_labels, "train")
    x_test, y_test = _xy(test_codes, test_labels, "test")
    if len(np.unique(y_train)) < 2:
        raise ValueError("the training labels hold a single class: nothing to probe")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    probe.fit(x_train, y_train)
    return float((probe.predict(x_test) == y_test).mean())


def knn_accuracy(train_codes: Any, train_labels: Any, test_codes: Any, test_labels: Any,
                 k: int = 5) -> float:
    """Test accuracy of a k-nearest-neighbour vote (Euclidean distance on the raw codes)."""
    from sklearn.neighbors import KNeighborsClassifier

    x_train, y_train = _xy(train_codes, train_labels, "train")
    x_test, y_test = _xy(test_codes, test_labels, "test")
    if not 1 <= k <= len(x_train):
        raise ValueError(f"k must lie in 1..{len(x_train)} (the training codes), got {k}")
    knn = KNeighborsClassifier(n_neighbors=k).fit(x_train, y_train)
    return float((knn.predict(x_test) == y_test).mean())


def representation_report(model: Any, train_data: Any, test_data: Any, *, k: int = 5,
                          batch_size: int = 512) -> dict[str, Any]:
    """Linear-probe and k-NN accuracy of the latent means for the labels.

    ``train_data`` and ``test_data`` need labels: ``(images, labels)`` pairs or labelled
    :class:`~vaebench.data.ArrayData`. Returns ``linear_probe``, ``knn``, ``k``,
    ``latent_dim``, ``n_train``, ``n_test`` and ``majority`` (the accuracy of always
    predicting the most frequent test label, the floor to compare with).
    """
    train = as_data(train_data, name="train data")
    test = as_data(test_data, name="test data")
    for data in (train, test):
        if data.labels is None:
            raise ValueError(f"{data.name} has no labels: give (images, labels)")
    train_codes = latent_codes(model, train, batch_size)
    test_codes = latent_codes(model, test, batch_size)
    train_labels = train.labels.cpu().numpy().reshape(-1)
    test_labels = test.labels.cpu().numpy().reshape(-1)
    _, counts = np.unique(test_labels, return_counts=True)
    return {
        "linear_probe": linear_probe_accuracy(train_codes, train_labels, test_codes,
                                              test_labels),
        "knn": knn_accuracy(train_codes, train_labels, test_codes, test_labels, k=k),
        "k": k,
        "latent_dim": int(train_codes.shape[1]),
        "n_train": len(train),
        "n_test": len(test),
        "majority": float(counts.max() / counts.sum()),
    }
