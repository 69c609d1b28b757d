"""Links a monitoring run hands out: the MLflow run, the model version, the report as stored on MLflow.

Every URL points at the MLflow *server* (the tracking URI of an ``http(s)`` block), so it opens in a
browser on any machine that reaches the server; with an embedded (file / SQLite) store there is no
server, and the functions return None (the summary then shows the local path).

The report link is MLflow's artifact-download route ``/get-artifact?path=...&run_uuid=...`` (the one
the MLflow UI itself uses), which answers the stored file with HTTP 200 as a download
(``Content-Disposition: attachment``, ``text/html``): the browser saves the report, then opens it.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from blocks.mlflow_server import MlflowServer


def artifact_url(mlflow_server: MlflowServer, run_id: str, artifact_path: str) -> str | None:
    """Return the download URL of a run's artifact on the MLflow server, or None without a server.

    Examples:
        >>> artifact_url(MlflowServer(tracking_uri="http://127.0.0.1:5000"), "abc", "monitoring/t/drift.html")
        'http://127.0.0.1:5000/get-artifact?path=monitoring%2Ft%2Fdrift.html&run_uuid=abc'
    """
    base = mlflow_server.ui_url()
    return f"{base}/get-artifact?{urlencode({'path': artifact_path, 'run_uuid': run_id})}" if base else None


def run_link(mlflow_server: MlflowServer, run_id: str) -> str | None:
    """Return the MLflow UI page of a run (``#/runs/<id>`` redirects to its experiment's run page).

    Examples:
        >>> run_link(MlflowServer(tracking_uri="http://127.0.0.1:5000"), "abc")
        'http://127.0.0.1:5000/#/runs/abc'
    """
    base = mlflow_server.ui_url()
    return f"{base}/#/runs/{run_id}" if base else None


def model_version_link(mlflow_server: MlflowServer, model_name: str, version: str) -> str | None:
    """Return the MLflow UI page of a registered model version.

    Examples:
        >>> model_version_link(MlflowServer(tracking_uri="http://127.0.0.1:5000"), "churn classifier", "3")
        'http://127.0.0.1:5000/#/models/churn%20classifier/versions/3'
    """
    base = mlflow_server.ui_url()
    return f"{base}/#/models/{quote(model_name)}/versions/{version}" if base else None
