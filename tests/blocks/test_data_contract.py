"""The data contract: inference, save/load as a block, column roles, time column and task type on bundled data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blocks.data_contract import ColumnSpec, DataContract, parse_datetime
from tasks.data_validation import check_frame
from tasks.datasets import read_dataset, write_dataset


def _macro() -> pd.DataFrame:
    import statsmodels.api as sm

    frame = sm.datasets.macrodata.load_pandas().data
    frame["date"] = [f"{int(y)}-{3 * int(q) - 2:02d}-01" for y, q in zip(frame.year, frame.quarter, strict=True)]
    return frame.drop(columns=["year", "quarter"])


def _macro_csv(tmp_path: Path) -> pd.DataFrame:
    path = tmp_path / "macro.csv"
    write_dataset(_macro(), path)
    return read_dataset(path)


def test_date_strings_are_a_datetime_column_not_a_closed_list(tmp_path: Path) -> None:
    """Old failure: the date column became a categorical list of every date seen; later periods were rejected."""
    frame = _macro_csv(tmp_path)
    early, later = frame.iloc[:150], frame.iloc[150:]
    old_style = DataContract.infer(early, target="realgdp", min_rows=10)
    old_style.columns["date"] = ColumnSpec(kind="categorical", categories=sorted(early["date"]))
    assert any(v.check == "categories" and v.column == "date" for v in check_frame(later, old_style).violations)

    contract = DataContract.infer(early, target="realgdp", min_rows=10, range_margin=2.0)
    spec = contract.columns["date"]
    assert (spec.kind, spec.role, spec.categories) == ("datetime", "datetime", None)
    assert contract.time_column == "date" and contract.task_type == "regression"
    report = check_frame(later, contract)
    assert report.passed, report.violations


def test_datetime_kind_accepts_csv_strings_and_names_unparseable_values(tmp_path: Path) -> None:
    """Old failure: a column declared datetime failed on CSV, whose dates are strings."""
    frame = _macro_csv(tmp_path)
    contract = DataContract.infer(frame, target="realgdp", min_rows=10)
    contract.columns["date"] = ColumnSpec(kind="datetime")
    assert frame["date"].dtype == object and check_frame(frame, contract).passed

    broken = frame.copy()
    broken.loc[[3, 7, 11, 12, 40, 41, 42, 43, 44, 45, 46], "date"] = "not a date"
    report = check_frame(broken, contract, dataset="macro.csv")
    found = [v for v in report.violations if v.check == "datetime"]
    assert found and found[0].column == "date" and found[0].rows[:3] == [3, 7, 11]
    assert found[0].values[0] == "not a date" and "11 value(s)" in found[0].message
    assert parse_datetime(broken["date"]).isna().sum() == 11


def test_roles_identifier_text_and_feature_roles() -> None:
    rng = np.random.default_rng(0)
    n = 300
    words = ["late", "delivery", "great", "service", "refund", "broken", "box", "support", "slow", "fast"]
    frame = pd.DataFrame({
        "customer_id": [f"C{100000 + i}" for i in range(n)],
        "row": np.arange(n),
        "review": [" ".join(rng.choice(words, 9)) for _ in range(n)],
        "plan": rng.choice(["basic", "pro", "team"], n),
        "spend": rng.normal(50, 10, n),
        "signup": pd.date_range("2024-01-01", periods=n, freq="h").astype(str),
        "updated_at": pd.date_range("2024-02-01", periods=n, freq="h"),
        "vip": rng.random(n) < 0.2,
        "churned": rng.choice(["yes", "no"], n),
    })
    contract = DataContract.infer(frame, target="churned", min_rows=10)
    roles = contract.column_roles()
    assert roles == {"customer_id": "identifier", "row": "identifier", "review": "text", "plan": "categorical",
                     "spend": "numeric", "signup": "datetime", "updated_at": "datetime", "vip": "boolean",
                     "churned": "target"}
    assert contract.time_column == "updated_at"  # several datetime columns: the one named like a time
    assert contract.feature_roles() == {"review": "text", "plan": "categorical", "spend": "numeric",
                                        "signup": "datetime", "vip": "boolean"}
    assert contract.task_type == "binary" and contract.columns["churned"].categories == ["no", "yes"]
    for name in ("customer_id", "review", "signup"):
        assert contract.columns[name].categories is None
    later = frame.assign(customer_id=[f"D{i}" for i in range(n)], review="a completely new text never seen")
    assert check_frame(later, contract).passed  # new ids and texts are no "unseen categories"


@pytest.mark.parametrize(("name", "task", "classes"), [
    ("iris", "multiclass", ["setosa", "versicolor", "virginica"]),
    ("breast_cancer", "binary", ["0", "1"]),
    ("diabetes", "regression", None),
    ("penguins", "multiclass", ["Adelie", "Chinstrap", "Gentoo"]),
])
def test_task_type_and_target_spec_on_bundled_data(name: str, task: str, classes: list[str] | None) -> None:
    """Old failure: a continuous target (diabetes) was taken for a class label."""
    from palmerpenguins import load_penguins
    from sklearn import datasets

    if name == "penguins":
        frame, target = load_penguins(), "species"
    else:
        bunch = getattr(datasets, f"load_{name}")(as_frame=True)
        frame, target = bunch.frame, "target"
        if name == "iris":
            frame[target] = frame[target].map(dict(enumerate(bunch.target_names)))
    contract = DataContract.infer(frame, target=target, min_rows=50)
    assert contract.task_type == task
    assert contract.columns[target].categories == classes and contract.columns[target].role == "target"
    assert contract.min_target_classes == (0 if task == "regression" else 2)
    assert check_frame(frame, contract).passed
    if name == "penguins":
        assert contract.columns["bill_length_mm"].nullable and contract.columns["island"].role == "categorical"
    if task == "regression":  # a constant regression target is no "single class" violation
        report = check_frame(frame.assign(**{target: frame[target].median()}), contract)
        assert "target_classes" not in {v.check for v in report.violations}
    else:
        report = check_frame(frame.assign(**{target: frame[target].iloc[0]}), contract)
        assert "target_classes" in {v.check for v in report.violations}


def test_contract_written_before_roles_still_loads(tmp_path: Path) -> None:
    old = {"columns": {"x": {"kind": "numeric", "nullable": False, "min": -10.0, "max": 10.0, "categories": None},
                       "when": {"kind": "datetime", "nullable": False, "min": None, "max": None, "categories": None},
                       "y": {"kind": "categorical", "nullable": False, "min": None, "max": None,
                             "categories": ["0", "1"]}},
           "target": "y", "min_rows": 3, "allow_extra_columns": False, "max_duplicate_share": 0.05,
           "min_target_classes": 2}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    contract = DataContract.from_file(path)
    assert contract.column_roles() == {"x": "numeric", "when": "datetime", "y": "target"}
    assert contract.task_type == "binary" and contract.time_column == "when"  # named like a time
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "when": ["2024-01-01", "2024-01-02", "2024-01-03"], "y": [0, 1, 0]})
    assert check_frame(frame, contract).passed
    again = DataContract.from_file(contract.to_file(tmp_path / "new.json"))
    assert again.column_roles() == contract.column_roles() and again.task_type == "binary"


def test_violations_carry_sample_rows_and_values() -> None:
    from palmerpenguins import load_penguins

    frame = load_penguins()
    contract = DataContract.infer(frame, target="species", min_rows=50)
    bad = frame.copy()
    bad.loc[5, "island"] = "Atlantis"
    bad.loc[9, "body_mass_g"] = 1e9
    report = check_frame(bad, contract, dataset="penguins.csv")
    by_check = {v.check: v for v in report.violations}
    assert by_check["categories"].rows == [5] and by_check["categories"].values == ["Atlantis"]
    assert "Atlantis" in by_check["categories"].message
    assert by_check["range"].rows == [9] and "row 9" in by_check["range"].message


def test_old_contract_with_a_closed_list_of_dates_is_upgraded(tmp_path: Path) -> None:
    """Contracts inferred before roles froze date strings as categories: loading one now makes it a datetime."""
    frame = _macro_csv(tmp_path)
    early, later = frame.iloc[:150], frame.iloc[150:]
    legacy = DataContract.infer(early, target="realgdp", min_rows=10, range_margin=2.0).model_dump(
        mode="json", include={"columns", "target", "min_rows", "allow_extra_columns", "max_duplicate_share",
                              "min_target_classes"})
    legacy["columns"]["date"] = {"kind": "categorical", "nullable": False, "categories": sorted(early["date"])}
    for spec in legacy["columns"].values():
        spec.pop("role", None)
    path = tmp_path / "legacy.json"
    path.write_text(json.dumps(legacy))
    contract = DataContract.from_file(path)
    assert contract.columns["date"].kind == "datetime" and contract.columns["date"].categories is None
    assert contract.time_column == "date"
    assert check_frame(later, contract).passed


def test_float_class_labels_match_their_category_list() -> None:
    frame = pd.DataFrame({"x": np.arange(40, dtype=float), "y": [0.0, 1.0] * 20})
    contract = DataContract.infer(frame, target="y", min_rows=10)
    assert contract.columns["y"].categories == ["0", "1"] and check_frame(frame, contract).passed
    assert "categories" in {v.check for v in check_frame(frame.assign(y=[0.0, 2.0] * 20), contract).violations}


def test_data_contract_infer_edit_save_load(prefect_server: str) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": ["a", "b", "a"], "y": [0, 1, 0]})
    contract = DataContract.infer(frame, target="y", min_rows=3)
    assert contract.columns["x"].kind == "numeric"
    assert contract.columns["c"].categories == ["a", "b"]
    assert contract.columns["y"].categories == ["0", "1"]
    contract.columns["c"].categories.append("z")
    contract.save("roundtrip-contract", overwrite=True)
    loaded = DataContract.load("roundtrip-contract")
    assert loaded.columns["c"].categories == ["a", "b", "z"]
    assert loaded.columns["x"].min < 1.0 < 3.0 < loaded.columns["x"].max


def test_contract_infer_rejects_missing_target() -> None:
    with pytest.raises(ValueError, match="target column 'nope'"):
        DataContract.infer(pd.DataFrame({"x": [1]}), target="nope")
