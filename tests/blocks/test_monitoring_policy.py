"""The monitoring policy block: validation of its methods and sizes, and saving it as a Prefect block."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from blocks.monitoring_policy import MonitoringPolicy

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
