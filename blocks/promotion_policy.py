"""Promotion policy block: when does a challenger replace the champion."""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field


class PromotionPolicy(Block):
    """Rules the gate applies before a challenger becomes ``champion``.

    A challenger is promoted only if every rule passes: the primary metric beats the
    champion's (on the same test data) by ``min_improvement``; no guard metric regresses
    by more than allowed; every floor is met; the gap of the primary metric between
    slices is at most ``max_slice_gap``; and the disparity on the sensitive attribute is
    at most ``max_disparity``. A first model (no champion yet) must meet the floors and
    the slice and fairness limits.

    Attributes:
        primary_metric: Metric that decides (e.g. ``roc_auc``, ``rmse``).
        direction: ``maximize`` or ``minimize`` for the primary metric.
        min_improvement: Required improvement of the primary metric over the champion.
        guard_metrics: Metric name to the largest allowed regression against the champion.
        floors: Metric name to its absolute bound (minimum for metrics that grow better,
            maximum for error metrics such as ``rmse``, ``mae``, ``log_loss``).
        slice_columns: Columns whose slices are compared.
        max_slice_gap: Largest allowed gap of the primary metric between slices.
        sensitive_attribute: Column of the protected attribute for fairness.
        max_disparity: Largest allowed disparity between its groups.
        min_slice_rows: Slices smaller than this are reported but not gated.

    Examples:
        >>> from blocks.promotion_policy import PromotionPolicy
        >>> policy = PromotionPolicy.load("default-promotion")  # doctest: +SKIP
        >>> PromotionPolicy(primary_metric="f1", min_improvement=0.01).save(
        ...     "strict-f1")  # doctest: +SKIP
    """

    _block_type_name = "Promotion Policy"
    _block_type_slug = "mlops-promotion-policy"
    _documentation_url = "https://mlflow.org/docs/latest/model-registry.html"  # type: ignore[assignment]

    primary_metric: str = Field(default="roc_auc", description="Metric that decides promotion.")
    direction: Literal["maximize", "minimize"] = Field(
        default="maximize", description="Whether a larger or a smaller primary metric is better."
    )
    min_improvement: float = Field(
        default=0.0, description="Required improvement of the primary metric over the champion."
    )
    guard_metrics: dict[str, float] = Field(
        default_factory=lambda: {"accuracy": 0.02},
        description="Metric name -> largest allowed regression against the champion.",
    )
    floors: dict[str, float] = Field(
        default_factory=lambda: {"roc_auc": 0.6},
        description="Metric name -> absolute bound every promoted model meets (a maximum for error metrics).",
    )
    slice_columns: list[str] = Field(default_factory=list, description="Columns whose slices are compared.")
    max_slice_gap: float | None = Field(
        default=None, description="Largest allowed gap of the primary metric between slices."
    )
    sensitive_attribute: str | None = Field(default=None, description="Protected attribute for fairness.")
    max_disparity: float | None = Field(
        default=None, description="Largest allowed disparity between the sensitive attribute's groups."
    )
    min_slice_rows: int = Field(default=30, description="Slices with fewer rows are reported but not gated.")
