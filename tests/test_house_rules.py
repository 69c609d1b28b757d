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
