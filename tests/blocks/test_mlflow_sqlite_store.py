"""A new SQLite MLflow store opened by several processes at once is created once, without errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from deployments.definitions import PROJECT_ROOT

OPEN_STORE = """
import sys
from pathlib import Path
from blocks.mlflow_server import MlflowServer
server = MlflowServer.embedded(Path(sys.argv[1]))
print(len(server.get_client().search_registered_models()))
"""


def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    # Before the lock, two processes migrating one new database failed with
    # "table _alembic_tmp_experiments already exists" (two scheduled watch-data runs in CI).
    root = tmp_path / "state" / "mlflow"
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_STORE, str(root)], cwd=PROJECT_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for code, out, err in results:
        assert code == 0, err[-3000:]
        assert out.strip() == "0"
    assert (root / "mlflow.db").stat().st_size > 0
