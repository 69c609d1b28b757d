"""The whole loop, with defaults only, on real datasets we did not generate.

For each bundled dataset (tests/datasets_matrix.py): version the user's file with DVC, validate it,
train with the inferred task type, gate, register, serve it behind a stable URL, send traffic (one
record and batches), attach the ground truth, monitor, and retrain on the labelled traffic. Each step
asserts what a user would check: a verdict with a stated reason, a prediction of the right type from
the endpoint, a monitoring verdict. A table of the results is written to the session folder
(``dataset-matrix.md``) and printed with ``pytest -s``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from datasets_matrix import DATASETS, MatrixDataset
from mlflow import MlflowClient
from servers import wait_until
from serving_fixtures import serving_block_for

pytest_plugins = ["serving_fixtures"]

ROWS: list[dict[str, Any]] = []


@pytest.fixture(scope="module")
def matrix_serving(session_home: Path, prefect_server: str):
    from tasks.serving_endpoint import stop_serving

    block = serving_block_for(session_home, "matrix-serving")
    yield block
    stop_serving(block)
    if ROWS:
        header = "| dataset | task type | metric | verdict | endpoint answer | monitoring | wall time |"
        lines = [header, "|" + "---|" * 7]
        lines += [f"| {r['dataset']} | {r['task_type']} | {r['metric']} | {r['verdict']} | {r['answer']} | "
                  f"{r['monitoring']} | {r['seconds']:.1f} s |" for r in ROWS]
        table = "\n".join(lines)
        (session_home / "dataset-matrix.md").write_text(table + "\n")
        print("\n" + table)


def _records(frame: Any, columns: list[str]) -> list[dict[str, Any]]:
    return json.loads(frame[columns].to_json(orient="records", date_format="iso"))


def _check_prediction(dataset: MatrixDataset, prediction: Any, classes: list[Any]) -> None:
    if dataset.task_type == "regression":
        assert isinstance(prediction, int | float) and math.isfinite(prediction), prediction
    else:
        assert prediction in classes, (prediction, classes)


def _check_first_version(dataset: MatrixDataset, first: Any, tags: dict[str, str], client: MlflowClient) -> None:
    """The first version's lineage: task type, training labels, what the model was given, the gate's record."""
    primary = {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "rmse"}[dataset.task_type]
    assert primary in first.metrics, first.render()
    assert any(r.startswith(f"floor {'r2' if dataset.task_type == 'regression' else primary}")
               for r in first.reasons), first.render()
    classes = json.loads(tags["mlops.classes"])
    if dataset.task_type == "regression":
        assert classes == [] and "mlops.positive_label" not in tags
    else:
        assert classes == sorted(dataset.load()[dataset.target].dropna().unique().tolist())
    features, roles = json.loads(tags["mlops.features"]), json.loads(tags["mlops.column_roles"])
    assert dataset.target not in features and roles[dataset.target] == "target"
    assert all(roles[f] in {"numeric", "categorical", "boolean", "datetime"} for f in features)
    if dataset.name == "penguins":
        assert roles["island"] == "categorical" and roles["sex"] == "categorical"
    compared = json.loads(tags["mlops.gate.compared"])
    assert compared["champion_scored"] is False and compared["primary_metric"] == primary
    run = client.get_run(first.run_id)
    assert f"test_{primary}" in run.data.metrics and run.data.tags["mlops.task_type"] == dataset.task_type


@pytest.mark.parametrize("name", list(DATASETS))
def test_whole_loop_with_defaults(name: str, mlflow_block_name: str, mlflow_server, matrix_serving,
                                  session_home: Path) -> None:
    from flows.continuous_training import continuous_training
    from flows.deploy_model import deploy_model
    from flows.monitor_model import monitor_model
    from tasks.inference_log import attach_ground_truth

    started = time.perf_counter()
    dataset = DATASETS[name]
    model = f"matrix-{name.replace('_', '-')}"
    user_file = dataset.write(session_home / "matrix" / "user-files")
    common = dict(model_name=model, target=dataset.target, mlflow_block=mlflow_block_name,
                  dataset_path=f"data/{model}.parquet")

    # 1. Version, validate, train, gate, register: defaults only.
    first = continuous_training(data_file=str(user_file), **common)
    assert first.reasons and all(r.strip() for r in first.reasons), first.render()
    client = MlflowClient(tracking_uri=mlflow_server.url)
    version = client.get_model_version(model, first.model_version)
    assert version.tags["mlops.task_type"] == dataset.task_type
    metric = next(k for k in ("roc_auc", "f1_macro", "rmse") if k in first.metrics)
    assert first.promoted, first.render()  # each of these datasets is learnable: the first model must pass
    classes = json.loads(version.tags.get("mlops.classes") or "[]")
    features = json.loads(version.tags["mlops.features"])
    time_column = version.tags.get("mlops.time_column") or None
    _check_first_version(dataset, first, version.tags, client)

    # 2. Serve it and ask it, as a client would.
    deployed = deploy_model(model_name=model, mlflow_block=mlflow_block_name, serving_block="matrix-serving")
    frame = dataset.load()
    sent = features + ([time_column] if time_column else [])
    traffic = frame.sample(n=max(300, len(frame)), replace=len(frame) < 300, random_state=1).reset_index(drop=True)
    # New customers are not old rows sent again: jitter the measured (float) features by 0.5 %.
    rng = np.random.default_rng(1)
    for column in [c for c in features if traffic[c].dtype == "float64"]:
        traffic[column] = (traffic[column] * rng.normal(1.0, 0.005, len(traffic))).round(4)
    records = _records(traffic, sent)
    with httpx.Client(base_url=deployed.url, timeout=30.0) as http:
        one = http.post("/predict", json=records[0])
        assert one.status_code == 200, one.text
        _check_prediction(dataset, one.json()["prediction"], classes)
        labels: dict[str, Any] = {}
        window_start = dt.datetime.now(dt.UTC)
        for start in range(0, len(records), 100):
            batch = http.post("/predict", json=records[start:start + 100])
            assert batch.status_code == 200, batch.text
            body = batch.json()
            for prediction in body["predictions"]:
                _check_prediction(dataset, prediction, classes)
            truth = traffic[dataset.target].iloc[start:start + 100].tolist()
            labels.update(zip(body["request_ids"], truth, strict=True))
    answer = one.json()["prediction"]
    answer = f"{answer:.1f}" if isinstance(answer, float) else repr(answer)

    # 3. Ground truth arrives; monitoring gives a verdict with the task's metric.
    serving = matrix_serving
    attach_ground_truth(str(serving.log_path()), model, labels)
    from tasks.inference_log import read_inference_log

    wait_until(lambda: len(read_inference_log(str(serving.log_path()), model, start=window_start)) >= len(labels),
               60, "the inference log")
    window: dict[str, Any] = {"window_hours": (dt.datetime.now(dt.UTC) - window_start).total_seconds() / 3600 + 0.01}
    if time_column:  # event-time windows: the whole history of the series
        window = {"window_hours": 24 * 366 * 80, "window_end": "2030-01-01T00:00:00+00:00"}
    result = monitor_model(model_name=model, mlflow_block=mlflow_block_name, serving_block="matrix-serving",
                           emit_events=False, **window)
    assert result.verdict in {"healthy", "drift", "decay", "drift+decay"}, result.render()
    assert result.labeled_rows == len(labels), result.render()
    assert result.performance is not None and result.performance.primary_metric in first.metrics, result.render()

    # 4. Retrain on the labelled traffic: a new version, gated against the champion, with a stated reason.
    since = (window_start - dt.timedelta(seconds=1)).isoformat()
    second = continuous_training(feedback_since=since, serving_block="matrix-serving", **common)
    assert second.model_version != first.model_version and second.reasons, second.render()
    assert second.champion_before == first.model_version

    ROWS.append({"dataset": f"{name} ({dataset.suffix[1:]})", "task_type": dataset.task_type,
                 "metric": f"{metric} {first.metrics[metric]:.3f}",
                 "verdict": f"v{first.model_version} {first.verdict}; retrain v{second.model_version} {second.verdict}",
                 "answer": answer, "monitoring": f"{result.verdict} ({result.performance.primary_metric} "
                 f"{result.performance.current_value:.3f})", "seconds": time.perf_counter() - started})
