"""Monitoring policy block: when is a data window drifted, broken or decayed."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, model_validator

from blocks.task_metrics import LOWER_IS_BETTER, METRICS, check_metrics, defaults_for

#: Drift methods (Evidently 0.7 stattest names) that return a p-value: drift when score <= threshold.
P_VALUE_METHODS = frozenset(
    {"ks", "chisquare", "z", "anderson", "cramer_von_mises", "es", "fisher_exact", "g_test", "mannw",
     "t_test", "empirical_mmd", "TVD"}
)
#: Drift methods that return a distance: drift when score >= threshold.
DISTANCE_METHODS = frozenset(
    {"wasserstein", "psi", "jensenshannon", "kl_div", "hellinger", "ed"}
)
#: Every drift method a policy may name.
DRIFT_METHODS = P_VALUE_METHODS | DISTANCE_METHODS
#: Every metric monitoring can compute, over all task types (names from blocks/task_metrics.py).
PERFORMANCE_METRICS = tuple(sorted({name for table in METRICS.values() for name in table}))


class MonitoringPolicy(Block):
    """Rules that turn a monitoring window into a verdict: drift, data quality, performance.

    Drift: every compared column gets a statistical test (``numerical_method`` /
    ``categorical_method``, or a per-column override in ``column_methods``) and is drifted
    when its score crosses its threshold (a p-value at or below it for tests such as ``ks``
    and ``chisquare``, a distance at or above it for ``wasserstein``, ``psi``,
    ``jensenshannon`` ...). The dataset is drifted when the share of drifted columns is at
    least ``drift_share``. A window with fewer than ``min_window_rows`` rows gets the verdict
    ``not_enough_data`` and never raises an alarm. Windows larger than ``max_sample_rows`` are
    sampled with a fixed seed, so the same data always gives the same verdict; at the
    default 50,000 rows a KS test still detects a mean shift of about 0.03 standard
    deviations.

    Data quality: an issue is reported when the share of missing values grows by more than
    ``missing_share_tolerance`` over the reference, when more than ``out_of_range_tolerance``
    of the values lie outside the reference's [min, max], or when more than
    ``new_category_tolerance`` of the values are categories the reference never had.

    Performance: ``primary_metric`` (None: the task type's default, ``roc_auc`` for binary,
    ``f1_macro`` for multiclass, ``rmse`` for regression) is computed on the labelled rows of the
    window and compared with the champion's test value of the same name. For a metric where
    larger is better the model has decayed when the value dropped by more than
    ``performance_decay`` (absolute: 0.05 = five points of ROC AUC). For an error metric
    (``rmse``, ``mae``, ``log_loss``: smaller is better, in the target's own units) the rule is
    relative: decayed when the value grew by more than ``performance_decay`` of the baseline
    (0.05 = 5 % worse), because an absolute tolerance means nothing across targets of different
    scales. No performance verdict is given with fewer than ``min_labeled_rows`` labelled rows.

    Attributes:
        drift_share: Share of drifted columns that makes the dataset drifted.
        column_threshold: Threshold for columns that use the default methods.
        numerical_method: Default drift method for numerical columns.
        categorical_method: Default drift method for categorical columns.
        column_methods: Column name to the drift method used for it.
        column_thresholds: Column name to its threshold (in its method's units).
        min_window_rows: Smallest current window (rows) that gets a drift verdict.
        min_reference_rows: Smallest reference (rows) that gets a drift verdict.
        min_labeled_rows: Smallest number of labelled rows that gets a performance verdict.
        max_sample_rows: Largest number of rows per side that the drift tests see.
        sample_seed: Seed of the sampling.
        missing_share_tolerance: Allowed growth of the missing-value share per column.
        out_of_range_tolerance: Allowed share of numbers outside the reference range.
        new_category_tolerance: Allowed share of categories unseen in the reference.
        performance_decay: Allowed absolute drop of a larger-is-better metric, or relative growth of
            an error metric (rmse, mae, log_loss).
        primary_metric: Metric compared with the champion's test value (None: by task type).

    Examples:
        >>> from blocks.monitoring_policy import MonitoringPolicy
        >>> policy = MonitoringPolicy.load("BLOCK_NAME")  # doctest: +SKIP
        >>> MonitoringPolicy(drift_share=0.3, column_methods={"income": "psi"},
        ...                  column_thresholds={"income": 0.2}).save("strict")  # doctest: +SKIP
    """

    _block_type_name = "Monitoring Policy"
    _block_type_slug = "mlops-monitoring-policy"
    _logo_url = "https://github.com/evidentlyai.png"  # type: ignore[assignment]
    _documentation_url = "https://docs.evidentlyai.com/metrics/customize_data_drift"  # type: ignore[assignment]

    drift_share: float = Field(
        default=0.5, gt=0.0, le=1.0,
        description="Share of drifted columns (0-1] at or above which the dataset is drifted.",
    )
    column_threshold: float = Field(
        default=0.05, gt=0.0,
        description="Threshold of columns using the default methods: a p-value for ks / chisquare "
                    "(drift when p <= threshold), a distance for wasserstein / psi (drift when >= threshold).",
    )
    numerical_method: str = Field(
        default="ks", description="Default drift method (Evidently stattest name) for numerical columns."
    )
    categorical_method: str = Field(
        default="chisquare", description="Default drift method (Evidently stattest name) for categorical columns."
    )
    column_methods: dict[str, str] = Field(
        default_factory=dict,
        description="Column name -> drift method for that column (e.g. {'income': 'psi'}).",
    )
    column_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Column name -> drift threshold for that column, in its method's units. A column "
                    "with a method override and no threshold here uses the method's Evidently default.",
    )
    min_window_rows: int = Field(
        default=200, ge=1,
        description="Windows with fewer rows get the verdict 'not_enough_data' instead of a drift verdict.",
    )
    min_reference_rows: int = Field(
        default=50, ge=1,
        description="A reference (the champion's training data) with fewer rows gets no drift verdict; it is not "
                    "held to min_window_rows, since a small training set is still what the model learned from.",
    )
    min_labeled_rows: int = Field(
        default=200, ge=1,
        description="Windows with fewer labelled rows get no performance verdict ('not_enough_data').",
    )
    max_sample_rows: int = Field(
        default=50_000, ge=1,
        description="Reference and current windows larger than this are sampled to this many rows.",
    )
    sample_seed: int = Field(default=42, description="Seed of the deterministic sampling.")
    missing_share_tolerance: float = Field(
        default=0.01, ge=0.0,
        description="Allowed growth of a column's missing-value share over the reference before it is an issue.",
    )
    out_of_range_tolerance: float = Field(
        default=0.01, ge=0.0,
        description="Allowed share of numerical values outside the reference [min, max] before it is an issue.",
    )
    new_category_tolerance: float = Field(
        default=0.0, ge=0.0,
        description="Allowed share of categorical values unseen in the reference before it is an issue.",
    )
    performance_decay: float = Field(
        default=0.05, ge=0.0,
        description="Allowed absolute drop of a larger-is-better metric below the champion's test value; for "
                    "an error metric (rmse, mae, log_loss) the allowed relative growth (0.05 = 5% worse).",
    )
    primary_metric: str | None = Field(
        default=None,
        description="Metric compared with the champion's test value; None: by task type (binary roc_auc, "
                    "multiclass f1_macro, regression rmse).",
    )

    @model_validator(mode="after")
    def _check_methods_and_sizes(self) -> MonitoringPolicy:
        named = {"numerical_method": self.numerical_method, "categorical_method": self.categorical_method}
        named.update({f"column_methods[{col!r}]": method for col, method in self.column_methods.items()})
        unknown = {where: method for where, method in named.items() if method not in DRIFT_METHODS}
        if unknown:
            raise ValueError(
                f"Unknown drift method(s) {unknown}: use one of {sorted(DRIFT_METHODS)} "
                "(Evidently stattest names)."
            )
        if self.primary_metric is not None and self.primary_metric not in PERFORMANCE_METRICS:
            raise ValueError(f"primary_metric {self.primary_metric!r} is not a metric monitoring computes: use one "
                             f"of {list(PERFORMANCE_METRICS)}, or None for the task type's default.")
        bad = {col: value for col, value in self.column_thresholds.items() if not value > 0}
        if bad:
            raise ValueError(f"column_thresholds must be > 0, got {bad}.")
        if self.max_sample_rows < self.min_window_rows:
            raise ValueError(
                f"max_sample_rows ({self.max_sample_rows}) is below min_window_rows "
                f"({self.min_window_rows}): a sampled window would never be large enough."
            )
        return self

    def metric_for(self, task_type: str) -> str:
        """Return the performance metric for a model of this task type (refusing one it cannot report).

        Args:
            task_type: ``binary``, ``multiclass`` or ``regression``.

        Returns:
            ``primary_metric``, or the task type's monitoring default when it is None.

        Raises:
            ValueError: If ``primary_metric`` names a metric this task type does not report.

        Examples:
            >>> MonitoringPolicy().metric_for("regression")
            'rmse'
            >>> MonitoringPolicy(primary_metric="accuracy").metric_for("multiclass")
            'accuracy'
        """
        if self.primary_metric is None:
            return defaults_for(task_type).monitoring_metric
        check_metrics(task_type, [self.primary_metric], "MonitoringPolicy.primary_metric")
        return self.primary_metric

    @staticmethod
    def lower_is_better(metric: str) -> bool:
        """Whether a smaller value of ``metric`` is better (its decay is a relative increase)."""
        return metric in LOWER_IS_BETTER

    def method_for(self, column: str, categorical: bool) -> str:
        """Return the drift method used for a column.

        Args:
            column: Column name.
            categorical: Whether the column is categorical.

        Returns:
            The Evidently stattest name.

        Examples:
            >>> MonitoringPolicy(column_methods={"age": "psi"}).method_for("age", categorical=False)
            'psi'
        """
        if column in self.column_methods:
            return self.column_methods[column]
        return self.categorical_method if categorical else self.numerical_method

    def threshold_for(self, column: str) -> float | None:
        """Return the drift threshold for a column, or None for the method's own default.

        Args:
            column: Column name.

        Returns:
            The per-column threshold, else ``column_threshold`` for default methods, else None.

        Examples:
            >>> MonitoringPolicy().threshold_for("age")
            0.05
        """
        if column in self.column_thresholds:
            return self.column_thresholds[column]
        if column in self.column_methods:
            return None
        return self.column_threshold
