"""Run every benchmark and write ``benchmarks/RESULTS.md`` (``make bench``; not part of ``make test``).

Each benchmark measures its figures and its baseline in the same run and prints their ratio;
this runner adds the date, the commit and the machine (cores, memory, load before the run) and
keeps each benchmark's printed table as it is, with the exact command and its wall time. A
benchmark that fails or runs past its time limit is reported as such in the file, and the
runner exits non-zero.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only serving,drift] [--out benchmarks/RESULTS.md]

``--quick`` passes each benchmark its short settings (fewer rows, repeats or seconds) for a
figure in minutes rather than the better part of an hour.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name -> (full arguments, quick arguments, time limit in seconds).
BENCHMARKS: dict[str, tuple[list[str], list[str], int]] = {
    "import": ([], ["--repeats", "3"], 600),
    "data_stage": ([], ["--rows", "20000", "--repeats", "2"], 1200),
    "preprocessing": ([], ["--rows", "50000", "--repeats", "2"], 1800),
    "training": ([], ["--rows", "50000", "--repeats", "2"], 2400),
    "trials": ([], ["--repeats", "1", "--rows", "5000"], 2400),
    "registry": ([], ["--repeats", "10"], 900),
    "serving": ([], ["--models", "lr", "--connections", "8", "--duration", "5", "--repeat", "1"], 2400),
    "load": ([], ["--seconds", "20", "--connections", "8"], 1200),
    "drift": ([], ["--quick"], 2400),
    "monitoring_performance": ([], ["--quick"], 1800),
    "loop": ([], ["--repeats", "1"], 1800),
    "postgres": ([], ["--runs", "8", "--rounds", "1"], 1200),
}


def machine() -> str:
    """Cores, memory and load of this machine, for the file's header."""
    import psutil

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{psutil.cpu_count(logical=True)} cores, {psutil.virtual_memory().total / 2**30:.1f} GiB, "
            f"load average {load} before the run, Python {sys.version.split()[0]}")


def commit() -> str:
    """The commit measured (``-dirty`` when the tree has changes)."""
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    return sha.strip() + ("-dirty" if dirty.strip() else "")


def run(name: str, args: list[str], limit_s: int) -> tuple[str, float, str]:
    """Run one benchmark; return (status, wall seconds, its output)."""
    cmd = [sys.executable, f"benchmarks/bench_{name}.py", *args]
    started = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit_s)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return f"timed out after {limit_s} s", time.monotonic() - started, out
    status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
    output = done.stdout + ("" if done.returncode == 0 else "\n--- stderr (tail) ---\n" + done.stderr[-3000:])
    return status, time.monotonic() - started, output


def main() -> int:
    """Run the benchmarks and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark's short settings")
    parser.add_argument("--only", default=None, help="comma-separated names: " + ",".join(BENCHMARKS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    lines = [f"# Benchmark results ({'quick' if args.quick else 'full'} settings)", "",
             f"- date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
             f"- commit: {commit()}", f"- machine: {machine()}",
             "- each benchmark prints its figures beside a baseline measured in the same run, and their ratio; "
             "the machine is shared, so read medians and ratios, not single timings", ""]
    failed = 0
    for name in names:
        full, quick, limit = BENCHMARKS[name]
        chosen = quick if args.quick else full
        print(f"running bench_{name} {' '.join(chosen)} ...", flush=True)
        status, seconds, output = run(name, chosen, limit)
        failed += status != "ok"
        lines += [f"## bench_{name}", "", f"`.venv/bin/python benchmarks/bench_{name}.py {' '.join(chosen)}`"
                  f" — {status}, {seconds:.0f} s", "", "```", output.rstrip(), "```", ""]
        Path(args.out).write_text("\n".join(lines) + "\n")  # written after each one: a later failure keeps these
        print(f"  {status} in {seconds:.0f} s", flush=True)
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
