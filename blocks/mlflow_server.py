"""MLflow tracking server + model registry block."""

from __future__ import annotations

import base64
import contextlib
import contextvars
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.settings import state_dir

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient


@dataclass(frozen=True)
class _Scope:
    """Credentials (as request headers) and HTTP settings of one block, active for one call."""

    headers: dict[str, str] = field(default_factory=dict)
    http: dict[str, str] = field(default_factory=dict)


#: The scope of the MLflow call running in this thread / task (None: MLflow's own defaults).
_SCOPE: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("mlops_mlflow_scope", default=None)
_HOOKS_LOCK = threading.Lock()
_HOOKS: dict[str, Any] = {}
_READY_STORES: set[str] = set()


def _prepare_sqlite_store(tracking_uri: str) -> None:
    """Create (or migrate) a ``sqlite:///`` store once, holding a file lock beside the database.

    MLflow creates and migrates a SQLite store on first use in each process, without a lock. Two
    processes opening a new store at once both run the migrations, and one fails with
    ``table _alembic_tmp_experiments already exists``. That was seen in CI: two overlapping
    scheduled watch-data runs on a fresh state folder. The lock makes the first process create the
    tables and the others wait for it.

    Args:
        tracking_uri: Any tracking URI; only ``sqlite:///<path>`` is acted on.
    """
    if not tracking_uri.startswith("sqlite:///") or tracking_uri in _READY_STORES:
        return
    from filelock import FileLock
    from mlflow.store.db.utils import _all_tables_exist, _initialize_tables, create_sqlalchemy_engine_with_retry

    path = Path(tracking_uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.init.lock", timeout=300):
        engine = create_sqlalchemy_engine_with_retry(tracking_uri)
        try:
            if not _all_tables_exist(engine):
                _initialize_tables(engine)
        finally:
            engine.dispose()
    _READY_STORES.add(tracking_uri)


def _install_hooks() -> None:
    """Teach MLflow (once per process) to read credentials and HTTP settings from the current scope.

    MLflow reads credentials and HTTP retry / timeout settings only from ``os.environ``
    (``mlflow.utils.credentials.get_default_host_creds``, ``rest_utils.http_request``), which
    would leak one block's token to every other client and child process. Instead:

    - credentials travel as an ``Authorization`` header from a ``RequestHeaderProvider``, MLflow's
      documented plugin interface for request headers (registered here rather than through a package
      entry point, so it needs no install step); it adds headers only inside a scope;
    - the HTTP settings are MLflow ``_EnvironmentVariable`` objects whose ``get_raw`` is given a
      scope lookup first, then the environment as before. Outside a scope MLflow behaves as without us.
    """
    if _HOOKS.get("installed"):
        return
    with _HOOKS_LOCK:
        if _HOOKS.get("installed"):
            return
        from mlflow import environment_variables as ev
        from mlflow.tracking.request_header.abstract_request_header_provider import RequestHeaderProvider
        from mlflow.tracking.request_header.registry import _request_header_provider_registry

        class ScopedCredentialsHeaderProvider(RequestHeaderProvider):
            """Adds the current block's Authorization header, only inside ``MlflowServer.scope()``."""

            def in_context(self) -> bool:
                scope = _SCOPE.get()
                return bool(scope and scope.headers)

            def request_headers(self) -> dict[str, str]:
                scope = _SCOPE.get()
                return dict(scope.headers) if scope else {}

        _request_header_provider_registry.register(ScopedCredentialsHeaderProvider)
        for var in (ev.MLFLOW_HTTP_REQUEST_MAX_RETRIES, ev.MLFLOW_HTTP_REQUEST_TIMEOUT,
                    ev.MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, ev.MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR):
            original = var.get_raw

            def scoped_get_raw(_name: str = var.name, _original: Any = original) -> str | None:
                scope = _SCOPE.get()
                if scope is not None and _name in scope.http:
                    return scope.http[_name]
                return _original()

            var.get_raw = scoped_get_raw  # type: ignore[method-assign]
        _HOOKS["installed"] = True


class _ContextThreadPool(ThreadPoolExecutor):
    """A thread pool whose jobs run in the submitting thread's ``contextvars`` context (so in its scope)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


def _scoped_client_class() -> type:
    """Return (once) an ``MlflowClient`` subclass whose public methods run inside the client's scope."""
    if "client" in _HOOKS:
        return _HOOKS["client"]
    from mlflow import MlflowClient

    class ScopedMlflowClient(MlflowClient):
        """An ``MlflowClient`` that carries its block's credentials and HTTP settings per call."""

        def __init__(self, scope: _Scope, **kwargs: Any) -> None:
            object.__setattr__(self, "_mlops_scope", scope)
            super().__init__(**kwargs)

        def __repr__(self) -> str:
            return f"ScopedMlflowClient(tracking_uri={self.tracking_uri!r})"

        def __getattribute__(self, name: str) -> Any:
            attr = object.__getattribute__(self, name)
            if name.startswith("_") or not callable(attr):
                return attr
            scope = object.__getattribute__(self, "_mlops_scope")

            def scoped(*args: Any, **kwargs: Any) -> Any:
                token = _SCOPE.set(scope)
                try:
                    return attr(*args, **kwargs)
                finally:
                    _SCOPE.reset(token)

            return scoped

    _HOOKS["client"] = ScopedMlflowClient
    return ScopedMlflowClient


class MlflowServer(Block):
    """Where MLflow tracking and the model registry live, and how to reach them.

    The embedded default (:meth:`embedded`) is a SQLite database and an artifact folder
    under the project state folder; production points ``tracking_uri`` at an
    ``mlflow server`` (PostgreSQL backend, object-store artifacts).

    Attributes:
        tracking_uri: MLflow tracking URI (``http://...`` or ``sqlite:///...``).
        registry_uri: Model registry URI; defaults to the tracking URI.
        experiment_name: Experiment that pipeline runs are logged to.
        artifact_location: Artifact root for a newly created experiment (file-backed stores).
        username: Basic-auth user for a protected server.
        password: Basic-auth password.
        token: Bearer token for a protected server.
        request_timeout_s: Timeout of one HTTP request to the server.
        max_retries: Bounded retries of one HTTP request before a clear error.

    Examples:
        Load a saved block and get a client:

        >>> from blocks.mlflow_server import MlflowServer
        >>> mlflow_server = MlflowServer.load("BLOCK_NAME")  # doctest: +SKIP
        >>> client = mlflow_server.get_client()  # doctest: +SKIP
        >>> client.search_registered_models()  # doctest: +SKIP

        Save one that points at a running ``mlflow server``:

        >>> MlflowServer(tracking_uri="http://127.0.0.1:5000").save("local-mlflow")  # doctest: +SKIP
    """

    _block_type_name = "MLflow Server"
    _block_type_slug = "mlops-mlflow-server"
    _logo_url = "https://github.com/mlflow.png"  # type: ignore[assignment]
    _documentation_url = "https://mlflow.org/docs/latest/tracking.html"  # type: ignore[assignment]

    tracking_uri: str = Field(..., description="MLflow tracking URI, e.g. http://127.0.0.1:5000 or sqlite:///mlflow.db.")
    registry_uri: str | None = Field(default=None, description="Model registry URI; the tracking URI when empty.")
    experiment_name: str = Field(default="prefect-mlops", description="Experiment that pipeline runs go to.")
    artifact_location: str | None = Field(
        default=None, description="Artifact root used when the experiment is created (file-backed stores)."
    )
    username: str | None = Field(default=None, description="Basic-auth user name for a protected server.")
    password: SecretStr | None = Field(default=None, description="Basic-auth password for a protected server.")
    token: SecretStr | None = Field(default=None, description="Bearer token for a protected server.")
    request_timeout_s: int = Field(default=20, description="Timeout of one HTTP request, in seconds.")
    max_retries: int = Field(default=2, description="Retries of one HTTP request before a clear error.")

    @classmethod
    def embedded(cls, root: Path | None = None, experiment_name: str = "prefect-mlops") -> MlflowServer:
        """Return the embedded default: SQLite + local artifacts under the state folder.

        Args:
            root: Folder for ``mlflow.db`` and ``mlartifacts``; the state folder's ``mlflow``.
            experiment_name: Experiment name.

        Returns:
            An unsaved block; nothing is created until a client is used.

        Examples:
            >>> MlflowServer.embedded().tracking_uri  # doctest: +SKIP
            'sqlite:////home/me/project/.mlops/mlflow/mlflow.db'
        """
        root = root or state_dir() / "mlflow"
        root.mkdir(parents=True, exist_ok=True)
        return cls(
            tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
            experiment_name=experiment_name,
            artifact_location=(root / "mlartifacts").as_uri(),
        )

    @property
    def is_http(self) -> bool:
        """Whether the tracking URI names a remote server."""
        return self.tracking_uri.startswith(("http://", "https://"))

    def _scope_settings(self) -> _Scope:
        headers: dict[str, str] = {}
        if self.username and self.password is not None:
            raw = f"{self.username}:{self.password.get_secret_value()}".encode()
            headers["Authorization"] = "Basic " + base64.standard_b64encode(raw).decode()
        elif self.token is not None:
            headers["Authorization"] = f"Bearer {self.token.get_secret_value()}"
        http = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.max_retries),
                "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.request_timeout_s),
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
        return _Scope(headers=headers, http=http)

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Apply this block's credentials and HTTP settings to MLflow calls made inside the ``with`` block.

        Scoped to the current thread / asyncio task (a ``ContextVar``): nothing is written to
        ``os.environ``, so another block's client, a concurrent task or a child process never sees
        this block's token. Needed only around MLflow's module-level functions; the client from
        :meth:`get_client` applies it to each of its calls by itself.

        Examples:
            >>> server = MlflowServer.load("prod-mlflow")  # doctest: +SKIP
            >>> with server.scope():  # doctest: +SKIP
            ...     mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=server.tracking_uri)
        """
        _install_hooks()
        _prepare_sqlite_store(self.tracking_uri)
        token = _SCOPE.set(self._scope_settings())
        try:
            yield
        finally:
            _SCOPE.reset(token)

    def get_client(self) -> MlflowClient:
        """Return a new ``MlflowClient`` for this server (no process-global state set).

        Credentials and HTTP retry / timeout settings apply to this client's calls only
        (see :meth:`scope`); they are never written to ``os.environ``.

        Returns:
            An ``mlflow.MlflowClient(tracking_uri=..., registry_uri=...)`` whose public methods run in :meth:`scope`.
        """
        _install_hooks()
        _prepare_sqlite_store(self.tracking_uri)
        if self.registry_uri:
            _prepare_sqlite_store(self.registry_uri)
        return _scoped_client_class()(self._scope_settings(), tracking_uri=self.tracking_uri,
                                      registry_uri=self.registry_uri or self.tracking_uri)

    def artifact_repository(self, artifact_uri: str) -> Any:
        """Return an MLflow artifact repository for ``artifact_uri`` whose worker threads keep this scope.

        MLflow downloads files on a thread pool, and threads do not inherit a ``ContextVar``;
        this repository's pools run each job in the submitting thread's context. Call its
        methods inside :meth:`scope`.

        Args:
            artifact_uri: e.g. a registered version's ``source``.

        Returns:
            An ``mlflow.store.artifact.artifact_repo.ArtifactRepository``.
        """
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        with self.scope():
            repo = get_artifact_repository(artifact_uri, tracking_uri=self.tracking_uri)
        repo.thread_pool = _ContextThreadPool(max_workers=getattr(repo, "max_workers", 4))
        if hasattr(repo, "_chunk_thread_pool"):
            repo._chunk_thread_pool = _ContextThreadPool(max_workers=getattr(repo, "max_workers", 4))
        return repo

    def ui_url(self) -> str | None:
        """Return the browser URL of the server, or None for a file/SQLite store."""
        return self.tracking_uri.rstrip("/") if self.is_http else None

    def summary(self) -> dict[str, Any]:
        """Return the non-secret settings, for logs and artifacts."""
        return {"tracking_uri": self.tracking_uri, "experiment": self.experiment_name}
