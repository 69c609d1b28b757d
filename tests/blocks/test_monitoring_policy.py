"""The monitoring policy block: validation, metric defaults by task type, and saving it as a Prefect block."""

from __future__ import annotations

import pandas as pd
import pytest
from pydantic import ValidationError

from blocks.monitoring_policy import MonitoringPolicy
from tasks.exceptions import MonitoringError
from tasks.monitoring_performance import compute_performance

NO_SERVER = pytest.mark.no_server


@NO_SERVER
def test_policy_rejects_unknown_methods_and_inconsistent_sizes() -> None:
    with pytest.raises(ValidationError, match="Unknown drift method"):
        MonitoringPolicy(column_methods={"age": "kolmogorov"})
    with pytest.raises(ValidationError, match="max_sample_rows"):
        MonitoringPolicy(min_window_rows=1000, max_sample_rows=500)
    policy = MonitoringPolicy(column_methods={"age": "psi"}, column_thresholds={"tenure": 0.01})
    assert (policy.method_for("age", False), policy.threshold_for("age")) == ("psi", None)
    assert (policy.method_for("plan", True), policy.threshold_for("tenure")) == ("chisquare", 0.01)


def test_policy_saves_and_loads_as_a_prefect_block() -> None:
    policy = MonitoringPolicy(drift_share=0.3, column_methods={"income": "psi"}, column_thresholds={"income": 0.2})
    policy.save("monitoring-policy-test", overwrite=True)
    loaded = MonitoringPolicy.load("monitoring-policy-test")
    assert loaded.drift_share == 0.3 and loaded.column_methods == {"income": "psi"}
    assert loaded.threshold_for("income") == 0.2


@NO_SERVER
def test_policy_metric_defaults_by_task_type_and_refuses_what_a_task_cannot_report() -> None:
    policy = MonitoringPolicy()
    assert policy.primary_metric is None
    assert [policy.metric_for(t) for t in ("binary", "multiclass", "regression")] == ["roc_auc", "f1_macro", "rmse"]
    with pytest.raises(ValueError, match="names 'roc_auc', which a regression model does not report"):
        MonitoringPolicy(primary_metric="roc_auc").metric_for("regression")
    with pytest.raises(ValidationError, match="'auc' is not a metric monitoring computes"):
        MonitoringPolicy(primary_metric="auc")
    frame = pd.DataFrame({"label": [1.0, 2.0], "prediction": [1.0, 2.0]})
    with pytest.raises(MonitoringError, match="f1_macro.*regression model does not report"):
        compute_performance(frame, "label", "prediction", None, {"f1_macro": 0.9},
                            MonitoringPolicy(primary_metric="f1_macro"), task_type="regression")
