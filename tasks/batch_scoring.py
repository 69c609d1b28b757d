"""Batch scoring: score a dataset with a registered version, like the online service does.

It needs no BentoML: the prediction code is the one the online service runs, loaded from the MLflow model.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.logs import run_logger
from tasks.mlflow_registry import ModelVersionInfo


class ScoringResult(BaseModel):
    """What a batch scoring run wrote."""

    model_name: str
    model_version: str
    rows: int
    output_file: str
    logged: int
    dropped: int
    prediction_counts: dict[str, int]
    seconds: float


@task(name="score-dataset", cache_policy=NO_CACHE)
def score_dataset(version: ModelVersionInfo, model_dir: str, data_file: str, output_file: str,
                  log_dir: str | None = None, batch_id: str | None = None, chunk_rows: int = 50_000) -> ScoringResult:
    """Score a dataset with a registered model version, write the predictions and log them like online ones.

    The same prediction code as the online service (:class:`tasks._serving.predictor.Predictor`), so
    batch and online outputs agree. Each row gets a request id ``batch-<batch id>-<row>``, so its
    ground truth can be attached later; columns the model does not use (ids, target, timestamps)
    are carried through to the output.

    Args:
        version: The registered version.
        model_dir: Its local MLflow model folder.
        data_file: CSV or Parquet file to score.
        output_file: Parquet file to write (request id, model name / version, scored_at, the input
            columns, prediction, score).
        log_dir: Inference log folder (None: do not log).
        batch_id: Id of this batch (default: random); part of the request ids.
        chunk_rows: Rows scored per ``predict`` call.

    Returns:
        Rows scored, the output file, records logged / dropped, counts per predicted value.

    Raises:
        DataValidationError: If the dataset lacks a column of the model's signature or is unreadable.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def score(v, folder: str) -> int:
        ...     return score_dataset(v, folder, "data/new.parquet", "/tmp/scores.parquet").rows
    """
    import numpy as np
    import pandas as pd

    from tasks._serving.predictor import Predictor, load_mlflow_model
    from tasks.bentoml_packaging import read_mlflow_signature
    from tasks.exceptions import DataValidationError
    from tasks.inference_log import InferenceLogWriter
    from tasks.sample_data import read_frame

    logger = run_logger()
    started = time.perf_counter()
    columns, _ = read_mlflow_signature(model_dir)
    features = [c["name"] for c in columns]
    frame = read_frame(data_file)
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise DataValidationError(f"Cannot score {data_file} with {version.name} v{version.version}: it lacks the "
                                  f"model's column(s) {missing}.", [f"missing column {m}" for m in missing])
    predictor = Predictor(load_mlflow_model(model_dir))
    batch_id = batch_id or secrets.token_hex(6)
    scored_at = time.time()
    writer = InferenceLogWriter(log_dir, version.name, version.version, source="batch", start_thread=False,
                                max_buffered=max(len(frame), 1) + 1,
                                feature_types={c["name"]: str(c["type"]) for c in columns}) if log_dir else None
    predictions, scores = [], []
    for start in range(0, len(frame), chunk_rows):
        chunk = frame.iloc[start:start + chunk_rows][features].reset_index(drop=True)
        pred, score = predictor(chunk)
        predictions.append(pred)
        scores.append(np.full(len(chunk), np.nan) if score is None else score)
        if writer is not None:
            ids = [f"batch-{batch_id}-{i}" for i in range(start, start + len(chunk))]
            writer.log(ids, [scored_at] * len(chunk), chunk, pred, score)
    out = frame.reset_index(drop=True).copy()
    out.insert(0, "request_id", [f"batch-{batch_id}-{i}" for i in range(len(frame))])
    out.insert(1, "model_name", version.name)
    out.insert(2, "model_version", str(version.version))
    out.insert(3, "scored_at", pd.Timestamp(scored_at, unit="s", tz="UTC"))
    out["prediction"] = np.concatenate(predictions) if predictions else np.array([])
    out["score"] = np.concatenate(scores) if scores else np.array([])
    Path(output_file).parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(output_file, index=False)
    logged = dropped = 0
    if writer is not None:
        writer.close()
        logged, dropped = writer.written, writer.dropped
    counts = {str(k): int(v) for k, v in out["prediction"].value_counts().items()}
    seconds = time.perf_counter() - started
    logger.info("Scored %d rows of %s with %s v%s in %.1fs -> %s (logged %d, dropped %d)", len(out), data_file,
                version.name, version.version, seconds, output_file, logged, dropped)
    return ScoringResult(model_name=version.name, model_version=str(version.version), rows=len(out),
                         output_file=str(output_file), logged=logged, dropped=dropped, prediction_counts=counts,
                         seconds=seconds)
