"""PostgreSQL for the production profile: install, ``initdb`` into a project folder, start on 127.0.0.1, stop by PID.

The Prefect server (``postgresql+asyncpg://``) and the MLflow server (``postgresql://``, psycopg2)
keep their state in one PostgreSQL cluster that this module owns: its data folder is under the
profile's folder, it listens on a free 127.0.0.1 port only (no Unix socket), password
authentication (scram-sha-256) for a generated password kept beside the data, and it is stopped
by PID (fast shutdown), never through the system service. The Debian ``postgresql`` package is
installed with ``apt-get`` when ``initdb`` is missing (its default cluster and service are not
created). PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` system
user (created by the package), through ``setpriv`` so that the PID we hold is the postmaster's.

    .venv/bin/python -m deployments.postgres --root .mlops/production/postgres   # start, print URLs, wait
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tasks.system import (
    find_process,
    free_port,
    log_tail,
    process_tree,
    signal_processes,
    start_process,
    stop_processes,
    wait_gone,
    wait_until,
)

#: Where Debian puts each major version's server binaries.
DEBIAN_ROOT = Path("/usr/lib/postgresql")
#: Database superuser of the cluster (the role in the URLs).
DB_USER = "mlops"
#: OS user the server runs as when this process is root.
OS_USER = "postgres"
#: File (beside the data folder) with the generated password, readable by its owner only.
PASSWORD_FILE = "password"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server binaries are missing and cannot be installed here."""


def find_postgres_bin() -> Path | None:
    """Return the folder of ``initdb`` and ``postgres`` (PATH first, then Debian's newest version), or None."""
    on_path = shutil.which("initdb")
    if on_path and (Path(on_path).resolve().parent / "postgres").is_file():
        return Path(on_path).resolve().parent
    versions = [p.parent for p in DEBIAN_ROOT.glob("*/bin/initdb") if (p.parent / "postgres").is_file()]
    if not versions:
        return None
    return max(versions, key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0)


def install_postgres(timeout_s: float = 900.0) -> Path:
    """Return the server binaries' folder, installing Debian's ``postgresql`` with ``apt-get`` if needed.

    The package's own cluster (``main``, port 5432, the system service) is not created: this
    profile runs its own cluster in a project folder.

    Raises:
        PostgresUnavailable: When the binaries are missing and ``apt-get`` is not there (or not root).
    """
    found = find_postgres_bin()
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise PostgresUnavailable("PostgreSQL's initdb is not installed and apt-get is not available: install "
                                  "the PostgreSQL server (initdb, postgres) and put its bin folder on PATH")
    if os.geteuid() != 0:
        raise PostgresUnavailable("PostgreSQL's initdb is not installed: run `sudo apt-get install -y postgresql` "
                                  "(or this command as root)")
    conf = Path("/etc/postgresql-common/createcluster.d/prefect-mlops.conf")
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("# prefect-mlops runs its own cluster in a project folder\ncreate_main_cluster = false\n")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([apt, "update"], env=env, check=True, timeout=timeout_s, capture_output=True)
    done = subprocess.run([apt, "install", "-y", "--no-install-recommends", "-o", "Dpkg::Options::=--force-confold",
                           "postgresql"], env=env, timeout=timeout_s, capture_output=True, text=True)
    found = find_postgres_bin()
    if done.returncode != 0 or found is None:
        raise PostgresUnavailable(f"apt-get install postgresql failed (exit {done.returncode}):\n"
                                  f"{(done.stdout + done.stderr)[-2000:]}")
    return found


def _as_user() -> tuple[list[str], tuple[int, int] | None]:
    """Return the command prefix that drops root to :data:`OS_USER`, and that user's (uid, gid); none if not root."""
    if os.geteuid() != 0:
        return [], None
    import pwd

    try:
        entry = pwd.getpwnam(OS_USER)
    except KeyError as exc:
        raise PostgresUnavailable(f"running as root and there is no {OS_USER!r} user to run PostgreSQL as: "
                                  "install the postgresql package, or run as a non-root user") from exc
    prefix = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--"]
    return prefix, (entry.pw_uid, entry.pw_gid)


@dataclass
class PostgresServer:
    """A started PostgreSQL cluster: its postmaster process, port, role and password."""

    process: subprocess.Popen
    port: int
    password: str
    data_dir: Path
    log_path: Path
    user: str = DB_USER
    host: str = "127.0.0.1"

    def url(self, database: str, driver: str = "postgresql") -> str:
        """Return a SQLAlchemy URL for ``database`` (``driver`` e.g. ``postgresql+asyncpg`` for Prefect)."""
        return f"{driver}://{self.user}:{quote(self.password, safe='')}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres"):  # noqa: ANN201 - a psycopg2 connection, imported lazily
        """Return a new psycopg2 connection to ``database`` (autocommit)."""
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=database, connect_timeout=5)
        conn.autocommit = True
        return conn

    def log_tail(self, chars: int = 4000) -> str:
        """Return the end of the server's log."""
        return log_tail(self.log_path, chars)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the cluster: fast shutdown (SIGINT: sessions are ended, data is checkpointed), SIGKILL at timeout."""
        if self.process.poll() is None:
            found = find_process(self.process.pid)
            if found is not None:
                tree = process_tree(found)
                signal_processes([found], signal.SIGINT)
                stop_processes(wait_gone(tree, timeout), timeout_s=5.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def _init_cluster(bin_dir: Path, root: Path, data_dir: Path, prefix: list[str], owner: tuple[int, int] | None) -> str:
    """Create the cluster in ``data_dir`` unless it exists; return the role's password (kept in ``root``)."""
    password_file = root / PASSWORD_FILE
    if (data_dir / "PG_VERSION").is_file() and password_file.is_file():
        return password_file.read_text().strip()
    shutil.rmtree(data_dir, ignore_errors=True)  # a half-made cluster (initdb interrupted) is made again
    password = secrets.token_urlsafe(24)
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(password)
    data_dir.mkdir(mode=0o700, parents=True)
    pwfile = data_dir.parent / f".initdb-{os.getpid()}"
    pwfile.write_text(password)
    try:
        os.chmod(pwfile, 0o600)
        if owner:
            os.chown(data_dir, *owner)
            os.chown(pwfile, *owner)
        done = subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data_dir), "-U", DB_USER,
                               "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", f"--pwfile={pwfile}",
                               "-E", "UTF8", "--locale=C.UTF-8"], capture_output=True, text=True, timeout=300,
                              cwd=root)  # a folder the server's user can reach (not a private cwd)
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        hint = (f" (as root the server runs as {OS_USER!r}: every folder above {data_dir} must be searchable by it)"
                if owner else "")
        raise PostgresUnavailable(f"initdb failed{hint}:\n{(done.stdout + done.stderr)[-2000:]}")
    return password


def start_postgres(root: Path, port: int | None = None, databases: tuple[str, ...] = ("prefect", "mlflow"),
                   deadline_s: float = 90.0) -> PostgresServer:
    """Start a PostgreSQL cluster kept in ``root`` on 127.0.0.1 (initdb the first time) with ``databases`` in it.

    Args:
        root: Folder of the cluster (``data``), its password file and log.
        port: Port (default: a free one).
        databases: Databases to create if missing.
        deadline_s: Seconds to wait until it accepts connections.

    Returns:
        The running server; stop it with :meth:`PostgresServer.stop`.

    Raises:
        PostgresUnavailable: PostgreSQL cannot be installed, or the cluster cannot be created.

    Examples:
        >>> from deployments.postgres import start_postgres
        >>> pg = start_postgres(Path(".mlops/production/postgres"))  # doctest: +SKIP
        >>> pg.url("prefect", "postgresql+asyncpg")  # doctest: +SKIP
        'postgresql+asyncpg://mlops:...@127.0.0.1:41234/prefect'
    """
    bin_dir = install_postgres()
    prefix, owner = _as_user()
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / "data"
    password = _init_cluster(bin_dir, root, data_dir, prefix, owner)
    port = port or free_port()
    cmd = [*prefix, str(bin_dir / "postgres"), "-D", str(data_dir), "-h", "127.0.0.1", "-p", str(port),
           "-c", "unix_socket_directories=", "-c", "max_connections=200"]
    log_path = root / "postgres.log"
    process = start_process(cmd, log_path, {**os.environ, "LC_ALL": "C.UTF-8"}, cwd=root)
    server = PostgresServer(process, port, password, data_dir, log_path)

    def accepting() -> bool:
        with contextlib.closing(server.connect()):
            return True

    import psycopg2
    from psycopg2 import sql

    try:
        wait_until(accepting, deadline_s, f"postgres on 127.0.0.1:{port}", server.process, server.log_tail,
                   interval=0.3, ignore=(psycopg2.OperationalError,))
        with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
            for name in databases:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except BaseException:
        server.stop()
        raise
    return server


def main(argv: list[str] | None = None) -> int:
    """Start the cluster, print its URLs, and stop it on Ctrl-C."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".mlops/production/postgres")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    server = start_postgres(Path(args.root), args.port)
    print(f"PREFECT_API_DATABASE_CONNECTION_URL={server.url('prefect', 'postgresql+asyncpg')}")
    print(f"MLFLOW_BACKEND_STORE_URI={server.url('mlflow')}")
    print(f"postgres PID {server.process.pid}; Ctrl-C stops it", flush=True)
    try:
        while server.process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
