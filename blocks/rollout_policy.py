"""Rollout policy block: what a version must show on the staging endpoint before production gets it."""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field


class RolloutPolicy(Block):
    """Thresholds of the infra validation on staging, and the approval switch before production.

    The ``rollout-model`` flow deploys a version to the staging endpoint, then sends a bounded
    load (``duration_s`` seconds or ``max_requests`` requests, whichever ends first, at
    ``concurrency`` keep-alive connections, one record of the model's input example per request)
    and measures requests per second, p50 / p99 latency, the error rate and the resident memory
    of the staging backend's process tree. The version reaches production only if every
    threshold holds. A threshold set to None is not checked; a threshold whose figure could not
    be measured (no answered request, no process found) fails, with that reason.

    The defaults pass for a logistic regression on a loaded 2-core machine (it answers hundreds of
    requests per second there) and catch a model that cannot serve: errors, multi-second
    latency, a process tree of several GB.

    Attributes:
        duration_s: Seconds of measured load.
        max_requests: Most requests sent (the load stops at whichever bound comes first).
        concurrency: Keep-alive connections sending at once.
        warmup_s: Seconds of unmeasured load before the measurement.
        min_rps: Fewest answered requests per second (None: not checked).
        max_p50_ms: Largest median latency in milliseconds (None: not checked).
        max_p99_ms: Largest 99th-percentile latency in milliseconds (None: not checked).
        max_error_rate: Largest share of requests that failed or were not answered 200 (None: not checked).
        max_memory_mb: Largest resident memory of the backend's process tree in MiB during the load
            (None: not checked).
        require_approval: Pause for a person's approval before production (the approval step).
        approval_timeout_s: How long the approval waits before ``approval_default`` applies.
        approval_default: What a timed-out approval decides.

    Examples:
        >>> from blocks.rollout_policy import RolloutPolicy
        >>> policy = RolloutPolicy.load("BLOCK_NAME")  # doctest: +SKIP
        >>> RolloutPolicy(min_rps=200, max_p99_ms=50, concurrency=16).save("strict-rollout")  # doctest: +SKIP
        >>> RolloutPolicy().thresholds()["max_error_rate"]
        0.01
    """

    _block_type_name = "Rollout Policy"
    _block_type_slug = "mlops-rollout-policy"
    _logo_url = "https://github.com/bentoml.png"  # type: ignore[assignment]
    _documentation_url = "https://docs.bentoml.com/en/latest/scale-with-bentocloud/scaling/autoscaling.html"  # type: ignore[assignment]

    duration_s: float = Field(default=3.0, gt=0, le=3600, description="Seconds of measured load on staging.")
    max_requests: int = Field(default=100_000, ge=1, description="Most requests sent (the load stops at whichever "
                                                                 "of duration_s and max_requests comes first).")
    concurrency: int = Field(default=8, ge=1, le=1024, description="Keep-alive connections sending at once.")
    warmup_s: float = Field(default=0.5, ge=0, le=600, description="Seconds of unmeasured load before measuring.")
    min_rps: float | None = Field(default=20.0, ge=0, description="Fewest answered requests per second "
                                                                  "(None: not checked).")
    max_p50_ms: float | None = Field(default=None, gt=0, description="Largest median latency in ms "
                                                                     "(None: not checked).")
    max_p99_ms: float | None = Field(default=2000.0, gt=0, description="Largest 99th-percentile latency in ms "
                                                                       "(None: not checked).")
    max_error_rate: float | None = Field(default=0.01, ge=0, le=1, description="Largest share of failed requests "
                                                                               "(None: not checked).")
    max_memory_mb: float | None = Field(default=4096.0, gt=0, description="Largest resident memory (MiB) of the "
                                        "staging backend's process tree during the load (None: not checked).")
    require_approval: bool = Field(default=False, description="Pause for a person's approval before production.")
    approval_timeout_s: float = Field(default=3600, gt=0, description="Seconds the approval waits before "
                                                                      "approval_default applies.")
    approval_default: Literal["approve", "reject"] = Field(default="reject", description="What a timed-out "
                                                                                         "approval decides.")

    def thresholds(self) -> dict[str, float | None]:
        """Return the thresholds by name (None: not checked).

        Examples:
            >>> RolloutPolicy(min_rps=1e9).thresholds()["min_rps"]
            1000000000.0
        """
        return {"min_rps": self.min_rps, "max_p50_ms": self.max_p50_ms, "max_p99_ms": self.max_p99_ms,
                "max_error_rate": self.max_error_rate, "max_memory_mb": self.max_memory_mb}
