"""Model performance on labelled windows (scikit-learn metrics against the baseline; no server)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from monitoring_support import diabetes_frame, fit, iris_frame, log_window, penguins_frame, window

from blocks.monitoring_policy import MonitoringPolicy
from tasks.exceptions import MonitoringError
from tasks.monitoring_performance import compute_performance, evaluate_performance

NO_SERVER = pytest.mark.no_server


def write(frame: pd.DataFrame, path: Path) -> str:
    frame.to_parquet(path, index=False)
    return str(path)


def labelled_window(rows: int, accuracy: float, seed: int = 0) -> pd.DataFrame:
    """Labels, predictions right with probability ``accuracy``, and informative scores."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, rows)
    right = rng.random(rows) < accuracy
    prediction = np.where(right, label, 1 - label)
    score = np.clip(0.5 + (prediction - 0.5) * rng.uniform(0.05, 1.0, rows), 0, 1)
    return pd.DataFrame({"label": label, "prediction": prediction, "score": score})


@NO_SERVER
def test_performance_decay_is_detected(tmp_path: Path) -> None:
    baseline = {"roc_auc": 0.90, "accuracy": 0.90, "f1": 0.90}
    good = write(labelled_window(2000, 0.90), tmp_path / "good.parquet")
    worse_frame = labelled_window(2000, 0.70, seed=1)
    worse_frame.loc[:499, "label"] = np.nan  # labels not arrived yet: skipped
    worse = write(worse_frame, tmp_path / "worse.parquet")

    ok = evaluate_performance.fn(good, "label", "prediction", "score", baseline, MonitoringPolicy())
    assert ok.verdict == "ok" and not ok.decayed
    assert ok.metrics["accuracy"] == pytest.approx(0.90, abs=0.03)

    policy = MonitoringPolicy(primary_metric="accuracy")
    decayed = evaluate_performance.fn(worse, "label", "prediction", "score", baseline, policy)
    assert decayed.verdict == "decayed" and decayed.decayed
    assert decayed.labeled_rows == 1500 and decayed.total_rows == 2000
    assert decayed.drop == pytest.approx(0.20, abs=0.04)
    assert {"roc_auc", "accuracy", "f1", "precision", "recall"} <= set(decayed.metrics)
    assert decayed.metrics["roc_auc"] < ok.metrics["roc_auc"]

    few = compute_performance(labelled_window(100, 0.5), "label", "prediction", "score", baseline, policy)
    assert few.verdict == "not_enough_data" and not few.decayed


@NO_SERVER
def test_performance_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    path = write(labelled_window(500, 0.9), tmp_path / "labelled.parquet")
    with pytest.raises(MonitoringError, match="baseline_metrics has no 'roc_auc'"):
        evaluate_performance.fn(path, "label", "prediction", "score", {"accuracy": 0.9}, MonitoringPolicy())
    with pytest.raises(MonitoringError, match="needs score_column"):
        evaluate_performance.fn(path, "label", "prediction", None, {"roc_auc": 0.9}, MonitoringPolicy())
    with pytest.raises(MonitoringError, match=r"lacks column\(s\) \['truth'\]"):
        evaluate_performance.fn(path, "truth", "prediction", "score", {"roc_auc": 0.9}, MonitoringPolicy())


@NO_SERVER
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


@NO_SERVER
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


@NO_SERVER
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


@NO_SERVER
def test_labels_of_another_type_are_compared_as_text() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 400)
    frame = pd.DataFrame({"prediction": truth, "score": np.where(truth == 1, 0.8, 0.2),
                          "label": [str(v) for v in truth]})  # ground truth arrived as "1" / "0"
    summary = compute_performance(frame, "label", "prediction", "score", {"roc_auc": 1.0, "accuracy": 1.0},
                                  MonitoringPolicy(primary_metric="accuracy"), classes=[0, 1], positive_label=1)
    assert summary.metrics["accuracy"] == 1.0 and summary.metrics["roc_auc"] == 1.0 and summary.verdict == "ok"
