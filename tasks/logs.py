"""The run logger, usable from a task's plain function (``task.fn``) too."""

from __future__ import annotations

import logging
from typing import Any


def run_logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    """Return Prefect's run logger inside a flow or task run, else the ``prefect_mlops`` logger."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("prefect_mlops")
