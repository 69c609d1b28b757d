"""``prefect-mlops ci``: what a change to a pipeline must pass before it ships (MLOps level 2).

1. ``component tests``: ``pytest`` on the user's tests (``--tests``, default ``tests/`` when present).
2. ``deployment definitions``: every definition in ``deployments/definitions.py`` builds, its
   entrypoint imports, its parameters validate against the flow's signature, its schedule
   and triggers parse, and the ``prefect.yaml`` document builds.
3. the smoke run (:mod:`deployments.pipeline_smoke`): the whole pipeline on a small sample of the
   user's data against throwaway servers: training converges, predictions are finite, the gate
   gives a verdict, the model serves and answers ``/predict``.
4. with ``--deploy`` and every check passed: every deployment registered from its definition.

It prints one line per check (PASS / FAIL / SKIP and the reason) or JSON, and exits 1 when a
check fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from deployments.pipeline_smoke import Check


def run_component_tests(path: str | None) -> Check:
    """Run ``pytest`` on the user's tests.

    Args:
        path: Test file or folder (None: ``tests/`` when present, else skipped; ``""``: skipped).

    Returns:
        The check.

    Examples:
        >>> run_component_tests("").ok is None
        True
    """
    if path is None and Path("tests").is_dir():
        path = "tests"
    if not path:
        return Check("component tests", None, "no tests given (--tests PATH) and no tests/ folder")
    if not Path(path).exists():
        return Check("component tests", False, f"{path} does not exist")
    out = subprocess.run([sys.executable, "-m", "pytest", path, "-q", "-p", "no:cacheprovider"], capture_output=True,
                         text=True)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    last = lines[-1].strip("= ") if lines else (out.stderr.strip().splitlines() or ["no output"])[-1]
    return Check("component tests", out.returncode == 0, f"pytest {path}: {last}")


def definition_problems(defs: list[Any]) -> list[str]:
    """Return what is wrong with the deployment definitions (empty: all valid).

    Each definition's entrypoint must import, its parameters validate against the flow's signature
    (a parameter that no flow takes is a typo), its schedule and triggers build, and the whole set
    must build as Prefect deployments and as a ``prefect.yaml`` document.

    Args:
        defs: ``DeploymentDefinition`` objects.

    Returns:
        One message per problem, naming the deployment.

    Examples:
        >>> from deployments.definitions import DeploymentDefinition, definitions
        >>> definition_problems(definitions())
        []
        >>> bad = DeploymentDefinition("flows/watch_data.py:watch_data", "w", "", cron="61 * * * *")
        >>> definition_problems([bad])[0].startswith("watch-data/w: does not build")
        True
    """
    from deployments.code_source import CodeSource
    from deployments.definitions import _accepted, prefect_yaml, runner_deployments

    problems: list[str] = []
    accepted_anywhere: set[str] = set()
    for d in defs:
        try:
            flow = d.load_flow()
        except Exception as exc:  # noqa: BLE001 - any import failure is the problem to report
            problems.append(f"{d.entrypoint}/{d.name}: entrypoint does not import: {type(exc).__name__}: {exc}")
            continue
        label = f"{flow.name}/{d.name}"
        accepted_anywhere |= set(flow.parameters.properties)
        try:
            flow.validate_parameters(_accepted(flow, d.parameters))
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{label}: parameters do not validate against {d.entrypoint}: {exc}")
        try:
            runner_deployments([d])
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{label}: does not build: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    unknown = sorted({name for d in defs for name in d.parameters} - accepted_anywhere)
    if unknown and len(problems) < len(defs):
        problems.append(f"parameters no flow takes (a typo?): {', '.join(unknown)}")
    if not problems:
        try:
            prefect_yaml(defs, source=CodeSource(None))
        except Exception as exc:  # noqa: BLE001
            problems.append(f"prefect.yaml does not build: {type(exc).__name__}: {exc}")
    return problems


def check_definitions(defs: list[Any]) -> Check:
    """Return the ``deployment definitions`` check.

    Examples:
        >>> from deployments.definitions import definitions
        >>> check = check_definitions(definitions())
        >>> check.ok, check.reason.split("; ")[0].endswith("deployments build")
        (True, True)
    """
    problems = definition_problems(defs)
    if problems:
        return Check("deployment definitions", False, "; ".join(problems))
    return Check("deployment definitions", True, f"{len(defs)} deployments build; entrypoints import; parameters, "
                 "schedules and triggers valid")


def load_training_spec(path: str | None) -> Any:
    """Read a ``TrainingSpec`` from a JSON or YAML file (None: the task's defaults).

    Examples:
        >>> load_training_spec(None) is None
        True
        >>> load_training_spec("spec.yaml").params  # doctest: +SKIP
        {'max_iter': 1}
    """
    if not path:
        return None
    import yaml

    from tasks.sklearn_training import TrainingSpec

    return TrainingSpec.model_validate(yaml.safe_load(Path(path).read_text()))


def run_ci(defs: list[Any], tests: str | None = None, data: str | None = None, target: str | None = None,
           training: Any = None, rows: int = 400, prefect_api: str | None = None,
           deploy: Callable[[], list[str]] | None = None, smoke: bool = True) -> list[Check]:
    """Run every check of ``prefect-mlops ci`` and return them in order.

    Args:
        defs: The deployment definitions to validate (and deploy).
        tests: The user's tests (see :func:`run_component_tests`).
        data: The data file to sample for the smoke run (None: the demo's generated sample).
        target: Its target column.
        training: A ``TrainingSpec`` for the smoke run (None: the task's defaults).
        rows: Rows sampled for the smoke run.
        prefect_api: Smoke-run against this Prefect API instead of a throwaway server.
        deploy: Called when every check passed (``--deploy``); returns the deployment ids.
        smoke: Run the smoke pipeline.

    Returns:
        The checks.

    Examples:
        >>> from deployments.definitions import definitions
        >>> checks = run_ci(definitions(), tests="tests/flows", rows=300)  # doctest: +SKIP
        >>> all(c.ok is not False for c in checks)  # doctest: +SKIP
        True
    """
    from deployments.pipeline_smoke import smoke_run

    checks = [run_component_tests(tests), check_definitions(defs)]
    if smoke:
        checks += smoke_run(data, target, training, rows, prefect_api)
    if deploy is not None:
        failed = [c.name for c in checks if c.ok is False]
        if failed:
            checks.append(Check("deploy", None, f"not deployed: {', '.join(failed)} failed"))
        else:
            try:
                ids = deploy()
                checks.append(Check("deploy", True, f"{len(ids)} deployments registered"))
            except Exception as exc:  # noqa: BLE001
                checks.append(Check("deploy", False, f"{type(exc).__name__}: {exc}"))
    return checks


def render(checks: list[Check]) -> str:
    """Return the readable report: one line per check and the verdict.

    Examples:
        >>> print(render([Check("gate verdict", True, "promoted"), Check("model serves", False, "HTTP 500")]))
        PASS  gate verdict           promoted
        FAIL  model serves           HTTP 500
        ci: FAILED (model serves)
    """
    failed = [c.name for c in checks if c.ok is False]
    lines = [c.render() for c in checks]
    lines.append(f"ci: FAILED ({', '.join(failed)})" if failed else "ci: PASSED")
    return "\n".join(lines)


def cmd_ci(args: argparse.Namespace) -> int:
    """Run the checks; exit 1 when one fails.

    Examples:
        >>> from deployments.cli import main
        >>> main(["ci", "--tests", "", "--data", "customers.csv", "--target", "churned"])  # doctest: +SKIP
        0
    """
    from deployments.cli import _definitions, _target

    defs = _definitions(args)
    deploy = None
    if args.deploy:
        from deployments.definitions import deploy_all

        def deploy() -> list[str]:
            return deploy_all(args.work_pool, defs, *_target(args))

    checks = run_ci(defs, tests=args.tests, data=args.data, target=args.target,
                    training=load_training_spec(args.training), rows=args.rows, prefect_api=args.smoke_prefect_api,
                    deploy=deploy, smoke=not args.no_smoke)
    failed = any(c.ok is False for c in checks)
    if args.json:
        print(json.dumps({"passed": not failed, "checks": [
            {**asdict(c), "status": {True: "pass", False: "fail", None: "skip"}[c.ok]} for c in checks]}, indent=2))
    else:
        print(render(checks))
    return 1 if failed else 0


def add_ci_parser(sub: Any, definition_options: Callable[[argparse.ArgumentParser], None],
                  target_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the ``ci`` command to the ``prefect-mlops`` parser.

    Examples:
        >>> from deployments.cli import build_parser
        >>> build_parser().parse_args(["ci", "--no-smoke", "--deploy", "--work-pool", "k8s"]).work_pool
        'k8s'
    """
    ci = sub.add_parser("ci", help="test, validate and smoke-run the pipeline; with --deploy, then redeploy it")
    ci.add_argument("--tests", default=None, help="pytest path of the component tests (default: tests/ if "
                                                  "present; '' to skip)")
    ci.add_argument("--data", default=None, help="data file to sample for the smoke run (default: the demo's)")
    ci.add_argument("--target", default=None, help="target column of --data (default: churned)")
    ci.add_argument("--training", default=None, help="JSON/YAML TrainingSpec for the smoke run (default: the "
                                                     "task's defaults)")
    ci.add_argument("--rows", type=int, default=400, help="rows sampled for the smoke run")
    ci.add_argument("--smoke-prefect-api", default=None, help="smoke-run against this Prefect API (default: a "
                                                              "throwaway server)")
    ci.add_argument("--no-smoke", action="store_true", help="skip the smoke run")
    ci.add_argument("--deploy", action="store_true", help="when every check passes, register every deployment")
    ci.add_argument("--json", action="store_true", help="print JSON")
    definition_options(ci)
    target_options(ci)
    ci.set_defaults(func=cmd_ci)
