"""Validate a dataset against its data contract, listing every violation."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from pydantic import BaseModel

from blocks.data_contract import MIN_DATETIME_SHARE, ColumnSpec, DataContract, label_text, parse_datetime
from tasks.datasets import read_dataset, storage_error
from tasks.exceptions import DataValidationError, DataVersioningError
from tasks.logs import run_logger
from tasks.system import atomic_path, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


class Violation(BaseModel):
    """One broken rule of the contract, with sample rows and values that break it."""

    check: str
    column: str | None = None
    message: str
    rows: list[int] = []
    values: list[str] = []


class ValidationReport(BaseModel):
    """The outcome of validating one dataset: every violation, not just the first."""

    dataset: str
    rows: int
    columns: int
    violations: list[Violation]
    md5: str | None = None

    @property
    def passed(self) -> bool:
        """Whether the dataset meets the contract."""
        return not self.violations

    def raise_for_violations(self, where: str = "") -> None:
        """Raise :class:`DataValidationError` listing every violation, if there are any.

        Args:
            where: A sentence appended to the message (e.g. where the rejected data is kept).

        Raises:
            DataValidationError: If the dataset broke its contract.
        """
        if self.violations:
            lines = [f"  - [{v.check}] {v.message}" for v in self.violations]
            raise DataValidationError(
                f"Dataset {self.dataset} broke its data contract ({len(lines)} violation(s)); nothing was "
                "trained or promoted. Fix the data (or update the contract if the change is intended) and rerun."
                + (f" {where}" if where else "") + "\n" + "\n".join(lines),
                [v.message for v in self.violations],
            )


_SAMPLE = 5


def _sample(mask: Any, series: pd.Series) -> tuple[list[int], list[str]]:
    """Return up to five row numbers (0-based data rows) and their values where ``mask`` holds."""
    import numpy as np

    positions = np.flatnonzero(np.asarray(mask))[:_SAMPLE]
    return [int(p) for p in positions], [str(series.iloc[p]) for p in positions]


def _where(rows: list[int], values: list[str]) -> str:
    pairs = ", ".join(f"row {r}: {v!r}" for r, v in zip(rows, values, strict=False))
    return f" (e.g. {pairs})" if pairs else ""


def _kind_ok(series: pd.Series, kind: str) -> bool:
    import pandas as pd
    if kind in {"numeric", "integer"}:
        return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    if kind == "boolean":
        return pd.api.types.is_bool_dtype(series) or set(series.dropna().unique()) <= {0, 1}
    return True  # categorical, identifier, text: anything reads as a label; datetime: parsed below


def _check_column(name: str, spec: ColumnSpec, series: pd.Series, add: Callable[..., None]) -> None:
    """Check one column against its spec (the per-kind rules of :func:`check_frame`)."""
    import numpy as np
    import pandas as pd

    if not _kind_ok(series, spec.kind):
        bad = pd.to_numeric(series, errors="coerce").isna() & series.notna()
        rows, values = _sample(bad, series)
        add("dtype", name, f"column {name!r} should be {spec.kind} but has dtype {series.dtype}"
            + _where(rows, values), rows, values)
        return
    nulls = series.isna()
    if spec.kind == "datetime":
        parsed = parse_datetime(series)
        unparsed = parsed.isna() & series.notna()
        present = int(series.notna().sum())
        if present and (share := float(unparsed.sum()) / present) > 1 - MIN_DATETIME_SHARE:
            rows, values = _sample(unparsed, series)
            add("datetime", name, f"column {name!r} should hold dates but {int(unparsed.sum())} value(s) "
                f"({share:.1%}) do not parse as dates" + _where(rows, values), rows, values)
        nulls = parsed.isna()
    if int(nulls.sum()) and not spec.nullable:
        rows, values = _sample(nulls, series)
        add("nan", name, f"column {name!r} has {int(nulls.sum())} missing (NaN/null/NaT) value(s) at rows {rows}"
            "; fill or drop them, or mark the column nullable in the contract", rows, values)
    if spec.kind in {"numeric", "integer"}:
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        infinite = np.isinf(values)
        if infinite.any():
            rows, vals = _sample(infinite, series)
            add("inf", name, f"column {name!r} has {int(infinite.sum())} infinite value(s) at rows {rows}", rows, vals)
        finite = np.where(np.isfinite(values), values, np.nan)
        with np.errstate(invalid="ignore"):
            for bound, mask, word in ((spec.min, finite < (spec.min if spec.min is not None else 0), "below"),
                                      (spec.max, finite > (spec.max if spec.max is not None else 0), "above")):
                if bound is not None and mask.any():
                    rows, vals = _sample(mask, series)
                    add("range", name, f"column {name!r} has {int(mask.sum())} value(s) {word} {bound:g}"
                        + _where(rows, vals), rows, vals)
    elif spec.kind == "categorical" and spec.categories is not None:
        text = label_text(series)  # 1.0 and 1 are both "1", as in the category list
        unseen_mask = series.notna() & ~text.isin(set(spec.categories))
        if unseen_mask.any():
            unseen = sorted(set(text[unseen_mask]))
            rows, vals = _sample(unseen_mask, series)
            add("categories", name, f"column {name!r} has unseen categories {unseen[:10]}"
                f"{' ...' if len(unseen) > 10 else ''} at rows {rows}", rows, vals)


def check_frame(frame: pd.DataFrame, contract: DataContract, dataset: str = "<frame>") -> ValidationReport:
    """Check a frame against a contract without Prefect (the logic of :func:`validate_dataset`).

    Args:
        frame: The data.
        contract: The contract.
        dataset: Name used in messages (the user's file).

    Returns:
        A report listing every violation, each with sample rows and values.
    """
    found: list[Violation] = []

    def add(check: str, column: str | None, message: str, rows: list[int] | None = None,
            values: list[str] | None = None) -> None:
        found.append(Violation(check=check, column=column, message=message, rows=rows or [], values=values or []))

    rows = len(frame)
    if rows == 0:
        add("empty", None, "the dataset has no rows")
    elif rows < contract.min_rows:
        add("min_rows", None, f"{rows} rows, the contract needs at least {contract.min_rows}")
    if contract.target not in frame.columns:
        add("missing_target", contract.target, f"target column {contract.target!r} is missing "
            f"(columns: {', '.join(map(str, frame.columns[:20]))})")
    missing = [c for c in contract.columns if c not in frame.columns and c != contract.target]
    if missing:
        add("missing_columns", ",".join(missing), f"missing column(s): {', '.join(missing)}")
    extra = [c for c in frame.columns if c not in contract.columns]
    if extra and not contract.allow_extra_columns:
        add("extra_columns", ",".join(map(str, extra)), f"unexpected column(s): {', '.join(map(str, extra))}")

    for name, spec in contract.columns.items():
        if name in frame.columns and rows:
            _check_column(name, spec, frame[name], add)

    if contract.target in frame.columns and rows and contract.min_target_classes and contract.task_type != "regression":
        classes = frame[contract.target].nunique(dropna=True)
        if classes < contract.min_target_classes:
            add("target_classes", contract.target,
                f"target {contract.target!r} has {classes} class(es), at least {contract.min_target_classes} needed")
    if rows:
        duplicated = frame.duplicated()
        share = float(duplicated.mean())
        if share > contract.max_duplicate_share:
            positions = [int(p) for p in duplicated.to_numpy().nonzero()[0][:_SAMPLE]]
            add("duplicates", None, f"{share:.1%} of rows are duplicates (allowed {contract.max_duplicate_share:.1%}), "
                f"e.g. rows {positions}", positions)
    return ValidationReport(dataset=dataset, rows=rows, columns=frame.shape[1], violations=found)


@task(name="validate-dataset")
def validate_dataset(dataset_file: str, contract: DataContract, name: str | None = None) -> ValidationReport:
    """Validate a dataset file against a data contract.

    Checks: empty frame, too few rows, missing target, missing / extra columns, dtypes,
    dates that do not parse, NaN / NaT and inf, out-of-range values, unseen categories,
    single-class classification target, duplicate share. Each violation carries sample rows and values.

    Args:
        dataset_file: Local CSV / Parquet / JSON Lines file.
        contract: The data contract.
        name: What to call the data in messages (the user's file); default the file name.

    Returns:
        A report listing every violation; ``report.passed`` tells the verdict.

    Raises:
        DataValidationError: If the file cannot be read at all.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def check(path: str) -> bool:
        ...     report = validate_dataset(path, DataContract.load("churn-contract"))
        ...     report.raise_for_violations()
        ...     return report.passed
    """
    logger = run_logger()
    label = name or Path(dataset_file).name
    try:
        frame = read_dataset(dataset_file)
    except DataVersioningError as exc:  # an unreadable file is a violation too
        raise DataValidationError(f"Cannot validate {label}: {exc}", [str(exc)]) from exc
    report = check_frame(frame, contract, dataset=label)
    if report.passed:
        logger.info("Dataset %s passed its contract (%d rows)", label, report.rows)
    else:
        logger.warning("Dataset %s: %d violation(s)", label, len(report.violations))
    return report


@task(name="resolve-data-contract")
def resolve_data_contract(dataset_file: str, contract_path: str, target: str, classification: bool | None = None,
                          min_rows: int = 100, task_type: str | None = None, name: str | None = None) -> DataContract:
    """Return the model's stored data contract, inferring one from this data the first time.

    The first dataset of a model defines its contract: column roles, the time column, the
    target's task type, ranges widened by their span so that ordinary drift is not a violation.
    It is stored only if that dataset passes it: a first dataset with no target, too few rows,
    one class or many duplicates defines nothing (a minimal contract is returned, which
    validation then reports on). Edit the JSON file, or pass a saved ``DataContract``
    block to the flow, to change it.

    Args:
        dataset_file: Local dataset file.
        contract_path: JSON file of the contract.
        target: Target column.
        classification: Deprecated: False means a regression target (use ``task_type``).
        min_rows: Fewest rows for an inferred contract.
        task_type: ``binary``, ``multiclass`` or ``regression``; None infers it from the target.
        name: What to call the data in messages (the user's file).

    Returns:
        The contract.

    Raises:
        DataValidationError: If the file cannot be read.
        DataVersioningError: If the contract cannot be written (read-only or full state folder).

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def contract(path: str) -> list[str]:
        ...     return list(resolve_data_contract(path, "/tmp/churn.json", "churned").columns)
    """
    path = Path(contract_path)
    if path.is_file():
        return DataContract.from_file(path)
    label = name or Path(dataset_file).name
    try:
        frame = read_dataset(dataset_file)
    except DataVersioningError as exc:
        raise DataValidationError(f"Cannot infer a data contract from {label}: {exc}", [str(exc)]) from exc
    if target not in frame.columns or frame.empty or frame[target].nunique() < 2:
        # This data cannot define a contract: return a minimal one (not stored) that validation
        # then fails on (missing target, no rows, one class), so the data is rejected like any other.
        return DataContract(columns={}, target=target, min_rows=min_rows, allow_extra_columns=True)
    contract = DataContract.infer(frame, target=target, min_rows=min_rows, task_type=task_type,
                                  classification=classification)
    if check_frame(frame, contract, dataset=label).passed:
        try:
            contract.to_file(path)
        except OSError as exc:
            raise storage_error(exc, path, "store the inferred data contract") from exc
        run_logger().info("Inferred a %s data contract from %s (time column %s) and stored it at %s",
                          contract.task_type, label, contract.time_column, path)
    return contract


@task(name="reject-dataset")
def reject_dataset(dataset_file: str, report: ValidationReport, rejected_dir: str, source: str | None = None,
                   md5: str | None = None) -> str:
    """Keep data that failed validation for inspection: ``<rejected_dir>/<md5>/`` with ``violations.json``.

    Args:
        dataset_file: The staged file that failed (it never became the data repo's HEAD); it is moved.
        report: Its validation report.
        rejected_dir: Root of rejected data (``<state>/rejected``).
        source: The user's original file, recorded in the JSON.
        md5: Content hash of ``dataset_file`` (computed when None).

    Returns:
        The folder holding the data and ``violations.json``.

    Raises:
        DataVersioningError: If the folder cannot be written.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def keep(path: str, report: ValidationReport) -> str:
        ...     return reject_dataset(path, report, "/tmp/rejected")
    """
    import datetime as dt
    import hashlib
    import shutil

    staged = Path(dataset_file)
    if md5 is None:
        digest = hashlib.md5()
        with open(staged, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        md5 = digest.hexdigest()
    folder = Path(rejected_dir) / md5
    record = {"source": source or str(staged), "md5": md5, "rejected_at": dt.datetime.now(dt.UTC).isoformat(),
              "dataset": report.dataset, "rows": report.rows, "columns": report.columns,
              "violations": [v.model_dump(mode="json") for v in report.violations]}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        kept = folder / f"data{staged.suffix}"
        if not kept.is_file():  # move: a rejected file stays in one place only
            with atomic_path(kept) as partial:
                shutil.move(staged, partial)
        else:
            staged.unlink(missing_ok=True)
        atomic_write_text(folder / "violations.json", json.dumps(record, indent=2, default=str))
    except OSError as exc:
        raise storage_error(exc, folder, "keep the rejected dataset") from exc
    run_logger().warning("Rejected data %s (md5 %s) kept at %s", source or staged, md5, folder)
    return str(folder)
