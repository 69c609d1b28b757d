"""Asset lineage against the real Prefect server: data -> model materializations and their upstream links."""

from __future__ import annotations

import uuid

import httpx
from prefect import flow
from servers import wait_until

from tasks.prefect_assets import asset_key, data_asset, model_asset, record_materialization


def materializations(api: str, key: str) -> list[dict]:
    body = {"filter": {"event": {"name": ["prefect.asset.materialization.succeeded"]},
                       "resource": {"id": [key]}}, "limit": 10}
    response = httpx.post(f"{api}/events/filter", json=body, timeout=10)
    response.raise_for_status()
    return response.json()["events"]


def test_a_model_materialization_names_its_data_upstream_and_carries_its_version(prefect_server: str) -> None:
    repo = f"/srv/data repo {uuid.uuid4().hex[:6]}"  # a space: not allowed in a key, replaced
    data_key, model_key = data_asset(repo, "data/train.parquet"), model_asset("http://127.0.0.1:5000", "churn-x")

    @flow(name="asset-lineage")
    def lineage() -> str:
        data = record_materialization(data_key, "train.parquet", "dvc", {"rev": "abc123", "md5": "d41d8"})
        return record_materialization(model_key, "churn-x", "mlflow", {"version": "3", "run_id": "r1"},
                                      upstream=[data])

    assert lineage() == model_key
    assert " " not in data_key and data_key.startswith("dvc://srv/data-repo-")
    wait_until(lambda: bool(materializations(prefect_server, data_key)), 60, "the data materialization event")
    wait_until(lambda: bool(materializations(prefect_server, model_key)), 60, "the model materialization event")
    [event] = [e for e in materializations(prefect_server, model_key)
               if any(r["prefect.resource.id"] == data_key for r in e["related"])]
    assert event["payload"] == {"version": "3", "run_id": "r1"}
    roles = {r["prefect.resource.id"]: r["prefect.resource.role"] for r in event["related"]}
    assert roles[data_key] == "asset" and roles["mlflow"] == "asset-materialized-by"
    [data_event] = materializations(prefect_server, data_key)
    assert data_event["payload"] == {"rev": "abc123", "md5": "d41d8"}


def test_keys_refuse_nothing_a_user_may_name() -> None:
    key = asset_key("evidently", "model #1 (50% off)?", "drift report")
    assert key == "evidently://model--1-(50--off)-/drift-report"
