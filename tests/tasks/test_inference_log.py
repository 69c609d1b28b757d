"""The inference log writer and readers on real Parquet files (no server)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pandas as pd
import pytest

from tasks.inference_log import (
    InferenceLogWriter,
    attach_ground_truth,
    inference_log_stats,
    read_ground_truth,
    read_inference_log,
)

T0 = dt.datetime(2026, 3, 1, 23, 30, tzinfo=dt.UTC)


def features(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"tenure": [float(i) for i in range(start, start + n)], "plan": ["basic"] * n,
                         "calls": list(range(start, start + n))})


def log_hourly(writer: InferenceLogWriter, hours: int, per_hour: int = 3) -> list[str]:
    ids = []
    for h in range(hours):
        at = (T0 + dt.timedelta(hours=h)).timestamp()
        batch = [f"r{h}-{i}" for i in range(per_hour)]
        writer.log(batch, [at + i for i in range(per_hour)], features(per_hour, h * 10), [h % 2] * per_hour,
                   [0.25] * per_hour)
        ids += batch
    return ids


def test_predictions_are_partitioned_by_day_and_hour_and_read_back(tmp_path: Path) -> None:
    writer = InferenceLogWriter(tmp_path, "churn", "7", start_thread=False)
    ids = log_hourly(writer, hours=3)
    assert writer.flush() == 9 and writer.dropped == 0
    parts = sorted(p.relative_to(tmp_path / "churn" / "predictions").parent.as_posix()
                   for p in tmp_path.rglob("part-*.parquet"))
    assert parts == ["date=2026-03-01/hour=23", "date=2026-03-02/hour=00", "date=2026-03-02/hour=01"]
    frame = read_inference_log(tmp_path, "churn")
    assert frame["request_id"].tolist() == ids
    assert list(frame.columns) == ["request_id", "timestamp", "model_name", "model_version", "source", "tenure",
                                   "plan", "calls", "prediction", "score", "probabilities"]
    assert str(frame["timestamp"].dt.tz) == "UTC" and frame["timestamp"].iloc[0] == pd.Timestamp(T0)
    assert set(frame["model_version"]) == {"7"} and set(frame["source"]) == {"online"}
    assert frame["calls"].dtype == "int64" and frame["prediction"].tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0]


def test_a_time_window_selects_partitions_and_rows(tmp_path: Path) -> None:
    writer = InferenceLogWriter(tmp_path, "churn", "7", start_thread=False)
    log_hourly(writer, hours=3)
    writer.flush()
    window = read_inference_log(tmp_path, "churn", start=T0 + dt.timedelta(hours=1), end=T0 + dt.timedelta(hours=2))
    assert window["request_id"].tolist() == ["r1-0", "r1-1", "r1-2"]
    naive = read_inference_log(tmp_path, "churn", start="2026-03-02T00:30:01")
    assert naive["request_id"].tolist()[0] == "r1-1"
    assert read_inference_log(tmp_path, "churn", end=T0).empty


def test_versions_with_different_features_read_together(tmp_path: Path) -> None:
    old = InferenceLogWriter(tmp_path, "churn", "1", start_thread=False)
    old.log(["a"], [T0.timestamp()], features(1), [1], [0.9])
    old.flush()
    new = InferenceLogWriter(tmp_path, "churn", "2", start_thread=False)
    new.log(["b"], [T0.timestamp() + 1], features(1).assign(region=["north"]), [0], None)
    new.flush()
    frame = read_inference_log(tmp_path, "churn")
    assert frame["model_version"].tolist() == ["1", "2"]
    assert frame["region"].isna().tolist() == [True, False] and pd.isna(frame["score"].iloc[1])


def test_feature_named_like_a_log_column_is_prefixed(tmp_path: Path) -> None:
    writer = InferenceLogWriter(tmp_path, "churn", "1", start_thread=False)
    writer.log(["a"], [T0.timestamp()], pd.DataFrame({"score": [3.0], "x": [1]}), [1], [0.5])
    writer.flush()
    frame = read_inference_log(tmp_path, "churn")
    assert frame.loc[0, "feature_score"] == 3.0 and frame.loc[0, "score"] == 0.5


def test_buffer_overflow_is_dropped_and_counted_never_raised(tmp_path: Path) -> None:
    writer = InferenceLogWriter(tmp_path, "churn", "1", max_buffered=5, start_thread=False)
    writer.log([f"a{i}" for i in range(4)], [T0.timestamp()] * 4, features(4), [0] * 4, None)
    writer.log([f"b{i}" for i in range(4)], [T0.timestamp()] * 4, features(4), [0] * 4, None)
    assert writer.flush() == 4 and writer.dropped == 4
    stats = inference_log_stats(tmp_path, "churn")
    assert (stats["written"], stats["dropped"]) == (4, 4)


def test_a_failing_write_is_counted_and_the_caller_never_sees_it(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the log folder should be")
    writer = InferenceLogWriter(blocked, "churn", "1", start_thread=False)
    writer.log(["a", "b"], [T0.timestamp()] * 2, features(2), [0, 1], [0.1, 0.9])
    assert writer.flush() == 0
    assert writer.dropped == 2 and writer.written == 0 and writer.last_error
    writer.close()  # still never raises


def test_background_thread_writes_without_being_asked_and_close_flushes(tmp_path: Path) -> None:
    writer = InferenceLogWriter(tmp_path, "churn", "1", flush_interval_s=0.05)
    writer.log(["a"], [T0.timestamp()], features(1), [1], [0.7])
    deadline = dt.datetime.now() + dt.timedelta(seconds=20)
    while writer.written == 0 and dt.datetime.now() < deadline:
        time.sleep(0.01)
    assert writer.written == 1
    writer.log(["b"], [T0.timestamp()], features(1), [0], [0.2])
    writer.close()
    assert read_inference_log(tmp_path, "churn")["request_id"].tolist() == ["a", "b"]


def test_ground_truth_joins_by_request_id_latest_label_wins(tmp_path: Path) -> None:
    writer = InferenceLogWriter(tmp_path, "churn", "1", start_thread=False)
    writer.log(["a", "b", "c"], [T0.timestamp()] * 3, features(3), [1, 0, 1], [0.8, 0.1, 0.6])
    writer.flush()
    assert attach_ground_truth(tmp_path, "churn", {"a": 1, "b": 1}, at=T0 + dt.timedelta(days=1)) == 2
    labels = pd.DataFrame({"request_id": ["b"], "churned": [0]})
    assert attach_ground_truth(tmp_path, "churn", labels, label_column="churned", at=T0 + dt.timedelta(days=2)) == 1
    frame = read_inference_log(tmp_path, "churn", with_labels=True).set_index("request_id")
    assert frame.loc["a", "label"] == 1 and frame.loc["b", "label"] == 0 and pd.isna(frame.loc["c", "label"])
    assert frame.loc["b", "label_timestamp"] == pd.Timestamp(T0 + dt.timedelta(days=2))
    assert len(read_ground_truth(tmp_path, "churn")) == 2


def test_bad_ground_truth_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing label"):
        attach_ground_truth(tmp_path, "churn", {"a": None})
    with pytest.raises(ValueError, match="lacks column"):
        attach_ground_truth(tmp_path, "churn", pd.DataFrame({"id": ["a"], "label": [1]}))


def test_an_empty_log_reads_as_an_empty_frame_with_the_base_columns(tmp_path: Path) -> None:
    frame = read_inference_log(tmp_path, "never-served", with_labels=True)
    assert frame.empty and {"request_id", "timestamp", "model_version", "prediction", "label"} <= set(frame.columns)
    assert inference_log_stats(tmp_path, "never-served") == {"written": 0, "dropped": 0, "rejected": 0, "writers": []}


def test_record_lists_are_written_with_the_signature_types(tmp_path: Path) -> None:
    types = {"tenure": "double", "calls": "long", "plan": "string", "vip": "boolean"}
    writer = InferenceLogWriter(tmp_path, "churn", "3", start_thread=False, feature_types=types)
    writer.log(["a", "b"], [T0.timestamp()] * 2, [{"tenure": 1, "calls": 2, "plan": "x", "vip": True},
                                                  {"tenure": 2.5, "calls": 3, "plan": None, "vip": False}],
               [1, 0], [0.9, 0.2])
    writer.log(["c"], [T0.timestamp()], features(1).assign(vip=[True])[["tenure", "calls", "plan", "vip"]], [1], None)
    assert writer.flush() == 3
    frame = read_inference_log(tmp_path, "churn")
    assert str(frame["tenure"].dtype) == "float64" and str(frame["calls"].dtype) == "int64"
    assert frame["tenure"].tolist() == [1.0, 2.5, 0.0] and frame["plan"].tolist() == ["x", None, "basic"]
    assert frame["vip"].tolist() == [True, False, True]
