"""Concurrent registry writers against a real mlflow server: several processes move aliases and train at once.

Issue 8, item 3: every move has exactly one history record, the from -> to chain is unbroken,
and the final champion was compared with the champion before it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient
from servers import wait_until

from blocks.mlflow_server import MlflowServer
from tasks.mlflow_alias_history import alias_history
from tasks.mlflow_locks import lock_name
from tasks.sklearn_training import TrainingSpec

ROOT = Path(__file__).resolve().parents[2]
SMALL = TrainingSpec(search_space={"C": [0.1, 1.0]})


def _run_all(scripts: list[str], tmp_path: Path, deadline_s: float) -> None:
    """Start every script as its own process at once; wait until all exit; all must succeed."""
    procs = []
    for i, script in enumerate(scripts):
        out = open(tmp_path / f"worker-{i}.log", "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True), out))
    try:
        wait_until(lambda: all(p.poll() is not None for p, _ in procs), deadline_s, "all workers to finish")
    finally:
        for proc, out in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            out.close()
    for i, (proc, _) in enumerate(procs):
        assert proc.returncode == 0, (tmp_path / f"worker-{i}.log").read_text(errors="replace")[-3000:]


def test_concurrent_alias_moves_keep_one_record_each_and_an_unbroken_chain(mlflow_server, tmp_path: Path) -> None:
    name, workers, moves = "race-aliases", 4, 5
    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.get_experiment_by_name("tests-race") or client.get_experiment(
        client.create_experiment("tests-race"))
    run = client.create_run(experiment.experiment_id)
    client.create_registered_model(name)
    for _ in range(4):
        client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    script = ("from blocks.mlflow_server import MlflowServer\n"
              "from tasks.mlflow_alias_history import set_model_alias\n"
              f"server = MlflowServer(tracking_uri={mlflow_server.url!r})\n"
              "for i in range({moves}):\n"
              "    set_model_alias.fn(server, {name!r}, 'champion', str((W + i) % 4 + 1),\n"
              "                       f'worker {{W}} move {{i}}')\n")
    scripts = [f"W = {w}\n" + script.format(moves=moves, name=name) for w in range(workers)]
    _run_all(scripts, tmp_path, 600)

    history = alias_history(MlflowServer(tracking_uri=mlflow_server.url), name, "champion")
    assert sorted(m.reason for m in history) == sorted(f"worker {w} move {i}" for w in range(workers)
                                                        for i in range(moves))
    assert history[0].from_version is None
    for before, after in zip(history, history[1:], strict=False):
        assert after.from_version == before.to_version, (before, after)
    assert client.get_model_version_by_alias(name, "champion").version == history[-1].to_version
    assert len({m.key for m in history}) == len(history)
    assert not [m for m in client.search_registered_models() if m.name.startswith(lock_name(name))]


def test_two_trainings_at_once_serialise_and_the_second_compares_with_the_first(
        mlflow_block_name: str, mlflow_server, sample_dir: Path, tmp_path: Path) -> None:
    name = "ct-race"
    spec = SMALL.model_dump_json()
    scripts = [("from flows.continuous_training import continuous_training\n"
                "from tasks.sklearn_training import TrainingSpec\n"
                f"continuous_training(data_file={str(sample_dir / f'{day}.parquet')!r}, model_name={name!r}, "
                f"dataset_path='data/ct-race-{day}.parquet', training=TrainingSpec.model_validate_json({spec!r}), "
                f"mlflow_block={mlflow_block_name!r})\n") for day in ("day0", "day1")]
    _run_all(scripts, tmp_path, 900)

    client = MlflowClient(tracking_uri=mlflow_server.url)
    versions = {v.version: v.tags for v in client.search_model_versions(f"name = '{name}'")}
    assert set(versions) == {"1", "2"}
    compared = {v: tags["mlops.gate.champion_version"] for v, tags in versions.items()}
    first = next(v for v, c in compared.items() if c == "none")  # the one that took the lock first
    second = next(v for v in versions if v != first)
    assert versions[first]["mlops.gate.verdict"] == "promoted"
    assert compared[second] == first  # read under the lock: the champion the first had just set
    champion = client.get_model_version_by_alias(name, "champion").version
    history = alias_history(MlflowServer(tracking_uri=mlflow_server.url), name, "champion")
    assert history[-1].to_version == champion
    assert (history[-1].from_version or "none") == versions[champion]["mlops.gate.champion_version"]
    for tags in versions.values():
        assert tags["mlops.promotion.state"] in ("done", "rejected")
