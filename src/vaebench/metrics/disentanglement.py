"""Disentanglement metrics against ground-truth generative factors.

Four scores of how well the dimensions of a code ``z`` (an ``(N, d)`` array) line up with
known discrete factors of variation ``v`` (an ``(N, K)`` integer array of classes):

* :func:`mig`, the Mutual Information Gap (Chen, Li, Grosse and Duvenaud, "Isolating Sources
  of Disentanglement in Variational Autoencoders", NeurIPS 2018);
* :func:`dci`, disentanglement, completeness and informativeness (Eastwood and Williams, "A
  Framework for the Quantitative Evaluation of Disentangled Representations", ICLR 2018);
* :func:`sap`, the Separated Attribute Predictability score (Kumar, Sattigeri and
  Balakrishnan, "Variational Inference of Disentangled Latent Concepts from Unlabeled
  Observations", ICLR 2018);
* :func:`factor_vae_score_from_fn` and its dSprites form :func:`factor_vae_score`, the
  disentanglement metric of Kim and Mnih ("Disentangling by Factorising", ICML 2018).

Where a paper leaves an estimator open we follow the choices of Locatello et al.
("Challenging Common Assumptions in the Unsupervised Learning of Disentangled
Representations", ICML 2019) unless a docstring says otherwise; docs/disentanglement.md lists
every choice. :func:`disentanglement_report` encodes a dSprites subset with a vaebench model
(posterior means) and computes all four.

Inputs may be numpy arrays or torch tensors. Codes must be finite (NaN or infinite values
raise a ValueError), factors must be integers. Factors that take a single value in the data
carry no information to recover and are skipped by every metric; a metric raises if no
factor is left. Constant code dimensions are allowed: they carry no information and score
as such (zero mutual information, zero importance, chance-level prediction, pruned by the
FactorVAE score).
"""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "dci",
    "dci_from_importance",
    "disentanglement_report",
    "discretize",
    "factor_entropies",
    "factor_vae_score",
    "factor_vae_score_from_fn",
    "mig",
    "mig_per_factor",
    "mutual_information_matrix",
    "sap",
    "sap_score_matrix",
]

DCI_MODELS = ("forest", "gbt", "lasso")

# A code value within this many bin widths below a bin edge is put in the upper bin, so that
# values lying on an edge (e.g. integer codes) do not change bin under an affine rescaling
# through floating-point rounding.
_EDGE_TOLERANCE = 1e-9


# --------------------------------------------------------------------------------------
# Input checking
# --------------------------------------------------------------------------------------


def _to_numpy(array: Any) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _check_codes(codes: Any, name: str = "codes") -> np.ndarray:
    z = _to_numpy(codes)
    if z.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N samples, d dimensions), "
                         f"got shape {z.shape}")
    if z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"{name} must have at least one sample and one dimension, "
                         f"got shape {z.shape}")
    if not (np.issubdtype(z.dtype, np.number) or z.dtype == np.bool_):
        raise ValueError(f"{name} must be numeric, got dtype {z.dtype}")
    z = z.astype(np.float64)
    bad = ~np.isfinite(z)
    if bad.any():
        rows = int(bad.any(axis=1).sum())
        dims = np.flatnonzero(bad.any(axis=0)).tolist()
        raise ValueError(f"{name} contain NaN or infinite values ({rows} of {z.shape[0]} "
                         f"samples, in dimension(s) {dims})")
    return z


def _check_factors(factors: Any, n: int, name: str = "factors") -> np.ndarray:
    v = _to_numpy(factors)
    if v.ndim != 2:
        raise ValueError(f"{name} must be a 2-D integer array (N samples, K factors), got "
                         f"shape {v.shape}; a single factor is factors.reshape(-1, 1)")
    if v.shape[1] == 0:
        raise ValueError(f"{name} must have at least one factor, got shape {v.shape}")
    if not (np.issubdtype(v.dtype, np.integer) or v.dtype == np.bool_):
        raise ValueError(f"{name} must be integer classes, got dtype {v.dtype}")
    if v.shape[0] != n:
        raise ValueError(f"codes and {name} must have the same number of rows (samples), got "
                         f"{n} and {v.shape[0]}")
    return v.astype(np.int64)


def _check_pair(codes: Any, factors: Any, prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
    z = _check_codes(codes, f"{prefix}codes")
    return z, _check_factors(factors, z.shape[0], f"{prefix}factors")


def _check_split(train_codes: Any, train_factors: Any, test_codes: Any,
                 test_factors: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    z_tr, v_tr = _check_pair(train_codes, train_factors, "train_")
    z_te, v_te = _check_pair(test_codes, test_factors, "test_")
    if z_tr.shape[1] != z_te.shape[1]:
        raise ValueError(f"train_codes and test_codes must have the same number of "
                         f"dimensions, got {z_tr.shape[1]} and {z_te.shape[1]}")
    if v_tr.shape[1] != v_te.shape[1]:
        raise ValueError(f"train_factors and test_factors must have the same number of "
                         f"factors, got {v_tr.shape[1]} and {v_te.shape[1]}")
    return z_tr, v_tr, z_te, v_te


def _varying_factors(factors: np.ndarray, metric: str) -> list[int]:
    """Indices of the factors with more than one value; raises if there are none."""
    keep = [k for k in range(factors.shape[1]) if np.unique(factors[:, k]).size > 1]
    if not keep:
        raise ValueError(f"{metric}: every factor takes a single value in the data, so there "
                         "is nothing to disentangle")
    return keep


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


# --------------------------------------------------------------------------------------
# MIG (Chen et al. 2018)
# --------------------------------------------------------------------------------------


def discretize(codes: Any, n_bins: int = 20) -> np.ndarray:
    """Bin each code dimension into ``n_bins`` equal-width bins over its own [min, max].

    Bin ``b`` of dimension ``j`` holds ``min_j + b w_j <= z_j < min_j + (b + 1) w_j`` with
    ``w_j = (max_j - min_j) / n_bins``; the maximum goes to the last bin, and a value within
    1e-9 bin widths below an edge to the bin above it (so exact edge values survive an affine
    rescaling). A constant dimension is all in bin 0. The bins are invariant under a
    per-dimension increasing affine map ``a z + b`` (``a > 0``).

    Returns:
        ``int64`` array ``(N, d)`` with values in ``[0, n_bins)``.
    """
    z = _check_codes(codes)
    n_bins = _positive_int(n_bins, "n_bins", 2)
    low = z.min(axis=0)
    width = z.max(axis=0) - low
    scale = np.divide(n_bins, width, out=np.zeros_like(width), where=width > 0)
    position = (z - low) * scale
    bins = np.floor(position + _EDGE_TOLERANCE).astype(np.int64)
    return np.clip(bins, 0, n_bins - 1)


def _relabel(factors: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Factor classes relabelled 0..V_k-1 per column, and the V_k."""
    out = np.empty_like(factors)
    sizes = []
    for k in range(factors.shape[1]):
        values, out[:, k] = np.unique(factors[:, k], return_inverse=True)
        sizes.append(values.size)
    return out, sizes


def factor_entropies(factors: Any) -> np.ndarray:
    """Empirical entropy ``H(v_k) = -sum_c p(c) log p(c)`` of each factor, in nats, ``(K,)``."""
    v = _to_numpy(factors)
    v = _check_factors(v, v.shape[0] if v.ndim >= 1 else 0)
    labels, sizes = _relabel(v)
    out = np.empty(len(sizes))
    for k, size in enumerate(sizes):
        p = np.bincount(labels[:, k], minlength=size) / labels.shape[0]
        p = p[p > 0]
        out[k] = float(-(p * np.log(p)).sum()) + 0.0
    return out


def mutual_information_matrix(codes: Any, factors: Any, n_bins: int = 20) -> np.ndarray:
    """Plug-in mutual information ``I(z_j; v_k)`` in nats between binned codes and factors.

    Each code dimension is binned with :func:`discretize`; then, from the joint histogram
    counts ``n(b, c)`` of bin ``b`` of ``z_j`` and class ``c`` of ``v_k`` over ``N`` samples,
    ``I = sum_{b,c} p(b, c) log(p(b, c) / (p(b) p(c)))`` with ``p(b, c) = n(b, c) / N`` (the
    estimator of Locatello et al. 2019). It lies in ``[0, min(H(bin_j), H(v_k))]``.

    Returns:
        ``(d, K)`` array.
    """
    z, v = _check_pair(codes, factors)
    bins = discretize(z, n_bins)
    labels, sizes = _relabel(v)
    n, d = bins.shape
    p_bin = np.stack([np.bincount(bins[:, j], minlength=n_bins) for j in range(d)]) / n
    out = np.empty((d, len(sizes)))
    offsets = np.arange(d) * n_bins
    for k, size in enumerate(sizes):
        # joint histogram of every dimension with factor k in one bincount
        flat = ((offsets + bins) * size + labels[:, k : k + 1]).ravel()
        joint = np.bincount(flat, minlength=d * n_bins * size).reshape(d, n_bins, size) / n
        p_class = np.bincount(labels[:, k], minlength=size) / n
        outer = p_bin[:, :, None] * p_class[None, None, :]
        ratio = np.divide(joint, outer, out=np.ones_like(joint), where=joint > 0)
        out[:, k] = (joint * np.log(ratio)).sum(axis=(1, 2))
    return np.maximum(out, 0.0)  # clip rounding below zero


def mig_per_factor(codes: Any, factors: Any, n_bins: int = 20) -> np.ndarray:
    """The normalized mutual information gap of each factor, ``(K,)``.

    ``(I(z_{j1}; v_k) - I(z_{j2}; v_k)) / H(v_k)`` where ``j1`` and ``j2`` are the code
    dimensions with the largest and second largest mutual information with ``v_k`` (Chen et
    al. 2018, the summand of MIG). A factor with a single value (``H(v_k) = 0``) gets NaN.

    Raises:
        ValueError: fewer than 2 code dimensions (the gap needs a second one), or invalid
            inputs.
    """
    z, v = _check_pair(codes, factors)
    if z.shape[1] < 2:
        raise ValueError(f"MIG needs at least 2 code dimensions (the gap is between the best "
                         f"and the second best), got {z.shape[1]}")
    mi = mutual_information_matrix(z, v, n_bins)
    entropy = factor_entropies(v)
    top = -np.sort(-mi, axis=0)
    out = np.full(v.shape[1], np.nan)
    varying = entropy > 0
    out[varying] = (top[0, varying] - top[1, varying]) / entropy[varying]
    return out


def mig(codes: Any, factors: Any, n_bins: int = 20) -> float:
    """Mutual Information Gap (Chen et al. 2018), with binned codes.

    ``MIG = 1/K sum_k (I(z_{j1(k)}; v_k) - I(z_{j2(k)}; v_k)) / H(v_k)``, the mean over
    factors of the gap between the two code dimensions most informative about ``v_k``,
    normalized by the factor's entropy, so it lies in ``[0, 1]``. Chen et al. estimate the
    mutual information from samples of ``q(z | x)``; like Locatello et al. 2019 we use the
    codes given (posterior means) binned into ``n_bins`` equal-width bins per dimension
    (:func:`mutual_information_matrix`). Factors with a single value have ``H(v_k) = 0`` and
    are skipped (the mean is over the others). A factor with more classes than ``n_bins``
    cannot reach a gap of 1 even for a perfect code: use ``n_bins`` at least the largest
    number of classes to score such factors fully.

    Args:
        codes: ``(N, d)`` codes, ``d >= 2``.
        factors: ``(N, K)`` integer factor classes.
        n_bins: equal-width bins per code dimension (20 as in Locatello et al. 2019).

    Raises:
        ValueError: invalid inputs, fewer than 2 code dimensions, or no factor with more than
            one value.
    """
    z, v = _check_pair(codes, factors)
    _varying_factors(v, "MIG")
    return float(np.nanmean(mig_per_factor(z, v, n_bins)))


# --------------------------------------------------------------------------------------
# DCI (Eastwood and Williams 2018)
# --------------------------------------------------------------------------------------


def _normalized_entropy(p: np.ndarray, axis: int, base: int) -> np.ndarray:
    """Entropy with logarithms in ``base`` of distributions along ``axis``; 0 when base 1."""
    if base <= 1:
        return np.zeros(np.delete(p.shape, axis))
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -(p * logs).sum(axis=axis) / math.log(base)


def dci_from_importance(importance: Any) -> tuple[float, float]:
    """Disentanglement and completeness of an importance matrix (Eastwood and Williams 2018).

    With ``R`` the ``(d, K)`` matrix of non-negative importances of code dimension ``j`` for
    factor ``k``:

    * ``P_jk = R_jk / sum_k' R_jk'``; disentanglement of code ``j``:
      ``D_j = 1 - H_K(P_j.)`` with ``H_K(P) = -sum_k P_k log_K P_k``; overall
      ``D = sum_j rho_j D_j`` with ``rho_j = sum_k R_jk / sum_jk R_jk``.
    * ``P~_jk = R_jk / sum_j' R_j'k``; completeness of factor ``k``:
      ``C_k = 1 - H_d(P~_.k)``; overall ``C = sum_k rho_k C_k`` with
      ``rho_k = sum_j R_jk / sum_jk R_jk`` (the weighting Locatello et al. 2019 use).

    Conventions: rows (columns) with zero importance get weight 0; with a single factor
    (``K = 1``) every important code is disentangled (``H_1 = 0``), with a single code
    dimension (``d = 1``) every factor is complete; an all-zero ``R`` (nothing predicts
    anything) gives ``D = C = 0``. A permutation matrix gives 1 and 1, a constant matrix
    0 and 0.

    Returns:
        ``(disentanglement, completeness)``, each in ``[0, 1]``.
    """
    r = _to_numpy(importance)
    if r.ndim != 2 or 0 in r.shape:
        raise ValueError(f"importance must be a non-empty 2-D (codes x factors) matrix, got "
                         f"shape {r.shape}")
    r = r.astype(np.float64)
    if not np.isfinite(r).all():
        raise ValueError("importance contains NaN or infinite values")
    if (r < 0).any():
        raise ValueError("importance must be non-negative")
    total = r.sum()
    if total <= 0:
        return 0.0, 0.0
    d, k = r.shape
    code_weight = r.sum(axis=1)
    factor_weight = r.sum(axis=0)
    p_code = np.divide(r, code_weight[:, None], out=np.zeros_like(r),
                       where=code_weight[:, None] > 0)
    p_factor = np.divide(r, factor_weight[None, :], out=np.zeros_like(r),
                         where=factor_weight[None, :] > 0)
    per_code = 1.0 - _normalized_entropy(p_code, axis=1, base=k)
    per_factor = 1.0 - _normalized_entropy(p_factor, axis=0, base=d)
    disentanglement = float((code_weight / total * per_code).sum())
    completeness = float((factor_weight / total * per_factor).sum())
    return min(max(disentanglement, 0.0), 1.0), min(max(completeness, 0.0), 1.0)


def _make_predictor(model: str, seed: int) -> Any:
    if model == "forest":
        from sklearn.ensemble import RandomForestClassifier

        # every feature is a split candidate (max_features=None), as in gradient boosting, so
        # that importances are not spread over codes by random feature subsets
        return RandomForestClassifier(n_estimators=20, max_features=None, random_state=seed,
                                      n_jobs=1)
    if model == "gbt":
        from sklearn.ensemble import GradientBoostingClassifier

        return GradientBoostingClassifier(random_state=seed)
    from sklearn.linear_model import LogisticRegression

    options: dict[str, Any] = {"C": 0.1, "solver": "saga", "l1_ratio": 1.0, "max_iter": 1000,
                               "tol": 1e-3, "random_state": seed}
    if inspect.signature(LogisticRegression).parameters["penalty"].default != "deprecated":
        options["penalty"] = "elasticnet"  # scikit-learn < 1.8 selects L1 this way
    return LogisticRegression(**options)


def _importance(predictor: Any, model: str, d: int) -> np.ndarray:
    if model == "lasso":
        # |coefficient| on standardized codes, summed over the classes' weight vectors
        return np.abs(predictor.coef_).sum(axis=0).reshape(d)
    return np.asarray(predictor.feature_importances_, dtype=np.float64).reshape(d)


def dci(train_codes: Any, train_factors: Any, test_codes: Any, test_factors: Any,
        model: str = "forest", seed: int = 0) -> dict[str, Any]:
    """DCI disentanglement, completeness and informativeness (Eastwood and Williams 2018).

    For each factor ``k`` a classifier predicts ``v_k`` from the whole code on the training
    set; its importances of the ``d`` code dimensions form column ``k`` of ``R`` and
    :func:`dci_from_importance` turns ``R`` into disentanglement and completeness.
    Informativeness is the mean over factors of the classifier's **accuracy** on the test set
    (higher is better; Eastwood and Williams report the prediction error instead, 1 minus
    this for discrete factors).

    Predictors (``model``):

    * ``"forest"`` (default): a random forest of 20 CART trees (Breiman 2001) grown to
      purity with every code dimension a split candidate at every node; importances are the
      mean decrease in Gini impurity (each column sums to 1). Eastwood and Williams use a
      random forest among their predictors; it is much faster than boosting with many
      classes.
    * ``"gbt"``: scikit-learn's ``GradientBoostingClassifier`` with its defaults (100
      stages), impurity importances: the predictor of Locatello et al. 2019. Slow for
      factors with many classes (one tree per class per stage).
    * ``"lasso"``: L1-penalized multinomial logistic regression (``C = 0.1``) on codes
      standardized with the training mean and standard deviation, importance
      ``R_jk = sum_c |W_cj|``: the classification counterpart of Eastwood and Williams'
      lasso. Linear, so it underrates codes that are informative but not monotone in the
      class order.

    Factors with a single value in the training set are skipped.

    Returns:
        dict with ``disentanglement``, ``completeness``, ``informativeness`` (mean test
        accuracy), ``train_accuracy`` (mean training accuracy), ``importance`` (the ``(d,
        K')`` matrix ``R`` of the factors used) and ``factors`` (their column indices).
    """
    z_tr, v_tr, z_te, v_te = _check_split(train_codes, train_factors, test_codes,
                                          test_factors)
    if model not in DCI_MODELS:
        raise ValueError(f"model must be one of {DCI_MODELS}, got {model!r}")
    keep = _varying_factors(v_tr, "DCI")
    d = z_tr.shape[1]
    if model == "lasso":
        mean, std = z_tr.mean(axis=0), z_tr.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        z_tr, z_te = (z_tr - mean) / std, (z_te - mean) / std
    importance = np.zeros((d, len(keep)))
    test_acc, train_acc = [], []
    for column, k in enumerate(keep):
        predictor = _make_predictor(model, seed)
        predictor.fit(z_tr, v_tr[:, k])
        importance[:, column] = _importance(predictor, model, d)
        train_acc.append(float(np.mean(predictor.predict(z_tr) == v_tr[:, k])))
        test_acc.append(float(np.mean(predictor.predict(z_te) == v_te[:, k])))
    disentanglement, completeness = dci_from_importance(importance)
    return {
        "disentanglement": disentanglement,
        "completeness": completeness,
        "informativeness": float(np.mean(test_acc)),
        "train_accuracy": float(np.mean(train_acc)),
        "importance": importance,
        "factors": keep,
    }


# --------------------------------------------------------------------------------------
# SAP (Kumar et al. 2018)
# --------------------------------------------------------------------------------------


def _balanced_accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Mean over the classes present in ``truth`` of the fraction of them predicted right."""
    classes = np.unique(truth)
    return float(np.mean([np.mean(predicted[truth == c] == c) for c in classes]))


def sap_score_matrix(train_codes: Any, train_factors: Any, test_codes: Any,
                     test_factors: Any, seed: int = 0) -> np.ndarray:
    """SAP's score matrix: ``S_jk`` = how well code dimension ``j`` alone predicts ``v_k``.

    Kumar et al. 2018 (Sec. 3) score a categorical factor by how accurately a classifier that
    sees the single latent dimension predicts it (Locatello et al. 2019 use a linear SVM).
    Ours is a one-dimensional, class-balanced CART tree with at most ``V_k`` leaves, i.e.
    ``V_k - 1`` thresholds on ``z_j`` (``V_k`` the factor's number of classes in the training
    set): enough to read off every class of a code that orders the classes along one axis, in
    any monotone parametrization, and no more. It is fitted on the training set; ``S_jk`` is
    its balanced accuracy (mean per-class recall over the classes present) on the test set,
    so that chance is ``1 / V_k`` whatever the class frequencies: a dimension independent of
    ``v_k`` scores ``1 / V_k`` in expectation, one that separates the classes scores 1.
    Columns of factors with a single value in the training set are NaN.

    Returns:
        ``(d, K)`` array.
    """
    from sklearn.tree import DecisionTreeClassifier

    z_tr, v_tr, z_te, v_te = _check_split(train_codes, train_factors, test_codes,
                                          test_factors)
    d, n_factors = z_tr.shape[1], v_tr.shape[1]
    scores = np.full((d, n_factors), np.nan)
    for k in range(n_factors):
        n_classes = np.unique(v_tr[:, k]).size
        if n_classes < 2:
            continue
        for j in range(d):
            tree = DecisionTreeClassifier(max_leaf_nodes=n_classes, class_weight="balanced",
                                          random_state=seed)
            tree.fit(z_tr[:, j : j + 1], v_tr[:, k])
            scores[j, k] = _balanced_accuracy(v_te[:, k], tree.predict(z_te[:, j : j + 1]))
    return scores


def sap(train_codes: Any, train_factors: Any, test_codes: Any, test_factors: Any,
        seed: int = 0) -> float:
    """Separated Attribute Predictability (Kumar et al. 2018).

    ``SAP = 1/K sum_k (S_{j1(k) k} - S_{j2(k) k})``: the mean over factors of the gap between
    the two code dimensions that predict the factor best on their own, with the score matrix
    ``S`` of :func:`sap_score_matrix`. A perfect axis-aligned code does not score 1: the
    second best dimension of factor ``k`` predicts it at chance, ``1 / V_k``, so its SAP is
    about ``1/K sum_k (1 - 1 / V_k)``; unrelated codes score about 0. Factors with a single
    value in the training set are skipped.

    Raises:
        ValueError: fewer than 2 code dimensions, no factor with more than one value, or
            invalid inputs.
    """
    z_tr, v_tr, z_te, v_te = _check_split(train_codes, train_factors, test_codes,
                                          test_factors)
    if z_tr.shape[1] < 2:
        raise ValueError(f"SAP needs at least 2 code dimensions (the gap is between the best "
                         f"and the second best), got {z_tr.shape[1]}")
    keep = _varying_factors(v_tr, "SAP")
    scores = sap_score_matrix(z_tr, v_tr, z_te, v_te, seed=seed)[:, keep]
    top = -np.sort(-scores, axis=0)
    return float(np.mean(top[0] - top[1]))


# --------------------------------------------------------------------------------------
# FactorVAE score (Kim and Mnih 2018)
# --------------------------------------------------------------------------------------


def _uniform_sampler(sizes: Sequence[int]) -> Callable[[int, np.random.Generator], np.ndarray]:
    def sample(n: int, rng: np.random.Generator) -> np.ndarray:
        return np.stack([rng.integers(0, size, size=n) for size in sizes], axis=1)

    return sample


def _codes_in_chunks(codes_fn: Callable[[np.ndarray], Any], factors: np.ndarray,
                     chunk_size: int) -> np.ndarray:
    parts = []
    for start in range(0, factors.shape[0], chunk_size):
        block = factors[start : start + chunk_size]
        z = _check_codes(codes_fn(block), "codes_fn output")
        if z.shape[0] != block.shape[0]:
            raise ValueError(f"codes_fn returned {z.shape[0]} codes for {block.shape[0]} "
                             "factor rows")
        if parts and z.shape[1] != parts[0].shape[1]:
            raise ValueError(f"codes_fn returned codes of {z.shape[1]} dimensions after "
                             f"{parts[0].shape[1]}")
        parts.append(z)
    return np.concatenate(parts)


def factor_vae_score_from_fn(
    codes_fn: Callable[[np.ndarray], Any],
    factor_sizes: Sequence[int],
    sample_fn: Callable[[int, np.random.Generator], Any] | None = None,
    n_votes_train: int = 800,
    n_votes_eval: int = 800,
    batch_size: int = 64,
    n_std: int = 10000,
    prune_threshold: float = 0.05,
    seed: int = 0,
    chunk_size: int = 4096,
) -> float:
    """The FactorVAE disentanglement score (Kim and Mnih 2018) of any encoder.

    Protocol: the codes of ``n_std`` samples give each dimension's empirical standard
    deviation ``s_j``; dimensions with ``s_j <= prune_threshold * max_j s_j`` are pruned as
    collapsed (Kim and Mnih prune dimensions that collapsed to the prior; a threshold
    relative to the largest ``s_j`` does not depend on the code's units). Each vote draws a
    factor ``k`` uniformly among those with more than one value, one value of it, and
    ``batch_size`` (``L``) samples whose factor ``k`` is set to that value and whose other
    factors are drawn at random; the vote is ``(argmin_j Var(z_j / s_j), k)`` over the
    unpruned dimensions, the variance taken over the ``L`` codes. The majority-vote
    classifier maps each dimension to the factor it was most often voted for (ties to the
    lowest factor index) on ``n_votes_train`` votes; the score is its accuracy on
    ``n_votes_eval`` other votes (a dimension never voted for in training predicts no
    factor). A perfect axis-aligned code scores 1; a code unrelated to the factors scores
    about ``1 / K'`` (``K'`` factors with more than one value), the chance level.

    Args:
        codes_fn: maps an ``(m, K)`` int64 array of factor classes to ``(m, d)`` codes (e.g.
            render the images and encode them); called on at most ``chunk_size`` rows.
        factor_sizes: number of classes of each factor.
        sample_fn: ``sample_fn(m, rng) -> (m, K)`` classes drawn from the data distribution
            of the factors (independent factors, as Kim and Mnih assume); default uniform
            over the grid ``factor_sizes``.
        n_votes_train, n_votes_eval: votes to fit and to evaluate the classifier.
        batch_size: ``L``, samples per vote (64 as in Locatello et al. 2019).
        n_std: samples to estimate the standard deviations.
        prune_threshold: relative standard deviation below which a dimension is pruned.
        seed: seed of all the draws.
        chunk_size: factor rows per call of ``codes_fn``.

    Returns:
        The evaluation accuracy in ``[0, 1]``.

    Raises:
        ValueError: invalid arguments, no factor with more than one value, codes_fn output
            that is not finite ``(m, d)``, or every dimension pruned (constant codes).
    """
    sizes = [_positive_int(s, "factor_sizes entries") for s in factor_sizes]
    if not sizes:
        raise ValueError("factor_sizes must name at least one factor")
    n_votes_train = _positive_int(n_votes_train, "n_votes_train")
    n_votes_eval = _positive_int(n_votes_eval, "n_votes_eval")
    batch_size = _positive_int(batch_size, "batch_size", 2)
    n_std = _positive_int(n_std, "n_std", 2)
    chunk_size = _positive_int(chunk_size, "chunk_size")
    if not 0.0 <= prune_threshold < 1.0:
        raise ValueError(f"prune_threshold must lie in [0, 1), got {prune_threshold}")
    varying = [k for k, size in enumerate(sizes) if size > 1]
    if not varying:
        raise ValueError("FactorVAE score: every factor has a single value, so there is "
                         "nothing to disentangle")
    rng = np.random.default_rng(seed)
    draw = sample_fn if sample_fn is not None else _uniform_sampler(sizes)

    def sample(m: int) -> np.ndarray:
        classes = _check_factors(draw(m, rng), m, "sample_fn output")
        if classes.shape[1] != len(sizes):
            raise ValueError(f"sample_fn returned {classes.shape[1]} factor columns, "
                             f"factor_sizes names {len(sizes)}")
        return classes

    std = _codes_in_chunks(codes_fn, sample(n_std), chunk_size).std(axis=0)
    active = np.flatnonzero((std > prune_threshold * std.max()) & (std > 0))
    if active.size == 0:
        raise ValueError("FactorVAE score: every code dimension is constant over the data, "
                         "so no dimension can be voted for")

    n_votes = n_votes_train + n_votes_eval
    fixed = rng.choice(varying, size=n_votes)
    values = sample(n_votes)[np.arange(n_votes), fixed]
    factors = sample(n_votes * batch_size).reshape(n_votes, batch_size, len(sizes))
    factors[np.arange(n_votes), :, fixed] = values[:, None]
    codes = _codes_in_chunks(codes_fn, factors.reshape(-1, len(sizes)), chunk_size)
    if codes.shape[1] != std.size:
        raise ValueError(f"codes_fn returned codes of {codes.shape[1]} dimensions after "
                         f"{std.size}")
    normalized = codes[:, active].reshape(n_votes, batch_size, active.size) / std[active]
    dims = active[np.argmin(normalized.var(axis=1), axis=1)]

    counts = np.zeros((std.size, len(sizes)), dtype=np.int64)
    np.add.at(counts, (dims[:n_votes_train], fixed[:n_votes_train]), 1)
    classifier = np.where(counts.sum(axis=1) > 0, counts.argmax(axis=1), -1)
    return float(np.mean(classifier[dims[n_votes_train:]] == fixed[n_votes_train:]))


# --------------------------------------------------------------------------------------
# dSprites helpers
# --------------------------------------------------------------------------------------


def _image_shape(model: Any) -> tuple[int, ...]:
    from vaebench.data.dsprites import IMAGE_SIZE

    shape = getattr(getattr(model, "config", None), "input_dim", None)
    shape = (1, IMAGE_SIZE, IMAGE_SIZE) if shape is None else tuple(int(s) for s in shape)
    if math.prod(shape) != IMAGE_SIZE * IMAGE_SIZE:
        raise ValueError(f"dSprites images have {IMAGE_SIZE}x{IMAGE_SIZE} = "
                         f"{IMAGE_SIZE * IMAGE_SIZE} values; the model's input_dim {shape} "
                         "does not match")
    return shape


def _encode_images(model: Any, images: Any, batch_size: int) -> np.ndarray:
    """Posterior means of ``images`` (0/1 dSprites renders, any shape with N first),
    flattened to ``(N, d)`` float64."""
    from vaebench.metrics.representation import latent_codes

    x = torch.as_tensor(images, dtype=torch.float32).reshape(-1, *_image_shape(model))
    return latent_codes(model, x, batch_size).double().numpy()


def factor_vae_score(model: Any, n_votes_train: int = 800, n_votes_eval: int = 800,
                     batch_size: int = 64, n_std: int = 10000, prune_threshold: float = 0.05,
                     seed: int = 0, encode_batch_size: int = 1024) -> float:
    """FactorVAE score (Kim and Mnih 2018) of a model on procedural dSprites.

    :func:`factor_vae_score_from_fn` with samples drawn uniformly over the dSprites factor
    grid (the distribution of the dataset, whose factors are independent), rendered by
    :func:`vaebench.data.dsprites.render` and encoded to posterior means
    (``model.encode(x).mean``, flattened) in eval mode under ``no_grad``, in batches of
    ``encode_batch_size``. The model's previous train/eval mode is restored.
    """
    from vaebench.data.dsprites import FACTOR_SIZES, render

    encode_batch_size = _positive_int(encode_batch_size, "encode_batch_size")
    _image_shape(model)

    def codes_fn(classes: np.ndarray) -> np.ndarray:
        images = torch.from_numpy(render(classes)).to(torch.float32)
        return _encode_images(model, images, encode_batch_size)

    return factor_vae_score_from_fn(
        codes_fn, FACTOR_SIZES, n_votes_train=n_votes_train, n_votes_eval=n_votes_eval,
        batch_size=batch_size, n_std=n_std, prune_threshold=prune_threshold, seed=seed,
        chunk_size=encode_batch_size)


def disentanglement_report(model: Any, n: int = 10000, n_test: int | None = None,
                           seed: int = 0, n_bins: int = 20, dci_model: str = "forest",
                           n_votes_train: int = 800, n_votes_eval: int = 800,
                           n_std: int | None = None, batch_size: int = 256,
                           cache_dir: Any = None) -> dict[str, Any]:
    """All four disentanglement metrics of ``model`` on procedural dSprites.

    Encodes ``load_dsprites(n, seed, "train")`` and ``load_dsprites(n_test, seed, "test")``
    (disjoint subsets; ``n_test`` defaults to ``n // 2``) to posterior means, in batches of
    ``batch_size`` under ``no_grad`` in eval mode (the previous mode is restored). MIG is
    computed on the training codes; DCI and SAP fit on the training codes and evaluate on the
    test codes; the FactorVAE score renders its own votes (:func:`factor_vae_score`, with
    ``n_std`` defaulting to ``n``). Factors with a single value in the training subset are
    left out of every metric.

    Returns:
        dict with ``mig``, ``dci_disentanglement``, ``dci_completeness``,
        ``dci_informativeness`` (test accuracy), ``sap``, ``factor_vae_score`` (floats),
        ``factors`` (names of the factors used), ``n_train``, ``n_test`` and ``latent_dim``.
    """
    from vaebench.data.dsprites import FACTOR_NAMES, load_dsprites

    _image_shape(model)
    n = _positive_int(n, "n", 2)
    n_test = max(n // 2, 1) if n_test is None else _positive_int(n_test, "n_test")
    n_std = n if n_std is None else n_std
    batch_size = _positive_int(batch_size, "batch_size")
    train_images, train_factors = load_dsprites(n, seed=seed, split="train",
                                                cache_dir=cache_dir)
    test_images, test_factors = load_dsprites(n_test, seed=seed, split="test",
                                              cache_dir=cache_dir)
    train_codes = _encode_images(model, train_images, batch_size)
    test_codes = _encode_images(model, test_images, batch_size)
    v_tr, v_te = train_factors.numpy(), test_factors.numpy()
    keep = _varying_factors(v_tr, "disentanglement_report")
    v_tr, v_te = v_tr[:, keep], v_te[:, keep]
    scores = dci(train_codes, v_tr, test_codes, v_te, model=dci_model, seed=seed)
    return {
        "mig": mig(train_codes, v_tr, n_bins=n_bins),
        "dci_disentanglement": scores["disentanglement"],
        "dci_completeness": scores["completeness"],
        "dci_informativeness": scores["informativeness"],
        "sap": sap(train_codes, v_tr, test_codes, v_te, seed=seed),
        "factor_vae_score": factor_vae_score(
            model, n_votes_train=n_votes_train, n_votes_eval=n_votes_eval, n_std=n_std,
            seed=seed, encode_batch_size=batch_size),
        "factors": [FACTOR_NAMES[k] for k in keep],
        "n_train": n,
        "n_test": n_test,
        "latent_dim": int(train_codes.shape[1]),
    }
