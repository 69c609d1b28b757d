"""MLflow tracking server + model registry block."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.settings import state_dir

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient


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
        >>> mlflow_server = MlflowServer.load("local-mlflow")  # doctest: +SKIP
        >>> client = mlflow_server.get_client()  # doctest: +SKIP
        >>> client.search_registered_models()  # doctest: +SKIP

        Save one that points at a running ``mlflow server``:

        >>> MlflowServer(tracking_uri="http://127.0.0.1:5000").save("local-mlflow")  # doctest: +SKIP
    """

    _block_type_name = "MLflow Server"
    _block_type_slug = "mlops-mlflow-server"
    _logo_url = "https://raw.githubusercontent.com/mlflow/mlflow/master/assets/icon.svg"  # type: ignore[assignment]
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

    def _configure_http(self) -> None:
        # MLflow reads HTTP settings and credentials only from the environment.
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(self.max_retries)
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(self.request_timeout_s)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        if self.username:
            os.environ["MLFLOW_TRACKING_USERNAME"] = self.username
        if self.password is not None:
            os.environ["MLFLOW_TRACKING_PASSWORD"] = self.password.get_secret_value()
        if self.token is not None:
            os.environ["MLFLOW_TRACKING_TOKEN"] = self.token.get_secret_value()

    def get_client(self) -> MlflowClient:
        """Return a new ``MlflowClient`` for this server (no process-global state set).

        Returns:
            ``mlflow.MlflowClient(tracking_uri=..., registry_uri=...)``.
        """
        from mlflow import MlflowClient

        self._configure_http()
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri or self.tracking_uri)

    def ui_url(self) -> str | None:
        """Return the browser URL of the server, or None for a file/SQLite store."""
        return self.tracking_uri.rstrip("/") if self.is_http else None

    def summary(self) -> dict[str, Any]:
        """Return the non-secret settings, for logs and artifacts."""
        return {"tracking_uri": self.tracking_uri, "experiment": self.experiment_name}
