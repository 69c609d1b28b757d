"""Comparing a reproduction with its recorded training: code and library changes warn, metrics out of tolerance fail."""

from __future__ import annotations

import pytest

from tasks.model_reproduction import RecordedTraining, compare_metrics, environment_warnings
from tasks.sklearn_spec import TaskInfo


@pytest.mark.no_server
def test_code_and_library_changes_are_warnings_and_metrics_outside_the_tolerance_fail() -> None:
    record = RecordedTraining(
        model_name="m", version="4", run_id="r", experiment_name="e", data_rev="a" * 40, data_md5="b" * 32,
        data_path="data/train.parquet", target="y", task=TaskInfo(task_type="binary", target="y", classes=[0, 1]),
        estimator="sklearn.linear_model.LogisticRegression", params={"C": 1.0}, features=["x1", "x2"],
        code_commit="1" * 40, code_dirty="false", test_digest="d1",
        libraries={"scikit-learn": "1.5.2", "pandas": "2.2.3", "numpy": "2.1.0", "mlflow": "3.17.2"})
    warnings = environment_warnings(record, {"mlops.code.commit": "2" * 40, "mlops.code.dirty": "false"},
                                    {"scikit-learn": "1.9.1", "pandas": "2.2.3", "numpy": "2.3.0", "mlflow": "3.17.2"},
                                    ["x1"], "d2")
    assert any(w.startswith("code commit differs") for w in warnings)
    assert "scikit-learn 1.5.2 at training, 1.9.1 now" in warnings and "numpy 2.1.0 at training, 2.3.0 now" in warnings
    assert not [w for w in warnings if w.startswith(("pandas", "mlflow"))]
    assert any("features differ" in w for w in warnings) and any("test split differs" in w for w in warnings)

    rows, verdict = compare_metrics({"roc_auc": 0.80, "accuracy": 0.75}, {"roc_auc": 0.8159, "accuracy": 0.75}, 0.02)
    assert verdict == "reproduced" and all(r.within for r in rows)
    rows, verdict = compare_metrics({"roc_auc": 0.80, "accuracy": 0.75}, {"roc_auc": 0.8170, "accuracy": 0.75}, 0.02)
    assert verdict == "not reproduced" and [r.metric for r in rows if not r.within] == ["roc_auc"]
    assert compare_metrics({"roc_auc": 0.8}, {}, 0.02)[1] == "not reproduced"  # a recorded metric not computed now
