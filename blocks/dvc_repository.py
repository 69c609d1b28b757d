"""DVC data repository block: a git repo with DVC and a remote."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefect.blocks.core import Block
from pydantic import Field

from blocks.settings import state_dir

if TYPE_CHECKING:  # pragma: no cover
    from dvc.repo import Repo


class DvcRepository(Block):
    """A git + DVC repository that versions datasets, and the DVC remote it pushes to.

    The embedded default (:meth:`embedded`) is a repo under the state folder with a
    local-directory remote beside it; production sets ``remote_url`` to
    ``s3://...``, ``gs://...``, ``azure://...`` or ``ssh://...``.

    Attributes:
        repo_path: Local working copy of the data repository.
        repo_url: Git URL to clone into ``repo_path`` when it does not exist yet.
        remote_name: Name of the DVC remote.
        remote_url: URL of the DVC remote (a local folder for the embedded default).
        git_branch: Branch that dataset versions are committed to.

    Examples:
        >>> from blocks.dvc_repository import DvcRepository
        >>> data_repo = DvcRepository.load("BLOCK_NAME")  # doctest: +SKIP
        >>> repo = data_repo.get_repo()  # doctest: +SKIP

        >>> DvcRepository(repo_path="/srv/data-repo", remote_url="s3://bucket/dvc").save(
        ...     "training-data")  # doctest: +SKIP
    """

    _block_type_name = "DVC Repository"
    _block_type_slug = "mlops-dvc-repository"
    _logo_url = "https://github.com/iterative.png"  # type: ignore[assignment]
    _documentation_url = "https://dvc.org/doc/api-reference"  # type: ignore[assignment]

    repo_path: str = Field(..., description="Local path of the git + DVC working copy.")
    repo_url: str | None = Field(default=None, description="Git URL cloned into repo_path if it is missing.")
    remote_name: str = Field(default="storage", description="Name of the DVC remote.")
    remote_url: str = Field(..., description="URL of the DVC remote: a folder, s3://, gs://, azure://, ssh://.")
    git_branch: str = Field(default="main", description="Branch that dataset versions are committed to.")

    @classmethod
    def embedded(cls, root: Path | None = None) -> DvcRepository:
        """Return the embedded default: a repo and a local remote under the state folder.

        Args:
            root: Folder that holds ``data-repo`` and ``dvc-remote``; the state folder's ``dvc``.

        Returns:
            An unsaved block; the repository is created by ``init_data_repo``.

        Examples:
            >>> DvcRepository.embedded().remote_name  # doctest: +SKIP
            'storage'
        """
        root = root or state_dir() / "dvc"
        return cls(repo_path=str(root / "data-repo"), remote_url=str(root / "dvc-remote"))

    def get_repo(self) -> Repo:
        """Return a new ``dvc.repo.Repo`` for the working copy.

        Returns:
            The DVC repository object; close it (or use it as a context manager) when done.
        """
        from dvc.repo import Repo

        return Repo(self.repo_path)
