"""The one error hierarchy of prefect-mlops.

Every error names the operation, the ids involved and what the user should do next.
A failed gate or a drift breach is a *result*, not an error; these are for bad input
and unreachable services.
"""

from __future__ import annotations


class MlopsError(Exception):
    """Base class of every prefect-mlops error."""


class DataVersioningError(MlopsError):
    """Versioning or loading a dataset with DVC failed."""


class DvcRemoteError(DataVersioningError):
    """The DVC remote could not be reached or written."""


class DataValidationError(MlopsError):
    """A dataset broke its data contract; carries every violation."""

    def __init__(self, message: str, violations: list[str] | None = None) -> None:
        super().__init__(message)
        self.violations = list(violations or [])


class TrainingConfigError(MlopsError):
    """An estimator path, its parameters or the search space are invalid."""


class TrackingServerError(MlopsError):
    """The MLflow tracking / registry server could not be reached."""


class RegistryError(MlopsError):
    """A model registry operation failed (unknown model, alias or version)."""


class PackagingError(MlopsError):
    """Building a bento from a registry version failed."""


class ServingError(MlopsError):
    """Starting, health-checking or swapping a model server failed."""


class InfraValidationError(ServingError):
    """A version failed the infra validation on the staging endpoint; it stays out of production.

    Carries the figures that were measured and every threshold they missed.
    """

    def __init__(self, message: str, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.reasons = list(reasons or [])


class MonitoringError(MlopsError):
    """A monitoring report could not be computed."""


class ModelUnscorableError(MlopsError):
    """A model genuinely cannot score a dataset: its input columns, labels or task type differ.

    Distinct from infrastructure errors (registry down, download failed): the gate handles this one
    by policy (``PromotionPolicy.allow_unscorable_champion``), while those fail the run.
    """


class ApprovalError(MlopsError):
    """Asking for or answering a human approval failed (no such paused run, a closed window, bad input)."""
