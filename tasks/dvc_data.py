"""DVC tasks: version a dataset, pull it at a rev, tell whether it changed.

The data repository is a git repo with DVC; a dataset is one file tracked by a
``.dvc`` file. A version is the git commit (``rev``) plus the content hash (``md5``) of the
stored bytes (stored in the format the dataset path's suffix names).

Consistency: the push happens before the commit, a commit names only the versioned
dataset's ``.dvc`` / ``.gitignore``, and any failure puts those back as HEAD has them; a run
killed half-way leaves changes that the next run discards before it starts. So every commit
names only data its remote has, and ``dvc status -c`` stays clean. File-system faults
(read-only, full) are :class:`DataVersioningError` naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

import yaml
from prefect import task
from pydantic import BaseModel

from blocks.dvc_repository import DvcRepository
from tasks.datasets import SUFFIXES, detect_format, fs_advice, os_fault, place_dataset, storage_error
from tasks.dvc_repo import (
    discard_unfinished,
    git,
    init_data_repo,
    read_dvc_md5,
    repo_lock,
    restore_paths,
    tracked_in_head,
)
from tasks.exceptions import DataVersioningError, DvcRemoteError
from tasks.logs import run_logger
from tasks.system import atomic_path

# The repository-level tasks, importable from here as before.
__all__ = ["DataChange", "DatasetVersion", "check_data_changed", "get_dataset_version", "init_data_repo",
           "pull_dataset", "read_dvc_md5", "version_dataset"]


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


def _checkout_head_data(data_repo: DvcRepository, target: Path) -> None:
    """Put the workspace copy of a dataset back to the bytes HEAD names (best effort)."""
    with contextlib.suppress(Exception):
        repo = data_repo.get_repo()
        try:
            repo.checkout(targets=[str(target)], force=True)
        finally:
            repo.close()


@task(name="version-dataset")
def version_dataset(data_repo: DvcRepository, source_path: str, dataset_path: str = "data/train.parquet",
                    message: str | None = None) -> DatasetVersion:
    """Version a dataset file: place it in the repo, ``dvc add``, ``dvc push``, git commit.

    The stored format is the one ``dataset_path``'s suffix names: a CSV (or JSON Lines) file
    versioned as ``data/train.parquet`` is converted to Parquet, and the md5 is of the stored
    bytes. Validate the data first (the flow does): what this task commits becomes HEAD.
    The push happens before the commit, and the commit names only this dataset's files, so a
    commit always names data the remote has. Any failure (remote down, read-only or full
    folder) puts the ``.dvc`` / ``.gitignore`` files back as HEAD has them: nothing stays
    staged for a later commit. Versioning identical bytes again makes no new commit.

    Args:
        data_repo: The data repository (initialised by ``init_data_repo``).
        source_path: File to version (CSV, Parquet or JSON Lines); may already be ``dataset_path``.
        dataset_path: Path of the dataset inside the repository (``.parquet``, ``.csv`` or ``.jsonl``).
        message: Git commit message.

    Returns:
        The version: git rev, md5 content hash of the stored bytes, size, remote.

    Raises:
        DataVersioningError: If the file is missing, empty or unreadable, the folder is read-only or
            full (naming the path and the fix), or git / DVC fail.
        DvcRemoteError: If the remote cannot be reached; nothing is committed or left staged.

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
    if Path(dataset_path).suffix.lower() not in SUFFIXES:
        raise DataVersioningError(f"dataset_path {dataset_path!r} has suffix {Path(dataset_path).suffix!r}: use "
                                  f"one of {sorted(SUFFIXES)} (the stored format follows it).")
    detect_format(source)  # missing, empty or binary junk: a clear error before touching the repo
    repo_path = Path(data_repo.repo_path)
    target = repo_path / dataset_path
    paths = [f"{dataset_path}.dvc", str(Path(dataset_path).parent / ".gitignore")]
    with repo_lock(repo_path):
        discard_unfinished(repo_path)
        if source.resolve() != target.resolve():
            place_dataset(source, target, f"copy {source} into the data repo")
        try:
            md5, new_commit, rev = _add_push_commit(data_repo, target, dataset_path, paths, message)
        except BaseException:
            restore_paths(repo_path, paths)
            if tracked_in_head(repo_path, paths[0]):
                _checkout_head_data(data_repo, target)
            raise
    size = target.stat().st_size
    logger.info("Dataset %s md5 %s at rev %s (%s)", dataset_path, md5, rev[:10],
                "new commit" if new_commit else "unchanged")
    return DatasetVersion(repo_path=str(repo_path), dataset_path=dataset_path, rev=rev, md5=md5, size=size,
                          remote_url=data_repo.remote_url, new_commit=new_commit)


def _add_push_commit(data_repo: DvcRepository, target: Path, dataset_path: str, paths: list[str],
                     message: str | None) -> tuple[str, bool, str]:
    """``dvc add`` + ``dvc push`` + a commit of only ``paths``; returns (md5, new commit?, rev)."""
    repo_path = Path(data_repo.repo_path)
    try:
        repo = data_repo.get_repo()
    except Exception as exc:
        raise DataVersioningError(f"Cannot open the DVC repo {repo_path}: {exc}{fs_advice(str(exc))}") from exc
    try:
        stages = repo.add(str(target))
        md5 = stages[0].outs[0].hash_info.value
        try:
            repo.push(targets=[str(target)], remote=data_repo.remote_name)
        except Exception as exc:  # DVC raises many remote-specific types
            raise DvcRemoteError(
                f"dvc push of {dataset_path} (md5 {md5}) to remote {data_repo.remote_name!r} "
                f"({data_repo.remote_url}) failed: {exc}{fs_advice(str(exc))}. The data is safe in the local DVC cache "
                "and nothing was committed or left staged: make the remote reachable and writable (or fix "
                "remote_url) and run again."
            ) from exc
    except DvcRemoteError:
        raise
    except Exception as exc:
        fault = os_fault(exc)
        if fault is not None:
            raise storage_error(fault, fault.filename or repo_path, f"dvc add {dataset_path} in {repo_path}") from exc
        advice = fs_advice(str(exc))
        raise DataVersioningError(f"dvc add of {dataset_path} in {repo_path} failed: {exc}{advice}") from exc
    finally:
        repo.close()
    git(repo_path, "add", "--", *paths)
    new_commit = bool(git(repo_path, "status", "--porcelain", "--", *paths))
    if new_commit:
        git(repo_path, "commit", "-q", "-m", message or f"Version {dataset_path} (md5 {md5})", "--", *paths)
    return md5, new_commit, git(repo_path, "rev-parse", "HEAD")


@task(name="get-dataset-version")
def get_dataset_version(data_repo: DvcRepository, dataset_path: str, rev: str = "HEAD") -> DatasetVersion:
    """Return the version of a dataset already in the data repo (a retrain with no new file).

    Args:
        data_repo: The data repository.
        dataset_path: Path of the dataset inside the repository.
        rev: Git revision.

    Returns:
        The version at ``rev`` (``new_commit`` False).

    Raises:
        DataVersioningError: If the dataset is not tracked at ``rev``.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def current() -> str:
        ...     return get_dataset_version(DvcRepository.embedded(), "data/train.parquet").md5
    """
    result = subprocess.run(["git", "show", f"{rev}:{dataset_path}.dvc"], cwd=data_repo.repo_path,
                            capture_output=True, text=True)
    outs = ((yaml.safe_load(result.stdout) or {}).get("outs") or [{}]) if result.returncode == 0 else [{}]
    if not outs[0].get("md5"):
        raise DataVersioningError(f"{dataset_path} is not tracked by DVC at rev {rev} of {data_repo.repo_path}: "
                                  "pass data_file to version a dataset first.")
    return DatasetVersion(repo_path=data_repo.repo_path, dataset_path=dataset_path,
                          rev=git(data_repo.repo_path, "rev-parse", rev), md5=outs[0]["md5"],
                          size=int(outs[0].get("size") or 0), remote_url=data_repo.remote_url, new_commit=False)


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
    try:
        with (atomic_path(local) as partial,
              dvc.api.open(dataset_path, repo=data_repo.repo_path, rev=rev, mode="rb",
                           remote=data_repo.remote_name) as src,
              open(partial, "wb") as dst):
            shutil.copyfileobj(src, dst, length=1 << 20)
    except Exception as exc:
        if (fault := os_fault(exc)) is not None:
            raise storage_error(fault, fault.filename or local, f"pull {dataset_path}@{rev[:10]}") from exc
        raise DvcRemoteError(
            f"Cannot fetch {dataset_path} (md5 {md5}) at rev {rev} from the cache or remote "
            f"{data_repo.remote_url}: {exc}. Check that the remote is reachable."
        ) from exc
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
    resolved = git(data_repo.repo_path, "rev-parse", rev)
    return DataChange(changed=md5 != reference_md5, rev=resolved, md5=md5, reference_md5=reference_md5)
