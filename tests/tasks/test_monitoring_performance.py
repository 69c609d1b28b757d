"""Model performance on labelled windows (scikit-learn metrics against the baseline; no server)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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
