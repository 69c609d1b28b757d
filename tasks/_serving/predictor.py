"""Predictions, scores and class probabilities of a loaded MLflow model (the online service and batch scoring)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: scikit-learn classifiers whose ``predict`` is exactly ``classes_[argmax(predict_proba)]``.
ARGMAX_OF_PROBA = frozenset({"RandomForestClassifier", "ExtraTreesClassifier", "DecisionTreeClassifier",
                             "ExtraTreeClassifier"})


class ModelInputError(ValueError):
    """The model rejected a schema-valid input (e.g. a value its preprocessing cannot handle)."""


def native_label(value: Any) -> Any:
    """Return a JSON-native label: numpy scalars -> Python; floats that are integers -> int.

    The same as ``blocks.task_metrics.plain_label``, copied because the bento carries this package only.
    """
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class Predictor:
    """Predictions, scores and class probabilities of a loaded MLflow model, computing the preprocessing once.

    For a scikit-learn ``Pipeline`` the steps before the estimator run once per batch and
    both ``predict`` and ``predict_proba`` of the final estimator use their output (the same
    results as ``pipeline.predict`` / ``pipeline.predict_proba``, at half the cost); for tree
    ensembles, whose ``predict`` is the argmax of ``predict_proba``, the trees run once.

    Task types (the bento config's ``task_type``, else read from the model): ``binary`` (score =
    probability of the positive label: the configured ``positive_label``, else ``classes_[1]``),
    ``multiclass`` (score = probability of the predicted class), ``regression`` (no score). Labels
    of any type (str, bool, int) come back as they are in ``classes_``.

    Args:
        model: A fitted scikit-learn estimator / pipeline, or an MLflow pyfunc model.
        task_type: ``binary``, ``multiclass`` or ``regression``; None: inferred from ``classes_``.
        positive_label: The binary task's positive label (None: ``classes_[1]``).

    Examples:
        >>> from sklearn.linear_model import LogisticRegression
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
        >>> predictor = Predictor(LogisticRegression().fit(frame, ["no", "no", "yes", "yes"]))
        >>> predictor(frame)[0].tolist(), predictor.task_type, predictor.classes
        (['no', 'no', 'yes', 'yes'], 'binary', ['no', 'yes'])
    """

    def __init__(self, model: Any, task_type: str | None = None, positive_label: Any = None) -> None:
        self.model = model
        steps = getattr(model, "steps", None)
        if steps and len(steps) > 1 and hasattr(model, "__getitem__"):
            self.head, self.final = model[:-1], model[-1]
        else:
            self.head, self.final = None, model
        self.has_proba = (task_type != "regression" and hasattr(self.final, "predict_proba")
                          and hasattr(self.final, "classes_"))
        self.classes = [native_label(c) for c in self.final.classes_] if self.has_proba else None
        self.labels = [str(c) for c in self.classes] if self.classes is not None else None
        if task_type not in ("binary", "multiclass", "regression"):
            task_type = "regression" if self.classes is None else "binary" if len(self.classes) == 2 else "multiclass"
        self.task_type = task_type
        self.positive_index = 1
        if self.classes is not None and len(self.classes) == 2 and positive_label is not None:
            for i, label in enumerate(self.classes):
                if label == positive_label or str(label) == str(positive_label):
                    self.positive_index = i
        self.integer_labels = self.classes is not None and all(
            isinstance(c, int) and not isinstance(c, bool) for c in self.classes)
        # Tree models' own predict() is argmax(predict_proba): take it from the probabilities, not a second pass.
        self.argmax_of_proba = (self.has_proba and type(self.final).__name__ in ARGMAX_OF_PROBA
                                and type(self.final).__module__.startswith("sklearn.")
                                and getattr(self.final, "n_outputs_", 1) == 1)

    def __call__(self, frame: Any) -> tuple[Any, Any]:
        """Return ``(predictions, scores or None)`` as numpy arrays for a frame of records."""
        predictions, scores, _ = self.predict(frame)
        return predictions, scores

    def predict(self, frame: Any) -> tuple[Any, Any, Any]:
        """Return ``(predictions, scores or None, class probabilities as an (n, k) array or None)``."""
        import numpy as np

        try:
            features = self.head.transform(frame) if self.head is not None else frame
            scores = proba = None
            if self.has_proba:
                proba = np.asarray(self.final.predict_proba(features))
                if proba.ndim == 2 and proba.shape[1] == len(self.classes or ()):
                    scores = proba[:, self.positive_index] if proba.shape[1] == 2 else proba.max(axis=1)
                else:
                    proba = None
            if self.argmax_of_proba and proba is not None:
                predictions = self.final.classes_.take(np.argmax(proba, axis=1), axis=0).reshape(len(frame), -1)
            else:
                predictions = np.asarray(self.final.predict(features)).reshape(len(frame), -1)
        except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
            raise ModelInputError(f"{type(exc).__name__}: {exc}") from exc
        if predictions.shape[1] == 1:
            predictions = predictions[:, 0]
        return predictions, scores, proba

    def plain(self, predictions: Any) -> list[Any]:
        """Return predictions as JSON-native values (labels as in ``classes_``; integral float labels as int)."""
        values = predictions.tolist()
        if self.integer_labels and predictions.dtype.kind == "f":
            return [native_label(v) for v in values]
        return values

    def probabilities(self, proba: Any) -> list[dict[str, float]] | None:
        """Return ``[{label as text: probability}]`` per record, or None without probabilities."""
        if proba is None or self.labels is None:
            return None
        labels = self.labels
        return [dict(zip(labels, row, strict=True)) for row in proba.tolist()]


def load_mlflow_model(model_dir: str | Path) -> Any:
    """Load an MLflow model folder: the native scikit-learn object when it has that flavor, else pyfunc."""
    import yaml

    meta = yaml.safe_load((Path(model_dir) / "MLmodel").read_text())
    sklearn_flavor = (meta.get("flavors") or {}).get("sklearn")
    if sklearn_flavor and sklearn_flavor.get("serialization_format") == "skops":
        # What mlflow.sklearn.load_model does for this format (skops.io.load with the flavor's trusted
        # types), without importing MLflow: a backend is ready 1-2 s sooner on every deploy. Measure:
        #   .venv/bin/python benchmarks/bench_loop.py --verbose   (start-bento-server)
        import skops.io

        return skops.io.load(Path(model_dir) / sklearn_flavor["pickled_model"],
                             trusted=sklearn_flavor.get("skops_trusted_types"))
    if sklearn_flavor:
        import mlflow.sklearn

        return mlflow.sklearn.load_model(str(model_dir))
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(model_dir))
