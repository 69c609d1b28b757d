"""One serving worker's state (model, request schema, batcher, log writer) and its ASGI endpoints."""

from __future__ import annotations

import gc
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from .batcher import MicroBatcher
from .common import REQUEST_ID_HEADER, json_dumps
from .predictor import ModelInputError, Predictor, load_mlflow_model
from .schema import describe_errors, record_schema

logger = logging.getLogger("mlops.serving")


async def _send_json(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class ServingRuntime:
    """The state of one serving worker: the model, its request schema, the batcher and the log writer.

    Args:
        bento: The bento's ``mlops_bento.json`` content.
        settings: Runtime settings (see :data:`.common.DEFAULT_SETTINGS`).
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
        self._prefix = (b'{"model_name":' + json_dumps(bento["model_name"]) + b',"model_version":'
                        + json_dumps(str(bento["model_version"])))

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
            from .log_layout import default_log_dir
            from .log_writer import InferenceLogWriter

            log_dir = self.settings.get("log_dir") or default_log_dir()
            self.writer = writer = InferenceLogWriter(
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
            return 503, json_dumps({"error": self.error or "the model is still loading"})
        head = body.lstrip()[:1]
        if head == b"{":
            batch = False
            adapter = self.one
        elif head == b"[":
            batch = True
            adapter = self.many
        else:
            what = "an empty body" if not head else "not a JSON object or array"
            return 400, json_dumps({"error": f"body: {what}; send one record (a JSON object) or a batch (a JSON "
                                              f"array of records) with fields {self.features}", "fields": ["body"]})
        try:
            value = adapter.validate_json(body)
        except ValidationError as exc:
            status, payload = describe_errors(exc, batch, self.max_records)
            return status, json_dumps(payload)
        records = value if batch else [value]
        base = request_id or uuid.uuid4().hex
        ids = [f"{base}-{i}" for i in range(len(records))] if batch else [base]
        try:
            predictions, scores, probabilities = await self.batcher.submit(records, ids, arrived)
        except ModelInputError as exc:
            return 422, json_dumps({"error": f"the model rejected the input: {exc}", "fields": ["body"]})
        except ValueError as exc:  # the inference log cannot hold a value (RecordError): refused, not lost
            return 422, json_dumps({"error": f"body: {exc}; nothing was recorded", "fields": ["body"]})
        except OSError as exc:  # the journal cannot be written (JournalError): not acknowledged
            logger.error("Inference log journal unavailable: %s", exc)
            return 503, json_dumps({"error": f"the prediction could not be recorded, so it is not answered: {exc}"})
        except Exception as exc:  # noqa: BLE001 - a broken model answers 500 with the reason
            logger.exception("Prediction failed")
            return 500, json_dumps({"error": f"prediction failed: {type(exc).__name__}: {exc}"})
        labels = self.predictor.plain(predictions)  # type: ignore[union-attr]
        if batch:
            tail = (b',"request_ids":' + json_dumps(ids) + b',"predictions":' + json_dumps(labels)
                    + b',"scores":' + json_dumps(None if scores is None else scores.tolist())
                    + b',"probabilities":' + json_dumps(probabilities) + b"}")
        else:
            tail = (b',"request_id":' + json_dumps(base) + b',"prediction":' + json_dumps(labels[0])
                    + b',"score":' + json_dumps(None if scores is None else float(scores[0]))
                    + b',"probabilities":' + json_dumps(None if probabilities is None else probabilities[0]) + b"}")
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
    it in the benchmark). The OpenAPI document still describes the route (:func:`.openapi.patch_openapi`).
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
            await _send_json(send, 413, json_dumps({"error": f"body: larger than {runtime.max_bytes} bytes",
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
                await _send_json(send, 413, json_dumps({"error": f"body: larger than {runtime.max_bytes} bytes",
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
        await _send_json(send, 200, json_dumps(self.produce()))
