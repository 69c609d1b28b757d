"""What runs inside the serving processes: the bento's service and the stable front.

Two programs live here, both imported only by serving processes (at import time the module
imports the standard library and two small C extensions, ``orjson`` and ``httptools``, so
``import tasks.bentoml_service`` is cheap):

* :func:`build_service` makes the BentoML service of one registered model version. The bento
  carries a copy of this module (``mlops_service.py``) and of ``tasks/inference_log.py``
  (``mlops_inference_log.py``) next to a two-line ``service.py`` that calls it, plus
  ``mlops_bento.json`` (model tag, registry name / version / run id / data rev, the MLflow
  signature's columns and the input example). ``bentoml serve`` then answers:

  - ``POST /predict``: one record (a JSON object) or a batch (a JSON array of records), validated
    against a schema derived from the MLflow signature (named, typed columns; extra, missing or
    mistyped fields, NaN where the column is required, empty or oversized batches and bodies
    that are not JSON get a 4xx naming the field). Concurrent requests are scored together
    (adaptive micro-batching, one ``predict`` per batch) and every prediction is written to the
    inference log off the request path.
  - ``GET /model`` (what serves, its lineage), ``GET /schema`` (JSON schema of the request),
    ``GET /inference-log/stats``; BentoML's own ``/healthz``, ``/livez``, ``/readyz``.

  The predict route is a plain ASGI endpoint mounted into the BentoML app, and OpenTelemetry
  request tracing is off for it unless asked for: each costs more than the model itself here.

* :func:`run_front` is the stable endpoint: a small HTTP/1.1 reverse proxy on the serving port
  that forwards every request to the current backend (a ``bentoml serve`` process on a private
  127.0.0.1 port) over pooled keep-alive connections. ``POST /-/mlops/switch`` (with the admin
  token) repoints it atomically: requests already sent finish on the old backend, new ones go to
  the new one, client connections are never dropped. Run it with
  ``python tasks/bentoml_service.py front --host 127.0.0.1 --port 3000``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hmac
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections import deque
from http import HTTPStatus
from pathlib import Path
from typing import Any

try:  # small C extensions on the hot path (installed with prefect / bentoml); plain fallbacks otherwise
    import orjson
except ImportError:  # pragma: no cover
    orjson = None  # type: ignore[assignment]
try:
    import httptools
except ImportError:  # pragma: no cover - only the front needs it
    httptools = None  # type: ignore[assignment]

logger = logging.getLogger("mlops.serving")

#: File next to the bento's service that describes the model it serves.
BENTO_CONFIG_FILE = "mlops_bento.json"
#: Environment variable with the runtime settings of a serving process (JSON).
RUNTIME_ENV = "MLOPS_SERVING_CONFIG"
#: Environment variable with the admin token of the front.
FRONT_TOKEN_ENV = "MLOPS_FRONT_TOKEN"
#: Path prefix of the front's admin API.
ADMIN_PREFIX = b"/-/mlops/"
#: Header carrying the admin token.
TOKEN_HEADER = b"x-mlops-token"
#: Header a client may set to name its request (echoed back; batch records get ``<id>-<index>``).
REQUEST_ID_HEADER = b"x-request-id"

#: Runtime settings and their defaults (the ``BentoMLServing`` block sets them per deployment).
DEFAULT_SETTINGS: dict[str, Any] = {
    "log_dir": None,  # inference log folder; None: $PREFECT_MLOPS_HOME/inference-log
    "log_enabled": True,
    "flush_interval_s": 2.0,
    "flush_records": 20_000,
    "max_buffered": 200_000,
    "max_batch_size": 64,  # records per predict call
    "batch_wait_ms": 2.0,  # longest wait for the batch to fill up to the previous batch's size
    "max_request_records": 1000,
    "max_request_bytes": 8 * 1024 * 1024,
    "workers": 1,
    "timeout_s": 60,
    "tracing": False,
    "metrics": False,
    "access_log": False,
    "status_file": None,  # where the service reports "ready" or why loading failed
    "journal": True,  # write each prediction to the inference log's journal before answering (survives SIGKILL)
    "predict_in_thread": True,  # score off the event loop, so a slow model never stalls /readyz
    "patch_timeout_middleware": True,
}
#: Environment variable with settings that override the block's (JSON; benchmarks switch features off with it).
OVERRIDES_ENV = "MLOPS_SERVING_OVERRIDES"

#: MLflow column type -> Python type name of the request schema.
MLFLOW_TYPES = {"double": "float", "float": "float", "long": "int", "integer": "int", "string": "str",
                "boolean": "bool", "datetime": "datetime", "binary": "str"}


def runtime_settings() -> dict[str, Any]:
    """Return the serving settings: the defaults updated by ``$MLOPS_SERVING_CONFIG``."""
    settings = dict(DEFAULT_SETTINGS)
    for name in (RUNTIME_ENV, OVERRIDES_ENV):
        raw = os.environ.get(name)
        if raw:
            settings.update(json.loads(raw))
    return settings


def _json_dumps(payload: Any) -> bytes:
    if orjson is not None:
        return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(payload, default=str).encode()  # pragma: no cover


# ------------------------------------------------------------------------------------------------
# Request schema from the MLflow signature
# ------------------------------------------------------------------------------------------------
#: Range a column of each MLflow type can store (the inference log's Parquet type and the model's numpy dtype).
INT_RANGES = {"long": (-(2**63), 2**63 - 1), "integer": (-(2**31), 2**31 - 1)}
FLOAT32_MAX = 3.4028234663852886e38


def _finite(value: float | None) -> float | None:
    if value is not None and value in (float("inf"), float("-inf")):
        raise ValueError("infinity cannot be stored in this column")
    return value


def record_schema(columns: list[dict[str, Any]], max_records: int,
                  passthrough: list[dict[str, Any]] | None = None) -> tuple[Any, Any]:
    """Build the validators of one record and of a batch from an MLflow signature's input columns.

    Every column is a strictly typed field (``double`` / ``float``: a finite number the column can
    store, ``long`` / ``integer``: an integer within int64 / int32, ``string``: a string, ``boolean``:
    true or false); columns the signature marks optional may be null or absent (and NaN, never
    infinity); fields the signature does not name are rejected. Passthrough columns (logged, never
    given to the model; ``datetime``: an ISO 8601 string) are optional fields.

    Args:
        columns: ``[{"name": ..., "type": ..., "required": bool}, ...]`` (MLflow ``ColSpec`` dicts).
        max_records: Most records a batch may hold.
        passthrough: ``[{"name": ..., "type": ...}]`` of the bento config (the event-time column).

    Returns:
        ``(one, many)``: pydantic ``TypeAdapter`` of a record and of a non-empty list of records.

    Examples:
        >>> one, many = record_schema([{"name": "age", "type": "long", "required": True}], 100)
        >>> one.validate_json('{"age": 41}')
        {'age': 41}
    """
    import datetime as dt
    from typing import Annotated, NotRequired, Optional

    from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict, TypeAdapter, with_config
    from typing_extensions import TypedDict

    def field_type(mlflow_type: str, required: bool) -> Any:
        kind = MLFLOW_TYPES.get(mlflow_type, "str")
        if kind == "int":
            low, high = INT_RANGES.get(mlflow_type, INT_RANGES["long"])
            typ: Any = Annotated[int, Strict(), Field(ge=low, le=high)]
        elif kind == "float":
            bound = FLOAT32_MAX if mlflow_type == "float" else None
            limits = {"ge": -bound, "le": bound} if bound else {}
            typ = Annotated[float, Strict(), Field(allow_inf_nan=False, **limits)] if required else \
                Annotated[float, Strict(), Field(**limits), AfterValidator(_finite)]
        elif kind == "bool":
            typ = Annotated[bool, Strict()]
        elif kind == "datetime":  # an ISO date-time, or a date alone (midnight), as CSV exports write them
            typ = Annotated[dt.datetime, Strict(), BeforeValidator(_date_as_midnight)]
        else:
            typ = Annotated[str, Strict()]
        return typ if required else NotRequired[Optional[typ]]  # noqa: UP045 - typing form needed at runtime

    fields: dict[str, Any] = {}
    for col in columns:
        name = col.get("name")
        if not name:
            raise ValueError("The model's signature has unnamed (tensor) inputs: a record schema needs named columns.")
        fields[name] = field_type(str(col.get("type")), bool(col.get("required", True)))
    for col in passthrough or []:
        if col.get("name") and col["name"] not in fields:
            fields[col["name"]] = field_type(str(col.get("type", "string")), False)
    record = with_config(ConfigDict(extra="forbid"))(TypedDict("Record", fields))  # type: ignore[operator]
    one = TypeAdapter(record)
    many = TypeAdapter(Annotated[list[record], Field(min_length=1, max_length=max_records)])  # type: ignore[valid-type]
    return one, many


def _date_as_midnight(value: Any) -> Any:
    """Read an ISO 8601 text (a date alone, ``2026-03-31``, is that day's midnight) as a datetime.

    Anything else is left to the strict schema, which names the field and the bad value.
    """
    import datetime as dt

    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def _shown(value: Any, limit: int) -> str:
    """Return a short text of a rejected value (never fails: huge integers exceed Python's int-to-text limit)."""
    try:
        text = json.dumps(value, default=str)
    except (ValueError, TypeError, RecursionError):
        text = f"a {type(value).__name__} too large to show"
    return text if len(text) <= limit else f"{text[:limit]}..."


def describe_errors(exc: Any, batch: bool, max_records: int, max_items: int = 10) -> tuple[int, dict[str, Any]]:
    """Turn a pydantic ``ValidationError`` into an HTTP status and a body that names every field.

    Args:
        exc: The validation error.
        batch: Whether the body was a batch (field names become ``records[i].field``).
        max_records: The batch size limit (for the message).
        max_items: Most errors listed.

    Returns:
        ``(status, body)``: 400 for a body that is not JSON or an empty batch, 413 for an
        oversized batch, 422 for fields that break the schema.
    """
    errors = exc.errors(include_url=False, include_context=False)
    status = 422
    details = []
    for err in errors[:max_items]:
        loc = list(err.get("loc", ()))
        kind = err.get("type", "")
        if batch:
            field = "records" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
        else:
            field = ".".join(str(p) for p in loc) or "body"
        message = str(err.get("msg", "invalid"))
        if kind == "json_invalid":
            status, field, message = 400, "body", f"not valid JSON ({message})"
        elif kind == "too_short" and not loc:
            status, message = 400, "an empty batch: send at least one record"
        elif kind == "too_long" and not loc:
            status, message = 413, f"a batch may hold at most {max_records} records"
        elif kind == "finite_number":
            message = "NaN and infinity are not allowed here (the model's signature marks this column required)"
        elif kind in ("less_than_equal", "greater_than_equal"):
            message = (f"{message}: outside the range this column can store "
                       f"(got {_shown(err.get('input'), 40)}); send a value within it")
        elif kind == "extra_forbidden":
            message = "not a column of the model's signature"
        elif kind == "missing":
            message = "missing: the model's signature requires it"
        elif "input" in err and kind not in ("missing",):
            message = f"{message} (got {_shown(err['input'], 60)})"
        details.append({"field": field, "type": kind, "message": message})
    text = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    if len(errors) > max_items:
        text += f"; and {len(errors) - max_items} more"
    return status, {"error": text, "fields": [d["field"] for d in details], "detail": details}


# ------------------------------------------------------------------------------------------------
# Prediction
# ------------------------------------------------------------------------------------------------
#: scikit-learn classifiers whose ``predict`` is exactly ``classes_[argmax(predict_proba)]``.
ARGMAX_OF_PROBA = frozenset({"RandomForestClassifier", "ExtraTreesClassifier", "DecisionTreeClassifier",
                             "ExtraTreeClassifier"})


class ModelInputError(ValueError):
    """The model rejected a schema-valid input (e.g. a value its preprocessing cannot handle)."""


def native_label(value: Any) -> Any:
    """Return a JSON-native label: numpy scalars -> Python; floats that are integers -> int (as ``plain_label``)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class Predictor:
    """Predictions, scores and class probabilities of a loaded MLflow model, computing the preprocessing once.

    For a scikit-learn ``Pipeline`` the steps before the estimator run once per batch and
    both ``predict`` and ``predict_proba`` of the final estimator use their output (the same
    results as ``pipeline.predict`` / ``pipeline.predict_proba``, at half the cost); for tree
    ensembles, whose ``predict`` is the argmax of ``predict_proba``, the trees run once.

    Task types (the bento config's ``task_type``, else read from the model): ``binary`` (score =
    probability of the positive label: the configured ``positive_label``, else ``classes_[1]``),
    ``multiclass`` (score = probability of the predicted class), ``regression`` (no score). Labels
    of any type (str, bool, int) come back as they are in ``classes_``.

    Args:
        model: A fitted scikit-learn estimator / pipeline, or an MLflow pyfunc model.
        task_type: ``binary``, ``multiclass`` or ``regression``; None: inferred from ``classes_``.
        positive_label: The binary task's positive label (None: ``classes_[1]``).

    Examples:
        >>> from sklearn.linear_model import LogisticRegression
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
        >>> predictor = Predictor(LogisticRegression().fit(frame, ["no", "no", "yes", "yes"]))
        >>> predictor(frame)[0].tolist(), predictor.task_type, predictor.classes
        (['no', 'no', 'yes', 'yes'], 'binary', ['no', 'yes'])
    """

    def __init__(self, model: Any, task_type: str | None = None, positive_label: Any = None) -> None:
        self.model = model
        steps = getattr(model, "steps", None)
        if steps and len(steps) > 1 and hasattr(model, "__getitem__"):
            self.head, self.final = model[:-1], model[-1]
        else:
            self.head, self.final = None, model
        self.has_proba = (task_type != "regression" and hasattr(self.final, "predict_proba")
                          and hasattr(self.final, "classes_"))
        self.classes = [native_label(c) for c in self.final.classes_] if self.has_proba else None
        self.labels = [str(c) for c in self.classes] if self.classes is not None else None
        if task_type not in ("binary", "multiclass", "regression"):
            task_type = "regression" if self.classes is None else "binary" if len(self.classes) == 2 else "multiclass"
        self.task_type = task_type
        self.positive_index = 1
        if self.classes is not None and len(self.classes) == 2 and positive_label is not None:
            for i, label in enumerate(self.classes):
                if label == positive_label or str(label) == str(positive_label):
                    self.positive_index = i
        self.integer_labels = self.classes is not None and all(
            isinstance(c, int) and not isinstance(c, bool) for c in self.classes)
        # Tree models' own predict() is argmax(predict_proba): take it from the probabilities, not a second pass.
        self.argmax_of_proba = (self.has_proba and type(self.final).__name__ in ARGMAX_OF_PROBA
                                and type(self.final).__module__.startswith("sklearn.")
                                and getattr(self.final, "n_outputs_", 1) == 1)

    def __call__(self, frame: Any) -> tuple[Any, Any]:
        """Return ``(predictions, scores or None)`` as numpy arrays for a frame of records."""
        predictions, scores, _ = self.predict(frame)
        return predictions, scores

    def predict(self, frame: Any) -> tuple[Any, Any, Any]:
        """Return ``(predictions, scores or None, class probabilities as an (n, k) array or None)``."""
        import numpy as np

        try:
            features = self.head.transform(frame) if self.head is not None else frame
            scores = proba = None
            if self.has_proba:
                proba = np.asarray(self.final.predict_proba(features))
                if proba.ndim == 2 and proba.shape[1] == len(self.classes or ()):
                    scores = proba[:, self.positive_index] if proba.shape[1] == 2 else proba.max(axis=1)
                else:
                    proba = None
            if self.argmax_of_proba and proba is not None:
                predictions = self.final.classes_.take(np.argmax(proba, axis=1), axis=0).reshape(len(frame), -1)
            else:
                predictions = np.asarray(self.final.predict(features)).reshape(len(frame), -1)
        except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
            raise ModelInputError(f"{type(exc).__name__}: {exc}") from exc
        if predictions.shape[1] == 1:
            predictions = predictions[:, 0]
        return predictions, scores, proba

    def plain(self, predictions: Any) -> list[Any]:
        """Return predictions as JSON-native values (labels as in ``classes_``; integral float labels as int)."""
        values = predictions.tolist()
        if self.integer_labels and predictions.dtype.kind == "f":
            return [native_label(v) for v in values]
        return values

    def probabilities(self, proba: Any) -> list[dict[str, float]] | None:
        """Return ``[{label as text: probability}]`` per record, or None without probabilities."""
        if proba is None or self.labels is None:
            return None
        labels = self.labels
        return [dict(zip(labels, row, strict=True)) for row in proba.tolist()]


def load_mlflow_model(model_dir: str | Path) -> Any:
    """Load an MLflow model folder: the native scikit-learn object when it has that flavor, else pyfunc."""
    import yaml

    meta = yaml.safe_load((Path(model_dir) / "MLmodel").read_text())
    if "sklearn" in (meta.get("flavors") or {}):
        import mlflow.sklearn

        return mlflow.sklearn.load_model(str(model_dir))
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(model_dir))


class _Pending:
    __slots__ = ("records", "ids", "arrived", "future")

    def __init__(self, records: list[dict[str, Any]], ids: list[str], arrived: float, future: Any) -> None:
        self.records = records
        self.ids = ids
        self.arrived = arrived
        self.future = future


class MicroBatcher:
    """Adaptive batching of concurrent requests into one ``predict`` call, scored off the event loop.

    A request joins the queue; the batcher takes every queued request (up to ``max_batch_size``
    records) and scores them together in one worker thread (so a slow model never stalls the event
    loop: health checks and request parsing go on). Before a batch it waits up to ``wait_ms`` for the
    clients of the batch that just finished (they are usually about to send again), so under steady
    concurrency all clients share one batch instead of splitting into groups that take turns
    (which halves throughput); a lone client is scored at once. A batch that fails is retried
    request by request, so one request's bad value never fails its neighbours.

    Why batch at all (measured with ``benchmarks/bench_serving.py --models lr --connections 8`` and
    the same with ``--no-batching``, which sets ``max_batch_size=1``): one ``predict`` on a
    one-row frame costs about as much as on 16 rows (the pipeline's per-call overhead dominates), so
    the batched endpoint serves several times the requests per second of the unbatched one.

    The results of a batch are written to the inference log's journal (one ``write()``) in the
    worker thread before any of its requests is answered.

    Args:
        predictor: A :class:`Predictor` (or any callable with ``predict(frame) -> (predictions, scores, proba)``).
        features: Column order of the frame.
        max_batch_size: Most records per ``predict`` call.
        wait_ms: Longest wait for a batch to fill (0: never wait).
        writer: The inference log writer (or None): journal ``encode``/``append``, or in-memory ``log``.
        in_thread: Score in a worker thread (False: in the event loop).
    """

    def __init__(self, predictor: Any, features: list[str], max_batch_size: int, wait_ms: float,
                 writer: Any = None, in_thread: bool = True) -> None:
        self.predictor = predictor
        self.features = features
        self.max_batch_size = max(1, int(max_batch_size))
        self.wait_s = max(0.0, float(wait_ms)) / 1000.0
        self.writer = writer
        self.in_thread = in_thread
        self.batches = 0
        self.records = 0
        self.scoring = 0  # records of the batch being scored now
        self._queue: deque[_Pending] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._last = 0  # requests in the batch that finished last
        self._executor: Any = None

    async def submit(self, records: list[dict[str, Any]], ids: list[str], arrived: float) -> tuple[Any, Any, Any]:
        """Queue records and wait for their ``(predictions, scores, probabilities)``."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run())
        item = _Pending(records, ids, arrived, loop.create_future())
        self._queue.append(item)
        assert self._wake is not None
        self._wake.set()
        return await item.future

    async def _run(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        loop = asyncio.get_running_loop()
        wake = self._wake
        assert wake is not None
        if self.in_thread and self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="mlops-predict")
        while True:
            if self._queue:
                others = len(self._queue)  # they waited while the last batch ran: other clients
            else:
                await wake.wait()
                wake.clear()
                others = 0  # whoever comes now is a client of the last batch, coming back
            # The clients of the last batch are about to send again: wait (briefly) for them too, so
            # that concurrent clients share one batch instead of splitting into groups taking turns.
            target = min(others + self._last, self.max_batch_size)
            if self.wait_s and len(self._queue) < target:
                deadline = loop.time() + self.wait_s
                while len(self._queue) < target and (left := deadline - loop.time()) > 0:
                    timer = loop.call_later(left, wake.set)
                    await wake.wait()
                    wake.clear()
                    timer.cancel()
            batch = [self._queue.popleft()]
            size = len(batch[0].records)
            while self._queue and size + len(self._queue[0].records) <= self.max_batch_size:
                item = self._queue.popleft()
                batch.append(item)
                size += len(item.records)
            self._last = len(batch)
            self.scoring = size
            try:
                if self._executor is not None:
                    results = await loop.run_in_executor(self._executor, self._execute, batch)
                else:
                    results = self._execute(batch)
            except Exception as exc:  # noqa: BLE001 - never leave a request waiting forever
                results = [exc] * len(batch)
            self.scoring = 0
            for item, result in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
            for _ in range(3):  # let the event loop read and queue the requests that arrived meanwhile
                await asyncio.sleep(0)

    def _execute(self, batch: list[_Pending]) -> list[Any]:
        """Score a batch and log it; return per request ``(predictions, scores, probabilities)`` or its error."""
        import pandas as pd

        records = batch[0].records if len(batch) == 1 else [r for item in batch for r in item.records]
        try:
            frame = pd.DataFrame.from_records(records, columns=self.features)
            predictions, scores, proba = self.predictor.predict(frame)
            probabilities = self.predictor.probabilities(proba)
        except Exception as exc:  # noqa: BLE001 - isolate the request that broke the batch
            if len(batch) > 1:
                return [result for item in batch for result in self._execute([item])]
            return [exc]
        self.batches += 1
        self.records += len(records)
        results: list[Any] = []
        offset = 0
        for item in batch:
            k = len(item.records)
            results.append((predictions[offset:offset + k], None if scores is None else scores[offset:offset + k],
                            None if probabilities is None else probabilities[offset:offset + k]))
            offset += k
        if self.writer is not None:
            self._log(batch, results)
        return results

    def _log(self, batch: list[_Pending], results: list[Any]) -> None:
        """Journal every answered request before it is answered; a request that cannot be logged is refused."""
        writer = self.writer
        if not writer.journal:
            for item, (predictions, scores, probabilities) in zip(batch, results, strict=True):
                writer.log(item.ids, [item.arrived] * len(item.ids), item.records, predictions, scores, probabilities)
            return
        blobs, count = [], 0
        for k, (item, result) in enumerate(zip(batch, results, strict=True)):
            try:
                blobs.append(writer.encode(item.ids, [item.arrived] * len(item.ids), item.records, *result))
                count += len(item.ids)
            except Exception as exc:  # noqa: BLE001 - RecordError: refuse this request only
                results[k] = exc
        if not blobs:
            return
        try:
            writer.append(b"".join(blobs), count)
        except Exception as exc:  # noqa: BLE001 - JournalError: none of them may be acknowledged
            for k, result in enumerate(results):
                if not isinstance(result, BaseException):
                    results[k] = exc

    def close(self) -> None:
        """Stop the worker thread (after the batch it runs)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)


# ------------------------------------------------------------------------------------------------
# The service's ASGI endpoints
# ------------------------------------------------------------------------------------------------
async def _send_json(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class ServingRuntime:
    """The state of one serving worker: the model, its request schema, the batcher and the log writer.

    Args:
        bento: The bento's ``mlops_bento.json`` content.
        settings: Runtime settings (see :data:`DEFAULT_SETTINGS`).
    """

    def __init__(self, bento: dict[str, Any], settings: dict[str, Any]) -> None:
        self.bento = bento
        self.settings = settings
        self.features = [c["name"] for c in bento["columns"]]
        self.passthrough = [c for c in bento.get("passthrough_columns") or [] if c.get("name") not in self.features]
        self.max_records = int(settings["max_request_records"])
        self.max_bytes = int(settings["max_request_bytes"])
        self.one, self.many = record_schema(bento["columns"], self.max_records, self.passthrough)
        self.predictor: Predictor | None = None
        self.batcher: MicroBatcher | None = None
        self.writer: Any = None
        self.started_at: str | None = None
        self.error: str | None = None
        self._version_header = str(bento["model_version"]).encode()
        self._prefix = (b'{"model_name":' + _json_dumps(bento["model_name"]) + b',"model_version":'
                        + _json_dumps(str(bento["model_version"])))

    def _report(self, state: str, error: str | None = None) -> None:
        path = self.settings.get("status_file")
        if not path:
            return
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(f"{path}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"state": state, "error": error, "pid": os.getpid(), "at": time.time()}))
            os.replace(tmp, path)
        except OSError:
            pass

    def start(self, model_dir: str) -> None:
        """Load the model and start the inference log writer (called once per worker)."""
        try:
            model = load_mlflow_model(model_dir)
        except Exception as exc:
            self.error = f"loading the MLflow model failed: {type(exc).__name__}: {exc}"
            self._report("failed", self.error)
            raise
        writer = None
        if self.settings.get("log_enabled", True):
            try:
                import mlops_inference_log as ilog  # the copy inside the bento
            except ImportError:
                from tasks import inference_log as ilog
            log_dir = self.settings.get("log_dir") or ilog.default_log_dir()
            self.writer = writer = ilog.InferenceLogWriter(
                log_dir, self.bento["model_name"], str(self.bento["model_version"]), source="online",
                flush_interval_s=float(self.settings["flush_interval_s"]),
                flush_records=int(self.settings["flush_records"]), max_buffered=int(self.settings["max_buffered"]),
                feature_types={c["name"]: str(c.get("type", "string")) for c in self.bento["columns"]},
                passthrough_types={c["name"]: str(c.get("type", "string")) for c in self.passthrough},
                journal=bool(self.settings.get("journal", True)))
        self.predictor = Predictor(model, self.bento.get("task_type"), self.bento.get("positive_label"))
        self.batcher = MicroBatcher(self.predictor, self.features, int(self.settings["max_batch_size"]),
                                    float(self.settings["batch_wait_ms"]), writer,
                                    in_thread=bool(self.settings.get("predict_in_thread", True)))
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        # The model, MLflow and pandas are loaded for good: keep them out of the garbage collector's
        # full collections, which otherwise stall the event loop for a hundred milliseconds now and then.
        gc.collect()
        gc.freeze()
        self._report("ready")

    def stop(self) -> None:
        """Finish the running batch, then write what the inference log still holds."""
        if self.batcher is not None:
            self.batcher.close()
        if self.writer is not None:
            self.writer.close()

    def info(self) -> dict[str, Any]:
        """Return what serves here and where it came from."""
        keys = ("model_name", "model_version", "run_id", "data_rev", "model_tag", "bento_tag", "time_column")
        predictor = self.predictor
        return {**{k: self.bento.get(k) for k in keys}, "features": self.features,
                "passthrough_columns": [c["name"] for c in self.passthrough],
                "task_type": predictor.task_type if predictor else self.bento.get("task_type"),
                "classes": predictor.classes if predictor else self.bento.get("classes"),
                "positive_label": (predictor.classes[predictor.positive_index]
                                   if predictor and predictor.task_type == "binary" and predictor.classes else None),
                "pid": os.getpid(),
                "started_at": self.started_at, "ready": self.batcher is not None,
                "batches": self.batcher.batches if self.batcher else 0,
                "records": self.batcher.records if self.batcher else 0,
                "scoring": self.batcher.scoring if self.batcher else 0,
                "inference_log": self.log_stats()}

    def schema(self) -> dict[str, Any]:
        """Return the JSON schemas of one record and of a batch."""
        return {"record": self.one.json_schema(), "batch": self.many.json_schema(),
                "max_request_records": self.max_records}

    def log_stats(self) -> dict[str, Any]:
        """Return this worker's inference log counters."""
        return self.writer.stats() if self.writer is not None else {"enabled": False}

    async def predict(self, body: bytes, request_id: str | None, arrived: float) -> tuple[int, bytes]:
        """Validate a request body, score it and return ``(status, JSON body)``."""
        from pydantic import ValidationError

        if self.batcher is None:
            return 503, _json_dumps({"error": self.error or "the model is still loading"})
        head = body.lstrip()[:1]
        if head == b"{":
            batch = False
            adapter = self.one
        elif head == b"[":
            batch = True
            adapter = self.many
        else:
            what = "an empty body" if not head else "not a JSON object or array"
            return 400, _json_dumps({"error": f"body: {what}; send one record (a JSON object) or a batch (a JSON "
                                              f"array of records) with fields {self.features}", "fields": ["body"]})
        try:
            value = adapter.validate_json(body)
        except ValidationError as exc:
            status, payload = describe_errors(exc, batch, self.max_records)
            return status, _json_dumps(payload)
        records = value if batch else [value]
        base = request_id or uuid.uuid4().hex
        ids = [f"{base}-{i}" for i in range(len(records))] if batch else [base]
        try:
            predictions, scores, probabilities = await self.batcher.submit(records, ids, arrived)
        except ModelInputError as exc:
            return 422, _json_dumps({"error": f"the model rejected the input: {exc}", "fields": ["body"]})
        except ValueError as exc:  # the inference log cannot hold a value (RecordError): refused, not lost
            return 422, _json_dumps({"error": f"body: {exc}; nothing was recorded", "fields": ["body"]})
        except OSError as exc:  # the journal cannot be written (JournalError): not acknowledged
            logger.error("Inference log journal unavailable: %s", exc)
            return 503, _json_dumps({"error": f"the prediction could not be recorded, so it is not answered: {exc}"})
        except Exception as exc:  # noqa: BLE001 - a broken model answers 500 with the reason
            logger.exception("Prediction failed")
            return 500, _json_dumps({"error": f"prediction failed: {type(exc).__name__}: {exc}"})
        labels = self.predictor.plain(predictions)  # type: ignore[union-attr]
        if batch:
            tail = (b',"request_ids":' + _json_dumps(ids) + b',"predictions":' + _json_dumps(labels)
                    + b',"scores":' + _json_dumps(None if scores is None else scores.tolist())
                    + b',"probabilities":' + _json_dumps(probabilities) + b"}")
        else:
            tail = (b',"request_id":' + _json_dumps(base) + b',"prediction":' + _json_dumps(labels[0])
                    + b',"score":' + _json_dumps(None if scores is None else float(scores[0]))
                    + b',"probabilities":' + _json_dumps(None if probabilities is None else probabilities[0]) + b"}")
        return 200, self._prefix + tail


class PredictEndpoint:
    """ASGI endpoint of ``POST /predict`` (mounted into the BentoML app).

    Why a plain ASGI route rather than a ``@bentoml.api`` method: an API method parses the body
    into its IO descriptor, runs BentoML's per-request tracing and context machinery and then the
    method, and each of these cost more than scoring one record with a linear model; the route here
    validates the raw bytes once with pydantic-core (``TypeAdapter.validate_json``) and answers
    with pre-encoded JSON. It was chosen on the serving benchmark when the endpoint was written
    (``benchmarks/bench_serving.py --models lr --connections 8``: 1,338 rps, p99 12.3 ms with
    logging on); this change did not re-measure a ``@bentoml.api`` variant (there is no switch for
    it in the benchmark). The OpenAPI document still describes the route (:func:`patch_openapi`).
    """

    def __init__(self, runtime: ServingRuntime) -> None:
        self.runtime = runtime

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Read the body (bounded), answer with predictions or a 4xx naming the field."""
        arrived = time.time()
        runtime = self.runtime
        request_id = None
        length = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                request_id = value.decode("latin-1")[:128] or None
            elif name == b"content-length":
                length = value
        if length is not None and (not length.isdigit() or int(length) > runtime.max_bytes):
            await _send_json(send, 413, _json_dumps({"error": f"body: larger than {runtime.max_bytes} bytes",
                                                     "fields": ["body"]}))
            return
        chunks = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > runtime.max_bytes:
                await _send_json(send, 413, _json_dumps({"error": f"body: larger than {runtime.max_bytes} bytes",
                                                         "fields": ["body"]}))
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        status, payload = await runtime.predict(body, request_id, arrived)
        headers = [(b"x-model-version", runtime._version_header)]
        if request_id:
            headers.append((b"x-request-id", request_id.encode("latin-1")))
        await _send_json(send, status, payload, headers)


class JsonEndpoint:
    """ASGI endpoint answering ``GET`` with the JSON of a callable."""

    def __init__(self, produce: Any) -> None:
        self.produce = produce

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Answer with ``produce()`` as JSON."""
        await _send_json(send, 200, _json_dumps(self.produce()))


#: sha256 of the source of ``TimeoutMiddleware.__call__`` in BentoML 1.4.39: the code the patch replaces.
TIMEOUT_MIDDLEWARE_SHA256 = "fd8b9e3da28ed2b44cfd508d641617e049fcd4986138197ce7bb227332505896"


def patch_bentoml_timeout_middleware() -> bool:
    """Make BentoML 1.4's per-request timeout cancel its timer once the response has started.

    ``bentoml._internal.server.http.traffic.TimeoutMiddleware`` (1.4.39) arms a timer per request
    and never cancels it: it stays pending for the whole ``traffic.timeout`` (60 s). At 3,000
    requests per second that is 180,000 live timers and futures, and the garbage collector's full
    passes over them stall the event loop for up to a hundred milliseconds (measured when the patch
    was written: p99 at 32 connections 25 ms -> 100+ ms within a minute; measure again with
    ``benchmarks/bench_serving.py --models lr --connections 32 --duration 60`` against the same run
    with ``--no-timeout-patch``). The replacement is the same code plus ``timer.cancel()``; requests
    that time out are answered 504 as before.

    The patch applies only to the exact code it replaces (the source's sha256 is checked), so an
    upgrade of BentoML that changes the middleware leaves it alone and says so in the log;
    ``tests/tasks/test_bentoml_service.py`` fails then, as a reminder to check whether it is
    still needed.

    Returns:
        True if the middleware is patched (now or before), False if left alone.
    """
    import hashlib
    import inspect

    from bentoml._internal.server.http import traffic

    middleware = traffic.TimeoutMiddleware
    if getattr(middleware, "_mlops_cancels_timer", False):
        return True
    try:
        digest = hashlib.sha256(inspect.getsource(middleware.__call__).encode()).hexdigest()
    except (OSError, TypeError):
        digest = None
    if digest != TIMEOUT_MIDDLEWARE_SHA256:
        logger.warning("BentoML's TimeoutMiddleware is not the code the timer patch was written for (sha256 %s); "
                       "left unpatched", digest)
        return False

    async def __call__(self: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:  # noqa: N807
        from starlette.responses import JSONResponse

        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message: dict[str, Any]) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        future = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
        try:
            await waiter
        except TimeoutError:
            if future.cancel():
                response = JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"},
                                        status_code=504)
                await response(scope, receive, send)
        else:
            timer.cancel()
            await future
        return None

    middleware.__call__ = __call__
    middleware._mlops_cancels_timer = True
    return True


def _nullable(schema: Any) -> Any:
    """Rewrite JSON-Schema ``anyOf: [X, {type: null}]`` into OpenAPI 3.0's ``X`` + ``nullable: true``."""
    if isinstance(schema, list):
        return [_nullable(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _nullable(v) for k, v in schema.items()}
    options = out.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        out.pop("anyOf")
        out.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
        out["nullable"] = True
    return out


def _label_schema(classes: list[Any] | None, task_type: str) -> dict[str, Any]:
    if task_type == "regression" or not classes:
        return {"type": "number"}
    kinds = {type(c) for c in classes}
    kind = ("boolean" if kinds == {bool} else "integer" if kinds == {int} else "string" if kinds == {str}
            else "number" if kinds <= {int, float} else None)
    return {**({"type": kind} if kind else {}), "enum": classes}


def openapi_paths(runtime: ServingRuntime) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the OpenAPI paths and component schemas of ``/predict``, ``/model``, ``/schema`` and the log stats.

    The request schema is the record schema derived from the model's signature (plus passthrough
    columns); the response schemas follow the task type and the classes.
    """
    record = _nullable(runtime.one.json_schema())
    record.pop("title", None)
    predictor = runtime.predictor
    task_type = predictor.task_type if predictor else str(runtime.bento.get("task_type") or "binary")
    classes = predictor.classes if predictor else runtime.bento.get("classes")
    label = _label_schema(classes, task_type)
    probas = {"type": "object", "additionalProperties": {"type": "number"}, "nullable": True}
    base = {"model_name": {"type": "string"}, "model_version": {"type": "string"}}
    one = {"type": "object", "required": [*base, "request_id", "prediction", "score", "probabilities"],
           "properties": {**base, "request_id": {"type": "string"}, "prediction": label,
                          "score": {"type": "number", "nullable": True}, "probabilities": probas}}
    many = {"type": "object", "required": [*base, "request_ids", "predictions", "scores", "probabilities"],
            "properties": {**base, "request_ids": {"type": "array", "items": {"type": "string"}},
                           "predictions": {"type": "array", "items": label},
                           "scores": {"type": "array", "items": {"type": "number"}, "nullable": True},
                           "probabilities": {"type": "array", "items": probas, "nullable": True}}}
    error = {"type": "object", "required": ["error"],
             "properties": {"error": {"type": "string"}, "fields": {"type": "array", "items": {"type": "string"}},
                            "detail": {"type": "array", "items": {"type": "object"}}}}
    ref = {"$ref": "#/components/schemas/MlopsRecord"}
    err = {"$ref": "#/components/schemas/MlopsError"}

    def answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    obj = {"type": "object"}
    paths = {
        "/predict": {"post": {
            "tags": ["Service APIs"], "operationId": "mlops__predict",
            "summary": f"Predict with {runtime.bento['model_name']} v{runtime.bento['model_version']} ({task_type})",
            "description": "One record (a JSON object) or a batch (a JSON array of records). Every answered "
                           "prediction is in the inference log. Header `x-request-id` names the request.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                ref, {"type": "array", "items": ref, "minItems": 1, "maxItems": runtime.max_records}]}}}},
            "responses": {
                "200": answer("The prediction(s)", {"oneOf": [{"$ref": "#/components/schemas/MlopsPrediction"},
                                                              {"$ref": "#/components/schemas/MlopsPredictions"}]}),
                "400": answer("Not JSON, not a record or a batch, or an empty batch", err),
                "413": answer("A body or batch over the limit", err),
                "422": answer("A field breaks the schema (each field named), or the model rejected the input", err),
                "500": answer("The model itself failed", err),
                "503": answer("The model is still loading, or the prediction could not be recorded", err),
            }}},
        "/model": {"get": {"tags": ["Service APIs"], "operationId": "mlops__model",
                           "summary": "What serves here: model, version, lineage, task type, classes",
                           "responses": {"200": answer("The model", obj)}}},
        "/schema": {"get": {"tags": ["Service APIs"], "operationId": "mlops__schema",
                            "summary": "JSON schemas of one record and of a batch",
                            "responses": {"200": answer("The schemas", obj)}}},
        "/inference-log/stats": {"get": {"tags": ["Service APIs"], "operationId": "mlops__log_stats",
                                         "summary": "This worker's inference log counters",
                                         "responses": {"200": answer("The counters", obj)}}},
    }
    schemas = {"MlopsRecord": record, "MlopsPrediction": one, "MlopsPredictions": many, "MlopsError": error}
    return paths, schemas


def patch_openapi(service: Any, runtime: ServingRuntime, metrics: bool) -> None:
    """Make the service's ``/docs.json`` describe the custom routes, and list only routes that answer.

    BentoML documents only ``@bentoml.api`` methods (and mounted FastAPI apps); ``/predict`` is a
    plain ASGI route, so its paths are added here. ``/metrics`` is listed by BentoML even when
    metrics are off (it then answers 404), so it is removed unless they are on.
    """
    cls = type(service)

    class _Spec:
        def __init__(self, spec: Any) -> None:
            self.spec = spec

        def asdict(self) -> dict[str, Any]:
            doc = self.spec.asdict()
            paths, schemas = openapi_paths(runtime)
            doc.setdefault("paths", {}).update(paths)
            if not metrics:
                doc["paths"].pop("/metrics", None)
            doc.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
            return doc

    class MlopsService(cls):  # type: ignore[misc, valid-type]
        __slots__ = ()

        @property
        def openapi_spec(self) -> Any:
            return _Spec(super().openapi_spec)

    service.__class__ = MlopsService


def service_config(bento: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Return the ``@bentoml.service`` configuration for the runtime settings."""
    config: dict[str, Any] = {
        "name": bento["service_name"],
        "workers": int(settings["workers"]),
        "traffic": {"timeout": int(settings["timeout_s"])},
        "metrics": {"enabled": bool(settings["metrics"])},
        "logging": {"access": {"enabled": bool(settings["access_log"])}},
    }
    if not settings["tracing"]:
        config["tracing"] = {"excluded_urls": ["/predict"]}
    return config


def build_service(config_path: str | Path) -> Any:
    """Make the BentoML service of the model described by ``mlops_bento.json``.

    Args:
        config_path: The bento's ``mlops_bento.json`` (or the ``service.py`` beside it).

    Returns:
        The ``bentoml.Service`` (class ``MlopsModelService``), with the model as a ``BentoModel``
        attribute so that ``bentoml build`` packs it into the bento.

    Examples:
        The bento's ``service.py`` is::

            from mlops_service import build_service
            MlopsModelService = build_service(__file__)
    """
    import bentoml
    from starlette.applications import Starlette
    from starlette.routing import Route

    path = Path(config_path)
    if path.suffix != ".json":
        path = path.with_name(BENTO_CONFIG_FILE)
    bento = json.loads(path.read_text())
    settings = runtime_settings()
    if settings.get("patch_timeout_middleware", True):
        patch_bentoml_timeout_middleware()
    runtime = ServingRuntime(bento, settings)
    app = Starlette(routes=[
        Route("/predict", PredictEndpoint(runtime), methods=["POST"]),
        Route("/model", JsonEndpoint(runtime.info), methods=["GET"]),
        Route("/schema", JsonEndpoint(runtime.schema), methods=["GET"]),
        Route("/inference-log/stats", JsonEndpoint(runtime.log_stats), methods=["GET"]),
    ])

    class MlopsModelService:
        """Serves one registered model version (see the module docstring)."""

        bento_model = bentoml.models.BentoModel(bento["model_tag"])

        def __init__(self) -> None:
            runtime.start(self.bento_model.path_of("mlflow_model"))

        @bentoml.on_shutdown
        def flush_inference_log(self) -> None:
            """Write the buffered inference log records before the worker exits."""
            runtime.stop()

        @bentoml.api(route="/info")
        def info(self) -> dict[str, Any]:
            """Return what serves here and where it came from."""
            return runtime.info()

    service = bentoml.service(**service_config(bento, settings))(MlopsModelService)
    service = bentoml.asgi_app(app, path="/")(service)
    patch_openapi(service, runtime, bool(settings["metrics"]))
    return service


# ------------------------------------------------------------------------------------------------
# The front: stable endpoint, zero-downtime switch between backends
# ------------------------------------------------------------------------------------------------
_HOP_HEADERS = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer",
                          b"upgrade", b"content-length", b"expect"})
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_IDLE_MAX_S = 2.0  # below uvicorn's 5 s keep-alive timeout: never reuse a connection the backend may be closing
_UPSTREAM_TIMEOUT_S = 120.0
_MAX_BODY = 64 * 1024 * 1024


class _Backend:
    __slots__ = ("url", "host", "port", "label", "since", "idle", "inflight", "requests", "retired")

    def __init__(self, url: str, label: dict[str, Any] | None = None) -> None:
        rest = url.split("://", 1)[-1].rstrip("/")
        host, _, port = rest.rpartition(":")
        self.url = url
        self.host = host or "127.0.0.1"
        self.port = int(port)
        self.label = label or {}
        self.since = time.time()
        self.idle: list[_UpstreamConnection] = []
        self.inflight = 0
        self.requests = 0
        self.retired = False

    def close_idle(self) -> None:
        while self.idle:
            self.idle.pop().close()

    def status(self) -> dict[str, Any]:
        return {"url": self.url, "label": self.label, "since": self.since, "inflight": self.inflight,
                "requests": self.requests, "retired": self.retired, "idle_connections": len(self.idle)}


class _UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection from the front to a backend; one request at a time."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Any] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.alive = True
        self.received = False
        self.last_used = 0.0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad response from the model server: {exc}"))
            self.close()

    def on_message_begin(self) -> None:
        self.headers = []
        self.body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), self.headers, b"".join(self.body),
                               self.parser.should_keep_alive()))

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self._fail(ConnectionError(f"the model server closed the connection ({exc or 'EOF'})"))

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def timeout(self) -> None:
        self._fail(TimeoutError(f"the model server did not answer within {_UPSTREAM_TIMEOUT_S:.0f}s"))
        self.close()

    def close(self) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.close()


class Front:
    """The stable endpoint's state: the current backend, retired ones still draining, counters."""

    def __init__(self, token: str | None) -> None:
        self.token = token.encode() if token else None
        self.backend: _Backend | None = None
        self.retired: list[_Backend] = []
        self.requests = 0
        self.errors = 0
        self.started = time.time()
        self.clients: set[_ClientConnection] = set()

    async def _acquire(self, backend: _Backend) -> tuple[_UpstreamConnection, bool]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        while backend.idle:
            conn = backend.idle.pop()
            if conn.alive and now - conn.last_used < _IDLE_MAX_S:
                return conn, True
            conn.close()
        _, conn = await loop.create_connection(_UpstreamConnection, backend.host, backend.port)
        return conn, False

    def _release(self, backend: _Backend, conn: _UpstreamConnection, keep_alive: bool) -> None:
        if keep_alive and conn.alive and not backend.retired and len(backend.idle) < 512:
            conn.last_used = asyncio.get_running_loop().time()
            backend.idle.append(conn)
        else:
            conn.close()

    async def forward(self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]],
                      body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send one request to the current backend and return its response."""
        backend = self.backend
        if backend is None:
            return self._error(503, "no model is deployed on this endpoint yet: run the deploy-model flow")
        backend.inflight += 1
        backend.requests += 1
        try:
            upstream_method = b"GET" if method == b"HEAD" else method
            data = b"".join([upstream_method, b" ", url, b" HTTP/1.1\r\n",
                             *[b"%s: %s\r\n" % (k, v) for k, v in headers if k.lower() not in _HOP_HEADERS],
                             b"content-length: %d\r\n\r\n" % len(body), body])
            loop = asyncio.get_running_loop()
            for attempt in (0, 1):
                try:
                    conn, reused = await self._acquire(backend)
                except OSError as exc:
                    return self._error(502, f"cannot reach the model server at {backend.url}: {exc}")
                conn.waiter = loop.create_future()
                conn.received = False
                conn.transport.write(data)
                timer = loop.call_later(_UPSTREAM_TIMEOUT_S, conn.timeout)
                try:
                    status, rheaders, rbody, keep_alive = await conn.waiter
                except TimeoutError as exc:
                    return self._error(504, str(exc))
                except ConnectionError as exc:
                    conn.close()
                    if reused and not conn.received and attempt == 0:
                        continue  # a pooled connection the backend had just closed: send again on a new one
                    return self._error(502, str(exc))
                finally:
                    timer.cancel()
                self._release(backend, conn, keep_alive)
                if method == b"HEAD":
                    rbody = b""
                return status, rheaders, rbody
            return self._error(502, "the model server closed the connection")  # pragma: no cover
        finally:
            backend.inflight -= 1
            if backend.retired and backend.inflight == 0:
                backend.close_idle()

    def _error(self, status: int, message: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        self.errors += 1
        return status, [(b"content-type", b"application/json")], _json_dumps({"error": message})

    def admin(self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]],
              body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Answer the admin API: ``GET status``, ``POST switch`` (``{"backend", "label"}``), ``POST clear``."""
        given = next((v for k, v in headers if k.lower() == TOKEN_HEADER), b"")
        if self.token is None or not hmac.compare_digest(given, self.token):
            return 403, [(b"content-type", b"application/json")], _json_dumps({"error": "admin token required"})
        action = url[len(ADMIN_PREFIX):].split(b"?", 1)[0]
        if action == b"status" and method == b"GET":
            payload = self.status()
        elif action in (b"switch", b"clear") and method == b"POST":
            previous = self.backend
            if action == b"switch":
                try:
                    request = json.loads(body or b"{}")
                    self.backend = _Backend(str(request["backend"]), request.get("label"))
                except (ValueError, KeyError, TypeError) as exc:
                    return 400, [(b"content-type", b"application/json")], _json_dumps(
                        {"error": f"switch needs a JSON body with 'backend' (http://host:port): {exc}"})
            else:
                self.backend = None
            if previous is not None:
                previous.retired = True
                if previous.inflight == 0:
                    previous.close_idle()
                self.retired = [b for b in [*self.retired, previous] if b.inflight > 0][-10:] or [previous]
            logger.warning("front: backend %s -> %s", previous.url if previous else None,
                           self.backend.url if self.backend else None)
            payload = {"backend": self.backend.url if self.backend else None,
                       "previous": previous.status() if previous else None}
        else:
            return 404, [(b"content-type", b"application/json")], _json_dumps({"error": "unknown admin action"})
        return 200, [(b"content-type", b"application/json")], _json_dumps(payload)

    def status(self) -> dict[str, Any]:
        """Return the current backend, the draining ones and the counters."""
        return {"pid": os.getpid(), "started": self.started, "requests": self.requests, "errors": self.errors,
                "backend": self.backend.status() if self.backend else None,
                "retired": [b.status() for b in self.retired], "clients": len(self.clients)}


class _ClientConnection(asyncio.Protocol):
    """One client connection to the front: parses requests, answers them in order."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.queue: deque[tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes, bool, bool]] = deque()
        self.busy = False
        self.paused = False
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.front.clients.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.clients.discard(self)
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reply_and_close(501, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._reply_and_close(400, f"malformed HTTP request: {exc}")

    def _reply_and_close(self, status: int, message: str) -> None:
        body = _json_dumps({"error": message})
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n\r\n%s" % (status, _REASONS.get(status, b""), len(body), body))
        self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []
        self.size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        for name, value in self.headers:
            if name.lower() == b"expect" and value.lower() == b"100-continue":
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size <= _MAX_BODY:
            self.body.append(body)

    def on_message_complete(self) -> None:
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.queue.append((self.parser.get_method(), self.url, self.headers, body, self.parser.should_keep_alive(),
                           self.size > _MAX_BODY))
        if not self.busy:
            self.busy = True
            asyncio.get_running_loop().create_task(self._serve())
        if len(self.queue) > 16 and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    async def _serve(self) -> None:
        front = self.front
        try:
            while self.queue:
                method, url, headers, body, keep_alive, too_big = self.queue.popleft()
                front.requests += 1
                if too_big:
                    status, rheaders, rbody = front._error(413, f"body: larger than {_MAX_BODY} bytes")
                elif url.startswith(ADMIN_PREFIX):
                    status, rheaders, rbody = front.admin(method, url, headers, body)
                else:
                    status, rheaders, rbody = await front.forward(method, url, headers, body)
                if self.transport.is_closing():
                    return
                out = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"")),
                       *[b"%s: %s\r\n" % (k, v) for k, v in rheaders if k.lower() not in _HOP_HEADERS],
                       b"content-length: %d\r\n" % len(rbody)]
                if not keep_alive:
                    out.append(b"connection: close\r\n")
                out.append(b"\r\n")
                out.append(rbody)
                self.transport.write(b"".join(out))
                if not keep_alive:
                    self.transport.close()
                    return
                if self.paused and len(self.queue) < 4:
                    self.paused = False
                    self.transport.resume_reading()
        finally:
            self.busy = False


async def _serve_front(host: str, port: int, token: str | None, backend: str | None, ready_file: str | None) -> None:
    loop = asyncio.get_running_loop()
    front = Front(token)
    if backend:
        front.backend = _Backend(backend)
    server = await loop.create_server(lambda: _ClientConnection(front), host, port, reuse_address=True, backlog=2048)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready_file:
        Path(ready_file).write_text(json.dumps({"pid": os.getpid(), "port": port}))
    logger.warning("front: serving on http://%s:%d (pid %d)", host, port, os.getpid())
    await stop.wait()
    server.close()
    deadline = loop.time() + 10
    while any(c.busy for c in front.clients) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    for backend_ in [front.backend, *front.retired]:
        if backend_ is not None:
            backend_.close_idle()


def run_front(host: str, port: int, token: str | None = None, backend: str | None = None,
              ready_file: str | None = None) -> None:
    """Run the stable endpoint until SIGTERM (uses uvloop when installed).

    Args:
        host: Interface to bind (127.0.0.1 unless the serving block says otherwise).
        port: The stable port.
        token: Admin token (``$MLOPS_FRONT_TOKEN``); without one the admin API is closed.
        backend: Backend to forward to from the start (``http://127.0.0.1:PORT``).
        ready_file: File written once the port is bound.
    """
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    runner(_serve_front(host, port, token, backend, ready_file))


def main(argv: list[str] | None = None) -> int:
    """Command line: ``front --host H --port P [--backend URL]``."""
    parser = argparse.ArgumentParser(prog="mlops-serving", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    front = sub.add_parser("front", help="run the stable endpoint (reverse proxy to the current backend)")
    front.add_argument("--host", default="127.0.0.1")
    front.add_argument("--port", type=int, required=True)
    front.add_argument("--backend", default=None)
    front.add_argument("--ready-file", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        run_front(args.host, args.port, os.environ.get(FRONT_TOKEN_ENV), args.backend, args.ready_file)
    except OSError as exc:
        print(f"front: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
