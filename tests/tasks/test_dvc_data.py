"""DVC tasks against a real git + DVC repo with a local remote, and the data repo's consistency under real faults:
a read-only remote, a read-only or full state folder, a killed run."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect import flow
from tests_support import file_md5

from blocks.dvc_repository import DvcRepository
from tasks.data_validation import ValidationReport, reject_dataset, resolve_data_contract
from tasks.datasets import stage_dataset
from tasks.dvc_data import check_data_changed, init_data_repo, pull_dataset, read_dvc_md5, version_dataset
from tasks.exceptions import DataVersioningError, DvcRemoteError
from tasks.sample_data import make_customer_frame, read_frame


@flow
def _version(repo: DvcRepository, source: str):
    init_data_repo(repo)
    return version_dataset(repo, source, "data/train.parquet")


def _last_data_commit(repo: DvcRepository) -> str:
    return subprocess.run(["git", "log", "-1", "--format=%H", "--", "data/train.parquet.dvc"], cwd=repo.repo_path,
                          capture_output=True, text=True).stdout


def test_version_push_pull_and_change_detection(tmp_path: Path) -> None:
    repo = DvcRepository.embedded(tmp_path / "dvc")
    first = tmp_path / "a.parquet"
    make_customer_frame(500, seed=1).to_parquet(first, index=False)
    v1 = _version(repo, str(first))
    assert v1.new_commit and v1.md5 == file_md5(first)
    remote_files = [p for p in Path(repo.remote_url).rglob("*") if p.is_file()]
    assert remote_files, "dvc push wrote nothing to the local remote"

    again = _version(repo, str(first))
    assert not again.new_commit and again.rev == v1.rev

    second = tmp_path / "b.parquet"
    make_customer_frame(500, seed=2).to_parquet(second, index=False)
    v2 = _version(repo, str(second))
    assert v2.rev != v1.rev and v2.md5 != v1.md5

    @flow
    def pull_and_compare():
        local = pull_dataset(repo, "data/train.parquet", v1.rev, str(tmp_path / "cache"))
        change = check_data_changed(repo, "data/train.parquet", v1.md5)
        return local, change

    local, change = pull_and_compare()
    assert file_md5(Path(local)) == v1.md5  # the exact old bytes, not the workspace copy
    assert read_frame(local).equals(read_frame(first))
    assert change.changed and change.md5 == v2.md5 and change.reference_md5 == v1.md5


def test_unreachable_remote_is_a_clear_error_and_commits_nothing(tmp_path: Path) -> None:
    from tests_support import closed_port

    repo = DvcRepository.embedded(tmp_path / "dvc")
    first = tmp_path / "a.parquet"
    make_customer_frame(300, seed=1).to_parquet(first, index=False)
    _version(repo, str(first))
    head = _last_data_commit(repo)
    broken = repo.model_copy(update={"remote_url": f"http://127.0.0.1:{closed_port()}/dvc"})
    second = tmp_path / "b.parquet"
    make_customer_frame(300, seed=3).to_parquet(second, index=False)
    with pytest.raises(DvcRemoteError, match="dvc push .* failed.*nothing was committed"):
        _version(broken, str(second))
    assert _last_data_commit(repo) == head
    assert read_dvc_md5(repo.repo_path, "data/train.parquet") == file_md5(first)


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    repo = DvcRepository.embedded(tmp_path / "dvc")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataVersioningError, match="empty"):
        _version(repo, str(empty))


def test_pull_unknown_rev_is_a_clear_error(tmp_path: Path) -> None:
    repo = DvcRepository.embedded(tmp_path / "dvc")
    first = tmp_path / "a.parquet"
    make_customer_frame(300, seed=1).to_parquet(first, index=False)
    _version(repo, str(first))

    @flow
    def pull():
        return pull_dataset(repo, "data/other.parquet", "HEAD", str(tmp_path / "cache"))

    with pytest.raises(DataVersioningError, match="not tracked by DVC"):
        pull()


DVC = str(Path(sys.executable).parent / "dvc")


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Bind-mount ``path`` onto itself read-only (chmod means nothing to root)."""
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "1m") -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


def _git(repo: DvcRepository, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo.repo_path, capture_output=True, text=True, check=True).stdout


def _assert_consistent(repo: DvcRepository) -> None:
    """Nothing staged or left over, git objects sound, and every tracked dataset is on the remote."""
    assert _git(repo, "status", "--porcelain") == ""
    subprocess.run(["git", "fsck", "--no-dangling"], cwd=repo.repo_path, check=True, capture_output=True)
    status = subprocess.run([DVC, "status", "-c", "--json"], cwd=repo.repo_path, capture_output=True, text=True)
    assert status.returncode == 0 and json.loads(status.stdout or "{}") == {}, status.stdout + status.stderr


def _frame(seed: int, rows: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.random(rows), "y": rng.integers(0, 2, rows)})


def _file(tmp_path: Path, name: str, seed: int, rows: int = 300) -> Path:
    path = tmp_path / name
    _frame(seed, rows).to_parquet(path, index=False)
    return path


def test_read_only_remote_leaves_nothing_for_the_next_commit(tmp_path: Path) -> None:
    """Old failure: the .dvc file of a failed push stayed staged and the next run for another dataset committed it."""
    repo = DvcRepository.embedded(tmp_path / "dvc")
    init_data_repo.fn(repo)
    first = version_dataset.fn(repo, str(_file(tmp_path, "a.parquet", 1)), "data/a.parquet")
    gitignore = _git(repo, "show", "HEAD:data/.gitignore")

    with read_only(Path(repo.remote_url)):
        with pytest.raises(DvcRemoteError, match="nothing was committed or left staged"):
            version_dataset.fn(repo, str(_file(tmp_path, "b.parquet", 2)), "data/b.parquet")
        assert _git(repo, "status", "--porcelain") == ""  # no b.parquet.dvc, no .gitignore change
        assert not (Path(repo.repo_path) / "data" / "b.parquet.dvc").exists()
        with pytest.raises(DvcRemoteError):  # a new version of a tracked dataset: put back as HEAD has it
            version_dataset.fn(repo, str(_file(tmp_path, "a2.parquet", 3)), "data/a.parquet")
        assert _git(repo, "status", "--porcelain") == ""
        assert read_dvc_md5(repo.repo_path, "data/a.parquet") == first.md5
        assert file_md5(Path(repo.repo_path) / "data" / "a.parquet") == first.md5

    other = version_dataset.fn(repo, str(_file(tmp_path, "c.parquet", 4)), "data/c.parquet")
    assert other.new_commit
    committed = _git(repo, "show", "--name-only", "--format=", "HEAD").split()
    assert sorted(committed) == ["data/.gitignore", "data/c.parquet.dvc"]
    assert "b.parquet" not in _git(repo, "ls-files") and "/b.parquet" not in _git(repo, "show", "HEAD:data/.gitignore")
    assert gitignore.strip() in _git(repo, "show", "HEAD:data/.gitignore")
    _assert_consistent(repo)

    retried = version_dataset.fn(repo, str(tmp_path / "b.parquet"), "data/b.parquet")  # the remote is back
    assert retried.new_commit and retried.md5 == file_md5(tmp_path / "b.parquet")
    _assert_consistent(repo)


@pytest.mark.parametrize("staged", [True, False])
def test_leftovers_of_a_killed_run_are_never_committed(tmp_path: Path, staged: bool) -> None:
    """A run killed between ``dvc add`` and the push leaves a .dvc file (staged or not): the next run discards it."""
    repo = DvcRepository.embedded(tmp_path / "dvc")
    init_data_repo.fn(repo)
    version_dataset.fn(repo, str(_file(tmp_path, "a.parquet", 1)), "data/a.parquet")
    stray = Path(repo.repo_path) / "data" / "killed.parquet"
    _frame(9).to_parquet(stray, index=False)
    subprocess.run([DVC, "add", "-q", str(stray)], cwd=repo.repo_path, check=True)  # autostage: staged, not pushed
    assert "killed.parquet.dvc" in _git(repo, "diff", "--cached", "--name-only")
    if not staged:  # " M data/.gitignore" first in `git status --porcelain`: the case a parser once misread
        _git(repo, "reset", "-q")

    version_dataset.fn(repo, str(_file(tmp_path, "c.parquet", 4)), "data/c.parquet")
    assert "killed" not in _git(repo, "show", "--name-only", "--format=", "HEAD")
    assert "killed" not in _git(repo, "ls-files") + _git(repo, "show", "HEAD:data/.gitignore")
    _assert_consistent(repo)


def test_read_only_state_folder_is_a_clear_error_and_recoverable(tmp_path: Path) -> None:
    state = tmp_path / "state"
    repo = DvcRepository.embedded(state / "dvc")
    init_data_repo.fn(repo)
    first = version_dataset.fn(repo, str(_file(tmp_path, "a.parquet", 1)), "data/train.parquet")
    second = _file(tmp_path, "b.parquet", 2)
    report = ValidationReport(dataset="b.parquet", rows=1, columns=1, violations=[])

    with read_only(state):
        with pytest.raises(DataVersioningError, match=rf"(?s){state}.*read-only: remount it read-write"):
            version_dataset.fn(repo, str(second), "data/train.parquet")
        with pytest.raises(DataVersioningError, match=rf"{state / 'staging'}.*read-only"):
            stage_dataset.fn(str(second), "data/train.parquet", str(state / "staging"))
        with pytest.raises(DataVersioningError, match=rf"{state / 'rejected'}.*read-only"):
            reject_dataset.fn(str(second), report, str(state / "rejected"))
        with pytest.raises(DataVersioningError, match=rf"{state / 'contract.json'}.*read-only"):
            resolve_data_contract.fn(str(second), str(state / "contract.json"), "y")
        with pytest.raises(DataVersioningError, match=rf"{state / 'cache'}.*read-only"):
            pull_dataset.fn(repo, "data/train.parquet", first.rev, str(state / "cache"))
        assert read_dvc_md5(repo.repo_path, "data/train.parquet") == first.md5

    _assert_consistent(repo)
    after = version_dataset.fn(repo, str(second), "data/train.parquet")  # fixed: the next run works
    assert after.new_commit and after.md5 == file_md5(second)
    _assert_consistent(repo)


def test_full_state_folder_is_a_clear_error_and_recoverable(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with small_tmpfs(state, "1m"):
        repo = DvcRepository(repo_path=str(state / "dvc" / "data-repo"), remote_url=str(tmp_path / "remote"))
        init_data_repo.fn(repo)
        big = _file(tmp_path, "big.parquet", 5, rows=75_000)  # ~600 kB: fits once, not twice (workspace + cache)
        with pytest.raises(DataVersioningError, match=rf"(?s){repo.repo_path}.*disk is full: free space"):
            version_dataset.fn(repo, str(big), "data/train.parquet")
        assert _git(repo, "status", "--porcelain") == ""
        assert read_dvc_md5(repo.repo_path, "data/train.parquet") is None
        huge = _file(tmp_path, "huge.parquet", 6, rows=200_000)
        with pytest.raises(DataVersioningError, match=rf"{state / 'staging'}.*disk is full"):
            stage_dataset.fn(str(huge), "data/train.parquet", str(state / "staging"))
        assert not [p for p in (state / "staging").iterdir()]  # no partial file left behind

        subprocess.run(["mount", "-o", "remount,size=64m", str(state)], check=True)  # the fix: more space
        version = version_dataset.fn(repo, str(big), "data/train.parquet")
        assert version.new_commit and version.md5 == file_md5(big)
        _assert_consistent(repo)


def test_state_folder_under_a_file_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("not a folder")
    repo = DvcRepository.embedded(blocker / "dvc")
    with pytest.raises(DataVersioningError, match=rf"{blocker}"):
        init_data_repo.fn(repo)


def test_sigkill_during_versioning_leaves_a_repo_the_next_run_keeps_consistent(tmp_path: Path) -> None:
    """SIGKILL a real versioning process once its .dvc file exists (pushing or about to commit)."""
    import os
    import signal
    import time

    repo = DvcRepository.embedded(tmp_path / "dvc")
    init_data_repo.fn(repo)
    version_dataset.fn(repo, str(_file(tmp_path, "a.parquet", 1)), "data/a.parquet")
    big = tmp_path / "big.parquet"  # Parquet magic then 80 MB of noise: copied byte for byte, slow to add and push
    with open(big, "wb") as handle:
        handle.write(b"PAR1")
        handle.write(os.urandom(80 * 1024 * 1024))
    script = ("import sys; from blocks.dvc_repository import DvcRepository; from tasks.dvc_data import version_dataset;"
              f"version_dataset.fn(DvcRepository.embedded(__import__('pathlib').Path({str(tmp_path / 'dvc')!r})),"
              f"{str(big)!r}, 'data/killed.parquet')")
    worker = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = Path(repo.repo_path) / "data" / "killed.parquet.dvc"
    deadline = time.monotonic() + 120
    while not marker.exists() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if worker.poll() is None:
        os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    killed_mid_way = worker.returncode == -signal.SIGKILL

    version_dataset.fn(repo, str(_file(tmp_path, "c.parquet", 4)), "data/c.parquet")
    _assert_consistent(repo)  # whatever the kill interrupted: nothing staged, the remote has every tracked file
    tracked = _git(repo, "ls-files")
    if "data/killed.parquet.dvc" in tracked:  # the kill came after the commit: then the push had finished too
        assert read_dvc_md5(repo.repo_path, "data/killed.parquet") == file_md5(big)
    else:
        assert killed_mid_way and "killed" not in _git(repo, "show", "HEAD:data/.gitignore")
