"""The ``batch-scoring`` flow: score a dataset (a DVC rev or a file) with the champion, write and log predictions."""

from __future__ import annotations

import datetime as dt

from prefect import flow
from prefect.runtime import flow_run
from pydantic import BaseModel

from blocks.settings import state_dir
from flows.common import DEFAULT_DATASET_PATH, DEFAULT_MODEL_NAME, load_dvc, load_mlflow, model_cache_dir
from flows.deploy_model import load_serving
from tasks.batch_scoring import score_dataset
from tasks.bentoml_packaging import resolve_model_version
from tasks.dvc_data import pull_dataset
from tasks.mlflow_registry import CHAMPION, download_model_version
from tasks.prefect_artifacts import publish_report


class BatchScoringSummary(BaseModel):
    """What one batch-scoring run did."""

    model_name: str
    model_version: str
    source: str
    rows: int
    output_file: str
    logged: int
    dropped: int
    prediction_counts: dict[str, int]

    def render(self) -> str:
        """Return a readable summary."""
        return "\n".join([
            f"model         {self.model_name} version {self.model_version}",
            f"data          {self.source}",
            f"rows          {self.rows} -> {self.output_file}",
            f"inference log {self.logged} logged, {self.dropped} dropped",
            "predictions   " + ", ".join(f"{k}: {v}" for k, v in sorted(self.prediction_counts.items())[:20]),
        ])


@flow(name="batch-scoring", log_prints=True)
def batch_scoring(
    data_file: str | None = None,
    data_rev: str = "HEAD",
    dataset_path: str = DEFAULT_DATASET_PATH,
    model_name: str = DEFAULT_MODEL_NAME,
    alias: str | None = CHAMPION,
    version: str | None = None,
    output_file: str | None = None,
    log_predictions: bool = True,
    mlflow_block: str | None = None,
    dvc_block: str | None = None,
    serving_block: str | None = None,
) -> BatchScoringSummary:
    """Score a dataset with the champion (or a given version), write the predictions, log them like online ones.

    Every parameter defaults to the embedded set-up: with no arguments this scores the dataset
    versioned in the embedded DVC repo at ``HEAD`` with the champion of ``churn-classifier``.

    Args:
        data_file: CSV / Parquet file to score; None scores ``dataset_path`` of the DVC repo at ``data_rev``.
        data_rev: Git revision of the data repository (a commit from a lineage tag, a branch, ``HEAD``).
        dataset_path: Path of the dataset inside the data repository.
        model_name: Registered model name.
        alias: Alias naming the version to score with (``champion``).
        version: Score with this version instead of the alias's.
        output_file: Parquet file for the predictions (default: under the state folder's ``batch-scores``).
        log_predictions: Also write every prediction to the inference log (``source = batch``).
        mlflow_block: Name of a saved ``MlflowServer`` block (None: embedded SQLite).
        dvc_block: Name of a saved ``DvcRepository`` block (None: embedded repo).
        serving_block: Name of a saved ``BentoMLServing`` block whose inference log to write (None: embedded).

    Returns:
        A :class:`BatchScoringSummary` (rows, output file, model version, records logged).

    Raises:
        RegistryError: The model, alias or version does not exist.
        DataVersioningError: The dataset is not tracked at ``data_rev`` or the file is unreadable.
        DataValidationError: The dataset lacks a column the model needs.

    Examples:
        >>> from flows.batch_scoring import batch_scoring
        >>> batch_scoring()  # doctest: +SKIP
        >>> batch_scoring(data_file="incoming/day7.parquet", version="3")  # doctest: +SKIP
    """
    mlflow_server = load_mlflow(mlflow_block)
    serving = load_serving(serving_block)
    home = state_dir()

    target = resolve_model_version(mlflow_server, model_name, alias, version)
    if data_file is None:
        data_repo = load_dvc(dvc_block)
        local = pull_dataset(data_repo, dataset_path, data_rev, str(home / "cache" / "data"))
        source = f"{data_repo.repo_url or data_repo.repo_path}/{dataset_path}@{data_rev}"
    else:
        local, source = data_file, data_file
    model_dir = download_model_version(mlflow_server, target, model_cache_dir(mlflow_server))
    batch_id = str(flow_run.id or "")[:8] or dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    output = output_file or str(home / "batch-scores" / f"{model_name}-v{target.version}-"
                                f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{batch_id}.parquet")
    result = score_dataset(target, model_dir, local, output, str(serving.log_path()) if log_predictions else None,
                           batch_id)
    summary = BatchScoringSummary(model_name=model_name, model_version=target.version, source=source,
                                  rows=result.rows, output_file=result.output_file, logged=result.logged,
                                  dropped=result.dropped, prediction_counts=result.prediction_counts)
    publish_report(f"{model_name}-batch-scoring", f"# {model_name}: batch scoring\n\n```\n{summary.render()}\n```",
                   [{"prediction": k, "rows": v} for k, v in sorted(result.prediction_counts.items())])
    print(summary.render())
    return summary
