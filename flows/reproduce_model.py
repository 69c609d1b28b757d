"""The ``reproduce-model`` flow: retrain a registered version from its recorded data and settings, and compare.

Stages: read the version's lineage (data rev and md5, estimator, parameters, split, seed, code
commit, library versions: ``tasks/model_reproduction.py``), fetch those exact bytes through DVC
(md5 checked), split and fit one trial with the recorded settings and evaluate it in a new MLflow
run of ``<experiment>-reproductions`` (nothing registered or promoted), then compare the test
metrics with the recorded ones against a relative tolerance. Code or library changes are warnings
in the summary; a data rev gone from the DVC remote is a clear error before anything is trained.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prefect import flow
from pydantic import BaseModel

from blocks.mlflow_server import MlflowServer
from blocks.settings import state_dir
from flows.common import DEFAULT_MODEL_NAME, load_dvc, load_mlflow
from flows.training_run import PipelineRun
from flows.training_stages import quietly
from tasks import lineage as L
from tasks import model_reproduction as R
from tasks.exceptions import TrainingConfigError
from tasks.mlflow_tracking import (
    check_tracking_server,
    finish_pipeline_run,
    log_dataset_input,
    log_evaluation,
    run_url,
    start_pipeline_run,
)
from tasks.model_evaluation import evaluate_model
from tasks.prefect_artifacts import publish_report
from tasks.sklearn_spec import TrainingSpec
from tasks.sklearn_training import split_dataset, train_trial

#: Task options of a reproduction's split and fit: always computed again, never served from a cache.
UNCACHED = {"refresh_cache": True}


class ReproductionSummary(BaseModel):
    """What one reproduction found: the recorded and the new metrics, the verdict, the warnings."""

    model_name: str
    version: str
    verdict: str
    tolerance: float
    data_rev: str
    data_md5: str
    recorded_run_id: str
    run_id: str
    run_url: str
    experiment: str
    estimator: str
    params: dict
    spec_source: str
    comparison: list[R.MetricComparison]
    test_digest: str = ""
    recorded_test_digest: str = ""
    warnings: list[str] = []

    @property
    def reproduced(self) -> bool:
        """Whether every recorded metric was reproduced within the tolerance."""
        return self.verdict == R.REPRODUCED

    def render(self) -> str:
        """Return a readable summary (metrics beside each other, then the warnings)."""
        lines = [
            f"reproduction  {self.model_name}:{self.version} -> {self.verdict} (tolerance {self.tolerance:.1%})",
            f"data          DVC rev {self.data_rev[:12]}  md5 {self.data_md5} (as recorded)",
            f"settings      {self.estimator} {json.dumps(self.params, sort_keys=True)} (split from {self.spec_source})",
            f"test rows     {self._test_rows()}",
            f"mlflow runs   recorded {self.recorded_run_id}, reproduction {self.run_id} in {self.experiment}",
            f"{'metric':<24}{'recorded':>10}{'reproduced':>12}{'delta':>10}{'relative':>10}",
        ]
        for r in self.comparison:
            lines.append(f"{r.metric:<24}{_num(r.recorded):>10}{_num(r.reproduced):>12}{_num(r.delta, '+.4f'):>10}"
                         f"{_num(r.relative, '.2%'):>10}" + ("" if r.within else "  OUT OF TOLERANCE"))
        return "\n".join(lines + [f"WARNING       {w}" for w in self.warnings])

    def _test_rows(self) -> str:
        if not self.recorded_test_digest:
            return f"digest {self.test_digest} (the recorded run has no digest to compare with)"
        same = "the same as" if self.test_digest == self.recorded_test_digest else "DIFFERENT from"
        return f"digest {self.test_digest}, {same} the recorded {self.recorded_test_digest}"


def _num(value: float | None, fmt: str = ".4f") -> str:
    return "-" if value is None else format(value, fmt)


@contextlib.contextmanager
def reproduction_run(mlflow_server: MlflowServer, experiment_id: str, record: R.RecordedTraining, spec: TrainingSpec,
                     lineage: dict[str, str]) -> Iterator[PipelineRun]:
    """Open the reproduction's MLflow run (lineage + ``mlops.reproduces``) and close it FINISHED or FAILED."""
    tags = {**lineage, L.TAG_DATA_REV: record.data_rev, L.TAG_DATA_MD5: record.data_md5,
            L.TAG_DATA_PATH: record.data_path, L.TAG_ESTIMATOR: record.estimator, L.TAG_TARGET: record.target,
            L.TAG_PARAMS: json.dumps(record.params, sort_keys=True), R.TAG_REPRODUCES: record.ref,
            R.TAG_REPRODUCE_RUN: record.run_id, R.TAG_TRAINING_SPEC: spec.model_dump_json()}
    params = {"estimator": record.estimator, "target": record.target, **record.params, "split": spec.split,
              "seed": spec.seed, "test_size": spec.test_size, "valid_size": spec.valid_size}
    run = PipelineRun(start_pipeline_run(mlflow_server, experiment_id, f"reproduce-{record.model_name}-v"
                                         f"{record.version}", tags, params), new=True)
    try:
        yield run
    except BaseException:
        quietly(finish_pipeline_run, mlflow_server, run.run_id, "FAILED")
        raise
    finish_pipeline_run(mlflow_server, run.run_id, "FINISHED", run.finish_tags)


@flow(name="reproduce-model", log_prints=True)
def reproduce_model(
    model_name: str = DEFAULT_MODEL_NAME, version: str | None = None, alias: str = "champion",
    tolerance: float = 0.02, mlflow_block: str | None = None, dvc_block: str | None = None,
    experiment_name: str | None = None,
) -> ReproductionSummary:
    """Retrain a registered version from its recorded data rev and settings; compare its metrics with the record.

    Nothing is registered or promoted: the reproduction is one MLflow run (tagged ``mlops.reproduces``
    = ``name:version``) in ``<experiment>-reproductions``, plus a Prefect markdown and table artifact.

    Args:
        model_name: Registered model name.
        version: Version to reproduce (wins over ``alias``).
        alias: Alias naming the version when ``version`` is None.
        tolerance: Largest relative difference of a test metric that still counts as reproduced (0.02 = 2%).
        mlflow_block: Name of a saved ``MlflowServer`` block (None: embedded SQLite).
        dvc_block: Name of the saved ``DvcRepository`` block the data was versioned in (None: embedded).
        experiment_name: Experiment of the reproduction run (None: the recorded run's, plus ``-reproductions``).

    Returns:
        A :class:`ReproductionSummary`; ``verdict`` is ``reproduced`` or ``not reproduced``, and
        ``warnings`` says what differs (code commit, library versions, features, test split).

    Raises:
        RegistryError: The model, version or alias does not exist.
        TrainingConfigError: The version lacks the lineage a reproduction needs, or the tolerance is negative.
        DvcRemoteError: The data rev's bytes are gone from the DVC cache and remote (the message names the
            rev, the remote and what to do), or the remote cannot be read.

    Examples:
        >>> from flows.reproduce_model import reproduce_model
        >>> print(reproduce_model("churn-classifier", version="3").render())  # doctest: +SKIP
        >>> reproduce_model("churn-classifier", alias="champion", tolerance=0.05).verdict  # doctest: +SKIP
        'reproduced'
    """
    if tolerance < 0:
        raise TrainingConfigError(f"tolerance must be >= 0 (a relative difference such as 0.02), not {tolerance}.")
    mlflow_server, data_repo = load_mlflow(mlflow_block), load_dvc(dvc_block)
    check_tracking_server(mlflow_server)
    record = R.read_recorded_training(mlflow_server, model_name, version, None if version else alias)
    recorded = R.read_recorded_spec(record)
    spec = R.reproduction_spec(record, recorded.spec)
    (state_dir() / "reproductions").mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix=f"{model_name}-v{record.version}-", dir=state_dir() / "reproductions") \
            as work:
        # The exact bytes (md5 checked), before any run exists: a vanished rev leaves nothing behind.
        local_file = R.fetch_recorded_data(data_repo, record, str(Path(work) / "data"))
        target_server = mlflow_server.model_copy(update={
            "experiment_name": experiment_name or f"{record.experiment_name}-reproductions"})
        experiment_id = check_tracking_server(target_server)
        with reproduction_run(target_server, experiment_id, record, spec, L.capture_lineage()) as run:
            split = split_dataset.with_options(**UNCACHED)(local_file, record.target, spec, f"{work}/splits",
                                                           record.column_roles or None, record.task.task_type)
            trial = train_trial.with_options(**UNCACHED)(split, record.target, spec, dict(spec.params or {}), 0,
                                                         f"{work}/models", record.task)
            evaluation = evaluate_model(trial.model_path, split.test, record.target, record.task.task_type,
                                        split.features, plot_dir=f"{work}/plots", label="reproduction",
                                        classes=record.task.classes, positive_label=record.task.positive_label)
            log_dataset_input(target_server, run.run_id, local_file, f"{record.data_repo}/{record.data_path}@"
                              f"{record.data_rev}", record.data_path, record.target)
            log_evaluation(target_server, run.run_id, evaluation)
            comparison, verdict = R.compare_metrics(record.metrics, evaluation.metrics, tolerance)
            warnings = [*recorded.warnings, *R.check_environment(record, split.features, evaluation.test_digest)]
            deltas = [r.relative for r in comparison if r.relative is not None]
            run.finish_tags.update({
                R.TAG_REPRODUCE_VERDICT: verdict, R.TAG_REPRODUCE_TOLERANCE: str(tolerance),
                R.TAG_REPRODUCE_MAX_DELTA: str(max(deltas, default=0.0)),
                R.TAG_REPRODUCE_WARNINGS: json.dumps(warnings)})

    summary = ReproductionSummary(
        model_name=model_name, version=record.version, verdict=verdict, tolerance=tolerance,
        data_rev=record.data_rev, data_md5=record.data_md5, recorded_run_id=record.run_id, run_id=run.run_id,
        run_url=run_url(target_server, experiment_id, run.run_id), experiment=target_server.experiment_name,
        estimator=record.estimator, params=record.params, spec_source=recorded.source, comparison=comparison,
        warnings=warnings, test_digest=evaluation.test_digest, recorded_test_digest=record.test_digest)
    _publish(summary)
    return summary


def _publish(summary: ReproductionSummary) -> None:
    """Publish the summary and the recorded-vs-reproduced table as Prefect artifacts, and print it."""
    table = [{"metric": r.metric, "recorded": r.recorded, "reproduced": r.reproduced, "delta": r.delta,
              "relative": r.relative, "within tolerance": r.within} for r in summary.comparison]
    warnings = "".join(f"- **warning** {w}\n" for w in summary.warnings) or "No code or library differences.\n"
    publish_report(f"{summary.model_name}-reproduction",
                   f"# {summary.model_name}:{summary.version}: {summary.verdict}\n\n```\n{summary.render()}\n```\n\n"
                   f"{warnings}\nMLflow run: {summary.run_url}", table, {"MLflow run": summary.run_url},
                   description=f"reproduction of {summary.model_name}:{summary.version}")
    print(summary.render())
