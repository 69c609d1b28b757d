"""DVC tasks: version a dataset, pull it at a rev, tell whether it changed.

The data repository is a git repo with DVC; a dataset is one file tracked by a
``.dvc`` file. A version is the git commit (``rev``) plus the content hash (``md5``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

import yaml
from prefect import task
from pydantic import BaseModel

from blocks.dvc_repository import DvcRepository
from tasks.exceptions import DataVersioningError, DvcRemoteError
from tasks.locks import file_lock
from tasks.logs import run_logger

_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "prefect-mlops",
    "GIT_AUTHOR_EMAIL": "prefect-mlops@localhost",
    "GIT_COMMITTER_NAME": "prefect-mlops",
    "GIT_COMMITTER_EMAIL": "prefect-mlops@localhost",
}


class DatasetVersion(BaseModel):
    """A dataset version: where it lives and how to get exactly these bytes back."""

    repo_path: str
    dataset_path: str
    rev: str
    md5: str
    size: int
    remote_url: str
    new_commit: bool


class DataChange(BaseModel):
    """Whether the dataset at ``rev`` differs from a reference content hash."""

    changed: bool
    rev: str
    md5: str
    reference_md5: str | None


def _git(repo_path: str | Path, *args: str) -> str:
    env = {**_GIT_IDENTITY, **os.environ}
    result = subprocess.run(["git", *args], cwd=repo_path, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise DataVersioningError(
            f"git {' '.join(args)} failed in data repo {repo_path}: {result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout.strip()


def _repo_lock(repo_path: str | Path) -> contextlib.AbstractContextManager[None]:
    """Serialise writers of one data repo (concurrent flows on one machine)."""
    return file_lock(Path(repo_path).parent / f".{Path(repo_path).name}.lock")


def read_dvc_md5(repo_path: str | Path, dataset_path: str, rev: str = "HEAD") -> str | None:
    """Return the content hash recorded for ``dataset_path`` at ``rev``, or None if untracked.

    Args:
        repo_path: Data repository working copy.
        dataset_path: Dataset path inside the repository.
        rev: Git revision.

    Returns:
        The md5 from the ``.dvc`` file at that revision.
    """
    result = subprocess.run(
        ["git", "show", f"{rev}:{dataset_path}.dvc"], cwd=repo_path, capture_output=True, text=True
    )
    if result.returncode != 0:
        return None
    outs = (yaml.safe_load(result.stdout) or {}).get("outs") or [{}]
    return outs[0].get("md5")


@task(name="init-data-repo", retries=1, retry_delay_seconds=2)
def init_data_repo(data_repo: DvcRepository) -> str:
    """Create (or clone) the data repository and configure its DVC remote; idempotent.

    Args:
        data_repo: Where the repository and its remote live.

    Returns:
        The repository path.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def setup() -> str:
        ...     return init_data_repo(DvcRepository.embedded())
    """
    from dvc.repo import Repo

    logger = run_logger()
    path = Path(data_repo.repo_path)
    with _repo_lock(path):
        if not (path / ".git").exists():
            if data_repo.repo_url:
                path.parent.mkdir(parents=True, exist_ok=True)
                _git(path.parent, "clone", data_repo.repo_url, str(path))
            else:
                path.mkdir(parents=True, exist_ok=True)
                _git(path, "init", "-q", "-b", data_repo.git_branch)
        if not (path / ".dvc").exists():
            logging.getLogger("dvc").setLevel(logging.WARNING)  # "You can now commit the changes to git."
            Repo.init(str(path))
            logger.info("Initialised DVC in %s", path)
        repo = data_repo.get_repo()
        try:
            with repo.config.edit() as conf:
                conf["remote"][data_repo.remote_name] = {"url": data_repo.remote_url}
                conf["core"]["remote"] = data_repo.remote_name
                conf["core"]["autostage"] = True
        finally:
            repo.close()
        if data_repo.remote_url.split("://")[0] not in {"s3", "gs", "azure", "ssh", "http", "https", "hdfs"}:
            Path(data_repo.remote_url).mkdir(parents=True, exist_ok=True)
        _git(path, "add", ".dvc", ".dvcignore")
        if _git(path, "status", "--porcelain", "--", ".dvc", ".dvcignore"):
            _git(path, "commit", "-q", "-m", "Configure DVC remote")
    return str(path)


@task(name="version-dataset")
def version_dataset(data_repo: DvcRepository, source_path: str, dataset_path: str = "data/train.parquet",
                    message: str | None = None) -> DatasetVersion:
    """Version a dataset file: copy it into the repo, ``dvc add``, ``dvc push``, git commit.

    The push happens before the commit, so a commit always names data the remote has.
    Versioning identical bytes again makes no new commit and returns the same version.

    Args:
        data_repo: The data repository (initialised by ``init_data_repo``).
        source_path: File to version (CSV or Parquet); may already be ``dataset_path``.
        dataset_path: Path of the dataset inside the repository.
        message: Git commit message.

    Returns:
        The version: git rev, md5 content hash, size, remote.

    Raises:
        DataVersioningError: If the file is missing or empty, or git / DVC fail.
        DvcRemoteError: If the remote cannot be reached; the data stays in the local cache.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def ingest(path: str) -> str:
        ...     repo = DvcRepository.embedded()
        ...     init_data_repo(repo)
        ...     return version_dataset(repo, path).rev
    """
    logger = run_logger()
    source = Path(source_path)
    if not source.is_file():
        raise DataVersioningError(f"Cannot version {source}: the file does not exist. Pass an existing CSV/Parquet.")
    if source.stat().st_size == 0:
        raise DataVersioningError(f"Cannot version {source}: the file is empty (0 bytes). Export the data again.")
    repo_path = Path(data_repo.repo_path)
    target = repo_path / dataset_path
    with _repo_lock(repo_path):
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.resolve() != target.resolve():
            shutil.copyfile(source, target)
        repo = data_repo.get_repo()
        try:
            stages = repo.add(str(target))
            md5 = stages[0].outs[0].hash_info.value
            try:
                repo.push(targets=[str(target)], remote=data_repo.remote_name)
            except Exception as exc:  # DVC raises many remote-specific types
                raise DvcRemoteError(
                    f"dvc push of {dataset_path} (md5 {md5}) to remote {data_repo.remote_name!r} "
                    f"({data_repo.remote_url}) failed: {exc}. The data is safe in the local DVC cache and "
                    "nothing was committed: make the remote reachable (or fix remote_url) and run again."
                ) from exc
        except DvcRemoteError:
            raise
        except Exception as exc:
            raise DataVersioningError(f"dvc add of {dataset_path} in {repo_path} failed: {exc}") from exc
        finally:
            repo.close()
        gitignore = str(Path(dataset_path).parent / ".gitignore")
        _git(repo_path, "add", f"{dataset_path}.dvc", gitignore)
        new_commit = bool(_git(repo_path, "status", "--porcelain", "--", f"{dataset_path}.dvc", gitignore))
        if new_commit:
            _git(repo_path, "commit", "-q", "-m", message or f"Version {dataset_path} (md5 {md5})")
        rev = _git(repo_path, "rev-parse", "HEAD")
    size = target.stat().st_size
    logger.info("Dataset %s md5 %s at rev %s (%s)", dataset_path, md5, rev[:10],
                "new commit" if new_commit else "unchanged")
    return DatasetVersion(repo_path=str(repo_path), dataset_path=dataset_path, rev=rev, md5=md5, size=size,
                          remote_url=data_repo.remote_url, new_commit=new_commit)


@task(name="pull-dataset", retries=2, retry_delay_seconds=2)
def pull_dataset(data_repo: DvcRepository, dataset_path: str, rev: str, cache_dir: str) -> str:
    """Fetch the exact bytes of a dataset at a git rev into a local file keyed by content hash.

    Args:
        data_repo: The data repository.
        dataset_path: Path of the dataset inside the repository.
        rev: Git revision (a commit from a lineage tag, a branch, ``HEAD``).
        cache_dir: Folder for local copies; a copy already there is reused.

    Returns:
        The local file path (``<cache_dir>/<md5><suffix>``).

    Raises:
        DataVersioningError: If the dataset is not tracked at ``rev``.
        DvcRemoteError: If the bytes are neither in the cache nor on the remote.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def reproduce(rev: str) -> str:
        ...     return pull_dataset(DvcRepository.load("training-data"), "data/train.parquet", rev, "/tmp/data")
    """
    import dvc.api

    md5 = read_dvc_md5(data_repo.repo_path, dataset_path, rev)
    if md5 is None:
        raise DataVersioningError(
            f"{dataset_path} is not tracked by DVC at rev {rev} of {data_repo.repo_path}: check the rev "
            "(see the mlops.data.rev tag of the run) and the dataset path."
        )
    local = Path(cache_dir) / f"{md5}{Path(dataset_path).suffix}"
    if local.is_file():
        return str(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = local.with_suffix(local.suffix + ".partial")
    try:
        with dvc.api.open(dataset_path, repo=data_repo.repo_path, rev=rev, mode="rb",
                          remote=data_repo.remote_name) as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    except Exception as exc:
        partial.unlink(missing_ok=True)
        raise DvcRemoteError(
            f"Cannot fetch {dataset_path} (md5 {md5}) at rev {rev} from the cache or remote "
            f"{data_repo.remote_url}: {exc}. Check that the remote is reachable."
        ) from exc
    partial.replace(local)
    run_logger().info("Pulled %s@%s (md5 %s) to %s", dataset_path, rev[:10], md5, local)
    return str(local)


@task(name="check-data-changed")
def check_data_changed(data_repo: DvcRepository, dataset_path: str, reference_md5: str | None,
                       rev: str = "HEAD") -> DataChange:
    """Tell whether the dataset at ``rev`` differs from the data a model was trained on.

    Args:
        data_repo: The data repository.
        dataset_path: Path of the dataset inside the repository.
        reference_md5: Content hash of the reference data (the champion's ``mlops.data.md5``).
        rev: Revision to compare.

    Returns:
        A :class:`DataChange`.

    Raises:
        DataVersioningError: If the dataset is not tracked at ``rev``.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def watch(champion_md5: str) -> bool:
        ...     return check_data_changed(DvcRepository.embedded(), "data/train.parquet", champion_md5).changed
    """
    md5 = read_dvc_md5(data_repo.repo_path, dataset_path, rev)
    if md5 is None:
        raise DataVersioningError(f"{dataset_path} is not tracked by DVC at rev {rev} of {data_repo.repo_path}.")
    resolved = _git(data_repo.repo_path, "rev-parse", rev)
    return DataChange(changed=md5 != reference_md5, rev=resolved, md5=md5, reference_md5=reference_md5)
