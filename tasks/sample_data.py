"""A deterministic, seedable generator of a realistic tabular problem (customer churn).

Numeric and categorical features, a sensitive attribute (``gender``), timestamps
(``event_time``), a binary target (``churned``) and a regression variant (target
``monthly_spend``). Later batches can carry controlled covariate drift (feature
distributions move) and concept drift (the relation between features and target moves).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from prefect import task

from tasks.logs import run_logger

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

CLASSIFICATION_TARGET = "churned"
REGRESSION_TARGET = "monthly_spend"
TIME_COLUMN = "event_time"
SENSITIVE_COLUMN = "gender"
#: Columns whose distribution moves under covariate drift.
DRIFTING_COLUMNS = ("monthly_charges", "usage_gb", "support_calls", "contract")


def make_customer_frame(
    n_rows: int = 5000,
    seed: int = 0,
    day: int = 0,
    covariate_drift: float = 0.0,
    concept_drift: float = 0.0,
    task_type: Literal["classification", "regression"] = "classification",
    start: str = "2026-01-01",
) -> pd.DataFrame:
    """Generate one batch of customer records.

    Args:
        n_rows: Number of rows.
        seed: Random seed; the same arguments always give the same frame.
        day: Day offset of the batch (timestamps fall on that day).
        covariate_drift: 0 = reference distribution; 1 = strong shift of
            ``monthly_charges``, ``usage_gb``, ``support_calls`` and the contract mix.
        concept_drift: 0 = reference relation; 1 = the effect of support calls and
            charges on the target changes markedly.
        task_type: ``classification`` (target ``churned``) or ``regression``
            (target ``monthly_spend``).
        start: Date of day 0.

    Returns:
        A frame with 10 feature columns, ``event_time`` and the target.

    Examples:
        >>> frame = make_customer_frame(n_rows=100, seed=1)
        >>> frame.shape
        (100, 12)
        >>> sorted(frame["churned"].unique().tolist())
        [0, 1]
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng([seed, day])
    d = float(covariate_drift)
    tenure = rng.gamma(2.0, 12.0, n_rows).clip(0, 120).round(1)
    charges = rng.normal(70 + 25 * d, 20 + 5 * d, n_rows).clip(10, 250).round(2)
    usage = rng.lognormal(3.0 + 0.5 * d, 0.6, n_rows).clip(0, 2000).round(2)
    calls = rng.poisson(1.5 + 2.0 * d, n_rows)
    age = rng.integers(18, 85, n_rows)
    contract_p = np.array([0.5 + 0.3 * min(d, 1.0), 0.3 - 0.15 * min(d, 1.0), 0.2 - 0.15 * min(d, 1.0)])
    contract = rng.choice(["month-to-month", "one-year", "two-year"], n_rows, p=contract_p / contract_p.sum())
    region = rng.choice(["north", "south", "east", "west"], n_rows, p=[0.3, 0.25, 0.25, 0.2])
    payment = rng.choice(["card", "bank-transfer", "electronic-check", "mailed-check"], n_rows)
    gender = rng.choice(["female", "male"], n_rows)
    senior = (age >= 65).astype(int)
    seconds = rng.integers(0, 86_400, n_rows)
    event_time = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(day, unit="D") + pd.to_timedelta(seconds, unit="s")

    c = float(concept_drift)
    logit = (
        -1.2
        - 0.045 * tenure
        + (0.025 + 0.02 * c) * (charges - 70)
        + (0.45 - 0.8 * c) * calls
        + 0.002 * (usage - 20)
        + np.select([contract == "month-to-month", contract == "one-year"], [1.1, 0.0], -1.0)
        + 0.3 * (payment == "electronic-check")
        + 0.25 * senior
    )
    frame = pd.DataFrame(
        {
            "tenure_months": tenure,
            "monthly_charges": charges,
            "usage_gb": usage,
            "support_calls": calls.astype("int64"),
            "age": age.astype("int64"),
            "senior": senior.astype("int64"),
            "contract": contract,
            "region": region,
            "payment_method": payment,
            SENSITIVE_COLUMN: gender,
            TIME_COLUMN: event_time,
        }
    )
    if task_type == "regression":
        spend = charges * (1 + 0.004 * usage ** 0.5) + 3 * calls * (1 + c) + rng.normal(0, 5, n_rows)
        frame[REGRESSION_TARGET] = spend.round(2)
    else:
        frame[CLASSIFICATION_TARGET] = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype("int64")
    return frame.sort_values(TIME_COLUMN, kind="stable").reset_index(drop=True)


def read_frame(path: str | Path) -> pd.DataFrame:
    """Read a CSV, Parquet or JSON Lines file (an alias of :func:`tasks.datasets.read_dataset`).

    Args:
        path: The file; the content decides its format when the suffix lies.

    Returns:
        The frame.

    Raises:
        DataVersioningError: If the file is missing, empty or unreadable (naming the file).

    Examples:
        >>> read_frame("data/customers.csv")  # doctest: +SKIP
    """
    from tasks.datasets import read_dataset

    return read_dataset(path)


@task(name="generate-sample-batch")
def generate_sample_batch(
    output_path: str,
    n_rows: int = 5000,
    seed: int = 0,
    day: int = 0,
    covariate_drift: float = 0.0,
    concept_drift: float = 0.0,
    task_type: Literal["classification", "regression"] = "classification",
) -> str:
    """Write one sample batch to a Parquet (or CSV) file.

    Args:
        output_path: File to write; ``.csv`` writes CSV, anything else Parquet.
        n_rows: Number of rows.
        seed: Random seed.
        day: Day offset of the batch.
        covariate_drift: Strength of the covariate shift (0-1+).
        concept_drift: Strength of the concept shift (0-1+).
        task_type: ``classification`` or ``regression``.

    Returns:
        The path written.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def make_day(day: int) -> str:
        ...     return generate_sample_batch(f"/tmp/day{day}.parquet", day=day, covariate_drift=0.1 * day)
    """
    logger = run_logger()
    frame = make_customer_frame(n_rows, seed, day, covariate_drift, concept_drift, task_type)
    path = Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    logger.info("Wrote %d sample rows (day %d, drift %.2f/%.2f) to %s", n_rows, day, covariate_drift,
                concept_drift, path)
    return str(path)
