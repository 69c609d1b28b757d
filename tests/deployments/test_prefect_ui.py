"""The Prefect UI of a server we start talks to that server, whatever its port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deployments.processes import ServerProcess, start_prefect_server


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_prefect_server(tmp_path_factory.mktemp("ui-server"), ui=True)
    yield server
    server.stop()


def test_ui_settings_name_the_server_itself(ui_server: ServerProcess) -> None:
    assert not ui_server.url.endswith(":4200")  # a random port, where the old default would be wrong
    settings = httpx.get(f"{ui_server.url}/ui-settings", timeout=10).json()
    assert settings["api_url"] == f"{ui_server.url}/api"
    assert httpx.get(f"{settings['api_url']}/health", timeout=10).json() is True


def test_ui_pages_are_served(ui_server: ServerProcess) -> None:
    page = httpx.get(f"{ui_server.url}/", timeout=10, follow_redirects=True)
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_server_log_has_no_telemetry_error(ui_server: ServerProcess) -> None:
    assert "Failed to send telemetry" not in Path(ui_server.log_path).read_text(errors="replace")
