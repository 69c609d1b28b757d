"""The gate: compare a challenger with the champion under a promotion policy."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from blocks.promotion_policy import PromotionPolicy
from tasks.logs import run_logger
from tasks.model_evaluation import Evaluation
from tasks.sklearn_training import LOWER_IS_BETTER


class GateVerdict(BaseModel):
    """The gate's decision with every reason, passed or failed."""

    promote: bool
    reasons: list[str]
    passed: list[str]
    champion_version: str | None

    @property
    def label(self) -> str:
        """``promoted`` or ``rejected``."""
        return "promoted" if self.promote else "rejected"


def _better(metric: str, value: float, reference: float, direction: str | None = None) -> float:
    """Return how much better ``value`` is than ``reference`` (negative: worse)."""
    lower = direction == "minimize" if direction else metric in LOWER_IS_BETTER
    return reference - value if lower else value - reference


@task(name="gate-challenger", cache_policy=NO_CACHE)
def gate_challenger(challenger: Evaluation, champion: Evaluation | None, policy: PromotionPolicy,
                    champion_version: str | None = None) -> GateVerdict:
    """Decide whether the challenger replaces the champion; a failed gate is a result, not an error.

    Both evaluations must come from the same test data. Rules: the primary metric
    improves by at least ``min_improvement``; guard metrics regress no more than allowed;
    floors are met; the slice gap and the fairness disparity stay within bounds. With no
    champion, only floors, slices and fairness apply.

    Args:
        challenger: The challenger's evaluation.
        champion: The champion's evaluation on the same test data, or None for a first model.
        policy: The promotion policy.
        champion_version: Registry version of the champion, recorded in the verdict.

    Returns:
        The verdict with every reason.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def decide(new: Evaluation, old: Evaluation) -> bool:
        ...     return gate_challenger(new, old, PromotionPolicy(min_improvement=0.005), "3").promote
    """
    failed: list[str] = []
    passed: list[str] = []
    m = challenger.metrics
    primary = policy.primary_metric
    if primary not in m:
        failed.append(f"primary metric {primary!r} is missing from the challenger's metrics {sorted(m)}")
    for metric, bound in policy.floors.items():
        if metric not in m:
            continue
        ok = m[metric] <= bound if metric in LOWER_IS_BETTER else m[metric] >= bound
        (passed if ok else failed).append(
            f"floor {metric}: {m[metric]:.4f} {'meets' if ok else 'misses'} "
            f"{'max' if metric in LOWER_IS_BETTER else 'min'} {bound:.4f}")
    if champion is not None and primary in m and primary in champion.metrics:
        gain = _better(primary, m[primary], champion.metrics[primary], policy.direction)
        ok = gain >= policy.min_improvement
        (passed if ok else failed).append(
            f"{primary}: challenger {m[primary]:.4f} vs champion {champion.metrics[primary]:.4f} "
            f"(change {gain:+.4f}, required >= {policy.min_improvement:+.4f})")
        for metric, allowed in policy.guard_metrics.items():
            if metric in m and metric in champion.metrics:
                change = _better(metric, m[metric], champion.metrics[metric])
                ok = change >= -allowed
                (passed if ok else failed).append(
                    f"guard {metric}: {m[metric]:.4f} vs {champion.metrics[metric]:.4f} "
                    f"(change {change:+.4f}, allowed regression {allowed:.4f})")
    if policy.max_slice_gap is not None:
        for column, gap in challenger.slice_gaps.items():
            ok = gap <= policy.max_slice_gap
            (passed if ok else failed).append(f"slice gap of {primary} across {column}: {gap:.4f} "
                                              f"(max {policy.max_slice_gap:.4f})")
    if policy.max_disparity is not None and challenger.fairness:
        disparity = float(challenger.fairness.get("disparity", 0.0))
        ok = disparity <= policy.max_disparity
        (passed if ok else failed).append(f"fairness disparity on {challenger.fairness.get('attribute')}: "
                                          f"{disparity:.4f} (max {policy.max_disparity:.4f})")
    verdict = GateVerdict(promote=not failed, reasons=failed, passed=passed, champion_version=champion_version)
    run_logger().info("Gate %s: %s", verdict.label, "; ".join(failed or passed))
    return verdict
