"""The smoke run of ``prefect-mlops ci``: the whole pipeline on a small sample, against throwaway servers.

Everything lives under one temporary folder that is removed at the end: the state folder
(``PREFECT_MLOPS_HOME``: MLflow on SQLite, the DVC repo and its local remote, the BentoML
store, the inference log), a throwaway ``prefect server start`` (unless an API URL is
given), and a serving endpoint on a free port. The checks:

* ``training converges``: the training flow completes and scikit-learn raised no ``ConvergenceWarning``;
* ``predictions finite``: the registered model's predictions on a held-out part of the sample
  (rows training never saw) hold no NaN, inf or missing value;
* ``gate verdict``: the promotion gate ran and gave a verdict with reasons;
* ``model serves``: ``deploy-model`` packages and serves the version, and ``/predict`` answers
  the held-out rows with one valid prediction each.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SMOKE_MODEL = "ci-smoke"


@dataclass
class Check:
    """One line of the CI report: a check, its outcome (None: skipped) and why."""

    name: str
    ok: bool | None
    reason: str

    def render(self) -> str:
        """Return the report line.

        Examples:
            >>> Check("gate verdict", None, "no model").render()
            'SKIP  gate verdict           no model'
        """
        status = {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]
        return f"{status}  {self.name:<22} {self.reason}"


@contextlib.contextmanager
def _isolated(state: Path) -> Iterator[None]:
    """Point the embedded state folder at ``state`` for the run; restore the environment after."""
    before = os.environ.get("PREFECT_MLOPS_HOME")
    os.environ["PREFECT_MLOPS_HOME"] = str(state)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PREFECT_MLOPS_HOME", None)
        else:
            os.environ["PREFECT_MLOPS_HOME"] = before


@contextlib.contextmanager
def convergence_warnings() -> Iterator[list[str]]:
    """Collect every scikit-learn ``ConvergenceWarning`` raised in this process (any thread) meanwhile.

    Examples:
        >>> import warnings
        >>> from sklearn.exceptions import ConvergenceWarning
        >>> with convergence_warnings() as seen:
        ...     warnings.warn("lbfgs failed to converge", ConvergenceWarning)
        >>> seen
        ['lbfgs failed to converge']
    """
    from sklearn.exceptions import ConvergenceWarning

    seen: list[str] = []
    original = warnings.showwarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, ConvergenceWarning):
            seen.append(str(message).splitlines()[0])
        else:
            original(message, category, *args, **kwargs)

    warnings.showwarning = show
    warnings.filterwarnings("always", category=ConvergenceWarning)  # not once per location: count every fit
    try:
        yield seen
    finally:
        warnings.showwarning = original
        with contextlib.suppress(ValueError):
            warnings.filters.remove(("always", None, ConvergenceWarning, None, 0))


def sample_frames(data: str | None, target: str | None, rows: int, holdout: float = 0.25,
                  seed: int = 0) -> tuple[Any, Any, str]:
    """Return (training rows, held-out rows, target) of a small sample of the data.

    Args:
        data: CSV, Parquet or JSON Lines file (None: the demo's generated customer data).
        target: Target column (None: ``churned``, the demo's).
        rows: Rows to sample at most.
        holdout: Share of the sample kept out of training for the prediction checks.
        seed: Sampling seed.

    Returns:
        The two frames and the target column.

    Examples:
        >>> train, held, target = sample_frames(None, None, rows=200)
        >>> (len(train), len(held), target)
        (150, 50, 'churned')
    """
    from tasks.datasets import read_dataset
    from tasks.sample_data import make_customer_frame

    frame = read_dataset(data) if data else make_customer_frame(rows, seed=seed)
    target = target or "churned"
    if target not in frame.columns:
        raise ValueError(f"target column {target!r} is not in {data or 'the sample data'}; columns: "
                         f"{', '.join(map(str, frame.columns))}. Pass --target.")
    if len(frame) > rows:
        frame = frame.sample(rows, random_state=seed)
    held = frame.sample(frac=holdout, random_state=seed + 1)
    return frame.drop(held.index).reset_index(drop=True), held.reset_index(drop=True), target


def bad_values(values: Any) -> list[str]:
    """Return the predictions that are missing, NaN or infinite (as text, at most 5).

    Examples:
        >>> bad_values([0.1, float("nan"), None, "yes", float("inf")])
        ['nan', 'None', 'inf']
    """
    found = []
    for value in list(values):
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            found.append(repr(value) if value is None else str(value))
        elif isinstance(value, list):
            found += [str(v) for v in value if isinstance(v, float) and not math.isfinite(v)]
    return found[:5]


def _trained(summary: Any, seen: list[str]) -> list[Check]:
    converged = Check("training converges", not seen,
                      f"{summary.task_type} model v{summary.model_version}, {summary.primary_metric} "
                      f"{summary.metrics.get(summary.primary_metric or '', float('nan')):.3f}" if not seen else
                      f"{len(seen)} ConvergenceWarning(s): {seen[0]}")
    gate = Check("gate verdict", bool(summary.verdict and summary.reasons),
                 f"{summary.verdict}: {'; '.join(summary.reasons)[:200]}" if summary.verdict else
                 "the gate gave no verdict")
    return [converged, gate]


def _predictions(summary: Any, held: Any, target: str, cache: Path) -> tuple[Check, list[dict[str, Any]]]:
    import json

    from flows.common import load_mlflow
    from tasks.lineage import TAG_FEATURES
    from tasks.mlflow_registry import download_model_version, version_info
    from tasks.model_evaluation import load_model

    server = load_mlflow(None)
    version = version_info(server.get_client().get_model_version(SMOKE_MODEL, summary.model_version))
    features = json.loads(version.tags.get(TAG_FEATURES) or "[]") or [c for c in held.columns if c != target]
    model = load_model(download_model_version.fn(server, version, str(cache)))
    frame = held[features]
    found = bad_values(model.predict(frame).tolist())
    if hasattr(model, "predict_proba"):
        found += bad_values([v for row in model.predict_proba(frame).tolist() for v in row])
    records = json.loads(frame.to_json(orient="records", date_format="iso"))
    if found:
        return Check("predictions finite", False, f"bad predictions on {len(frame)} held-out rows: "
                     f"{', '.join(found)}"), records
    return Check("predictions finite", True, f"{len(frame)} held-out rows, every prediction finite"), records


def _serves(summary: Any, serving_block: str, records: list[dict[str, Any]]) -> Check:
    import httpx

    from flows.deploy_model import deploy_model
    from tasks.serving_checks import prediction_problem

    deployed = deploy_model(model_name=SMOKE_MODEL, alias=None, version=summary.model_version,
                            serving_block=serving_block, containerize=False)
    response = httpx.post(f"{deployed.url}/predict", json=records, timeout=60.0)
    if response.status_code != 200:
        return Check("model serves", False, f"{deployed.url}/predict answered HTTP {response.status_code}: "
                     f"{response.text[:200]}")
    predictions = response.json().get("predictions") or []
    problems = [p for p in (prediction_problem(v, summary.task_type, None) for v in predictions) if p]
    problems += bad_values(predictions)
    if len(predictions) != len(records) or problems:
        return Check("model serves", False, f"/predict gave {len(predictions)} predictions for {len(records)} "
                     f"rows; {'; '.join(map(str, problems[:3]))}")
    return Check("model serves", True, f"bento {deployed.bento} at {deployed.url} answered /predict for "
                 f"{len(records)} rows")


def smoke_run(data: str | None = None, target: str | None = None, training: Any = None, rows: int = 400,
              prefect_api: str | None = None) -> list[Check]:
    """Run the whole pipeline on a small sample against throwaway servers and return the checks.

    Args:
        data: The user's data file (None: the demo's generated sample).
        target: Its target column (None: ``churned``).
        training: A ``TrainingSpec`` (None: the defaults for the task).
        rows: Rows sampled from the data.
        prefect_api: Use this Prefect API instead of starting a throwaway server.

    Returns:
        The checks, in order; a check that could not run is skipped with the reason.

    Examples:
        >>> from deployments.pipeline_smoke import smoke_run
        >>> [c.render() for c in smoke_run(rows=300)]  # doctest: +SKIP
        ['PASS  training converges     binary model v1, roc_auc 0.861', ...]
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    root = Path(tempfile.mkdtemp(prefix="mlops-ci-"))
    try:
        train, held, target = sample_frames(data, target, rows)
    except Exception as exc:  # noqa: BLE001 - a missing file, an unknown format, a missing target column
        shutil.rmtree(root, ignore_errors=True)
        return [Check("smoke sample", False, f"cannot read a sample of {data}: {exc}")]
    sample = Check("smoke sample", True, f"{len(train)} rows to train on, {len(held)} held out, from "
                   f"{data or 'the demo generator'} (target {target})")
    server = serving = None
    checks: list[Check] = []
    try:
        with _isolated(root / "state"):
            if prefect_api is None:
                from deployments.processes import start_prefect_server

                server = start_prefect_server(root / "prefect", ui=False, deadline_s=300)
            # Task results (the split and trial caches) under the temporary folder too: a cached trial from
            # an earlier CI run would skip the fit (and its ConvergenceWarning) and point at deleted files.
            with temporary_settings({PREFECT_API_URL: prefect_api or f"{server.url}/api",
                                     PREFECT_LOCAL_STORAGE_PATH: root / "results"}):
                try:
                    checks, serving = _pipeline(root, train, held, target, training)
                finally:
                    _drain()
    finally:
        with _isolated(root / "state"):
            if serving is not None:
                from tasks.serving_endpoint import stop_serving

                with contextlib.suppress(Exception):
                    stop_serving(serving)
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return [sample, *checks]


def _drain() -> None:
    """Send the logs and events still queued to the Prefect API before its server stops."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=10)


def _pipeline(root: Path, train: Any, held: Any, target: str, training: Any) -> tuple[list[Check], Any]:
    """Train, check predictions, deploy; return the checks and the serving block to stop."""
    from blocks.bentoml_serving import BentoMLServing
    from flows.continuous_training import continuous_training
    from tasks.system import free_port

    data_file = root / "sample.parquet"
    train.to_parquet(data_file, index=False)
    with convergence_warnings() as seen:
        try:
            summary = continuous_training(data_file=str(data_file), model_name=SMOKE_MODEL, target=target,
                                          training=training)
        except Exception as exc:  # noqa: BLE001 - any failure of the user's pipeline is the check's reason
            reason = f"{len(seen)} ConvergenceWarning(s): {seen[0]}; " if seen else ""
            return [Check("training converges", False, f"{reason}training failed: {type(exc).__name__}: "
                          f"{str(exc)[:300]}")], None
    checks = _trained(summary, list(seen))
    if not summary.model_version:
        return [*checks, Check("predictions finite", False, "training registered no model version")], None
    try:
        check, records = _predictions(summary, held, target, root / "models")
    except Exception as exc:  # noqa: BLE001
        return [*checks, Check("predictions finite", False, f"cannot score the held-out rows: {exc}")], None
    checks.append(check)
    failed = [c.name for c in checks if c.ok is False]
    if failed:
        return [*checks, Check("model serves", None, f"not deployed: {', '.join(failed)} failed")], None
    serving = BentoMLServing.embedded(port=free_port(), root=root / "serving")
    serving.supervise = False
    serving.save("ci-smoke-serving", overwrite=True)
    try:
        checks.append(_serves(summary, "ci-smoke-serving", records))
    except Exception as exc:  # noqa: BLE001
        checks.append(Check("model serves", False, f"deploy-model failed: {type(exc).__name__}: {str(exc)[:300]}"))
    return checks, serving
