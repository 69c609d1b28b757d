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
            create_link_artifact(link=url, link_text=title, key=f"{key}-{_key(title)}")
