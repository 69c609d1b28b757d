"""What every serving module shares: the bento config's file name, environment variables, headers, settings, JSON.

Imports the standard library and ``orjson`` only (a small C extension on the hot path, installed with
prefect / bentoml; plain ``json`` otherwise).
"""

from __future__ import annotations

import json
import os
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover
    orjson = None  # type: ignore[assignment]

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


def runtime_settings() -> dict[str, Any]:
    """Return the serving settings: the defaults updated by ``$MLOPS_SERVING_CONFIG``."""
    settings = dict(DEFAULT_SETTINGS)
    for name in (RUNTIME_ENV, OVERRIDES_ENV):
        raw = os.environ.get(name)
        if raw:
            settings.update(json.loads(raw))
    return settings


def json_dumps(payload: Any) -> bytes:
    """Return UTF-8 JSON of a value (numpy scalars and arrays included)."""
    if orjson is not None:
        return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(payload, default=str, ensure_ascii=False).encode()  # pragma: no cover


def json_loads(data: bytes | str) -> Any:
    """Parse JSON (raises ``ValueError`` on bad input)."""
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data)  # pragma: no cover
