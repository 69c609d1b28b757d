"""Data the monitoring and retraining steps work on: windows of the inference log, feedback sets.

The inference log is read with :func:`tasks.inference_log.read_inference_log`; these tasks
write the windows they need as Parquet files and pass the paths on.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.exceptions import MonitoringError
from tasks.logs import run_logger
from tasks.monitoring_stream import export_large_window

if TYPE_CHECKING:
    import pandas as pd


class WindowFile(BaseModel):
    """A window of logged predictions written to a file."""

    path: str
    rows: int
    labeled_rows: int
    start: str
    end: str
    versions: list[str]
    time_basis: Literal["event", "arrival"] = "arrival"
    time_column: str | None = None
    unparsed_time_rows: int = 0
    first_arrival: str | None = None
    note: str = ""


class FeedbackDataset(BaseModel):
    """A training set: the versioned data plus labelled recent traffic."""

    path: str
    base_rows: int
    feedback_rows: int


def _utc(value: str | None) -> pd.Timestamp | None:
    import pandas as pd

    if value is None:
        return None
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def parse_event_times(values: pd.Series) -> pd.Series:
    """Parse an event-time column (datetimes, ISO strings, dates) to UTC timestamps; NaT where impossible.

    Naive values are read as UTC. ISO 8601 is tried first (fast, unambiguous); the rest go through
    pandas' mixed-format parser.

    Args:
        values: The logged column (a passthrough column: an ISO string, or a timestamp).

    Returns:
        ``datetime64[ns, UTC]`` values, NaT for missing or unparseable ones.

    Examples:
        >>> import pandas as pd
        >>> parse_event_times(pd.Series(["1959-03-31", "2009-09-30T00:00:00Z", "never"])).dt.year.tolist()
        [1959.0, 2009.0, nan]
    """
    import pandas as pd

    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(values):
        return values.dt.tz_localize("UTC")
    text = values.astype("string")
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    retry = parsed.isna() & text.notna()
    if retry.any():
        parsed[retry] = pd.to_datetime(text[retry], utc=True, errors="coerce", format="mixed")
    return parsed


def select_event_window(frame: pd.DataFrame, time_column: str, start: str, end: str
                        ) -> tuple[pd.DataFrame, int, str | None]:
    """Keep the logged rows whose event time (``time_column``, parsed) lies in ``[start, end)``.

    A row that carries no event time (the client did not send it) takes its arrival time.

    Args:
        frame: Rows of the inference log (a wide arrival range).
        time_column: The model's event-time column; logged under its own name (``feature_<name>`` when the
            name clashes with a log column, see :func:`tasks.inference_log.feature_column`).
        start: Window start, ISO 8601 (naive = UTC), inclusive.
        end: Window end, exclusive.

    Returns:
        The selected rows, how many rows had an unparseable event time (left out), and the log column
        used (None when the log has no such column: nothing is selected).

    Examples:
        >>> import pandas as pd
        >>> rows, bad, col = select_event_window(pd.DataFrame({"date": ["2009-01-01", "1999-01-01", "?"]}),
        ...                                      "date", "2008-10-01", "2009-04-01")
        >>> len(rows), bad, col
        (1, 1, 'date')
    """
    from tasks.inference_log import feature_column

    column = next((c for c in (time_column, feature_column(time_column)) if c in frame.columns), None)
    if column is None:
        return frame.iloc[0:0], 0, None
    times = parse_event_times(frame[column])
    missing = frame[column].isna()
    if "timestamp" in frame.columns and bool(missing.any()):
        # A request that did not send its event time happened when it was scored: its arrival time.
        times = times.mask(missing, parse_event_times(frame["timestamp"]))
    inside = (times >= _utc(start)) & (times < _utc(end))
    return frame.loc[inside.fillna(False).to_numpy()].reset_index(drop=True), int(times.isna().sum()), column


@task(name="export-inference-window", cache_policy=NO_CACHE)
def export_inference_window(log_dir: str | None, model_name: str, start: str, end: str, output_path: str,
                            model_version: str | None = None, time_column: str | None = None,
                            arrival_start: str | None = None) -> WindowFile:
    """Write the predictions of a window (with any labels) to a Parquet file.

    Without ``time_column`` the window is by arrival time: the predictions logged in
    ``[start, end)``. With it, the window is by event time: the log is read from
    ``arrival_start`` on (None: all of it) and the rows whose ``time_column`` (the passthrough
    column the serving process logs under its own name, parsed) lies in ``[start, end)`` are kept,
    so a 90-day window of seasonal data holds every row whose event falls in those 90 days, whenever
    it was scored. Rows with no parseable event time are left out and counted. If no logged row has
    the column (traffic from a server that did not log it), the window falls back to arrival time and
    ``note`` says so.

    Args:
        log_dir: Inference log root (None: the embedded default).
        model_name: Registered model name.
        start: Window start, ISO 8601 (UTC when naive).
        end: Window end, ISO 8601 (UTC when naive).
        output_path: Parquet file to write.
        model_version: Only predictions of this version (None: all versions).
        time_column: The model's event-time column (the ``mlops.time_column`` tag), or None.
        arrival_start: With ``time_column``: earliest arrival time read (None: the whole log).

    Returns:
        The file, its row count, how many rows have a label, which time selected the rows, and the
        earliest arrival among them (``first_arrival``: where feedback for retraining starts).

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def window() -> int:
        ...     return export_inference_window(None, "macro-gdp", "2008-01-01", "2009-01-01", "/tmp/w.parquet",
        ...                                    time_column="date").rows
    """
    import pandas as pd

    from tasks.inference_log import read_inference_log

    logger = run_logger()
    if not time_column and (large := export_large_window(log_dir, model_name, start, end, output_path,
                                                         model_version)) is not None:
        return large  # above STREAM_ABOVE_ROWS rows: written batch by batch
    basis, unparsed, note = "arrival", 0, ""
    if time_column:
        frame = read_inference_log(log_dir, model_name, start=arrival_start, with_labels=True)
        selected, unparsed, used = select_event_window(frame, time_column, start, end)
        if used is None and len(frame):
            note = (f"the inference log has no '{time_column}' column (the model's event-time column): the window "
                    "is by arrival time. Send the time column with each request so the server logs it.")
            frame = read_inference_log(log_dir, model_name, start=start, end=end, with_labels=True)
        else:
            frame, basis = selected, "event"
            if unparsed:
                note = f"{unparsed} logged rows have no parseable '{time_column}' and were left out"
    else:
        frame = read_inference_log(log_dir, model_name, start=start, end=end, with_labels=True)
    if model_version is not None and len(frame):
        frame = frame[frame["model_version"].astype(str) == str(model_version)]
    path = Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    labeled = int(frame["label"].notna().sum()) if "label" in frame.columns else 0
    versions = sorted(frame["model_version"].dropna().astype(str).unique().tolist()) if len(frame) else []
    first = frame["timestamp"].min() if len(frame) else None
    by = f"event time '{time_column}'" if basis == "event" else "arrival time"
    logger.info("Window %s .. %s of %s by %s: %d predictions, %d labelled%s", start, end, model_name, by,
                len(frame), labeled, f" ({note})" if note else "")
    return WindowFile(path=str(path), rows=len(frame), labeled_rows=labeled, start=start, end=end,
                      versions=versions, time_basis=basis, time_column=time_column if basis == "event" else None,
                      unparsed_time_rows=unparsed, note=note,
                      first_arrival=None if first is None or pd.isna(first) else pd.Timestamp(first).isoformat())


def cast_labels(labels: pd.Series, like: pd.Series, target: str) -> pd.Series:
    """Cast ground-truth labels to the training target's dtype; a clear error when a label does not fit.

    Labels may arrive as another type than the target ("1" for 1, 1.0 for 1, "True" for True).
    Numbers are parsed, booleans read from true/false/1/0/yes/no, text targets get the label as text
    (``1.0`` -> ``"1"``), categorical targets must use a known category.

    Args:
        labels: The labels attached to logged predictions.
        like: The training target column (its dtype is the goal).
        target: The target's name, for messages.

    Returns:
        The labels with the target's dtype.

    Raises:
        MonitoringError: Naming the target, its dtype and sample labels that do not fit.

    Examples:
        >>> import pandas as pd
        >>> cast_labels(pd.Series(["1", "0"]), pd.Series([0, 1]), "churned").tolist()
        [1, 0]
    """
    import pandas as pd

    from blocks.task_metrics import plain_label

    types = pd.api.types
    labels = labels.reset_index(drop=True)

    def fail(bad: pd.Series, what: str) -> MonitoringError:
        sample = [plain_label(v) for v in bad.head(5).tolist()]
        return MonitoringError(f"Cannot use {len(bad)} attached label(s) as the target '{target}' ({like.dtype}): "
                               f"{sample} {what}. Attach labels of the training target's type (e.g. "
                               f"{[plain_label(v) for v in like.dropna().unique()[:3].tolist()]}).")

    if types.is_bool_dtype(like):
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        mapped = labels.map(lambda v: words.get(str(plain_label(v)).strip().lower()))
        if mapped.isna().any():
            raise fail(labels[mapped.isna()], "are not true/false")
        return mapped.astype(like.dtype)
    if types.is_numeric_dtype(like):
        numbers = pd.to_numeric(labels, errors="coerce")
        if numbers.isna().any():
            raise fail(labels[numbers.isna()], "are not numbers")
        if types.is_integer_dtype(like):
            fractional = numbers != numbers.round()
            if fractional.any():
                raise fail(labels[fractional], "are not whole numbers")
        return numbers.astype(like.dtype)
    if isinstance(like.dtype, pd.CategoricalDtype):
        known = {str(plain_label(c)): c for c in like.cat.categories}
        mapped = labels.map(lambda v: known.get(str(plain_label(v))))
        if mapped.isna().any():
            raise fail(labels[mapped.isna()], f"are not categories of the target {list(known)[:10]}")
        return mapped.astype(like.dtype)
    if types.is_datetime64_any_dtype(like):
        raise fail(labels, "cannot be a date target: a date is not a label")
    return labels.map(lambda v: str(plain_label(v))).astype(like.dtype if types.is_string_dtype(like) else object)


def _cast_like(values: pd.Series, like: pd.Series) -> pd.Series:
    """Cast a logged column to the training column's dtype (dates parsed); unchanged when impossible."""
    import pandas as pd

    values = values.reset_index(drop=True)
    if pd.api.types.is_datetime64_any_dtype(like):
        parsed = parse_event_times(values)
        return parsed if isinstance(like.dtype, pd.DatetimeTZDtype) else parsed.dt.tz_localize(None)
    if (pd.api.types.is_object_dtype(like) or pd.api.types.is_string_dtype(like)) \
            and pd.api.types.is_datetime64_any_dtype(values):
        return values.map(lambda v: None if pd.isna(v) else v.isoformat())
    try:
        return values.astype(like.dtype)
    except (TypeError, ValueError):
        return values


@task(name="build-feedback-dataset", cache_policy=NO_CACHE)
def build_feedback_dataset(base_file: str, log_dir: str | None, model_name: str, since: str, target: str,
                           output_path: str, min_window_rows: int = 1000,
                           time_column: str | None = None) -> FeedbackDataset:
    """Build the next training set from labelled predictions logged since ``since``.

    The labelled traffic is what the model meets now. With at least ``min_window_rows``
    labelled rows the training set is that window alone (a sliding window: the model
    learns the current distribution, so monitoring against its training data is clean
    again); with fewer, the window is appended to the versioned data. Logged rows become
    training rows: their features, and their label (cast to the target's dtype) as the target.
    The time column (``time_column``, else ``event_time`` when the data has one) takes the
    logged event time when the request carried it, else the arrival time.

    Args:
        base_file: The currently versioned training data (local file).
        log_dir: Inference log root (None: the embedded default).
        model_name: Registered model name.
        since: Earliest prediction time to use (arrival), ISO 8601.
        target: Target column of the training data.
        output_path: Parquet file to write.
        min_window_rows: Labelled rows from which the window replaces the versioned data.
        time_column: The data's event-time column (the ``mlops.time_column`` tag), or None.

    Returns:
        The new training file and its composition.

    Raises:
        MonitoringError: If the target is not in the data, or a label cannot be cast to its dtype.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def feedback(base: str) -> int:
        ...     return build_feedback_dataset(base, None, "penguins", "2026-01-01T00:00:00+00:00",
        ...                                   "species", "/tmp/train.parquet").feedback_rows
    """
    import pandas as pd

    from tasks.inference_log import feature_column, read_inference_log
    from tasks.sample_data import read_frame

    base = read_frame(base_file)
    if target not in base.columns:
        raise MonitoringError(f"The training data {base_file} has no target column '{target}' (columns: "
                              f"{list(base.columns)[:20]}): pass the target the model was trained on.")
    logged = read_inference_log(log_dir, model_name, start=since, with_labels=True)
    labelled = logged[logged["label"].notna()] if "label" in logged.columns else logged.iloc[0:0]
    time_col = time_column or ("event_time" if "event_time" in base.columns else None)
    feedback = pd.DataFrame(index=range(len(labelled)))
    for column in base.columns:
        if column == target:
            continue
        source = next((c for c in (column, feature_column(column)) if c in labelled.columns), None)
        if column == time_col:  # the logged event time; the arrival time where the request did not carry it
            arrival = parse_event_times(labelled["timestamp"]).reset_index(drop=True)
            if pd.api.types.is_datetime64_any_dtype(base[column]):
                logged_times = parse_event_times(labelled[source]).reset_index(drop=True) if source else arrival
                times = _cast_like(logged_times.where(logged_times.notna(), arrival), base[column])
            else:  # text dates stay as the client sent them (the data's own format)
                text = _cast_like(labelled[source], base[column]) if source else pd.Series([None] * len(arrival))
                times = text.where(text.notna(), arrival.map(lambda v: v.isoformat()))
            feedback[column] = times.to_numpy()
        elif source is not None:
            feedback[column] = _cast_like(labelled[source], base[column]).to_numpy()
    feedback[target] = cast_labels(labelled["label"], base[target], target).to_numpy()
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
