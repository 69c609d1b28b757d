"""Data the monitoring and retraining steps work on: windows of the inference log, feedback sets.

The inference log is read with :func:`tasks.inference_log.read_inference_log`; these tasks
write the windows they need as Parquet files and pass the paths on.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.logs import run_logger


class WindowFile(BaseModel):
    """A window of logged predictions written to a file."""

    path: str
    rows: int
    labeled_rows: int
    start: str
    end: str
    versions: list[str]


class FeedbackDataset(BaseModel):
    """A training set: the versioned data plus labelled recent traffic."""

    path: str
    base_rows: int
    feedback_rows: int


@task(name="export-inference-window", cache_policy=NO_CACHE)
def export_inference_window(log_dir: str | None, model_name: str, start: str, end: str, output_path: str,
                            model_version: str | None = None) -> WindowFile:
    """Write the predictions logged in ``[start, end)`` (with any labels) to a Parquet file.

    Args:
        log_dir: Inference log root (None: the embedded default).
        model_name: Registered model name.
        start: Window start, ISO 8601 (UTC).
        end: Window end, ISO 8601 (UTC).
        output_path: Parquet file to write.
        model_version: Only predictions of this version (None: all versions).

    Returns:
        The file, its row count and how many rows have a label.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def window() -> int:
        ...     return export_inference_window(None, "churn-classifier", "2026-01-01T00:00:00+00:00",
        ...                                    "2026-01-02T00:00:00+00:00", "/tmp/window.parquet").rows
    """
    from tasks.inference_log import read_inference_log

    frame = read_inference_log(log_dir, model_name, start=start, end=end, with_labels=True)
    if model_version is not None and len(frame):
        frame = frame[frame["model_version"].astype(str) == str(model_version)]
    path = Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    labeled = int(frame["label"].notna().sum()) if "label" in frame.columns else 0
    versions = sorted(frame["model_version"].dropna().astype(str).unique().tolist()) if len(frame) else []
    run_logger().info("Window %s .. %s of %s: %d predictions, %d labelled", start, end, model_name, len(frame),
                      labeled)
    return WindowFile(path=str(path), rows=len(frame), labeled_rows=labeled, start=start, end=end,
                      versions=versions)


@task(name="build-feedback-dataset", cache_policy=NO_CACHE)
def build_feedback_dataset(base_file: str, log_dir: str | None, model_name: str, since: str, target: str,
                           output_path: str, min_window_rows: int = 1000) -> FeedbackDataset:
    """Build the next training set from labelled predictions logged since ``since``.

    The labelled traffic is what the model meets now. With at least ``min_window_rows``
    labelled rows the training set is that window alone (a sliding window: the model
    learns the current distribution, so monitoring against its training data is clean
    again); with fewer, the window is appended to the versioned data. Logged rows become
    training rows: their features, and their label as the target.

    Args:
        base_file: The currently versioned training data (local file).
        log_dir: Inference log root (None: the embedded default).
        model_name: Registered model name.
        since: Earliest prediction time to use, ISO 8601.
        target: Target column of the training data.
        output_path: Parquet file to write.
        min_window_rows: Labelled rows from which the window replaces the versioned data.

    Returns:
        The new training file and its composition.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def feedback(base: str) -> int:
        ...     return build_feedback_dataset(base, None, "churn-classifier", "2026-01-01T00:00:00+00:00",
        ...                                   "churned", "/tmp/train.parquet").feedback_rows
    """
    import pandas as pd

    from tasks.inference_log import read_inference_log
    from tasks.sample_data import read_frame

    base = read_frame(base_file)
    logged = read_inference_log(log_dir, model_name, start=since, with_labels=True)
    labelled = logged[logged["label"].notna()] if "label" in logged.columns else logged.iloc[0:0]
    columns = [c for c in base.columns if c != target and c in labelled.columns]
    feedback = labelled[columns].copy()
    feedback[target] = labelled["label"].astype(base[target].dtype).to_numpy()
    if "event_time" in base.columns and "event_time" not in feedback.columns:
        feedback["event_time"] = pd.to_datetime(labelled["timestamp"], utc=True).to_numpy()
    for column in base.columns:
        if column in feedback.columns:
            try:
                feedback[column] = feedback[column].astype(base[column].dtype)
            except (TypeError, ValueError):
                pass
    if len(feedback) >= min_window_rows:
        base = base.iloc[0:0]
    combined = pd.concat([base, feedback[[c for c in base.columns if c in feedback.columns]]], ignore_index=True)
    path = Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    combined.to_parquet(path, index=False)
    run_logger().info("Feedback dataset: %d base rows + %d labelled logged rows -> %s", len(base), len(feedback),
                      path)
    return FeedbackDataset(path=str(path), base_rows=len(base), feedback_rows=len(feedback))


@task(name="score-reference", cache_policy=NO_CACHE)
def score_reference(model_dir: str, reference_file: str, features: list[str], output_path: str) -> str:
    """Add the model's ``prediction`` (and ``score``) to the reference data, for prediction drift.

    Args:
        model_dir: MLflow model folder of the champion.
        reference_file: The champion's training data.
        features: Feature columns.
        output_path: Parquet file to write (reused if it exists: one per champion version).

    Returns:
        The scored reference file.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def reference(model: str, ref: str) -> str:
        ...     return score_reference(model, ref, ["tenure_months"], "/tmp/ref-scored.parquet")
    """
    from tasks.model_evaluation import load_model
    from tasks.sample_data import read_frame
    from tasks.sklearn_training import positive_scores

    path = Path(output_path)
    if path.is_file():
        return str(path)
    frame = read_frame(reference_file)
    model = load_model(model_dir)
    frame["prediction"] = model.predict(frame[features])
    scores = positive_scores(model, frame[features])
    if scores is not None:
        frame["score"] = scores
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return str(path)


def window_bounds(hours: float, end: str | None = None) -> tuple[str, str]:
    """Return ISO bounds of the window of ``hours`` ending at ``end`` (default: now)."""
    end_at = dt.datetime.fromisoformat(end) if end else dt.datetime.now(dt.UTC)
    if end_at.tzinfo is None:
        end_at = end_at.replace(tzinfo=dt.UTC)
    return (end_at - dt.timedelta(hours=hours)).isoformat(), end_at.isoformat()
