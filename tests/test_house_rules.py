"""The house rules of ARCHITECTURE.md that a machine can check: module size, flow size, layering, lazy SDKs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.no_server

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("blocks", "tasks", "flows", "deployments")
MAX_MODULE_LINES = 400
MAX_FLOW_LINES = 80
# What each package may import of ours (ARCHITECTURE.md, "Layout"): nothing imports upward.
MAY_IMPORT = {"blocks": {"blocks"}, "tasks": {"blocks", "tasks"}, "flows": {"blocks", "tasks", "flows"},
              "deployments": {"blocks", "tasks", "flows", "deployments"}}
#: tests/ mirrors the code modules: the tests of <package>/<module>.py live in tests/<package>/test_<module>.py
#: (tasks/_serving/<module>.py: tests/tasks/_serving/test_<module>.py). These test files under tests/<package>/
#: test several modules at once and are named after what they cover; the other cross-cutting tests (the whole
#: loop, the dataset matrix, these rules) live at the top of tests/, and the demo's in tests/examples/.
CROSS_CUTTING = {
    "blocks/test_block_standards.py": "every block against Prefect's standard block test suite",
    "blocks/test_blocks.py": "every block: `prefect block register`, no I/O in a constructor",
    "deployments/test_deploy_paths.py": "prefect-mlops deploy and prefect.yaml + prefect deploy register the same",
    "deployments/test_event_contract.py":
        "each event of tasks/events.py starts the run that deployments/definitions.py names",
    "flows/test_deploy_broken_artifact.py": "fault: a corrupted registry artifact through deploy-model and the aliases",
    "flows/test_monitor_task_types.py": "monitor-model on a regression champion with an event-time column",
    "flows/test_registry_concurrency.py": "concurrent alias moves and trainings: locks, alias history, training",
    "flows/test_registry_faults.py": "faults: mlflow dropped mid-download, a SIGKILLed training and its promotion",
}


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _flow_functions(tree: ast.AST) -> list[ast.FunctionDef]:
    def is_flow(dec: ast.expr) -> bool:
        target = dec.func if isinstance(dec, ast.Call) else dec
        return isinstance(target, ast.Name) and target.id == "flow"

    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and any(map(is_flow, n.decorator_list))]


def test_no_module_is_over_400_lines() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in _modules()}
    assert len(sizes) > 50
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_no_flow_function_is_over_80_lines() -> None:
    """A flow function, from its decorator to its last line (signature and docstring included), reads like the loop."""
    long, flows = {}, 0
    for path in _modules():
        for fn in _flow_functions(ast.parse(path.read_text())):
            flows += 1
            if (n := fn.end_lineno - fn.decorator_list[0].lineno + 1) > MAX_FLOW_LINES:
                long[f"{path.relative_to(ROOT)}:{fn.name}"] = n
    assert flows >= 8
    assert long == {}


def test_nothing_imports_upward() -> None:
    wrong = []
    for path in _modules():
        package = path.relative_to(ROOT).parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                top = name.split(".")[0]
                if top in PACKAGES and top not in MAY_IMPORT[package]:
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert wrong == []


def test_loading_the_flows_and_the_cli_imports_no_heavy_sdk() -> None:
    code = ("import sys, deployments.cli, deployments.definitions\n"
            "heavy = ('mlflow', 'evidently', 'bentoml', 'sklearn', 'dvc')\n"
            "print(sorted(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _code_modules() -> set[str]:
    """Every module of the four packages as its path under the root without .py (``tasks/_serving/batcher``)."""
    return {str(p.relative_to(ROOT).with_suffix("")) for p in _modules() if p.name != "__init__.py"}


def _mirror_test_files() -> list[str]:
    tests = ROOT / "tests"
    return sorted(str(p.relative_to(tests)) for pkg in PACKAGES for p in (tests / pkg).rglob("test_*.py"))


def test_tests_mirror_the_code_modules() -> None:
    """Every test file under tests/<package>/ is test_<module>.py for an existing module, or listed as cross-cutting.

    Modules without a test file of their own are printed (``-rP`` or ``-s`` shows them), not failed.
    """
    modules = _code_modules()
    files = _mirror_test_files()
    assert len(files) > 30
    misnamed = [f for f in files if f not in CROSS_CUTTING
                and str(Path(f).with_name(Path(f).name.removeprefix("test_")).with_suffix("")) not in modules]
    assert misnamed == [], ("name each test file under tests/<package>/ test_<module>.py after the module it tests "
                            "(move tests of another module to that module's file), or add a cross-cutting file "
                            "to CROSS_CUTTING with what it covers")
    assert sorted(set(CROSS_CUTTING) - set(files)) == []  # no stale entry
    tested = {str(Path(f).with_name(Path(f).name.removeprefix("test_")).with_suffix("")) for f in files}
    untested = sorted(modules - tested)
    print(f"{len(untested)} of {len(modules)} modules have no test file of their own (tested through others):")
    print("\n".join(f"  {m}.py" for m in untested))
