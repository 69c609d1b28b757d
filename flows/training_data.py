"""The data stage of continuous training: stage -> contract -> validate -> version -> pull.

Data that breaks its contract never becomes the data repo's HEAD: the incoming file is read,
checked against the model's contract (inferred from the first dataset) and only then
versioned (``dvc add`` + push + commit). Rejected data is kept under
``<state>/rejected/<md5>/`` with ``violations.json``. A retrain with no new file validates
the data HEAD names, too.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from blocks.data_contract import DataContract
from blocks.dvc_repository import DvcRepository
from blocks.task_metrics import TASK_TYPES
from tasks.data_validation import ValidationReport, reject_dataset, resolve_data_contract, validate_dataset
from tasks.datasets import stage_dataset
from tasks.dvc_data import DatasetVersion, get_dataset_version, pull_dataset, version_dataset
from tasks.events import DATA_VALIDATION_FAILED, DATA_VERSIONED, emit_model_event
from tasks.prefect_artifacts import publish_report
from tasks.prefect_assets import data_asset, record_materialization


class PreparedData(BaseModel):
    """Validated, versioned data ready for training."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    version: DatasetVersion
    local_file: str
    contract: DataContract
    report: ValidationReport


def declared_task_type(task_type: str | None) -> str | None:
    """Return a task type the contract can use (binary / multiclass / regression), None to infer it."""
    return task_type if task_type in TASK_TYPES else None


def _fail(model_name: str, dataset_path: str, rev: str | None, report: ValidationReport, where: str) -> None:
    emit_model_event(DATA_VALIDATION_FAILED, model_name, {
        "dataset_path": dataset_path, "rev": rev, "md5": report.md5, "rejected_path": where or None,
        "violations": [v.message for v in report.violations]})
    publish_report(f"{model_name}-validation",
                   f"# Data validation failed: {report.dataset}\n\nNothing was versioned, trained or promoted. "
                   + (f"The rejected data and `violations.json` are in `{where}`.\n\n" if where else "\n\n")
                   + "\n".join(f"- **{v.check}** {v.message}" for v in report.violations))


def prepare_training_data(data_repo: DvcRepository, data_file: str | None, dataset_path: str, model_name: str,
                          target: str, contract: DataContract | None, contract_path: str, home: Path,
                          task_type: str | None = None) -> PreparedData:
    """Validate incoming data against the model's contract, and only then version it; pull it by rev.

    Call inside a flow (it runs tasks). With ``data_file`` None, the dataset HEAD names is validated.

    Args:
        data_repo: The initialised data repository.
        data_file: New data (CSV, Parquet or JSON Lines), or None to use the versioned data.
        dataset_path: Path of the dataset inside the data repository (its suffix is the stored format).
        model_name: Registered model name (events, reports, contract).
        target: Target column.
        contract: A saved contract to use, or None for the model's stored (or first inferred) one.
        contract_path: Where the model's inferred contract is stored.
        home: The state folder (pull cache and rejected data live under it).
        task_type: Declared task type (None or an unknown value: inferred from the target).

    Returns:
        A :class:`PreparedData`.

    Raises:
        DataValidationError: The data broke its contract (naming the user's file and where the
            rejected data and its violations are kept); HEAD still points at the last good data.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def prepare(path: str) -> str:
        ...     repo = DvcRepository.embedded()
        ...     return prepare_training_data(repo, path, "data/train.parquet", "m", "y", None,
        ...                                  "/tmp/m.json", Path("/tmp/state")).version.rev
    """
    cache = str(home / "cache" / "data")
    declared = declared_task_type(task_type)
    if data_file is not None:
        staged = stage_dataset(data_file, dataset_path, cache)  # same bytes and name as a later pull
        local_file, name, version = staged.path, data_file, None
    else:
        version = get_dataset_version(data_repo, dataset_path)
        local_file = pull_dataset(data_repo, dataset_path, version.rev, cache)
        name = f"{dataset_path}@{version.rev[:12]}"
    contract = contract or resolve_data_contract(local_file, contract_path, target, task_type=declared, name=name)
    report = validate_dataset(local_file, contract, name=name)
    if not report.passed:
        where = ""
        if data_file is not None:
            report.md5 = staged.md5
            where = reject_dataset(local_file, report, str(home / "rejected"), source=data_file, md5=staged.md5)
        _fail(model_name, dataset_path, version.rev if version else None, report, where)
        report.raise_for_violations(
            f"The rejected data and violations.json are kept in {where}; the data repo's HEAD is unchanged."
            if where else f"{name} is already versioned: fix it with a new data_file, or update the contract.")
    if version is None:
        message = f"Version {dataset_path} from {Path(data_file).name} (md5 {staged.md5})"
        version = version_dataset(data_repo, local_file, dataset_path, message)
        emit_model_event(DATA_VERSIONED, model_name, {"dataset_path": dataset_path, "rev": version.rev,
                                                      "md5": version.md5, "new_commit": version.new_commit},
                         labels={"mlops.origin": "continuous-training"})
        record_materialization(data_asset(data_repo.repo_url or data_repo.repo_path, dataset_path), dataset_path,
                               "dvc", {"rev": version.rev, "md5": version.md5, "source": Path(data_file).name})
        local_file = pull_dataset(data_repo, dataset_path, version.rev, cache)
    return PreparedData(version=version, local_file=local_file, contract=contract, report=report)


def known_time_column(contract: DataContract | None, contract_path: str) -> str | None:
    """Return the event-time column of the model's contract (a saved one, else the stored one), if any."""
    if contract is not None:
        return contract.time_column
    path = Path(contract_path)
    return DataContract.from_file(path).time_column if path.is_file() else None
