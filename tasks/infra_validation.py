"""Infra validation of a staging endpoint: a bounded load test from the model's input example, checked by policy.

:func:`measure_endpoint` sends one record of the model's input example per request (the request the
smoke test sends, :func:`tasks.serving_checks.example_records`) from the load generator the
benchmarks use (:mod:`tasks.http_load`), for ``duration_s`` seconds or ``max_requests`` requests at
``concurrency`` connections, and samples the resident memory of the backend's process tree
meanwhile. :func:`check_figures` compares the figures with a :class:`~blocks.rollout_policy.RolloutPolicy`
and fails closed: a threshold whose figure could not be measured fails, naming why.
:func:`record_infra_validation` puts the figures on the registry version (``mlops.infra.*`` tags),
in a Prefect artifact and in an event.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from blocks.bentoml_serving import BentoMLServing
from blocks.mlflow_server import MlflowServer
from blocks.rollout_policy import RolloutPolicy
from tasks.bentoml_packaging import BentoInfo
from tasks.events import INFRA_VALIDATED, INFRA_VALIDATION_FAILED, emit_model_event
from tasks.exceptions import ServingError
from tasks.http_load import run_http_load
from tasks.logs import run_logger
from tasks.mlflow_registry import tag_model_version
from tasks.prefect_artifacts import publish_report
from tasks.serving_checks import example_records
from tasks.serving_endpoint import serving_status
from tasks.system import tree_rss_mb

__all__ = ["TAG_INFRA_PREFIX", "TAG_VALIDATION", "TAG_VALIDATION_REASON", "InfraFigures", "InfraVerdict",
           "check_figures", "measure_endpoint", "record_infra_validation", "validate_infrastructure"]

TAG_VALIDATION = "mlops.rollout.infra_validation"
TAG_VALIDATION_REASON = "mlops.rollout.infra_validation_reason"
TAG_VALIDATED_AT = "mlops.rollout.infra_validated_at"
TAG_STAGING_URL = "mlops.rollout.staging_url"
#: Measured figures go on the version as ``mlops.infra.<figure>`` tags.
TAG_INFRA_PREFIX = "mlops.infra."

#: threshold -> (figure it bounds, True when the figure must be at least the threshold, unit)
_THRESHOLDS = {"min_rps": ("rps", True, "rps"), "max_p50_ms": ("p50_ms", False, "ms"),
               "max_p99_ms": ("p99_ms", False, "ms"), "max_error_rate": ("error_rate", False, ""),
               "max_memory_mb": ("memory_mb", False, "MB")}


class InfraFigures(BaseModel):
    """What one load test measured; a figure is None when it could not be measured (see ``problems``)."""

    url: str
    requests: int
    errors: int
    error_rate: float | None
    rps: float | None
    p50_ms: float | None
    p99_ms: float | None
    memory_mb: float | None
    seconds: float
    concurrency: int
    problems: list[str] = []


class InfraVerdict(BaseModel):
    """The figures, each threshold's check, and the verdict."""

    passed: bool
    figures: InfraFigures
    checks: list[dict[str, Any]]
    reasons: list[str]

    @classmethod
    def unmeasured(cls, url: str, reason: str) -> InfraVerdict:
        """Return a failed verdict with no figures (e.g. the version never served on staging).

        Examples:
            >>> InfraVerdict.unmeasured("http://127.0.0.1:3001", "staging deployment failed: boom").reasons
            ['staging deployment failed: boom']
        """
        figures = InfraFigures(url=url, requests=0, errors=0, error_rate=None, rps=None, p50_ms=None, p99_ms=None,
                               memory_mb=None, seconds=0.0, concurrency=0, problems=[reason])
        return cls(passed=False, figures=figures, checks=[], reasons=[reason])

    def headline(self, version: str) -> str:
        """Return one line, e.g. ``v3 passed infra validation: 412 rps, p99 18 ms, 0 errors, 210 MB``."""
        f = self.figures

        def num(value: float | None, fmt: str) -> str:
            return "?" if value is None else format(value, fmt)

        verdict = "passed" if self.passed else "failed"
        return (f"v{version} {verdict} infra validation: {num(f.rps, '.0f')} rps, p99 {num(f.p99_ms, '.0f')} ms, "
                f"{f.errors} errors, {num(f.memory_mb, '.0f')} MB")


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def measure_endpoint(url: str, record: dict[str, Any], concurrency: int, duration_s: float, max_requests: int,
                     warmup_s: float = 0.5, memory_pids: Callable[[], list[int | None]] | None = None,
                     path: str = "/predict") -> InfraFigures:
    """Load ``url`` with one record per request and measure rps, p50 / p99, errors and memory.

    Memory is the largest resident memory of the ``memory_pids()`` process trees, sampled every
    0.25 s while the load runs (None when no process was found).

    Args:
        url: Base URL on this machine (``http://127.0.0.1:<port>``).
        record: The request body (one record of the model's input example).
        concurrency: Keep-alive connections.
        duration_s: Seconds of measured load.
        max_requests: Most requests in the measured phase.
        warmup_s: Seconds of unmeasured load first.
        memory_pids: Returns the PIDs whose process trees to measure (None: memory not measured).
        path: Request path.

    Returns:
        The :class:`InfraFigures`.

    Examples:
        >>> figures = measure_endpoint("http://127.0.0.1:3001", {"tenure": 3}, 8, 2.0, 10_000)  # doctest: +SKIP
        >>> figures.errors  # doctest: +SKIP
        0
    """
    parts = urlsplit(url)
    body = json.dumps(record, default=str).encode()
    samples: list[float] = []
    problems: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        while True:
            try:
                rss = tree_rss_mb(memory_pids()) if memory_pids else None
            except Exception as exc:  # noqa: BLE001 - a missed sample is reported, the verdict fails closed
                problems.append(f"memory sample failed: {type(exc).__name__}: {exc}")
                rss = None
            if rss is not None:
                samples.append(rss)
            if stop.wait(0.25):
                return

    sampler = threading.Thread(target=sample, name="infra-memory", daemon=True)
    sampler.start()
    try:
        raw = run_http_load(parts.hostname or "127.0.0.1", parts.port or 80, path, body, concurrency, duration_s,
                            warmup_s, max_requests)
    finally:
        stop.set()
        sampler.join(10)
    answered = raw["requests"] - raw["errors"]
    if raw["requests"] == 0:
        problems.append(f"no request was sent to {url}{path} in {raw['seconds']:.1f} s")
    elif answered <= 0:
        problems.append(f"none of {raw['requests']} requests to {url}{path} was answered 200")
    if memory_pids is not None and not samples:
        problems.append("no process of the backend was found to measure its memory")
    return InfraFigures(
        url=url, requests=raw["requests"], errors=raw["errors"],
        error_rate=raw["errors"] / raw["requests"] if raw["requests"] else None,
        rps=_finite(raw["rps"]) if answered > 0 else None,
        p50_ms=_finite(raw["p50_ms"]), p99_ms=_finite(raw["p99_ms"]),
        memory_mb=max(samples) if samples else None, seconds=raw["seconds"], concurrency=concurrency,
        problems=problems)


def check_figures(figures: InfraFigures, policy: RolloutPolicy) -> InfraVerdict:
    """Compare measured figures with the policy's thresholds; a threshold with no figure fails (fail closed).

    Args:
        figures: What the load test measured.
        policy: The thresholds (None: not checked).

    Returns:
        The :class:`InfraVerdict`; ``reasons`` names every threshold missed, never empty when it fails.

    Examples:
        >>> figs = InfraFigures(url="u", requests=100, errors=0, error_rate=0.0, rps=50.0, p50_ms=5.0,
        ...                     p99_ms=20.0, memory_mb=300.0, seconds=2.0, concurrency=4)
        >>> check_figures(figs, RolloutPolicy()).passed
        True
        >>> check_figures(figs, RolloutPolicy(min_rps=1e9)).reasons
        ['rps 50 is below min_rps 1e+09']
        >>> check_figures(figs.model_copy(update={"memory_mb": None}), RolloutPolicy()).reasons[0]
        'memory_mb could not be measured (max_memory_mb 4096 cannot be checked)'
    """
    checks: list[dict[str, Any]] = []
    reasons: list[str] = []
    for name, limit in policy.thresholds().items():
        if limit is None:
            continue
        figure, at_least, unit = _THRESHOLDS[name]
        value = getattr(figures, figure)
        if value is None:
            why = "; ".join(figures.problems) or "no figure"
            reason = f"{figure} could not be measured ({name} {limit:g} cannot be checked)"
            reasons.append(reason + (f": {why}" if figures.problems else ""))
            ok = False
        else:
            ok = value >= limit if at_least else value <= limit
            if not ok:
                reasons.append(f"{figure} {value:.4g} is {'below' if at_least else 'above'} {name} {limit:g}"
                               + (f" {unit}" if unit and unit != "rps" else ""))
        checks.append({"threshold": name, "limit": limit, "figure": figure,
                       "value": None if value is None else round(value, 4), "passed": ok})
    return InfraVerdict(passed=not reasons, figures=figures, checks=checks, reasons=reasons)


def _backend_pids(serving: BentoMLServing) -> Callable[[], list[int | None]]:
    def pids() -> list[int | None]:
        backend = serving_status(serving, probe=False).get("backend") or {}
        return [backend.get("pid"), *(backend.get("workers") or [])]

    return pids


@task(name="validate-infrastructure", cache_policy=NO_CACHE)
def validate_infrastructure(serving: BentoMLServing, bento: BentoInfo, policy: RolloutPolicy) -> InfraVerdict:
    """Load-test the endpoint that serves ``bento`` (staging) and check the figures against the policy.

    The load goes through the endpoint's stable URL (front and backend, as production runs);
    memory is the resident memory of the live backend's process tree (``bentoml serve`` and its
    workers).

    Args:
        serving: The staging serving block; ``bento`` must be what it serves.
        bento: The bento under test (its input example builds the requests).
        policy: Load shape and thresholds.

    Returns:
        The :class:`InfraVerdict` (a failed verdict is a result, not an error).

    Raises:
        ServingError: If the endpoint does not serve ``bento`` (nothing to validate).

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def check(b: BentoInfo) -> bool:
        ...     return validate_infrastructure(BentoMLServing.load("staging"), b, RolloutPolicy()).passed
    """
    status = serving_status(serving)
    if status.get("bento") != bento.tag:
        raise ServingError(f"The staging endpoint {serving.endpoint_url()} serves {status.get('bento')}, not "
                           f"{bento.tag}: deploy it there first (deploy-model with the staging block).")
    figures = measure_endpoint(serving.endpoint_url(), example_records(bento)[0], policy.concurrency,
                               policy.duration_s, policy.max_requests, policy.warmup_s, _backend_pids(serving))
    verdict = check_figures(figures, policy)
    run_logger().info("%s (%d requests, %d connections, %.1f s)%s", verdict.headline(bento.model_version),
                      figures.requests, figures.concurrency, figures.seconds,
                      "" if verdict.passed else f": {'; '.join(verdict.reasons)}")
    return verdict


def infra_tags(verdict: InfraVerdict) -> dict[str, str]:
    """Return the version tags of a verdict: ``mlops.rollout.infra_validation[_reason]`` and ``mlops.infra.*``.

    Examples:
        >>> figs = InfraFigures(url="u", requests=10, errors=0, error_rate=0.0, rps=5.0, p50_ms=1.0,
        ...                     p99_ms=2.0, memory_mb=None, seconds=2.0, concurrency=1)
        >>> tags = infra_tags(InfraVerdict(passed=True, figures=figs, checks=[], reasons=[]))
        >>> tags["mlops.infra.rps"], tags["mlops.infra.memory_mb"]
        ('5', 'not measured')
    """
    f = verdict.figures
    figures = {"rps": f.rps, "p50_ms": f.p50_ms, "p99_ms": f.p99_ms, "error_rate": f.error_rate,
               "memory_mb": f.memory_mb, "requests": f.requests, "errors": f.errors, "concurrency": f.concurrency,
               "seconds": f.seconds}
    tags = {f"{TAG_INFRA_PREFIX}{k}": "not measured" if v is None else f"{v:.4g}" for k, v in figures.items()}
    return {**tags, TAG_VALIDATION: "passed" if verdict.passed else "failed",
            TAG_VALIDATION_REASON: "; ".join(verdict.reasons) or "every threshold met",
            TAG_VALIDATED_AT: dt.datetime.now(dt.UTC).isoformat(), TAG_STAGING_URL: f.url}


@task(name="record-infra-validation", cache_policy=NO_CACHE)
def record_infra_validation(mlflow_server: MlflowServer, model_name: str, version: str, verdict: InfraVerdict,
                            serving_version: str | None = None, alias_restored_to: str | None = None) -> str:
    """Record a verdict: ``mlops.infra.*`` tags on the version, an event, and a Prefect artifact (table).

    Args:
        mlflow_server: The MLflow block.
        model_name: Registered model name.
        version: The version validated.
        verdict: The verdict of :func:`validate_infrastructure`.
        serving_version: What production serves (a failed version stays out; it keeps serving).
        alias_restored_to: Where the alias moved back to after a failure (None: not moved).

    Returns:
        The headline, e.g. ``v3 passed infra validation: 412 rps, p99 18 ms, 0 errors, 210 MB``.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def note(v: InfraVerdict) -> str:
        ...     return record_infra_validation(MlflowServer.embedded(), "churn-classifier", "3", v)
    """
    headline = verdict.headline(version)
    tag_model_version.fn(mlflow_server, model_name, version, infra_tags(verdict))
    figures = verdict.figures.model_dump(exclude={"url", "problems"})
    if verdict.passed:
        emit_model_event.fn(INFRA_VALIDATED, model_name, {"version": version, "url": verdict.figures.url,
                                                          "figures": figures}, key=f"v{version}")
    else:
        emit_model_event.fn(INFRA_VALIDATION_FAILED, model_name,
                            {"version": version, "url": verdict.figures.url, "reason": "; ".join(verdict.reasons),
                             "figures": figures, "serving_version": serving_version,
                             "alias_restored_to": alias_restored_to}, key=f"v{version}")
    table = [{"threshold": c["threshold"], "limit": c["limit"], "measured": "not measured" if c["value"] is None
              else c["value"], "result": "pass" if c["passed"] else "FAIL"} for c in verdict.checks]
    reasons = "\n".join(f"- {r}" for r in verdict.reasons) or "- every threshold met"
    if not verdict.passed:
        still = f"v{serving_version} keeps serving in production" if serving_version else \
            "nothing of this model serves in production"
        moved = f"; the alias moved back to v{alias_restored_to}" if alias_restored_to else ""
        reasons += f"\n\nv{version} does not reach production: {still}{moved}."
    f = verdict.figures
    publish_report(f"{model_name}-infra-validation",
                   f"# {model_name}: {headline}\n\nStaging endpoint {f.url}: {f.requests} requests at "
                   f"{f.concurrency} connections in {f.seconds:.1f} s; p50 {f.p50_ms or float('nan'):.1f} ms, "
                   f"error rate {f.error_rate if f.error_rate is not None else 'not measured'}.\n\n"
                   f"**Verdict: {'passed' if verdict.passed else 'failed'}**\n\n{reasons}",
                   table, description=headline)
    return headline
