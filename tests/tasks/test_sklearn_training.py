"""Training with real scikit-learn on real data: estimators, search, splits, cached and resumed trials.

Also every task type (each failure of issue 7 reproduced): task types, metrics by label set, preprocessing by role,
policy defaults, an unscorable champion. Real scikit-learn on bundled datasets (iris, diabetes, breast cancer,
palmerpenguins); no mocks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect import flow, unmapped

from blocks.promotion_policy import PromotionPolicy
from blocks.task_metrics import infer_task_type
from tasks.exceptions import ModelUnscorableError, TrainingConfigError
from tasks.model_evaluation import evaluate_champion, evaluate_model
from tasks.model_scoring import score_predictions
from tasks.sklearn_preprocessing import infer_column_roles
from tasks.sklearn_training import (
    TaskInfo,
    TrainingSpec,
    expand_trials,
    make_estimator,
    resolve_training_task,
    select_best_trial,
    split_dataset,
    submit_trials,
    train_trial,
    trial_model_path,
)


def test_unknown_estimator_path() -> None:
    with pytest.raises(TrainingConfigError, match="Unknown estimator 'sklearn.nope.Forest'"):
        make_estimator("sklearn.nope.Forest", {})


def test_invalid_params_fail_before_fitting() -> None:
    with pytest.raises(TrainingConfigError, match="Invalid parameters"):
        expand_trials(TrainingSpec(estimator="sklearn.linear_model.LogisticRegression", search_space={"C": [-1.0]}))
    with pytest.raises(TrainingConfigError, match="Invalid parameters"):
        expand_trials(TrainingSpec(params={"not_a_param": 1}, search_space={}))


def test_random_search_draws_n_trials() -> None:
    spec = TrainingSpec(search="random", n_trials=3, search_space={"C": [0.01, 0.1, 1, 10, 100]})
    assert len(expand_trials(spec)) == 3


def test_time_split_puts_newest_rows_in_test(sample_dir: Path, tmp_path: Path) -> None:
    spec = TrainingSpec(split="time")
    split = split_dataset.fn(str(sample_dir / "day0.parquet"), "churned", spec, str(tmp_path))
    train, test = pd.read_parquet(split.train), pd.read_parquet(split.test)
    assert train["event_time"].max() <= test["event_time"].min()
    assert "event_time" not in split.features and "churned" not in split.features


def test_parallel_trials_are_cached_on_the_data_hash(sample_dir: Path, tmp_path: Path) -> None:
    spec = TrainingSpec(search_space={"C": [0.1, 1.0]})

    @flow
    def tune() -> tuple[list, list[str]]:
        split = split_dataset(str(sample_dir / "day0.parquet"), "churned", spec, str(tmp_path / "splits"))
        trials = expand_trials(spec)
        futures = train_trial.map(unmapped(split), "churned", unmapped(spec), trials, [0, 1], str(tmp_path / "m"))
        states = [f.wait() or f.state for f in futures]
        return [f.result() for f in futures], [s.name for s in states]

    first, names1 = tune()
    second, names2 = tune()
    assert names1 == ["Completed", "Completed"]
    assert names2 == ["Cached", "Cached"]
    assert [t.metrics for t in first] == [t.metrics for t in second]
    assert select_best_trial.fn(first, "roc_auc").metrics["roc_auc"] == max(t.metrics["roc_auc"] for t in first)


def test_resume_refits_only_the_trial_whose_model_file_is_missing(sample_dir: Path, tmp_path: Path) -> None:
    """Issue 8 item 5: one missing model file used to refit every trial."""
    spec = TrainingSpec(search_space={"C": [0.1, 1.0, 10.0]}).resolved("binary")

    @flow
    def tune() -> tuple[list[str], list[str]]:
        split = split_dataset(str(sample_dir / "day0.parquet"), "churned", spec, str(tmp_path / "splits"))
        futures = submit_trials(split, "churned", spec, expand_trials(spec), str(tmp_path / "m"))
        return [f.wait() or f.state.name for f in futures], [f.result().model_path for f in futures]

    first, paths = tune()
    assert first == ["Completed", "Completed", "Completed"]
    assert tune()[0] == ["Cached", "Cached", "Cached"]
    Path(paths[1]).unlink()  # what a run killed mid-training leaves behind: one trial's model missing
    third, again = tune()
    assert third == ["Cached", "Completed", "Cached"]
    assert again == paths and Path(paths[1]).is_file()
    split = split_dataset.fn(str(sample_dir / "day0.parquet"), "churned", spec, str(tmp_path / "splits2"))
    assert trial_model_path(split, "churned", spec, {"max_iter": 1000, "C": 0.1}, "m").name.endswith(".joblib")
    assert pd.read_parquet(split.train).shape[0] > 0


def _frame(loader) -> pd.DataFrame:
    data = loader(as_frame=True)
    return data.frame


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Bundled datasets as files, the way a user hands them over (iris with string labels)."""
    import palmerpenguins
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

    folder = tmp_path_factory.mktemp("datasets")
    iris = load_iris(as_frame=True)
    frame = iris.frame.copy()
    frame["target"] = iris.target_names[iris.target]
    paths = {"iris": folder / "iris.csv", "diabetes": folder / "diabetes.parquet",
             "cancer": folder / "cancer.parquet", "penguins": folder / "penguins.csv"}
    frame.to_csv(paths["iris"], index=False)
    _frame(load_diabetes).to_parquet(paths["diabetes"], index=False)
    _frame(load_breast_cancer).to_parquet(paths["cancer"], index=False)
    palmerpenguins.load_penguins().to_csv(paths["penguins"], index=False)
    return {k: str(v) for k, v in paths.items()}


def _train(path: str, target: str, tmp_path: Path, spec: TrainingSpec | None = None,
           policy: PromotionPolicy | None = None) -> tuple[TaskInfo, object, list]:
    spec = spec or TrainingSpec()
    task = resolve_training_task.fn(path, target, spec, policy or PromotionPolicy())
    concrete = spec.resolved(task.task_type)
    split = split_dataset.fn(path, target, concrete, str(tmp_path / "splits"), None, task.task_type)
    trials = [train_trial.fn(split, target, concrete, params, i, str(tmp_path / "models"), task)
              for i, params in enumerate(expand_trials(concrete))]
    return task, split, trials


def test_regression_target_with_defaults_trains(datasets: dict[str, str], tmp_path: Path) -> None:
    """Issue 7: diabetes with defaults was taken for class labels; the stratified split failed."""
    from sklearn.model_selection import train_test_split

    frame = pd.read_parquet(datasets["diabetes"])
    with pytest.raises(ValueError, match="least populated class"):  # the old default: stratify on the target
        train_test_split(frame, test_size=0.2, stratify=frame["target"])
    task, split, trials = _train(datasets["diabetes"], "target", tmp_path)
    assert task.task_type == "regression" and task.classes == [] and task.positive_label is None
    assert {t.params["alpha"] for t in trials} == {0.1, 1.0, 10.0}  # the Ridge grid, not logistic regression
    best = select_best_trial.fn(trials, TrainingSpec().metric("regression"))
    assert set(best.metrics) == {"rmse", "mae", "r2"} and best.metrics["r2"] > 0.2
    assert best.metrics["rmse"] == min(t.metrics["rmse"] for t in trials)


def test_multiclass_string_labels_train_select_and_gate(datasets: dict[str, str], tmp_path: Path) -> None:
    """Issue 7: selection, policy and gate all defaulted to roc_auc, which a multiclass model lacks."""
    task, split, trials = _train(datasets["iris"], "target", tmp_path)
    assert task.task_type == "multiclass" and task.classes == ["setosa", "versicolor", "virginica"]
    assert TrainingSpec().metric(task.task_type) == "f1_macro"
    best = select_best_trial.fn(trials, "f1_macro")
    assert {"f1_macro", "roc_auc_ovr", "log_loss", "accuracy", "precision_macro", "recall_macro"} <= set(best.metrics)
    evaluation = evaluate_model.fn(best.model_path, split.test, "target", task.task_type, split.features,
                                   classes=task.classes)
    assert evaluation.metrics["f1_macro"] > 0.8 and evaluation.task_type == "multiclass"
    from tasks.promotion_gate import gate_challenger

    verdict = gate_challenger.fn(evaluation, None, PromotionPolicy())
    assert verdict.promote and any(r.startswith("floor f1_macro") for r in verdict.passed)


def test_time_split_validation_slice_with_two_of_three_classes(tmp_path: Path) -> None:
    """Issue 7: averaging was chosen from the classes in one slice, so a two-class slice crashed."""
    rng = np.random.default_rng(0)
    n = 600
    x = rng.normal(size=n)
    label = np.where(x < -0.5, "low", np.where(x < 0.5, "mid", "high"))
    label[-240:] = np.where(x[-240:] < 0, "low", "mid")  # newest rows (validation + test): two of three classes
    frame = pd.DataFrame({"x": x, "noise": rng.normal(size=n), "label": label,
                          "when": pd.date_range("2025-01-01", periods=n, freq="h").astype(str)})
    path = tmp_path / "drifting.parquet"
    frame.to_parquet(path, index=False)
    spec = TrainingSpec(split="time", time_column="when")
    task, split, trials = _train(str(path), "label", tmp_path, spec)
    valid = pd.read_parquet(split.valid)
    assert set(valid["label"]) == {"low", "mid"} and task.classes == ["high", "low", "mid"]
    assert "when" not in split.features
    assert all("f1_macro" in t.metrics and "log_loss" in t.metrics for t in trials)
    # The old scorer picked "binary" averaging for a two-class slice of string labels: a crash.
    with pytest.raises(ValueError, match="pos_label"):
        from sklearn.metrics import f1_score

        f1_score(valid["label"], valid["label"], average="binary")
    # Same predictions, two or three classes present: the averaging does not change.
    y = np.array(["low", "mid", "low", "mid"])
    assert score_predictions("multiclass", y, y, classes=task.classes)["f1_macro"] == 1.0


def test_task_type_inference_and_explicit_types(datasets: dict[str, str]) -> None:
    assert infer_task_type(pd.read_parquet(datasets["cancer"])["target"]) == "binary"
    spec = TrainingSpec(task_type="classification")
    assert resolve_training_task.fn(datasets["iris"], "target", spec).task_type == "multiclass"
    cancer = resolve_training_task.fn(datasets["cancer"], "target", TrainingSpec())
    assert cancer.task_type == "binary" and cancer.classes == [0, 1] and cancer.positive_label == 1
    assert cancer.tags()["mlops.positive_label"] == "1" and cancer.tags()["mlops.classes"] == "[0, 1]"
    with pytest.raises(TrainingConfigError, match="TrainingSpec.task_type.*3 distinct labels"):
        resolve_training_task.fn(datasets["iris"], "target", TrainingSpec(task_type="binary"))
    with pytest.raises(TrainingConfigError, match="regressor"):
        resolve_training_task.fn(datasets["diabetes"], "target",
                                 TrainingSpec(estimator="sklearn.linear_model.LogisticRegression"))


def test_policy_naming_a_metric_the_task_cannot_produce_is_refused_before_training(datasets: dict[str, str]) -> None:
    with pytest.raises(TrainingConfigError) as err:
        resolve_training_task.fn(datasets["iris"], "target", TrainingSpec(), PromotionPolicy(floors={"roc_auc": 0.6}))
    assert "PromotionPolicy.floors" in str(err.value) and "'roc_auc'" in str(err.value)
    assert "f1_macro" in str(err.value) and "Nothing was trained" in str(err.value)
    with pytest.raises(TrainingConfigError, match="PromotionPolicy.primary_metric names 'roc_auc'"):
        resolve_training_task.fn(datasets["diabetes"], "target", TrainingSpec(),
                                 PromotionPolicy(primary_metric="roc_auc"))
    with pytest.raises(TrainingConfigError, match="TrainingSpec.selection_metric names 'rmse'"):
        resolve_training_task.fn(datasets["iris"], "target", TrainingSpec(selection_metric="rmse"))
    # An old saved policy with explicit binary values keeps working on a binary task.
    old = PromotionPolicy(primary_metric="roc_auc", direction="maximize", floors={"roc_auc": 0.6},
                          guard_metrics={"accuracy": 0.02})
    assert resolve_training_task.fn(datasets["cancer"], "target", TrainingSpec(), old).task_type == "binary"


def test_penguins_string_labels_missing_values_and_categoricals(datasets: dict[str, str], tmp_path: Path) -> None:
    task, split, trials = _train(datasets["penguins"], "species", tmp_path)
    assert task.task_type == "multiclass" and task.classes == ["Adelie", "Chinstrap", "Gentoo"]
    assert split.roles["island"] == "categorical" and split.roles["sex"] == "categorical"
    assert split.roles["bill_length_mm"] == "numeric"
    best = select_best_trial.fn(trials, "f1_macro")
    assert best.metrics["f1_macro"] > 0.9


def test_roles_exclude_identifiers_and_expand_dates(tmp_path: Path) -> None:
    """Issue 7: the date column and ID-like strings were one-hot encoded as features."""
    import joblib

    rng = np.random.default_rng(1)
    n = 400
    frame = pd.DataFrame({
        "customer_id": [f"C{i:06d}" for i in range(n)],
        "signup": pd.date_range("2024-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
        "plan": rng.choice(["basic", "pro"], n), "usage": rng.normal(10, 2, n),
        "note": [f"customer wrote a long free text message number {i} about the service" for i in range(n)],
    })
    frame["churned"] = (frame["usage"] + (frame["plan"] == "pro") * 2 + rng.normal(0, 1, n) > 11).astype(int)
    roles = infer_column_roles(frame, "churned")
    assert roles == {"customer_id": "identifier", "signup": "datetime", "plan": "categorical", "usage": "numeric",
                     "note": "text", "churned": "target"}
    path = tmp_path / "customers.parquet"
    frame.to_parquet(path, index=False)
    spec = TrainingSpec(time_column=None)
    task, split, trials = _train(str(path), "churned", tmp_path, spec)
    assert split.features == ["signup", "plan", "usage"] and split.roles["signup"] == "datetime"
    model = joblib.load(trials[0].model_path)
    names = list(model[:-1].get_feature_names_out())
    assert any("signup_year" in n for n in names) and any("signup_weekday" in n for n in names)
    assert not any("customer_id" in n or "note" in n for n in names)
    # Contract roles win over inference: declared an identifier, `plan` is excluded.
    split2 = split_dataset.fn(str(path), "churned", spec.resolved("binary"), str(tmp_path / "s2"),
                              {"plan": "identifier"}, "binary")
    assert split2.features == ["signup", "usage"]


def test_date_pipeline_saves_with_skops_and_loads_with_pyfunc_in_another_process(tmp_path: Path) -> None:
    """The skrub date steps save as skops with trusted types and serve from a process without our code."""
    import subprocess
    import sys

    import joblib
    import mlflow.sklearn
    import skops.io

    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"day": pd.date_range("2024-01-01", periods=300, freq="D"),
                          "x": rng.normal(size=300), "kind": rng.choice(["a", "b", "c"], 300)})
    frame["y"] = np.where(frame["x"] + (frame["day"].dt.weekday >= 5) > 0.5, "yes", "no")
    path = tmp_path / "dated.parquet"
    frame.to_parquet(path, index=False)
    task, split, trials = _train(str(path), "y", tmp_path, TrainingSpec(time_column=None))
    assert task.positive_label == "yes" and split.roles["day"] == "datetime"
    model = joblib.load(trials[0].model_path)
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    assert any(t.startswith("skrub.") for t in trusted)
    out = tmp_path / "mlflow-model"
    mlflow.sklearn.save_model(model, str(out), serialization_format="skops", skops_trusted_types=trusted)
    script = (
        "import sys, json, pandas as pd, mlflow.pyfunc\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "frame = pd.DataFrame({'day': ['2026-03-01T10:00:00', '2026-03-04'], 'x': [2.0, -2.0], 'kind': ['a', 'zz']})\n"
        "print(json.dumps([str(v) for v in m.predict(frame)]))\n"
        "print('tasks' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-2] == '["yes", "no"]' and lines[-1] == "False"


def test_champion_with_other_columns_or_labels_is_unscorable_not_an_error(datasets: dict[str, str],
                                                                          tmp_path: Path) -> None:
    task, split, trials = _train(datasets["cancer"], "target", tmp_path)
    model = trials[0].model_path
    test = pd.read_parquet(split.test)
    fewer = tmp_path / "fewer.parquet"
    test.drop(columns=["mean radius"]).to_parquet(fewer, index=False)
    with pytest.raises(ModelUnscorableError, match=r"needs columns \['mean radius'\]"):
        evaluate_model.fn(model, str(fewer), "target", "binary", [c for c in split.features if c != "mean radius"],
                          classes=[0, 1])
    relabelled = tmp_path / "relabelled.parquet"
    test.assign(target=np.where(test["target"] == 1, "yes", "no")).to_parquet(relabelled, index=False)
    score = evaluate_champion.fn(model, str(relabelled), "target", "binary", split.features, classes=["no", "yes"])
    assert score.evaluation is None and "labels" in score.unscorable and "differ" in score.unscorable
    # A model file that does not load is not "unscorable": it is an error that fails the run.
    broken = tmp_path / "broken.joblib"
    broken.write_bytes(b"not a model")
    with pytest.raises(Exception, match="Loading the champion model"):
        evaluate_champion.fn(str(broken), split.test, "target", "binary", split.features, classes=[0, 1])
