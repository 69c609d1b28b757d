"""Where embedded state lives: one folder, one environment variable.

Every embedded default (the MLflow SQLite database and artifacts, the DVC data repo
and its local remote, reports, the BentoML store, the inference log, Prefect task
results) lives under :func:`state_dir`, so a demo is wiped with one ``rm -rf``.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The one setting that moves all embedded state.
STATE_DIR_ENV = "PREFECT_MLOPS_HOME"
#: Default folder, relative to the current working directory.
DEFAULT_STATE_DIRNAME = ".mlops"


def state_dir(create: bool = True) -> Path:
    """Return the project-local state folder.

    Args:
        create: Create the folder if it does not exist.

    Returns:
        The absolute path named by ``$PREFECT_MLOPS_HOME``, or ``./.mlops``.

    Examples:
        >>> from blocks.settings import state_dir
        >>> state_dir().name  # doctest: +SKIP
        '.mlops'
    """
    raw = os.environ.get(STATE_DIR_ENV) or str(Path.cwd() / DEFAULT_STATE_DIRNAME)
    path = Path(raw).expanduser().resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
