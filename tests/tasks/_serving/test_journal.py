"""The inference log's journal: acknowledged records survive SIGKILL, compaction is idempotent, bad records isolated.

Real processes killed with SIGKILL, real files. The writer tests start no server; the last two run a real
``bentoml serve`` under load from real HTTP clients, kill a worker or the leader with SIGKILL mid-load, and
check that the inference log then holds every request answered 200, once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psutil
import pytest

from tasks.inference_log import (
    JOURNAL_DIR,
    REJECTED_DIR,
    InferenceLogWriter,
    JournalError,
    inference_log_stats,
    read_inference_log,
    recover_journals,
)

pytest.register_assert_rewrite("serving_fixtures", "serving_models")
from serving_fixtures import wait_for  # noqa: E402

pytest_plugins = ["serving_fixtures", "serving_models"]

ROOT = Path(__file__).resolve().parents[3]
T0 = dt.datetime(2026, 3, 1, 23, 59, 59, tzinfo=dt.UTC)
TYPES = {"tenure": "double", "calls": "long", "plan": "string"}

WRITER_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
from tasks.inference_log import InferenceLogWriter
writer = InferenceLogWriter({log_dir!r}, "churn", "1", flush_interval_s=0.05, feature_types={types!r},
                            passthrough_types={{"event_time": "datetime"}}, journal=True)
i = 0
while True:
    ids = [f"r{{i}}-{{k}}" for k in range(3)]
    records = [{{"tenure": float(i), "calls": i, "plan": "basic", "event_time": "2026-03-01T10:00:00Z"}}] * 3
    writer.append(writer.encode(ids, [{t0} + i * 0.01] * 3, records, ["yes", "no", "yes"], [0.9, 0.2, 0.7],
                                [{{"no": 0.1, "yes": 0.9}}] * 3), 3)
    print(" ".join(ids), flush=True)  # acknowledged only once the journal write returned
    i += 1
"""


def start_writer(log_dir: Path) -> subprocess.Popen:
    script = WRITER_SCRIPT.format(root=str(ROOT), log_dir=str(log_dir), types=TYPES, t0=T0.timestamp())
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True)


def acknowledged_until_killed(proc: subprocess.Popen, at_least: int) -> list[str]:
    acked: list[str] = []
    deadline = time.monotonic() + 60
    while len(acked) < at_least:
        line = proc.stdout.readline()
        assert line, "the writer process stopped on its own"
        acked += line.split()
        assert time.monotonic() < deadline, "the writer did not acknowledge enough records within 60s"
    proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read()  # what it printed before it died (communicate() would skip the buffered part)
    proc.wait(30)
    return acked + rest.split()


def test_acknowledged_records_survive_sigkill_and_are_recovered_exactly_once(tmp_path: Path) -> None:
    proc = start_writer(tmp_path)
    acked = acknowledged_until_killed(proc, at_least=3000)
    assert proc.returncode == -signal.SIGKILL
    frame_before = read_inference_log(tmp_path, "churn")
    recovered = recover_journals(tmp_path, "churn")
    assert recovered["writers"] == 1 and recovered["rejected"] == 0
    frame = read_inference_log(tmp_path, "churn")
    logged = frame["request_id"].tolist()
    assert len(logged) == len(set(logged)), "duplicates in the log"
    missing = set(acked) - set(logged)
    assert not missing, f"{len(missing)} acknowledged records lost"
    # At most the batch being written when the process died is logged without having been acknowledged.
    assert len(set(logged) - set(acked)) <= 3
    assert len(frame) > len(frame_before)
    row = frame.iloc[0]
    assert row["prediction"] == "yes" and json.loads(row["probabilities"]) == {"no": 0.1, "yes": 0.9}
    assert row["event_time"] == pd.Timestamp("2026-03-01T10:00:00Z") and str(frame["calls"].dtype) == "int64"
    assert not any((tmp_path / "churn" / JOURNAL_DIR).iterdir()), "the recovered journal was not removed"
    assert recover_journals(tmp_path, "churn")["writers"] == 0  # nothing left to recover
    assert inference_log_stats(tmp_path, "churn")["written"] == len(logged)


def test_compaction_repeated_after_a_crash_overwrites_instead_of_duplicating(tmp_path: Path) -> None:
    proc = start_writer(tmp_path)
    acknowledged_until_killed(proc, at_least=300)
    journal = next((tmp_path / "churn" / JOURNAL_DIR).iterdir())
    copy = tmp_path / "journal-copy"
    shutil.copytree(journal, copy)
    recover_journals(tmp_path, "churn")
    first = read_inference_log(tmp_path, "churn")["request_id"].tolist()
    shutil.copytree(copy, journal)  # as if the recovering process had died before removing the segments
    assert recover_journals(tmp_path, "churn")["writers"] == 1
    again = read_inference_log(tmp_path, "churn")["request_id"].tolist()
    assert sorted(again) == sorted(first) and len(again) == len(set(again))


def test_a_live_writers_journal_is_left_alone_and_compacted_by_its_thread(tmp_path: Path) -> None:
    writer = InferenceLogWriter(tmp_path, "churn", "2", flush_interval_s=0.05, feature_types=TYPES, journal=True)
    try:
        writer.log(["a", "b"], [T0.timestamp()] * 2, [{"tenure": 1.0, "calls": 1, "plan": "x"}] * 2, [1, 0],
                   [0.8, 0.3])
        assert recover_journals(tmp_path, "churn")["writers"] == 0  # its lock is held: alive
        deadline = time.monotonic() + 30
        while writer.written < 2:
            assert time.monotonic() < deadline, "the writer thread did not compact its journal within 30s"
            time.sleep(0.02)
    finally:
        writer.close()
    assert read_inference_log(tmp_path, "churn")["request_id"].tolist() == ["a", "b"]
    assert not (tmp_path / "churn" / JOURNAL_DIR / writer.writer_id).exists()


@pytest.mark.parametrize("journal", [True, False])
def test_one_value_the_log_cannot_hold_never_takes_the_other_records_with_it(tmp_path: Path, journal: bool) -> None:
    writer = InferenceLogWriter(tmp_path, "churn", "1", start_thread=False, feature_types=TYPES, journal=journal)
    good = [{"tenure": float(i), "calls": i, "plan": "p"} for i in range(5)]
    bad = {"tenure": 1.0, "calls": 2**63, "plan": "p"}  # JSON holds it, int64 does not (the service refuses it)
    writer.log([f"g{i}" for i in range(5)] + ["bad"], [T0.timestamp()] * 6, [*good, bad], [0] * 6, [0.5] * 6)
    writer.close()
    frame = read_inference_log(tmp_path, "churn")
    assert sorted(frame["request_id"]) == [f"g{i}" for i in range(5)]
    kept = [json.loads(p.read_text()) for p in (tmp_path / "churn" / REJECTED_DIR).glob("*.json")]
    assert [k["record"]["i"] for k in kept] == ["bad"] and kept[0]["reason"]
    stats = inference_log_stats(tmp_path, "churn")
    assert (stats["written"], stats["rejected"], stats["dropped"]) == (5, 1, 0)


def test_a_full_disk_is_a_journal_error_and_the_journal_stays_usable(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder = tmp_path / "small"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True)
    writer = None
    try:
        ballast = folder / "ballast"
        ballast.write_bytes(b"\0" * 600_000)
        writer = InferenceLogWriter(folder, "churn", "1", start_thread=False, feature_types=TYPES, journal=True)
        big = [{"tenure": 1.0, "calls": 1, "plan": "x" * 50_000}]
        acked = []
        with pytest.raises(JournalError, match="cannot be written"):
            for i in range(40):
                writer.log([f"r{i}"], [T0.timestamp()], big, [1], [0.5])
                acked.append(f"r{i}")
        assert acked, "nothing fitted before the disk was full"
        ballast.unlink()  # space comes back: the writer goes on, and what was acknowledged reaches the log
        writer.log(["after"], [T0.timestamp()], [{"tenure": 2.0, "calls": 2, "plan": "y"}], [0], [0.1])
        writer.close()
        logged = read_inference_log(folder, "churn")["request_id"].tolist()
        assert set(acked) <= set(logged) and "after" in logged and len(logged) == len(set(logged))
        assert len(logged) == len(acked) + 1  # the record refused with the error is not in the log
    finally:
        if writer is not None:
            writer.close()
        subprocess.run(["umount", str(folder)], check=True)


class Load:
    """Clients sending single records with unique request ids until stopped; they remember what was answered."""

    def __init__(self, url: str, record: dict[str, Any], prefix: str, clients: int = 6) -> None:
        self.url, self.record, self.prefix = url, record, prefix
        self.answered: set[str] = set()
        self.failed: set[str] = set()
        self.sent = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def _client(self, index: int) -> None:
        n = 0
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                rid = f"{self.prefix}-{index}-{n}"
                n += 1
                try:
                    status = client.post("/predict", json=self.record, headers={"x-request-id": rid}).status_code
                except httpx.HTTPError:
                    status = None
                with self.lock:
                    self.sent += 1
                    (self.answered if status == 200 else self.failed).add(rid)
                if status != 200:
                    time.sleep(0.05)  # the server is down for a moment: do not spin

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def wait_answered(self, count: int, deadline_s: float = 60) -> None:
        wait_for(lambda: len(self.answered) >= count, deadline_s, f"{count} answered requests")


def workers_of(pid: int) -> list[psutil.Process]:
    """The live ``bentoml serve`` workers under a leader (a killed worker stays a zombie until reaped)."""
    out = []
    for proc in psutil.Process(pid).children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and "_bentoml_impl.worker" in " ".join(proc.cmdline()):
                out.append(proc)
        except psutil.Error:
            continue
    return out


def assert_log_holds_exactly_the_answered(block: Any, model_name: str, load: Load) -> None:
    recover_journals(block.log_path(), model_name)
    log = read_inference_log(block.log_path(), model_name)
    ids = log.loc[log["request_id"].str.startswith(f"{load.prefix}-"), "request_id"].tolist()
    assert len(ids) == len(set(ids)), "a prediction is in the log twice"
    lost = load.answered - set(ids)
    assert not lost, f"{len(lost)} of {len(load.answered)} acknowledged predictions are not in the log"
    # Only a request in flight when a process died may be logged without its answer reaching the client.
    unanswered = set(ids) - load.answered
    assert unanswered <= load.failed, f"logged but never sent: {sorted(unanswered - load.failed)[:5]}"


def test_sigkill_of_a_worker_under_load_loses_no_acknowledged_prediction(runtime_block: Any,
                                                                         dataset_models: Any) -> None:
    from tasks.bentoml_serving import start_bento_server, stop_bento_server

    model = dataset_models["cancer"]
    backend = start_bento_server.fn(runtime_block, model.bento)
    record = {k: float(v) for k, v in model.frame.iloc[0].items()}
    try:
        with Load(backend.url, record, "kill-worker") as load:
            load.wait_answered(300)
            [worker] = workers_of(backend.pid)
            os.kill(worker.pid, signal.SIGKILL)
            # The leader starts a new worker; its inference log writer recovers the dead worker's journal.
            wait_for(lambda: [w for w in workers_of(backend.pid) if w.pid != worker.pid] or None, 60,
                     "a new worker")
            before = len(load.answered)
            load.wait_answered(before + 200, deadline_s=120)
        assert load.failed, "no request was in flight or refused while the worker was down: the kill proved nothing"
    finally:
        stop_bento_server.fn(runtime_block, backend, drain=False)
    assert_log_holds_exactly_the_answered(runtime_block, model.bento.model_name, load)


def test_sigkill_of_the_backend_leader_under_load_loses_no_acknowledged_prediction(runtime_block: Any,
                                                                                   dataset_models: Any) -> None:
    from tasks.bentoml_serving import start_bento_server, stop_bento_server

    model = dataset_models["cancer"]
    backend = start_bento_server.fn(runtime_block, model.bento)
    record = {k: float(v) for k, v in model.frame.iloc[1].items()}
    try:
        with Load(backend.url, record, "kill-leader") as load:
            load.wait_answered(300)
            workers = workers_of(backend.pid)
            os.kill(backend.pid, signal.SIGKILL)
            wait_for(lambda: not psutil.pid_exists(backend.pid) or psutil.Process(backend.pid).status() == "zombie",
                     30, "the leader to die")
            sent = load.sent  # the clients keep sending: to the orphaned worker, or to a closed port
            wait_for(lambda: load.sent >= sent + 100, 60, "100 more requests after the kill")
        for worker in workers:  # the orphaned worker (issue 8: serving-ops stops the whole group)
            if worker.is_running():
                worker.kill()
                worker.wait(30)
    finally:
        stop_bento_server.fn(runtime_block, backend, drain=False)
    assert_log_holds_exactly_the_answered(runtime_block, model.bento.model_name, load)
