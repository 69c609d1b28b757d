"""Reproducing a registered model version: its recorded settings, its exact data, the comparison.

A version made by ``continuous-training`` carries everything needed to make it again (see
:mod:`tasks.lineage`): the DVC data rev and md5, the estimator and the winning trial's parameters,
the target, task, features and column roles, the test metrics, the code commit and the library
versions. The split settings (seed, sizes, strategy) are read from the ``mlops.training_spec``
tag when training records it, else from the ``training`` parameter of the Prefect flow run that
trained it, else the run's ``split`` parameter with the defaults (and a warning).

These tasks read those records (:func:`read_recorded_training`, :func:`read_recorded_spec`), fetch
the exact bytes again through DVC and check their md5 (:func:`fetch_recorded_data`: a rev whose data
is gone from the cache and the remote is a :class:`~tasks.exceptions.DvcRemoteError` naming the rev,
the remote and what to do), and compare the new metrics with the recorded ones against a relative
tolerance (:func:`compare_metrics`), warning about code and library changes (:func:`check_environment`).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks.dvc_repository import DvcRepository
from blocks.mlflow_server import MlflowServer
from tasks import lineage as L
from tasks.datasets import _md5 as file_md5
from tasks.dvc_data import pull_dataset
from tasks.dvc_repo import read_dvc_md5
from tasks.exceptions import DataVersioningError, DvcRemoteError, RegistryError, TrainingConfigError
from tasks.logs import run_logger
from tasks.sklearn_spec import TaskInfo, TrainingSpec

#: ``name:version`` of the registered version a reproduction run reproduces.
TAG_REPRODUCES = "mlops.reproduces"
TAG_REPRODUCE_VERDICT = "mlops.reproduce.verdict"
TAG_REPRODUCE_TOLERANCE = "mlops.reproduce.tolerance"
TAG_REPRODUCE_MAX_DELTA = "mlops.reproduce.max_relative_delta"
TAG_REPRODUCE_WARNINGS = "mlops.reproduce.warnings"
TAG_REPRODUCE_RUN = "mlops.reproduce.recorded_run_id"
#: JSON of the concrete training spec, read first when present on the run or version.
TAG_TRAINING_SPEC = "mlops.training_spec"
#: Libraries whose version change may change a trained model (compared with the recorded ones).
MODEL_LIBRARIES = ("scikit-learn", "pandas", "numpy", "mlflow")
REPRODUCED, NOT_REPRODUCED = "reproduced", "not reproduced"
_REQUIRED = (L.TAG_DATA_REV, L.TAG_DATA_MD5, L.TAG_DATA_PATH, L.TAG_TARGET, L.TAG_ESTIMATOR, L.TAG_PARAMS,
             L.TAG_FEATURES, L.TAG_TASK_TYPE)


class RecordedTraining(BaseModel):
    """What a registered version records about how it was made (read from its tags and its MLflow run)."""

    model_name: str
    version: str
    run_id: str
    experiment_name: str
    data_rev: str
    data_md5: str
    data_path: str
    data_repo: str = ""
    data_remote: str = ""
    target: str
    task: TaskInfo
    estimator: str
    params: dict[str, Any]
    features: list[str]
    column_roles: dict[str, str] = Field(default_factory=dict)
    time_column: str = ""
    split: str = "stratified"
    spec_json: str = ""
    flow_run_id: str = ""
    code_commit: str = "unknown"
    code_dirty: str = "unknown"
    libraries: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    test_digest: str = ""

    @property
    def ref(self) -> str:
        """``name:version``."""
        return f"{self.model_name}:{self.version}"


class RecordedSpec(BaseModel):
    """The training spec a version was made with, where it was read from, and what had to be assumed."""

    spec: TrainingSpec
    source: str
    warnings: list[str] = Field(default_factory=list)


class MetricComparison(BaseModel):
    """One metric: recorded, reproduced, their difference and whether it is within the tolerance."""

    metric: str
    recorded: float | None
    reproduced: float | None
    delta: float | None
    relative: float | None
    within: bool


def _test_digest(client: Any, run_id: str) -> str:
    """Return the recorded test split's digest from the run's ``evaluation/evaluation.json`` ("" if unreadable)."""
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = client.download_artifacts(run_id, "evaluation/evaluation.json", folder)
            return str(json.loads(Path(path).read_text()).get("test_digest") or "")
    except Exception:  # noqa: BLE001 - an older run without the file: the check is skipped
        return ""


@task(name="read-recorded-training", cache_policy=NO_CACHE)
def read_recorded_training(mlflow_server: MlflowServer, model_name: str, version: str | None = None,
                           alias: str | None = None) -> RecordedTraining:
    """Read a registered version's lineage, settings and test metrics from its tags and its MLflow run.

    Args:
        mlflow_server: The MLflow block.
        model_name: Registered model name.
        version: Version number (wins over ``alias``).
        alias: Alias (``champion`` when neither is given).

    Returns:
        The :class:`RecordedTraining`.

    Raises:
        RegistryError: The model, version or alias does not exist, or the registry cannot be read.
        TrainingConfigError: The version lacks the lineage tags a reproduction needs.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def recorded(name: str) -> str:
        ...     return read_recorded_training(MlflowServer.embedded(), name, alias="champion").data_rev
    """
    client = mlflow_server.get_client()
    ref = f"{model_name}:{version}" if version else f"{model_name}@{alias or 'champion'}"
    try:
        mv = (client.get_model_version(model_name, version) if version
              else client.get_model_version_by_alias(model_name, alias or "champion"))
        run = client.get_run(mv.run_id) if mv.run_id else None
        experiment = client.get_experiment(run.info.experiment_id).name if run else "prefect-mlops"
    except Exception as exc:  # MlflowException for a missing model / version / alias, or the server
        where = mlflow_server.registry_uri or mlflow_server.tracking_uri
        raise RegistryError(f"Cannot read {ref} from the registry at {where}: {exc}. Check the model name and the "
                            "version or alias "
                            "(`prefect-mlops history --model NAME`).") from exc
    tags = {**(run.data.tags if run else {}), **(mv.tags or {})}
    missing = [t for t in _REQUIRED if not tags.get(t)]
    if missing or run is None:
        raise TrainingConfigError(f"{model_name}:{mv.version} cannot be reproduced: it lacks the lineage tags "
                                  f"{missing or ['its MLflow run']} (it was not made by continuous-training, or "
                                  "before they were recorded). Nothing was trained.")
    metrics = json.loads(tags.get(L.TAG_TEST_METRICS) or "{}") or {
        k.removeprefix("test_"): v for k, v in run.data.metrics.items() if k.startswith("test_")}
    task_type = tags[L.TAG_TASK_TYPE]
    info = TaskInfo(task_type=task_type, target=tags[L.TAG_TARGET], classes=json.loads(tags.get(L.TAG_CLASSES) or "[]"),
                    positive_label=json.loads(tags[L.TAG_POSITIVE_LABEL]) if tags.get(L.TAG_POSITIVE_LABEL) else None)
    return RecordedTraining(
        model_name=model_name, version=str(mv.version), run_id=mv.run_id, experiment_name=experiment,
        data_rev=tags[L.TAG_DATA_REV], data_md5=tags[L.TAG_DATA_MD5], data_path=tags[L.TAG_DATA_PATH],
        data_repo=tags.get(L.TAG_DATA_REPO, ""), data_remote=tags.get(L.TAG_DATA_REMOTE, ""), target=info.target,
        task=info, estimator=tags[L.TAG_ESTIMATOR], params=json.loads(tags[L.TAG_PARAMS]),
        features=json.loads(tags[L.TAG_FEATURES]), column_roles=json.loads(tags.get(L.TAG_COLUMN_ROLES) or "{}"),
        time_column=tags.get(L.TAG_TIME_COLUMN, ""), split=run.data.params.get("split", "stratified"),
        spec_json=tags.get(TAG_TRAINING_SPEC, ""), flow_run_id=tags.get(L.TAG_FLOW_RUN_ID, ""),
        code_commit=tags.get(L.TAG_CODE_COMMIT, "unknown"), code_dirty=tags.get(L.TAG_CODE_DIRTY, "unknown"),
        libraries=json.loads(tags.get(L.TAG_LIBRARIES) or "{}"), metrics={k: float(v) for k, v in metrics.items()},
        test_digest=_test_digest(client, mv.run_id))


@task(name="read-recorded-spec", cache_policy=NO_CACHE)
def read_recorded_spec(record: RecordedTraining) -> RecordedSpec:
    """Return the training spec (split, sizes, seed) a version was made with, and where it was found.

    The ``mlops.training_spec`` tag first, then the ``training`` parameter of the Prefect flow run
    that trained it (None there means the defaults), else the run's ``split`` with the defaults of
    the other fields, with a warning that the seed and sizes were assumed.

    Args:
        record: The recorded training.

    Returns:
        The :class:`RecordedSpec`.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def seed(record: RecordedTraining) -> int:
        ...     return read_recorded_spec(record).spec.seed
    """
    if record.spec_json:
        return RecordedSpec(spec=TrainingSpec.model_validate_json(record.spec_json), source=TAG_TRAINING_SPEC)
    problem = "no Prefect flow run was recorded"
    if record.flow_run_id:
        import uuid

        from prefect.client.orchestration import get_client

        try:
            with get_client(sync_client=True) as client:
                parameters = client.read_flow_run(uuid.UUID(record.flow_run_id)).parameters
            return RecordedSpec(spec=TrainingSpec.model_validate(parameters.get("training") or {}),
                                source=f"parameters of Prefect flow run {record.flow_run_id}")
        except Exception as exc:  # noqa: BLE001 - deleted run, another server: fall back, with a warning
            problem = f"the Prefect flow run {record.flow_run_id} cannot be read ({str(exc)[:200]})"
    run_logger().warning("Training spec of %s: %s; assuming the defaults", record.ref, problem)
    return RecordedSpec(spec=TrainingSpec(split=record.split), source="defaults", warnings=[
        f"the split seed and sizes were not recorded and {problem}: TrainingSpec defaults were assumed"])


def reproduction_spec(record: RecordedTraining, recorded: TrainingSpec) -> TrainingSpec:
    """Return the spec of one trial with the recorded estimator, parameters, task and features.

    Examples:
        >>> record = RecordedTraining(model_name="m", version="1", run_id="r", experiment_name="e",
        ...     data_rev="a", data_md5="b", data_path="d.parquet", target="y",
        ...     task=TaskInfo(task_type="binary", target="y", classes=[0, 1], positive_label=1),
        ...     estimator="sklearn.linear_model.LogisticRegression", params={"C": 1.0, "max_iter": 1000},
        ...     features=["x1"], column_roles={"x1": "numeric", "x2": "numeric", "y": "target"})
        >>> spec = reproduction_spec(record, TrainingSpec(seed=7, search_space={"C": [0.1, 1.0]}))
        >>> spec.seed, spec.search_space, spec.params["C"], spec.exclude_columns
        (7, {}, 1.0, ['x2'])
    """
    unused = {c for c in record.column_roles if c not in record.features and c != record.target}
    return recorded.model_copy(update={
        "task_type": record.task.task_type, "estimator": record.estimator, "params": dict(record.params),
        "search_space": {}, "search": "grid", "time_column": record.time_column or recorded.time_column,
        "exclude_columns": sorted(unused | set(recorded.exclude_columns or []))})


def _locate(data_repo: DvcRepository, md5: str) -> str:
    """Return where DVC holds an object: ``cache``, ``remote``, ``missing``, or ``unknown`` (remote unreadable)."""
    try:
        repo = data_repo.get_repo()
    except Exception:  # noqa: BLE001 - the pull reports it
        return "unknown"
    try:
        if any(db.exists(md5) for db in (repo.cache.local, repo.cache.legacy)):
            return "cache"
        remote = repo.cloud.get_remote(data_repo.remote_name)
        return "remote" if any(db.exists(md5) for db in (remote.odb, remote.legacy_odb)) else "missing"
    except Exception:  # noqa: BLE001 - unreachable remote: the pull says why
        return "unknown"
    finally:
        repo.close()


@task(name="fetch-recorded-data", cache_policy=NO_CACHE)
def fetch_recorded_data(data_repo: DvcRepository, record: RecordedTraining, cache_dir: str) -> str:
    """Fetch the exact bytes a version was trained on (its DVC rev) and check their md5 against the record.

    Args:
        data_repo: The data repository the version's data was versioned in.
        record: The recorded training.
        cache_dir: Folder for the local copy.

    Returns:
        The local file (``<cache_dir>/<md5><suffix>``).

    Raises:
        DataVersioningError: The rev is not in the data repository, or it names other bytes than recorded.
        DvcRemoteError: The data is gone from the local cache and the remote, or the remote cannot be
            read; the message names the rev, the remote and what to do.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def data(record: RecordedTraining) -> str:
        ...     return fetch_recorded_data(DvcRepository.embedded(), record, "/tmp/reproduce")
    """
    rev, path, remote = record.data_rev, record.data_path, f"{data_repo.remote_name!r} ({data_repo.remote_url})"
    md5 = read_dvc_md5(data_repo.repo_path, path, rev)
    if md5 is None:
        raise DataVersioningError(
            f"{record.ref} was trained on {path} at data rev {rev}, which the data repository {data_repo.repo_path} "
            f"does not have (recorded repository: {record.data_repo or '-'}): fetch that history into it (git "
            "fetch) or pass the dvc_block of the repository it was versioned in. Nothing was trained.")
    if md5 != record.data_md5:
        raise DataVersioningError(f"Data rev {rev} of {data_repo.repo_path} names {path} md5 {md5}, but {record.ref} "
                                  f"recorded md5 {record.data_md5}: the data repository's history was rewritten. "
                                  "Nothing was trained.")
    if _locate(data_repo, md5) == "missing":
        raise DvcRemoteError(
            f"The data of {record.ref} is gone: {path} at data rev {rev} (md5 {md5}) is neither in the local DVC "
            f"cache of {data_repo.repo_path} nor on DVC remote {remote}. Restore it before reproducing: push it from "
            f"a copy that still has it (`git checkout {rev[:12]} && dvc push -r {data_repo.remote_name} {path}`), or "
            f"pass the dvc_block of the remote that holds it (recorded remote: {record.data_remote or '-'}). "
            "Nothing was trained.")
    try:
        local = pull_dataset(data_repo, path, rev, cache_dir)
    except DvcRemoteError as exc:
        raise DvcRemoteError(f"Cannot fetch the data of {record.ref} ({path} at data rev {rev}, md5 {md5}) from DVC "
                             f"remote {remote}: {exc} Make the remote reachable and rerun; nothing was "
                             "trained.") from exc
    if (actual := file_md5(Path(local))) != md5:
        raise DataVersioningError(f"{path} at data rev {rev} was fetched with md5 {actual}, not the recorded {md5}: "
                                  f"the copy in {local} or the DVC cache is corrupt; delete it and rerun.")
    run_logger().info("Fetched %s at data rev %s: md5 %s as recorded", path, rev[:12], md5)
    return local


def compare_metrics(recorded: dict[str, float], reproduced: dict[str, float],
                    tolerance: float) -> tuple[list[MetricComparison], str]:
    """Compare every recorded metric with its reproduced value against a relative tolerance.

    A metric is within the tolerance when ``|new - old| <= tolerance * |old|`` (an absolute
    ``tolerance`` when the recorded value is 0). The verdict is ``reproduced`` only when every
    recorded metric was reproduced within it (and there was at least one).

    Examples:
        >>> rows, verdict = compare_metrics({"roc_auc": 0.80, "f1": 0.50}, {"roc_auc": 0.81, "f1": 0.50}, 0.02)
        >>> verdict, [(r.metric, r.within) for r in rows]
        ('reproduced', [('f1', True), ('roc_auc', True)])
        >>> compare_metrics({"roc_auc": 0.80}, {"roc_auc": 0.70}, 0.02)[1]
        'not reproduced'
    """
    rows = []
    for metric in sorted(set(recorded) | set(reproduced)):
        old, new = recorded.get(metric), reproduced.get(metric)
        if old is None or new is None:
            rows.append(MetricComparison(metric=metric, recorded=old, reproduced=new, delta=None, relative=None,
                                         within=old is None))  # a metric only computed now does not count
            continue
        if math.isnan(old) or math.isnan(new):
            rows.append(MetricComparison(metric=metric, recorded=old, reproduced=new, delta=None, relative=None,
                                         within=math.isnan(old) and math.isnan(new)))
            continue
        delta = new - old
        relative = abs(delta) / abs(old) if old else abs(delta)
        rows.append(MetricComparison(metric=metric, recorded=old, reproduced=new, delta=delta, relative=relative,
                                     within=relative <= tolerance))
    ok = bool(recorded) and all(r.within for r in rows)
    return rows, REPRODUCED if ok else NOT_REPRODUCED


def environment_warnings(record: RecordedTraining, current_code: dict[str, str], current_libraries: dict[str, str],
                         features: list[str], test_digest: str = "") -> list[str]:
    """Return what differs between the recorded training and this reproduction (code, libraries, features, split).

    Examples:
        >>> record = RecordedTraining(model_name="m", version="1", run_id="r", experiment_name="e",
        ...     data_rev="a", data_md5="b", data_path="d.parquet", target="y", task=TaskInfo(task_type="binary",
        ...     target="y"), estimator="E", params={}, features=["x"], code_commit="abc", code_dirty="false",
        ...     libraries={"scikit-learn": "1.5.0"})
        >>> environment_warnings(record, {"mlops.code.commit": "abc", "mlops.code.dirty": "false"},
        ...                      {"scikit-learn": "1.9.1"}, ["x"])
        ['scikit-learn 1.5.0 at training, 1.9.1 now']
    """
    out = []
    commit = current_code.get(L.TAG_CODE_COMMIT, "unknown")
    if record.code_commit == "unknown":
        out.append("the code commit of the training was not recorded")
    elif record.code_commit != commit:
        out.append(f"code commit differs: trained with {record.code_commit[:12]}, reproducing with {commit[:12]}")
    if record.code_dirty == "true":
        out.append("trained from a working tree with uncommitted changes: its commit does not fully describe the code")
    if current_code.get(L.TAG_CODE_DIRTY) == "true":
        out.append("reproducing from a working tree with uncommitted changes")
    if not record.libraries:
        out.append("library versions were not recorded at training time")
    for package in (p for p in MODEL_LIBRARIES if p in record.libraries):
        if (now := current_libraries.get(package, "not installed")) != record.libraries[package]:
            out.append(f"{package} {record.libraries[package]} at training, {now} now")
    if list(features) != list(record.features):
        out.append(f"features differ: recorded {record.features}, reproduced {list(features)}")
    if record.test_digest and test_digest and record.test_digest != test_digest:
        out.append(f"the test split differs from the recorded one (digest {record.test_digest} -> {test_digest})")
    return out


@task(name="check-environment", cache_policy=NO_CACHE)
def check_environment(record: RecordedTraining, features: list[str], test_digest: str = "") -> list[str]:
    """Compare this process's code commit and library versions (and the split) with the recorded ones.

    Args:
        record: The recorded training.
        features: The reproduced split's features.
        test_digest: The reproduced test split's digest (the evaluation's ``test_digest``).

    Returns:
        Warnings (empty when everything matches); each is also logged.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def drift(record: RecordedTraining) -> list[str]:
        ...     return check_environment(record, record.features)
    """
    warnings = environment_warnings(record, L.code_version(), L.library_versions(), features, test_digest)
    for warning in warnings:
        run_logger().warning("Reproducing %s: %s", record.ref, warning)
    return warnings
