"""Real datasets that ship inside installed packages (no network): the dataset matrix of the loop tests.

Each entry is what a new user would bring: a tidy table in a file, a target column, nothing else
(no policy, no training spec, no contract written by hand).

| name | source | task | what it exercises |
|---|---|---|---|
| iris | scikit-learn | multiclass | string labels (species names), CSV |
| wine | scikit-learn | multiclass | integer labels 0-2, Parquet |
| breast_cancer | scikit-learn | binary | string labels ("malignant" / "benign"), 30 numeric columns, JSON Lines |
| diabetes | scikit-learn | regression | a continuous target, Parquet |
| penguins | palmerpenguins | multiclass | string labels, missing values, categoricals, CSV |
| macrodata | statsmodels | regression | a date column (strings, as in a CSV), a time column, CSV |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class MatrixDataset:
    """One dataset of the matrix: how to load it, its target, the file format a user would hand over."""

    name: str
    target: str
    suffix: str
    task_type: str
    load: Callable[[], Any]

    def write(self, folder: Path) -> Path:
        """Write the dataset as the user's file (``<folder>/<name><suffix>``)."""
        frame = self.load()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.name}{self.suffix}"
        if self.suffix == ".csv":
            frame.to_csv(path, index=False)
        elif self.suffix == ".jsonl":
            frame.to_json(path, orient="records", lines=True)
        else:
            frame.to_parquet(path, index=False)
        return path


def _iris() -> Any:
    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    frame = bunch.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["species"] = [str(bunch.target_names[i]) for i in frame.pop("target")]
    return frame


def _wine() -> Any:
    from sklearn.datasets import load_wine

    return load_wine(as_frame=True).frame.rename(columns={"od280/od315_of_diluted_wines": "od280_od315"})


def _breast_cancer() -> Any:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns=lambda c: c.replace(" ", "_"))
    frame["diagnosis"] = [str(bunch.target_names[i]) for i in frame.pop("target")]
    return frame


def _diabetes() -> Any:
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "progression"})


def _penguins() -> Any:
    import palmerpenguins

    return palmerpenguins.load_penguins()


def _macrodata() -> Any:
    import pandas as pd
    import statsmodels.api as sm

    frame = sm.datasets.macrodata.load_pandas().data
    ends = pd.PeriodIndex.from_fields(year=frame["year"].astype(int), quarter=frame["quarter"].astype(int),
                                      freq="Q").to_timestamp(how="end")
    frame.insert(0, "date", ends.strftime("%Y-%m-%d"))
    return frame.drop(columns=["year", "quarter"])


DATASETS: dict[str, MatrixDataset] = {
    d.name: d for d in (
        MatrixDataset("iris", "species", ".csv", "multiclass", _iris),
        MatrixDataset("wine", "target", ".parquet", "multiclass", _wine),
        MatrixDataset("breast_cancer", "diagnosis", ".jsonl", "binary", _breast_cancer),
        MatrixDataset("diabetes", "progression", ".parquet", "regression", _diabetes),
        MatrixDataset("penguins", "species", ".csv", "multiclass", _penguins),
        MatrixDataset("macrodata", "infl", ".csv", "regression", _macrodata),
    )
}
