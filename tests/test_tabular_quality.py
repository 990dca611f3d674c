"""Scores of a synthetic table (vaebench.metrics.tabular), each against an independent
computation on tiny tables, and `vaebench evaluate` on a tabular model."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import KDTree
from scipy.stats import ks_2samp

from vaebench.cli import main
from vaebench.data.tables import infer_schema
from vaebench.metrics.tabular import (
    column_pair_trends,
    column_shapes,
    distance_to_closest_record,
    ml_efficacy,
    table_quality,
)

pytest.importorskip("sdmetrics")


def _people(n=300, seed=0):
    """Two correlated numbers, a category that follows them, an independent boolean."""
    rng = np.random.default_rng(seed)
    size = rng.normal(0, 1, n)
    return pd.DataFrame({
        "height": np.round(170 + 8 * size, 1),
        "weight": np.round(70 + 6 * size + rng.normal(0, 2, n), 1),
        "group": np.where(size > 0.3, "tall", np.where(size < -0.3, "short", "middle")),
        "smoker": rng.random(n) < 0.3,
    })


@pytest.fixture(scope="module")
def people():
    frame = _people()
    return frame, infer_schema(frame)


def _shuffled_columns(frame, seed=1):
    """Each column permuted on its own: the same marginals, the links between columns
    broken."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({name: frame[name].to_numpy()[rng.permutation(len(frame))]
                         for name in frame.columns})


def test_ks_complement_is_one_minus_the_ks_statistic():
    real = pd.DataFrame({"x": [0.1, 0.5, 0.9, 1.3, 2.0, 2.2], "y": list("ababab")})
    synthetic = pd.DataFrame({"x": [0.0, 0.2, 1.8, 2.5, 3.1, 3.3], "y": list("aabbab")})
    schema = infer_schema(real)
    quality = table_quality(real, synthetic, schema)
    expected = 1 - ks_2samp(real["x"], synthetic["x"]).statistic
    assert quality["column_shapes"]["columns"]["x"] == pytest.approx(expected)
    assert expected < 1


def test_tv_complement_by_hand():
    real = pd.DataFrame({"c": list("aabc"), "x": [1.5, 2.5, 3.5, 4.5]})
    synthetic = pd.DataFrame({"c": list("abbb"), "x": [1.5, 2.5, 3.5, 4.5]})
    # frequencies a, b, c: real 1/2, 1/4, 1/4; synthetic 1/4, 3/4, 0 -> TV = (1/4 + 1/2 + 1/4) / 2
    shapes = table_quality(real, synthetic, infer_schema(real))["column_shapes"]
    assert shapes["columns"] == {"c": pytest.approx(0.5), "x": pytest.approx(1.0)}
    assert shapes["mean"] == pytest.approx(0.75)


def test_pair_trends_by_hand():
    real = pd.DataFrame({"a": [1.5, 2.5, 3.5, 4.5, 5.5], "b": [1.5, 1.0, 3.5, 4.0, 6.5]})
    synthetic = pd.DataFrame({"a": [1.5, 2.5, 3.5, 4.5, 5.5], "b": [6.5, 1.0, 4.0, 1.5, 3.5]})
    trends = table_quality(real, synthetic, infer_schema(real))["column_pair_trends"]
    r_real, r_synthetic = (np.corrcoef(frame["a"], frame["b"])[0, 1]
                           for frame in (real, synthetic))
    assert trends["numeric_pairs"] == pytest.approx(1 - abs(r_real - r_synthetic) / 2)
    assert trends["categorical_pairs"] is None and trends["pairs"] == 1


def test_contingency_by_hand():
    real = pd.DataFrame({"c": list("aabb"), "d": list("xyxy")})
    synthetic = pd.DataFrame({"c": list("aabb"), "d": list("xxyy")})
    # cells (a,x) (a,y) (b,x) (b,y): real 1/4 each, synthetic 1/2, 0, 0, 1/2 -> TV = 1/2
    trends = table_quality(real, synthetic, infer_schema(real))["column_pair_trends"]
    assert trends["categorical_pairs"] == pytest.approx(0.5)


def test_a_copy_of_the_real_table_scores_perfectly(people):
    frame, schema = people
    quality = table_quality(frame, frame.copy(), schema, "group", holdout=_people(60, seed=2))
    assert quality["column_shapes"]["mean"] == pytest.approx(1.0)
    assert quality["column_pair_trends"]["mean"] == pytest.approx(1.0)
    assert quality["privacy"]["synthetic"] == {"median": 0.0, "copies": 1.0}
    assert quality["privacy"]["holdout"]["median"] > 0
    assert quality["privacy"]["holdout"]["copies"] < 1


def test_shuffled_columns_keep_the_shapes_and_lose_the_pair_trends(people):
    frame, schema = people
    shuffled = table_quality(frame, _shuffled_columns(frame), schema)
    assert shuffled["column_shapes"]["mean"] == pytest.approx(1.0)
    trends = shuffled["column_pair_trends"]
    assert trends["mean"] < 0.9
    assert trends["numeric_pairs"] < 0.7  # height and weight correlate at about 0.95
    assert trends["mixed_pairs"] < 0.9


def test_shapes_and_trends_ignore_missing_values():
    real = pd.DataFrame({"x": [1.5, 2.5, np.nan, 4.5, 5.5], "c": ["a", "b", None, "a", "b"]})
    synthetic = pd.DataFrame({"x": [1.5, 2.5, 4.5, 5.5], "c": ["a", "b", "a", "b"]})
    shapes = column_shapes(real, synthetic, infer_schema(real))
    assert shapes["columns"] == {"x": pytest.approx(1.0), "c": pytest.approx(1.0)}


def test_distance_to_closest_record_by_hand(people):
    frame, schema = people
    synthetic = _people(40, seed=3)
    report = distance_to_closest_record(frame, synthetic, schema)
    real_rows, rows = schema.encode(frame, np.float64), schema.encode(synthetic, np.float64)
    nearest = np.sqrt(((rows[:, None, :] - real_rows[None]) ** 2).sum(-1)).min(1)
    assert report["synthetic"]["median"] == pytest.approx(np.median(nearest))
    with_copies = pd.concat([synthetic, frame.iloc[:10]], ignore_index=True)
    copies = distance_to_closest_record(frame, with_copies, schema)["synthetic"]["copies"]
    assert copies == pytest.approx(10 / 50)


def _without(frame, other):
    """The rows of ``frame`` that are not rows of ``other``."""
    merged = frame.merge(other.drop_duplicates(), how="left", indicator=True)
    return frame[(merged["_merge"] == "left_only").to_numpy()].reset_index(drop=True)


def test_a_copy_of_the_training_rows_has_no_overfitting_protection(people):
    frame, schema = people
    for size in (len(frame), len(frame) // 9):  # equal sets, and a 90 / 10 split
        holdout = _without(_people(3 * size, seed=6), frame).iloc[:size]
        protection = distance_to_closest_record(frame, frame.copy(), schema, holdout)[
            "overfitting_protection"]
        assert protection["closer_to_training"] == 1.0 and protection["score"] == 0.0
        assert protection["expected"] == pytest.approx(len(frame) / (len(frame) + size))
    # a held-out row equal to a training row is a tie, not closer to the training rows
    holdout = _people(len(frame), seed=2)
    shared = len(frame) - len(_without(frame, holdout))
    assert shared > 0
    protection = distance_to_closest_record(frame, frame.copy(), schema, holdout)[
        "overfitting_protection"]
    assert protection["closer_to_training"] == pytest.approx(1 - shared / len(frame))
    assert protection["score"] == pytest.approx(2 * shared / len(frame))


@pytest.mark.parametrize("held_out", [900, 100])
def test_fresh_rows_are_protected_whatever_the_holdouts_size(held_out):
    """Fresh rows land closest to a training row as often as the training rows' share of all
    real rows (0.5 or 0.9 here): the score is near 1 with both, while sdmetrics' equal-size
    formula, 2 (1 - p), would call fresh rows overfitted at 90 / 10."""
    real, holdout = _people(900, seed=10), _people(held_out, seed=11)
    synthetic = _people(2000, seed=12)
    schema = infer_schema(real)
    protection = distance_to_closest_record(real, synthetic, schema, holdout)[
        "overfitting_protection"]
    expected = 900 / (900 + held_out)
    rows = schema.encode(synthetic, np.float64)
    to_training, _ = KDTree(schema.encode(real, np.float64)).query(rows, k=1)
    to_holdout, _ = KDTree(schema.encode(holdout, np.float64)).query(rows, k=1)
    assert protection["closer_to_training"] == np.mean(to_training < to_holdout)
    assert protection["closer_to_training"] == pytest.approx(expected, abs=0.04)
    assert protection["score"] > 0.85
    assert held_out == 900 or 2 * (1 - protection["closer_to_training"]) < 0.3


def test_ml_efficacy_of_a_learnable_target_beats_a_shuffled_target(people):
    frame, schema = people
    holdout = _people(200, seed=4)
    shuffled = frame.assign(group=frame["group"].sample(frac=1, random_state=0).to_numpy())
    learnable = ml_efficacy(frame, frame, holdout, schema, "group")
    random = ml_efficacy(frame, shuffled, holdout, schema, "group")
    assert learnable["task"] == "classification" and learnable["n_test"] == 200
    assert learnable["synthetic"]["accuracy"] > 0.9
    assert random["synthetic"]["accuracy"] < learnable["synthetic"]["accuracy"] - 0.3
    assert random["synthetic"]["f1"] < learnable["synthetic"]["f1"] - 0.3
    assert random["real"] == learnable["real"]  # the reference does not see the synthetic rows


def test_ml_efficacy_regresses_a_numeric_target(people):
    frame, schema = people
    holdout = _people(200, seed=4)
    learnable = ml_efficacy(frame, frame, holdout, schema, "weight")
    shuffled = frame.assign(weight=frame["weight"].sample(frac=1, random_state=0).to_numpy())
    assert learnable["task"] == "regression" and learnable["synthetic"]["r2"] > 0.8
    assert ml_efficacy(frame, shuffled, holdout, schema, "weight")["synthetic"]["r2"] < 0.1
    with pytest.raises(ValueError, match="'nope' is not a column"):
        ml_efficacy(frame, frame, holdout, schema, "nope")


def test_mode_specific_schemas_are_scored_like_plain_ones(people):
    frame, schema = people
    synthetic = _people(100, seed=5)
    modes = infer_schema(frame, mode_specific=True)
    assert modes.columns[0].mode_means
    assert table_quality(frame, synthetic, modes) == table_quality(frame, synthetic, schema)


def test_pair_trends_leave_out_a_constant_synthetic_column(people):
    frame, schema = people
    constant = frame.assign(height=frame["height"].iloc[0])
    real, synthetic = (frame[["height", "weight"]], constant[["height", "weight"]])
    trends = column_pair_trends(real, synthetic, infer_schema(real))
    assert trends["undefined_pairs"] == [["height", "weight"]] and trends["mean"] is None


def test_evaluate_scores_the_synthetic_table_of_a_tabular_model(tmp_path):
    _people(200).to_csv(tmp_path / "people.csv", index=False)
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(tmp_path / "people.csv"), "--model", "vae",
                 "--latent-dim", "2", "--epochs", "1", "--iwae-k", "2", "--output", str(out),
                 "--no-progress", "--option", 'encoder_kwargs={"hidden": [16]}']) == 0
    assert main(["evaluate", "--model", str(out / "model"), "--k", "2", "--n-samples", "50",
                 "--target", "smoker", "--no-progress",
                 "--output", str(tmp_path / "eval.json")]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    quality = report["table_quality"]["normal"]
    assert quality["n_synthetic"] == 50 and quality["n_real"] == 180
    assert 0 <= quality["column_shapes"]["mean"] <= 1
    assert set(quality["privacy"]) == {"synthetic", "holdout", "overfitting_protection"}
    assert 0 <= quality["privacy"]["overfitting_protection"]["score"] <= 1
    assert quality["ml_efficacy"]["task"] == "classification"
    assert "sample_quality" not in report
