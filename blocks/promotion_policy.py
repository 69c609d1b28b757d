"""Promotion policy block: when does a challenger replace the champion."""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import BaseModel, Field

from blocks.task_metrics import FAIRNESS_METRICS, check_metrics, defaults_for, direction


class ResolvedPolicy(BaseModel):
    """A promotion policy with every "by task type" field made concrete (see :meth:`PromotionPolicy.resolved`)."""

    task_type: str
    primary_metric: str
    direction: Literal["maximize", "minimize"]
    min_improvement: float
    guard_metrics: dict[str, float]
    floors: dict[str, float]
    slice_columns: list[str]
    max_slice_gap: float | None
    sensitive_attribute: str | None
    fairness_metric: str | None
    max_disparity: float | None
    min_slice_rows: int
    allow_unscorable_champion: bool
    beat_baseline: bool = True
    min_ml_test_score: float | None = None


class PromotionPolicy(Block):
    """Rules the gate applies before a challenger becomes ``champion``.

    A challenger is promoted only if every rule passes: the primary metric beats the
    champion's (on the same test data) by ``min_improvement``; no guard metric regresses
    by more than allowed; every floor is met; the gap of the primary metric between
    slices is at most ``max_slice_gap``; and the disparity on the sensitive attribute is
    at most ``max_disparity``. A first model (no champion yet) must meet the floors and
    the slice and fairness limits. The gate fails closed: a rule whose metric the challenger
    (or the champion) does not report rejects, and so does a champion that cannot be scored on
    the new test set unless ``allow_unscorable_champion`` is set.

    ``primary_metric``, ``direction``, ``guard_metrics`` and ``floors`` left as None mean "by task
    type" (:func:`blocks.task_metrics.defaults_for`); an empty dict means "none". :meth:`resolved`
    returns the concrete values for a task type and refuses metric names the task cannot produce.

    Attributes:
        primary_metric: Metric that decides (e.g. ``roc_auc``, ``f1_macro``, ``rmse``); None: by task type.
        direction: ``maximize`` or ``minimize`` for the primary metric; None: the metric's own.
        min_improvement: Required improvement of the primary metric over the champion.
        guard_metrics: Metric name to the largest allowed regression against the champion; None: by task type.
        floors: Metric name to its absolute bound (minimum for metrics that grow better,
            maximum for error metrics such as ``rmse``, ``mae``, ``log_loss``); None: by task type.
        slice_columns: Columns whose slices are compared.
        max_slice_gap: Largest allowed gap of the primary metric between slices.
        sensitive_attribute: Column of the protected attribute for fairness.
        fairness_metric: fairlearn metric of classifiers (``demographic_parity_difference``,
            ``equalized_odds_difference``, ``equal_opportunity_difference``); regressors use the
            largest group gap of the primary metric.
        max_disparity: Largest allowed disparity between its groups.
        min_slice_rows: Slices smaller than this are reported but not gated.
        allow_unscorable_champion: Promote on floors, slices and fairness alone when the champion
            cannot score the new test set (its columns or labels differ); the reason says so.
        beat_baseline: The challenger's primary metric must be strictly better than the simplest
            model's (class prior / training mean) on the same test rows.
        min_ml_test_score: Lowest ML Test Score (Breck et al. 2017, the minimum of the section totals, out
            of 7) of the model's pipeline, as last recorded by the ``ml-test-score`` flow on the registered
            model (tag ``mlops.ml_test_score``); None: not required. No recorded score rejects.

    Examples:
        >>> from blocks.promotion_policy import PromotionPolicy
        >>> policy = PromotionPolicy.load("BLOCK_NAME")  # doctest: +SKIP
        >>> PromotionPolicy(primary_metric="f1", min_improvement=0.01).save(
        ...     "strict-f1")  # doctest: +SKIP
    """

    _block_type_name = "Promotion Policy"
    _block_type_slug = "mlops-promotion-policy"
    _logo_url = "https://github.com/mlflow.png"  # type: ignore[assignment]
    _documentation_url = "https://mlflow.org/docs/latest/model-registry.html"  # type: ignore[assignment]

    primary_metric: str | None = Field(default=None, description="Metric that decides promotion (None: by task "
                                       "type: roc_auc, f1_macro or rmse).")
    direction: Literal["maximize", "minimize"] | None = Field(
        default=None, description="Whether a larger or a smaller primary metric is better (None: the metric's own)."
    )
    min_improvement: float = Field(
        default=0.0, description="Required improvement of the primary metric over the champion."
    )
    guard_metrics: dict[str, float] | None = Field(
        default=None,
        description="Metric name -> largest allowed regression against the champion (None: by task type).",
    )
    floors: dict[str, float] | None = Field(
        default=None,
        description="Metric name -> absolute bound every promoted model meets (a maximum for error metrics; "
        "None: by task type).",
    )
    slice_columns: list[str] = Field(default_factory=list, description="Columns whose slices are compared.")
    max_slice_gap: float | None = Field(
        default=None, description="Largest allowed gap of the primary metric between slices."
    )
    sensitive_attribute: str | None = Field(default=None, description="Protected attribute for fairness.")
    fairness_metric: Literal["demographic_parity_difference", "equalized_odds_difference",
                             "equal_opportunity_difference"] | None = Field(
        default=None, description="fairlearn metric of classifiers (None: demographic_parity_difference); "
        "regressors use the largest group gap of the primary metric.")
    max_disparity: float | None = Field(
        default=None, description="Largest allowed disparity between the sensitive attribute's groups."
    )
    min_slice_rows: int = Field(default=30, description="Slices with fewer rows are reported but not gated.")
    allow_unscorable_champion: bool = Field(
        default=False, description="Promote on floors, slices and fairness alone when the champion cannot score the "
        "new test set (its columns or labels differ). Off: such a challenger is rejected.")
    beat_baseline: bool = Field(
        default=True, description="Reject a challenger whose primary metric is not strictly better than the "
        "simplest model's (DummyClassifier prior / DummyRegressor mean) on the same test rows.")
    min_ml_test_score: float | None = Field(
        default=None, ge=0.0, le=7.0, description="Lowest ML Test Score (0-7, the minimum of the four section "
        "totals) of the pipeline, as last recorded by the ml-test-score flow; None: not required. A model "
        "with no recorded score is rejected.")

    def resolved(self, task_type: str) -> ResolvedPolicy:
        """Return the concrete rules for a task type, refusing metrics the task cannot produce.

        Args:
            task_type: ``binary``, ``multiclass`` or ``regression``.

        Returns:
            The :class:`ResolvedPolicy`.

        Raises:
            ValueError: Naming the policy field, the metric and the valid metrics.

        Examples:
            >>> PromotionPolicy().resolved("multiclass").primary_metric
            'f1_macro'
            >>> PromotionPolicy(floors={"r2": 0.3}).resolved("regression").floors
            {'r2': 0.3}
        """
        defaults = defaults_for(task_type)
        primary = self.primary_metric or defaults.primary_metric
        floors = dict(defaults.floors if self.floors is None else self.floors)
        guards = dict(defaults.guard_metrics if self.guard_metrics is None else self.guard_metrics)
        check_metrics(task_type, [primary], "PromotionPolicy.primary_metric")
        check_metrics(task_type, floors, "PromotionPolicy.floors")
        check_metrics(task_type, guards, "PromotionPolicy.guard_metrics")
        if self.fairness_metric is not None and self.fairness_metric not in FAIRNESS_METRICS:
            raise ValueError(f"PromotionPolicy.fairness_metric names {self.fairness_metric!r}; use one of "
                             f"{list(FAIRNESS_METRICS)}.")
        if task_type == "regression" and self.fairness_metric is not None:
            raise ValueError(f"PromotionPolicy.fairness_metric {self.fairness_metric!r} is a classification metric; "
                             "a regression model's disparity is the largest group gap of the primary metric: "
                             "leave fairness_metric empty.")
        way = self.direction or ("minimize" if direction(primary) == "min" else "maximize")
        return ResolvedPolicy(
            task_type=task_type, primary_metric=primary, direction=way, min_improvement=self.min_improvement,
            guard_metrics=guards, floors=floors, slice_columns=list(self.slice_columns),
            max_slice_gap=self.max_slice_gap, sensitive_attribute=self.sensitive_attribute,
            fairness_metric=None if task_type == "regression" else (self.fairness_metric
                                                                    or "demographic_parity_difference"),
            max_disparity=self.max_disparity, min_slice_rows=self.min_slice_rows,
            allow_unscorable_champion=self.allow_unscorable_champion, beat_baseline=self.beat_baseline,
            min_ml_test_score=self.min_ml_test_score)
