"""The gate fails closed, and fairness with fairlearn for any label type (issue 7 items 5 and 8)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect import flow

from blocks.promotion_policy import PromotionPolicy
from tasks.model_evaluation import Evaluation
from tasks.model_scoring import fairness_report
from tasks.promotion_gate import gate_challenger
from tasks.sklearn_training import TrainingSpec, expand_trials, split_dataset, submit_trials, trial_model_path


def _eval(task_type: str, **metrics: float) -> Evaluation:
    return Evaluation(model="challenger", rows=100, metrics=metrics, task_type=task_type, test_digest="abc")


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
                                "primary_metric": "roc_auc", "task_type": "binary"}
    assert json.loads(verdict.tags()["mlops.gate.compared"])["champion_scored"] is False
    allowed = gate_challenger.fn(challenger, None, PromotionPolicy(allow_unscorable_champion=True), "7", why)
    assert allowed.promote and any("allowed by policy allow_unscorable_champion" in r for r in allowed.passed)
    assert allowed.stated_reasons == allowed.passed and len(allowed.passed) == 2


def test_reasons_are_never_empty_and_a_promotion_lists_every_rule() -> None:
    lenient = PromotionPolicy(floors={}, guard_metrics={}, min_improvement=-1.0)
    verdict = gate_challenger.fn(_eval("regression", rmse=10.0, mae=8.0, r2=0.3), None, lenient)
    assert verdict.promote and verdict.stated_reasons == [
        "no rule applies: there is no champion and the policy sets no floors, slice or fairness limits"]
    better = gate_challenger.fn(_eval("regression", rmse=9.0, mae=7.0, r2=0.35),
                                _eval("regression", rmse=10.0, mae=8.0, r2=0.3), PromotionPolicy(), "2")
    assert better.promote and len(better.passed) == 3  # floor r2, rmse vs champion (lower is better), guard r2
    assert any(r.startswith("rmse: challenger 9.0000 vs champion v2 10.0000 (change +1.0000") for r in better.passed)


def test_policy_naming_a_metric_the_task_lacks_rejects_in_the_gate_too() -> None:
    verdict = gate_challenger.fn(_eval("multiclass", f1_macro=0.9), None, PromotionPolicy(primary_metric="roc_auc"))
    assert not verdict.promote and "PromotionPolicy.primary_metric names 'roc_auc'" in verdict.reasons[0]


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
                            fairness={"attribute": "group", **report})
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


def test_resume_refits_only_the_trial_whose_model_file_is_missing(sample_dir: Path, tmp_path: Path) -> None:
    """Issue 8 item 5: one missing model file used to refit every trial."""
    spec = TrainingSpec(search_space={"C": [0.1, 1.0, 10.0]}).resolved("binary")

    @flow
    def tune() -> tuple[list[str], list[str]]:
        split = split_dataset(str(sample_dir / "day0.parquet"), "churned", spec, str(tmp_path / "splits"))
        futures = submit_trials(split, "churned", spec, expand_trials(spec), str(tmp_path / "m"))
        return [f.wait() or f.state.name for f in futures], [f.result().model_path for f in futures]

    first, paths = tune()
    assert first == ["Completed", "Completed", "Completed"]
    assert tune()[0] == ["Cached", "Cached", "Cached"]
    Path(paths[1]).unlink()  # what a run killed mid-training leaves behind: one trial's model missing
    third, again = tune()
    assert third == ["Cached", "Completed", "Cached"]
    assert again == paths and Path(paths[1]).is_file()
    split = split_dataset.fn(str(sample_dir / "day0.parquet"), "churned", spec, str(tmp_path / "splits2"))
    assert trial_model_path(split, "churned", spec, {"max_iter": 1000, "C": 0.1}, "m").name.endswith(".joblib")
    assert pd.read_parquet(split.train).shape[0] > 0
