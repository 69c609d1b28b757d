"""The request schema of ``POST /predict``, derived from the MLflow signature, and its 4xx bodies."""

from __future__ import annotations

import json
from typing import Any

#: MLflow column type -> Python type name of the request schema.
MLFLOW_TYPES = {"double": "float", "float": "float", "long": "int", "integer": "int", "string": "str",
                "boolean": "bool", "datetime": "datetime", "binary": "str"}


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
