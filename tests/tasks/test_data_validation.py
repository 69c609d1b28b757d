"""Data validation: every bad input is named, all violations listed at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blocks.data_contract import DataContract
from tasks.data_validation import check_frame, validate_dataset
from tasks.exceptions import DataValidationError
from tasks.sample_data import make_customer_frame


@pytest.fixture(scope="module")
def contract() -> DataContract:
    return DataContract.infer(make_customer_frame(2000, seed=0), target="churned")


def checks(frame: pd.DataFrame, contract: DataContract) -> set[str]:
    return {v.check for v in check_frame(frame, contract).violations}


def test_sample_data_passes(contract: DataContract) -> None:
    report = check_frame(make_customer_frame(2000, seed=5, day=2, covariate_drift=0.3), contract)
    assert report.passed, report.violations


def test_empty_frame(contract: DataContract) -> None:
    assert "empty" in checks(make_customer_frame(10).iloc[0:0], contract)


def test_too_few_rows(contract: DataContract) -> None:
    assert "min_rows" in checks(make_customer_frame(20, seed=1), contract)


def test_missing_target_and_columns(contract: DataContract) -> None:
    frame = make_customer_frame(500, seed=1).drop(columns=["churned", "region"])
    found = check_frame(frame, contract)
    assert {"missing_target", "missing_columns"} <= {v.check for v in found.violations}
    assert any("region" in v.message for v in found.violations)


def test_extra_column(contract: DataContract) -> None:
    frame = make_customer_frame(500, seed=1).assign(surprise=1)
    assert "extra_columns" in checks(frame, contract)


def test_wrong_types(contract: DataContract) -> None:
    frame = make_customer_frame(500, seed=1)
    frame["monthly_charges"] = frame["monthly_charges"].astype(str) + " USD"
    report = check_frame(frame, contract)
    assert any(v.check == "dtype" and v.column == "monthly_charges" for v in report.violations)


def test_nan_and_inf(contract: DataContract) -> None:
    frame = make_customer_frame(500, seed=1)
    frame.loc[:4, "usage_gb"] = np.nan
    frame.loc[10:11, "tenure_months"] = np.inf
    report = check_frame(frame, contract)
    assert any(v.check == "nan" and v.column == "usage_gb" and "5" in v.message for v in report.violations)
    assert any(v.check == "inf" and v.column == "tenure_months" for v in report.violations)


def test_out_of_range_and_unseen_category(contract: DataContract) -> None:
    frame = make_customer_frame(500, seed=1)
    frame.loc[0, "age"] = 400
    frame.loc[1, "region"] = "atlantis"
    found = checks(frame, contract)
    assert {"range", "categories"} <= found


def test_single_class_target(contract: DataContract) -> None:
    frame = make_customer_frame(500, seed=1).assign(churned=0)
    assert "target_classes" in checks(frame, contract)


def test_duplicates(contract: DataContract) -> None:
    frame = make_customer_frame(300, seed=1)
    frame = pd.concat([frame, frame.iloc[:100]], ignore_index=True)
    assert "duplicates" in checks(frame, contract)


def test_every_violation_listed_in_the_error(tmp_path: Path, contract: DataContract) -> None:
    frame = make_customer_frame(500, seed=1).assign(churned=1)
    frame.loc[:2, "usage_gb"] = np.nan
    path = tmp_path / "bad.parquet"
    frame.to_parquet(path)
    report = validate_dataset.fn(str(path), contract)
    with pytest.raises(DataValidationError) as err:
        report.raise_for_violations()
    assert "target_classes" in str(err.value) and "nan" in str(err.value)
    assert "nothing was trained or promoted" in str(err.value)
    assert len(err.value.violations) == 2


def test_empty_file_is_a_validation_error(tmp_path: Path, contract: DataContract) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataValidationError, match="empty"):
        validate_dataset.fn(str(path), contract)
