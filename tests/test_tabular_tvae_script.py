"""The side-by-side script with TVAE (benchmarks/tabular_tvae.py): its seed-by-seed
comparison and its oracle rows, without ctgan (imported only to train TVAE)."""

import importlib.util
import statistics
from pathlib import Path

import pytest

from vaebench.data import load_train_test

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "tabular_tvae.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("tabular_tvae", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(table, model, seed, value):
    keys = ("column_shapes", "column_pair_trends", "ml_synthetic", "privacy")
    return {"table": table, "model": model, "seed": seed, **dict.fromkeys(keys, value)}


def test_paired_table_is_the_mean_difference_on_the_same_seed(script):
    ours, theirs = [0.90, 0.70, 0.85], [0.80, 0.75, 0.85]
    rows = [_row("wine", "tvae", seed, value) for seed, value in enumerate(theirs)]
    rows += [_row("wine", "vae", seed, value) for seed, value in enumerate(ours)]
    rows.append(_row("wine", "vae", 9, 0.0))  # no TVAE run on seed 9: not compared
    differences = [a - b for a, b in zip(ours, theirs, strict=True)]
    error = statistics.stdev(differences) / 3 ** 0.5
    cell = f"{statistics.fmean(differences):+.4f} ± {error:.4f} (2/3)"
    line = next(line for line in script._paired_table(rows).splitlines()
                if line.startswith("| wine | vae |"))
    assert line == "| wine | vae | " + " | ".join([cell] * 4) + " |"
    assert script._paired_table([_row("wine", "vae", 0, 0.5)]) == ""


def test_oracle_rows_are_fresh_rows_of_the_tables_distribution(script):
    train, _ = load_train_test("synthetic_mixed", seed=0)
    real = train.to_frame()
    rows = script._oracle(len(real), train.schema, seed=0)
    assert list(rows.columns) == list(real.columns)
    assert len(rows) == len(real)
    assert (rows.dtypes == real.dtypes).all()
    for column in train.schema.columns:  # every category one the schema knows
        if column.kind == "categorical":
            assert rows[column.name].dropna().isin(column.labels).all()
    # fresh: the heights differ row by row, yet their spread is the table's
    assert not rows["height"].reset_index(drop=True).equals(real["height"].reset_index(
        drop=True))
    assert rows["height"].std() == pytest.approx(real["height"].std(), rel=0.1)
    assert script._oracle(len(real), train.schema, seed=1)["height"].tolist() != \
        rows["height"].tolist()
