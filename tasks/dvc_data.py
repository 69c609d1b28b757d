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
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import yaml
from prefect import task
from pydantic import BaseModel

from blocks.dvc_repository import DvcRepository
from tasks.datasets import SUFFIXES, detect_format, fs_advice, os_fault, place_dataset, storage_error
from tasks.exceptions import DataVersioningError, DvcRemoteError
from tasks.locks import file_lock
from tasks.logs import run_logger
from tasks.system import atomic_path

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
        output = result.stderr.strip() or result.stdout.strip()
        raise DataVersioningError(f"git {' '.join(args)} failed in data repo {repo_path}: {output}{fs_advice(output)}")
    return result.stdout.strip()


@contextlib.contextmanager
def _repo_lock(repo_path: str | Path) -> Iterator[None]:
    """Serialise writers of one data repo (concurrent flows on one machine)."""
    lock = Path(repo_path).parent / f".{Path(repo_path).name}.lock"
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(file_lock(lock))
        except OSError as exc:
            raise storage_error(exc, lock, "lock the data repo") from exc
        yield


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


def _init_locked(data_repo: DvcRepository, path: Path) -> None:
    """Create or clone the repo, ``dvc init`` it and set its remote (under the repo lock)."""
    from dvc.repo import Repo

    logger = run_logger()
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
    path = Path(data_repo.repo_path)
    with _repo_lock(path):
        try:
            _init_locked(data_repo, path)
        except OSError as exc:
            raise storage_error(exc, exc.filename or path, f"initialise the data repo {path}") from exc
        except DataVersioningError:
            raise
        except Exception as exc:  # DVC wraps file-system faults in its own errors
            fault = os_fault(exc)
            if fault is None:
                raise DataVersioningError(f"Cannot initialise the data repo {path}: {exc}") from exc
            raise storage_error(fault, fault.filename or path, f"initialise the data repo {path}") from exc
    return str(path)


def _tracked_in_head(repo_path: Path, path: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", f"HEAD:{path}"], cwd=repo_path, capture_output=True).returncode == 0


def _restore(repo_path: Path, paths: list[str]) -> None:
    """Put ``.dvc`` / ``.gitignore`` paths (and their data files) back as HEAD has them: unstaged, unchanged."""
    with contextlib.suppress(DataVersioningError):
        _git(repo_path, "reset", "-q", "--", *paths)
    for path in paths:
        if _tracked_in_head(repo_path, path):
            with contextlib.suppress(DataVersioningError):
                _git(repo_path, "checkout", "-q", "--", path)
        else:
            with contextlib.suppress(OSError):
                (repo_path / path).unlink(missing_ok=True)
                if path.endswith(".dvc"):  # the data file of a version that never got committed
                    data = repo_path / path[: -len(".dvc")]
                    if data.is_file():
                        data.unlink()


def _discard_unfinished(repo_path: Path) -> list[str]:
    """Undo ``.dvc`` / ``.gitignore`` changes left by a failed or killed run (never committed, maybe not pushed)."""
    changed = _git(repo_path, "diff", "--name-only", "HEAD").splitlines()  # staged or not, against HEAD
    changed += _git(repo_path, "ls-files", "--others", "--exclude-standard").splitlines()
    left = sorted({p for p in changed if p.endswith((".dvc", ".gitignore")) and not p.startswith(".dvc/")})
    if left:
        _restore(repo_path, left)
        run_logger().warning("Discarded uncommitted changes of a failed earlier run in %s: %s", repo_path, left)
    return left


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
    with _repo_lock(repo_path):
        _discard_unfinished(repo_path)
        if source.resolve() != target.resolve():
            place_dataset(source, target, f"copy {source} into the data repo")
        try:
            md5, new_commit, rev = _add_push_commit(data_repo, target, dataset_path, paths, message)
        except BaseException:
            _restore(repo_path, paths)
            if _tracked_in_head(repo_path, paths[0]):
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
    _git(repo_path, "add", "--", *paths)
    new_commit = bool(_git(repo_path, "status", "--porcelain", "--", *paths))
    if new_commit:
        _git(repo_path, "commit", "-q", "-m", message or f"Version {dataset_path} (md5 {md5})", "--", *paths)
    return md5, new_commit, _git(repo_path, "rev-parse", "HEAD")


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
                          rev=_git(data_repo.repo_path, "rev-parse", rev), md5=outs[0]["md5"],
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
    resolved = _git(data_repo.repo_path, "rev-parse", rev)
    return DataChange(changed=md5 != reference_md5, rev=resolved, md5=md5, reference_md5=reference_md5)
