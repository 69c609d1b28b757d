"""Prefect artifacts a person wants to see: summaries, metric tables, links."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE


def _key(text: str) -> str:
    # Artifact keys: lowercase letters, numbers and dashes.
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60]


@task(name="publish-report", cache_policy=NO_CACHE)
def publish_report(key: str, markdown: str, table: list[dict[str, Any]] | None = None,
                   links: dict[str, str] | None = None, description: str | None = None) -> None:
    """Publish a markdown summary, an optional table and links as Prefect artifacts.

    Args:
        key: Artifact key prefix (e.g. ``churn-classifier-training``).
        markdown: Markdown body of the summary.
        table: Rows of a metrics table.
        links: Link title -> URL (only ``http(s)`` URLs become link artifacts).
        description: Short description shown in the UI.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def report() -> None:
        ...     publish_report("demo", "# Done", [{"metric": "roc_auc", "value": 0.8}])
    """
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    key = _key(key)
    create_markdown_artifact(markdown=markdown, key=f"{key}-summary", description=description)
    if table:
        create_table_artifact(table=table, key=f"{key}-metrics", description=description)
    for title, url in (links or {}).items():
        if url.startswith(("http://", "https://")):
            create_link_artifact(link=url, link_text=title, key=f"{key}-{_key(title)}",
                                 description=f"{title}: {description}" if description else title)


@task(name="tag-flow-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def tag_flow_run(tags: list[str]) -> list[str]:
    """Add tags to the current flow run, so the runs list shows its verdict (e.g. ``drift``, ``decay``).

    Tags are shown on each run of the Prefect UI's runs list and can be filtered on; a run's own
    tags are fixed when it is created, so this updates the run through the API. Idempotent.

    Args:
        tags: Tags to add (existing tags are kept).

    Returns:
        The run's tags after the update (empty outside a flow run).

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def monitor() -> None:
        ...     tag_flow_run(["drift"])
    """
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if not flow_run.id:
        return []
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run.id)
        merged = list(dict.fromkeys([*run.tags, *tags]))
        if merged != list(run.tags):
            client.update_flow_run(run.id, tags=merged)
    return merged
