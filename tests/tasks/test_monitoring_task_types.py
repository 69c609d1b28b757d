"""Monitoring of any task type on real bundled datasets: performance verdicts, event-time windows, exact messages.

Every window is written by the real inference-log writer (``InferenceLogWriter`` + ``attach_ground_truth``)
and read back by the real readers; the models are real scikit-learn pipelines trained on the data.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from blocks.monitoring_policy import MonitoringPolicy
from tasks.evidently_drift import compute_drift
from tasks.evidently_monitoring import run_drift_report
from tasks.exceptions import MonitoringError
from tasks.inference_log import InferenceLogWriter, attach_ground_truth
from tasks.monitoring_data import build_feedback_dataset, export_inference_window
from tasks.monitoring_performance import compute_performance, evaluate_performance

#: Every test here calls plain functions and task bodies (``.fn``) on files: no Prefect server.
pytestmark = pytest.mark.no_server

NOW = dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------- real datasets and models


def iris_frame() -> pd.DataFrame:
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    frame = data.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["species"] = np.asarray(data.target_names)[frame.pop("target")]  # string labels
    return frame


def diabetes_frame() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True).frame  # 'target' is a continuous number


def penguins_frame() -> pd.DataFrame:
    from palmerpenguins import load_penguins

    return load_penguins()  # string labels, categoricals, missing values (sex is missing on 11 rows)


def macro_frame() -> pd.DataFrame:
    import statsmodels.api as sm

    frame = sm.datasets.macrodata.load_pandas().data
    frame["date"] = [f"{int(y)}-{3 * int(q) - 2:02d}-01" for y, q in zip(frame["year"], frame["quarter"], strict=True)]
    return frame[["date", "realgdp", "realcons", "realinv", "unemp", "infl"]]


def fit(frame: pd.DataFrame, features: list[str], target: str, regression: bool = False) -> Any:
    """A real scikit-learn pipeline: imputation, scaling / one-hot, a linear model."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [c for c in features if pd.api.types.is_numeric_dtype(frame[c])]
    categorical = [c for c in features if c not in numeric]
    prep = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
         categorical)])
    model = make_pipeline(prep, LinearRegression() if regression else LogisticRegression(max_iter=2000))
    rows = frame[frame[target].notna()]
    return model.fit(rows[features], rows[target])


def log_window(log_dir: Path, model_name: str, frame: pd.DataFrame, features: list[str], predictions: Any,
               scores: Any = None, labels: pd.Series | None = None, passthrough: list[str] | None = None,
               probabilities: list[dict[str, float]] | None = None,
               arrivals: list[float] | None = None) -> list[str]:
    """Log predictions with the real writer (passthrough columns travel with the features), then labels."""
    ids = [str(uuid.uuid4()) for _ in range(len(frame))]
    logged = frame[features + (passthrough or [])].reset_index(drop=True).copy()
    now = NOW.timestamp()
    writer = InferenceLogWriter(log_dir, model_name, "1", start_thread=False)
    writer.log(ids, arrivals or [now - 600 + i * 1e-3 for i in range(len(ids))], logged, list(predictions),
               None if scores is None else list(scores), probabilities)  # the log's JSON text column
    assert writer.flush() == len(ids) and writer.dropped == 0
    if labels is not None:
        pairs = {i: v for i, v in zip(ids, labels.tolist(), strict=True) if not pd.isna(v)}
        attach_ground_truth(log_dir, model_name, pairs)
    return ids


def window(log_dir: Path, model_name: str, tmp_path: Path, **kwargs: Any) -> Any:
    start = kwargs.pop("start", (NOW - dt.timedelta(hours=1)).isoformat())
    end = kwargs.pop("end", (NOW + dt.timedelta(minutes=1)).isoformat())
    return export_inference_window.fn(str(log_dir), model_name, start, end, str(tmp_path / "window.parquet"),
                                      **kwargs)


# --------------------------------------------------------------------------- policy


def test_policy_metric_defaults_by_task_type_and_refuses_what_a_task_cannot_report() -> None:
    policy = MonitoringPolicy()
    assert policy.primary_metric is None
    assert [policy.metric_for(t) for t in ("binary", "multiclass", "regression")] == ["roc_auc", "f1_macro", "rmse"]
    with pytest.raises(ValueError, match="names 'roc_auc', which a regression model does not report"):
        MonitoringPolicy(primary_metric="roc_auc").metric_for("regression")
    with pytest.raises(ValidationError, match="'auc' is not a metric monitoring computes"):
        MonitoringPolicy(primary_metric="auc")
    frame = pd.DataFrame({"label": [1.0, 2.0], "prediction": [1.0, 2.0]})
    with pytest.raises(MonitoringError, match="f1_macro.*regression model does not report"):
        compute_performance(frame, "label", "prediction", None, {"f1_macro": 0.9},
                            MonitoringPolicy(primary_metric="f1_macro"), task_type="regression")


# --------------------------------------------------------------------------- performance per task type


def test_iris_multiclass_string_labels_ok_then_decayed(tmp_path: Path) -> None:
    frame = iris_frame()
    features = [c for c in frame.columns if c != "species"]
    model = fit(frame, features, "species")
    classes = model.classes_.tolist()
    proba = model.predict_proba(frame[features])
    probabilities = [dict(zip(classes, map(float, row), strict=True)) for row in proba]
    log_dir = tmp_path / "ilog"
    log_window(log_dir, "iris", frame, features, model.predict(frame[features]), proba.max(axis=1),
               frame["species"], probabilities=probabilities)
    win = window(log_dir, "iris", tmp_path)
    assert (win.rows, win.labeled_rows, win.time_basis) == (150, 150, "arrival")
    assert pd.read_parquet(win.path)["prediction"].map(type).eq(str).all(), "string labels stay strings"
    policy = MonitoringPolicy(min_labeled_rows=100)
    baseline = {"f1_macro": 0.95, "accuracy": 0.95, "roc_auc_ovr": 0.99}
    ok = evaluate_performance.fn(win.path, "label", "prediction", None, baseline, policy, task_type="multiclass",
                                 classes=classes)
    assert ok.verdict == "ok" and ok.primary_metric == "f1_macro" and ok.decay_rule == "absolute drop"
    assert ok.current_value == pytest.approx(0.97, abs=0.02)
    assert ok.metrics["roc_auc_ovr"] > 0.98 and {"accuracy", "precision_macro", "recall_macro", "log_loss"} <= set(
        ok.metrics)
    by_auc = evaluate_performance.fn(win.path, "label", "prediction", None, baseline,
                                     policy.model_copy(update={"primary_metric": "roc_auc_ovr"}),
                                     task_type="multiclass", classes=classes)
    assert by_auc.verdict == "ok" and by_auc.primary_metric == "roc_auc_ovr"

    without = pd.read_parquet(win.path).drop(columns=["probabilities"])
    with pytest.raises(MonitoringError, match="'roc_auc_ovr' needs the per-class probabilities column"):
        compute_performance(without, "label", "prediction", None, baseline,
                            policy.model_copy(update={"primary_metric": "roc_auc_ovr"}), task_type="multiclass",
                            classes=classes, probabilities_column="probabilities")

    # A model that swaps two species: the same traffic, now scored against the truth, has decayed.
    swapped = pd.read_parquet(win.path)
    swapped["prediction"] = swapped["prediction"].replace({"versicolor": "virginica", "virginica": "versicolor"})
    decayed = compute_performance(swapped, "label", "prediction", None, baseline, policy, task_type="multiclass",
                                  classes=classes)
    assert decayed.verdict == "decayed" and decayed.decayed and decayed.drop > 0.5
    assert "f1_macro" in decayed.message and "decayed" in decayed.message


def test_diabetes_regression_rmse_relative_decay(tmp_path: Path) -> None:
    frame = diabetes_frame()
    features = [c for c in frame.columns if c != "target"]
    model = fit(frame.iloc[:300], features, "target", regression=True)
    test = frame.iloc[300:]
    predicted = model.predict(test[features])
    rmse = float(np.sqrt(np.mean((predicted - test["target"].to_numpy()) ** 2)))
    baseline = {"rmse": rmse, "mae": 45.0, "r2": 0.4}
    log_dir = tmp_path / "ilog"
    log_window(log_dir, "diabetes", test, features, predicted, labels=test["target"].astype(str))  # text labels
    win = window(log_dir, "diabetes", tmp_path)
    policy = MonitoringPolicy(min_labeled_rows=100)
    ok = evaluate_performance.fn(win.path, "label", "prediction", None, baseline, policy, task_type="regression")
    assert ok.verdict == "ok" and ok.primary_metric == "rmse" and ok.decay_rule == "relative increase"
    assert ok.current_value == pytest.approx(rmse) and ok.drop == pytest.approx(0.0, abs=1e-9)
    assert {"rmse", "mae", "r2"} == set(ok.metrics)

    # Predictions 20 units off: rmse grows by far more than 5 % of the baseline.
    shifted = pd.read_parquet(win.path)
    shifted["prediction"] = shifted["prediction"] + 20.0
    decayed = compute_performance(shifted, "label", "prediction", None, baseline, policy, task_type="regression")
    assert decayed.verdict == "decayed" and decayed.drop > 0.05
    assert "relative" in decayed.message and "+5.0%" in decayed.message
    # Rmse 3 % worse is within the 5 % relative tolerance (an absolute rule of 0.05 would flag it).
    slightly = compute_performance(shifted, "label", "prediction", None, {"rmse": decayed.current_value / 1.03},
                                   policy, task_type="regression")
    assert slightly.verdict == "ok" and slightly.drop == pytest.approx(0.03)

    bad = shifted.copy()
    bad["label"] = bad["label"].astype(object)
    bad.loc[bad.index[:2], "label"] = "n/a"
    with pytest.raises(MonitoringError, match=r"Column 'label' of a regression window holds 2 value\(s\).*'n/a'"):
        compute_performance(bad, "label", "prediction", None, baseline, policy, task_type="regression")


def test_penguins_binary_string_labels_missing_values_and_exact_messages(tmp_path: Path) -> None:
    frame = penguins_frame()
    features = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    model = fit(frame, features, "sex")
    classes = model.classes_.tolist()
    assert classes == ["female", "male"]
    proba = model.predict_proba(frame[features])[:, 1]
    log_dir = tmp_path / "ilog"
    log_window(log_dir, "penguins", frame, features, model.predict(frame[features]), proba, labels=frame["sex"])
    win = window(log_dir, "penguins", tmp_path)
    assert (win.rows, win.labeled_rows) == (344, 333)  # 11 penguins have no recorded sex
    baseline = {"roc_auc": 0.93, "accuracy": 0.85, "f1": 0.85}
    ok = evaluate_performance.fn(win.path, "label", "prediction", "score", baseline, MonitoringPolicy(),
                                 task_type="binary", classes=classes, positive_label="male")
    assert ok.verdict == "ok" and ok.primary_metric == "roc_auc" and ok.labeled_rows == 333
    assert ok.current_value > 0.9 and {"accuracy", "f1", "precision", "recall", "log_loss"} <= set(ok.metrics)

    # The positive label matters: f1 of "female" differs from f1 of "male".
    as_female = evaluate_performance.fn(win.path, "label", "prediction", "score", baseline,
                                        MonitoringPolicy(primary_metric="f1"), task_type="binary",
                                        classes=classes, positive_label="female")
    assert as_female.metrics["f1"] != pytest.approx(ok.metrics["f1"])

    # Exact "not enough data" conditions: some rows labelled, and every row labelled.
    labelled = pd.read_parquet(win.path)
    part = labelled[labelled["label"].notna()].head(87).copy()
    part.loc[part.index[31:], "label"] = None
    few = compute_performance(part, "label", "prediction", "score", baseline, MonitoringPolicy(), classes=classes)
    assert few.verdict == "not_enough_data"
    assert few.message == ("Not enough labelled data: 31 of 87 rows are labelled, fewer than min_labeled_rows=200; "
                           "no performance verdict.")
    full = labelled[labelled["label"].notna()].head(87)
    every = compute_performance(full, "label", "prediction", "score", baseline, MonitoringPolicy(), classes=classes)
    assert "all 87 rows are labelled, fewer than min_labeled_rows=200" in every.message
    assert "no labels" not in every.message

    one_class = labelled[labelled["label"] == "male"]
    undefined = compute_performance(one_class, "label", "prediction", "score", baseline,
                                    MonitoringPolicy(min_labeled_rows=50), classes=classes, positive_label="male")
    assert undefined.verdict == "not_enough_data"
    assert "'roc_auc' is undefined" in undefined.message and "one class only" in undefined.message


def test_labels_of_another_type_are_compared_as_text() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 400)
    frame = pd.DataFrame({"prediction": truth, "score": np.where(truth == 1, 0.8, 0.2),
                          "label": [str(v) for v in truth]})  # ground truth arrived as "1" / "0"
    summary = compute_performance(frame, "label", "prediction", "score", {"roc_auc": 1.0, "accuracy": 1.0},
                                  MonitoringPolicy(primary_metric="accuracy"), classes=[0, 1], positive_label=1)
    assert summary.metrics["accuracy"] == 1.0 and summary.metrics["roc_auc"] == 1.0 and summary.verdict == "ok"


# --------------------------------------------------------------------------- event-time windows


def test_event_time_window_selects_by_the_logged_time_column(tmp_path: Path) -> None:
    """Macro data scored today: the window by event time holds exactly the quarters inside it."""
    frame = macro_frame()
    features = ["realgdp", "realcons", "unemp", "infl"]
    model = fit(frame, features, "realinv", regression=True)
    log_dir = tmp_path / "ilog"
    # Arrivals spread over the last 30 days, in an order unrelated to the event time.
    rng = np.random.default_rng(1)
    arrivals = (NOW.timestamp() - rng.uniform(0, 30 * 86_400, len(frame))).tolist()
    log_window(log_dir, "macro", frame, features, model.predict(frame[features]), labels=frame["realinv"],
               passthrough=["date"], arrivals=arrivals)

    decade = window(log_dir, "macro", tmp_path, start="1990-01-01", end="2000-01-01", time_column="date")
    expected = frame[(frame["date"] >= "1990-01-01") & (frame["date"] < "2000-01-01")]
    assert (decade.rows, decade.time_basis, decade.time_column) == (len(expected), "event", "date") == (40, "event",
                                                                                                        "date")
    rows = pd.read_parquet(decade.path)
    assert sorted(rows["date"]) == sorted(expected["date"]) and rows["label"].notna().all()

    first = min(a for a, d in zip(arrivals, frame["date"], strict=True) if "1990-01-01" <= d < "2000-01-01")
    assert abs(dt.datetime.fromisoformat(decade.first_arrival).timestamp() - first) < 1e-3  # feedback starts here

    quarter = window(log_dir, "macro", tmp_path, start="2008-07-01T00:00:00+00:00", end="2008-09-29T00:00:00+00:00",
                     time_column="date")  # a 90-day window
    assert quarter.rows == 1 and pd.read_parquet(quarter.path)["date"].tolist() == ["2008-07-01"]

    by_arrival = window(log_dir, "macro", tmp_path, start=(NOW - dt.timedelta(days=31)).isoformat())
    assert by_arrival.rows == 203 and by_arrival.time_basis == "arrival"
    # Reading only what arrived in the last 10 days keeps fewer rows of the same decade.
    recent = window(log_dir, "macro", tmp_path, start="1990-01-01", end="2000-01-01", time_column="date",
                    arrival_start=(NOW - dt.timedelta(days=10)).isoformat())
    assert 0 < recent.rows < 40


def test_event_time_window_counts_unparseable_times_and_falls_back_without_the_column(tmp_path: Path) -> None:
    frame = macro_frame().head(40).copy()
    frame.loc[frame.index[:3], "date"] = "not a date"
    features = ["realgdp", "unemp"]
    log_dir = tmp_path / "ilog"
    log_window(log_dir, "macro-bad", frame, features, np.zeros(len(frame)), passthrough=["date"])
    win = window(log_dir, "macro-bad", tmp_path, start="1900-01-01", end="2100-01-01", time_column="date")
    assert (win.rows, win.unparsed_time_rows) == (37, 3) and "3 logged rows have no parseable 'date'" in win.note

    log_window(tmp_path / "old", "macro-old", frame, features, np.zeros(len(frame)))  # the time column not logged
    old = window(tmp_path / "old", "macro-old", tmp_path, time_column="date")
    assert old.time_basis == "arrival" and old.rows == 40 and "has no 'date' column" in old.note


# --------------------------------------------------------------------------- drift on non-churn data


def test_drift_on_penguins_with_string_predictions_skips_time_and_identifiers(tmp_path: Path) -> None:
    frame = penguins_frame()
    frame["penguin_id"] = [f"P{i:05d}" for i in range(len(frame))]
    frame["seen"] = [f"{2007 + i % 3}-06-{1 + i % 28:02d}" for i in range(len(frame))]
    features = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    model = fit(frame, features, "species")
    reference = frame.copy()
    reference["prediction"] = model.predict(reference[features])
    # Current traffic: only Gentoo-sized birds from Biscoe -> the predictions drift (all "Gentoo").
    current = frame[frame["species"] == "Gentoo"].sample(300, replace=True, random_state=0).copy()
    current["penguin_id"] = [f"Q{i:05d}" for i in range(len(current))]
    current["prediction"] = model.predict(current[features])
    ref_path, cur_path = tmp_path / "ref.parquet", tmp_path / "cur.parquet"
    reference.to_parquet(ref_path, index=False)
    current.to_parquet(cur_path, index=False)
    summary = run_drift_report.fn(str(ref_path), str(cur_path), MonitoringPolicy(), str(tmp_path / "out"),
                                  columns=[*features, "penguin_id", "seen"], prediction_column="prediction",
                                  column_roles={"penguin_id": "identifier"}, time_column="seen")
    assert summary.prediction_drift is True and summary.prediction_score < 0.05  # chi-square on the labels
    assert set(summary.skipped_columns) == {"penguin_id", "seen"}
    assert "event-time" in summary.skipped_columns["seen"] and "identifier" in summary.skipped_columns["penguin_id"]
    assert "penguin_id" not in summary.column_scores and "bill_length_mm" in summary.drifted_columns
    assert summary.verdict == "drift"

    # Without recorded roles an identifier-like text column is still skipped, with the reason.
    plain = compute_drift(reference, current, MonitoringPolicy(), [*features, "penguin_id"], "prediction").summary
    assert "identifier-like: 344 distinct values" in plain.skipped_columns["penguin_id"]


def test_prediction_drift_compares_labels_as_text_when_dtypes_differ() -> None:
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"x": rng.normal(size=500), "prediction": rng.integers(0, 2, 500)})
    current = pd.DataFrame({"x": rng.normal(size=500),
                            "prediction": [str(v) for v in rng.integers(0, 2, 500)]})  # logged as text
    summary = compute_drift(reference, current, MonitoringPolicy(), ["x"], "prediction").summary
    assert summary.prediction_drift is False and summary.prediction_score > 0.05


# --------------------------------------------------------------------------- feedback dataset


def test_feedback_dataset_casts_labels_and_uses_any_time_column(tmp_path: Path) -> None:
    frame = macro_frame()
    features = ["realgdp", "realcons", "unemp", "infl"]
    base = frame.iloc[:150]
    base_file = tmp_path / "base.parquet"
    base.to_parquet(base_file, index=False)
    recent = frame.iloc[150:]
    log_dir = tmp_path / "ilog"
    log_window(log_dir, "macro-fb", recent, features, np.zeros(len(recent)), labels=recent["realinv"].astype(str),
               passthrough=["date"])
    since = (NOW - dt.timedelta(hours=1)).isoformat()
    out = build_feedback_dataset.fn(str(base_file), str(log_dir), "macro-fb", since, "realinv",
                                    str(tmp_path / "train.parquet"), time_column="date")
    assert (out.base_rows, out.feedback_rows) == (150, 53)
    train = pd.read_parquet(out.path)
    assert list(train.columns) == list(base.columns) and train["realinv"].dtype == np.float64
    assert train["date"].tolist() == frame["date"].tolist()  # the logged event time, in the data's own format
    assert np.allclose(train["realinv"], frame["realinv"])

    # Text labels for a string target, and a clear error for labels that do not fit an integer target.
    iris = iris_frame()
    iris["code"] = iris["species"].map({"setosa": 0, "versicolor": 1, "virginica": 2})
    iris_file = tmp_path / "iris.parquet"
    iris.to_parquet(iris_file, index=False)
    ilog = tmp_path / "ilog-iris"
    feats = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    log_window(ilog, "iris-fb", iris.head(20), feats, iris["species"].head(20), labels=iris["species"].head(20))
    species = build_feedback_dataset.fn(str(iris_file.with_name("iris.parquet")), str(ilog), "iris-fb", since,
                                        "species", str(tmp_path / "iris-train.parquet"), min_window_rows=10)
    assert species.base_rows == 0 and species.feedback_rows == 20
    assert pd.read_parquet(species.path)["species"].tolist() == iris["species"].head(20).tolist()
    with pytest.raises(MonitoringError, match=r"Cannot use 20 attached label\(s\) as the target 'code' \(int64\).*"
                                              r"'setosa'.*are not numbers"):
        build_feedback_dataset.fn(str(iris_file), str(ilog), "iris-fb", since, "code",
                                  str(tmp_path / "bad.parquet"))
    assert not (tmp_path / "bad.parquet").exists()


def test_boolean_and_categorical_targets_take_labels_of_another_type() -> None:
    from tasks.monitoring_data import cast_labels

    flags = cast_labels(pd.Series(["True", "no", 1, "FALSE"], dtype=object), pd.Series([True, False]), "is_fraud")
    assert flags.tolist() == [True, False, True, False] and flags.dtype == bool
    with pytest.raises(MonitoringError, match=r"\['maybe'\] are not true/false"):
        cast_labels(pd.Series(["maybe"]), pd.Series([True, False]), "is_fraud")
    species = pd.Series(["Adelie", "Gentoo"], dtype="category")
    assert cast_labels(pd.Series(["Gentoo"]), species, "species").tolist() == ["Gentoo"]
    with pytest.raises(MonitoringError, match="are not categories of the target"):
        cast_labels(pd.Series(["Chinstrap"]), species, "species")
    with pytest.raises(MonitoringError, match="are not whole numbers"):
        cast_labels(pd.Series([1.5]), pd.Series([0, 1]), "churned")
