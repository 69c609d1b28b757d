"""Evidently drift on other task types: string predictions on penguins, labels of another dtype (no server)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from monitoring_support import fit, penguins_frame

from blocks.monitoring_policy import MonitoringPolicy
from tasks.evidently_drift import compute_drift
from tasks.evidently_monitoring import run_drift_report

#: Every test here calls plain functions and task bodies (``.fn``) on files: no Prefect server.
pytestmark = pytest.mark.no_server


def test_drift_on_penguins_with_string_predictions_skips_time_and_identifiers(tmp_path: Path) -> None:
    frame = penguins_frame()
    frame["penguin_id"] = [f"P{i:05d}" for i in range(len(frame))]
    frame["seen"] = [f"{2007 + i % 3}-06-{1 + i % 28:02d}" for i in range(len(frame))]
    features = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    model = fit(frame, features, "species")
    reference = frame.copy()
    reference["prediction"] = model.predict(reference[features])
    # Current traffic: only Gentoo-sized birds from Biscoe -> the predictions drift (all "Gentoo").
    current = frame[frame["species"] == "Gentoo"].sample(300, replace=True, random_state=0).copy()
    current["penguin_id"] = [f"Q{i:05d}" for i in range(len(current))]
    current["prediction"] = model.predict(current[features])
    ref_path, cur_path = tmp_path / "ref.parquet", tmp_path / "cur.parquet"
    reference.to_parquet(ref_path, index=False)
    current.to_parquet(cur_path, index=False)
    summary = run_drift_report.fn(str(ref_path), str(cur_path), MonitoringPolicy(), str(tmp_path / "out"),
                                  columns=[*features, "penguin_id", "seen"], prediction_column="prediction",
                                  column_roles={"penguin_id": "identifier"}, time_column="seen")
    assert summary.prediction_drift is True and summary.prediction_score < 0.05  # chi-square on the labels
    assert set(summary.skipped_columns) == {"penguin_id", "seen"}
    assert "event-time" in summary.skipped_columns["seen"] and "identifier" in summary.skipped_columns["penguin_id"]
    assert "penguin_id" not in summary.column_scores and "bill_length_mm" in summary.drifted_columns
    assert summary.verdict == "drift"

    # Without recorded roles an identifier-like text column is still skipped, with the reason.
    plain = compute_drift(reference, current, MonitoringPolicy(), [*features, "penguin_id"], "prediction").summary
    assert "identifier-like: 344 distinct values" in plain.skipped_columns["penguin_id"]


def test_prediction_drift_compares_labels_as_text_when_dtypes_differ() -> None:
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"x": rng.normal(size=500), "prediction": rng.integers(0, 2, 500)})
    current = pd.DataFrame({"x": rng.normal(size=500),
                            "prediction": [str(v) for v in rng.integers(0, 2, 500)]})  # logged as text
    summary = compute_drift(reference, current, MonitoringPolicy(), ["x"], "prediction").summary
    assert summary.prediction_drift is False and summary.prediction_score > 0.05
