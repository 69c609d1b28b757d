"""The promotion gate: it fails closed (issue 7 items 5 and 8) and rejects a worse challenger with reasons.

Also the baseline rule (ML Test Score, Model 5: a simpler model is not better) and NaN/inf predictions
failing closed (Monitor 5), with real scikit-learn models on its bundled data sets.
"""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from blocks.promotion_policy import PromotionPolicy
from tasks.model_evaluation import Evaluation, evaluate_champion, evaluate_model
from tasks.model_scoring import baseline_metrics, count_non_finite
from tasks.promotion_gate import gate_challenger

pytestmark = pytest.mark.no_server


#: What the simplest model scores (class prior / mean): every hand-made challenger here beats it.
BASELINE = {"roc_auc": 0.5, "roc_auc_ovr": 0.5, "f1_macro": 0.1, "accuracy": 0.2, "rmse": 100.0, "mae": 100.0,
            "r2": 0.0}


def _eval(task_type: str, **metrics: float) -> Evaluation:
    return Evaluation(model="challenger", rows=100, metrics=metrics, task_type=task_type, test_digest="abc",
                      baseline=BASELINE)


def test_a_floor_on_a_metric_the_model_does_not_report_rejects() -> None:
    """Issue 7: a floor on a missing metric was skipped; macro-F1 0.16 became champion with an empty reason."""
    weak = _eval("multiclass", f1_macro=0.16, accuracy=0.3)  # no roc_auc_ovr: a model without probabilities
    policy = PromotionPolicy(floors={"roc_auc_ovr": 0.6})
    verdict = gate_challenger.fn(weak, None, policy)
    assert not verdict.promote
    assert verdict.reasons == ["floor roc_auc_ovr: the challenger does not report 'roc_auc_ovr' (it reports "
                               "['accuracy', 'f1_macro'])"]
    # With defaults the first multiclass model meets the f1_macro floor or is rejected, with that reason.
    default = gate_challenger.fn(weak, None, PromotionPolicy())
    assert not default.promote and default.reasons == ["floor f1_macro: 0.1600 misses min 0.5000"]


def test_a_guard_or_primary_metric_the_champion_lacks_rejects() -> None:
    challenger = _eval("binary", roc_auc=0.9, accuracy=0.85)
    champion = _eval("binary", roc_auc=0.8)
    verdict = gate_challenger.fn(challenger, champion, PromotionPolicy(), "4")
    assert not verdict.promote
    assert "guard accuracy: the champion does not report 'accuracy' on this test set (it reports ['roc_auc'])" \
        in verdict.reasons
    assert verdict.compared["champion_version"] == "4" and verdict.compared["metrics"] == ["roc_auc"]
    no_primary = gate_challenger.fn(_eval("binary", accuracy=0.9), None, PromotionPolicy(floors={}))
    assert not no_primary.promote and "primary metric 'roc_auc' is not reported" in no_primary.reasons[0]


def test_unscorable_champion_is_a_rejection_unless_the_policy_allows_it() -> None:
    """Issue 7: the challenger was compared with an empty record and promoted; tags named the champion."""
    challenger = _eval("binary", roc_auc=0.9, accuracy=0.85)
    why = "The champion model needs columns ['tenure'] that the test set lacks"
    verdict = gate_challenger.fn(challenger, None, PromotionPolicy(), "7", why)
    assert not verdict.promote and verdict.champion_version is None
    assert any("champion v7 could not be scored" in r and "allow_unscorable_champion" in r for r in verdict.reasons)
    assert verdict.compared == {"champion_version": None, "champion_present": "7", "champion_scored": False,
                                "champion_unscorable": why, "test_rows": 100, "test_digest": "abc", "metrics": [],
                                "primary_metric": "roc_auc", "task_type": "binary", "ml_test_score": None,
                                "non_finite_predictions": 0, "baseline": {
                                    "model": "", "metric": "roc_auc", "baseline": 0.5, "challenger": 0.9,
                                    "beaten": True}}
    assert json.loads(verdict.tags()["mlops.gate.compared"])["champion_scored"] is False
    allowed = gate_challenger.fn(challenger, None, PromotionPolicy(allow_unscorable_champion=True), "7", why)
    assert allowed.promote and any("allowed by policy allow_unscorable_champion" in r for r in allowed.passed)
    assert allowed.stated_reasons == allowed.passed and len(allowed.passed) == 3  # floor, champion, baseline


def test_reasons_are_never_empty_and_a_promotion_lists_every_rule() -> None:
    lenient = PromotionPolicy(floors={}, guard_metrics={}, min_improvement=-1.0, beat_baseline=False)
    verdict = gate_challenger.fn(_eval("regression", rmse=10.0, mae=8.0, r2=0.3), None, lenient)
    assert verdict.promote and verdict.stated_reasons == [
        "no rule applies: there is no champion and the policy sets no floors, slice or fairness limits"]
    better = gate_challenger.fn(_eval("regression", rmse=9.0, mae=7.0, r2=0.35),
                                _eval("regression", rmse=10.0, mae=8.0, r2=0.3), PromotionPolicy(), "2")
    assert better.promote and len(better.passed) == 4  # floor r2, rmse vs champion (lower is better), guard r2,
    # and rmse vs the baseline
    assert any(r.startswith("rmse: challenger 9.0000 vs champion v2 10.0000 (change +1.0000") for r in better.passed)


def test_policy_naming_a_metric_the_task_lacks_rejects_in_the_gate_too() -> None:
    verdict = gate_challenger.fn(_eval("multiclass", f1_macro=0.9), None, PromotionPolicy(primary_metric="roc_auc"))
    assert not verdict.promote and "PromotionPolicy.primary_metric names 'roc_auc'" in verdict.reasons[0]


def test_gate_rejects_worse_challenger_with_reasons() -> None:
    champion = Evaluation(model="champion", rows=100, metrics={"roc_auc": 0.80, "accuracy": 0.75})
    worse = Evaluation(model="challenger", rows=100, metrics={"roc_auc": 0.70, "accuracy": 0.70})
    verdict = gate_challenger.fn(worse, champion, PromotionPolicy(), "1")
    assert not verdict.promote
    assert any("roc_auc" in r for r in verdict.reasons) and any("guard accuracy" in r for r in verdict.reasons)
    better = Evaluation(model="challenger", rows=100, metrics={"roc_auc": 0.82, "accuracy": 0.76},
                        baseline={"roc_auc": 0.5, "accuracy": 0.6})
    assert gate_challenger.fn(better, champion, PromotionPolicy(), "1").promote


def test_gate_floors_slices_and_fairness_for_a_first_model() -> None:
    policy = PromotionPolicy(floors={"roc_auc": 0.75}, max_slice_gap=0.1, max_disparity=0.05)
    evaluation = Evaluation(model="challenger", rows=100, metrics={"roc_auc": 0.7}, slice_gaps={"region": 0.2},
                            fairness={"attribute": "gender", "disparity": 0.3}, baseline={"roc_auc": 0.5})
    verdict = gate_challenger.fn(evaluation, None, policy)
    assert not verdict.promote
    assert len(verdict.reasons) == 3


def _split(frame: pd.DataFrame, tmp_path: Path) -> tuple[str, str, pd.DataFrame]:
    train, test = frame.iloc[::2].reset_index(drop=True), frame.iloc[1::2].reset_index(drop=True)
    train.to_parquet(tmp_path / "train.parquet")
    test.to_parquet(tmp_path / "test.parquet")
    return str(tmp_path / "train.parquet"), str(tmp_path / "test.parquet"), train


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    data = load_breast_cancer(as_frame=True)
    return data.frame.rename(columns=lambda c: c.replace(" ", "_"))


@pytest.fixture(scope="module")
def diabetes() -> pd.DataFrame:
    return load_diabetes(as_frame=True).frame


def _save(model: object, path: Path) -> str:
    joblib.dump(model, path)
    return str(path)


def _evaluate(model_path: str, test: str, train: str | None, features: list[str], task_type: str,
              target: str = "target", classes: list | None = None):
    return evaluate_model.fn(model_path, test, target, task_type, features, classes=classes, train_file=train)


def test_a_model_no_better_than_the_dummy_baseline_is_rejected(cancer: pd.DataFrame, tmp_path: Path) -> None:
    train_file, test_file, train = _split(cancer, tmp_path)
    features = [c for c in cancer.columns if c != "target"]
    dummy = DummyClassifier(strategy="prior").fit(train[features], train["target"])
    weak = _evaluate(_save(dummy, tmp_path / "dummy.joblib"), test_file, train_file, features, "binary", classes=[0, 1])
    assert weak.baseline is not None and weak.baseline["roc_auc"] == pytest.approx(0.5)
    assert weak.baseline_model == "DummyClassifier(strategy='prior') fitted on the training split"
    lenient = PromotionPolicy(floors={}, guard_metrics={}, min_improvement=-1.0)
    verdict = gate_challenger.fn(weak, None, lenient)
    assert not verdict.promote
    assert verdict.reasons == [f"baseline roc_auc: challenger {weak.metrics['roc_auc']:.4f} vs DummyClassifier"
                               "(strategy='prior') fitted on the training split 0.5000 (change +0.0000, required > 0)"]
    recorded = json.loads(verdict.tags()["mlops.gate.baseline"])
    assert recorded["beaten"] is False and recorded["metric"] == "roc_auc"
    # The same rule with the rule switched off promotes it ("no rule applies"), and a real model beats the baseline.
    assert gate_challenger.fn(weak, None, lenient.model_copy(update={"beat_baseline": False})).promote
    fitted = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(train[features], train["target"])
    good = _evaluate(_save(fitted, tmp_path / "lr.joblib"), test_file, train_file, features, "binary", classes=[0, 1])
    passed = gate_challenger.fn(good, None, lenient)
    assert passed.promote and any(r.startswith("baseline roc_auc: challenger 0.9") for r in passed.passed)
    assert json.loads(passed.tags()["mlops.gate.baseline"])["beaten"] is True
    assert passed.tags()["mlops.gate.non_finite_predictions"] == "0"


def test_a_regressor_must_beat_the_training_mean(diabetes: pd.DataFrame, tmp_path: Path) -> None:
    train_file, test_file, train = _split(diabetes, tmp_path)
    features = [c for c in diabetes.columns if c != "target"]
    fitted = LinearRegression().fit(train[features], train["target"])
    evaluation = _evaluate(_save(fitted, tmp_path / "lr.joblib"), test_file, train_file, features, "regression")
    assert evaluation.baseline["r2"] < 0.0 < evaluation.metrics["r2"]  # the train mean, scored on the test rows
    assert evaluation.baseline["rmse"] > evaluation.metrics["rmse"]
    verdict = gate_challenger.fn(evaluation, None, PromotionPolicy(floors={}))
    assert verdict.promote and any(r.startswith("baseline rmse: ") for r in verdict.passed)
    # No training split given: the baseline is fitted on the test labels (a stronger baseline: r2 exactly 0).
    stronger = _evaluate(_save(fitted, tmp_path / "lr.joblib"), test_file, None, features, "regression")
    assert stronger.baseline["r2"] == pytest.approx(0.0) and "test labels" in stronger.baseline_model


def test_a_hand_made_evaluation_without_a_baseline_fails_closed() -> None:
    evaluation = Evaluation(model="challenger", rows=10, metrics={"roc_auc": 0.9}, task_type="binary")
    verdict = gate_challenger.fn(evaluation, None, PromotionPolicy(floors={}))
    assert not verdict.promote and "baseline: the 'roc_auc' of the simplest model" in verdict.reasons[0]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_nan_or_inf_predictions_fail_closed(diabetes: pd.DataFrame, cancer: pd.DataFrame, tmp_path: Path) -> None:
    train_file, test_file, train = _split(diabetes, tmp_path)
    features = [c for c in diabetes.columns if c != "target"]
    broken = LinearRegression().fit(train[features], train["target"])
    broken.coef_ = broken.coef_.copy()
    broken.coef_[0] = np.inf  # rows with a positive, zero or negative first feature: inf, nan, -inf
    path = _save(broken, tmp_path / "broken.joblib")
    evaluation = _evaluate(path, test_file, train_file, features, "regression")
    assert evaluation.non_finite > 0 and evaluation.metrics == {}
    verdict = gate_challenger.fn(evaluation, None, PromotionPolicy(floors={}))
    assert not verdict.promote
    assert (f"numerical stability: the challenger predicts {evaluation.non_finite} NaN/inf values on "
            f"{evaluation.rows} test rows") in verdict.reasons
    assert verdict.tags()["mlops.gate.non_finite_predictions"] == str(evaluation.non_finite)
    # A champion that predicts NaN cannot be compared with: unscorable (the policy decides), not an empty record.
    champion = evaluate_champion.fn(path, test_file, "target", "regression", features)
    assert champion.evaluation is None and "NaN/inf" in champion.unscorable

    # A classifier whose probabilities are NaN is caught as well.
    (tmp_path / "c").mkdir()
    c_train, c_test, c_frame = _split(cancer, tmp_path / "c")
    c_features = [c for c in cancer.columns if c != "target"]
    clf = LogisticRegression(max_iter=50).fit(c_frame[c_features], c_frame["target"])
    clf.intercept_ = np.array([np.nan])
    nan_clf = _evaluate(_save(clf, tmp_path / "nan.joblib"), c_test, c_train, c_features, "binary", classes=[0, 1])
    assert nan_clf.non_finite >= nan_clf.rows and not gate_challenger.fn(nan_clf, None, PromotionPolicy()).promote


def test_baseline_and_non_finite_helpers() -> None:
    name, metrics = baseline_metrics("multiclass", ["a", "a", "b", "c"], ["a", "b", "c", "a"], ["a", "b", "c"])
    assert name == "DummyClassifier(strategy='prior')" and metrics["accuracy"] == pytest.approx(0.5)
    assert count_non_finite(np.array([1.0, np.nan, np.inf]), None, np.array(["x"])) == 2


def test_a_required_ml_test_score_rejects_below_it_and_fails_closed_without_one() -> None:
    evaluation = Evaluation(model="challenger", rows=10, metrics={"roc_auc": 0.9}, task_type="binary",
                            baseline={"roc_auc": 0.5})
    policy = PromotionPolicy(floors={}, min_ml_test_score=5.5)
    below = gate_challenger.fn(evaluation, None, policy, ml_test_score=5.0)
    assert not below.promote and below.reasons == ["ML Test Score 5 is below the required 5.5"]
    unknown = gate_challenger.fn(evaluation, None, policy)
    assert not unknown.promote and "no score is recorded" in unknown.reasons[0]
    meets = gate_challenger.fn(evaluation, None, policy, ml_test_score=6.0)
    assert meets.promote and "ML Test Score 6 meets the required 5.5" in meets.passed
    assert gate_challenger.fn(evaluation, None, PromotionPolicy(floors={})).promote  # not required: not read
