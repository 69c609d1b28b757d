"""The reproduce-model flow against real servers: a version trained on data rev A, reproduced after rev C.

Real Prefect server, real mlflow server, real git + DVC with a local remote (the suite's fixtures).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect import flow
from prefect.client.orchestration import get_client

from blocks.dvc_repository import DvcRepository
from deployments.cli import main
from flows.continuous_training import continuous_training
from flows.reproduce_model import reproduce_model
from tasks.dvc_data import version_dataset
from tasks.exceptions import DvcRemoteError
from tasks.model_reproduction import TAG_REPRODUCES
from tasks.sample_data import make_customer_frame
from tasks.sklearn_training import TrainingSpec

MODEL, DATASET = "repro", "data/repro.parquet"
# A seed other than the default: reproducing the same test rows proves the recorded seed was read back.
SPEC = TrainingSpec(search_space={"C": [0.1, 1.0]}, seed=3)


@pytest.fixture(scope="module")
def client(mlflow_server) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server.url)


@pytest.fixture(scope="module")
def trained(mlflow_block_name: str, session_home: Path) -> tuple:
    """A model trained on rev A; then the data moves on twice (revs B and C), so HEAD is C."""
    folder = session_home / "repro-data"
    folder.mkdir(exist_ok=True)
    for day in (0, 1, 2):
        make_customer_frame(2000, seed=5, day=day).to_parquet(folder / f"day{day}.parquet", index=False)
    summary = continuous_training(data_file=str(folder / "day0.parquet"), model_name=MODEL, dataset_path=DATASET,
                                  training=SPEC, mlflow_block=mlflow_block_name)
    return summary, [new_data(str(folder / f"day{day}.parquet"), f"day {day}") for day in (1, 2)]


@flow(name="version-new-data")
def new_data(path: str, message: str):  # noqa: ANN201 - DatasetVersion
    """New data lands: versioned in the data repo (HEAD moves on), nothing trained."""
    return version_dataset(DvcRepository.embedded(), path, DATASET, message)


def _experiment_runs(client: MlflowClient, name: str) -> int:
    experiment = client.get_experiment_by_name(name)
    return len(client.search_runs([experiment.experiment_id])) if experiment else 0


def test_reproduces_rev_a_after_the_data_moved_on(trained, mlflow_block_name: str, client: MlflowClient) -> None:
    summary, (rev_b, rev_c) = trained
    repo = DvcRepository.embedded()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo.repo_path, capture_output=True, text=True).stdout
    assert head.strip() == rev_c.rev != summary.data_rev and len({summary.data_md5, rev_b.md5, rev_c.md5}) == 3

    result = reproduce_model(model_name=MODEL, version=summary.model_version, mlflow_block=mlflow_block_name)
    print("\n" + result.render())

    assert result.verdict == "reproduced" and result.reproduced
    assert result.data_rev == summary.data_rev and result.data_md5 == summary.data_md5
    assert result.spec_source == "mlops.training_spec"  # recorded at training time, not read back from Prefect
    assert result.test_digest and result.test_digest == result.recorded_test_digest  # the very same test rows
    rows = {r.metric: r for r in result.comparison}
    assert {"roc_auc", "accuracy"} <= set(rows) and all(r.within for r in rows.values())
    assert rows["roc_auc"].recorded == pytest.approx(summary.metrics["roc_auc"])
    assert abs(rows["roc_auc"].reproduced - summary.metrics["roc_auc"]) <= 0.02 * summary.metrics["roc_auc"]
    # Same code and libraries, same features and the same test rows: none of those warnings.
    assert not [w for w in result.warnings if any(k in w for k in (
        "code commit differs", "scikit-learn", "pandas", "numpy", "mlflow", "features", "test split"))]

    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.info.run_id != summary.run_id
    assert run.data.tags[TAG_REPRODUCES] == f"{MODEL}:{summary.model_version}"
    assert run.data.tags["mlops.reproduce.verdict"] == "reproduced"
    assert run.data.tags["mlops.data.md5"] == summary.data_md5
    assert json.loads(run.data.tags["mlops.training_spec"])["seed"] == 3
    assert client.get_experiment(run.info.experiment_id).name == "tests-reproductions"
    assert run.data.metrics["test_roc_auc"] == pytest.approx(rows["roc_auc"].reproduced)
    # Nothing registered or promoted.
    assert [v.version for v in client.search_model_versions(f"name = '{MODEL}'")] == [summary.model_version]
    assert client.get_model_version_by_alias(MODEL, "champion").version == summary.model_version

    with get_client(sync_client=True) as prefect:
        artifact = prefect.read_latest_artifacts()
    keys = {a.key for a in artifact}
    assert f"{MODEL}-reproduction-summary" in keys and f"{MODEL}-reproduction-metrics" in keys


def test_cli_reproduces_the_champion_by_alias(trained, mlflow_block_name: str, capsys) -> None:
    summary, _ = trained
    code = main(["--mlflow-block", mlflow_block_name, "reproduce", f"{MODEL}@champion", "--json"])
    out = capsys.readouterr().out
    printed = json.loads(out[out.index("{\n"):])
    assert code == 0 and printed["version"] == summary.model_version and printed["verdict"] == "reproduced"


def test_data_gone_from_the_remote_is_a_clear_error(trained, mlflow_block_name: str, client: MlflowClient) -> None:
    summary, _ = trained
    repo = DvcRepository.embedded()
    md5 = summary.data_md5
    copies = [p for root in (Path(repo.repo_path) / ".dvc" / "cache", Path(repo.remote_url))
              for p in root.rglob(md5[2:]) if p.parent.name == md5[:2]]
    assert len(copies) == 2  # one in the local DVC cache, one on the remote
    for path in copies:
        path.chmod(0o644)
        path.unlink()
    before = _experiment_runs(client, "tests-reproductions")

    with pytest.raises(DvcRemoteError) as failure:
        reproduce_model(model_name=MODEL, version=summary.model_version, mlflow_block=mlflow_block_name)

    message = str(failure.value)
    assert summary.data_rev in message and md5 in message and repo.remote_url in message
    assert "gone" in message and "dvc push" in message and "Nothing was trained" in message
    assert _experiment_runs(client, "tests-reproductions") == before  # no run was started
