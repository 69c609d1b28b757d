"""Where a worker gets the flow code from: the pull steps every deploy path writes the same way.

``prefect-mlops deploy`` (Python ``prefect.deploy``) and ``prefect.yaml`` (``prefect deploy --all``)
register the same pull steps, built here once:

* with a git repository URL (``git remote get-url origin`` by default, or ``--repo-url``):
  ``prefect.deployments.steps.git_clone`` of that repository and branch, so workers on other
  hosts run the committed code;
* without one (no ``origin`` remote): ``set_working_directory`` to this checkout's absolute
  path (workers on this host, or with the checkout at the same path).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.runner.storage import LocalStorage

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@dataclass(frozen=True)
class CodeSource:
    """The repository and branch workers clone, or None for this checkout.

    Examples:
        >>> CodeSource("https://github.com/acme/mlops.git", "main").pull_steps()
        [{'prefect.deployments.steps.git_clone': {'repository': 'https://github.com/acme/mlops.git', 'branch': 'main'}}]
        >>> CodeSource(None).pull_steps()[0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(
        ...     PROJECT_ROOT)
        True
    """

    repo_url: str | None
    branch: str | None = None

    @classmethod
    def detect(cls, repo_url: str | None = None, branch: str | None = None) -> CodeSource:
        """Return the source: the given URL and branch, else ``origin`` and the checked-out branch.

        Args:
            repo_url: Repository URL (None: ``git remote get-url origin``; ``""``: this checkout, no clone).
            branch: Branch to clone (None: the current branch).

        Returns:
            The source.
        """
        url = _git("remote", "get-url", "origin") if repo_url is None else (repo_url or None)
        if url and branch is None:
            current = _git("rev-parse", "--abbrev-ref", "HEAD")
            branch = current if current and current != "HEAD" else None
        return cls(url, branch if url else None)

    def pull_steps(self) -> list[dict[str, Any]]:
        """Return the deployment pull steps."""
        if not self.repo_url:
            return [{"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_ROOT)}}]
        clone: dict[str, Any] = {"repository": self.repo_url}
        if self.branch:
            clone["branch"] = self.branch
        return [{"prefect.deployments.steps.git_clone": clone}]

    def storage(self) -> ProjectStorage:
        """Return the runner storage for ``flow.from_source``: this checkout, these pull steps."""
        return ProjectStorage(self)


class ProjectStorage(LocalStorage):
    """Runner storage that loads flows from this checkout and registers :class:`CodeSource` pull steps."""

    def __init__(self, source: CodeSource) -> None:
        super().__init__(str(PROJECT_ROOT))
        self.source = source

    def to_pull_step(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """Return the pull steps of the source (a list: Prefect registers each)."""
        return self.source.pull_steps()
