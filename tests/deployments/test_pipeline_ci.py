"""``prefect-mlops ci``: passes on the demo's data (and redeploys), fails on a pipeline that does not converge and
on broken deployment definitions; the example CI workflow runs commands that exist."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

from deployments.cli import build_parser, main
from deployments.definitions import PROJECT_ROOT, DeploymentDefinition, EventTrigger, definitions
from deployments.pipeline_ci import definition_problems, render, run_ci

CLI = [sys.executable, "-m", "deployments.cli"]
WORKFLOW = PROJECT_ROOT / "examples" / "github-actions" / "mlops-ci.yml"


def _report(out: str) -> dict[str, tuple[str, str]]:
    """Report lines by check name: (PASS/FAIL/SKIP, reason)."""
    lines = {}
    for line in out.splitlines():
        match = re.match(r"^(PASS|FAIL|SKIP)  (.{22}) (.*)$", line)
        if match:
            lines[match.group(2).strip()] = (match.group(1), match.group(3))
    return lines


async def _pool_deployments(pool: str, delete: bool = False) -> list:
    async with get_client() as client:
        found = await client.read_deployments(work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])))
        if delete:
            for deployment in found:
                await client.delete_deployment(deployment.id)
            await client.delete_work_pool(pool)
        return found


async def _create_pool(pool: str) -> None:
    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=pool, type="process"), overwrite=True)


def test_ci_passes_on_the_demo_data_and_redeploys(prefect_server: str, tmp_path: Path) -> None:
    component = tmp_path / "component-tests"
    component.mkdir()
    (component / "test_features.py").write_text("def test_feature_names():\n    assert 'tenure'.isidentifier()\n")
    pool = "ci-redeploy"
    asyncio.run(_create_pool(pool))
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    try:
        out = subprocess.run([*CLI, "ci", "--tests", str(component), "--rows", "300", "--deploy", "--work-pool", pool,
                              "--mlflow-block", "ci-mlflow", "--repo-url", ""], cwd=PROJECT_ROOT, env=env,
                             capture_output=True, text=True, timeout=900)
        report = _report(out.stdout)
        assert out.returncode == 0, out.stdout + out.stderr[-3000:]
        for check in ("component tests", "deployment definitions", "training converges", "predictions finite",
                      "gate verdict", "model serves", "deploy"):
            assert report[check][0] == "PASS", (check, out.stdout)
        assert "1 passed" in report["component tests"][1]
        assert "/predict" in report["model serves"][1]
        assert out.stdout.strip().endswith("ci: PASSED")
        deployed = asyncio.run(_pool_deployments(pool))
        assert len(deployed) == len(definitions())
        training = [d for d in deployed if d.name == "scheduled"][0]
        assert training.parameters["mlflow_block"] == "ci-mlflow"
        # Nothing the smoke run started is left: no throwaway server, no serving process, no temporary folder.
        left = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
                if any("mlops-ci-" in part for part in p.info["cmdline"] or [])]
        assert left == []
    finally:
        asyncio.run(_pool_deployments(pool, delete=True))


def test_ci_fails_when_training_does_not_converge(prefect_server: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "training.json"
    spec.write_text(json.dumps({"params": {"max_iter": 1}, "search_space": {"C": [1.0]}}))
    code = main(["ci", "--tests", "", "--rows", "300", "--training", str(spec), "--smoke-prefect-api", prefect_server,
                 "--deploy", "--work-pool", "no-such-pool"])
    out = capsys.readouterr().out
    report = _report(out)
    assert code == 1, out
    assert report["training converges"][0] == "FAIL"
    assert "ConvergenceWarning" in report["training converges"][1]
    assert report["model serves"] == ("SKIP", "not deployed: training converges failed")
    assert report["deploy"][0] == "SKIP"  # a failing pipeline is never deployed
    assert report["deployment definitions"][0] == "PASS"
    assert out.strip().endswith("ci: FAILED (training converges)")


@pytest.mark.no_server
def test_broken_definitions_are_named() -> None:
    good = definitions()[4]  # watch-data/watch
    broken = [
        DeploymentDefinition("flows/no_such_flow.py:nothing", "ghost", "missing module"),
        DeploymentDefinition(good.entrypoint, "bad-cron", "", cron="61 * * * *"),
        DeploymentDefinition(good.entrypoint, "bad-param", "", parameters={"model_name": ["not", "a", "name"]}),
        DeploymentDefinition(good.entrypoint, "bad-trigger", "", triggers=(EventTrigger(("x",), dt.timedelta(-1)),)),
        DeploymentDefinition(good.entrypoint, "typo", "", parameters={"mlflow_blok": "prod"}),
    ]
    problems = definition_problems(broken)
    text = "\n".join(problems)
    assert "flows/no_such_flow.py:nothing/ghost: entrypoint does not import" in text
    assert "watch-data/bad-cron: does not build" in text
    assert "watch-data/bad-param: parameters do not validate" in text
    assert "watch-data/bad-trigger: does not build" in text
    assert "parameters no flow takes (a typo?): mlflow_blok" in text
    checks = run_ci(broken, tests="", smoke=False)
    assert render(checks).splitlines()[1].startswith("FAIL  deployment definitions")
    assert render(checks).endswith("ci: FAILED (deployment definitions)")


def _commands(workflow: dict) -> list[str]:
    runs = [step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]
    commands = []
    for run in runs:
        for line in run.splitlines():
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


@pytest.mark.no_server
def test_example_github_workflow_runs_commands_that_exist() -> None:
    import yaml

    workflow = yaml.safe_load(WORKFLOW.read_text())
    commands = _commands(workflow)
    make_targets = set(re.findall(r"^([a-z][\w-]*):", (PROJECT_ROOT / "Makefile").read_text(), re.MULTILINE))
    ours = []
    for command in commands:
        argv = shlex.split(re.sub(r"\$\{\{[^}]*\}\}", "X", command))
        if argv[0] == "make":
            assert set(argv[1:]) <= make_targets, command
        elif argv[0].endswith("prefect-mlops"):
            args = build_parser().parse_args(argv[1:])  # exits (SystemExit) on an option the CLI does not have
            ours.append(args)
    assert [a.command for a in ours] == ["ci", "ci"]
    assert not ours[0].deploy and ours[1].deploy  # checks everywhere, deploys only from main
    deploy_job = workflow["jobs"]["deploy"]
    assert deploy_job["needs"] == "ci" and "refs/heads/main" in deploy_job["if"]
    assert "secrets.PREFECT_API_URL" in deploy_job["env"]["PREFECT_API_URL"]
    assert "make install" in commands


@pytest.mark.no_server
def test_failing_component_tests_fail_ci_and_json_reports_every_check(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "test_component.py").write_text("def test_scaler_keeps_rows():\n    assert 2 + 2 == 5\n")
    code = main(["ci", "--tests", str(tmp_path), "--no-smoke", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["passed"] is False
    assert [(c["name"], c["status"]) for c in report["checks"]] == [("component tests", "fail"),
                                                                   ("deployment definitions", "pass")]
    assert "1 failed" in report["checks"][0]["reason"]


@pytest.mark.no_server
def test_smoke_run_names_a_missing_target_column(tmp_path: Path) -> None:
    from deployments.pipeline_smoke import smoke_run
    from tasks.sample_data import make_customer_frame

    data = tmp_path / "customers.csv"
    make_customer_frame(50, seed=3).to_csv(data, index=False)
    [check] = smoke_run(str(data), target="churn")
    assert (check.name, check.ok) == ("smoke sample", False)
    assert "target column 'churn' is not in" in check.reason and "churned" in check.reason
