"""The ``watch-data`` flow: notice new data and announce it, so that training starts by itself."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from pydantic import BaseModel

from blocks.settings import state_dir
from flows.common import DEFAULT_DATASET_PATH, DEFAULT_MODEL_NAME, load_dvc, load_mlflow
from tasks import lineage as L
from tasks.dvc_data import check_data_changed, init_data_repo, read_dvc_md5, version_dataset
from tasks.events import DATA_VERSIONED, emit_model_event
from tasks.mlflow_registry import CHAMPION, get_alias_version

#: Resource label of the events this flow emits; the training deployment's trigger matches it.
ORIGIN = "data-watch"


class DataWatchResult(BaseModel):
    """What one look at the data found."""

    changed: bool
    md5: str | None
    reference_md5: str | None
    rev: str | None
    event_id: str | None = None


def incoming_file(model_name: str) -> Path:
    """Return the default drop location of new data for a model."""
    return state_dir() / "incoming" / model_name / "latest.parquet"


@flow(name="watch-data", log_prints=True)
def watch_data(
    model_name: str = DEFAULT_MODEL_NAME,
    incoming_path: str | None = None,
    dataset_path: str = DEFAULT_DATASET_PATH,
    mlflow_block: str | None = None,
    dvc_block: str | None = None,
) -> DataWatchResult:
    """Compare the newest data with the data the champion was trained on; version and announce a change.

    Two sources of new data: a drop file (``incoming_path``, default
    ``<state>/incoming/<model>/latest.parquet``), which is versioned with DVC when its
    content hash differs; or a new commit of the dataset in the data repository (pushed
    by someone else). Either way, if the data now differs from the champion's
    ``mlops.data.md5``, a ``mlops.data.versioned`` event with ``mlops.origin=data-watch``
    is emitted; the ``continuous-training/on-new-data`` deployment listens for it.

    Args:
        model_name: Registered model name.
        incoming_path: Drop file to watch (None: the default drop location, if it exists).
        dataset_path: Path of the dataset inside the data repository.
        mlflow_block: Name of a saved ``MlflowServer`` block (None: embedded).
        dvc_block: Name of a saved ``DvcRepository`` block (None: embedded).

    Returns:
        A :class:`DataWatchResult`.

    Examples:
        >>> from flows.watch_data import watch_data
        >>> watch_data(incoming_path="/data/drop/customers.parquet").changed  # doctest: +SKIP
        True
    """
    logger = get_run_logger()
    data_repo = load_dvc(dvc_block)
    mlflow_server = load_mlflow(mlflow_block)
    champion = get_alias_version(mlflow_server, model_name, CHAMPION)
    reference = champion.tags.get(L.TAG_DATA_MD5) if champion else None
    init_data_repo(data_repo)
    drop = Path(incoming_path) if incoming_path else incoming_file(model_name)
    if drop.is_file():
        version_dataset(data_repo, str(drop), dataset_path, f"New data from {drop.name}")
    if read_dvc_md5(data_repo.repo_path, dataset_path) is None:
        logger.info("No dataset %s yet and no drop file at %s", dataset_path, drop)
        return DataWatchResult(changed=False, md5=None, reference_md5=reference, rev=None)
    change = check_data_changed(data_repo, dataset_path, reference)
    result = DataWatchResult(changed=change.changed, md5=change.md5, reference_md5=reference, rev=change.rev)
    if change.changed:
        result.event_id = emit_model_event(
            DATA_VERSIONED, model_name,
            {"dataset_path": dataset_path, "rev": change.rev, "md5": change.md5, "new_commit": True,
             "reference_md5": reference},
            labels={"mlops.origin": ORIGIN})
        logger.info("Data of %s changed (md5 %s, champion trained on %s): announced", model_name, change.md5,
                    reference)
    return result
