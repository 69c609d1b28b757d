"""Session fixtures of the serving-runtime tests: real models on bundled datasets, their bentos, served over HTTP.

Registered as a pytest plugin (``pytest_plugins = ["serving_fixtures", "serving_models"]``). Each model is a small
scikit-learn pipeline saved as an MLflow model with a signature and an input example (as the project logs them),
packaged with ``tasks.bentoml_packaging.build_bento`` and served with ``tasks.bentoml_serving.start_bento_server``.

``build_bento`` writes the bento config keys it knows; the keys of the task-type contract that packaging does not
write yet (``task_type``, ``classes``, ``positive_label``, ``time_column``, ``passthrough_columns``) are added by
:func:`bento_with_config`, which rebuilds the bento from the same build folder with the extended config.
"""

from __future__ import annotations

import hashlib
import json
import sys
import textwrap
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

SLOW_MODULE = '''
"""A classifier whose predictions take a while (for the event-loop test)."""

import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class SlowClassifier(ClassifierMixin, BaseEstimator):
    def __init__(self, seconds=3.0):
        self.seconds = seconds

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        time.sleep(self.seconds)
        return np.tile([0.25, 0.75], (len(X), 1))

    def predict(self, X):
        return self.classes_.take(np.argmax(self.predict_proba(X), axis=1))
'''


@dataclass
class ServedModel:
    """A model of one dataset: its MLflow folder, data, in-process model and bento."""

    key: str
    task_type: str
    model_dir: str
    frame: pd.DataFrame
    target: pd.Series
    model: Any
    bento: Any


def _datasets() -> dict[str, tuple[pd.DataFrame, pd.Series, str]]:
    from palmerpenguins import load_penguins
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

    iris = load_iris(as_frame=True)
    iris_y = pd.Series(iris.target_names[iris.target], name="species")  # string labels
    iris_x = iris.frame.drop(columns=["target"]).rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    penguins = load_penguins()
    cancer = load_breast_cancer(as_frame=True)
    cancer_x = cancer.frame.iloc[:, :5].rename(columns=lambda c: c.replace(" ", "_"))
    diabetes = load_diabetes(as_frame=True)
    return {
        "iris": (iris_x, iris_y, "multiclass"),
        "penguins": (penguins.drop(columns=["species"]), penguins["species"], "multiclass"),
        "cancer": (cancer_x, pd.Series(cancer.target == 0, name="malignant"), "binary"),  # bool labels
        "diabetes": (diabetes.frame.drop(columns=["target"]), diabetes.frame["target"], "regression"),
    }


def _pipeline(frame: pd.DataFrame, task_type: str) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    categorical = [c for c in frame.columns if frame[c].dtype == object]
    numeric = [c for c in frame.columns if c not in categorical]
    prep = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
         categorical),
    ])
    estimator = Ridge() if task_type == "regression" else LogisticRegression(max_iter=2000)
    return Pipeline([("prep", prep), ("model", estimator)])


def save_mlflow_model(model: Any, frame: pd.DataFrame, folder: Path, code_paths: list[str] | None = None) -> str:
    """Save a fitted model as the project logs them: MLflow sklearn flavor, signature, input example."""
    import mlflow.sklearn
    import sklearn
    from mlflow.models import infer_signature

    with warnings.catch_warnings():  # MLflow's hint about integer columns and missing values
        warnings.simplefilter("ignore", UserWarning)
        signature = infer_signature(frame, model.predict(frame.head(20)))
        mlflow.sklearn.save_model(model, str(folder), signature=signature, input_example=frame.head(3),
                                  code_paths=code_paths, serialization_format="cloudpickle",
                                  # named: MLflow's requirement inference runs a subprocess (a minute here)
                                  pip_requirements=[f"scikit-learn=={sklearn.__version__}"])
    return str(folder)


def version_of(name: str, model_dir: str) -> Any:
    from tasks.mlflow_registry import ModelVersionInfo

    return ModelVersionInfo(name=name, version="1", run_id=hashlib.sha1(model_dir.encode()).hexdigest(),
                            source=model_dir, tags={}, aliases=[], created_at="")


def bento_with_config(block: Any, version: Any, model_dir: str, extra: dict[str, Any]) -> Any:
    """Build a bento whose ``mlops_bento.json`` also carries ``extra`` (the keys packaging will write)."""
    from tasks.bentoml_packaging import bentoml_name, build_bento, run_bentoml

    bento = build_bento.fn(block, version, model_dir)
    if not extra:
        return bento
    name, base = bento.tag.split(":")
    ctx = block.home() / "build" / f"{name}-{base}"
    config = json.loads((ctx / "mlops_bento.json").read_text())
    config.update(extra)
    suffix = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode()).hexdigest()[:6]
    version_tag = f"{base}-x{suffix}"
    config["bento_tag"] = f"{name}:{version_tag}"
    (ctx / "mlops_bento.json").write_text(json.dumps(config, indent=2, default=str))
    path = block.home() / "bentos" / bentoml_name(version.name) / version_tag
    if not (path / "bento.yaml").is_file():
        script = ("import sys, bentoml\n"
                  "bentoml.bentos.build_bentofile(sys.argv[1], build_ctx=sys.argv[2], version=sys.argv[3])\n")
        run_bentoml(block, [sys.executable, "-c", script, str(ctx / "bentofile.yaml"), str(ctx), version_tag],
                     f"Rebuilding {bento.tag} with {sorted(extra)}")
    return bento.model_copy(update={"tag": config["bento_tag"], "path": str(path)})


@pytest.fixture(scope="session")
def runtime_block(session_home: Path) -> Any:
    from serving_fixtures import serving_block_for

    return serving_block_for(session_home, "serving-runtime-tests")


@pytest.fixture(scope="session")
def dataset_models(session_home: Path, runtime_block: Any) -> dict[str, ServedModel]:
    """One bento per dataset: iris (string labels, passthrough event time), penguins, breast cancer (bool), diabetes."""
    root = session_home / "serving-runtime" / "models"
    out = {}
    for key, (frame, target, task_type) in _datasets().items():
        model = _pipeline(frame, task_type).fit(frame, target)
        model_dir = save_mlflow_model(model, frame, root / key)
        extra: dict[str, Any] = {"task_type": task_type}
        if task_type != "regression":
            extra["classes"] = sorted(pd.Series(target).unique().tolist())
        if task_type == "binary":
            extra["positive_label"] = True
        if key == "iris":
            extra.update(time_column="event_time", passthrough_columns=[{"name": "event_time", "type": "datetime"}])
        bento = bento_with_config(runtime_block, version_of(f"rt-{key}", model_dir), model_dir, extra)
        out[key] = ServedModel(key, task_type, model_dir, frame, target, model, bento)
    return out


@pytest.fixture(scope="session")
def slow_bento(session_home: Path, runtime_block: Any) -> Any:
    """A bento whose model takes 3 s per predict (its class ships with the model as MLflow ``code_paths``)."""
    code_dir = session_home / "serving-runtime" / "slow-code"
    code_dir.mkdir(parents=True, exist_ok=True)
    module_file = code_dir / "mlops_slow_estimator.py"
    module_file.write_text(textwrap.dedent(SLOW_MODULE))
    sys.path.insert(0, str(code_dir))
    try:
        import mlops_slow_estimator
    finally:
        sys.path.remove(str(code_dir))
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    model = mlops_slow_estimator.SlowClassifier(seconds=3.0).fit(frame, [0, 1, 0, 1])
    model_dir = save_mlflow_model(model, frame, session_home / "serving-runtime" / "models" / "slow",
                                  code_paths=[str(module_file)])
    return bento_with_config(runtime_block, version_of("rt-slow", model_dir), model_dir, {"task_type": "binary"})


@pytest.fixture(scope="session")
def served(runtime_block: Any, dataset_models: dict[str, ServedModel]) -> Iterator[dict[str, Any]]:
    """Backends started on demand, one per dataset, stopped at the end of the session."""
    from tasks.bentoml_serving import start_bento_server, stop_bento_server

    running: dict[str, Any] = {}

    class Backends(dict):
        def __missing__(self, key: str) -> Any:
            running[key] = start_bento_server.fn(runtime_block, dataset_models[key].bento)
            self[key] = running[key]
            return running[key]

    backends = Backends()
    yield backends
    for backend in running.values():
        stop_bento_server.fn(runtime_block, backend, drain=False)
