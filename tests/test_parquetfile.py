"""ParquetAppender: row groups written by polars, spliced into one file with one footer."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triage.parquetfile import ParquetAppender, ThriftError, decode_struct, encode_struct

SCHEMA = pl.Schema({"line_no": pl.Int64, "helo": pl.String, "time": pl.Datetime("us", "UTC"),
                    "domains": pl.List(pl.String), "ok": pl.Boolean, "delay": pl.Float64})

# attacker-controlled text: the Parquet magic, NUL, a footer-length-like tail, non-ASCII
HOSTILE = ["PAR1", "a\x00b", "PAR1\x08\x00\x00\x00PAR1", "ünïcødé.example", "", " " * 300]


def _frame(start: int, n: int) -> pl.DataFrame:
    return pl.DataFrame({
        "line_no": range(start, start + n),
        "helo": [HOSTILE[i % len(HOSTILE)] if i % 5 else None for i in range(start, start + n)],
        "time": [None if i % 7 == 0 else 1_700_000_000_000_000 + i for i in range(start,
                                                                                   start + n)],
        "domains": [[f"d{i % 3}.example"] * (i % 3) for i in range(start, start + n)],
        "ok": [i % 2 == 0 for i in range(start, start + n)],
        "delay": [i / 10 for i in range(start, start + n)],
    }, schema=SCHEMA)


def _append(path: Path, sizes: list[int], group: int, **options: object) -> pl.DataFrame:
    """Write frames of ``sizes`` rows (consecutive line numbers) with a ParquetAppender of
    ``group``-row groups; return what the file should hold."""
    app = ParquetAppender(path, SCHEMA, group, **options)
    parts, start = [], 0
    for n in sizes:
        parts.append(_frame(start, n))
        app.write(parts[-1])
        start += n
    app.close()
    return pl.concat(parts)


def _footer(data: bytes) -> bytes:
    n = int.from_bytes(data[-8:-4], "little")
    return data[-8 - n:-8]


def test_footer_written_by_polars_decodes_and_encodes_to_the_same_bytes() -> None:
    buf = io.BytesIO()
    _frame(0, 1000).write_parquet(buf, statistics=True, row_group_size=300)
    footer = _footer(buf.getvalue())
    fields, end = decode_struct(footer)
    assert end == len(footer)
    assert encode_struct(fields) == footer


@pytest.mark.parametrize("sizes", [[1], [5000], [3, 4000, 1, 2500, 7000], [999] * 12])
def test_appended_frames_read_back_as_one_table(tmp_path: Path, sizes: list[int]) -> None:
    path = tmp_path / "t.parquet"
    expected = _append(path, sizes, 2000, compression="zstd", compression_level=1)
    start = expected.height
    assert pl.read_parquet(path).equals(expected)
    table = pq.read_table(path)  # a second, independent reader
    assert table.num_rows == expected.height
    assert table.column("helo").to_pylist() == expected["helo"].to_list()
    meta = pq.ParquetFile(path).metadata
    groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
    assert sum(g.num_rows for g in groups) == expected.height
    assert all(g.num_rows >= 2000 for g in groups[:-1])
    # row-group statistics point at the right rows: readers prune with them
    offset = 0
    for g in groups:
        stats = g.column(0).statistics
        assert (stats.min, stats.max) == (offset, offset + g.num_rows - 1)
        offset += g.num_rows
    last = max(0, start - 3)
    assert pl.scan_parquet(path).filter(pl.col("line_no") >= last).collect()[
        "line_no"].to_list() == list(range(last, start))


def test_no_rows_gives_an_empty_file_with_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    app = ParquetAppender(path, SCHEMA, 2000)
    app.write(_frame(0, 0))
    app.close()
    back = pl.read_parquet(path)
    assert back.height == 0 and back.schema == SCHEMA


def test_bad_thrift_is_a_clear_error() -> None:
    with pytest.raises(ThriftError):
        decode_struct(b"\x15")  # a field header and no value
    with pytest.raises(ThriftError):
        decode_struct(b"\x18\xff\xff\x03ab")  # a string longer than the data


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=8),
       st.integers(min_value=1, max_value=50))
def test_any_cut_of_the_rows_gives_the_same_table(tmp_path_factory: pytest.TempPathFactory,
                                                    sizes: list[int], group: int) -> None:
    path = tmp_path_factory.mktemp("p") / "t.parquet"
    expected = _append(path, sizes, group)
    assert pl.read_parquet(path).equals(expected)


def test_fields_not_kept_are_skipped_whatever_their_type() -> None:
    inner = [[1, 5, 7], [2, 8, b"x"]]
    fields = [[1, 1, None], [2, 5, -3], [3, 8, b"abc"], [4, 9, (5, [1, 2, 300])],
              [5, 2, None], [6, 12, inner], [7, 11, (8, 6, [(b"k", 2**40)])],
              [8, 9, (1, [1, 2, 1])], [40, 6, 5]]
    data = encode_struct(fields)
    assert decode_struct(data) == (fields, len(data))
    kept, end = decode_struct(data, keep=frozenset({2, 5, 40}))
    assert kept == [[2, 5, -3], [5, 2, None], [40, 6, 5]] and end == len(data)
