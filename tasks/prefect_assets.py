"""Prefect assets for what the flows materialize: the data version, the model version, the bento, the report.

Prefect's asset graph (``prefect.assets``) links stable keys; each materialization is an event
(``prefect.asset.materialization.succeeded``) whose resource is the asset, whose related resources
are its upstream assets (role ``asset``) and the tool that made it (role ``asset-materialized-by``),
and whose payload is what this one materialization was (a DVC rev and md5, a registry version, a
bento tag, a report path). The lineage chain is:

    dataset (DVC) -> registered model (MLflow) -> bento (BentoML)
    dataset (DVC) + registered model (MLflow) -> monitoring report (Evidently)

A key names the thing, not one version of it: ``dvc://<repo>/<dataset path>``,
``mlflow://<registry>/models/<name>``, ``bentoml://<endpoint>/<bento name>``,
``evidently://<model>/drift-report``. Characters Prefect refuses in a key (spaces, ``%``, ``?``,
``#`` and a few more) become ``-``.

Each materialization is recorded by a small task created with ``@materialize`` for the keys of
this call. The producing tasks keep their own names, retries and caches, and their asset keys
depend on the blocks of the run, which ``@materialize`` would need at import time.
"""

from __future__ import annotations

import re
from typing import Any

from prefect.cache_policies import NO_CACHE

#: Characters a Prefect asset key may not hold (``prefect.types.names.RESTRICTED_ASSET_CHARACTERS``).
_RESTRICTED = re.compile(r"[\s#?&%\"'<>\[\]{}|\\^`\x00]")


def asset_key(scheme: str, *parts: str) -> str:
    """Return a valid asset key ``<scheme>://<part>/<part>...`` (restricted characters become ``-``).

    Examples:
        >>> asset_key("dvc", "/srv/data repo", "data/train.parquet")
        'dvc://srv/data-repo/data/train.parquet'
    """
    path = "/".join(p.strip("/") for p in parts if p and p.strip("/"))
    return f"{scheme}://{_RESTRICTED.sub('-', path)}"[:512]


def _location(uri: str) -> str:
    """Host and path of a URI without its scheme (``http://127.0.0.1:5000`` -> ``127.0.0.1:5000``)."""
    return re.sub(r"^[a-z][a-z0-9+.-]*:/*", "", uri)


def data_asset(repo: str, dataset_path: str) -> str:
    """Key of a dataset in a DVC repository (its git URL or local path).

    Examples:
        >>> data_asset("https://git.example.com/data.git", "data/train.parquet")
        'dvc://git.example.com/data.git/data/train.parquet'
    """
    return asset_key("dvc", _location(repo), dataset_path)


def model_asset(registry_uri: str, model_name: str) -> str:
    """Key of a registered model in an MLflow registry.

    Examples:
        >>> model_asset("http://127.0.0.1:5000", "churn")
        'mlflow://127.0.0.1:5000/models/churn'
    """
    return asset_key("mlflow", _location(registry_uri), "models", model_name)


def bento_asset(endpoint_url: str, bento_name: str) -> str:
    """Key of the bento a serving endpoint builds for a model.

    Examples:
        >>> bento_asset("http://127.0.0.1:3000", "serving-churn")
        'bentoml://127.0.0.1:3000/serving-churn'
    """
    return asset_key("bentoml", _location(endpoint_url), bento_name)


def report_asset(model_name: str, kind: str = "drift-report") -> str:
    """Key of a model's monitoring report.

    Examples:
        >>> report_asset("churn")
        'evidently://churn/drift-report'
    """
    return asset_key("evidently", model_name, kind)


def _json_safe(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, str | int | float | bool) or v is None else str(v) for k, v in metadata.items()}


def record_materialization(key: str, name: str, by: str, metadata: dict[str, Any],
                           upstream: list[str] | None = None, url: str | None = None) -> str:
    """Record, as a task run of this flow run, that it materialized asset ``key`` from ``upstream`` assets.

    Prefect emits ``prefect.asset.materialization.succeeded`` for ``key`` (payload: ``metadata``;
    related: each upstream key with role ``asset`` and ``by`` with role ``asset-materialized-by``)
    and ``prefect.asset.referenced`` for each upstream asset.

    Args:
        key: The asset's key (see :func:`data_asset`, :func:`model_asset`, ...).
        name: A readable name for the asset graph.
        by: The tool that made it (``dvc``, ``mlflow``, ``bentoml``, ``evidently``).
        metadata: What this materialization was (version, rev, md5, path...); JSON scalars.
        upstream: Keys of the assets it was made from.
        url: A page where a person can see it (MLflow UI, endpoint), if any.

    Returns:
        The key.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def lineage() -> str:
        ...     data = record_materialization(data_asset("/srv/data", "train.parquet"), "train.parquet", "dvc",
        ...                                   {"rev": "abc123", "md5": "9f..."})
        ...     return record_materialization(model_asset("http://mlflow:5000", "churn"), "churn", "mlflow",
        ...                                   {"version": "3"}, upstream=[data])
        >>> lineage()  # doctest: +SKIP
        'mlflow://mlflow:5000/models/churn'
    """
    from prefect.assets import Asset, AssetProperties, materialize

    asset = Asset(key=key, properties=AssetProperties(name=name, url=url))

    @materialize(asset, by=by, asset_deps=list(upstream or []), name=f"materialize {name}", cache_policy=NO_CACHE)
    def materialized() -> str:
        asset.add_metadata(_json_safe(metadata))
        return key

    return materialized()
