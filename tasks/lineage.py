"""Lineage tag names and capture of where a run came from (code, data, pipeline run).

Every MLflow run and registered model version carries these tags; every bento carries
the registry name, version and run id in its labels.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

TAG_DATA_REV = "mlops.data.rev"
TAG_DATA_MD5 = "mlops.data.md5"
TAG_DATA_PATH = "mlops.data.path"
TAG_DATA_REPO = "mlops.data.repo"
TAG_DATA_REMOTE = "mlops.data.remote"
TAG_CODE_COMMIT = "mlops.code.commit"
TAG_CODE_DIRTY = "mlops.code.dirty"
TAG_CODE_VERSION = "mlops.code.version"
TAG_FLOW_RUN_ID = "mlops.prefect.flow_run_id"
TAG_FLOW_RUN_NAME = "mlops.prefect.flow_run_name"
TAG_DEPLOYMENT = "mlops.prefect.deployment"
#: The flow run's page in the Prefect UI (``<PREFECT_UI_URL>/runs/flow-run/<id>``); absent without a UI.
TAG_FLOW_RUN_URL = "mlops.prefect.flow_run_url"
TAG_ESTIMATOR = "mlops.estimator"
TAG_PARAMS = "mlops.params"
TAG_TRAINING_KEY = "mlops.training_key"
TAG_GATE_VERDICT = "mlops.gate.verdict"
TAG_GATE_REASONS = "mlops.gate.reasons"
TAG_GATE_CHAMPION = "mlops.gate.champion_version"
TAG_TRIGGER = "mlops.trigger"
TAG_TARGET = "mlops.target"
TAG_FEATURES = "mlops.features"
TAG_TEST_METRICS = "mlops.test_metrics"
#: What the model predicts: ``binary``, ``multiclass`` or ``regression`` (blocks/task_metrics.py).
TAG_TASK_TYPE = "mlops.task_type"
#: JSON list of the training label set (classification), JSON-native values.
TAG_CLASSES = "mlops.classes"
#: JSON value of the positive class of a binary task (its probability is the score).
TAG_POSITIVE_LABEL = "mlops.positive_label"
#: Event-time column of the data ("" when none): time splits and event-time monitoring windows.
TAG_TIME_COLUMN = "mlops.time_column"
#: JSON object column -> role (numeric, categorical, datetime, identifier, text, target).
TAG_COLUMN_ROLES = "mlops.column_roles"

#: Registered model a pipeline run trains (finds the unfinished runs of a model after a crash).
TAG_MODEL_NAME = "mlops.model_name"
#: JSON {package: version} of the libraries at training time (reproducing a run needs them).
TAG_LIBRARIES = "mlops.libraries"
#: The process that ran the pipeline: host, pid and its start time (tells a killed run from a live one).
TAG_PROCESS_HOST = "mlops.process.host"
TAG_PROCESS_PID = "mlops.process.pid"
TAG_PROCESS_STARTED = "mlops.process.started"
LIBRARIES = ("scikit-learn", "pandas", "numpy", "mlflow", "prefect")

_CODE_ROOT = Path(__file__).resolve().parent.parent


def code_version() -> dict[str, str]:
    """Return the git commit of the pipeline code (and whether the tree is dirty)."""
    from importlib import metadata

    out = {TAG_CODE_COMMIT: "unknown", TAG_CODE_DIRTY: "unknown"}
    try:
        out[TAG_CODE_VERSION] = metadata.version("prefect-mlops")
    except metadata.PackageNotFoundError:
        out[TAG_CODE_VERSION] = "unknown"
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_CODE_ROOT, capture_output=True, text=True,
                                timeout=10)
        if commit.returncode == 0:
            out[TAG_CODE_COMMIT] = commit.stdout.strip()
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=_CODE_ROOT,
                                    capture_output=True, text=True, timeout=10)
            out[TAG_CODE_DIRTY] = str(bool(status.stdout.strip())).lower()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return out


def library_versions() -> dict[str, str]:
    """Return the installed versions of the libraries that shape a trained model."""
    from importlib import metadata

    out = {}
    for package in LIBRARIES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def process_tags() -> dict[str, str]:
    """Return the host, pid and start time of this process as lineage tags."""
    from tasks.mlflow_locks import process_identity

    me = process_identity()
    return {TAG_PROCESS_HOST: me["host"], TAG_PROCESS_PID: me["pid"], TAG_PROCESS_STARTED: me["started"]}


def prefect_ui_url() -> str | None:
    """Return the Prefect UI's base URL: ``PREFECT_UI_URL``, else the API URL without ``/api``; None if ephemeral."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    if not ui:
        api = PREFECT_API_URL.value()
        ui = api.rstrip("/").removesuffix("/api") if api else None
    return ui.rstrip("/") if ui else None


def flow_run_url(flow_run_id: str | None) -> str | None:
    """Return the Prefect UI page of a flow run, or None without an id or a UI (ephemeral API).

    Examples:
        >>> flow_run_url(None) is None
        True
    """
    base = prefect_ui_url()
    return f"{base}/runs/flow-run/{flow_run_id}" if base and flow_run_id else None


@task(name="capture-lineage", cache_policy=NO_CACHE)
def capture_lineage(trigger: dict[str, Any] | None = None) -> dict[str, str]:
    """Capture code, libraries, the Prefect flow run (id, name, UI link) and deployment, the process, the trigger.

    Args:
        trigger: The event or schedule that started this run, if any.

    Returns:
        Lineage tags (data tags are added once the data is versioned).

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def traced() -> str:
        ...     return capture_lineage()["mlops.code.commit"]
    """
    from prefect.runtime import deployment, flow_run

    tags = code_version()
    tags[TAG_LIBRARIES] = json.dumps(library_versions(), sort_keys=True)
    tags.update(process_tags())
    tags[TAG_FLOW_RUN_ID] = str(flow_run.id or "")
    tags[TAG_FLOW_RUN_NAME] = str(flow_run.name or "")
    tags[TAG_DEPLOYMENT] = str(deployment.name or "ad-hoc")
    url = flow_run_url(tags[TAG_FLOW_RUN_ID])
    if url:
        tags[TAG_FLOW_RUN_URL] = url
    if trigger:
        tags[TAG_TRIGGER] = json.dumps(trigger, sort_keys=True, default=str)[:4000]
    return tags
