"""Evaluation of a trained model on real data: metrics, slices, fairness and plots."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from tasks.model_evaluation import evaluate_model
from tasks.sklearn_training import (
    TrainingSpec,
    split_dataset,
    train_trial,
)


def _trained(sample_dir: Path, tmp_path: Path, estimator: str, params: dict) -> tuple[str, object]:
    spec = TrainingSpec(estimator=estimator, params=params, search_space={})
    split = split_dataset.fn(str(sample_dir / "day0.parquet"), "churned", spec, str(tmp_path / "splits"))
    trial = train_trial.fn(split, "churned", spec, params, 0, str(tmp_path / "models"))
    return trial.model_path, split


def test_evaluation_slices_fairness_and_plots(sample_dir: Path, tmp_path: Path) -> None:
    model, split = _trained(sample_dir, tmp_path, "sklearn.ensemble.RandomForestClassifier",
                            {"n_estimators": 30, "max_depth": 6})
    evaluation = evaluate_model.fn(model, split.test, "churned", "classification", split.features,
                                   ["contract"], "gender", "roc_auc", 30, str(tmp_path / "plots"))
    assert 0.6 < evaluation.metrics["roc_auc"] <= 1.0
    assert set(evaluation.slice_metrics["contract"]) == {"month-to-month", "one-year", "two-year"}
    assert evaluation.slice_gaps["contract"] >= 0
    assert set(evaluation.fairness["groups"]) == {"female", "male"}
    names = {Path(p).name for p in evaluation.plots}
    assert {"confusion_matrix.png", "roc_curve.png", "pr_curve.png", "permutation_importance.png"} <= names
    for plot in evaluation.plots:  # large enough to read: 1200 x 900 px
        with Image.open(plot) as image:
            assert image.size == (1200, 900), (plot, image.size)
    # Permutation importance on the ORIGINAL columns, not the encoder's num__ / cat__ names.
    raw = set(pd.read_parquet(split.test).columns)
    assert set(evaluation.importance) and set(evaluation.importance) <= raw
    assert not any("__" in name for name in evaluation.importance)
    matrix = evaluation.plot_data.confusion
    assert all(abs(sum(row) - 1.0) < 1e-3 for row in matrix)  # normalised by true label


def test_linear_model_plots_signed_coefficients_with_column_names(sample_dir: Path, tmp_path: Path) -> None:
    model, split = _trained(sample_dir, tmp_path, "sklearn.linear_model.LogisticRegression", {"C": 1.0})
    evaluation = evaluate_model.fn(model, split.test, "churned", "binary", split.features, plot_dir=str(tmp_path),
                                   classes=[0, 1], title="churn v3, data abc1234")
    coefficients = evaluation.plot_data.coefficients
    assert any(v < 0 for v in coefficients.values()) and any(v > 0 for v in coefficients.values())
    assert not any(name.startswith(("num__", "cat__")) for name in coefficients)
    assert "coefficients.png" in {Path(p).name for p in evaluation.plots}


def test_regression_plots_predicted_against_actual(tmp_path: Path) -> None:
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame
    data = tmp_path / "diabetes.parquet"
    frame.to_parquet(data)
    spec = TrainingSpec(estimator="sklearn.linear_model.Ridge", params={"alpha": 1.0}, search_space={},
                        task_type="regression")
    split = split_dataset.fn(str(data), "target", spec, str(tmp_path / "splits"))
    trial = train_trial.fn(split, "target", spec, {"alpha": 1.0}, 0, str(tmp_path / "models"))
    evaluation = evaluate_model.fn(trial.model_path, split.test, "target", "regression", split.features,
                                   plot_dir=str(tmp_path / "plots"))
    names = {Path(p).name for p in evaluation.plots}
    assert {"predicted_vs_actual.png", "residuals.png", "permutation_importance.png"} <= names
    assert set(evaluation.importance) <= set(frame.columns)
