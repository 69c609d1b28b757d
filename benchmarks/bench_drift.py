"""Drift-verdict time and peak memory: our sampled Evidently report vs the defaults.

Run from the repository root::

    .venv/bin/python benchmarks/bench_drift.py            # full: 10k, 100k, 1M rows (about 6-8 min)
    .venv/bin/python benchmarks/bench_drift.py --quick    # 1 repeat, no Evidently preset at 1M (about 2 min)
    .venv/bin/python benchmarks/bench_drift.py --sizes 1000000 --variants ours-task,scipy-ks   # the 1M case only

Data: 20 standard-normal columns; 5 of them shifted by 0.1-0.5 std in the current window.
The current window has N rows, the reference min(N, 100k) rows; both are Parquet files
written once per size. Variants, each measured in a fresh subprocess (peak RSS of that
process via ``os.wait4``):

* ``ours``: ``compute_drift`` (seeded samples of <= 50k rows, Evidently report with the
  DataDriftPreset using KS per column, quality metrics, full-data quality checks);
* ``ours-task``: ``run_drift_report.fn`` end to end: read the files, verdict, write HTML + JSON;
* ``evidently-preset``: Evidently's default ``DataDriftPreset`` on the full frames (the baseline);
* ``scipy-ks``: ``scipy.stats.ks_2samp`` per column on the full frames (the reference verdict).

Times: ``verdict s`` is the median of the computation alone (after imports and reading);
``import s`` and ``read s`` are the process's imports and Parquet reads; ``process s`` is
the whole subprocess, interpreter start included. ``vs preset`` is the preset's verdict
time divided by the variant's. ``= full KS`` says whether the variant's set of drifted
columns equals the one of scipy KS on all rows (the preset uses Wasserstein distance by
default, so it may legitimately differ).

The sampled-verdict check (printed last, for ``ours-task``; it was the test suite's 1M-row case):
at 1M current rows the window is sampled, the drifted columns are exactly f00-f04 and those of
scipy KS on all rows, the verdict is ``no_drift`` (5 of 20 < drift_share 0.5) and every stable
column's p-value is above the policy's threshold. The script exits 1 when the check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = (10_000, 100_000, 1_000_000)
REFERENCE_CAP = 100_000
N_COLS = 20
SHIFTS = (0.1, 0.2, 0.3, 0.4, 0.5)
SEED = 45  # the seed of the test case: no stable column crosses p = 0.05 at 1M rows
VARIANTS = ("ours", "ours-task", "evidently-preset", "scipy-ks")


# ----------------------------------------------------------------------------- workers (subprocesses)


def make_data(folder: Path, rows: int) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(SEED)
    cols = [f"f{i:02d}" for i in range(N_COLS)]
    reference = pd.DataFrame(rng.standard_normal((min(rows, REFERENCE_CAP), N_COLS)), columns=cols)
    current = pd.DataFrame(rng.standard_normal((rows, N_COLS)), columns=cols)
    for col, shift in zip(cols, SHIFTS, strict=False):
        current[col] += shift
    reference.to_parquet(folder / "reference.parquet", index=False)
    current.to_parquet(folder / "current.parquet", index=False)


def run_variant(variant: str, folder: Path) -> dict:
    started = time.perf_counter()
    import pandas as pd

    if variant in ("ours", "ours-task"):
        import evidently.metrics  # noqa: F401 - imported here so the verdict time excludes it
        import evidently.presets  # noqa: F401

        from blocks.monitoring_policy import MonitoringPolicy
        from tasks.evidently_drift import compute_drift
        from tasks.evidently_monitoring import run_drift_report
    elif variant == "evidently-preset":
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset
    else:
        from scipy.stats import ks_2samp
    imported = time.perf_counter()

    ref_path, cur_path = folder / "reference.parquet", folder / "current.parquet"
    if variant == "ours-task":
        read = time.perf_counter()
        policy = MonitoringPolicy()
        with tempfile.TemporaryDirectory() as out:
            summary = run_drift_report.fn(str(ref_path), str(cur_path), policy, out)
        drifted = summary.drifted_columns
        done = time.perf_counter()
        shifted = {f"f{i:02d}" for i in range(len(SHIFTS))}
        stable = [score for col, score in summary.column_scores.items() if col not in shifted]
        return {"import_s": imported - started, "read_s": 0.0, "verdict_s": done - read, "drifted": drifted,
                "check": {"sampled": summary.sampled, "rows": [summary.reference_rows, summary.current_rows],
                          "verdict": summary.verdict, "drift_share": summary.drift_share, "stable": len(stable),
                          "stable_min_p": min(stable, default=float("nan")),
                          "threshold": policy.column_threshold}}

    reference, current = pd.read_parquet(ref_path), pd.read_parquet(cur_path)
    read = time.perf_counter()
    if variant == "ours":
        drifted = compute_drift(reference, current, MonitoringPolicy()).summary.drifted_columns
    elif variant == "evidently-preset":
        snapshot = Report([DataDriftPreset()], include_tests=True).run(
            Dataset.from_pandas(current, data_definition=DataDefinition()),
            Dataset.from_pandas(reference, data_definition=DataDefinition()),
        )
        failed = {t["metric_config"]["metric_id"] for t in snapshot.dict()["tests"] if t["status"] == "FAIL"}
        drifted = [m["config"]["column"] for m in snapshot.dict()["metrics"]
                   if m["config"]["type"].endswith(":ValueDrift") and m["id"] in failed]
    else:
        drifted = [c for c in reference.columns
                   if ks_2samp(reference[c].to_numpy(), current[c].to_numpy()).pvalue <= 0.05]
    done = time.perf_counter()
    return {"import_s": imported - started, "read_s": read - imported, "verdict_s": done - read,
            "drifted": sorted(drifted)}


# ----------------------------------------------------------------------------- parent


def spawn(args: list[str]) -> tuple[dict | None, float, float]:
    """Run this script as a worker; return its JSON line, wall seconds and peak RSS (MB)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=errors, text=True)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.stdout.close()
        errors.seek(0)
        err = errors.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(f"worker {args} failed ({proc.returncode}):\n{err[-3000:]}\n")
        return None, wall, usage.ru_maxrss / 1024
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return (json.loads(lines[-1]) if lines else None), wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 repeat; skip the Evidently preset at 1M rows")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="current-window sizes, comma-separated")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="variants to run, comma-separated")
    parser.add_argument("--worker", choices=VARIANTS + ("make-data",), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "make-data":
        make_data(Path(args.folder), args.rows)
        return
    if args.worker:
        print(json.dumps(run_variant(args.worker, Path(args.folder))))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}: choose from {list(VARIANTS)}")
    rows_out = []
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        for size in sizes:
            folder = Path(tmp) / str(size)
            folder.mkdir()
            spawn(["--worker", "make-data", "--folder", str(folder), "--rows", str(size)])
            repeats = 1 if args.quick or size >= 1_000_000 else 3
            results: dict[str, dict] = {}
            for variant in variants:
                if variant == "evidently-preset" and args.quick and size >= 1_000_000:
                    continue
                runs = []
                for _ in range(repeats):
                    result, wall, rss = spawn(["--worker", variant, "--folder", str(folder)])
                    if result is None:
                        break
                    runs.append({**result, "wall_s": wall, "rss_mb": rss})
                    print(f"  {size:>9,} {variant:<17} verdict {result['verdict_s']:6.2f} s  process {wall:6.2f} s"
                          f"  peak {rss:6.0f} MB", flush=True)
                if runs:
                    results[variant] = {
                        key: statistics.median(r[key] for r in runs)
                        for key in ("verdict_s", "import_s", "read_s", "wall_s", "rss_mb")
                    } | {"drifted": runs[0]["drifted"], "repeats": len(runs), "check": runs[0].get("check")}
            truth = set(results.get("scipy-ks", {}).get("drifted", []))
            baseline = results.get("evidently-preset", {}).get("verdict_s")
            for variant, r in results.items():
                rows_out.append((size, min(size, REFERENCE_CAP), variant, r, truth, baseline))

    header = (f"{'current rows':>12} {'ref rows':>8}  {'variant':<17} {'n':>2} {'verdict s':>9} {'import s':>8} "
              f"{'read s':>6} {'process s':>9} {'peak MB':>7} {'vs preset':>9} {'drifted':>7} {'= full KS':>9}")
    print()
    print(header)
    print("-" * len(header))
    for size, ref_rows, variant, r, truth, baseline in rows_out:
        ratio = f"{baseline / r['verdict_s']:.1f}x" if baseline else "-"
        agrees = "yes" if set(r["drifted"]) == truth else "no"
        print(f"{size:>12,} {ref_rows:>8,}  {variant:<17} {r['repeats']:>2} {r['verdict_s']:>9.2f} "
              f"{r['import_s']:>8.2f} {r['read_s']:>6.2f} {r['wall_s']:>9.2f} {r['rss_mb']:>7.0f} {ratio:>9} "
              f"{len(r['drifted']):>7} {agrees:>9}")
    notes = []
    for size, _, variant, r, truth, _ in rows_out:
        extra, missed = sorted(set(r["drifted"]) - truth), sorted(truth - set(r["drifted"]))
        if extra or missed:
            notes.append(f"  {size:>9,} {variant:<17} extra {extra or '-'}  missed {missed or '-'}")
    if notes:
        print("\nDiffers from scipy KS on all rows (shifted columns are f00-f04; under no drift each test "
              "flags a stable column with probability 0.05, on all rows and on a sample alike):")
        print("\n".join(notes))
    if not sampled_verdict_check(rows_out):
        sys.exit(1)


def sampled_verdict_check(rows_out: list[tuple]) -> bool:
    """Print the 1M-row sampled-verdict check of ``ours-task``; return whether it holds (True when not run)."""
    ok = True
    for size, _, variant, r, truth, _ in rows_out:
        check = r.get("check")
        if variant != "ours-task" or not check or size < 1_000_000:
            continue
        shifted = [f"f{i:02d}" for i in range(len(SHIFTS))]
        holds = {
            "sampled": check["sampled"] is True,
            "drifted = f00-f04": sorted(r["drifted"]) == shifted,
            "full KS = f00-f04 (the case itself)": not truth or sorted(truth) == shifted,
            "drifted = full KS": not truth or set(r["drifted"]) == truth,
            "verdict no_drift": check["verdict"] == "no_drift",
            "drift share 0.25": abs(check["drift_share"] - 0.25) < 1e-9,
            "stable p > threshold": check["stable"] == N_COLS - len(SHIFTS)
            and check["stable_min_p"] > check["threshold"],
        }
        print(f"\nSampled-verdict check at {size:,} current rows (reference, current rows {check['rows']}): "
              f"verdict {check['verdict']}, drift share {check['drift_share']:.2f}, smallest stable p-value "
              f"{check['stable_min_p']:.3f} (threshold {check['threshold']})")
        for name, passed in holds.items():
            print(f"  {'ok  ' if passed else 'FAIL'} {name}")
        ok = ok and all(holds.values())
    return ok


if __name__ == "__main__":
    main()
