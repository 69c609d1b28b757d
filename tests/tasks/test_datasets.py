"""Dataset files: CSV, Parquet and JSON Lines by suffix or by content, clear errors, one stored format."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from tests_support import file_md5

from tasks.datasets import detect_format, read_dataset, stage_dataset, write_dataset
from tasks.exceptions import DataVersioningError
from tasks.sample_data import read_frame


def _macro() -> pd.DataFrame:
    """statsmodels' macrodata with a date string column built from year and quarter."""
    import statsmodels.api as sm

    frame = sm.datasets.macrodata.load_pandas().data
    frame["date"] = [f"{int(y)}-{3 * int(q) - 2:02d}-01" for y, q in zip(frame.year, frame.quarter, strict=True)]
    return frame.drop(columns=["year", "quarter"])


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".pq", ".jsonl", ".ndjson"])
def test_round_trip_every_format_keeps_date_strings(tmp_path: Path, suffix: str) -> None:
    frame = _macro()
    path = tmp_path / f"macro{suffix}"
    write_dataset(frame, path)
    back = read_dataset(path)
    assert list(back.columns) == list(frame.columns)
    assert back["date"].tolist() == frame["date"].tolist()  # CSV / JSONL dates stay strings
    assert back["date"].dtype == object
    pd.testing.assert_series_equal(back["realgdp"], frame["realgdp"], check_exact=False)


@pytest.mark.parametrize(("written", "named"), [("csv", "parquet"), ("parquet", "csv"), ("jsonl", "csv"),
                                                ("csv", "jsonl"), ("parquet", "data")])
def test_content_decides_when_the_suffix_lies(tmp_path: Path, written: str, named: str) -> None:
    from palmerpenguins import load_penguins

    frame = load_penguins()
    path = tmp_path / f"penguins.{named}"
    write_dataset(frame, path, fmt=written)
    assert detect_format(path) == written
    back = read_frame(path)  # the old alias reads it too
    assert back.shape == frame.shape
    assert back["species"].tolist() == frame["species"].tolist()


def test_csv_named_parquet_was_read_as_parquet_before(tmp_path: Path) -> None:
    """Old failure: pd.read_parquet on a CSV named .parquet ("Parquet magic bytes not found")."""
    path = tmp_path / "train.parquet"
    _macro().to_csv(path, index=False)
    with pytest.raises(Exception, match="(?i)magic bytes"):
        pd.read_parquet(path)
    assert read_dataset(path).shape == (203, 13)


def test_csv_parse_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "users_export.csv"
    path.write_text("a,b,c\n1,2,3\n4,5,6\n7,8,9,10,11\n")
    with pytest.raises(DataVersioningError) as err:
        read_dataset(path)
    message = str(err.value)
    assert str(path) in message and "Line 4" in message and "7,8,9,10,11" in message


def test_missing_empty_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(DataVersioningError, match="does not exist"):
        read_dataset(tmp_path / "nope.csv")
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    with pytest.raises(DataVersioningError, match=r"empty \(0 bytes\)"):
        read_dataset(empty)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"\x00\x01\x02garbage" * 10)
    with pytest.raises(DataVersioningError, match="junk.parquet is binary but not Parquet"):
        read_dataset(junk)


def test_broken_parquet_names_the_users_file(tmp_path: Path) -> None:
    path = tmp_path / "truncated.parquet"
    _macro().to_parquet(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataVersioningError, match=f"Cannot read dataset {path} as parquet"):
        read_dataset(path)


def test_stage_converts_to_the_dataset_paths_format_deterministically(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    _macro().to_csv(source, index=False)
    first = stage_dataset.fn(str(source), "data/train.parquet", str(tmp_path / "staging"))
    assert first.converted and first.source_format == "csv" and first.stored_format == "parquet"
    assert detect_format(first.path) == "parquet" and Path(first.path).name == f"{first.md5}.parquet"
    assert file_md5(Path(first.path)) == first.md5  # the md5 is of the stored bytes
    again = stage_dataset.fn(str(source), "data/train.parquet", str(tmp_path / "staging"))
    assert again.md5 == first.md5  # the same CSV converts to the same bytes: no spurious new version
    assert read_dataset(first.path)["date"].tolist() == _macro()["date"].tolist()

    parquet = tmp_path / "export.parquet"
    _macro().to_parquet(parquet, index=False)
    copied = stage_dataset.fn(str(parquet), "data/train.parquet", str(tmp_path / "staging"))
    assert not copied.converted and copied.md5 == file_md5(parquet)  # byte for byte


def test_stage_refuses_an_unknown_dataset_suffix(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    _macro().to_csv(source, index=False)
    with pytest.raises(DataVersioningError, match=r"dataset_path 'data/train.xlsx' has suffix '.xlsx'"):
        stage_dataset.fn(str(source), "data/train.xlsx", str(tmp_path / "staging"))
