"""Training with real scikit-learn on real data: estimators, search, splits, cached and resumed trials."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from prefect import flow, unmapped

from tasks.exceptions import TrainingConfigError
from tasks.sklearn_training import (
    TrainingSpec,
    expand_trials,
    make_estimator,
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
