"""The data stage of continuous training: validate before HEAD, one stored format, rejected data kept."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from prefect import flow
from tests_support import file_md5

from blocks.data_contract import DataContract
from blocks.dvc_repository import DvcRepository
from flows.training_data import prepare_training_data
from tasks.datasets import detect_format, read_dataset, write_dataset
from tasks.dvc_data import init_data_repo, pull_dataset, read_dvc_md5
from tasks.exceptions import DataValidationError


@flow
def _prepare(repo: DvcRepository, data_file: str | None, dataset_path: str, home: str, target: str) -> dict:
    init_data_repo(repo)
    data = prepare_training_data(repo, data_file, dataset_path, "data-stage-test", target, None,
                                 str(Path(home) / "contract.json"), Path(home))
    return {"rev": data.version.rev, "md5": data.version.md5, "local_file": data.local_file,
            "new_commit": data.version.new_commit, "time_column": data.contract.time_column,
            "task_type": data.contract.task_type, "roles": data.contract.column_roles()}


def _head(repo: DvcRepository) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo.repo_path, capture_output=True, text=True,
                          check=True).stdout.strip()


def _macro() -> pd.DataFrame:
    import statsmodels.api as sm

    frame = sm.datasets.macrodata.load_pandas().data
    frame["date"] = [f"{int(y)}-{3 * int(q) - 2:02d}-01" for y, q in zip(frame.year, frame.quarter, strict=True)]
    return frame.drop(columns=["year", "quarter"])


def test_csv_data_file_with_the_default_parquet_dataset_path(tmp_path: Path) -> None:
    """Old failure: the CSV was copied to data/train.parquet as is and then failed to read ("magic bytes")."""
    repo = DvcRepository.embedded(tmp_path / "dvc")
    source = tmp_path / "macro_export.csv"
    write_dataset(_macro(), source)
    out = _prepare(repo, str(source), "data/train.parquet", str(tmp_path / "state"), "realgdp")
    stored = Path(repo.repo_path) / "data" / "train.parquet"
    assert detect_format(stored) == "parquet"
    assert out["md5"] == file_md5(stored) == read_dvc_md5(repo.repo_path, "data/train.parquet")
    assert file_md5(Path(out["local_file"])) == out["md5"]
    frame = read_dataset(out["local_file"])
    assert frame["date"].tolist() == _macro()["date"].tolist()  # dates still strings: the contract parses them
    assert out["time_column"] == "date" and out["task_type"] == "regression"
    assert out["roles"]["date"] == "datetime" and out["roles"]["realgdp"] == "target"
    fresh = pull_dataset.fn(repo, "data/train.parquet", out["rev"], str(tmp_path / "other-cache"))
    assert file_md5(Path(fresh)) == out["md5"]  # lineage: the rev gives back exactly the stored bytes

    again = _prepare(repo, str(source), "data/train.parquet", str(tmp_path / "state"), "realgdp")
    assert not again["new_commit"] and again["rev"] == out["rev"]  # the same CSV converts to the same bytes


def test_data_failing_validation_never_becomes_head(tmp_path: Path) -> None:
    """Old failure: data that broke the contract was already committed as the data repo's HEAD."""
    from palmerpenguins import load_penguins

    repo = DvcRepository.embedded(tmp_path / "dvc")
    home = tmp_path / "state"
    good = tmp_path / "penguins.csv"
    load_penguins().to_csv(good, index=False)
    first = _prepare(repo, str(good), "data/train.parquet", str(home), "species")
    commits = subprocess.run(["git", "rev-list", "--count", "HEAD"], cwd=repo.repo_path, capture_output=True,
                             text=True).stdout

    bad_frame = load_penguins()
    bad_frame.loc[[2, 7], "island"] = "Atlantis"
    bad_frame.loc[4, "body_mass_g"] = 1e9
    bad = tmp_path / "penguins_2025.jsonl"
    write_dataset(bad_frame, bad)
    with pytest.raises(DataValidationError) as err:
        _prepare(repo, str(bad), "data/train.parquet", str(home), "species")
    message = str(err.value)
    assert str(bad) in message and "Atlantis" in message and "HEAD is unchanged" in message
    assert _head(repo) == first["rev"] and read_dvc_md5(repo.repo_path, "data/train.parquet") == first["md5"]
    assert subprocess.run(["git", "rev-list", "--count", "HEAD"], cwd=repo.repo_path, capture_output=True,
                          text=True).stdout == commits
    assert subprocess.run(["git", "status", "--porcelain"], cwd=repo.repo_path, capture_output=True,
                          text=True).stdout == ""
    folders = list((home / "rejected").iterdir())
    assert len(folders) == 1 and str(folders[0]) in message
    record = json.loads((folders[0] / "violations.json").read_text())
    assert record["source"] == str(bad) and record["md5"] == folders[0].name == file_md5(folders[0] / "data.parquet")
    checks = {v["check"]: v for v in record["violations"]}
    assert checks["categories"]["rows"] == [2, 7] and checks["range"]["rows"] == [4]
    assert read_dataset(folders[0] / "data.parquet").loc[2, "island"] == "Atlantis"  # kept for inspection
    assert not (Path(home / "cache" / "data") / f"{folders[0].name}.parquet").exists()  # moved, not copied


def test_retrain_without_new_file_validates_the_versioned_data(tmp_path: Path) -> None:
    from palmerpenguins import load_penguins

    repo = DvcRepository.embedded(tmp_path / "dvc")
    home = tmp_path / "state"
    good = tmp_path / "penguins.parquet"
    load_penguins().to_parquet(good, index=False)
    first = _prepare(repo, str(good), "data/train.parquet", str(home), "species")
    retrain = _prepare(repo, None, "data/train.parquet", str(home), "species")
    assert retrain["rev"] == first["rev"] and retrain["md5"] == first["md5"] == file_md5(good)

    contract = DataContract.from_file(home / "contract.json")
    contract.columns["island"].categories = ["Biscoe", "Torgersen"]  # "Dream" is now out of contract
    contract.to_file(home / "contract.json")
    with pytest.raises(DataValidationError, match=r"(?s)data/train.parquet@.*already versioned.*Dream"):
        _prepare(repo, None, "data/train.parquet", str(home), "species")
    assert not (home / "rejected").exists()  # versioned data is not "rejected": it stays HEAD
    assert _head(repo) == first["rev"]


def test_first_dataset_without_target_is_rejected_and_defines_no_contract(tmp_path: Path) -> None:
    from sklearn.datasets import load_wine

    repo = DvcRepository.embedded(tmp_path / "dvc")
    home = tmp_path / "state"
    frame = load_wine(as_frame=True).frame
    headless = tmp_path / "wine_no_target.csv"
    frame.drop(columns=["target"]).to_csv(headless, index=False)
    with pytest.raises(DataValidationError, match=r"(?s)wine_no_target.csv.*rejected.*missing_target"):
        _prepare(repo, str(headless), "data/train.parquet", str(home), "target")
    assert not (home / "contract.json").exists()  # bad first data defines nothing
    assert read_dvc_md5(repo.repo_path, "data/train.parquet") is None
    assert len(list((home / "rejected").iterdir())) == 1

    good = tmp_path / "wine.jsonl"
    write_dataset(frame, good)
    out = _prepare(repo, str(good), "data/wine.jsonl", str(home), "target")
    stored = Path(repo.repo_path) / "data" / "wine.jsonl"
    assert file_md5(stored) == file_md5(good) == out["md5"]  # already the stored format: byte for byte
    assert out["task_type"] == "multiclass" and (home / "contract.json").is_file()
