"""Data quality of a current window against the reference, over all rows (no sampling).

Column typing shared with the drift report: which columns are numbers, which are categories,
which read as identifiers; then missing values, values outside the reference range and
categories the reference never had, with the tolerances of
:class:`blocks.monitoring_policy.MonitoringPolicy`. Plain pandas/numpy: these checks are cheap
and count every row, whatever the drift tests sample.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blocks.monitoring_policy import MonitoringPolicy
from tasks.exceptions import MonitoringError

if TYPE_CHECKING:
    import pandas as pd

#: Integer columns with at most this many distinct reference values are treated as categorical.
_MAX_INT_CATEGORIES = 5
#: A text column with more distinct reference values than this, and more than half of its rows distinct,
#: reads as an identifier (no role recorded): a drift test on it says nothing.
_MAX_IDENTIFIER_LIKE = 100


def identifier_like(series: pd.Series) -> bool:
    """Tell whether a text column barely repeats (ids, free text): no drift test means anything on it."""
    values = series.dropna()
    distinct = values.nunique()
    return distinct > _MAX_IDENTIFIER_LIKE and distinct > 0.5 * len(values)



def column_kinds(reference: pd.DataFrame, columns: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Split columns into numerical, categorical and unsupported (datetimes, ...) by reference dtype."""
    import pandas as pd
    from pandas.api import types

    numerical: list[str] = []
    categorical: list[str] = []
    unsupported: list[str] = []
    for col in columns:
        series = reference[col]
        if (types.is_bool_dtype(series) or isinstance(series.dtype, pd.CategoricalDtype)
                or types.is_object_dtype(series) or types.is_string_dtype(series)):
            categorical.append(col)
        elif types.is_integer_dtype(series) and series.nunique() <= _MAX_INT_CATEGORIES:
            categorical.append(col)
        elif types.is_numeric_dtype(series) and not types.is_complex_dtype(series):
            numerical.append(col)
        else:
            unsupported.append(col)
    return numerical, categorical, unsupported



def check_numeric_types(current: pd.DataFrame, numerical: list[str]) -> None:
    """Raise MonitoringError naming the columns that are numeric in the reference but not in ``current``."""
    from pandas.api import types

    wrong = [f"{c} ({current[c].dtype})" for c in numerical
             if not (types.is_numeric_dtype(current[c]) and not types.is_bool_dtype(current[c]))
             and not current[c].isna().all()]
    if wrong:
        raise MonitoringError(f"Column(s) {wrong} are numeric in the reference but not in the current window: "
                              "fix the writer of the current data (e.g. numbers logged as strings).")



def check_data_quality(reference: pd.DataFrame, current: pd.DataFrame, numerical: list[str],
                       categorical: list[str], policy: MonitoringPolicy
                       ) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Compare data quality of the current window with the reference, over all rows.

    Args:
        reference: Reference rows.
        current: Current rows.
        numerical: Numerical columns (range check).
        categorical: Categorical columns (unseen-category check).
        policy: Tolerances.

    Returns:
        Human-readable issues, and per-column figures (missing shares, reference range,
        out-of-range share, unseen categories).

    Examples:
        >>> import pandas as pd
        >>> ref, cur = pd.DataFrame({"x": [1.0, 2.0]}), pd.DataFrame({"x": [1.5, 9.0]})
        >>> check_data_quality(ref, cur, ["x"], [], MonitoringPolicy())[0]  # doctest: +ELLIPSIS
        ["column 'x': 50.0% of values outside the reference range [1, 2]..."]
    """
    import numpy as np

    issues: list[str] = []
    stats: dict[str, dict[str, Any]] = {}
    for col in numerical + categorical:
        cur_values = current[col]
        cur_missing = float(cur_values.isna().mean()) if len(cur_values) else 0.0
        ref_missing = float(reference[col].isna().mean()) if len(reference) else 0.0
        non_null = int(len(cur_values) - cur_values.isna().sum())
        entry: dict[str, Any] = {"missing_share": cur_missing, "reference_missing_share": ref_missing}
        stats[col] = entry
        if ref_missing >= 1.0:
            issues.append(f"column '{col}': every value is missing in the reference")
            continue
        if non_null == 0:
            issues.append(f"column '{col}': every value is missing in the current window")
            continue
        if cur_missing - ref_missing > policy.missing_share_tolerance:
            issues.append(f"column '{col}': {cur_missing:.1%} missing values vs {ref_missing:.1%} in the reference "
                          f"(tolerance +{policy.missing_share_tolerance:.1%})")
        if col in numerical:
            ref_arr = reference[col].to_numpy(dtype="float64", na_value=np.nan)
            lo, hi = float(np.nanmin(ref_arr)), float(np.nanmax(ref_arr))
            cur_arr = cur_values.to_numpy(dtype="float64", na_value=np.nan)
            outside = int(np.count_nonzero((cur_arr < lo) | (cur_arr > hi)))
            share = outside / non_null
            entry.update({"reference_min": lo, "reference_max": hi, "out_of_range_share": share})
            if share > policy.out_of_range_tolerance:
                issues.append(f"column '{col}': {share:.1%} of values outside the reference range "
                              f"[{lo:g}, {hi:g}] (tolerance {policy.out_of_range_tolerance:.1%})")
        else:
            known = set(reference[col].dropna().unique().tolist())
            counts = cur_values.value_counts(dropna=True)
            unseen = counts[~counts.index.isin(list(known))]
            share = float(unseen.sum()) / non_null
            entry.update({"reference_categories": len(known), "new_category_share": share,
                          "new_categories": [json_scalar(v) for v in unseen.index[:20].tolist()]})
            if share > policy.new_category_tolerance:
                shown = ", ".join(repr(json_scalar(v)) for v in unseen.index[:5].tolist())
                more = f" and {len(unseen) - 5} more" if len(unseen) > 5 else ""
                issues.append(f"column '{col}': {len(unseen)} categor{'y' if len(unseen) == 1 else 'ies'} unseen in "
                              f"the reference ({shown}{more}) in {share:.1%} of rows "
                              f"(tolerance {policy.new_category_tolerance:.1%})")
    return issues, stats


def json_scalar(value: Any) -> Any:
    """Return a JSON-friendly scalar."""
    if hasattr(value, "item"):
        value = value.item()
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)

