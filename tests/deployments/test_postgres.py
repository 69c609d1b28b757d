"""Finding or installing PostgreSQL for the production profile: the newest Debian server, a clear error without one."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.postgres import PostgresUnavailable


@pytest.mark.no_server
def test_the_newest_debian_postgres_is_found_when_initdb_is_not_on_path(tmp_path: Path, monkeypatch) -> None:
    import deployments.postgres as pg

    for version in ("13", "15", "9"):
        bin_dir = tmp_path / version / "bin"
        bin_dir.mkdir(parents=True)
        for name in ("initdb", "postgres"):
            (bin_dir / name).write_text("")
    (tmp_path / "16" / "bin").mkdir(parents=True)  # client-only: no server binaries
    (tmp_path / "16" / "bin" / "initdb").write_text("")
    monkeypatch.setattr(pg, "DEBIAN_ROOT", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert pg.find_postgres_bin() == tmp_path / "15" / "bin"


@pytest.mark.no_server
def test_without_postgres_or_apt_get_the_error_says_what_to_install(tmp_path: Path, monkeypatch) -> None:
    import deployments.postgres as pg

    monkeypatch.setattr(pg, "DEBIAN_ROOT", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PostgresUnavailable, match="apt-get is not available"):
        pg.install_postgres()
