"""Validate a dataset against its data contract, listing every violation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task
from pydantic import BaseModel

from blocks.data_contract import DataContract
from tasks.exceptions import DataValidationError
from tasks.logs import run_logger
from tasks.sample_data import read_frame

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


class Violation(BaseModel):
    """One broken rule of the contract."""

    check: str
    column: str | None = None
    message: str


class ValidationReport(BaseModel):
    """The outcome of validating one dataset: every violation, not just the first."""

    dataset: str
    rows: int
    columns: int
    violations: list[Violation]

    @property
    def passed(self) -> bool:
        """Whether the dataset meets the contract."""
        return not self.violations

    def raise_for_violations(self) -> None:
        """Raise :class:`DataValidationError` listing every violation, if there are any.

        Raises:
            DataValidationError: If the dataset broke its contract.
        """
        if self.violations:
            lines = [f"  - [{v.check}] {v.message}" for v in self.violations]
            raise DataValidationError(
                f"Dataset {self.dataset} broke its data contract ({len(lines)} violation(s)); nothing was "
                "trained or promoted. Fix the data (or update the contract if the change is intended) and rerun:\n"
                + "\n".join(lines),
                [v.message for v in self.violations],
            )


def _kind_ok(series: pd.Series, kind: str) -> bool:
    import pandas as pd
    if kind in {"numeric", "integer"}:
        return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    if kind == "boolean":
        return pd.api.types.is_bool_dtype(series) or set(series.dropna().unique()) <= {0, 1}
    if kind == "datetime":
        return pd.api.types.is_datetime64_any_dtype(series)
    return True  # categorical: anything can be read as a label


def check_frame(frame: pd.DataFrame, contract: DataContract, dataset: str = "<frame>") -> ValidationReport:
    """Check a frame against a contract without Prefect (the logic of :func:`validate_dataset`).

    Args:
        frame: The data.
        contract: The contract.
        dataset: Name used in messages.

    Returns:
        A report listing every violation.
    """
    import numpy as np

    found: list[Violation] = []

    def add(check: str, column: str | None, message: str) -> None:
        found.append(Violation(check=check, column=column, message=message))

    rows = len(frame)
    if rows == 0:
        add("empty", None, "the dataset has no rows")
    elif rows < contract.min_rows:
        add("min_rows", None, f"{rows} rows, the contract needs at least {contract.min_rows}")
    if contract.target not in frame.columns:
        add("missing_target", contract.target, f"target column {contract.target!r} is missing")
    missing = [c for c in contract.columns if c not in frame.columns and c != contract.target]
    if missing:
        add("missing_columns", ",".join(missing), f"missing column(s): {', '.join(missing)}")
    extra = [c for c in frame.columns if c not in contract.columns]
    if extra and not contract.allow_extra_columns:
        add("extra_columns", ",".join(map(str, extra)), f"unexpected column(s): {', '.join(map(str, extra))}")

    for name, spec in contract.columns.items():
        if name not in frame.columns or rows == 0:
            continue
        series = frame[name]
        if not _kind_ok(series, spec.kind):
            add("dtype", name, f"column {name!r} should be {spec.kind} but has dtype {series.dtype}")
            continue
        nulls = int(series.isna().sum())
        if nulls and not spec.nullable:
            add("nan", name, f"column {name!r} has {nulls} missing (NaN/null) value(s)")
        if spec.kind in {"numeric", "integer"}:
            values = series.to_numpy(dtype="float64", na_value=np.nan)
            infinite = int(np.isinf(values).sum())
            if infinite:
                add("inf", name, f"column {name!r} has {infinite} infinite value(s)")
            finite = values[np.isfinite(values)]
            if spec.min is not None and finite.size and (low := int((finite < spec.min).sum())):
                add("range", name, f"column {name!r} has {low} value(s) below {spec.min:g} (min {finite.min():g})")
            if spec.max is not None and finite.size and (high := int((finite > spec.max).sum())):
                add("range", name, f"column {name!r} has {high} value(s) above {spec.max:g} (max {finite.max():g})")
        elif spec.kind == "categorical" and spec.categories is not None:
            seen = set(series.dropna().astype(str).unique())
            unseen = sorted(seen - set(spec.categories))
            if unseen:
                add("categories", name, f"column {name!r} has unseen categories {unseen[:10]}")

    if contract.target in frame.columns and rows and contract.min_target_classes:
        classes = frame[contract.target].nunique(dropna=True)
        if classes < contract.min_target_classes:
            add("target_classes", contract.target,
                f"target {contract.target!r} has {classes} class(es), at least {contract.min_target_classes} needed")
    if rows:
        share = float(frame.duplicated().mean())
        if share > contract.max_duplicate_share:
            add("duplicates", None, f"{share:.1%} of rows are duplicates (allowed {contract.max_duplicate_share:.1%})")
    return ValidationReport(dataset=dataset, rows=rows, columns=frame.shape[1], violations=found)


@task(name="validate-dataset")
def validate_dataset(dataset_file: str, contract: DataContract) -> ValidationReport:
    """Validate a dataset file against a data contract.

    Checks: empty frame, too few rows, missing target, missing / extra columns, dtypes,
    NaN and inf, out-of-range values, unseen categories, single-class target, duplicate share.

    Args:
        dataset_file: Local CSV / Parquet file.
        contract: The data contract.

    Returns:
        A report listing every violation; ``report.passed`` tells the verdict.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def check(path: str) -> bool:
        ...     report = validate_dataset(path, DataContract.load("churn-contract"))
        ...     report.raise_for_violations()
        ...     return report.passed
    """
    logger = run_logger()
    try:
        frame = read_frame(dataset_file)
    except Exception as exc:  # an unreadable file is a violation too
        raise DataValidationError(f"Cannot validate {dataset_file}: {exc}", [str(exc)]) from exc
    report = check_frame(frame, contract, dataset=Path(dataset_file).name)
    if report.passed:
        logger.info("Dataset %s passed its contract (%d rows)", dataset_file, report.rows)
    else:
        logger.warning("Dataset %s: %d violation(s)", dataset_file, len(report.violations))
    return report


@task(name="resolve-data-contract")
def resolve_data_contract(dataset_file: str, contract_path: str, target: str,
                          classification: bool = True, min_rows: int = 100) -> DataContract:
    """Return the model's stored data contract, inferring and storing one from this data the first time.

    The first dataset of a model defines its contract (ranges widened by half their
    span, so that ordinary drift is not a violation); later datasets are checked against
    it. Edit the JSON file, or pass a saved ``DataContract`` block to the flow, to change it.

    Args:
        dataset_file: Local dataset file.
        contract_path: JSON file of the contract.
        target: Target column.
        classification: Whether the target is a class label.
        min_rows: Fewest rows for an inferred contract.

    Returns:
        The contract.

    Raises:
        DataValidationError: If no contract exists yet and this first dataset cannot define one.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def contract(path: str) -> list[str]:
        ...     return list(resolve_data_contract(path, "/tmp/churn.json", "churned").columns)
    """
    path = Path(contract_path)
    if path.is_file():
        return DataContract.from_file(path)
    frame = read_frame(dataset_file)
    if target not in frame.columns or frame.empty:
        report = check_frame(frame, DataContract(columns={}, target=target, min_rows=min_rows,
                                                 allow_extra_columns=True), dataset=Path(dataset_file).name)
        report.raise_for_violations()
    contract = DataContract.infer(frame, target=target, min_rows=min_rows, classification=classification)
    contract.to_file(path)
    run_logger().info("Inferred a data contract from %s and stored it at %s", dataset_file, path)
    return contract
