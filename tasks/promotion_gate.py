"""The gate: compare a challenger with the champion under a promotion policy; it fails closed.

Every rule either passes or fails with a reason; none is skipped. A rule whose metric the
challenger (or, for comparisons, the champion) does not report is a rejection naming the metric. A
champion that cannot be scored on the new test set is a rejection unless the policy allows it
(``allow_unscorable_champion``), and then the reason says so. A promotion lists every rule it passed.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from blocks.promotion_policy import PromotionPolicy, ResolvedPolicy
from blocks.task_metrics import LOWER_IS_BETTER, METRICS
from tasks.logs import run_logger
from tasks.model_evaluation import Evaluation

#: Run / version tag: JSON of exactly what the gate compared (champion version, test rows, metrics).
TAG_GATE_COMPARED = "mlops.gate.compared"
#: Version tag: JSON of the baseline rule (baseline model, primary metric, challenger vs baseline, beaten).
TAG_GATE_BASELINE = "mlops.gate.baseline"
#: Version tag: NaN/inf values among the challenger's test predictions (``0``: numerically sound).
TAG_GATE_NON_FINITE = "mlops.gate.non_finite_predictions"


class GateVerdict(BaseModel):
    """The gate's decision with every reason, passed or failed, and what it compared."""

    promote: bool
    reasons: list[str]
    passed: list[str]
    champion_version: str | None
    compared: dict[str, Any] = {}

    @property
    def label(self) -> str:
        """``promoted`` or ``rejected``."""
        return "promoted" if self.promote else "rejected"

    @property
    def stated_reasons(self) -> list[str]:
        """The reasons of the decision: every failed rule of a rejection, every passed rule of a promotion."""
        return self.reasons if not self.promote else self.passed

    def tags(self) -> dict[str, str]:
        """Return the ``mlops.gate.compared`` tag, and the baseline and NaN/inf checks' tags when they ran."""
        tags = {TAG_GATE_COMPARED: json.dumps(self.compared, sort_keys=True, default=str)[:5000]}
        if self.compared.get("baseline") is not None:
            tags[TAG_GATE_BASELINE] = json.dumps(self.compared["baseline"], sort_keys=True, default=str)[:5000]
        if "non_finite_predictions" in self.compared:
            tags[TAG_GATE_NON_FINITE] = str(self.compared["non_finite_predictions"])
        return tags


def _better(metric: str, value: float, reference: float, direction: str | None = None) -> float:
    """Return how much better ``value`` is than ``reference`` (negative: worse)."""
    lower = direction == "minimize" if direction else metric in LOWER_IS_BETTER
    return reference - value if lower else value - reference


def _guess_task(metrics: dict[str, float]) -> str:
    """Return the task type of an evaluation made without one (hand-made or old), from its metric names."""
    for task_type in ("multiclass", "regression", "binary"):
        if set(metrics) & ({"f1_macro", "roc_auc_ovr"} if task_type == "multiclass" else set(METRICS[task_type])):
            return task_type
    return ""


def _resolve(policy: PromotionPolicy | ResolvedPolicy, task_type: str) -> ResolvedPolicy | str:
    if isinstance(policy, ResolvedPolicy):
        return policy
    if not task_type:
        return "the task type of the challenger is unknown, so the policy's rules cannot be resolved"
    try:
        return policy.resolved(task_type)
    except ValueError as exc:
        return f"the policy cannot be applied: {exc}"


def _baseline_rule(p: ResolvedPolicy, evaluation: Evaluation, failed: list[str], passed: list[str]) -> dict | None:
    """Apply "a simpler model is not better": the primary metric must beat the baseline's (fails closed)."""
    m, base, primary = evaluation.metrics, evaluation.baseline, p.primary_metric
    if evaluation.non_finite:
        failed.append(f"numerical stability: the challenger predicts {evaluation.non_finite} NaN/inf values on "
                      f"{evaluation.rows} test rows")
    if not p.beat_baseline:
        return None
    if base is None or primary not in base:
        failed.append(f"baseline: the {primary!r} of the simplest model (class prior / mean) was not measured on "
                      "this test set, so the challenger cannot be shown to beat it")
        return {"model": evaluation.baseline_model, "metric": primary, "beaten": False}
    if primary not in m:
        return {"model": evaluation.baseline_model, "metric": primary, "baseline": base[primary], "beaten": False}
    gain = _better(primary, m[primary], base[primary], p.direction)
    ok = gain > 0
    (passed if ok else failed).append(f"baseline {primary}: challenger {m[primary]:.4f} vs "
                                      f"{evaluation.baseline_model or 'baseline'} {base[primary]:.4f} (change "
                                      f"{gain:+.4f}, required > 0)")
    return {"model": evaluation.baseline_model, "metric": primary, "baseline": base[primary],
            "challenger": m[primary], "beaten": ok}


def _score_rule(p: ResolvedPolicy, score: float | None, failed: list[str], passed: list[str]) -> None:
    """Require the pipeline's recorded ML Test Score to meet the policy's minimum (fails closed without one)."""
    if p.min_ml_test_score is None:
        return
    if score is None:
        failed.append(f"ML Test Score: the policy requires at least {p.min_ml_test_score:g} but no score is recorded "
                      "for this model's pipeline (run the ml-test-score flow on it first)")
    else:
        ok = score >= p.min_ml_test_score
        (passed if ok else failed).append(f"ML Test Score {score:g} {'meets' if ok else 'is below'} the required "
                                          f"{p.min_ml_test_score:g}")


def _rules(p: ResolvedPolicy, m: dict[str, float], champion: Evaluation | None, unscorable: str | None,
           champion_version: str | None, evaluation: Evaluation, failed: list[str], passed: list[str]) -> None:
    primary = p.primary_metric
    if primary not in m:
        failed.append(f"primary metric {primary!r} is not reported by the challenger (it reports {sorted(m)})")
    for metric, bound in p.floors.items():
        if metric not in m:
            failed.append(f"floor {metric}: the challenger does not report {metric!r} (it reports {sorted(m)})")
            continue
        ok = m[metric] <= bound if metric in LOWER_IS_BETTER else m[metric] >= bound
        (passed if ok else failed).append(f"floor {metric}: {m[metric]:.4f} {'meets' if ok else 'misses'} "
                                          f"{'max' if metric in LOWER_IS_BETTER else 'min'} {bound:.4f}")
    if unscorable is not None:
        if p.allow_unscorable_champion:
            passed.append(f"champion v{champion_version} could not be scored on this test set ({unscorable}); "
                          "allowed by policy allow_unscorable_champion: no comparison with it was made")
        else:
            failed.append(f"champion v{champion_version} could not be scored on this test set ({unscorable}); "
                          "the challenger cannot be compared with it (set allow_unscorable_champion to promote "
                          "on floors, slices and fairness alone)")
    if champion is not None:
        c = champion.metrics
        for metric, what in [(primary, "primary metric"), *((g, "guard") for g in p.guard_metrics)]:
            for who, values in (("challenger", m), ("champion", c)):
                if metric not in values and not (who == "challenger" and metric == primary):
                    failed.append(f"{what} {metric}: the {who} does not report {metric!r} on this test set "
                                  f"(it reports {sorted(values)})")
        if primary in m and primary in c:
            gain = _better(primary, m[primary], c[primary], p.direction)
            ok = gain >= p.min_improvement
            (passed if ok else failed).append(f"{primary}: challenger {m[primary]:.4f} vs champion v{champion_version} "
                                              f"{c[primary]:.4f} (change {gain:+.4f}, required >= "
                                              f"{p.min_improvement:+.4f})")
        for metric, allowed in p.guard_metrics.items():
            if metric in m and metric in c:
                change = _better(metric, m[metric], c[metric])
                ok = change >= -allowed
                (passed if ok else failed).append(f"guard {metric}: {m[metric]:.4f} vs {c[metric]:.4f} "
                                                  f"(change {change:+.4f}, allowed regression {allowed:.4f})")
    if p.max_slice_gap is not None:
        for column in dict.fromkeys([*p.slice_columns, *evaluation.slice_gaps]):
            if column not in evaluation.slice_gaps:
                failed.append(f"slice gap across {column}: not measured (the column is not in the test set)")
                continue
            gap = evaluation.slice_gaps[column]
            ok = gap <= p.max_slice_gap
            (passed if ok else failed).append(f"slice gap of {primary} across {column}: {gap:.4f} "
                                              f"(max {p.max_slice_gap:.4f})")
    if p.max_disparity is not None:
        fairness = evaluation.fairness
        disparity = fairness.get("disparity")
        attribute = p.sensitive_attribute or fairness.get("attribute")
        if not attribute:
            failed.append("fairness: max_disparity is set but the policy names no sensitive_attribute")
        elif disparity is None or not isinstance(disparity, int | float) or disparity != disparity:
            failed.append(f"fairness on {attribute}: disparity not measured (the column is not in the "
                          "test set, or the metric is undefined for its groups)")
        else:
            ok = disparity <= p.max_disparity
            (passed if ok else failed).append(f"fairness {fairness.get('metric', 'disparity')} on {attribute}: "
                                              f"{disparity:.4f} (max {p.max_disparity:.4f})")


@task(name="gate-challenger", cache_policy=NO_CACHE)
def gate_challenger(challenger: Evaluation, champion: Evaluation | None,
                    policy: PromotionPolicy | ResolvedPolicy, champion_version: str | None = None,
                    champion_unscorable: str | None = None, ml_test_score: float | None = None) -> GateVerdict:
    """Decide whether the challenger replaces the champion; a failed gate is a result, not an error.

    Both evaluations must come from the same test data. Rules: the primary metric improves by at
    least ``min_improvement``; guard metrics regress no more than allowed; floors are met; the slice
    gap and the fairness disparity stay within bounds; the primary metric beats the simplest model's
    (``beat_baseline``); no prediction is NaN or infinite; the pipeline's ML Test Score meets
    ``min_ml_test_score`` when the policy sets one. With no champion, the champion rules do not apply.
    Fails closed (see the module docstring).

    Args:
        challenger: The challenger's evaluation (its ``task_type`` resolves the policy's defaults).
        champion: The champion's evaluation on the same test data, or None (no champion, or unscorable).
        policy: The promotion policy (or one already resolved for the task type).
        champion_version: Registry version of the current champion, if there is one.
        champion_unscorable: Why the champion could not be scored on this test set (None: it was, or
            there is no champion).
        ml_test_score: The pipeline's recorded ML Test Score (None: none recorded; rejects only when the
            policy sets ``min_ml_test_score``).

    Returns:
        The verdict with every reason and what was compared.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def decide(new: Evaluation, old: Evaluation) -> bool:
        ...     return gate_challenger(new, old, PromotionPolicy(min_improvement=0.005), "3").promote
    """
    failed: list[str] = []
    passed: list[str] = []
    baseline = None
    resolved = _resolve(policy, challenger.task_type or _guess_task(challenger.metrics))
    if isinstance(resolved, str):
        failed.append(resolved)
    else:
        _rules(resolved, challenger.metrics, champion, champion_unscorable, champion_version, challenger, failed,
               passed)
        baseline = _baseline_rule(resolved, challenger, failed, passed)
        _score_rule(resolved, ml_test_score, failed, passed)
        if not failed and not passed:
            passed.append("no rule applies: there is no champion and the policy sets no floors, slice or fairness "
                          "limits")
    compared = {
        "champion_version": champion_version if champion is not None else None,
        "champion_present": champion_version,
        "champion_scored": champion is not None,
        "champion_unscorable": champion_unscorable,
        "test_rows": challenger.rows, "test_digest": challenger.test_digest,
        "metrics": sorted(set(challenger.metrics) & set(champion.metrics)) if champion else [],
        "primary_metric": None if isinstance(resolved, str) else resolved.primary_metric,
        "task_type": challenger.task_type,
        "baseline": baseline, "non_finite_predictions": challenger.non_finite,
        "ml_test_score": ml_test_score,
    }
    verdict = GateVerdict(promote=not failed, reasons=failed, passed=passed,
                          champion_version=champion_version if champion is not None else None, compared=compared)
    run_logger().info("Gate %s: %s", verdict.label, "; ".join(verdict.stated_reasons))
    return verdict
