"""What a person sees in the MLflow UI: version descriptions, run notes, champion metrics, titled plots.

Once the gate has decided, :func:`publish_version_page` writes the registry version's description
(one line: verdict, main metric against the champion with the delta, data rev; then the links to
the Prefect flow run and deployment), the run's description (``mlflow.note.content``), the
champion's test metrics beside the challenger's on its run (``champion_<metric>``), and draws the
plots again titled with model, version and data rev, with the champion's ROC and PR curves
overlaid. These are views of what the lineage tags record: a failure to write them is logged and
never undoes a promotion.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.mlflow_server import MlflowServer
from tasks import lineage as L
from tasks.logs import run_logger
from tasks.mlflow_registry import ModelVersionInfo
from tasks.model_evaluation import Evaluation
from tasks.model_plots import render_plots
from tasks.promotion_gate import GateVerdict

#: The MLflow UI shows this run tag as the run's description.
NOTE_TAG = "mlflow.note.content"


def version_headline(verdict: str, metric: str | None, value: float | None, champion_value: float | None,
                     champion_version: str | None, data_rev: str) -> str:
    """Return the one-line version description.

    Examples:
        >>> version_headline("promoted", "roc_auc", 0.9123, 0.798, "1", "3f2a1c0d9e")
        'promoted: roc_auc 0.912 (+0.114 vs v1), data 3f2a1c0'
        >>> version_headline("promoted", "rmse", 3.2, None, None, "abcdef12")
        'promoted: rmse 3.2 (no champion), data abcdef1'
    """
    rev = (data_rev or "unknown")[:7]
    if metric is None or value is None:
        return f"{verdict}: data {rev}"
    if champion_value is None:
        against = f"vs v{champion_version} not scored" if champion_version else "no champion"
    else:
        against = f"{value - champion_value:+.3f} vs v{champion_version}"
    return f"{verdict}: {metric} {value:.3g} ({against}), data {rev}"


def prefect_links(tags: dict[str, str]) -> str:
    """Return the markdown naming the Prefect flow run (linked when a UI exists) and the deployment."""
    run_id, name = tags.get(L.TAG_FLOW_RUN_ID) or "", tags.get(L.TAG_FLOW_RUN_NAME) or ""
    url = tags.get(L.TAG_FLOW_RUN_URL) or L.flow_run_url(run_id)
    shown = f"{name} ({run_id[:8]})" if name else run_id[:8] or "none"
    run = f"[{shown}]({url})" if url else shown
    return f"Prefect flow run {run}, deployment `{tags.get(L.TAG_DEPLOYMENT) or 'ad-hoc'}`"


def run_note(headline: str, tags: dict[str, str], version: ModelVersionInfo | None = None,
             reasons: list[str] | None = None) -> str:
    """Return the markdown description of a training run."""
    data = (f"`{tags.get(L.TAG_DATA_PATH, '?')}` at data rev `{tags.get(L.TAG_DATA_REV, '?')[:12]}` "
            f"(md5 `{tags.get(L.TAG_DATA_MD5, '?')[:12]}`)")
    lines = [f"**{headline}**", "", f"- {prefect_links(tags)}", f"- data: {data}",
             f"- code: `{tags.get(L.TAG_CODE_COMMIT, 'unknown')[:12]}`"]
    if version is not None:
        lines.append(f"- registered as `{version.name}` version {version.version}")
    lines += [f"- gate: {reason}" for reason in reasons or []]
    return "\n".join(lines)


def _metric_point(key: str, value: float, now: int) -> Any:
    from mlflow.entities import Metric

    return Metric(key, float(value), now, 0)


@task(name="publish-version-page", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def publish_version_page(mlflow_server: MlflowServer, version: ModelVersionInfo, evaluation: Evaluation,
                         champion: Evaluation | None, verdict: GateVerdict) -> str | None:
    """Describe a gated version and its run for a person: description, note, champion metrics, titled plots.

    Args:
        mlflow_server: The MLflow block.
        version: The gated (challenger) version.
        evaluation: Its evaluation (with ``plot_data`` when plots were drawn).
        champion: The champion's evaluation on the same test set, or None.
        verdict: The gate's verdict.

    Returns:
        The version's one-line description, or None if writing failed (logged; nothing is undone).

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def describe(v: ModelVersionInfo, e: Evaluation, verdict: GateVerdict) -> str | None:
        ...     return publish_version_page(MlflowServer.embedded(), v, e, None, verdict)
    """
    metric = verdict.compared.get("primary_metric")
    champion_version = verdict.champion_version or verdict.compared.get("champion_present")
    headline = version_headline(verdict.label, metric, evaluation.metrics.get(metric or ""),
                                champion.metrics.get(metric or "") if champion else None, champion_version,
                                version.tags.get(L.TAG_DATA_REV, ""))
    client = mlflow_server.get_client()
    try:
        client.update_model_version(version.name, version.version,
                                    description=f"{headline}\n\n{prefect_links(version.tags)}.")
        if version.run_id:
            run = client.get_run(version.run_id)
            client.set_tag(version.run_id, NOTE_TAG,
                           run_note(headline, run.data.tags, version, verdict.stated_reasons))
            if champion is not None:
                now, present = int(time.time() * 1000), set(run.data.metrics)
                points = [_metric_point(f"champion_{k}", v, now) for k, v in champion.metrics.items()
                          if f"champion_{k}" not in present]
                if points:
                    client.log_batch(version.run_id, metrics=points)
            _log_titled_plots(client, version, evaluation, champion, champion_version)
    except Exception as exc:  # noqa: BLE001 - a view; the registry record (tags, aliases) is complete
        run_logger().warning("Describing %s v%s for the MLflow UI failed: %s", version.name, version.version, exc)
        return None
    run_logger().info("%s v%s: %s", version.name, version.version, headline)
    return headline


def _log_titled_plots(client: Any, version: ModelVersionInfo, evaluation: Evaluation, champion: Evaluation | None,
                      champion_version: str | None) -> None:
    """Draw the plots again, titled with model, version and data rev, champion overlaid; replace the run's."""
    if evaluation.plot_data is None or not version.run_id:
        return
    estimator = (version.tags.get(L.TAG_ESTIMATOR) or "").rsplit(".", 1)[-1]
    title = (f"{version.name} v{version.version} ({estimator}), data {version.tags.get(L.TAG_DATA_REV, '?')[:7]}, "
             f"{evaluation.rows} test rows")
    with tempfile.TemporaryDirectory(prefix="mlops-plots-") as tmp:
        render_plots(evaluation.plot_data, tmp, title, champion.plot_data if champion else None,
                     f"champion v{champion_version}")
        client.log_artifacts(version.run_id, tmp, "plots")
