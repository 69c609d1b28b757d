"""Effect sizes of drift: how far a column moved, on one scale for every column type.

A drift test's p-value says how *sure* the test is that a column moved, not how *far*: on 50,000
rows a shift of 0.03 standard deviations already gives p < 1e-6. The drift table therefore shows an
effect size beside the p-value, the Population Stability Index (PSI), chosen over a normalised
Wasserstein distance because it has one definition for numbers (ten reference-quantile bins) and
categories (one bin per category), and a scale people already read: below 0.1 stable, 0.1-0.25 a
moderate shift, above 0.25 a large one.

    PSI = sum over bins of (current share - reference share) * ln(current share / reference share)

with shares floored at ``1e-4`` so that an empty bin does not give infinity. Plain numpy/pandas,
no Evidently, imported inside the functions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

#: Name of the effect size in tables and summaries.
EFFECT_SIZE = "psi"
#: Reading of a PSI value (upper bound, words), the usual credit-scoring scale.
PSI_SCALE = ((0.1, "stable"), (0.25, "moderate shift"), (math.inf, "large shift"))
_BINS = 10
_FLOOR = 1e-4


def _binned(reference: pd.Series, current: pd.Series, categorical: bool) -> tuple[list[str], Any, Any]:
    """Bin labels and the reference / current shares per bin (missing values dropped)."""
    import numpy as np
    import pandas as pd

    ref, cur = reference.dropna(), current.dropna()
    if categorical:
        ref_text, cur_text = ref.astype(str), cur.astype(str)
        labels = sorted(set(ref_text) | set(cur_text))
        ref_share = ref_text.value_counts(normalize=True).reindex(labels, fill_value=0.0).to_numpy()
        cur_share = cur_text.value_counts(normalize=True).reindex(labels, fill_value=0.0).to_numpy()
        return labels, ref_share, cur_share
    ref_num = pd.to_numeric(ref, errors="coerce").dropna().to_numpy(dtype="float64")
    cur_num = pd.to_numeric(cur, errors="coerce").dropna().to_numpy(dtype="float64")
    edges = np.unique(np.quantile(ref_num, np.linspace(0, 1, _BINS + 1))) if len(ref_num) else np.array([0.0])
    inner = edges[1:-1]  # the outer bins reach to -inf / +inf: current values beyond the reference range count
    ref_counts = np.bincount(np.searchsorted(inner, ref_num, side="right"), minlength=len(inner) + 1)
    cur_counts = np.bincount(np.searchsorted(inner, cur_num, side="right"), minlength=len(inner) + 1)
    bounds = [-math.inf, *inner.tolist(), math.inf]
    labels = [f"{lo:.4g} .. {hi:.4g}" for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    return labels, ref_counts / max(len(ref_num), 1), cur_counts / max(len(cur_num), 1)


def psi(reference: pd.Series, current: pd.Series, categorical: bool) -> float | None:
    """Return the Population Stability Index of one column (None when either side has no values).

    Args:
        reference: Reference values.
        current: Current values.
        categorical: One bin per category (else ten reference-quantile bins).

    Returns:
        The PSI (0 = same distribution), or None.

    Examples:
        >>> import pandas as pd
        >>> psi(pd.Series(["a", "b"] * 50), pd.Series(["a", "b"] * 50), categorical=True)
        0.0
        >>> round(psi(pd.Series(["a"] * 50 + ["b"] * 50), pd.Series(["a"] * 90 + ["b"] * 10), True), 3)
        0.879
    """
    import numpy as np

    if reference.notna().sum() == 0 or current.notna().sum() == 0:
        return None
    _, ref_share, cur_share = _binned(reference, current, categorical)
    ref_share, cur_share = np.clip(ref_share, _FLOOR, None), np.clip(cur_share, _FLOOR, None)
    return round(float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share))), 6)


def value_shares(reference: pd.Series, current: pd.Series, categorical: bool) -> list[dict[str, Any]]:
    """Return the share of each value (or reference-quantile bin) in both windows, in value / bin order.

    Shares, not counts: the reference (training data) and a day of traffic differ in size.

    Examples:
        >>> import pandas as pd
        >>> value_shares(pd.Series([0, 0, 1, 1]), pd.Series([1, 1, 1, 0]), categorical=True)[0]
        {'value': '0', 'reference_share': 0.5, 'current_share': 0.25}
    """
    labels, ref_share, cur_share = _binned(reference, current, categorical)
    rows = [{"value": label, "reference_share": round(float(r), 4), "current_share": round(float(c), 4)}
            for label, r, c in zip(labels, ref_share, cur_share, strict=True)]
    return rows if not categorical else sorted(rows, key=lambda row: row["value"])


def psi_reading(value: float | None) -> str:
    """Return the words for a PSI value ("stable", "moderate shift", "large shift"; "-" for None).

    Examples:
        >>> psi_reading(0.3)
        'large shift'
    """
    if value is None:
        return "-"
    return next(words for bound, words in PSI_SCALE if value < bound)


def format_p_value(value: float | None) -> str:
    """Return a p-value or distance readable at any size: ``1.2e-233``, ``0.034``; never a bare 0.

    A p-value that underflowed to 0.0 (below about 1e-308) is shown as ``< 1e-300``.

    Examples:
        >>> format_p_value(1.2e-233), format_p_value(0.0342), format_p_value(0.0), format_p_value(None)
        ('1.2e-233', '0.034', '< 1e-300', '-')
    """
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0.0:
        return "< 1e-300"
    return f"{value:.2g}" if value >= 1e-3 else f"{value:.1e}".replace("e-0", "e-")
