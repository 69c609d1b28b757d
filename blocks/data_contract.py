"""Data contract block: what a training dataset must look like."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from prefect.blocks.core import Block
from pydantic import BaseModel, Field

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

ColumnKind = Literal["numeric", "integer", "categorical", "boolean", "datetime"]


class ColumnSpec(BaseModel):
    """What one column must hold."""

    kind: ColumnKind = Field(..., description="numeric, integer, categorical, boolean or datetime.")
    nullable: bool = Field(default=False, description="Whether missing values are allowed.")
    min: float | None = Field(default=None, description="Smallest allowed value (numeric columns).")
    max: float | None = Field(default=None, description="Largest allowed value (numeric columns).")
    categories: list[str] | None = Field(default=None, description="Allowed values (categorical columns).")


class DataContract(Block):
    """Expected columns, types, ranges and categories of a dataset, plus its target.

    Infer one from a reference frame with :meth:`infer`, edit it, save it.

    Attributes:
        columns: Column name to its :class:`ColumnSpec`.
        target: Target column.
        min_rows: Fewest rows a dataset may have.
        allow_extra_columns: Whether columns not in ``columns`` are allowed.
        max_duplicate_share: Largest allowed share of duplicated rows.
        min_target_classes: Fewest distinct target values (2 for a classifier, 0 to skip).

    Examples:
        >>> import pandas as pd
        >>> from blocks.data_contract import DataContract
        >>> frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
        >>> contract = DataContract.infer(frame, target="y", min_rows=3)
        >>> contract.columns["x"].kind
        'numeric'
        >>> contract.save("churn-contract")  # doctest: +SKIP
        >>> DataContract.load("churn-contract")  # doctest: +SKIP
    """

    _block_type_name = "Data Contract"
    _block_type_slug = "mlops-data-contract"
    _documentation_url = "https://docs.prefect.io/v3/develop/blocks"  # type: ignore[assignment]

    columns: dict[str, ColumnSpec] = Field(..., description="Column name -> what it must hold.")
    target: str = Field(..., description="Target column.")
    min_rows: int = Field(default=100, description="Fewest rows a dataset may have.")
    allow_extra_columns: bool = Field(default=False, description="Allow columns the contract does not list.")
    max_duplicate_share: float = Field(default=0.05, description="Largest allowed share of duplicated rows.")
    min_target_classes: int = Field(
        default=2, description="Fewest distinct target values (2 for a classifier, 0 to skip the check)."
    )

    @classmethod
    def infer(
        cls,
        frame: pd.DataFrame,
        target: str,
        min_rows: int = 100,
        range_margin: float = 1.0,
        classification: bool = True,
    ) -> DataContract:
        """Infer a contract from a reference frame, to be reviewed and edited.

        Args:
            frame: Reference data.
            target: Target column; must be in ``frame``.
            min_rows: Fewest rows future datasets may have.
            range_margin: Widen each numeric range by this share of its span on both sides,
                so that ordinary drift is not a contract violation.
            classification: Whether the target is a class label.

        Returns:
            A contract that ``frame`` satisfies.

        Raises:
            ValueError: If ``target`` is not a column of ``frame``.
        """
        import pandas as pd

        if target not in frame.columns:
            raise ValueError(f"Cannot infer a data contract: target column {target!r} is not in {list(frame.columns)}")
        specs: dict[str, ColumnSpec] = {}
        for name in frame.columns:
            series = frame[name]
            nullable = bool(series.isna().any())
            if pd.api.types.is_bool_dtype(series):
                specs[name] = ColumnSpec(kind="boolean", nullable=nullable)
            elif pd.api.types.is_datetime64_any_dtype(series):
                specs[name] = ColumnSpec(kind="datetime", nullable=nullable)
            elif pd.api.types.is_numeric_dtype(series):
                low, high = float(series.min()), float(series.max())
                span = (high - low) or abs(high) or 1.0
                kind: ColumnKind = "integer" if pd.api.types.is_integer_dtype(series) else "numeric"
                if name == target and classification:
                    specs[name] = ColumnSpec(kind="categorical", categories=sorted(map(str, series.unique())))
                    continue
                specs[name] = ColumnSpec(
                    kind=kind, nullable=nullable, min=low - range_margin * span, max=high + range_margin * span
                )
            else:
                cats = sorted(str(v) for v in series.dropna().unique())
                specs[name] = ColumnSpec(kind="categorical", nullable=nullable, categories=cats)
        return cls(
            columns=specs,
            target=target,
            min_rows=min_rows,
            min_target_classes=2 if classification else 0,
        )

    def to_file(self, path: str | Path) -> Path:
        """Write the contract as JSON (for the embedded set-up, which has no block store).

        Args:
            path: File to write.

        Returns:
            The path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = self.model_dump(mode="json", include={"columns", "target", "min_rows", "allow_extra_columns",
                                                        "max_duplicate_share", "min_target_classes"})
        path.write_text(json.dumps(payload, indent=2, sort_keys=True))
        return path

    @classmethod
    def from_file(cls, path: str | Path) -> DataContract:
        """Read a contract written by :meth:`to_file`.

        Args:
            path: JSON file.

        Returns:
            The contract.
        """
        return cls.model_validate(json.loads(Path(path).read_text()))
