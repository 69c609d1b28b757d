"""The service's OpenAPI document (``/docs.json``): the custom routes with schemas from the model signature."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .runtime import ServingRuntime


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
