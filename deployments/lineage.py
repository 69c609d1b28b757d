"""Lineage of a model: endpoint -> bento -> registry version -> MLflow run -> data -> code -> Prefect run.

``prefect-mlops lineage churn`` (the champion), ``churn@challenger``, ``churn:3``, or
``churn --at 2026-11-20T09:00`` (the version the champion alias named then) prints the whole
chain; ``--json`` prints it as JSON. :func:`model_lineage` returns the same as a dict.

Everything is read from records written when the model was made (the version's and run's
``mlops.*`` tags, the alias history, the serving state and the Prefect flow run), so the chain
holds for a model trained months ago; a link that cannot be read says why instead of vanishing.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from deployments.registry_check import CliError


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """Split ``name``, ``name@alias`` or ``name:version`` into (name, alias, version).

    Examples:
        >>> parse_ref("churn@challenger"), parse_ref("churn:3"), parse_ref("churn")
        (('churn', 'challenger', None), ('churn', None, '3'), ('churn', 'champion', None))
    """
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, alias, None
    if ":" in ref:
        name, version = ref.rsplit(":", 1)
        return name, None, version
    return ref, "champion", None


def _flow_run(flow_run_id: str | None, trigger: dict[str, Any] | None) -> dict[str, Any]:
    """Return the Prefect flow run that trained the model, and what started it (event, schedule, person, call)."""
    started: dict[str, Any]
    if trigger and trigger.get("event"):
        started = {"kind": "event", "event": trigger.get("event"), "event_id": trigger.get("event_id"),
                   "occurred": trigger.get("occurred")}
    else:
        started = {"kind": "ad hoc call"}
    record: dict[str, Any] = {"id": flow_run_id, "started_by": started}
    if not flow_run_id:
        return record
    import asyncio
    import uuid

    from prefect.client.orchestration import get_client

    async def read() -> Any:
        async with get_client() as client:
            run = await client.read_flow_run(uuid.UUID(flow_run_id))
            deployment = await client.read_deployment(run.deployment_id) if run.deployment_id else None
            flow = await client.read_flow(run.flow_id)
            return run, f"{flow.name}/{deployment.name}" if deployment else None

    try:
        run, deployment = asyncio.run(read())
    except Exception as exc:  # noqa: BLE001 - the rest of the chain is still worth printing
        record["error"] = f"cannot read flow run {flow_run_id} from the Prefect server: {exc}"
        return record
    record.update(name=run.name, state=run.state_name, start_time=str(run.start_time or ""), deployment=deployment)
    if started["kind"] != "event":
        if run.auto_scheduled:
            started.update(kind="schedule")
        elif run.created_by is not None:
            started.update(kind=str(run.created_by.type or "").lower() or "person",
                           who=run.created_by.display_value)
    return record


def model_lineage(ref: str, mlflow_block: str | None = None, serving_block: str | None = None,
                  at: dt.datetime | None = None) -> dict[str, Any]:
    """Return the lineage chain of a model version as a dict.

    Args:
        ref: ``name`` (its champion), ``name@alias`` or ``name:version``.
        mlflow_block: Saved ``MlflowServer`` block (None: embedded registry).
        serving_block: Saved ``BentoMLServing`` block (None: embedded endpoint).
        at: With an alias: the version the alias named at this time (from the alias history).

    Returns:
        ``{"model", "version", "endpoint", "registry", "run", "data", "code", "flow_run", "history"}``.

    Raises:
        CliError: The model, alias or version does not exist, or the registry cannot be read.

    Examples:
        >>> model_lineage("churn")["data"]["rev"]  # doctest: +SKIP
        '6f1c2a9e0b7d...'
    """
    from deployments.registry_check import open_registry
    from tasks import lineage as L
    from tasks.mlflow_alias_history import alias_history, version_at

    name, alias, version = parse_ref(ref)
    server = open_registry(mlflow_block)
    client = server.get_client()
    history = alias_history(server, name)
    try:
        if at is not None:
            when = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
            version = version_at(history, alias or "champion", when)
            if version is None:
                raise CliError(f"{name}@{alias or 'champion'} named no version at {when.isoformat()} "
                               f"(its history starts at {history[0].at if history else 'no recorded move'}).")
        mv = client.get_model_version_by_alias(name, alias) if version is None else client.get_model_version(
            name, version)
    except CliError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow raises one type for a missing model, alias or version
        raise CliError(f"cannot find {ref!r} in {server.registry_uri or server.tracking_uri}: {exc}") from exc
    tags = dict(mv.tags or {})
    run_record: dict[str, Any] = {"id": mv.run_id}
    run_tags: dict[str, str] = {}
    if mv.run_id:
        run = client.get_run(mv.run_id)
        run_tags = dict(run.data.tags)
        run_record.update(status=run.info.status, params=dict(run.data.params),
                          test_metrics={k: v for k, v in run.data.metrics.items() if k.startswith("test_")},
                          experiment_id=run.info.experiment_id)
    both = {**run_tags, **tags}
    trigger = json.loads(both[L.TAG_TRIGGER]) if both.get(L.TAG_TRIGGER) else None
    return {
        "model": name, "version": str(mv.version),
        "endpoint": _endpoint(serving_block, name, str(mv.version)),
        "registry": {"uri": server.registry_uri or server.tracking_uri, "aliases": list(mv.aliases or []),
                     "source": mv.source, "created": dt.datetime.fromtimestamp(
                         (mv.creation_timestamp or 0) / 1000, tz=dt.UTC).isoformat(),
                     "gate": both.get(L.TAG_GATE_VERDICT), "reasons": both.get(L.TAG_GATE_REASONS)},
        "run": run_record,
        "data": {"rev": both.get(L.TAG_DATA_REV), "md5": both.get(L.TAG_DATA_MD5), "path": both.get(L.TAG_DATA_PATH),
                 "repo": both.get(L.TAG_DATA_REPO), "remote": both.get(L.TAG_DATA_REMOTE)},
        "code": {"commit": both.get(L.TAG_CODE_COMMIT), "dirty": both.get(L.TAG_CODE_DIRTY),
                 "version": both.get(L.TAG_CODE_VERSION), "libraries": json.loads(both.get(L.TAG_LIBRARIES) or "{}")},
        "flow_run": _flow_run(both.get(L.TAG_FLOW_RUN_ID), trigger),
        "history": [m.model_dump(exclude={"key"}) for m in history],
    }


def _endpoint(serving_block: str | None, name: str, version: str) -> dict[str, Any]:
    """Return what the endpoint serves now, and whether it is this version."""
    from flows.deploy_model import load_serving
    from tasks.serving_endpoint import serving_status

    try:
        status = serving_status(load_serving(serving_block))
    except Exception as exc:  # noqa: BLE001 - the registry side of the chain is still worth printing
        return {"error": f"cannot read the serving endpoint: {exc}"}
    serves = status.get("model_name") == name and str(status.get("model_version")) == version
    return {"url": status.get("url"), "state": status.get("state"), "serves_this_version": serves,
            "serving_version": status.get("model_version"), "bento": status.get("bento")}


def render(chain: dict[str, Any]) -> str:
    """Return the chain as readable lines, from the endpoint back to what started the training.

    Examples:
        >>> print(render({"model": "churn", "version": "2", "endpoint": {"error": "down"}, "registry": {},
        ...               "run": {"id": "r1"}, "data": {"rev": "abc", "md5": "d41"}, "code": {"commit": "9f"},
        ...               "flow_run": {"id": None, "started_by": {"kind": "ad hoc call"}}, "history": []}))
        ... # doctest: +NORMALIZE_WHITESPACE
        endpoint     down
        registry     churn v2 aliases - gate -
        mlflow run   r1 -
        data         DVC rev abc md5 d41 path - repo -
        code         commit 9f dirty - version -
        flow run     - (-) deployment - state -
        started by   ad hoc call
    """
    e, r, run, d, c, f = (chain[k] for k in ("endpoint", "registry", "run", "data", "code", "flow_run"))
    if "error" in e:
        endpoint = e["error"]
    else:
        endpoint = (f"{e.get('url')} ({e.get('state')}) serves v{e.get('serving_version')}"
                    + (" = this version" if e.get("serves_this_version") else " (not this version)")
                    + f", bento {e.get('bento') or '-'}")
    started = f["started_by"]
    lines = [
        f"endpoint     {endpoint}",
        f"registry     {chain['model']} v{chain['version']} aliases {', '.join(r.get('aliases') or []) or '-'} "
        f"gate {r.get('gate') or '-'}",
        f"mlflow run   {run.get('id')} {run.get('status') or '-'}"
        + "".join(f" {k}={v:.4f}" for k, v in sorted((run.get("test_metrics") or {}).items())),
        f"data         DVC rev {d.get('rev') or '-'} md5 {d.get('md5') or '-'} path {d.get('path') or '-'} "
        f"repo {d.get('repo') or '-'}",
        f"code         commit {c.get('commit') or '-'} dirty {c.get('dirty') or '-'} version {c.get('version') or '-'}",
        f"flow run     {f.get('name') or '-'} ({f.get('id') or '-'}) deployment {f.get('deployment') or '-'} "
        f"state {f.get('state') or '-'}" + (f" [{f['error']}]" if f.get("error") else ""),
        "started by   " + " ".join(str(started[k]) for k in ("kind", "event", "who", "event_id") if started.get(k)),
    ]
    lines += [f"history      {m['at']} {m['alias']} {m['from_version'] or '-'} -> {m['to_version'] or '-'} "
              f"by {m['by']}: {m['reason']}" for m in chain.get("history", [])]
    return "\n".join(lines)
