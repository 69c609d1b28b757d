"""The ML Test Score of a model's pipeline: gather the evidence, score the 28 tests, record the report.

Scoring follows Breck et al. 2017: per test, 1 point for automated evidence, 0.5 for a manual check
whose result is documented (here: a version tag ``mlops.ml_test_score.manual.<item>`` set through
the flow's ``manual_evidence``), 0 otherwise; a section's total is out of 7; the final score is the
minimum of the four section totals. The checks themselves are in ``tasks/ml_test_checks.py``.
The score goes on the version and on the registered model (tag ``mlops.ml_test_score``): the
gate reads the registered model's tag when a promotion policy sets ``min_ml_test_score``.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from blocks.mlflow_server import MlflowServer
from tasks.exceptions import RegistryError
from tasks.lineage import library_versions
from tasks.logs import run_logger
from tasks.ml_test_checks import CANNOT_AUTOMATE, CHECKS, ITEMS, SECTIONS, Evidence, Finding

#: Version and registered-model tag: the final score (minimum of the section totals), e.g. ``5.5``.
TAG_ML_TEST_SCORE = "mlops.ml_test_score"
#: Version and registered-model tag: JSON of the section totals.
TAG_ML_TEST_SECTIONS = "mlops.ml_test_score.sections"
#: Registered-model tag: the version whose pipeline was scored last.
TAG_ML_TEST_VERSION = "mlops.ml_test_score.version"
#: Prefix of version tags holding a person's documented check of one item (0.5 point, manual).
MANUAL_PREFIX = "mlops.ml_test_score.manual."
#: Where the report goes on the version's run.
ARTIFACT_DIR = "ml_test_score"

_CODE_ROOT = Path(__file__).resolve().parent.parent
_PERFORMANCE = re.compile(r"\b[a-z][a-z0-9_]* [+-]\d")


class ScoreItem(BaseModel):
    """One of the 28 tests: its section, the paper's title, the points and the evidence behind them."""

    id: str
    section: str
    title: str
    points: float
    mode: str
    evidence: list[str] = []
    note: str = ""
    passed: bool | None = None


class MlTestScore(BaseModel):
    """The ML Test Score of one registry version's pipeline."""

    model_name: str
    version: str
    run_id: str
    items: list[ScoreItem]
    sections: dict[str, float]
    score: float

    @property
    def description(self) -> str:
        """One line: ``ML Test Score 5.5 (data 6, model 6.5, infra 5.5, monitoring 6)``."""
        return f"ML Test Score {self.score:g} (" + ", ".join(f"{k} {v:g}" for k, v in self.sections.items()) + ")"

    def rows(self) -> list[dict[str, Any]]:
        """Return one table row per test."""
        return [{"section": i.section, "test": f"{i.id}: {i.title}", "points": i.points, "mode": i.mode,
                 "result": _result(i.passed), "evidence": "; ".join(i.evidence), "note": i.note} for i in self.items]

    def markdown(self) -> str:
        """Return the report: the score line, then one table per section."""
        out = [f"# {self.model_name} v{self.version}: {self.description}\n",
               "1 point: automated evidence; 0.5: a documented manual check; 0: none (the reason is given). "
               "The final score is the lowest section total (Breck et al. 2017).\n"]
        for section, title in SECTIONS.items():
            out.append(f"\n## {title}: {self.sections[section]:g} / 7\n\n| test | points | mode | result | evidence "
                       "| note |\n|---|---|---|---|---|---|")
            for i in (i for i in self.items if i.section == section):
                out.append(f"| {i.id}: {i.title} | {i.points:g} | {i.mode} | {_result(i.passed)} | "
                           f"{_cell('<br>'.join(i.evidence))} | {_cell(i.note)} |")
        return "\n".join(out) + "\n"

    def render(self) -> str:
        """Return a plain-text summary: the line, then the items that lack points."""
        lacking = [f"  {i.id} {i.points:g}: {i.title}: {i.note}" for i in self.items if i.points < 1]
        return "\n".join([f"{self.model_name} v{self.version}: {self.description}", *lacking])


def _result(passed: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "-"}[passed]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def score_pipeline(evidence: Evidence) -> MlTestScore:
    """Score the 28 tests from the evidence; a manual check (version tag) lifts a missing item to 0.5.

    Args:
        evidence: What :func:`collect_evidence` gathered.

    Returns:
        The score, every item naming its evidence or the reason it has none.

    Examples:
        >>> score = score_pipeline(Evidence(model_name="m", version="1"))
        >>> len(score.items), score.score
        (28, 0.0)
    """
    items = []
    for key, check in CHECKS.items():
        finding = check(evidence)
        manual = evidence.version_tags.get(MANUAL_PREFIX + key)
        if finding.points < 0.5 and manual:
            why = CANNOT_AUTOMATE.get(key, finding.note)
            finding = Finding(points=0.5, mode="manual", evidence=[f"tag {MANUAL_PREFIX}{key}: {manual}"],
                              note=f"documented by a person; not automated: {why}")
        section, title = ITEMS[key]
        items.append(ScoreItem(id=key, section=section, title=title, **finding.model_dump()))
    sections = {s: sum(i.points for i in items if i.section == s) for s in SECTIONS}
    return MlTestScore(model_name=evidence.model_name, version=evidence.version, run_id=evidence.run_id,
                       items=items, sections=sections, score=min(sections.values()))


def project_tests(root: Path = _CODE_ROOT) -> tuple[list[str], dict[str, list[str]]]:
    """Return the project's test files and, per module of ours they import, the test files that do."""
    files, by_module = [], {}
    for path in sorted((root / "tests").rglob("test_*.py")) if (root / "tests").is_dir() else []:
        rel = path.relative_to(root).as_posix()
        files.append(rel)
        text = path.read_text(errors="replace")
        for module in set(re.findall(r"\b((?:tasks|flows|blocks|deployments)\.[a-z_]+)\b", text)):
            by_module.setdefault(module, []).append(rel)
    return files, by_module


def _artifacts(client: Any, run_id: str, path: str | None = None, depth: int = 2) -> list[str]:
    out = []
    for item in client.list_artifacts(run_id, path):
        if item.is_dir and depth > 0:
            out += _artifacts(client, run_id, item.path, depth - 1)
        elif not item.is_dir:
            out.append(item.path)
    return out


def _prefect_evidence(model_name: str, default_model_name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Monitor-model runs of the model (newest first) and the retraining and monitoring deployments."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    def ours(parameters: dict[str, Any]) -> bool:
        return (parameters or {}).get("model_name", default_model_name) == model_name

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["monitor-model"])),
                                     sort=FlowRunSort.START_TIME_DESC, limit=200)
        monitor = [{"name": r.name, "id": str(r.id), "state": r.state.type.value if r.state else None,
                    "message": (r.state.message or "") if r.state else "", "tags": list(r.tags), "version": None,
                    "performance": bool(_PERFORMANCE.search((r.state.message or "") if r.state else ""))}
                   for r in runs if ours(r.parameters)]
        triggered = {str(getattr(a, "deployment_id", "")) for auto in client.read_automations() if auto.enabled
                     for a in auto.actions}
        deployments = []
        for flow_name in ("continuous-training", "monitor-model"):
            for d in client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name]))):
                if ours(d.parameters):
                    deployments.append({"flow": flow_name, "name": d.name, "triggered": str(d.id) in triggered,
                                        "scheduled": any(s.active for s in d.schedules or []) and not d.paused})
    return monitor, deployments


@task(name="collect-ml-test-evidence", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def collect_evidence(mlflow_server: MlflowServer, model_name: str, version: str | None = None,
                     alias: str = "champion", log_dir: str | None = None, contract_path: str | None = None,
                     data_paths: list[str] | None = None, default_model_name: str = "") -> Evidence:
    """Gather what the 28 checks read: the version, its run, trials, reproductions, monitoring, tests, files.

    Args:
        mlflow_server: The MLflow block.
        model_name: Registered model name.
        version: Version to score (wins over ``alias``).
        alias: Alias naming the version when ``version`` is None.
        log_dir: Inference log root (None: the embedded default).
        contract_path: The model's stored data contract (checked for existence).
        data_paths: Local folders holding the pipeline's data (their file modes are checked).
        default_model_name: The model a flow run or deployment without a ``model_name`` parameter serves.

    Returns:
        The :class:`Evidence`.

    Raises:
        RegistryError: The model, version or alias does not exist.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def evidence() -> int:
        ...     return collect_evidence(MlflowServer.embedded(), "churn-classifier").trials
    """
    from mlflow.exceptions import MlflowException

    from tasks._serving.log_layout import model_root
    from tasks.mlflow_alias_history import alias_history

    client = mlflow_server.get_client()
    try:
        mv = client.get_model_version(model_name, version) if version else client.get_model_version_by_alias(
            model_name, alias)
    except MlflowException as exc:
        raise RegistryError(f"Model {model_name!r} has no {'version ' + version if version else 'alias ' + alias}: "
                            f"{exc}. Check the name with `prefect-mlops status`.") from exc
    run = client.get_run(mv.run_id)
    evaluation: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(mv.run_id, "evaluation/evaluation.json", tmp)
            evaluation = json.loads(Path(path).read_text())
        except (MlflowException, OSError, ValueError):
            run_logger().warning("Run %s has no readable evaluation/evaluation.json", mv.run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    trials = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{mv.run_id}'",
                                max_results=1000)
    reproductions = []
    repro = client.get_experiment_by_name(f"{experiment.name}-reproductions")
    if repro is not None:
        for r in client.search_runs([repro.experiment_id], f"tags.`mlops.reproduces` = '{model_name}:{mv.version}'",
                                    order_by=["attributes.start_time DESC"], max_results=20):
            reproductions.append({"run_id": r.info.run_id, "verdict": r.data.tags.get("mlops.reproduce.verdict", ""),
                                  "max_delta": r.data.tags.get("mlops.reproduce.max_relative_delta", "")})
    monitor, deployments = _prefect_evidence(model_name, default_model_name)
    root = model_root(log_dir, model_name)
    logs = list(root.rglob("*.parquet")) if root.is_dir() else []
    files, by_module = project_tests()
    private = {p: oct(Path(p).stat().st_mode & 0o777)[2:] for p in [*(data_paths or []), str(root)]
               if p and Path(p).exists()}
    return Evidence(
        model_name=model_name, version=str(mv.version), run_id=mv.run_id, version_tags=dict(mv.tags or {}),
        run_tags=dict(run.data.tags), run_params=dict(run.data.params), artifacts=_artifacts(client, mv.run_id),
        evaluation=evaluation, trials=len(trials), aliases=list(mv.aliases or []),
        champion_moves=len(alias_history(mlflow_server, model_name, "champion")), reproductions=reproductions,
        monitor_runs=monitor, deployments=deployments, inference_log={"root": str(root), "files": len(logs)},
        contract=contract_path if contract_path and Path(contract_path).exists() else None,
        tests_by_module=by_module, test_files=files, private_paths=private, libraries_now=library_versions())


@task(name="record-manual-evidence", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def record_manual_evidence(mlflow_server: MlflowServer, model_name: str, version: str,
                           manual: dict[str, str]) -> None:
    """Record a person's documented checks as version tags (``mlops.ml_test_score.manual.<item>``).

    Args:
        mlflow_server: The MLflow block.
        model_name: Registered model name.
        version: The version scored.
        manual: Item id (``data_3``) to what was checked, by whom, where the result is documented.

    Raises:
        ValueError: An item id is not one of the 28, or its note is empty.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def review() -> None:
        ...     record_manual_evidence(MlflowServer.embedded(), "churn-classifier", "3",
        ...                            {"data_3": "feature costs reviewed by A. Lee, docs/costs.md"})
    """
    unknown = sorted(set(manual) - set(ITEMS))
    if unknown or not all(str(v).strip() for v in manual.values()):
        raise ValueError(f"manual_evidence names unknown items {unknown} or has an empty note; items are "
                         f"{', '.join(ITEMS)} and each needs who checked it and where the result is documented.")
    client = mlflow_server.get_client()
    for key, note in manual.items():
        client.set_model_version_tag(model_name, version, MANUAL_PREFIX + key, str(note)[:5000])


@task(name="record-ml-test-score", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def record_ml_test_score(mlflow_server: MlflowServer, score: MlTestScore) -> list[str]:
    """Log ``ml_test_score.json`` and ``.md`` on the version's run; tag the version and the registered model.

    Args:
        mlflow_server: The MLflow block.
        score: The score to record.

    Returns:
        The artifact paths on the run.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def record(score: MlTestScore) -> list[str]:
        ...     return record_ml_test_score(MlflowServer.embedded(), score)
    """
    client = mlflow_server.get_client()
    paths = [f"{ARTIFACT_DIR}/ml_test_score.json", f"{ARTIFACT_DIR}/ml_test_score.md"]
    client.log_dict(score.run_id, score.model_dump(mode="json"), paths[0])
    client.log_text(score.run_id, score.markdown(), paths[1])
    tags = {TAG_ML_TEST_SCORE: f"{score.score:g}", TAG_ML_TEST_SECTIONS: json.dumps(score.sections)}
    for key, value in tags.items():
        client.set_model_version_tag(score.model_name, score.version, key, value)
        client.set_registered_model_tag(score.model_name, key, value)
    client.set_registered_model_tag(score.model_name, TAG_ML_TEST_VERSION, score.version)
    return paths


@task(name="read-ml-test-score", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def recorded_ml_test_score(mlflow_server: MlflowServer, model_name: str) -> float | None:
    """Return the pipeline's last recorded ML Test Score (registered model tag), or None if there is none.

    Args:
        mlflow_server: The MLflow block.
        model_name: Registered model name.

    Returns:
        The score, or None (no model yet, never scored, or an unreadable tag: the gate then fails closed).

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def ready() -> bool:
        ...     return (recorded_ml_test_score(MlflowServer.embedded(), "churn-classifier") or 0) >= 5
    """
    from mlflow.exceptions import MlflowException

    try:
        tags = mlflow_server.get_client().get_registered_model(model_name).tags or {}
    except MlflowException:
        return None
    try:
        return float(tags[TAG_ML_TEST_SCORE])
    except (KeyError, ValueError):
        return None
