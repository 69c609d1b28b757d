"""The ``ml-test-score`` flow: how production-ready a model's pipeline is (Breck et al. 2017, 28 tests).

Stages: record a person's documented checks (if given), gather the evidence of a registry version
(its tags, run, evaluation, trials, reproductions, monitoring runs, deployments, inference log, the
project's tests), score the 28 tests (``tasks/ml_test_checks.py``), and record the report: a Prefect
markdown and table artifact, ``ml_test_score/ml_test_score.json`` and ``.md`` on the version's run,
and the tag ``mlops.ml_test_score`` on the version and the registered model (which a promotion
policy's ``min_ml_test_score`` reads).
"""

from __future__ import annotations

from prefect import flow

from blocks.settings import state_dir
from flows.common import DEFAULT_MODEL_NAME, contract_file, inference_log_dir, load_dvc, load_mlflow
from tasks.ml_test_score import (
    MlTestScore,
    collect_evidence,
    record_manual_evidence,
    record_ml_test_score,
    score_pipeline,
)
from tasks.mlflow_tracking import check_tracking_server
from tasks.monitoring_links import model_version_link, run_link
from tasks.prefect_artifacts import publish_report


@flow(name="ml-test-score", log_prints=True)
def ml_test_score(
    model_name: str = DEFAULT_MODEL_NAME,
    version: str | None = None,
    alias: str = "champion",
    mlflow_block: str | None = None,
    dvc_block: str | None = None,
    serving_block: str | None = None,
    log_dir: str | None = None,
    manual_evidence: dict[str, str] | None = None,
) -> MlTestScore:
    """Score a model's pipeline with the ML Test Score from recorded evidence, and record the report.

    Each of the 28 tests earns 1 point for automated evidence, 0.5 for a documented manual check
    (``manual_evidence``, kept as version tags for later runs) and 0 otherwise, with the reason;
    the score is the lowest of the four section totals (each out of 7).

    Args:
        model_name: Registered model name.
        version: Version to score (wins over ``alias``).
        alias: Alias naming the version when ``version`` is None.
        mlflow_block: Name of a saved ``MlflowServer`` block (None: embedded).
        dvc_block: Name of a saved ``DvcRepository`` block (None: embedded); its local remote's file
            modes are checked.
        serving_block: Name of the saved ``BentoMLServing`` block whose inference log to look at.
        log_dir: Inference log root (None: the serving block's, else the embedded default).
        manual_evidence: Item id (e.g. ``data_3``) to a note of a person's check: who, when, where
            its result is documented.

    Returns:
        The :class:`~tasks.ml_test_score.MlTestScore`; ``description`` reads
        ``ML Test Score 5.5 (data 6, model 6.5, infra 5.5, monitoring 6)``.

    Raises:
        RegistryError: The model, version or alias does not exist.
        ValueError: ``manual_evidence`` names an unknown item or has an empty note.

    Examples:
        >>> from flows.ml_test_score import ml_test_score
        >>> ml_test_score("churn-classifier").description  # doctest: +SKIP
        'ML Test Score 5.5 (data 6, model 6.5, infra 5.5, monitoring 6)'
        >>> ml_test_score("churn-classifier", version="3",
        ...               manual_evidence={"data_3": "costs reviewed by A. Lee: docs/costs.md"})  # doctest: +SKIP
    """
    mlflow_server, data_repo = load_mlflow(mlflow_block), load_dvc(dvc_block)
    check_tracking_server(mlflow_server)
    if manual_evidence:
        target = version or collect_evidence(mlflow_server, model_name, None, alias).version
        record_manual_evidence(mlflow_server, model_name, target, manual_evidence)
    remote = data_repo.remote_url if "://" not in data_repo.remote_url else None
    evidence = collect_evidence(mlflow_server, model_name, version, alias, inference_log_dir(log_dir, serving_block),
                                str(contract_file(model_name)), [str(state_dir()), *([remote] if remote else [])],
                                DEFAULT_MODEL_NAME)
    score = score_pipeline(evidence)
    stored = record_ml_test_score(mlflow_server, score)
    links = {"MLflow run": run_link(mlflow_server, score.run_id),
             "MLflow model version": model_version_link(mlflow_server, model_name, score.version)}
    publish_report(f"{model_name}-ml-test-score", score.markdown() + f"\n\nOn the MLflow run: {', '.join(stored)}",
                   score.rows(), {k: v for k, v in links.items() if v}, description=score.description)
    print(score.render())
    return score
