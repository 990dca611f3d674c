"""Sample quality: Frechet distance (FID) and precision / recall in a feature space.

Both compare generated images with reference (test) images through a feature network
(:mod:`vaebench.metrics.features`); the report names that network, the number of samples
and ``k``, because the figures are only comparable when all three agree. The Frechet
distance of a finite sample is biased upwards, more so the fewer samples there are (and
strongly when n is below the feature dimension, 2048 for Inception): compare models at the
same n.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vaebench.data import as_data
from vaebench.data.sources import ArrayData
from vaebench.evaluation import evaluating

__all__ = ["feature_frechet_distance", "frechet_distance", "gaussian_stats", "precision_recall",
           "sample_quality"]


def _float64_matrix(features: Any, what: str) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{what} must be N x dim, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return array


def gaussian_stats(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean (dim,) and unbiased covariance (dim, dim) of ``features`` (N x dim), float64."""
    f = _float64_matrix(features, "features")
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {f.shape[0]}")
    mu = f.mean(axis=0)
    centred = f - mu
    sigma = centred.T @ centred / (f.shape[0] - 1)
    return mu, (sigma + sigma.T) / 2


def _psd_factor(matrix: np.ndarray) -> np.ndarray:
    """A factor F with F F^T = matrix (symmetric PSD): Cholesky when it is positive
    definite (cheap), else the symmetric square root (negative round-off eigenvalues -> 0)."""
    try:
        return np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        values, vectors = np.linalg.eigh(matrix)
        return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})  (Dowson and Landau 1982; the FID
    of Heusel et al. 2017 is this distance between Gaussians fitted to network features).

    The trace of (S1 S2)^{1/2} is the sum of the square roots of the eigenvalues of S1 S2.
    With any factor S1 = F F^T, those are the eigenvalues of M = F^T S2 F (AB and BA share
    eigenvalues, with A = F, B = F^T S2), and M is symmetric positive semi-definite. F is
    the Cholesky factor of S1, or its symmetric square root (from an eigendecomposition)
    when S1 is singular, as the covariance of n <= dim samples is. So the trace comes, in
    float64, from symmetric factorizations and the eigenvalues of a symmetric matrix, with
    round-off negatives clipped to zero: no complex numbers, no iterative ``sqrtm`` (which
    can fail or return an imaginary part for singular covariances), and no added diagonal
    offset. The result is clipped at 0 (round-off only).
    """
    mu1 = np.asarray(mu1, dtype=np.float64).reshape(-1)
    mu2 = np.asarray(mu2, dtype=np.float64).reshape(-1)
    s1 = np.asarray(sigma1, dtype=np.float64)
    s2 = np.asarray(sigma2, dtype=np.float64)
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"shapes do not match: mu1 {mu1.shape}, sigma1 {s1.shape}, mu2 "
                         f"{mu2.shape}, sigma2 {s2.shape}")
    for name, value in (("mu1", mu1), ("sigma1", s1), ("mu2", mu2), ("sigma2", s2)):
        if not np.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    s1 = (s1 + s1.T) / 2
    s2 = (s2 + s2.T) / 2
    factor = _psd_factor(s1)
    middle = factor.T @ s2 @ factor
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff) + float(np.trace(s1)) + float(np.trace(s2)) - 2.0 * trace_sqrt
    return max(value, 0.0)


def feature_frechet_distance(features1: Any, features2: Any) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N_i x dim).

    Equals ``frechet_distance(*gaussian_stats(features1), *gaussian_stats(features2))``.
    When both sets have fewer samples than dimensions (a few dozen Inception features of
    2048 dimensions) it avoids every dim x dim eigendecomposition: with the centred
    features A_i (n_i x dim), S_i = A_i^T A_i / (n_i - 1), the non-zero eigenvalues of
    S1 S2 are those of C C^T with C = A1 A2^T / sqrt((n1 - 1)(n2 - 1)) (again AB and BA),
    so Tr (S1 S2)^{1/2} is the sum of the singular values of the n1 x n2 matrix C, and
    Tr S_i = ||A_i||_F^2 / (n_i - 1).
    """
    f1 = _float64_matrix(features1, "features1")
    f2 = _float64_matrix(features2, "features2")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature dimensions differ: {f1.shape[1]} and {f2.shape[1]}")
    n1, n2, dim = f1.shape[0], f2.shape[0], f1.shape[1]
    if min(n1, n2) < 2:
        raise ValueError(f"need at least 2 feature vectors per set, got {n1} and {n2}")
    if max(n1, n2) >= dim:
        return frechet_distance(*gaussian_stats(f1), *gaussian_stats(f2))
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    a1, a2 = f1 - mu1, f2 - mu2
    cross = (a1 @ a2.T) / np.sqrt((n1 - 1) * (n2 - 1))
    trace_sqrt = float(np.linalg.svd(cross, compute_uv=False).sum())
    diff = mu1 - mu2
    value = (float(diff @ diff) + float(np.sum(a1 * a1)) / (n1 - 1)
             + float(np.sum(a2 * a2)) / (n2 - 1) - 2.0 * trace_sqrt)
    return max(value, 0.0)


# --------------------------------------------------------------------------------------------
# precision and recall (Kynkaanniemi et al. 2019)
# --------------------------------------------------------------------------------------------


def _float64_tensor(features: Any, what: str) -> torch.Tensor:
    return torch.from_numpy(_float64_matrix(features, what))


def _knn_radii(points: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point of the same set."""
    radii = []
    for start in range(0, len(points), batch_size):
        dist = torch.cdist(points[start:start + batch_size], points)
        # k + 1 smallest: the point itself (distance 0) comes first.
        radii.append(dist.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def _fraction_covered(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
                      batch_size: int) -> float:
    """Fraction of queries inside at least one ball (centre, radius)."""
    inside = 0
    for start in range(0, len(queries), batch_size):
        dist = torch.cdist(queries[start:start + batch_size], centres)
        inside += int((dist <= radii[None, :]).any(dim=1).sum())
    return inside / len(queries)


def precision_recall(real_features: Any, fake_features: Any, k: int = 3,
                     batch_size: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019).

    Each set's manifold is the union of balls around its points whose radius is the
    distance to the point's k-th nearest neighbour in the set. Precision is the fraction of
    fake points inside the real manifold (are samples realistic?), recall the fraction of
    real points inside the fake manifold (is the data covered?). Distances in float64;
    pairwise distances are computed ``batch_size`` rows at a time, so memory is
    ``batch_size x N`` numbers.
    """
    real = _float64_tensor(real_features, "real features")
    fake = _float64_tensor(fake_features, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: {real.shape[1]} (real) and "
                         f"{fake.shape[1]} (fake)")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"each set needs more than k={k} points, got {len(real)} real and "
                         f"{len(fake)} fake")
    real_radii = _knn_radii(real, k, batch_size)
    fake_radii = _knn_radii(fake, k, batch_size)
    precision = _fraction_covered(fake, real, real_radii, batch_size)
    recall = _fraction_covered(real, fake, fake_radii, batch_size)
    return precision, recall


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------


def _subset(data: ArrayData, n: int, generator: torch.Generator) -> ArrayData:
    """A seeded random subset of n rows (all rows, in order, if n == len)."""
    if n >= len(data):
        return data
    index = torch.randperm(len(data), generator=generator)[:n].sort().values
    labels = None if data.labels is None else data.labels[index]
    return ArrayData(data.take(index).cpu(), labels, data.name)


def _model_features(model: Any, n: int, features: Any, batch_size: int, seed: int,
                    shape: tuple[int, ...], sampler: Any = None) -> torch.Tensor:
    generate = model.generate if sampler is None else \
        (lambda count: sampler.generate(model, count))
    out = []
    with evaluating(model, seed):
        for start in range(0, n, batch_size):
            images = generate(min(batch_size, n - start))
            if tuple(images.shape[1:]) != shape:
                raise ValueError(f"the model generates images of shape "
                                 f"{tuple(images.shape[1:])}, the reference images are {shape}")
            # As when samples are saved as images: values outside [0, 1] are clipped.
            out.append(features(images.clamp(0.0, 1.0)))
    return torch.cat(out)


def sample_quality(model_or_images: Any, reference_images: Any, features: Any,
                   n: int | None = None, *, k: int = 3, batch_size: int = 256,
                   seed: int = 0, sampler: Any = None) -> dict[str, Any]:
    """FID, precision and recall of generated images against reference images.

    ``model_or_images``: a model (``n`` samples are drawn with ``model.generate``, or with
    ``sampler.generate(model, ...)`` if a :mod:`vaebench.samplers` sampler is given, in
    batches of ``batch_size`` under a private RNG seeded with ``seed``, clipped to [0, 1]) or the
    generated images (anything :func:`vaebench.data.as_data` takes); the samples depend on
    ``seed`` and on ``batch_size``, which splits the draws. ``reference_images``:
    test images. ``features``: a feature extractor (``name``, ``dim``, ``__call__``), e.g.
    ``InceptionFeatures()`` or ``ClassifierFeatures.for_dataset("mnist")``.

    ``n`` defaults to the number of reference images (for a model) or to the smaller of the
    two sets (for images). At most ``n`` reference images are used: a seeded random subset
    when there are more (test sets are often sorted by class); likewise for given images.

    Returns ``fid``, ``precision``, ``recall``, ``k``, ``n`` (generated samples used),
    ``n_reference``, ``features`` (the network's name), ``feature_dim``, ``seed`` and what
    the extractor's ``info()`` adds (e.g. a classifier's test accuracy).
    """
    reference = as_data(reference_images, name="reference images")
    if len(reference.sample_shape) != 3:
        raise ValueError(f"reference images must be N x C x H x W, got samples of shape "
                         f"{reference.sample_shape}")
    generator = torch.Generator().manual_seed(seed)
    is_model = callable(getattr(model_or_images, "generate", None))
    if is_model:
        n = len(reference) if n is None else int(n)
        if n < 2:
            raise ValueError(f"n must be at least 2, got {n}")
        reference = _subset(reference, n, generator)
        fake_features = _model_features(model_or_images, n, features, batch_size, seed,
                                         reference.sample_shape, sampler)
    else:
        fake = as_data(model_or_images, name="generated images")
        if fake.sample_shape != reference.sample_shape:
            raise ValueError(f"generated images have shape {fake.sample_shape}, the reference "
                             f"images {reference.sample_shape}")
        n = min(len(fake), len(reference)) if n is None else int(n)
        if n > len(fake):
            raise ValueError(f"n={n} but only {len(fake)} generated images were given")
        if n < 2:
            raise ValueError(f"n must be at least 2, got {n}")
        fake = _subset(fake, n, generator)
        reference = _subset(reference, n, generator)
        fake_features = features(fake)
    real_features = features(reference)
    fid = feature_frechet_distance(real_features, fake_features)
    precision, recall = precision_recall(real_features, fake_features, k=k)
    info = features.info() if callable(getattr(features, "info", None)) else {}
    return {
        "fid": fid,
        "precision": precision,
        "recall": recall,
        "k": k,
        "n": len(fake_features),
        "n_reference": len(real_features),
        "features": getattr(features, "name", type(features).__name__),
        "feature_dim": int(real_features.shape[1]),
        "seed": seed,
        **{key: value for key, value in info.items() if key not in ("features", "feature_dim")},
    }
