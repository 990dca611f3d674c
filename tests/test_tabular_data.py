"""Tables as data: schema inference and its rules, the exact round trip of the transform,
files, bundled tables, and the errors that name the column."""

import importlib.util

import numpy as np
import pandas as pd
import pytest

from vaebench.data import (
    TABLES,
    TableData,
    TableSchema,
    infer_schema,
    load_table,
    load_train_test,
)
from vaebench.data.table_datasets import synthetic_mixed
from vaebench.data.tables import read_table, write_table


def _kinds(schema: TableSchema) -> dict:
    return {column.name: column.kind for column in schema.columns}


def _round_trip(frame: pd.DataFrame) -> pd.DataFrame:
    schema = infer_schema(frame)
    return schema.decode(schema.encode(frame))


def test_synthetic_mixed_has_every_kind_and_round_trips_exactly():
    frame = synthetic_mixed(300)
    schema = infer_schema(frame)
    assert _kinds(schema) == {
        "height": "numeric", "weight": "numeric", "group": "categorical",
        "plan": "categorical", "smoker": "boolean", "visits": "count",
        "rating": "categorical", "children": "categorical", "joined": "datetime"}
    assert [c.name for c in schema.columns if c.missing] == ["weight", "group", "children"]
    pd.testing.assert_frame_equal(_round_trip(frame), frame)  # dtypes, labels, NA, values
    assert synthetic_mixed(50, seed=3).equals(synthetic_mixed(50, seed=3))


def test_a_csv_round_trips_exactly(tmp_path):
    write_table(synthetic_mixed(200), tmp_path / "t.csv")
    frame = read_table(tmp_path / "t.csv")
    schema = infer_schema(frame)
    assert schema.columns[-1].text_format == "%Y-%m-%d"  # ISO dates in text are dates
    pd.testing.assert_frame_equal(schema.decode(schema.encode(frame)), frame)


@pytest.mark.parametrize("name", [t for t in TABLES if t != "synthetic_mixed"])
def test_bundled_tables_load_offline_and_round_trip(name):
    table = load_table(name)
    frame = table.to_frame()
    assert isinstance(table, TableData) and table.sample_shape == (table.schema.width,)
    assert len(frame) in (178, 569, 442) and frame.notna().all().all()
    pd.testing.assert_frame_equal(_round_trip(frame), frame)


def test_integer_rules():
    n = 60
    frame = pd.DataFrame({
        "few": np.arange(n) % 4 + 1,           # <= 10 distinct whole numbers: categories
        "zero_one": np.arange(n) % 2,           # 0 and 1: a boolean
        "many": np.arange(n) * 3,               # many whole numbers >= 0: a count
        "signed": np.arange(n) - 30,            # many whole numbers, some < 0: numeric
        "real": np.linspace(0, 1, n),
        "text": ["x", "y", "z"] * 20,
        "stamp": pd.date_range("2021-01-01", periods=n, freq="h"),
    })
    schema = infer_schema(frame)
    assert _kinds(schema) == {"few": "categorical", "zero_one": "boolean", "many": "count",
                              "signed": "numeric", "real": "numeric", "text": "categorical",
                              "stamp": "datetime"}
    assert schema.columns[3].decimals == 0 and schema.columns[-1].unit == "s"
    # "many" spreads over 52 whole numbers a standard deviation: a dequantized Gaussian;
    # "few" as a count spreads over 1.1: a negative binomial
    assert schema.columns[2].likelihood == "dequantized_gaussian"
    assert infer_schema(frame, max_categories=3).columns[0].kind == "count"
    assert infer_schema(frame, max_categories=3).columns[0].likelihood == "negative_binomial"
    declared = infer_schema(frame, kinds={"many": "negative_binomial"}).columns[2]
    assert declared.likelihood == "negative_binomial"
    pd.testing.assert_frame_equal(_round_trip(frame), frame)


def test_the_schema_overrides_inference():
    frame = pd.DataFrame({"rating": np.arange(40) % 5, "n": np.arange(40) % 7,
                          "yes": ["y", "n"] * 20, "when": [f"2020-01-0{i % 9 + 1}"
                                                           for i in range(40)]})
    schema = infer_schema(frame, {"rating": "numeric", "n": "poisson", "yes": "boolean",
                                  "when": "categorical"})
    assert [(c.kind, c.likelihood) for c in schema.columns] == [
        ("numeric", "gaussian"), ("count", "poisson"), ("boolean", "bernoulli"),
        ("categorical", "categorical")]
    assert schema.columns[2].labels == ["n", "y"]
    pd.testing.assert_frame_equal(schema.decode(schema.encode(frame)), frame)


@pytest.mark.parametrize("frame, kinds, message", [
    (pd.DataFrame({"a": [1.0, 2.0], "k": [3, 3]}), None, "'k' is constant"),
    (pd.DataFrame({"a": [1.0, 2.0], "gone": [np.nan, np.nan]}), None, "'gone' is all missing"),
    (pd.DataFrame({"a": [1.0, np.inf, 2.0]}), None, "'a' holds infinite"),
    (pd.DataFrame({"id": [f"u{i}" for i in range(150)]}), None, "'id' holds 150 distinct"),
    (pd.DataFrame({"a": [1.0, -2.0, 3.0]}), {"a": "count"}, "'a' is declared a count"),
    (pd.DataFrame({"a": [1, 2, 3]}), {"a": "boolean"}, "'a' is declared boolean"),
    (pd.DataFrame({"a": [1, 2, 3]}), {"a": "datetime"}, "'a' is declared datetime"),
    (pd.DataFrame({"a": [1, 2, 3]}), {"a": "ordinal"}, "unknown kind 'ordinal'"),
    (pd.DataFrame({"a": [1, 2, 3]}), {"b": "numeric"}, r"does not have: \['b'\]"),
    (pd.DataFrame({"t": pd.date_range("2020", periods=3, tz="UTC")}), None, "time-zone"),
])
def test_edge_cases_are_clear_errors_naming_the_column(frame, kinds, message):
    with pytest.raises(ValueError, match=message):
        infer_schema(frame, kinds)


def test_a_text_column_with_many_labels_may_be_declared_categorical():
    frame = pd.DataFrame({"id": [f"u{i % 120}" for i in range(240)]})
    assert len(infer_schema(frame, {"id": "categorical"}).columns[0].labels) == 120


def test_encoding_other_data_with_a_schema_names_what_does_not_fit():
    schema = infer_schema(pd.DataFrame({"c": ["a", "b", "a"], "x": [1.5, 2.5, 3.0]}))
    with pytest.raises(ValueError, match="'c' holds 'z', not one of its labels"):
        schema.encode(pd.DataFrame({"c": ["z"], "x": [1.0]}))
    with pytest.raises(ValueError, match="'x' has missing values, but the schema saw none"):
        schema.encode(pd.DataFrame({"c": ["a"], "x": [np.nan]}))
    with pytest.raises(ValueError, match=r"lacks the columns \['x'\]"):
        schema.encode(pd.DataFrame({"c": ["a"]}))
    test = load_table(pd.DataFrame({"c": ["b"], "x": [2.0]}), schema=schema.to_dict())
    assert test.x[0].tolist() == pytest.approx([0, 1, (2 - 7 / 3) / schema.columns[1].scale])


def test_the_schema_is_json_and_validated():
    schema = infer_schema(synthetic_mixed(100))
    assert TableSchema.model_validate(schema.to_dict()) == schema
    broken = schema.to_dict()
    broken["columns"][2]["likelihood"] = "gaussian"
    with pytest.raises(ValueError, match="'group': a categorical column takes likelihood"):
        TableSchema.model_validate(broken)


def test_arrays_with_column_names_and_mappings_are_tables():
    rows = np.column_stack([np.arange(30) % 3, np.linspace(0, 1, 30)])
    table = load_table(rows, columns=["kind", "value"])
    assert _kinds(table.schema) == {"kind": "categorical", "value": "numeric"}
    assert load_table({"kind": rows[:, 0], "value": rows[:, 1]}).schema == table.schema


def test_train_test_split_keeps_the_schema(tmp_path):
    train, test = load_train_test("synthetic_mixed", train_size=500)
    assert isinstance(train, TableData) and isinstance(test, TableData)
    assert len(train) == 500 and len(test) == 200 and train.schema == test.schema
    assert isinstance(train.to("cpu"), TableData)
    write_table(synthetic_mixed(100), tmp_path / "t.tsv")
    train, test = load_train_test(str(tmp_path / "t.tsv"))
    assert len(train) == 90 and train.schema.width == train.sample_shape[0]


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None,
                    reason="pyarrow is installed")
def test_parquet_without_pyarrow_says_how_to_get_it(tmp_path):
    with pytest.raises(ImportError, match=r"vaebench\[tables\]"):
        write_table(synthetic_mixed(10), tmp_path / "t.parquet")
    (tmp_path / "u.parquet").write_bytes(b"PAR1")
    with pytest.raises(ImportError, match="pyarrow"):
        read_table(tmp_path / "u.parquet")


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="needs pyarrow")
def test_parquet_round_trips(tmp_path):
    frame = synthetic_mixed(100)
    write_table(frame, tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(_round_trip(read_table(tmp_path / "t.parquet")),
                                  read_table(tmp_path / "t.parquet"))
