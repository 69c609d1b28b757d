"""Checks of a serving endpoint: the smoke request built from the model's input example, and the live check.

A backend is switched live only after :func:`smoke_test_server` got the right model version and
predictions of the right type for the model's task (:func:`prediction_problem`) for one record
and for a batch; :func:`verify_live_endpoint` checks the stable URL after the switch.
"""

from __future__ import annotations

import math
import time
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from blocks.bentoml_serving import BentoMLServing
from tasks.bentoml_packaging import BentoInfo
from tasks.exceptions import ServingError
from tasks.logs import run_logger

__all__ = ["SmokeResult", "example_records", "prediction_problem", "smoke_test_server", "verify_live_endpoint"]


class SmokeResult(BaseModel):
    """The answer to the smoke request."""

    url: str
    status: int
    records: int
    predictions: list[Any]
    model_version: str | None
    latency_ms: float



def prediction_problem(prediction: Any, task_type: str | None, classes: list[Any] | None) -> str | None:
    """Return what is wrong with a prediction for the model's task type (None: it has the right type).

    A classifier answers one of its training labels (compared as text when the JSON types differ,
    e.g. ``"1"`` vs ``1``); a regressor a finite number. Without a known task type (a bento of an
    older version) any non-null scalar is accepted.

    Examples:
        >>> prediction_problem("setosa", "multiclass", ["setosa", "virginica"]) is None
        True
        >>> prediction_problem(float("nan"), "regression", None)
        'nan is not a finite number'
    """
    if prediction is None or isinstance(prediction, list | dict):
        return f"{prediction!r} is not a single label or number"
    if task_type == "regression":
        if isinstance(prediction, bool) or not isinstance(prediction, int | float) or not math.isfinite(prediction):
            return f"{prediction!r} is not a finite number"
    elif task_type in ("binary", "multiclass") and classes:
        if prediction not in classes and str(prediction) not in {str(c) for c in classes}:
            return f"{prediction!r} is not one of the model's classes {classes}"
    return None


def example_records(bento: BentoInfo) -> list[dict[str, Any]]:
    """Return the model's input example records, from which smoke and load requests are built.

    Raises:
        ServingError: If the bento has no input example.

    Examples:
        >>> example_records(bento)[0]  # doctest: +SKIP
        {'tenure': 3, 'monthly_charges': 70.5, 'contract': 'month-to-month'}
    """
    if not bento.input_example:
        raise ServingError(f"bento {bento.tag} has no input example to build a smoke request from: log the model "
                           "with an input_example.")
    return bento.input_example


@task(name="smoke-test-server", cache_policy=NO_CACHE)
def smoke_test_server(url: str, bento: BentoInfo, timeout_s: float = 30.0) -> SmokeResult:
    """Send the model's input example to a server and check that the right model answers it.

    Both shapes are checked: the first example record alone and the examples as a batch.

    Args:
        url: Base URL of the server (a backend or the stable endpoint).
        bento: The bento that should answer.
        timeout_s: Timeout of each request.

    Returns:
        The status, the predictions and the model version that answered.

    Raises:
        ServingError: If a request fails, is not answered 200, or another model version answers.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def smoke(url: str, b: BentoInfo) -> list:
        ...     return smoke_test_server(url, b).predictions
    """
    import httpx

    logger = run_logger()
    records = example_records(bento)
    started = time.perf_counter()
    try:
        with httpx.Client(base_url=url, timeout=timeout_s) as client:
            request_id = f"smoke-{int(time.time() * 1000)}"  # logged like any prediction; monitoring can skip "smoke-"
            single = client.post("/predict", json=records[0], headers={"x-request-id": request_id})
            batch = client.post("/predict", json=records, headers={"x-request-id": f"{request_id}-batch"}) \
                if single.status_code == 200 else single
    except httpx.HTTPError as exc:
        raise ServingError(f"The smoke request to {url} for {bento.tag} failed: {type(exc).__name__}: {exc}") from exc
    latency = (time.perf_counter() - started) * 1000
    for response in (single, batch):
        if response.status_code != 200:
            raise ServingError(f"The smoke request to {url} for {bento.tag} was answered HTTP "
                               f"{response.status_code}: {response.text[:1000]}")
    body = batch.json()
    version = str(body.get("model_version"))
    if version != bento.model_version or len(body.get("predictions", [])) != len(records):
        raise ServingError(f"The smoke request to {url} was answered by model version {version} with "
                           f"{len(body.get('predictions', []))} predictions; expected version {bento.model_version} "
                           f"and {len(records)}.")
    answers = [("the single record", single.json().get("prediction"))]
    answers += [(f"batch record {i}", p) for i, p in enumerate(body["predictions"])]
    for where, prediction in answers:
        problem = prediction_problem(prediction, bento.task_type, bento.classes)
        if problem:
            raise ServingError(f"The smoke request to {url} for {bento.tag} got a wrong prediction for {where}: "
                               f"{problem}. The model or the service returns the wrong output type for a "
                               f"{bento.task_type} model; fix the model (or the service) and deploy again.")
    logger.info("Smoke request to %s answered by %s v%s: %s", url, bento.model_name, version, body["predictions"])
    return SmokeResult(url=url, status=batch.status_code, records=len(records), predictions=body["predictions"],
                       model_version=version, latency_ms=latency)


@task(name="verify-live-endpoint", cache_policy=NO_CACHE)
def verify_live_endpoint(serving: BentoMLServing, bento: BentoInfo) -> dict[str, Any]:
    """Check through the stable URL that the bento serves: ``/model`` names it and a smoke request succeeds.

    Args:
        serving: The BentoML serving block.
        bento: The bento that should serve.

    Returns:
        The endpoint's ``/model`` answer.

    Raises:
        ServingError: If another bento answers or the smoke request fails.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def check(b: BentoInfo) -> str:
        ...     return verify_live_endpoint(BentoMLServing.embedded(), b)["model_version"]
    """
    import httpx

    url = serving.endpoint_url()
    try:
        info = httpx.get(f"{url}/model", timeout=10.0).json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ServingError(f"The live endpoint {url} does not answer /model: {exc}") from exc
    if info.get("bento_tag") != bento.tag:
        raise ServingError(f"The live endpoint {url} serves {info.get('bento_tag')}, not {bento.tag}.")
    smoke_test_server.fn(url, bento)
    return info
