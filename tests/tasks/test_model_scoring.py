"""Scoring predictions: binary metrics and fairness by the positive label, one-vs-rest, the regression error gap."""

from __future__ import annotations

import numpy as np
import pytest

from blocks.promotion_policy import PromotionPolicy
from tasks.model_evaluation import Evaluation
from tasks.model_scoring import fairness_report, score_predictions
from tasks.promotion_gate import gate_challenger


def test_fairness_binary_string_labels_use_the_positive_label() -> None:
    """Issue 7: fairness used `prediction == 1`, meaningless for string labels."""
    y = np.array(["yes", "yes", "no", "no", "yes", "yes", "no", "no"])
    pred = np.array(["yes", "yes", "yes", "no", "no", "no", "no", "no"])
    group = np.array(["a", "a", "a", "a", "b", "b", "b", "b"])
    report = fairness_report("binary", y, pred, group, "demographic_parity_difference", ["no", "yes"], "yes")
    assert report["disparity"] == pytest.approx(0.75)  # selection rate of "yes": a 3/4, b 0/4
    assert report["groups"]["a"]["selection_rate[yes]"] == 0.75
    odds = fairness_report("binary", y, pred, group, "equal_opportunity_difference", ["no", "yes"], "yes")
    assert odds["disparity"] == pytest.approx(1.0) and odds["metric"] == "equal_opportunity_difference"
    evaluation = Evaluation(model="challenger", rows=8, metrics={"roc_auc": 0.9}, task_type="binary",
                            fairness={"attribute": "group", **report}, baseline={"roc_auc": 0.5})
    verdict = gate_challenger.fn(evaluation, None, PromotionPolicy(floors={}, sensitive_attribute="group",
                                                                   max_disparity=0.2))
    assert not verdict.promote
    assert verdict.reasons == ["fairness demographic_parity_difference on group: 0.7500 (max 0.2000)"]


def test_fairness_multiclass_one_vs_rest_and_regression_error_gap() -> None:
    y = np.array(["x", "y", "z", "x", "y", "z"])
    pred = np.array(["x", "y", "z", "x", "x", "x"])
    group = np.array(["g1", "g1", "g1", "g2", "g2", "g2"])
    report = fairness_report("multiclass", y, pred, group, None, ["x", "y", "z"])
    assert set(report["per_class"]) == {"x", "y", "z"} and "worst class" in report["metric"]
    assert report["disparity"] == pytest.approx(max(report["per_class"].values())) == pytest.approx(2 / 3)
    reg = fairness_report("regression", [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 5.0, 6.0], ["a", "a", "b", "b"],
                          error_metric="mae")
    assert reg["metric"] == "mae_group_gap" and reg["disparity"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="classification metric"):
        PromotionPolicy(fairness_metric="equalized_odds_difference").resolved("regression")
    missing = Evaluation(model="challenger", rows=8, metrics={"rmse": 1.0, "r2": 0.5}, task_type="regression")
    verdict = gate_challenger.fn(missing, None, PromotionPolicy(sensitive_attribute="region", max_disparity=0.1))
    assert not verdict.promote and "fairness on region: disparity not measured" in verdict.reasons[0]


def test_binary_metrics_use_the_positive_label_whatever_its_type() -> None:
    y = np.array(["benign", "malignant", "malignant", "benign"])
    pred = np.array(["benign", "malignant", "benign", "benign"])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    out = score_predictions("binary", y, pred, proba, ["benign", "malignant"], "malignant")
    assert out["recall"] == 0.5 and out["precision"] == 1.0 and out["roc_auc"] == 1.0
    flipped = score_predictions("binary", y, pred, proba, ["benign", "malignant"], "benign")
    assert flipped["recall"] == 1.0 and flipped["precision"] == pytest.approx(2 / 3)
    # One class present in a slice: ROC AUC is undefined and left out, never guessed.
    assert "roc_auc" not in score_predictions("binary", y[:1], pred[:1], proba[:1], ["benign", "malignant"],
                                              "malignant")
