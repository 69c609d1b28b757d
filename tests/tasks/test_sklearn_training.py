"""Training, evaluation and the gate on real data with real scikit-learn."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from prefect import flow, unmapped

from blocks.promotion_policy import PromotionPolicy
from tasks.exceptions import TrainingConfigError
from tasks.model_evaluation import Evaluation, evaluate_model
from tasks.promotion_gate import gate_challenger
from tasks.sklearn_training import (
    TrainingSpec,
    expand_trials,
    make_estimator,
    select_best_trial,
    split_dataset,
    train_trial,
)


def test_unknown_estimator_path() -> None:
    with pytest.raises(TrainingConfigError, match="Unknown estimator 'sklearn.nope.Forest'"):
        make_estimator("sklearn.nope.Forest", {})


def test_invalid_params_fail_before_fitting() -> None:
    with pytest.raises(TrainingConfigError, match="Invalid parameters"):
        expand_trials(TrainingSpec(estimator="sklearn.linear_model.LogisticRegression", search_space={"C": [-1.0]}))
    with pytest.raises(TrainingConfigError, match="Invalid parameters"):
        expand_trials(TrainingSpec(params={"not_a_param": 1}, search_space={}))


def test_random_search_draws_n_trials() -> None:
    spec = TrainingSpec(search="random", n_trials=3, search_space={"C": [0.01, 0.1, 1, 10, 100]})
    assert len(expand_trials(spec)) == 3


def test_time_split_puts_newest_rows_in_test(sample_dir: Path, tmp_path: Path) -> None:
    spec = TrainingSpec(split="time")
    split = split_dataset.fn(str(sample_dir / "day0.parquet"), "churned", spec, str(tmp_path))
    train, test = pd.read_parquet(split.train), pd.read_parquet(split.test)
    assert train["event_time"].max() <= test["event_time"].min()
    assert "event_time" not in split.features and "churned" not in split.features


def test_parallel_trials_are_cached_on_the_data_hash(sample_dir: Path, tmp_path: Path) -> None:
    spec = TrainingSpec(search_space={"C": [0.1, 1.0]})

    @flow
    def tune() -> tuple[list, list[str]]:
        split = split_dataset(str(sample_dir / "day0.parquet"), "churned", spec, str(tmp_path / "splits"))
        trials = expand_trials(spec)
        futures = train_trial.map(unmapped(split), "churned", unmapped(spec), trials, [0, 1], str(tmp_path / "m"))
        states = [f.wait() or f.state for f in futures]
        return [f.result() for f in futures], [s.name for s in states]

    first, names1 = tune()
    second, names2 = tune()
    assert names1 == ["Completed", "Completed"]
    assert names2 == ["Cached", "Cached"]
    assert [t.metrics for t in first] == [t.metrics for t in second]
    assert select_best_trial.fn(first, "roc_auc").metrics["roc_auc"] == max(t.metrics["roc_auc"] for t in first)


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


def test_gate_rejects_worse_challenger_with_reasons() -> None:
    champion = Evaluation(model="champion", rows=100, metrics={"roc_auc": 0.80, "accuracy": 0.75})
    worse = Evaluation(model="challenger", rows=100, metrics={"roc_auc": 0.70, "accuracy": 0.70})
    verdict = gate_challenger.fn(worse, champion, PromotionPolicy(), "1")
    assert not verdict.promote
    assert any("roc_auc" in r for r in verdict.reasons) and any("guard accuracy" in r for r in verdict.reasons)
    better = Evaluation(model="challenger", rows=100, metrics={"roc_auc": 0.82, "accuracy": 0.76})
    assert gate_challenger.fn(better, champion, PromotionPolicy(), "1").promote


def test_gate_floors_slices_and_fairness_for_a_first_model() -> None:
    policy = PromotionPolicy(floors={"roc_auc": 0.75}, max_slice_gap=0.1, max_disparity=0.05)
    evaluation = Evaluation(model="challenger", rows=100, metrics={"roc_auc": 0.7}, slice_gaps={"region": 0.2},
                            fairness={"attribute": "gender", "disparity": 0.3})
    verdict = gate_challenger.fn(evaluation, None, policy)
    assert not verdict.promote
    assert len(verdict.reasons) == 3
