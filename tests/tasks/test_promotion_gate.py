"""The promotion gate: it fails closed (issue 7 items 5 and 8) and rejects a worse challenger with reasons."""

from __future__ import annotations

import json

from blocks.promotion_policy import PromotionPolicy
from tasks.model_evaluation import Evaluation
from tasks.promotion_gate import gate_challenger


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
