"""BentoML serving block: where bentos are stored, where the live endpoint listens, how it serves."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from prefect.blocks.core import Block
from pydantic import Field, field_validator

from blocks.settings import state_dir


class BentoMLServing(Block):
    """A BentoML store and the live HTTP endpoint that serves a registered model from it.

    The endpoint keeps one stable URL (``http://host:port``) across model versions: a small
    front process owns the port and forwards to the current ``bentoml serve`` backend, which
    runs on a private 127.0.0.1 port; deploying a new version starts a new backend, checks it
    and repoints the front without dropping a request. Every prediction is written to the
    inference log (Parquet by day / hour) unless ``inference_log`` is off.

    The embedded default (:meth:`embedded`) keeps the store under the state folder
    (``$PREFECT_MLOPS_HOME/bentoml``), serves on 127.0.0.1:3000 as local processes, and logs
    to ``$PREFECT_MLOPS_HOME/inference-log``. For production, build the image from the
    Dockerfile the packaging task writes (or ``bentoml containerize`` where Docker exists).

    Attributes:
        store_path: BentoML home (``BENTOML_HOME``): the model and bento store.
        host: Interface the stable endpoint binds.
        port: Port of the stable endpoint.
        target: Where the bento runs (``local``: processes on this machine).
        workers: ``bentoml serve`` worker processes per backend.
        max_batch_size: Most records scored in one ``predict`` call (adaptive batching).
        batch_wait_ms: Longest wait for a batch to fill up to the previous batch's size (0: never wait).
        max_request_records: Most records one request may hold (more: HTTP 413).
        max_request_bytes: Largest request body (more: HTTP 413).
        request_timeout_s: BentoML's per-request timeout.
        readiness_timeout_s: Deadline for a new backend to load its model and answer ``/readyz``.
        drain_timeout_s: Deadline for requests still running on a replaced backend before it is stopped.
        backend_port_range: Inclusive ``(low, high)`` ports the private backends may take (None: any free
            port the OS gives). A range whose every port is taken is a clear error at deployment.
        supervise: Run a supervisor process per endpoint that restarts a dead front or backend.
        supervise_interval_s: How often the supervisor checks the endpoint's processes.
        inference_log: Record every prediction in the inference log.
        log_dir: Inference log folder.
        log_flush_interval_s: Longest time a prediction waits in memory before it is written.
        log_flush_records: Write as soon as this many predictions wait.
        log_max_buffered: Most predictions kept in memory when writes lag; more are dropped and counted.
        tracing: Trace ``/predict`` requests with OpenTelemetry (costs about as much as the model).
        metrics: BentoML's Prometheus ``/metrics``.
        access_log: BentoML's access log (every request is in the inference log anyway).
        python_packages: Requirements written into the bento (None: the installed versions of the
            model's stack, never locked against the index at build time).

    Examples:
        >>> from blocks.bentoml_serving import BentoMLServing
        >>> serving = BentoMLServing.load("BLOCK_NAME")  # doctest: +SKIP
        >>> serving.endpoint_url()  # doctest: +SKIP
        'http://127.0.0.1:3000'

        >>> BentoMLServing(store_path="/srv/bentoml", port=8080, workers=2).save("local-serving")  # doctest: +SKIP
    """

    _block_type_name = "BentoML Serving"
    _block_type_slug = "mlops-bentoml-serving"
    _logo_url = "https://github.com/bentoml.png"  # type: ignore[assignment]
    _documentation_url = "https://docs.bentoml.com/en/latest/reference/bentoml/bento-build-options.html"  # type: ignore[assignment]

    store_path: str | None = Field(default=None, description="BentoML home (model and bento store); "
                                                             "None: the state folder's 'bentoml'.")
    host: str = Field(default="127.0.0.1", description="Interface the stable endpoint binds.")
    port: int = Field(default=3000, description="Port of the stable endpoint.")
    target: Literal["local"] = Field(default="local", description="Where the bento runs: local processes.")
    workers: int = Field(default=1, ge=1, description="bentoml serve worker processes per backend.")
    max_batch_size: int = Field(default=64, ge=1, description="Most records scored in one predict call.")
    batch_wait_ms: float = Field(default=2.0, ge=0, description="Longest wait for a batch to fill (0: never wait).")
    max_request_records: int = Field(default=1000, ge=1, description="Most records one request may hold.")
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="Largest request body in bytes.")
    request_timeout_s: int = Field(default=60, ge=1, description="BentoML's per-request timeout in seconds.")
    readiness_timeout_s: float = Field(default=120.0, gt=0, description="Deadline for a new backend to be ready.")
    drain_timeout_s: float = Field(default=30.0, ge=0, description="Deadline for a replaced backend's requests.")
    backend_port_range: tuple[int, int] | None = Field(
        default=None, description="Inclusive (low, high) ports the private backends may take; None: any free port.")
    supervise: bool = Field(default=True, description="Restart a dead front or backend (supervisor process).")
    supervise_interval_s: float = Field(default=1.0, gt=0, le=60, description="Seconds between supervisor checks.")
    inference_log: bool = Field(default=True, description="Record every prediction in the inference log.")
    log_dir: str | None = Field(default=None, description="Inference log folder; None: the state folder's "
                                                          "'inference-log'.")
    log_flush_interval_s: float = Field(default=2.0, gt=0, description="Longest wait in memory of a prediction.")
    log_flush_records: int = Field(default=20_000, ge=1, description="Write as soon as this many predictions wait.")
    log_max_buffered: int = Field(default=200_000, ge=1, description="Most predictions kept in memory; "
                                                                      "more are dropped and counted.")
    tracing: bool = Field(default=False, description="Trace /predict requests with OpenTelemetry.")
    metrics: bool = Field(default=False, description="BentoML's Prometheus /metrics endpoint.")
    access_log: bool = Field(default=False, description="BentoML's access log.")
    python_packages: list[str] | None = Field(default=None, description="Requirements written into the bento; "
                                                                        "None: the installed model stack.")

    @field_validator("backend_port_range")
    @classmethod
    def _check_port_range(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is None:
            return None
        low, high = value
        if not (1024 <= low <= high <= 65535):
            raise ValueError(f"backend_port_range {tuple(value)} must be (low, high) with 1024 <= low <= high <= "
                             "65535, e.g. (39000, 39099)")
        return (low, high)

    @classmethod
    def embedded(cls, port: int = 3000, root: Path | None = None) -> BentoMLServing:
        """Return the embedded default: store, serving state and inference log under the state folder.

        Args:
            port: Port of the stable endpoint on 127.0.0.1.
            root: Folder holding ``bentoml`` and ``inference-log``; the state folder by default.

        Returns:
            An unsaved block; nothing starts until a model is deployed.

        Examples:
            >>> BentoMLServing.embedded(port=3100).endpoint_url()  # doctest: +SKIP
            'http://127.0.0.1:3100'
        """
        root = root or state_dir()
        return cls(store_path=str(root / "bentoml"), log_dir=str(root / "inference-log"), port=port)

    def home(self) -> Path:
        """Return the BentoML home folder (``BENTOML_HOME``)."""
        return Path(self.store_path).expanduser() if self.store_path else state_dir() / "bentoml"

    def log_path(self) -> Path:
        """Return the inference log folder."""
        return Path(self.log_dir).expanduser() if self.log_dir else state_dir() / "inference-log"

    def state_file(self) -> Path:
        """Return the JSON file that records what serves on this endpoint (processes, since when)."""
        return self.home() / "serving" / f"endpoint-{self.host.replace(':', '_')}-{self.port}.json"

    def endpoint_url(self) -> str:
        """Return the stable URL of the live endpoint."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def subprocess_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Return the environment of a ``bentoml`` subprocess: this process's, plus ``BENTOML_HOME``.

        The store is chosen per subprocess, so no task mutates ``os.environ``.
        """
        env = {**os.environ, "BENTOML_HOME": str(self.home()), "BENTOML_DO_NOT_TRACK": "True"}
        env.update(extra or {})
        return env

    def runtime_settings(self, status_file: str | None = None) -> dict[str, Any]:
        """Return the settings a serving process reads from ``$MLOPS_SERVING_CONFIG``."""
        return {
            "log_dir": str(self.log_path()), "log_enabled": self.inference_log,
            "flush_interval_s": self.log_flush_interval_s, "flush_records": self.log_flush_records,
            "max_buffered": self.log_max_buffered, "max_batch_size": self.max_batch_size,
            "batch_wait_ms": self.batch_wait_ms, "max_request_records": self.max_request_records,
            "max_request_bytes": self.max_request_bytes, "workers": self.workers,
            "timeout_s": self.request_timeout_s, "tracing": self.tracing, "metrics": self.metrics,
            "access_log": self.access_log, "status_file": status_file,
        }

    def runtime_env(self, status_file: str | None = None) -> dict[str, str]:
        """Return the environment of a ``bentoml serve`` backend."""
        return self.subprocess_env({"MLOPS_SERVING_CONFIG": json.dumps(self.runtime_settings(status_file))})

    def summary(self) -> dict[str, Any]:
        """Return the settings worth showing in logs and artifacts."""
        return {"url": self.endpoint_url(), "store": str(self.home()), "workers": self.workers,
                "max_batch_size": self.max_batch_size, "inference_log": str(self.log_path()) if self.inference_log
                else "off"}
