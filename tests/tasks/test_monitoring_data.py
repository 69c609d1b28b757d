"""Monitoring data on real bundled datasets: event-time windows, the feedback dataset, labels cast to the target's type.

Every window is written by the real inference-log writer and read back by the real readers (no server).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from monitoring_support import NOW, fit, iris_frame, log_window, macro_frame, window

from tasks.exceptions import MonitoringError
from tasks.monitoring_data import build_feedback_dataset

#: Every test here calls plain functions and task bodies (``.fn``) on files: no Prefect server.
pytestmark = pytest.mark.no_server


def test_event_time_window_selects_by_the_logged_time_column(tmp_path: Path) -> None:
    """Macro data scored today: the window by event time holds exactly the quarters inside it."""
    frame = macro_frame()
    features = ["realgdp", "realcons", "unemp", "infl"]
    model = fit(frame, features, "realinv", regression=True)
    log_dir = tmp_path / "ilog"
    # Arrivals spread over the last 30 days, in an order unrelated to the event time.
    rng = np.random.default_rng(1)
    arrivals = (NOW.timestamp() - rng.uniform(0, 30 * 86_400, len(frame))).tolist()
    log_window(log_dir, "macro", frame, features, model.predict(frame[features]), labels=frame["realinv"],
               passthrough=["date"], arrivals=arrivals)

    decade = window(log_dir, "macro", tmp_path, start="1990-01-01", end="2000-01-01", time_column="date")
    expected = frame[(frame["date"] >= "1990-01-01") & (frame["date"] < "2000-01-01")]
    assert (decade.rows, decade.time_basis, decade.time_column) == (len(expected), "event", "date") == (40, "event",
                                                                                                        "date")
    rows = pd.read_parquet(decade.path)
    assert sorted(rows["date"]) == sorted(expected["date"]) and rows["label"].notna().all()

    first = min(a for a, d in zip(arrivals, frame["date"], strict=True) if "1990-01-01" <= d < "2000-01-01")
    assert abs(dt.datetime.fromisoformat(decade.first_arrival).timestamp() - first) < 1e-3  # feedback starts here

    quarter = window(log_dir, "macro", tmp_path, start="2008-07-01T00:00:00+00:00", end="2008-09-29T00:00:00+00:00",
                     time_column="date")  # a 90-day window
    assert quarter.rows == 1 and pd.read_parquet(quarter.path)["date"].tolist() == ["2008-07-01"]

    by_arrival = window(log_dir, "macro", tmp_path, start=(NOW - dt.timedelta(days=31)).isoformat())
    assert by_arrival.rows == 203 and by_arrival.time_basis == "arrival"
    # Reading only what arrived in the last 10 days keeps fewer rows of the same decade.
    recent = window(log_dir, "macro", tmp_path, start="1990-01-01", end="2000-01-01", time_column="date",
                    arrival_start=(NOW - dt.timedelta(days=10)).isoformat())
    assert 0 < recent.rows < 40


def test_event_time_window_counts_unparseable_times_and_falls_back_without_the_column(tmp_path: Path) -> None:
    frame = macro_frame().head(40).copy()
    frame.loc[frame.index[:3], "date"] = "not a date"
    features = ["realgdp", "unemp"]
    log_dir = tmp_path / "ilog"
    log_window(log_dir, "macro-bad", frame, features, np.zeros(len(frame)), passthrough=["date"])
    win = window(log_dir, "macro-bad", tmp_path, start="1900-01-01", end="2100-01-01", time_column="date")
    assert (win.rows, win.unparsed_time_rows) == (37, 3) and "3 logged rows have no parseable 'date'" in win.note

    log_window(tmp_path / "old", "macro-old", frame, features, np.zeros(len(frame)))  # the time column not logged
    old = window(tmp_path / "old", "macro-old", tmp_path, time_column="date")
    assert old.time_basis == "arrival" and old.rows == 40 and "has no 'date' column" in old.note


def test_feedback_dataset_casts_labels_and_uses_any_time_column(tmp_path: Path) -> None:
    frame = macro_frame()
    features = ["realgdp", "realcons", "unemp", "infl"]
    base = frame.iloc[:150]
    base_file = tmp_path / "base.parquet"
    base.to_parquet(base_file, index=False)
    recent = frame.iloc[150:]
    log_dir = tmp_path / "ilog"
    log_window(log_dir, "macro-fb", recent, features, np.zeros(len(recent)), labels=recent["realinv"].astype(str),
               passthrough=["date"])
    since = (NOW - dt.timedelta(hours=1)).isoformat()
    out = build_feedback_dataset.fn(str(base_file), str(log_dir), "macro-fb", since, "realinv",
                                    str(tmp_path / "train.parquet"), time_column="date")
    assert (out.base_rows, out.feedback_rows) == (150, 53)
    train = pd.read_parquet(out.path)
    assert list(train.columns) == list(base.columns) and train["realinv"].dtype == np.float64
    assert train["date"].tolist() == frame["date"].tolist()  # the logged event time, in the data's own format
    assert np.allclose(train["realinv"], frame["realinv"])

    # Text labels for a string target, and a clear error for labels that do not fit an integer target.
    iris = iris_frame()
    iris["code"] = iris["species"].map({"setosa": 0, "versicolor": 1, "virginica": 2})
    iris_file = tmp_path / "iris.parquet"
    iris.to_parquet(iris_file, index=False)
    ilog = tmp_path / "ilog-iris"
    feats = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    log_window(ilog, "iris-fb", iris.head(20), feats, iris["species"].head(20), labels=iris["species"].head(20))
    species = build_feedback_dataset.fn(str(iris_file.with_name("iris.parquet")), str(ilog), "iris-fb", since,
                                        "species", str(tmp_path / "iris-train.parquet"), min_window_rows=10)
    assert species.base_rows == 0 and species.feedback_rows == 20
    assert pd.read_parquet(species.path)["species"].tolist() == iris["species"].head(20).tolist()
    with pytest.raises(MonitoringError, match=r"Cannot use 20 attached label\(s\) as the target 'code' \(int64\).*"
                                              r"'setosa'.*are not numbers"):
        build_feedback_dataset.fn(str(iris_file), str(ilog), "iris-fb", since, "code",
                                  str(tmp_path / "bad.parquet"))
    assert not (tmp_path / "bad.parquet").exists()


def test_boolean_and_categorical_targets_take_labels_of_another_type() -> None:
    from tasks.monitoring_data import cast_labels

    flags = cast_labels(pd.Series(["True", "no", 1, "FALSE"], dtype=object), pd.Series([True, False]), "is_fraud")
    assert flags.tolist() == [True, False, True, False] and flags.dtype == bool
    with pytest.raises(MonitoringError, match=r"\['maybe'\] are not true/false"):
        cast_labels(pd.Series(["maybe"]), pd.Series([True, False]), "is_fraud")
    species = pd.Series(["Adelie", "Gentoo"], dtype="category")
    assert cast_labels(pd.Series(["Gentoo"]), species, "species").tolist() == ["Gentoo"]
    with pytest.raises(MonitoringError, match="are not categories of the target"):
        cast_labels(pd.Series(["Chinstrap"]), species, "species")
    with pytest.raises(MonitoringError, match="are not whole numbers"):
        cast_labels(pd.Series([1.5]), pd.Series([0, 1]), "churned")
