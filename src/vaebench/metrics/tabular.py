"""Quality of a synthetic table against the real one (docs/tabular.md, "Scoring a synthetic
table"):

* column shapes: each column's marginal, sdmetrics' KSComplement (1 - the Kolmogorov-Smirnov
  statistic) for numbers, counts and dates, TVComplement (1 - the total variation distance)
  for categories and booleans;
* column-pair trends: sdmetrics' CorrelationSimilarity (1 - |r_real - r_synthetic| / 2,
  Pearson) for pairs of numbers, ContingencySimilarity (1 - the total variation distance of
  the two-way tables) for pairs of categories, and for a number with a category after
  binning the number in 10 bins (as sdmetrics' quality report does);
* machine-learning efficacy: a random forest trained on the synthetic rows and on the real
  training rows, each tested on real held-out rows (accuracy and macro F1, or R^2);
* privacy: the distance of each synthetic row to its closest real training row (DCR), and
  the same for real held-out rows as the reference; and a score with a direction, the
  overfitting protection: sdmetrics' DCROverfittingProtection ("DCR Overfitting
  Protection") generalized to a held-out set of any size (see
  :func:`distance_to_closest_record`), 1 when the synthetic rows are no closer to the
  training rows than fresh rows would be, 0 when every one is.

Every figure is computed on the table as its schema encodes it (numbers standardized,
categories one-hot, TVAE's modes left out), so that a column's label type or a date's text
format does not matter. sdmetrics is imported only here: ``pip install
'vaebench[tabular-metrics]'``.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

from vaebench.data.tables import Column, TableSchema

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["column_pair_trends", "column_shapes", "distance_to_closest_record", "ml_efficacy",
           "table_quality"]

#: Kinds whose values are compared as numbers; the others are labels.
NUMERIC_KINDS = ("numeric", "count", "datetime")
#: A synthetic row this close to a real one (in the encoded space) is a copy of it.
COPY_TOLERANCE = 1e-9
#: Bins of a number paired with a category in the contingency table.
PAIR_BINS = 10
#: Trees of the random forests of the ML efficacy.
FOREST_TREES = 100


def table_quality(real: pd.DataFrame, synthetic: pd.DataFrame,
                  schema: TableSchema | dict[str, Any], target: str | None = None, *,
                  holdout: pd.DataFrame | None = None, seed: int = 0) -> dict[str, Any]:
    """Every figure of a ``synthetic`` table against the ``real`` rows its model trained on,
    both encodable by ``schema``: column shapes and column-pair trends (1 is a perfect
    match); with real ``holdout`` rows the model never saw, the distance to the closest
    record and the overfitting protection, and with a ``target`` column the ML efficacy
    (``seed`` fixes the forests)."""
    report: dict[str, Any] = {
        "n_real": len(real), "n_synthetic": len(synthetic),
        "column_shapes": column_shapes(real, synthetic, schema),
        "column_pair_trends": column_pair_trends(real, synthetic, schema)}
    if holdout is not None:
        report["n_holdout"] = len(holdout)
        report["privacy"] = distance_to_closest_record(real, synthetic, schema, holdout)
        if target is not None:
            report["ml_efficacy"] = ml_efficacy(real, synthetic, holdout, schema, target,
                                                seed=seed)
    return report


# --- column shapes and pair trends ---------------------------------------------------------

def column_shapes(real: pd.DataFrame, synthetic: pd.DataFrame,
                  schema: TableSchema | dict[str, Any]) -> dict[str, Any]:
    """Each column's KSComplement (numbers) or TVComplement (labels), on its present
    values, and their mean."""
    metrics = _sdmetrics()
    schema = _plain(schema)
    real, synthetic = _values(real, schema), _values(synthetic, schema)
    scores = {}
    for column in schema.columns:
        metric = metrics.KSComplement if _is_numeric(column) else metrics.TVComplement
        scores[str(column.name)] = float(metric.compute(real[column.name],
                                                        synthetic[column.name]))
    return {"mean": _mean(scores.values()), "columns": scores}


def column_pair_trends(real: pd.DataFrame, synthetic: pd.DataFrame,
                       schema: TableSchema | dict[str, Any]) -> dict[str, Any]:
    """The similarity of every pair of columns (see the module docstring): the mean over all
    pairs, the mean of each family of pairs (None without such pairs), and the pairs whose
    correlation is undefined (a constant column), left out of the means."""
    schema = _plain(schema)
    real, synthetic = _values(real, schema), _values(synthetic, schema)
    families: dict[str, list[float]] = {"numeric": [], "categorical": [], "mixed": []}
    undefined = []
    for first, second in itertools.combinations(schema.columns, 2):
        family = _pair_family(first, second)
        score = _pair_score(real, synthetic, first, second, family)
        if np.isnan(score):
            undefined.append([str(first.name), str(second.name)])
        else:
            families[family].append(score)
    return {"mean": _mean(itertools.chain(*families.values())),
            **{f"{family}_pairs": _mean(scores) for family, scores in families.items()},
            "pairs": sum(map(len, families.values())), "undefined_pairs": undefined}


def _pair_family(first: Column, second: Column) -> str:
    numeric = _is_numeric(first) + _is_numeric(second)
    return ("categorical", "mixed", "numeric")[numeric]


def _pair_score(real: pd.DataFrame, synthetic: pd.DataFrame, first: Column, second: Column,
                family: str) -> float:
    metrics = _sdmetrics()
    names = [first.name, second.name]
    if family == "numeric":
        try:
            return float(metrics.CorrelationSimilarity.compute(real[names], synthetic[names]))
        except metrics.ConstantInputError:
            return float("nan")
    continuous = [column.name for column in (first, second) if _is_numeric(column)]
    return float(metrics.ContingencySimilarity.compute(
        real[names], synthetic[names], continuous_column_names=continuous or None,
        num_discrete_bins=PAIR_BINS))


# --- ML efficacy ---------------------------------------------------------------------------

def ml_efficacy(real: pd.DataFrame, synthetic: pd.DataFrame, holdout: pd.DataFrame,
                schema: TableSchema | dict[str, Any], target: str, *,
                seed: int = 0) -> dict[str, Any]:
    """Train on synthetic, test on real: a random forest predicts ``target`` from the other
    columns (encoded), trained once on the ``synthetic`` rows and once on the ``real``
    training rows (the reference), both tested on the real ``holdout`` rows. A category or
    boolean target is classified (accuracy, macro F1), a number regressed (R^2). Rows
    whose target is missing are left out."""
    schema = _plain(schema)
    column = _target_column(schema, target)
    test = _features_and_target(holdout, schema, column)
    scores = {name: _fit_and_score(_features_and_target(frame, schema, column), test, column,
                                   seed)
              for name, frame in (("synthetic", synthetic), ("real", real))}
    return {"target": target, "task": "regression" if _is_numeric(column) else
            "classification", "n_test": len(test[1]), **scores}


def _target_column(schema: TableSchema, target: str) -> Column:
    for column in schema.columns:
        if str(column.name) == str(target):
            return column
    raise ValueError(f"the target {target!r} is not a column of the table: "
                     f"{[str(name) for name in schema.names]}")


def _features_and_target(frame: pd.DataFrame, schema: TableSchema,
                         column: Column) -> tuple[np.ndarray, np.ndarray]:
    """The encoded rows without the target's entries, and the target: a category's code or
    a number's standardized value (rows whose target is missing are dropped)."""
    rows = schema.encode(frame, dtype=np.float64)
    _, block, flag = next(layout for layout in schema.blocks() if layout[0] is column)
    keep = np.ones(len(rows), bool) if flag is None else rows[:, flag] == 0
    own = np.zeros(schema.width, bool)
    own[block] = True
    if flag is not None:
        own[flag] = True
    values = rows[keep][:, block]
    target = values[:, 0] if _is_numeric(column) or column.kind == "boolean" else \
        values.argmax(1)
    return rows[keep][:, ~own], target


def _fit_and_score(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                   column: Column, seed: int) -> dict[str, float]:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.metrics import accuracy_score, f1_score, r2_score

    if _is_numeric(column):
        forest = RandomForestRegressor(FOREST_TREES, random_state=seed, n_jobs=1)
        return {"r2": float(r2_score(test[1], forest.fit(*train).predict(test[0])))}
    forest = RandomForestClassifier(FOREST_TREES, random_state=seed, n_jobs=1)
    predicted = forest.fit(*train).predict(test[0])
    return {"accuracy": float(accuracy_score(test[1], predicted)),
            "f1": float(f1_score(test[1], predicted, average="macro", zero_division=0))}


# --- privacy ---------------------------------------------------------------------------

def distance_to_closest_record(real: pd.DataFrame, synthetic: pd.DataFrame,
                               schema: TableSchema | dict[str, Any],
                               holdout: pd.DataFrame | None = None) -> dict[str, Any]:
    """DCR: for each ``synthetic`` row, the Euclidean distance to its closest ``real`` row
    in the encoded space (numbers in standard deviations, a different category counts
    sqrt(2)); its median and the share of exact copies (distance 0). With ``holdout``, the
    same for real rows the model never saw: a synthetic table much closer to the training
    rows than fresh real rows are has memorized them.

    With ``holdout``, also ``overfitting_protection``: p, the share of synthetic rows
    strictly closer to their closest training row than to their closest held-out row, and
    the score min(1, (1 - p) / (1 - p0)), where p0 = n_train / (n_train + n_holdout). A row
    drawn from the data's own distribution is as likely as any real row to be the closest
    to its draw, so its closest real row is a training row with probability p0: a
    generator that does not overfit scores 1, and one that copies its training rows (p = 1)
    scores 0. With sets of equal size (p0 = 1/2) this is sdmetrics' DCROverfittingProtection,
    min(1, 2 (1 - p)); sdmetrics asks for a held-out set at least half the training set,
    while p0 lets a 90 / 10 split be scored with every training row kept."""
    from scipy.spatial import KDTree

    schema = _plain(schema)
    tree = KDTree(schema.encode(real, dtype=np.float64))
    rows = schema.encode(synthetic, dtype=np.float64)
    to_training = tree.query(rows, k=1)[0]
    report = {"synthetic": _distance_summary(to_training)}
    if holdout is not None:
        held_out = schema.encode(holdout, dtype=np.float64)
        report["holdout"] = _distance_summary(tree.query(held_out, k=1)[0])
        report["overfitting_protection"] = _overfitting_protection(
            to_training, KDTree(held_out).query(rows, k=1)[0], tree.n, len(held_out))
    return report


def _distance_summary(distances: np.ndarray) -> dict[str, float]:
    return {"median": float(np.median(distances)),
            "copies": float(np.mean(distances <= COPY_TOLERANCE))}


def _overfitting_protection(to_training: np.ndarray, to_holdout: np.ndarray,
                            n_training: int, n_holdout: int) -> dict[str, float]:
    """The overfitting protection (see :func:`distance_to_closest_record`) from each
    synthetic row's distance to its closest training and held-out row."""
    share = float(np.mean(to_training < to_holdout))
    expected = n_training / (n_training + n_holdout)
    return {"score": min(1.0, (1.0 - share) / (1.0 - expected)),
            "closer_to_training": share, "expected": expected}


# --- shared ------------------------------------------------------------------------------

def _plain(schema: TableSchema | dict[str, Any]) -> TableSchema:
    """``schema`` without TVAE's modes: every number a standardized value."""
    schema = schema if isinstance(schema, TableSchema) else TableSchema.model_validate(schema)
    no_modes = {"mode_weights": None, "mode_means": None, "mode_stds": None}
    return TableSchema(columns=[column.model_copy(update=no_modes)
                                for column in schema.columns])


def _values(frame: pd.DataFrame, schema: TableSchema) -> pd.DataFrame:
    """One column per schema column, as the metrics compare them: a number's standardized
    value, a label's code; NaN where the value is missing."""
    import pandas as pd

    rows = schema.encode(frame, dtype=np.float64)
    values = {}
    for column, block, flag in schema.blocks():
        entries = rows[:, block]
        value = entries[:, 0] if column.kind != "categorical" else \
            entries.argmax(1).astype(np.float64)
        if flag is not None:
            value = np.where(rows[:, flag] > 0, np.nan, value)
        values[column.name] = value
    return pd.DataFrame(values)


def _is_numeric(column: Column) -> bool:
    return column.kind in NUMERIC_KINDS


def _mean(scores: Any) -> float | None:
    """The mean of ``scores``; None when there are none (a table without such pairs)."""
    scores = list(scores)
    return float(np.mean(scores)) if scores else None


def _sdmetrics() -> Any:
    """The sdmetrics metrics used here, imported on first use."""
    try:
        from sdmetrics import column_pairs, errors, single_column
    except ImportError:
        raise ImportError("scoring synthetic tables needs sdmetrics: pip install "
                          "'vaebench[tabular-metrics]'") from None
    from types import SimpleNamespace

    return SimpleNamespace(KSComplement=single_column.KSComplement,
                           TVComplement=single_column.TVComplement,
                           CorrelationSimilarity=column_pairs.CorrelationSimilarity,
                           ContingencySimilarity=column_pairs.ContingencySimilarity,
                           ConstantInputError=errors.ConstantInputError)
