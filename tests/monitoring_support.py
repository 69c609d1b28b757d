"""Real datasets, real scikit-learn models and real inference-log windows shared by the monitoring tests."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.inference_log import InferenceLogWriter, attach_ground_truth
from tasks.monitoring_data import export_inference_window

NOW = dt.datetime.now(dt.UTC)


def iris_frame() -> pd.DataFrame:
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    frame = data.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["species"] = np.asarray(data.target_names)[frame.pop("target")]  # string labels
    return frame


def diabetes_frame() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True).frame  # 'target' is a continuous number


def penguins_frame() -> pd.DataFrame:
    from palmerpenguins import load_penguins

    return load_penguins()  # string labels, categoricals, missing values (sex is missing on 11 rows)


def macro_frame() -> pd.DataFrame:
    import statsmodels.api as sm

    frame = sm.datasets.macrodata.load_pandas().data
    frame["date"] = [f"{int(y)}-{3 * int(q) - 2:02d}-01" for y, q in zip(frame["year"], frame["quarter"], strict=True)]
    return frame[["date", "realgdp", "realcons", "realinv", "unemp", "infl"]]


def fit(frame: pd.DataFrame, features: list[str], target: str, regression: bool = False) -> Any:
    """A real scikit-learn pipeline: imputation, scaling / one-hot, a linear model."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [c for c in features if pd.api.types.is_numeric_dtype(frame[c])]
    categorical = [c for c in features if c not in numeric]
    prep = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
         categorical)])
    model = make_pipeline(prep, LinearRegression() if regression else LogisticRegression(max_iter=2000))
    rows = frame[frame[target].notna()]
    return model.fit(rows[features], rows[target])


def log_window(log_dir: Path, model_name: str, frame: pd.DataFrame, features: list[str], predictions: Any,
               scores: Any = None, labels: pd.Series | None = None, passthrough: list[str] | None = None,
               probabilities: list[dict[str, float]] | None = None,
               arrivals: list[float] | None = None) -> list[str]:
    """Log predictions with the real writer (passthrough columns travel with the features), then labels."""
    ids = [str(uuid.uuid4()) for _ in range(len(frame))]
    logged = frame[features + (passthrough or [])].reset_index(drop=True).copy()
    now = NOW.timestamp()
    writer = InferenceLogWriter(log_dir, model_name, "1", start_thread=False)
    writer.log(ids, arrivals or [now - 600 + i * 1e-3 for i in range(len(ids))], logged, list(predictions),
               None if scores is None else list(scores), probabilities)  # the log's JSON text column
    assert writer.flush() == len(ids) and writer.dropped == 0
    if labels is not None:
        pairs = {i: v for i, v in zip(ids, labels.tolist(), strict=True) if not pd.isna(v)}
        attach_ground_truth(log_dir, model_name, pairs)
    return ids


def window(log_dir: Path, model_name: str, tmp_path: Path, **kwargs: Any) -> Any:
    start = kwargs.pop("start", (NOW - dt.timedelta(hours=1)).isoformat())
    end = kwargs.pop("end", (NOW + dt.timedelta(minutes=1)).isoformat())
    return export_inference_window.fn(str(log_dir), model_name, start, end, str(tmp_path / "window.parquet"),
                                      **kwargs)
