"""Session fixtures: an isolated state folder, a real Prefect server, a real MLflow server."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import HTTPServer
from pathlib import Path

import pytest

# One isolated state folder for the whole session, set before any of our code reads it.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="mlops-test-"))
os.environ["PREFECT_MLOPS_HOME"] = str(_SESSION_HOME / "state")
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect-home")
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(_SESSION_HOME / "state" / "prefect-results")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("GIT_AUTHOR_NAME", "prefect-mlops tests")
os.environ.setdefault("GIT_AUTHOR_EMAIL", "tests@example.invalid")
os.environ.setdefault("GIT_COMMITTER_NAME", "prefect-mlops tests")
os.environ.setdefault("GIT_COMMITTER_EMAIL", "tests@example.invalid")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servers import ServerProcess, start_mlflow_server, start_prefect_server  # noqa: E402
from tests_support import Receiver  # noqa: E402


@pytest.fixture(scope="session")
def session_home() -> Path:
    """The session's temporary root folder."""
    return _SESSION_HOME


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "no_server: a test of pure functions; a session of only such tests starts "
                                       "no Prefect server")


@pytest.fixture(scope="session", autouse=True)
def prefect_server(request: pytest.FixtureRequest, session_home: Path) -> Iterator[str | None]:
    """A real ``prefect server start`` (SQLite, scheduler and triggers running) for the whole session.

    Started before any other fixture, so that every flow a fixture or test runs has it; not started
    (None) when every selected test is marked ``no_server`` (tests of pure functions).
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if all(item.get_closest_marker("no_server") for item in request.session.items):
        yield None
        return
    server = start_prefect_server(session_home / "prefect-server", ui=False, scheduler_loop_s=2.0)
    api = f"{server.url}/api"
    os.environ["PREFECT_API_URL"] = api  # for subprocesses
    try:
        with temporary_settings({PREFECT_API_URL: api}):
            yield api
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=10)  # else the exit retries log uploads to a stopped server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(session_home: Path) -> Iterator[ServerProcess]:
    """A real ``mlflow server`` on a free 127.0.0.1 port with a SQLite backend."""
    server = start_mlflow_server(session_home / "mlflow-server", deadline_s=600)  # 2.5 min seen on a busy box
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_block_name(mlflow_server: ServerProcess, prefect_server: str) -> str:
    """A saved MlflowServer block that points at the real mlflow server."""
    from blocks.mlflow_server import MlflowServer

    MlflowServer(tracking_uri=mlflow_server.url, experiment_name="tests").save("test-mlflow", overwrite=True)
    return "test-mlflow"


@pytest.fixture(scope="session")
def sample_dir(session_home: Path) -> Path:
    """Sample batches written once per session (day 0 = reference, day 3 = drifted)."""
    from tasks.sample_data import make_customer_frame

    folder = session_home / "samples"
    folder.mkdir(exist_ok=True)
    make_customer_frame(3000, seed=0, day=0).to_parquet(folder / "day0.parquet", index=False)
    make_customer_frame(3000, seed=0, day=1).to_parquet(folder / "day1.parquet", index=False)
    make_customer_frame(3000, seed=0, day=3, covariate_drift=0.8, concept_drift=0.8).to_parquet(
        folder / "day3-drift.parquet", index=False)
    return folder


@pytest.fixture()
def receiver() -> Iterator[str]:
    """A local webhook (tests_support.Receiver) on a free 127.0.0.1 port; its URL. Stopped after the test."""
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Receiver.received.clear()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()
    server.server_close()
