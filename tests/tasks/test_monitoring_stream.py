"""Windows larger than memory: the streamed export equals the in-memory one; column reads equal whole-frame ones."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blocks.monitoring_policy import MonitoringPolicy
from tasks.inference_log import InferenceLogWriter, attach_ground_truth, read_inference_log
from tasks.monitoring_quality import check_data_quality
from tasks.monitoring_stream import read_window_by_column, stream_inference_window
from tasks.monitoring_windows import sample_rows

pytestmark = pytest.mark.no_server

T0 = dt.datetime(2026, 3, 1, 22, 30, tzinfo=dt.UTC)


def _log(root: Path) -> list[str]:
    """Five hours of predictions from two versions, some of them labelled."""
    ids: list[str] = []
    for version in ("1", "2"):
        writer = InferenceLogWriter(root, "churn", version, start_thread=False)
        for h in range(5):
            at = (T0 + dt.timedelta(hours=h, minutes=int(version))).timestamp()
            batch = [f"v{version}-{h}-{i}" for i in range(40)]
            frame = pd.DataFrame({"tenure": np.arange(40, dtype="float64") + h, "plan": ["basic", "pro"] * 20})
            writer.log(batch, [at + i for i in range(40)], frame, [i % 2 for i in range(40)], [0.5] * 40)
            ids += batch
        writer.flush()
    attach_ground_truth(root, "churn", pd.DataFrame({"request_id": ids[::7], "label": [1] * len(ids[::7])}))
    return ids


@pytest.mark.parametrize("version", [None, "2"])
def test_the_streamed_window_has_the_rows_and_columns_of_the_in_memory_one(tmp_path: Path,
                                                                           version: str | None) -> None:
    _log(tmp_path / "log")
    start, end = (T0 + dt.timedelta(hours=1)).isoformat(), (T0 + dt.timedelta(hours=4)).isoformat()
    counts = stream_inference_window(str(tmp_path / "log"), "churn", start, end, str(tmp_path / "w.parquet"), version)
    streamed = pd.read_parquet(tmp_path / "w.parquet").sort_values("request_id").reset_index(drop=True)
    whole = read_inference_log(tmp_path / "log", "churn", start=start, end=end, with_labels=True)
    if version is not None:
        whole = whole[whole["model_version"] == version]
    whole = whole.sort_values("request_id").reset_index(drop=True)
    assert list(streamed.columns) == list(whole.columns)
    assert len(streamed) == counts["rows"] == len(whole) > 0
    pd.testing.assert_frame_equal(streamed, whole, check_dtype=False)
    assert counts["labeled_rows"] == int(whole["label"].notna().sum()) > 0
    assert counts["versions"] == sorted(whole["model_version"].unique())
    assert pd.Timestamp(counts["first_arrival"]) == whole["timestamp"].min()


def test_an_empty_window_is_an_empty_file(tmp_path: Path) -> None:
    _log(tmp_path / "log")
    counts = stream_inference_window(str(tmp_path / "log"), "churn", "2030-01-01", "2030-01-02",
                                     str(tmp_path / "w.parquet"))
    assert counts["rows"] == 0 and len(pd.read_parquet(tmp_path / "w.parquet")) == 0


def test_reading_by_column_gives_the_whole_frame_quality_and_sample(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"x": rng.normal(size=2000), "c": rng.choice(["a", "b"], 2000)})
    current = pd.DataFrame({"x": rng.normal(0.5, 1.5, size=30_000), "c": rng.choice(["a", "b", "z"], 30_000),
                            "prediction": rng.integers(0, 2, 30_000)})
    current.loc[::50, "x"] = np.nan
    current.to_parquet(tmp_path / "current.parquet", index=False)
    policy = MonitoringPolicy(max_sample_rows=5000)
    sample, issues, quality, rows = read_window_by_column(tmp_path / "current.parquet", ["x", "c", "prediction"],
                                                          reference, ["x"], ["c"], policy)
    expected_issues, expected_quality = check_data_quality(reference, current, ["x"], ["c"], policy)
    expected_sample, sampled = sample_rows(current, policy.max_sample_rows, policy.sample_seed, stream=1)
    assert rows == 30_000 and sampled and len(sample) == 5000
    assert sorted(issues) == sorted(expected_issues) and issues  # the unseen category 'z', the wider range
    assert quality == expected_quality
    pd.testing.assert_frame_equal(sample, expected_sample.reset_index(drop=True))


def test_a_drift_report_read_by_column_equals_the_whole_frame_one(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The 10M-row path (benchmarks/bench_drift.py --sizes 10000000) on a window small enough to compare."""
    import tasks.evidently_monitoring as monitoring

    rng = np.random.default_rng(1)
    reference = pd.DataFrame({"a": rng.normal(size=5000), "b": rng.normal(size=5000),
                              "c": rng.choice(["x", "y"], 5000)})
    current = pd.DataFrame({"a": rng.normal(0.3, 1, 40_000), "b": rng.normal(size=40_000),
                            "c": rng.choice(["x", "y", "new"], 40_000, p=[0.5, 0.45, 0.05])})
    reference.to_parquet(tmp_path / "ref.parquet", index=False)
    current.to_parquet(tmp_path / "cur.parquet", index=False)
    policy = MonitoringPolicy(max_sample_rows=8000)
    whole = monitoring.run_drift_report.fn(str(tmp_path / "ref.parquet"), str(tmp_path / "cur.parquet"), policy,
                                           str(tmp_path / "whole"))
    monkeypatch.setattr(monitoring, "STREAM_ABOVE_ROWS", 10_000)
    streamed = monitoring.run_drift_report.fn(str(tmp_path / "ref.parquet"), str(tmp_path / "cur.parquet"), policy,
                                              str(tmp_path / "streamed"))
    assert streamed.current_rows == whole.current_rows == 40_000 and streamed.sampled and whole.sampled
    assert streamed.verdict == whole.verdict and streamed.drifted_columns == whole.drifted_columns == ["a", "c"]
    assert streamed.column_scores == whole.column_scores
    assert streamed.quality_issues == whole.quality_issues and any("'new'" in i for i in streamed.quality_issues)


def test_a_large_arrival_window_is_exported_batch_by_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.monitoring_stream as stream
    from tasks.monitoring_data import export_inference_window

    _log(tmp_path / "log")
    start, end = T0.isoformat(), (T0 + dt.timedelta(hours=6)).isoformat()
    whole = export_inference_window.fn(str(tmp_path / "log"), "churn", start, end, str(tmp_path / "whole.parquet"))
    monkeypatch.setattr(stream, "STREAM_ABOVE_ROWS", 100)
    streamed = export_inference_window.fn(str(tmp_path / "log"), "churn", start, end, str(tmp_path / "big.parquet"))
    assert streamed.rows == whole.rows == 400 and streamed.labeled_rows == whole.labeled_rows > 0
    assert streamed.versions == whole.versions == ["1", "2"] and streamed.first_arrival == whole.first_arrival
    left = pd.read_parquet(tmp_path / "big.parquet").sort_values("request_id").reset_index(drop=True)
    right = pd.read_parquet(tmp_path / "whole.parquet").sort_values("request_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right, check_dtype=False)
