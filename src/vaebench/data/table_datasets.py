"""Bundled tables, all offline: three of scikit-learn's (wine, breast cancer, diabetes) and a
generated mixed-type table whose structure is known (for tests and quick runs).

==================  ======  =======  ==================================================
name                rows    columns  kinds
==================  ======  =======  ==================================================
``wine``            178     14       13 measurements (2 of them counts), 3 classes
``breast_cancer``   569     31       30 measurements, the diagnosis (boolean)
``diabetes``        442     11       raw (unscaled) measurements, counts, sex (2 labels)
``synthetic_mixed`` 2,000   9        numbers, text and ordered categories, a boolean,
                                     counts, a date, missing values in three columns
==================  ======  =======  ==================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

TABLES = ("wine", "breast_cancer", "diabetes", "synthetic_mixed")
#: The label column of each bundled table: what its rows are for (the class of a wine, the
#: diagnosis, the disease progression a year later, the plan), the ML efficacy's target.
TABLE_TARGETS = {"wine": "target", "breast_cancer": "target", "diabetes": "target",
                 "synthetic_mixed": "plan"}
#: Rows of ``synthetic_mixed`` unless told otherwise.
SYNTHETIC_ROWS = 2000


def load_bundled_table(name: str) -> pd.DataFrame:
    """The bundled table ``name`` (one of :data:`TABLES`) as a DataFrame."""
    from sklearn import datasets

    loaders = {"wine": lambda: datasets.load_wine(as_frame=True).frame,
               "breast_cancer": lambda: datasets.load_breast_cancer(as_frame=True).frame,
               "diabetes": lambda: datasets.load_diabetes(as_frame=True, scaled=False).frame,
               "synthetic_mixed": synthetic_mixed}
    if name not in loaders:
        raise ValueError(f"unknown table {name!r}; bundled tables: {', '.join(TABLES)}")
    return loaders[name]()


def synthetic_mixed(n: int = SYNTHETIC_ROWS, seed: int = 0) -> pd.DataFrame:
    """A table of ``n`` rows driven by two hidden standard normal factors (u, v):

    * ``height`` (float, 1 decimal) = 170 + 8u + noise; ``weight`` (float, 1 decimal) grows
      with height and v, 10% missing at random;
    * ``group`` (text a / b / c, softmax of 1.5 (u, v, -u - v)), 5% missing;
    * ``plan`` (ordered category basic < plus < pro, rising with v);
    * ``smoker`` (bool, P = sigmoid(1.5 v - 0.5));
    * ``visits`` (int64 count, Poisson with log-rate 1 + 0.6 u);
    * ``rating`` (int64 1..5: integers read as 5 categories), about 3 + v;
    * ``children`` (nullable Int64, Poisson(1.2), at most a few values: categories),
      8% missing;
    * ``joined`` (a date, 2019-06-01 + 400 u days).
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal((2, n))
    height = np.round(170 + 8 * u + rng.normal(0, 3, n), 1)
    weight = np.round(70 + 0.9 * (height - 170) + 6 * v + rng.normal(0, 4, n), 1)
    logits = 1.5 * np.stack([u, v, -u - v], 1)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    group = np.array(["a", "b", "c"], dtype=object)[(rng.random((n, 1)) > probs.cumsum(1)).sum(1)]
    plan_codes = np.digitize(v + rng.normal(0, 0.5, n), [-0.5, 0.7])
    children = pd.array(rng.poisson(1.2, n), dtype="Int64")
    children[rng.random(n) < 0.08] = pd.NA
    frame = pd.DataFrame({
        "height": height,
        "weight": np.where(rng.random(n) < 0.10, np.nan, weight),
        "group": np.where(rng.random(n) < 0.05, None, group),
        "plan": pd.Categorical.from_codes(plan_codes, ["basic", "plus", "pro"], ordered=True),
        "smoker": rng.random(n) < 1 / (1 + np.exp(-(1.5 * v - 0.5))),
        "visits": rng.poisson(np.exp(1 + 0.6 * u)),
        "rating": np.clip(np.round(3 + v + rng.normal(0, 0.5, n)), 1, 5).astype(np.int64),
        "children": children,
        "joined": pd.Timestamp("2019-06-01") + pd.to_timedelta(np.round(400 * u), unit="D"),
    })
    return frame
