"""The BentoML service of one registered model version, and the patch of BentoML's per-request timeout.

The bento's two-line ``service.py`` calls :func:`build_service` (see the package docstring).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from .common import BENTO_CONFIG_FILE, runtime_settings
from .openapi import patch_openapi
from .runtime import JsonEndpoint, PredictEndpoint, ServingRuntime

logger = logging.getLogger("mlops.serving")

#: sha256 of the source of ``TimeoutMiddleware.__call__`` in BentoML 1.4.39: the code the patch replaces.
TIMEOUT_MIDDLEWARE_SHA256 = "fd8b9e3da28ed2b44cfd508d641617e049fcd4986138197ce7bb227332505896"


def patch_bentoml_timeout_middleware() -> bool:
    """Make BentoML 1.4's per-request timeout cancel its timer once the response has started.

    ``bentoml._internal.server.http.traffic.TimeoutMiddleware`` (1.4.39) arms a timer per request
    and never cancels it: it stays pending for the whole ``traffic.timeout`` (60 s). At 3,000
    requests per second that is 180,000 live timers and futures, and the garbage collector's full
    passes over them stall the event loop for up to a hundred milliseconds (measured when the patch
    was written: p99 at 32 connections 25 ms -> 100+ ms within a minute; measure again with
    ``benchmarks/bench_serving.py --models lr --connections 32 --duration 60 --skip-mlflow
    --variants journal,no-timeout-patch``, which runs the backend with and without the patch).
    The replacement is the same code plus ``timer.cancel()``; requests that time out are answered
    504 as before.

    The patch applies only to the exact code it replaces (the source's sha256 is checked), so an
    upgrade of BentoML that changes the middleware leaves it alone and says so in the log;
    ``tests/tasks/_serving/test_service.py`` fails then, as a reminder to check whether it is
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

            from mlops_serving.service import build_service
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
        """Serves one registered model version (see the ``tasks._serving`` package docstring)."""

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
