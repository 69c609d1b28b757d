"""Drift, data-quality and performance monitoring against real Evidently 0.7 on real frames."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect import flow

from blocks.monitoring_policy import MonitoringPolicy
from tasks.evidently_drift import DriftSummary, compute_drift
from tasks.evidently_monitoring import run_drift_report
from tasks.exceptions import MonitoringError

SHIFTS = (0.1, 0.2, 0.3, 0.4, 0.5)
#: Tests marked no_server call plain functions and task bodies (``.fn``); the 1M-row sampled-verdict
#: case is a benchmark: ``benchmarks/bench_drift.py --sizes 1000000 --variants ours-task,scipy-ks``.
NO_SERVER = pytest.mark.no_server


def make_windows(seed: int, ref_rows: int, cur_rows: int, n_cols: int = 20,
                 shifts: tuple[float, ...] = SHIFTS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Standard-normal columns; the first len(shifts) are shifted in the current window."""
    rng = np.random.default_rng(seed)
    cols = [f"f{i:02d}" for i in range(n_cols)]
    reference = pd.DataFrame(rng.standard_normal((ref_rows, n_cols)), columns=cols)
    current = pd.DataFrame(rng.standard_normal((cur_rows, n_cols)), columns=cols)
    for col, shift in zip(cols, shifts, strict=False):
        current[col] += shift
    return reference, current


def mixed_windows(rows: int = 4000, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Numbers, a category, an integer flag and a prediction; 'income' and 'plan' drift."""
    rng = np.random.default_rng(seed)

    def frame(n: int, income_mu: float, plan_p: list[float]) -> pd.DataFrame:
        return pd.DataFrame({
            "age": rng.normal(40, 10, n),
            "income": rng.normal(income_mu, 5_000, n),
            "tenure": rng.gamma(2.0, 12.0, n),
            "plan": rng.choice(["basic", "plus", "pro"], n, p=plan_p),
            "region": rng.choice(["north", "south", "east", "west"], n),
            "is_student": rng.integers(0, 2, n),
            "score": rng.beta(2, 5, n),
        })

    return frame(rows, 50_000, [0.5, 0.3, 0.2]), frame(rows, 56_000, [0.2, 0.3, 0.5])


def write(frame: pd.DataFrame, path: Path) -> str:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def mixed_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("mixed")
    reference, current = mixed_windows()
    return write(reference, folder / "reference.parquet"), write(current, folder / "current.parquet")


@NO_SERVER
def test_known_drifted_and_stable_columns_are_found(mixed_files: tuple[str, str], tmp_path: Path) -> None:
    reference, current = mixed_files
    summary = run_drift_report.fn(reference, current, MonitoringPolicy(), str(tmp_path),
                                  prediction_column="score")
    assert set(summary.drifted_columns) == {"income", "plan"}
    assert summary.column_methods["income"] == "ks"
    assert summary.column_methods["plan"] == "chisquare"
    assert summary.column_methods["is_student"] == "chisquare"  # low-cardinality integers are categories
    assert summary.drift_share == pytest.approx(2 / 6)
    assert summary.verdict == "no_drift" and not summary.dataset_drift
    assert summary.prediction_drift is False
    assert "score" not in summary.column_scores
    assert summary.sampled is False
    assert summary.quality_issues == []
    assert all(summary.column_scores[c] > 0.05 for c in ("age", "tenure", "region", "is_student"))


@NO_SERVER
def test_drift_share_and_per_column_methods_come_from_the_policy(mixed_files: tuple[str, str]) -> None:
    reference, current = (pd.read_parquet(p) for p in mixed_files)
    policy = MonitoringPolicy(drift_share=0.3, column_methods={"income": "wasserstein", "age": "psi"},
                              column_thresholds={"income": 0.5})
    summary = compute_drift(reference, current, policy, columns=["age", "income", "plan"]).summary
    assert summary.column_methods == {"age": "psi", "income": "wasserstein", "plan": "chisquare"}
    assert summary.column_thresholds["income"] == 0.5
    assert summary.column_thresholds["age"] == pytest.approx(0.1)  # Evidently's PSI default
    # A 6,000 shift over a 5,000 std is a normed Wasserstein distance of about 1.2 > 0.5.
    assert summary.drifted_columns == ["income", "plan"]
    assert summary.verdict == "drift" and summary.dataset_drift


@NO_SERVER
def test_sampling_is_deterministic() -> None:
    reference, current = make_windows(3, 5_000, 20_000, n_cols=4, shifts=(0.05,))
    policy = MonitoringPolicy(max_sample_rows=2_000, sample_seed=11)
    first = compute_drift(reference, current, policy).summary
    second = compute_drift(reference, current, policy).summary
    assert first.sampled
    assert first.column_scores == second.column_scores
    other = compute_drift(reference, current, policy.model_copy(update={"sample_seed": 12})).summary
    assert other.column_scores != first.column_scores


@NO_SERVER
def test_too_small_window_is_not_enough_data(mixed_files: tuple[str, str], tmp_path: Path) -> None:
    reference = mixed_files[0]
    small = write(pd.read_parquet(mixed_files[1]).head(150), tmp_path / "small.parquet")
    summary = run_drift_report.fn(reference, small, MonitoringPolicy(), str(tmp_path / "out"))
    assert summary.verdict == "not_enough_data"
    assert not summary.dataset_drift and summary.drifted_columns == []
    assert summary.current_rows == 150 and "min_window_rows=200" in summary.message
    assert summary.html_path is None
    assert json.loads(Path(summary.json_path).read_text())["summary"]["verdict"] == "not_enough_data"
    # The same rule holds for frames and for a too-small reference.
    frames = compute_drift(pd.read_parquet(reference).head(10), pd.read_parquet(small),
                           MonitoringPolicy(min_window_rows=5, min_reference_rows=5)).summary
    assert frames.verdict != "not_enough_data"
    tiny_reference = compute_drift(pd.read_parquet(reference).head(10), pd.read_parquet(mixed_files[1]),
                                   MonitoringPolicy()).summary
    assert tiny_reference.verdict == "not_enough_data" and "reference" in tiny_reference.message


@NO_SERVER
def test_missing_column_is_a_clear_error(mixed_files: tuple[str, str], tmp_path: Path) -> None:
    reference = mixed_files[0]
    current = write(pd.read_parquet(mixed_files[1]).drop(columns=["income", "plan"]), tmp_path / "cur.parquet")
    with pytest.raises(MonitoringError) as caught:
        run_drift_report.fn(reference, current, MonitoringPolicy(), str(tmp_path / "out"))
    message = str(caught.value)
    assert "['income', 'plan']" in message and "cur.parquet" in message and "columns=[" in message
    assert not (tmp_path / "out").exists(), "nothing is written for bad input"
    with pytest.raises(MonitoringError, match="lacks column"):
        run_drift_report.fn(reference, mixed_files[1], MonitoringPolicy(), str(tmp_path / "out"),
                            columns=["age", "nope"])
    with pytest.raises(MonitoringError, match="does not exist"):
        run_drift_report.fn(reference, str(tmp_path / "absent.parquet"), MonitoringPolicy(), str(tmp_path))


@NO_SERVER
def test_report_files_exist_and_json_parses(mixed_files: tuple[str, str], tmp_path: Path) -> None:
    reference, current = mixed_files
    summary = run_drift_report.fn(reference, current, MonitoringPolicy(), str(tmp_path / "reports"),
                                  prediction_column="score", report_name="daily-2026-05-01")
    html, document = Path(summary.html_path), Path(summary.json_path)
    assert html.name == "daily-2026-05-01.html" and document.name == "daily-2026-05-01.json"
    assert html.stat().st_size > 10_000 and "<html" in html.read_text()[:2000].lower()
    data = json.loads(document.read_text())
    assert data["summary"]["drifted_columns"] == summary.drifted_columns
    assert data["policy"]["drift_share"] == 0.5
    assert data["windows"] == {"reference": reference, "current": current}
    names = [m["config"]["type"] for m in data["evidently"]["metrics"]]
    assert names.count("evidently:metric_v2:ValueDrift") == 7  # six features and the prediction
    assert "evidently:metric_v2:DriftedColumnsCount" in names
    assert any(t["status"] == "FAIL" for t in data["evidently"]["tests"])
    with pytest.raises(MonitoringError, match="plain file name"):
        run_drift_report.fn(reference, current, MonitoringPolicy(), str(tmp_path), report_name="../x")


@NO_SERVER
def test_quality_issues_are_reported_over_all_rows(tmp_path: Path) -> None:
    reference, current = mixed_windows(rows=3000, seed=3)
    current = current.copy()
    current.loc[:599, "age"] = np.nan  # 20% missing
    current.loc[600:659, "tenure"] = 10_000.0  # 2% out of the reference range
    current.loc[660:664, "region"] = "atlantis"  # 5 rows of a new category
    ref_path, cur_path = write(reference, tmp_path / "ref.csv"), write(current, tmp_path / "cur.csv")
    summary = run_drift_report.fn(ref_path, cur_path, MonitoringPolicy(), str(tmp_path / "out"))
    issues = "\n".join(summary.quality_issues)
    assert len(summary.quality_issues) == 3, issues
    assert "'age': 20.0% missing" in issues
    assert re.search(r"'tenure': 2\.\d% of values outside the reference range", issues)
    assert "'region': 1 category unseen in the reference ('atlantis')" in issues
    quality = json.loads(Path(summary.json_path).read_text())["quality"]
    assert quality["region"]["new_categories"] == ["atlantis"]


def test_runs_as_a_prefect_task_in_a_flow(mixed_files: tuple[str, str], tmp_path: Path) -> None:
    reference, current = mixed_files

    @flow(name="drift-smoke")
    def monitor(policy: MonitoringPolicy) -> DriftSummary:
        return run_drift_report(reference, current, policy, str(tmp_path), columns=["age", "income"])

    summary = monitor(MonitoringPolicy())
    assert isinstance(summary, DriftSummary)
    assert summary.drifted_columns == ["income"] and Path(summary.html_path).is_file()


@NO_SERVER
def test_drift_table_is_sorted_by_drift_with_effect_sizes_and_the_prediction(mixed_files: tuple[str, str],
                                                                               tmp_path: Path) -> None:
    from tasks.evidently_reports import drift_table

    reference, current = mixed_files
    summary = run_drift_report.fn(reference, current, MonitoringPolicy(), str(tmp_path), prediction_column="score")
    rows = drift_table(summary)
    assert [r["column"] for r in rows[:2]] == ["income", "plan"]  # the two drifted columns, largest effect first
    assert [r["drifted"] for r in rows] == ["yes", "yes"] + ["no"] * (len(rows) - 2)
    assert [r for r in rows if r["role"] == "prediction"][0]["column"] == "score"
    stable = [float(r["effect size (psi)"]) for r in rows[2:]]
    assert stable == sorted(stable, reverse=True)
    assert float(rows[0]["effect size (psi)"]) > 0.25 and rows[0]["reading"] == "large shift"
    assert re.fullmatch(r"(\d\.\de-\d+|< 1e-300)", rows[0]["score"]), rows[0]["score"]  # not 0, not 0.0
    assert {r["threshold"] for r in rows} == {"0.05"}


@NO_SERVER
def test_report_has_a_header_prediction_shares_and_a_quality_section(tmp_path: Path) -> None:
    reference, current = mixed_windows()
    rng = np.random.default_rng(3)
    for frame, cut in ((reference, 0.3), (current, 0.2)):
        frame["prediction"] = (frame["score"] > cut).astype(int)
    current = current.iloc[:1000].assign(label=rng.integers(0, 2, 1000))
    current.loc[current.index[:100], "label"] = None  # ground truth not arrived for some rows
    ref_path, cur_path = write(reference, tmp_path / "ref.parquet"), write(current, tmp_path / "cur.parquet")
    header = {"model": "churn-x", "version": "7", "reference data rev": "0a41425a0b1d", "window": "A .. B"}
    summary = run_drift_report.fn(ref_path, cur_path, MonitoringPolicy(), str(tmp_path / "out"),
                                  columns=["age", "income", "plan"], prediction_column="prediction", header=header,
                                  quality={"task_type": "binary", "label": "label", "positive_label": 1})
    html = Path(summary.html_path).read_text()
    for text in ("churn-x v7: monitoring report", "0a41425a0b1d", "A .. B", "reference rows", "4,000",
                 "current rows", "1,000", "share of each window", "Model quality on the labelled rows",
                 "Classification Model Performance"):
        assert text in html, text
    shares = {row["value"]: row for row in summary.prediction_shares}
    assert set(shares) == {"0", "1"} and abs(sum(r["current_share"] for r in shares.values()) - 1) < 1e-3

    without_labels = run_drift_report.fn(ref_path, cur_path, MonitoringPolicy(), str(tmp_path / "none"),
                                         columns=["age"], prediction_column="prediction", header=header,
                                         quality={"task_type": "binary", "label": "no-such-column"})
    assert "Model quality on the labelled rows" not in Path(without_labels.html_path).read_text()
