"""DVC tasks against a real git + DVC repo with a local remote."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from prefect import flow
from tests_support import file_md5

from blocks.dvc_repository import DvcRepository
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
