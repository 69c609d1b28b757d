"""The deploy-model flow end to end: registry -> bento -> real ``bentoml serve`` behind one stable URL."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from flows.deploy_model import TAG_FAILED_REASON, deploy_model
from tasks.exceptions import ServingError
from tasks.inference_log import read_inference_log
from tasks.mlflow_alias_history import alias_history, set_model_alias
from tasks.serving_endpoint import serving_status, stop_serving
from tasks.system import process_alive

pytest.register_assert_rewrite("serving_fixtures")
from serving_fixtures import latest_artifact, serving_block_for, wait_for  # noqa: E402

pytest_plugins = ["serving_fixtures"]

BLOCK = "serving-tests-deploy"


@pytest.fixture(scope="module")
def block(session_home: Path, serving_registry: Any) -> Any:
    """A serving block with its own stable port; its processes are stopped after the module."""
    serving = serving_block_for(session_home, BLOCK)
    yield serving
    stop_serving(serving)


@pytest.fixture(scope="module")
def first(block: Any, serving_registry: Any) -> Any:
    return deploy_model(model_name=serving_registry.model, mlflow_block=serving_registry.mlflow_block,
                        serving_block=BLOCK)


def sample_record(serving_registry: Any) -> dict[str, Any]:
    """One record of the training sample, with the model's features."""
    features = json.loads(serving_registry.v1.tags["mlops.features"])
    return pd.read_parquet(serving_registry.sample_file)[features].head(1).to_dict("records")[0]


class Traffic:
    """Clients posting continuously to the stable URL from threads, recording every outcome."""

    def __init__(self, url: str, record: dict[str, Any], clients: int = 4) -> None:
        self.url = url
        self.record = record
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.versions: list[str] = []
        self.failures: list[str] = []
        self.sent: dict[str, str] = {}
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            n = 0
            while not self.stop.is_set():
                rid = f"traffic-{index}-{n}"
                n += 1
                try:
                    response = client.post("/predict", json=self.record, headers={"x-request-id": rid})
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.failures.append(f"{rid}: {type(exc).__name__}: {exc}")
                    continue
                with self.lock:
                    if response.status_code != 200:
                        self.failures.append(f"{rid}: HTTP {response.status_code} {response.text[:200]}")
                    else:
                        version = response.json()["model_version"]
                        self.versions.append(version)
                        self.sent[rid] = version

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        wait_for(lambda: len(self.versions) >= 20 or None, 30, "traffic flowing")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def test_deploy_serves_the_champion_on_the_stable_url(first: Any, block: Any, serving_registry: Any) -> None:
    assert first.status == "deployed" and first.model_version == "1" and first.previous_version is None
    assert first.url == block.endpoint_url() and first.dockerfile and Path(first.dockerfile).is_file()
    summary_artifact = latest_artifact(f"{serving_registry.model}-deployment-summary") or ""
    assert "v1 serves at" in summary_artifact and f"Dockerfile: [{first.bento}](" in summary_artifact  # on MLflow
    assert latest_artifact(f"{serving_registry.model}-dockerfile") is None  # the file is named, not pasted (issue 9)
    response = httpx.post(f"{first.url}/predict", json=sample_record(serving_registry))
    assert response.status_code == 200 and response.json()["model_version"] == "1"
    status = serving_status(block)
    assert status["state"] == "serving" and status["model_version"] == "1" and status["bento"] == first.bento
    assert status["lineage"]["run_id"] == serving_registry.v1.run_id
    assert status["lineage"]["data_rev"] == serving_registry.v1.tags["mlops.data.rev"]
    assert status["answering"]["model_version"] == "1" and status["since"] == first.since


def test_deploying_what_already_serves_changes_nothing(first: Any, serving_registry: Any) -> None:
    again = deploy_model(model_name=serving_registry.model, mlflow_block=serving_registry.mlflow_block,
                         serving_block=BLOCK)
    assert again.status == "unchanged" and again.backend_pid == first.backend_pid and process_alive(first.backend_pid)


def test_swap_under_continuous_traffic_fails_no_request(first: Any, block: Any, bentos: dict[str, Any],
                                                        serving_registry: Any) -> None:
    record = bentos["1"].input_example[0]
    with Traffic(block.endpoint_url(), record) as traffic:
        # Monitoring reads the log's window while traffic goes on (issue 12's load case, bounded).
        wait_for(lambda: len(read_inference_log(block.log_path(), serving_registry.model)) > 0 or None, 30,
                 "a log window to read during traffic")
        swapped = deploy_model(model_name=serving_registry.model, version="2",
                               mlflow_block=serving_registry.mlflow_block, serving_block=BLOCK)
        seen = len(traffic.versions)
        wait_for(lambda: len(traffic.versions) >= seen + 20 or None, 30, "traffic after the swap")
        during = read_inference_log(block.log_path(), serving_registry.model)
        assert set(during["model_version"]) >= {"1"} and during["request_id"].is_unique
    assert traffic.failures == []
    counts = Counter(traffic.versions)
    assert counts["1"] > 0 and counts["2"] > 0, counts
    assert traffic.versions[-1] == "2"
    assert swapped.status == "deployed" and swapped.previous_version == "1" and swapped.url == first.url
    assert not process_alive(first.backend_pid)  # the replaced backend was drained and stopped
    status = serving_status(block)
    assert status["model_version"] == "2" and status["history"][-1]["model_version"] == "1"

    def logged() -> Any:
        frame = read_inference_log(block.log_path(), serving_registry.model)
        frame = frame[frame["request_id"].isin(traffic.sent)]
        return frame if len(frame) == len(traffic.sent) else None

    frame = wait_for(logged, 30, "every traffic prediction in the inference log")
    assert dict(zip(frame["request_id"], frame["model_version"], strict=True)) == traffic.sent


def test_broken_version_leaves_the_old_one_serving_and_restores_the_alias(
        block: Any, broken_version: Any, serving_registry: Any) -> None:
    server = serving_registry.server()
    assert serving_status(block)["model_version"] == "2"
    set_model_alias.fn(server, serving_registry.model, "champion", "2", "v2 serves")
    set_model_alias.fn(server, serving_registry.model, "champion", broken_version.version, "promoted by test")
    with pytest.raises(ServingError, match="broken on purpose") as failure:
        deploy_model(model_name=serving_registry.model, mlflow_block=serving_registry.mlflow_block,
                     serving_block=BLOCK)
    assert "v2 keeps serving" in str(failure.value)
    client = server.get_client()
    assert str(client.get_model_version_by_alias(serving_registry.model, "champion").version) == "2"
    last = alias_history(server, serving_registry.model, "champion")[-1]
    assert (last.from_version, last.to_version) == ("3", "2") and "failed" in last.reason
    assert "broken on purpose" in client.get_model_version(serving_registry.model, "3").tags[TAG_FAILED_REASON]
    status = serving_status(block)
    assert status["state"] == "serving" and status["model_version"] == "2"
    response = httpx.post(f"{block.endpoint_url()}/predict", json=sample_record(serving_registry))
    assert response.status_code == 200 and response.json()["model_version"] == "2"
    assert "failed" in (latest_artifact(f"{serving_registry.model}-deployment-summary") or "")


def test_stop_leaves_no_process_behind(block: Any) -> None:
    status = serving_status(block)
    pids = [status["front"]["pid"], status["backend"]["pid"], status["supervisor"]["pid"],
            *status["backend"]["workers"]]
    assert status["supervisor"]["alive"] and status["backend"]["workers"]
    stopped = stop_serving(block)
    assert [s.split(" ")[0] for s in stopped["stopped"]] == ["supervisor", "backend", "front"], stopped
    deadline = time.monotonic() + 10
    while any(process_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(process_alive(p) for p in pids)
    assert serving_status(block)["state"] == "not deployed"
