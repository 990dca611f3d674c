"""Tables: a column schema inferred from the data, and the reversible transform between a
table (a pandas DataFrame) and the float rows a model trains on.

Each column becomes a block of the encoded row (see docs/tabular.md):

============  ==============================  ==========================  ==================
kind          holds                           encoded block               likelihood
============  ==============================  ==========================  ==================
numeric       real numbers                    (x - center) / scale        gaussian
count         integers >= 0                   (k - center) / scale        negative_binomial
                                                                          (or poisson, or
                                                                          dequantized_gaussian)
categorical   labels (text, a few integers)   one-hot over the labels     categorical
boolean       two values                      0 or 1                      bernoulli
datetime      dates, date-times               (t - center) / scale        gaussian
============  ==============================  ==========================  ==================

With ``mode_specific=True`` a numeric column is encoded as TVAE encodes it instead: the mode
of a Gaussian mixture fitted to the column (one-hot) and the value's place in that mode.

A column with missing values gets one more entry after its block, its missingness flag
(1 where the value is missing, Bernoulli): a missing value is never filled in silently. The
block of a missing value holds 0, which the likelihood ignores.

The schema is plain JSON (:meth:`TableSchema.to_dict`): it is saved in the model's
``config.json`` (the likelihood's ``likelihood_kwargs``), so loading a model rebuilds the
transform without running any code. pandas is imported only when a table is read, encoded
or decoded.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from vaebench.config import Config
from vaebench.data.sources import ArrayData

if TYPE_CHECKING:
    import pandas as pd

#: Integer-valued columns with at most this many distinct values are categories.
MAX_CATEGORIES = 10
#: Text columns with more distinct values than this are refused unless declared categorical
#: (identifiers and free text are not categories).
MAX_TEXT_LABELS = 100
#: A count whose standard deviation is at least this many whole numbers is scored by a
#: dequantized Gaussian (which joins the numbers' covariance), a smaller one by a negative
#: binomial: spread this wide, a Gaussian's mass on one whole number is its density there to
#: within 1 / (24 sigma^2) nats, and such counts are mostly measurements (an age, a level).
GAUSSIAN_COUNT_SPREAD = 10.0
#: File suffixes read as tables.
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
#: The likelihood of each kind (counts may also use another of COUNT_LIKELIHOODS).
KIND_LIKELIHOODS = {"numeric": "gaussian", "count": "negative_binomial",
                    "categorical": "categorical", "boolean": "bernoulli",
                    "datetime": "gaussian"}
#: What a schema given by the user may say of a column: a kind, or a count's likelihood.
COUNT_LIKELIHOODS = ("negative_binomial", "poisson", "dequantized_gaussian")
DECLARED_KINDS = (*KIND_LIKELIHOODS, *COUNT_LIKELIHOODS)
#: Mode-specific normalization: at most this many modes, each with at least this weight.
MAX_MODES, MIN_MODE_WEIGHT = 10, 0.005
#: Units of datetime columns, coarsest first, in nanoseconds.
TIME_UNITS = {"D": 86_400 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_TEXT_TIME_FORMATS = {"D": "%Y-%m-%d", "s": "%Y-%m-%d %H:%M:%S"}

Label = str | int | float | bool


class Column(Config):
    """One column of a table: what it holds, its encoding, and what decoding gives back."""

    name: str | int
    kind: Literal["numeric", "count", "categorical", "boolean", "datetime"]
    likelihood: Literal["gaussian", "negative_binomial", "poisson", "dequantized_gaussian",
                        "categorical", "bernoulli"]
    dtype: str = Field(description="the pandas dtype decoding gives back")
    missing: bool = Field(False, description="whether the block is followed by a "
                                             "missingness flag")
    labels: list[Label] | None = Field(None, description="categorical: the categories; "
                                                         "boolean: [false, true] values")
    ordered: bool = False
    center: float = 0.0
    scale: float = Field(1.0, gt=0)
    decimals: int | None = Field(None, ge=0, description="numeric: decoded values are "
                                                         "rounded to these decimals")
    unit: str | None = Field(None, description="datetime: the resolution, one of D, s, ms, "
                                               "us, ns")
    text_format: str | None = Field(None, description="datetime held as text: its format")
    mode_weights: list[float] | None = Field(None, description="mode-specific numeric: the "
                                                               "mixture's weights")
    mode_means: list[float] | None = None
    mode_stds: list[float] | None = None

    @model_validator(mode="after")
    def _likelihood_fits_kind(self) -> Column:
        allowed = COUNT_LIKELIHOODS if self.kind == "count" else \
            (KIND_LIKELIHOODS[self.kind],)
        if self.likelihood not in allowed:
            raise ValueError(f"column {self.name!r}: a {self.kind} column takes likelihood "
                             f"{' or '.join(allowed)}, not {self.likelihood!r}")
        if self.kind == "datetime" and self.unit not in TIME_UNITS:
            raise ValueError(f"column {self.name!r}: unit must be one of "
                             f"{', '.join(TIME_UNITS)}, got {self.unit!r}")
        return self

    @model_validator(mode="after")
    def _labels_fit_kind(self) -> Column:
        count = len(self.labels or [])
        if (self.kind == "categorical" and count < 2) or (self.kind == "boolean"
                                                          and count != 2):
            wanted = "2 or more" if self.kind == "categorical" else "exactly 2"
            raise ValueError(f"column {self.name!r}: a {self.kind} column needs {wanted} "
                             f"labels, got {count}")
        return self

    @model_validator(mode="after")
    def _modes_fit_kind(self) -> Column:
        modes = [self.mode_weights, self.mode_means, self.mode_stds]
        if all(m is None for m in modes):
            return self
        if self.kind != "numeric" or len({len(m or []) for m in modes}) != 1 or not all(
                std > 0 for std in self.mode_stds or [0]):
            raise ValueError(f"column {self.name!r}: modes are for numeric columns and need "
                             "as many weights, means and positive stds")
        return self

    @property
    def value_width(self) -> int:
        """Width of the value block (without the missingness flag)."""
        if self.kind == "categorical":
            return len(self.labels)
        return 1 + len(self.mode_means) if self.mode_means else 1

    @property
    def width(self) -> int:
        return self.value_width + int(self.missing)


class TableSchema(Config):
    """The columns of a table, in order; the encoded row is their blocks side by side."""

    columns: list[Column]

    @model_validator(mode="after")
    def _unique_names(self) -> TableSchema:
        if not self.columns:
            raise ValueError("a table needs at least one column")
        names = [str(column.name) for column in self.columns]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"column names must be unique, repeated: {repeated}")
        return self

    @property
    def width(self) -> int:
        return sum(column.width for column in self.columns)

    @property
    def names(self) -> list[str | int]:
        return [column.name for column in self.columns]

    def blocks(self) -> list[tuple[Column, slice, int | None]]:
        """Each column with the slice of its value block and the index of its flag."""
        layout, start = [], 0
        for column in self.columns:
            stop = start + column.value_width
            layout.append((column, slice(start, stop), stop if column.missing else None))
            start += column.width
        return layout

    def encode(self, frame: pd.DataFrame, dtype: Any = np.float32) -> np.ndarray:
        """The encoded rows (N, width) of ``frame``, which must hold every column."""
        absent = [name for name in self.names if name not in frame.columns]
        if absent:
            raise ValueError(f"the table lacks the columns {absent} of the schema")
        rows = np.zeros((len(frame), self.width), dtype=np.float64)
        for column, block, flag in self.blocks():
            missing = _missing(frame[column.name])
            if missing.any() and flag is None:
                raise ValueError(f"column {column.name!r} has missing values, but the schema "
                                 "saw none there (no missingness flag)")
            rows[~missing, block] = _encode_values(column, frame[column.name][~missing])
            if flag is not None:
                rows[:, flag] = missing
        return rows.astype(dtype)

    def decode(self, rows: np.ndarray | torch.Tensor) -> pd.DataFrame:
        """The table of encoded rows (or of the likelihood's means: categories by their
        largest entry, flags and booleans above 1/2)."""
        import pandas as pd

        if isinstance(rows, torch.Tensor):
            rows = rows.detach().cpu().double().numpy()
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"encoded rows must have shape (N, {self.width}), got "
                             f"{rows.shape}")
        data = {}
        for column, block, flag in self.blocks():
            missing = rows[:, flag] > 0.5 if flag is not None else np.zeros(len(rows), bool)
            data[column.name] = _decode_values(column, rows[:, block], missing)
        return pd.DataFrame(data)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=True)


# --- inference ---------------------------------------------------------------------------

def infer_schema(frame: pd.DataFrame, kinds: dict[Any, str] | None = None, *,
                 max_categories: int = MAX_CATEGORIES,
                 mode_specific: bool = False) -> TableSchema:
    """The schema of ``frame``: each column's kind inferred (see docs/tabular.md) or given
    in ``kinds`` ({column: kind}, a kind of :data:`DECLARED_KINDS`), and its statistics.

    Rules: booleans and numbers with the two values 0 and 1 are ``boolean``; datetimes and
    ISO date text are ``datetime``; whole numbers with at most ``max_categories`` distinct
    values are ``categorical``, other whole numbers >= 0 are ``count``; other numbers are
    ``numeric``; text is ``categorical`` (at most :data:`MAX_TEXT_LABELS` labels unless
    declared). A column that is empty, all missing or constant is a ValueError naming it.
    ``mode_specific``: numeric columns get TVAE's mode-specific normalization.
    """
    kinds = dict(kinds or {})
    unknown = [name for name in kinds if name not in frame.columns]
    if unknown:
        raise ValueError(f"the schema names columns the table does not have: {unknown}")
    return TableSchema(columns=[_fit_column(frame[name], kinds.get(name), max_categories,
                                            mode_specific) for name in frame.columns])


def _fit_column(series: pd.Series, declared: str | None, max_categories: int,
                mode_specific: bool = False) -> Column:
    name = series.name
    if not isinstance(name, (str, int)) or isinstance(name, bool):
        raise ValueError(f"column names must be text or integers, got {name!r}")
    if declared is not None and declared not in DECLARED_KINDS:
        raise ValueError(f"column {name!r}: unknown kind {declared!r}; kinds: "
                         f"{', '.join(DECLARED_KINDS)}")
    missing = _missing(series)
    present = series[~missing]
    if len(present) == 0:
        raise ValueError(f"column {name!r} is all missing: drop it (it holds no values)")
    if present.nunique() < 2:
        raise ValueError(f"column {name!r} is constant (its only value is "
                         f"{present.iloc[0]!r}): drop it, it carries no information")
    kind = _kind_of(declared) or _infer_kind(present, max_categories)
    stats = _FITTERS[kind](present)
    likelihood = declared if declared in COUNT_LIKELIHOODS else KIND_LIKELIHOODS[kind]
    if kind == "count" and declared in (None, "count") and \
            stats["scale"] >= GAUSSIAN_COUNT_SPREAD:
        likelihood = "dequantized_gaussian"
    base = {"name": name, "kind": kind, "likelihood": likelihood,
            "dtype": str(series.dtype), "missing": bool(missing.any())}
    if kind == "numeric" and mode_specific:
        stats.update(_fit_modes(_numbers(present)))
    return Column(**base, **stats)


def _kind_of(declared: str | None) -> str | None:
    return "count" if declared in COUNT_LIKELIHOODS else declared


def _infer_kind(present: pd.Series, max_categories: int) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(present.dtype) or _all_bools(present):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(present.dtype) or _iso_time_unit(present):
        return "datetime"
    if pd.api.types.is_numeric_dtype(present.dtype):
        values = present.to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"column {present.name!r} holds infinite values")
        if not np.array_equal(values, np.round(values)):
            return "numeric"
        distinct = np.unique(values)
        if set(distinct) == {0.0, 1.0}:
            return "boolean"
        if len(distinct) <= max_categories:
            return "categorical"
        return "count" if distinct[0] >= 0 else "numeric"
    labels = present.nunique()
    if labels > MAX_TEXT_LABELS:
        raise ValueError(f"column {present.name!r} holds {labels} distinct texts (more than "
                         f"{MAX_TEXT_LABELS}): an identifier or free text? drop it, or "
                         "declare it categorical in the schema")
    return "categorical"


def _all_bools(present: pd.Series) -> bool:
    return present.dtype == object and all(isinstance(v, (bool, np.bool_)) for v in present)


def _fit_numeric(present: pd.Series) -> dict[str, Any]:
    values = _numbers(present)
    decimals = next((k for k in range(7) if np.array_equal(np.round(values, k), values)),
                    None)
    return {"center": float(values.mean()), "scale": float(values.std()),
            "decimals": decimals}


def _fit_modes(values: np.ndarray) -> dict[str, list[float]]:
    """The modes of TVAE's mode-specific normalization (Xu et al. 2019, Sec. 4.2): a
    variational Gaussian mixture of at most :data:`MAX_MODES` components (as their code
    fits), keeping those of weight >= :data:`MIN_MODE_WEIGHT`."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture

    mixture = BayesianGaussianMixture(
        n_components=min(MAX_MODES, len(np.unique(values))), weight_concentration_prior=1e-3,
        weight_concentration_prior_type="dirichlet_process", max_iter=100, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mixture.fit(values[:, None])
    keep = mixture.weights_ >= MIN_MODE_WEIGHT
    weights = mixture.weights_[keep] / mixture.weights_[keep].sum()
    stds = np.sqrt(mixture.covariances_.reshape(-1)[keep])
    return {"mode_weights": weights.tolist(), "mode_means": mixture.means_[keep, 0].tolist(),
            "mode_stds": stds.tolist()}


def _fit_count(present: pd.Series) -> dict[str, Any]:
    values = _numbers(present)
    if values.min() < 0 or not np.array_equal(values, np.round(values)):
        raise ValueError(f"column {present.name!r} is declared a count but holds values "
                         "that are not whole numbers >= 0")
    return {"center": float(values.mean()), "scale": float(values.std())}


def _fit_categorical(present: pd.Series) -> dict[str, Any]:
    import pandas as pd

    if isinstance(present.dtype, pd.CategoricalDtype):
        return {"labels": _json_labels(present.name, present.cat.categories),
                "ordered": bool(present.cat.ordered)}
    distinct = _json_labels(present.name, present.unique())
    return {"labels": sorted(distinct, key=lambda label: (type(label).__name__, label))}


def _fit_boolean(present: pd.Series) -> dict[str, Any]:
    labels = _fit_categorical(present)["labels"]
    if len(labels) != 2:
        raise ValueError(f"column {present.name!r} is declared boolean but holds "
                         f"{len(labels)} distinct values")
    return {"labels": labels}


def _fit_datetime(present: pd.Series) -> dict[str, Any]:
    import pandas as pd

    text_unit = None if pd.api.types.is_datetime64_any_dtype(present.dtype) else \
        _iso_time_unit(present)
    if text_unit is None and not pd.api.types.is_datetime64_any_dtype(present.dtype):
        raise ValueError(f"column {present.name!r} is declared datetime but holds neither "
                         "datetimes nor ISO dates (YYYY-MM-DD[ HH:MM:SS])")
    times = pd.to_datetime(present)
    if times.dt.tz is not None:
        raise ValueError(f"column {present.name!r} holds time-zone aware datetimes: convert "
                         "them to naive ones (e.g. .dt.tz_convert(None)) first")
    stamps = times.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    unit = text_unit or next(u for u, ns in TIME_UNITS.items() if (stamps % ns == 0).all())
    values = (stamps // TIME_UNITS[unit]).astype(np.float64)
    return {"unit": unit, "center": float(values.mean()), "scale": float(values.std()),
            "text_format": _TEXT_TIME_FORMATS.get(text_unit)}


_FITTERS = {"numeric": _fit_numeric, "count": _fit_count, "categorical": _fit_categorical,
            "boolean": _fit_boolean, "datetime": _fit_datetime}


def _iso_time_unit(present: pd.Series) -> str | None:
    """"D" for text that is all ISO dates, "s" for ISO date-times, else None."""
    if not all(isinstance(v, str) for v in present):
        return None
    for unit, pattern in (("D", _ISO_DATE), ("s", _ISO_DATETIME)):
        if all(pattern.fullmatch(v) for v in present):
            return unit
    return None


def _json_labels(name: Any, values: Any) -> list[Label]:
    """Labels as JSON scalars (numpy scalars become Python ones); others are refused."""
    labels = []
    for value in values:
        value = value.item() if isinstance(value, np.generic) else value
        if not isinstance(value, (str, int, float, bool)) or (
                isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f"column {name!r} holds the label {value!r} of type "
                             f"{type(value).__name__}, which cannot be saved as JSON: "
                             "convert it to text or a number")
        labels.append(value)
    return labels


# --- encoding and decoding ---------------------------------------------------------------

def _missing(series: pd.Series) -> np.ndarray:
    return series.isna().to_numpy(dtype=bool)


def _numbers(present: pd.Series) -> np.ndarray:
    return present.to_numpy(dtype=np.float64)


def _encode_values(column: Column, present: pd.Series) -> np.ndarray:
    """The value blocks of the present values, (n, value_width)."""
    if column.kind in ("categorical", "boolean"):
        codes = _label_codes(column, present)
        if column.kind == "boolean":
            return codes[:, None].astype(np.float64)
        return np.eye(len(column.labels))[codes]
    values = _time_values(column, present) if column.kind == "datetime" else _numbers(present)
    if column.mode_means:
        return _mode_block(column, values)
    return ((values - column.center) / column.scale)[:, None]


def _mode_block(column: Column, values: np.ndarray) -> np.ndarray:
    """[alpha, one-hot mode]: the most probable mode k of each value and
    alpha = (x - mean_k) / (4 std_k), TVAE's encoding with the mode chosen by its largest
    posterior probability (so that it is reversible), and alpha not clipped."""
    means, stds = np.array(column.mode_means), np.array(column.mode_stds)
    log_posterior = (np.log(column.mode_weights) - np.log(stds)
                     - 0.5 * ((values[:, None] - means) / stds) ** 2)
    mode = log_posterior.argmax(1)
    alpha = (values - means[mode]) / (4 * stds[mode])
    return np.column_stack([alpha, np.eye(len(means))[mode]])


def _label_codes(column: Column, present: pd.Series) -> np.ndarray:
    index = {_label_key(label): code for code, label in enumerate(column.labels)}
    keys = [_label_key(value) for value in present]
    unknown = [key[1] for key in keys if key not in index]
    if unknown:
        raise ValueError(f"column {column.name!r} holds {unknown[0]!r}, not one of its "
                         f"labels {column.labels}")
    return np.array([index[key] for key in keys], dtype=np.int64)


def _label_key(value: Any) -> tuple[str, Any]:
    """A label compared by kind and value: True is not 1, 1 is 1.0."""
    if isinstance(value, (bool, np.bool_)):
        return "bool", bool(value)
    if isinstance(value, (int, float, np.number)):
        return "number", float(value)
    return "text", value


def _time_values(column: Column, present: pd.Series) -> np.ndarray:
    import pandas as pd

    stamps = pd.to_datetime(present).to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return stamps.astype(np.float64) / TIME_UNITS[column.unit]


def _decode_values(column: Column, block: np.ndarray, missing: np.ndarray) -> Any:
    """The column's values (pandas dtype ``column.dtype``) of its value blocks."""
    if column.kind == "categorical":
        return _with_labels(column, block.argmax(1), missing)
    if column.kind == "boolean":
        return _with_labels(column, (block[:, 0] > 0.5).astype(np.int64), missing)
    values = _mode_values(column, block) if column.mode_means else \
        block[:, 0] * column.scale + column.center
    if column.kind == "datetime":
        return _as_times(column, values, missing)
    if column.kind == "count":
        values = np.maximum(np.round(values), 0)
    elif column.decimals is not None:
        values = np.round(values, column.decimals)
    return _as_dtype(values.astype(object), missing, column.dtype)


def _mode_values(column: Column, block: np.ndarray) -> np.ndarray:
    mode = block[:, 1:].argmax(1)
    return block[:, 0] * 4 * np.array(column.mode_stds)[mode] + np.array(column.mode_means)[mode]


def _with_labels(column: Column, codes: np.ndarray, missing: np.ndarray) -> Any:
    import pandas as pd

    if column.dtype == "category":
        codes = np.where(missing, -1, codes)
        return pd.Categorical.from_codes(codes, categories=column.labels,
                                         ordered=column.ordered)
    labels = np.empty(len(column.labels), dtype=object)
    labels[:] = column.labels
    return _as_dtype(labels[codes], missing, column.dtype)


def _as_times(column: Column, values: np.ndarray, missing: np.ndarray) -> Any:
    import pandas as pd

    stamps = np.round(values).astype(np.int64) * TIME_UNITS[column.unit]
    times = pd.Series(stamps.astype("datetime64[ns]")).where(~missing)
    if column.text_format is not None:
        return _as_dtype(times.dt.strftime(column.text_format).to_numpy(dtype=object),
                         missing, column.dtype)
    return times.astype(column.dtype)


def _as_dtype(values: np.ndarray, missing: np.ndarray, dtype: str) -> pd.Series:
    import pandas as pd

    values = values.copy()
    values[missing] = None
    return pd.Series(values, dtype=object).astype(dtype)


# --- reading and writing -----------------------------------------------------------------

def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV (``.csv``, ``.tsv``) or Parquet (``.parquet``, ``.pq``: needs pyarrow) file."""
    import pandas as pd

    path = Path(path)
    if path.suffix not in TABLE_SUFFIXES:
        raise ValueError(f"{path} is not a table file ({', '.join(TABLE_SUFFIXES)})")
    if not path.is_file():
        raise FileNotFoundError(f"no table file at {path}")
    if path.suffix in (".parquet", ".pq"):
        _need_pyarrow(path)
        return pd.read_parquet(path)
    return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` to a CSV or Parquet file (chosen by the suffix), atomically."""
    from vaebench.files import atomic_write

    path = check_table_path(path)
    if path.suffix in (".parquet", ".pq"):
        atomic_write(path, lambda handle: frame.to_parquet(handle, index=False))
    else:
        sep = "\t" if path.suffix == ".tsv" else ","
        atomic_write(path, lambda handle: frame.to_csv(handle, index=False, sep=sep),
                     binary=False)
    return path


def check_table_path(path: str | Path) -> Path:
    """``path`` as a table file that can be written: a known suffix (and pyarrow for
    Parquet), else an error that says why."""
    path = Path(path)
    if path.suffix not in TABLE_SUFFIXES:
        raise ValueError(f"{path}: a table is written to {', '.join(TABLE_SUFFIXES)}")
    if path.suffix in (".parquet", ".pq"):
        _need_pyarrow(path)
    return path


def _need_pyarrow(path: Path) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ImportError(f"reading or writing the Parquet file {path} needs pyarrow: "
                          "pip install 'vaebench[tables]'") from None


# --- tables as training data ---------------------------------------------------------------

class TableData(ArrayData):
    """The encoded rows of a table, with the schema that encodes and decodes them."""

    def __init__(self, x: torch.Tensor, schema: TableSchema, name: str = "table"):
        super().__init__(x, None, name)
        self.schema = schema

    def to(self, device: torch.device | str) -> TableData:
        return TableData(self.x.to(device), self.schema, self.name)

    def subset(self, index: torch.Tensor | slice, name: str | None = None) -> TableData:
        return TableData(self.take(index), self.schema, name or self.name)

    @property
    def likelihood_kwargs(self) -> dict[str, Any]:
        """What the ``mixed`` likelihood is built from: this table's schema, and the numbers
        scored and drawn with the full covariance of their residuals, their mean shifted by
        the row's categories (``column_sigma="conditional"``,
        :class:`~vaebench.tabular_likelihood.JointGaussian`)."""
        return {"table": self.schema.to_dict(), "column_sigma": "conditional"}

    def model_options(self) -> dict[str, Any]:
        """The config fields of a model of this table: ``VAE(**data.model_options())``."""
        return {"input_dim": self.sample_shape, "likelihood": "mixed",
                "likelihood_kwargs": self.likelihood_kwargs}

    def to_frame(self) -> pd.DataFrame:
        return self.schema.decode(self.x)


def is_table(source: Any) -> bool:
    """Whether ``source`` names a bundled table or a table file (by its suffix)."""
    from vaebench.data.table_datasets import TABLES

    if isinstance(source, str) and source in TABLES:
        return True
    return isinstance(source, (str, Path)) and Path(source).suffix in TABLE_SUFFIXES


def load_table(source: Any, kinds: dict[Any, str] | None = None, *,
               schema: TableSchema | dict | None = None, columns: list | None = None,
               name: str | None = None, max_categories: int = MAX_CATEGORIES,
               mode_specific: bool = False) -> TableData:
    """A table as training data: ``source`` is a DataFrame, a bundled table's name
    (:data:`~vaebench.data.table_datasets.TABLES`), a CSV or Parquet file, or an array or
    mapping of columns (``columns`` names an array's columns). The schema is ``schema``
    (e.g. a trained model's ``model.likelihood.table``: test data must be encoded by the
    schema of the training data), else inferred, with ``kinds`` overriding columns
    (``max_categories``, ``mode_specific``: see :func:`infer_schema`)."""
    frame = _as_frame(source, columns)
    if schema is None:
        schema = infer_schema(frame, kinds, max_categories=max_categories,
                              mode_specific=mode_specific)
    elif not isinstance(schema, TableSchema):
        schema = TableSchema.model_validate(schema)
    rows = torch.from_numpy(schema.encode(frame))
    return TableData(rows, schema, name or (source if isinstance(source, str) else "table"))


def _as_frame(source: Any, columns: list | None) -> pd.DataFrame:
    import pandas as pd

    from vaebench.data.table_datasets import TABLES, load_bundled_table

    if isinstance(source, pd.DataFrame):
        return source
    if isinstance(source, str) and source in TABLES:
        return load_bundled_table(source)
    if isinstance(source, (str, Path)):
        return read_table(source)
    if isinstance(source, (np.ndarray, dict)):
        return pd.DataFrame(source, columns=columns)
    raise TypeError(f"cannot read a table from {type(source).__name__}: give a DataFrame, "
                    "a CSV or Parquet file, a bundled table's name, or an array with columns")


def table_likelihood(likelihood: str) -> str:
    """The likelihood of a model of a table: ``mixed`` (chosen by ``auto``); others are
    refused, since they ignore the columns' kinds."""
    from vaebench.likelihoods import AUTO

    if likelihood not in (AUTO, "mixed"):
        raise ValueError(f"a table is modelled column by column with the 'mixed' likelihood; "
                         f"--likelihood {likelihood} would ignore its columns' kinds (leave "
                         "it at auto)")
    return "mixed"


def likelihood_fields(data: Any, likelihood: str = "auto",
                      sigma: float | str = 1.0) -> dict[str, Any]:
    """The likelihood config fields (``likelihood``, ``sigma``, ``likelihood_kwargs``) of a
    model of ``data``, as ``vaebench train`` and ``vaebench benchmark`` both choose them: a
    table's ``mixed`` likelihood with its schema (see :func:`table_likelihood`); else
    ``likelihood`` and ``sigma`` as asked, or for ``auto`` chosen from the data
    (:func:`~vaebench.likelihoods.likelihood_for_data`)."""
    from vaebench.likelihoods import AUTO, check_sigma, likelihood_for_data

    sigma = check_sigma(likelihood, sigma)
    if isinstance(data, TableData):
        return {"likelihood": table_likelihood(likelihood), "sigma": 1.0,
                "likelihood_kwargs": data.likelihood_kwargs}
    if likelihood == AUTO:
        likelihood, sigma = likelihood_for_data(data)
    return {"likelihood": likelihood, "sigma": sigma, "likelihood_kwargs": {}}
