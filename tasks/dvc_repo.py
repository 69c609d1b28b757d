"""The data repository: git + DVC set-up, the repo lock, and undoing a failed run's changes.

Dataset tasks (version, pull, compare) live in :mod:`tasks.dvc_data` and use these.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import yaml
from prefect import task

from blocks.dvc_repository import DvcRepository
from tasks.datasets import fs_advice, os_fault, storage_error
from tasks.exceptions import DataVersioningError
from tasks.locks import file_lock
from tasks.logs import run_logger

_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "prefect-mlops",
    "GIT_AUTHOR_EMAIL": "prefect-mlops@localhost",
    "GIT_COMMITTER_NAME": "prefect-mlops",
    "GIT_COMMITTER_EMAIL": "prefect-mlops@localhost",
}



def git(repo_path: str | Path, *args: str) -> str:
    """Run git in the data repo; a failure is a :class:`DataVersioningError` with git's output."""
    env = {**_GIT_IDENTITY, **os.environ}
    result = subprocess.run(["git", *args], cwd=repo_path, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        output = result.stderr.strip() or result.stdout.strip()
        raise DataVersioningError(f"git {' '.join(args)} failed in data repo {repo_path}: {output}{fs_advice(output)}")
    return result.stdout.strip()



@contextlib.contextmanager
def repo_lock(repo_path: str | Path) -> Iterator[None]:
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
            git(path.parent, "clone", data_repo.repo_url, str(path))
        else:
            path.mkdir(parents=True, exist_ok=True)
            git(path, "init", "-q", "-b", data_repo.git_branch)
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
    git(path, "add", ".dvc", ".dvcignore")
    if git(path, "status", "--porcelain", "--", ".dvc", ".dvcignore"):
        git(path, "commit", "-q", "-m", "Configure DVC remote")


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
    with repo_lock(path):
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


def tracked_in_head(repo_path: Path, path: str) -> bool:
    """Whether HEAD of the data repo has ``path``."""
    return subprocess.run(["git", "cat-file", "-e", f"HEAD:{path}"], cwd=repo_path, capture_output=True).returncode == 0


def restore_paths(repo_path: Path, paths: list[str]) -> None:
    """Put ``.dvc`` / ``.gitignore`` paths (and their data files) back as HEAD has them: unstaged, unchanged."""
    with contextlib.suppress(DataVersioningError):
        git(repo_path, "reset", "-q", "--", *paths)
    for path in paths:
        if tracked_in_head(repo_path, path):
            with contextlib.suppress(DataVersioningError):
                git(repo_path, "checkout", "-q", "--", path)
        else:
            with contextlib.suppress(OSError):
                (repo_path / path).unlink(missing_ok=True)
                if path.endswith(".dvc"):  # the data file of a version that never got committed
                    data = repo_path / path[: -len(".dvc")]
                    if data.is_file():
                        data.unlink()


def discard_unfinished(repo_path: Path) -> list[str]:
    """Undo ``.dvc`` / ``.gitignore`` changes left by a failed or killed run (never committed, maybe not pushed)."""
    changed = git(repo_path, "diff", "--name-only", "HEAD").splitlines()  # staged or not, against HEAD
    changed += git(repo_path, "ls-files", "--others", "--exclude-standard").splitlines()
    left = sorted({p for p in changed if p.endswith((".dvc", ".gitignore")) and not p.startswith(".dvc/")})
    if left:
        restore_paths(repo_path, left)
        run_logger().warning("Discarded uncommitted changes of a failed earlier run in %s: %s", repo_path, left)
    return left
