"""Data contract block: what a training dataset must look like, and the role of each column.

Roles are inferred once, from the model's first dataset, and stored with the contract:
``numeric``, ``categorical`` (low cardinality: a closed list of values), ``boolean``,
``datetime`` (datetime dtype, or strings of which at least 95 % parse as dates), ``identifier``
(unique-ish strings or integers such as ids), ``text`` (long free text) and ``target``. The
contract also names the event-time column (:attr:`DataContract.time_column`) and the target's
task type (``binary``, ``multiclass`` or ``regression``, from :mod:`blocks.task_metrics`).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prefect.blocks.core import Block
from pydantic import BaseModel, Field, model_validator

from blocks.task_metrics import class_labels, infer_task_type, plain_label

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

ColumnKind = Literal["numeric", "integer", "categorical", "boolean", "datetime", "identifier", "text"]
ColumnRole = Literal["numeric", "categorical", "boolean", "datetime", "identifier", "text", "target"]
_ROLE_OF_KIND: dict[str, str] = {"numeric": "numeric", "integer": "numeric", "categorical": "categorical",
                                 "boolean": "boolean", "datetime": "datetime", "identifier": "identifier",
                                 "text": "text"}
#: Share of non-null values that must parse as dates for a string column to be a datetime column.
MIN_DATETIME_SHARE = 0.95
#: A string column with more distinct values than this gets no closed category list.
MAX_CATEGORIES = 100
#: Share of distinct values (of the non-null ones) from which a string or integer column is an identifier.
MIN_IDENTIFIER_SHARE = 0.9
#: Mean length (characters) and mean word count from which a string column is free text.
MIN_TEXT_LENGTH, MIN_TEXT_WORDS = 30, 4
_ID_NAME = re.compile(r"(^|[_\W])(id|uuid|guid|key)$|^id[_\W]", re.IGNORECASE)
_CAMEL_ID = re.compile(r"[a-z](Id|ID|Key|Uuid)$")  # customerId; case-sensitive, so "paid" is no id
_TIME_NAME = re.compile(r"time|date|timestamp|when|period|(^|_)ts$|(^|_)dt$|(^|_)at$", re.IGNORECASE)
_NUMBER = re.compile(r"^\s*[-+]?\d+(\.\d*)?\s*$")


def parse_datetime(series: pd.Series) -> pd.Series:
    """Parse a column as UTC datetimes: datetime dtypes as they are, strings in one or mixed formats.

    Args:
        series: A datetime column or a column of date strings.

    Returns:
        A ``datetime64[ns, UTC]`` series; values that do not parse are ``NaT``.

    Examples:
        >>> import pandas as pd
        >>> parse_datetime(pd.Series(["1959-01-01", "1959-04-01", "soon"])).isna().tolist()
        [False, False, True]
    """
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Could not infer format": the mixed-format pass below handles it
        if pd.api.types.is_datetime64_any_dtype(series):
            return pd.to_datetime(series, utc=True)
        text = series.where(series.isna(), series.astype(str))
        numbers = text.str.match(_NUMBER.pattern).fillna(False).astype(bool)
        text = text.mask(numbers)  # bare numbers are not dates (pandas would read "5" as an epoch)
        parsed = pd.to_datetime(text, errors="coerce", utc=True)  # one inferred format: fast
        retry = parsed.isna() & text.notna()
        if retry.any():
            parsed[retry] = pd.to_datetime(text[retry], errors="coerce", utc=True, format="mixed")
    return parsed


def label_text(series: pd.Series) -> pd.Series:
    """Return each value as the text a category list holds: 1.0 -> "1", True -> "True", NaN stays NaN.

    Args:
        series: A categorical column or a classification target.

    Returns:
        An object series of texts (missing values stay missing).
    """
    uniques = series.dropna().unique()
    return series.map({value: str(plain_label(value)) for value in uniques})


def _datetime_share(distinct: pd.Series) -> float:
    """Return the share of (up to 2,000 of) a column's distinct non-null values that parse as dates."""
    sample = distinct.dropna().head(2000)
    return float(parse_datetime(sample).notna().mean()) if len(sample) else 0.0


def infer_column(series: pd.Series, name: str) -> tuple[str, str]:
    """Infer the ``(kind, role)`` of one feature column.

    Args:
        series: The column.
        name: Its name (``customer_id`` hints an identifier).

    Returns:
        The storage kind (what validation checks) and the role (what training does with it).
    """
    import pandas as pd

    types = pd.api.types
    values = series.dropna()
    uniques = pd.Series(values.unique())  # one hash pass; every check below works on it or on a sample
    distinct = len(uniques)
    unique_share = distinct / len(values) if len(values) else 0.0
    named_id = bool(_ID_NAME.search(str(name)) or _CAMEL_ID.search(str(name)))
    if types.is_bool_dtype(series):
        return "boolean", "boolean"
    if types.is_datetime64_any_dtype(series):
        return "datetime", "datetime"
    if types.is_numeric_dtype(series):
        if types.is_integer_dtype(series) and len(values) >= 20 and (
                (named_id and unique_share >= MIN_IDENTIFIER_SHARE)
                or (unique_share == 1.0 and int(values.max()) - int(values.min()) + 1 == len(values))):
            return "identifier", "identifier"  # ids or row numbers: no signal, and every new one is "unseen"
        return ("integer" if types.is_integer_dtype(series) else "numeric"), "numeric"
    if len(values) and _datetime_share(uniques) >= MIN_DATETIME_SHARE:
        return "datetime", "datetime"
    text = values.head(5000).astype(str)
    if len(values) >= 20 and unique_share >= 0.5 and (
            text.str.len().mean() >= MIN_TEXT_LENGTH and text.str.split().str.len().mean() >= MIN_TEXT_WORDS):
        return "text", "text"
    if len(values) >= 20 and (unique_share >= MIN_IDENTIFIER_SHARE or (named_id and unique_share >= 0.5)):
        return "identifier", "identifier"
    return "categorical", "categorical"


def find_time_column(roles: dict[str, str]) -> str | None:
    """Return the event-time column: the (first) datetime column named like a time.

    Names like a time: time, date, timestamp, when, period, ``*_at``, ``*_ts``, ``*_dt``. Any other datetime
    column (an order date called ``ordered``, a ``signup`` day) is a feature, encoded as
    date parts: the time column is when a row happened, used for time splits and event-time windows, and is
    not given to the model.
    """
    named = [name for name, role in roles.items() if role == "datetime" and _TIME_NAME.search(name)]
    return named[0] if named else None


class ColumnSpec(BaseModel):
    """What one column must hold, and its role."""

    kind: ColumnKind = Field(..., description="numeric, integer, categorical, boolean, datetime, identifier or text.")
    role: ColumnRole | None = Field(default=None, description="numeric, categorical, boolean, datetime, identifier, "
                                                              "text or target (default: from kind).")
    nullable: bool = Field(default=False, description="Whether missing values are allowed.")
    min: float | None = Field(default=None, description="Smallest allowed value (numeric columns).")
    max: float | None = Field(default=None, description="Largest allowed value (numeric columns).")
    categories: list[str] | None = Field(default=None, description="Allowed values (categorical columns only).")

    @model_validator(mode="after")
    def _default_role(self) -> ColumnSpec:
        if self.role is None:  # contracts written before roles existed
            self.role = _ROLE_OF_KIND[self.kind]  # type: ignore[assignment]
        if self.kind in {"datetime", "identifier", "text"}:
            self.categories = None  # these never have a closed list of values
        return self


class DataContract(Block):
    """Expected columns, types, ranges and categories of a dataset, the role of each column, and its target.

    Infer one from a reference frame with :meth:`infer`, edit it, save it.

    Attributes:
        columns: Column name to its :class:`ColumnSpec`.
        target: Target column.
        task_type: The target's task type: binary, multiclass or regression.
        time_column: The event-time column (role datetime; not a model feature), or None.
        min_rows: Fewest rows a dataset may have.
        allow_extra_columns: Whether columns not in ``columns`` are allowed.
        max_duplicate_share: Largest allowed share of duplicated rows.
        min_target_classes: Fewest distinct target values of a classification target (0 to skip).

    Examples:
        >>> import pandas as pd
        >>> from blocks.data_contract import DataContract
        >>> frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "date": ["2024-01-01", "2024-01-02", "2024-01-03"],
        ...                       "y": [0, 1, 0]})
        >>> contract = DataContract.infer(frame, target="y", min_rows=3)
        >>> contract.columns["x"].kind, contract.time_column, contract.task_type
        ('numeric', 'date', 'binary')
        >>> contract.feature_roles()
        {'x': 'numeric'}
        >>> contract.save("churn-contract")  # doctest: +SKIP
        >>> contract = DataContract.load("BLOCK_NAME")  # doctest: +SKIP
    """

    _block_type_name = "Data Contract"
    _block_type_slug = "mlops-data-contract"
    _logo_url = "https://github.com/pandas-dev.png"  # type: ignore[assignment]
    _documentation_url = "https://docs.prefect.io/v3/develop/blocks"  # type: ignore[assignment]

    columns: dict[str, ColumnSpec] = Field(..., description="Column name -> what it must hold.")
    target: str = Field(..., description="Target column.")
    task_type: Literal["binary", "multiclass", "regression"] | None = Field(
        default=None, description="The target's task type (None in contracts written before task types: inferred).")
    time_column: str | None = Field(default=None, description="Event-time column for time splits and windows.")
    min_rows: int = Field(default=100, description="Fewest rows a dataset may have.")
    allow_extra_columns: bool = Field(default=False, description="Allow columns the contract does not list.")
    max_duplicate_share: float = Field(default=0.05, description="Largest allowed share of duplicated rows.")
    min_target_classes: int = Field(
        default=2, description="Fewest distinct target values of a classifier (0 to skip the check)."
    )

    @model_validator(mode="after")
    def _fill_roles(self) -> DataContract:
        if self.task_type is None:  # a contract from before roles: its date columns were closed lists
            self._upgrade_date_lists()
        spec = self.columns.get(self.target)
        if spec is not None:
            spec.role = "target"
            if self.task_type is None:  # a contract from before task types
                if spec.categories is not None:
                    self.task_type = "binary" if len(spec.categories) == 2 else "multiclass"
                elif spec.kind in {"numeric", "integer"} and not self.min_target_classes:
                    self.task_type = "regression"
        return self

    def _upgrade_date_lists(self) -> None:
        """Turn a categorical list of dates (what old contracts inferred for date strings) into a datetime column."""
        import pandas as pd

        for name, spec in self.columns.items():
            if (name != self.target and spec.kind == "categorical" and spec.categories
                    and _datetime_share(pd.Series(spec.categories)) >= MIN_DATETIME_SHARE):
                spec.kind, spec.role, spec.categories = "datetime", "datetime", None
        if self.time_column is None:
            self.time_column = find_time_column({n: str(s.role) for n, s in self.columns.items() if n != self.target})

    @property
    def is_classification(self) -> bool:
        """Whether the target is a class label (binary or multiclass)."""
        return self.task_type in {"binary", "multiclass"}

    def feature_roles(self) -> dict[str, str]:
        """Return {column: role} of the model's candidate features.

        Excludes the target, the time column and identifiers; free text stays (role ``text``) for
        the training side to encode with a real encoder or drop.

        Returns:
            Column name -> role, in contract order.
        """
        return {name: str(spec.role) for name, spec in self.columns.items()
                if name not in {self.target, self.time_column} and spec.role not in {"identifier", "target"}}

    def column_roles(self) -> dict[str, str]:
        """Return {column: role} of every column (the ``mlops.column_roles`` lineage tag)."""
        return {name: str(spec.role) for name, spec in self.columns.items()}

    @classmethod
    def infer(
        cls,
        frame: pd.DataFrame,
        target: str,
        min_rows: int = 100,
        range_margin: float = 1.0,
        task_type: str | None = None,
        classification: bool | None = None,
        time_column: str | None = None,
    ) -> DataContract:
        """Infer a contract (with column roles, time column and task type) from a reference frame.

        Args:
            frame: Reference data.
            target: Target column; must be in ``frame``.
            min_rows: Fewest rows future datasets may have.
            range_margin: Widen each numeric range by this share of its span on both sides,
                so that ordinary drift is not a contract violation.
            task_type: ``binary``, ``multiclass`` or ``regression``; None infers it from the target.
            classification: Deprecated switch kept for old callers: False means regression.
            time_column: Event-time column to use (None: found from the roles).

        Returns:
            A contract that ``frame`` satisfies.

        Raises:
            ValueError: If ``target`` (or ``time_column``) is not a column of ``frame``.
        """
        if target not in frame.columns:
            raise ValueError(f"Cannot infer a data contract: target column {target!r} is not in {list(frame.columns)}")
        if time_column is not None and time_column not in frame.columns:
            raise ValueError(f"Cannot infer a data contract: time column {time_column!r} is not in "
                             f"{list(frame.columns)}")
        task = task_type or ("regression" if classification is False else infer_task_type(frame[target]))
        if classification and task == "regression":  # an old caller insisting on class labels
            task = "binary" if frame[target].nunique() == 2 else "multiclass"
        specs: dict[str, ColumnSpec] = {}
        for name in frame.columns:
            series = frame[name]
            nullable = bool(series.isna().any())
            if name == target and task != "regression":
                specs[name] = ColumnSpec(kind="categorical", role="target", nullable=nullable,
                                         categories=[str(v) for v in class_labels(series)])
                continue
            kind, role = infer_column(series, str(name)) if name != target else ("numeric", "target")
            if name == time_column:
                kind, role = "datetime", "datetime"
            spec = ColumnSpec(kind=kind, role=role, nullable=nullable)  # type: ignore[arg-type]
            if kind in {"numeric", "integer"}:
                low, high = float(series.min()), float(series.max())
                span = (high - low) or abs(high) or 1.0
                spec.min, spec.max = low - range_margin * span, high + range_margin * span
            elif kind == "categorical":
                cats = sorted(set(label_text(series.dropna())))
                spec.categories = cats if len(cats) <= MAX_CATEGORIES else None
            specs[name] = spec
        roles = {name: str(spec.role) for name, spec in specs.items()}
        return cls(columns=specs, target=target, task_type=task, time_column=time_column or find_time_column(roles),
                   min_rows=min_rows, min_target_classes=0 if task == "regression" else 2)

    def to_file(self, path: str | Path) -> Path:
        """Write the contract as JSON (for the embedded set-up, which has no block store).

        Args:
            path: File to write.

        Returns:
            The path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload: dict[str, Any] = self.model_dump(mode="json", include={
            "columns", "target", "task_type", "time_column", "min_rows", "allow_extra_columns",
            "max_duplicate_share", "min_target_classes"})
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(payload, indent=2, sort_keys=True))
        partial.replace(path)
        return path

    @classmethod
    def from_file(cls, path: str | Path) -> DataContract:
        """Read a contract written by :meth:`to_file` (also one written before column roles existed).

        Args:
            path: JSON file.

        Returns:
            The contract.
        """
        return cls.model_validate(json.loads(Path(path).read_text()))
