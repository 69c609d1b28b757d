"""The tuning stage as its own subflow, ``tune-trials``, so that it can take its own task runner.

The trials of ``continuous-training`` run in the ``tune-trials`` subflow on the task runner that the
flow's ``trial_runner`` parameter names; every other stage stays on the parent flow's task runner:

- ``threads`` (default): a thread pool in the flow's process, as before;
- ``sequential``: one trial at a time (a baseline, or a machine with little memory);
- ``dask``: ``prefect-dask``'s ``DaskTaskRunner``, on the Dask scheduler at ``dask_address``, or on a
  temporary ``distributed.LocalCluster`` of ``dask_workers`` worker processes (one thread each)
  started for the stage and closed after it.

Trials write their model files to a local folder (the state folder's ``cache/models``) and their
cached results to Prefect's local result storage. A ``LocalCluster`` on the same machine shares both;
workers of a remote cluster need the same folders mounted at the same paths (a shared file system),
the same ``PREFECT_MLOPS_HOME``, ``PREFECT_LOCAL_STORAGE_PATH`` and ``PREFECT_API_URL``, and this
package installed. Dask is imported only when a ``dask`` runner is built, so loading a flow stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tasks.exceptions import TrainingConfigError
from tasks.sklearn_spec import TaskInfo, TrainingSpec, expand_trials
from tasks.sklearn_training import SplitFiles, TrialResult, submit_trials

if TYPE_CHECKING:  # pragma: no cover
    from prefect.task_runners import TaskRunner

TrialRunnerKind = Literal["threads", "sequential", "dask"]
TRIAL_RUNNERS: tuple[str, ...] = ("threads", "sequential", "dask")


class TrialRunner(BaseModel):
    """Which task runner the ``tune-trials`` subflow uses (the flow's ``trial_runner`` parameters).

    Attributes:
        kind: ``threads`` (default), ``sequential`` or ``dask``.
        dask_address: Scheduler address of a running Dask cluster (``tcp://host:8786``); ``dask`` only.
            None starts a temporary ``LocalCluster`` for the stage.
        dask_workers: Worker processes of the temporary ``LocalCluster`` (None: one per core); ``dask``
            without an address only.

    Examples:
        >>> TrialRunner().kind
        'threads'
        >>> TrialRunner(kind="dask", dask_address="tcp://127.0.0.1:8786").describe()
        'dask scheduler tcp://127.0.0.1:8786'
    """

    model_config = ConfigDict(frozen=True)

    kind: TrialRunnerKind = "threads"
    dask_address: str | None = None
    dask_workers: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> TrialRunner:
        if self.kind != "dask" and (self.dask_address or self.dask_workers):
            raise ValueError(f"dask_address / dask_workers are set but trial_runner is {self.kind!r}: "
                             "set trial_runner='dask', or drop them")
        if self.dask_address is not None and not self.dask_address.strip():
            raise ValueError("dask_address is empty: pass the scheduler address (tcp://host:8786) or None")
        if self.dask_address and self.dask_workers:
            raise ValueError("dask_workers sizes a temporary LocalCluster; with dask_address the cluster "
                             "already exists: drop one of them")
        return self

    @classmethod
    def of(cls, kind: str, dask_address: str | None = None, dask_workers: int | None = None) -> TrialRunner:
        """Build and check the choice from the flow's parameters.

        Raises:
            TrainingConfigError: An unknown runner or inconsistent Dask settings, naming the parameter.
        """
        try:
            return cls(kind=kind, dask_address=dask_address, dask_workers=dask_workers)  # type: ignore[arg-type]
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'trial_runner'}: {e['msg']}"
                                 for e in exc.errors())
            raise TrainingConfigError(f"Invalid trial runner (trial_runner={kind!r}, dask_address={dask_address!r}, "
                                      f"dask_workers={dask_workers!r}): {problems}. trial_runner is one of "
                                      f"{list(TRIAL_RUNNERS)}. Nothing was trained.") from exc

    def describe(self) -> str:
        """Return a short readable description (for logs and the flow run's name)."""
        if self.kind != "dask":
            return self.kind
        if self.dask_address:
            return f"dask scheduler {self.dask_address}"
        return f"dask LocalCluster of {self.dask_workers or 'one worker per core'} processes"

    def task_runner(self) -> TaskRunner:
        """Return a new task runner for one ``tune-trials`` run (Dask imported here, only when asked)."""
        if self.kind == "threads":
            return ThreadPoolTaskRunner()
        if self.kind == "sequential":
            return ThreadPoolTaskRunner(max_workers=1)
        from prefect.settings import get_current_settings

        if not get_current_settings().api.url:  # else each worker process would start its own ephemeral API
            raise TrainingConfigError("trial_runner='dask' needs a Prefect server that the Dask workers can "
                                      "reach: set PREFECT_API_URL (e.g. start `prefect server start`), or use "
                                      "trial_runner='threads'.")
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:  # pragma: no cover - a dependency of this package
            raise TrainingConfigError("trial_runner='dask' needs prefect-dask: install prefect-mlops with its "
                                      "dependencies (uv sync).") from exc
        if self.dask_address:
            return DaskTaskRunner(address=self.dask_address)
        import os

        # One thread per worker process: a scikit-learn fit holds the GIL for much of its time.
        return DaskTaskRunner(cluster_kwargs={"n_workers": self.dask_workers or os.cpu_count() or 1,
                                              "threads_per_worker": 1, "processes": True,
                                              "dashboard_address": ":0"})


@flow(name="tune-trials", log_prints=True)
def tune_trials(split: SplitFiles, target: str, spec: TrainingSpec, model_dir: str,
                task: TaskInfo | None = None) -> list[TrialResult]:
    """Fit one ``train-trial`` task per parameter set on this flow's task runner; only missing models are refit.

    Run as a subflow of ``continuous-training`` through :func:`run_trials`, which picks the task runner;
    called directly it uses a thread pool.

    Args:
        split: The split files.
        target: Target column.
        spec: The resolved training spec (its search space gives the trials).
        model_dir: Folder for the fitted models (shared by every worker).
        task: The resolved task.

    Returns:
        The trials' results, in trial order.

    Examples:
        >>> from flows.tuning import TrialRunner, tune_trials
        >>> runner = TrialRunner(kind="dask", dask_workers=2).task_runner()  # doctest: +SKIP
        >>> tune = tune_trials.with_options(task_runner=runner)  # doctest: +SKIP
        >>> results = tune(split, "churned", spec, "/tmp/models")  # doctest: +SKIP
    """
    futures = submit_trials(split, target, spec, expand_trials(spec), model_dir, task)
    return [future.result() for future in futures]


def run_trials(split: SplitFiles, target: str, spec: TrainingSpec, model_dir: str, task: TaskInfo | None,
               runner: TrialRunner) -> list[TrialResult]:
    """Run the ``tune-trials`` subflow on the task runner ``runner`` names (the caller's runner is unchanged).

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def tune(split: SplitFiles, spec: TrainingSpec) -> int:
        ...     return len(run_trials(split, "churned", spec, "/tmp/models", None, TrialRunner(kind="sequential")))
    """
    return tune_trials.with_options(task_runner=runner.task_runner(),
                                    flow_run_name=f"tune-trials-{runner.kind}")(split, target, spec, model_dir, task)
