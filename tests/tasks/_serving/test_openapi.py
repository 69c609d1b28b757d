"""Fuzzing the served endpoint: schemathesis from its OpenAPI document, and a hypothesis fuzzer of hostile bodies.

Both assert no response >= 500, no status the OpenAPI document does not list, and that the inference log then holds
exactly the acknowledged (200) predictions. Bounded in cases and time; counts are printed (``-s``) and written to
``<session>/serving-runtime/fuzz-counts.json``.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import negative_data_rejection

from tasks.inference_log import read_inference_log

pytest.register_assert_rewrite("serving_fixtures", "serving_models")
from serving_fixtures import wait_for  # noqa: E402

pytest_plugins = ["serving_fixtures", "serving_models"]

KEY = "penguins"  # string, optional float and int64 columns
COUNTS: Counter[str] = Counter()
ACKED: set[str] = set()
SENT: set[str] = set()
_ids = itertools.count()


@pytest.fixture(scope="module")
def backend(served: Any) -> Any:
    return served[KEY]


@pytest.fixture(scope="module")
def documented(backend: Any) -> set[int]:
    doc = httpx.get(f"{backend.url}/docs.json", timeout=30).json()
    return {int(s) for s in doc["paths"]["/predict"]["post"]["responses"]}


def _record(status: int, rid: str, body: bytes, where: str) -> None:
    COUNTS[f"{where} cases"] += 1
    COUNTS[f"{where} {status // 100}xx"] += 1
    SENT.add(rid)
    if status == 200 and where != "schemathesis-other":
        payload = json.loads(body)
        ACKED.update(payload["request_ids"] if "request_ids" in payload else [payload["request_id"]])


def _fuzz_operation(operation: Any, mode: Any, examples: int) -> None:
    negative = mode is schemathesis.GenerationMode.NEGATIVE

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def call(case: Any) -> None:
        rid = f"fz-st-{next(_ids)}"
        response = case.call(headers={"x-request-id": rid}, timeout=30)
        _record(response.status_code, rid, response.content,
                "schemathesis" if case.path == "/predict" else "schemathesis-other")
        assert response.status_code < 500, response.text[:500]
        if negative:
            # Its rejection check does not count 413 (a batch over the documented maxItems) as a rejection.
            assert response.status_code in (400, 413, 422), (response.status_code, response.text[:300])
            case.validate_response(response, excluded_checks=[negative_data_rejection])
        else:
            case.validate_response(response)

    call()


def test_schemathesis_finds_no_5xx_and_no_undocumented_status(backend: Any) -> None:
    # schemathesis.pytest.from_fixture needs pytest < 9 (it sets Function._nodeid): driven through its Python API.
    schema = schemathesis.openapi.from_url(f"{backend.url}/docs.json").include(
        path_regex="^/(predict|model|schema|inference-log/stats)$")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} == {"/predict", "/model", "/schema", "/inference-log/stats"}
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    for operation, mode in itertools.product(operations, modes):
        if mode is schemathesis.GenerationMode.NEGATIVE and operation.method != "post":
            continue  # the GET routes take no input: nothing to break
        _fuzz_operation(operation, mode, 500 if operation.path == "/predict" else 20)
    assert COUNTS["schemathesis cases"] >= 500 and COUNTS["schemathesis 2xx"] > 0 and COUNTS["schemathesis 4xx"] > 0


# -- our own fuzzer ----------------------------------------------------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
HUGE_INTS = st.sampled_from([2**63, -(2**63) - 1, 10**308, 10**309, -(10**400), 2**64]) | st.integers()
ODD = (st.none() | st.booleans() | HUGE_INTS | st.floats() | st.text() | st.lists(st.integers(), max_size=3)
       | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _value_text(value: Any) -> str:
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "1e999" if value > 0 else "-1e999"
    return json.dumps(value)


@st.composite
def hostile_bodies(draw: Any, example: dict[str, Any]) -> bytes:
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "batch", "json", "nested", "bytes", "huge"]))
    if kind in ("mutated", "batch"):
        record = dict(example)
        for field in draw(st.lists(st.sampled_from([*record, "extra", "event_time"]), min_size=1, max_size=3)):
            action = draw(st.sampled_from(["replace", "replace", "delete"]))
            if action == "delete":
                record.pop(field, None)
            else:
                record[field] = draw(ODD)
        text = "{" + ",".join(f"{json.dumps(k)}:{_value_text(v)}" for k, v in record.items()) + "}"
        if kind == "batch":
            size = draw(st.integers(1, 5))
            return ("[" + ",".join([json.dumps(example)] * (size - 1) + [text]) + "]").encode()
        return text.encode()
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    if kind == "nested":
        depth = draw(st.integers(50, 5000))
        return (draw(st.sampled_from(["[", '{"a":'])) * depth).encode() + b"1"
    if kind == "bytes":
        return draw(st.binary(max_size=200)) + draw(st.sampled_from([b"", b"\xff\xfe", b'"\\ud800"', b"\x00"]))
    return b"[" + b",".join([json.dumps(example).encode()] * draw(st.integers(1000, 4000))) + b"]"


def test_hypothesis_fuzzer_finds_no_5xx_and_no_undocumented_status(backend: Any, dataset_models: Any,
                                                                   documented: set[int]) -> None:
    example = dataset_models[KEY].bento.input_example[0]
    seen: list[tuple[int, bytes]] = []
    with httpx.Client(base_url=backend.url, timeout=60) as client:

        @given(hostile_bodies(example))
        @settings(max_examples=2500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def fuzz(body: bytes) -> None:
            rid = f"fz-hy-{next(_ids)}"
            response = client.post("/predict", content=body, headers={"x-request-id": rid,
                                                                      "content-type": "application/json"})
            _record(response.status_code, rid, response.content, "hypothesis")
            if response.status_code >= 500 or response.status_code not in documented:
                seen.append((response.status_code, body[:300]))
            assert response.status_code < 500, (body[:300], response.text[:300])
            assert response.status_code in documented, (response.status_code, body[:300])
            assert response.json()["error"] if response.status_code != 200 else True

        fuzz()
    assert not seen
    assert COUNTS["hypothesis cases"] >= 2000 and COUNTS["hypothesis 2xx"] > 0 and COUNTS["hypothesis 4xx"] > 0


def test_the_inference_log_holds_exactly_the_acknowledged_fuzz_requests(runtime_block: Any,
                                                                         session_home: Path) -> None:
    assert ACKED, "no fuzz request was acknowledged: the fuzz tests did not run"

    def logged() -> set[str] | None:
        log = read_inference_log(runtime_block.log_path(), f"rt-{KEY}")
        ids = log.loc[log["request_id"].str.startswith("fz-"), "request_id"].tolist()
        assert len(ids) == len(set(ids)), "a fuzz prediction is in the log twice"
        return set(ids) if set(ids) >= ACKED else None

    ids = wait_for(logged, 60, "every acknowledged fuzz prediction in the inference log")
    assert ids == ACKED, f"logged but never acknowledged: {sorted(ids - ACKED)[:5]}"
    summary = {**COUNTS, "acknowledged": len(ACKED), "logged": len(ids)}
    out = session_home / "serving-runtime" / "fuzz-counts.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, sort_keys=True))
    print(f"\nfuzz summary: {json.dumps(summary, sort_keys=True)}")
