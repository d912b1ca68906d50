"""Reading whole files: compression, rotation order, years, bad bytes, mail.warn duplicates."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from triage.ingest.maillog import ReadOptions, ReadStats, read_chunks

LINES = [
    "Nov 28 08:00:0{s} mx postfix/smtpd[10{s}]: connect from a.example[192.0.2.{s}]",
    "Nov 28 08:00:0{s} mx postfix/smtpd[10{s}]: disconnect from a.example[192.0.2.{s}] quit=1 "
    "commands=1",
]


def _log(n: int, start: int = 0) -> str:
    out = []
    for i in range(start, start + n):
        h, m, s = 8 + i // 3600, (i // 60) % 60, i % 60
        out.append(f"Nov 28 {h:02d}:{m:02d}:{s:02d} mx postfix/smtpd[{1000 + i}]: "
                   f"connect from a.example[192.0.2.{i % 250 + 1}]")
    return "\n".join(out) + "\n"


def _events(paths: list[Path], opts: ReadOptions | None = None,
            stats: ReadStats | None = None) -> pl.DataFrame:
    chunks = list(read_chunks(paths, opts or ReadOptions(timezone="UTC"), stats))
    return pl.concat([c.events for c in chunks])


def _touch(path: Path, when: datetime) -> None:
    os.utime(path, (when.timestamp(), when.timestamp()))


def test_rotated_and_compressed_files_read_in_content_order(tmp_path: Path) -> None:
    parts = [_log(100, 0), _log(100, 100), _log(100, 200), _log(100, 300)]
    files = {
        "mail.log.3.xz": lambda p, t: p.write_bytes(lzma.compress(t.encode())),
        "mail.log.2.gz": lambda p, t: p.write_bytes(gzip.compress(t.encode())),
        "mail.log.1.bz2": lambda p, t: p.write_bytes(bz2.compress(t.encode())),
        "mail.log": lambda p, t: p.write_text(t),
    }
    paths = []
    for (name, write), text in zip(files.items(), parts, strict=True):
        path = tmp_path / name
        write(path, text)
        _touch(path, datetime(2026, 11, 28, 12, tzinfo=UTC))
        paths.append(path)
    single = tmp_path / "single.log"
    single.write_text("".join(parts))
    _touch(single, datetime(2026, 11, 28, 12, tzinfo=UTC))
    # given in a scrambled order, read as if one file
    got = _events([paths[1], paths[3], paths[0], paths[2]])
    want = _events([single])
    assert got.height == 400
    assert got["time"].to_list() == want["time"].to_list()
    assert got["client_ip"].to_list() == want["client_ip"].to_list()
    assert got["time"].is_sorted()


def test_year_inferred_from_mtime_with_december_rollover(tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    path.write_text("Dec 31 23:59:58 mx postfix/smtpd[1]: connect from a.example[192.0.2.1]\n"
                    "Jan  1 00:00:01 mx postfix/smtpd[2]: connect from a.example[192.0.2.2]\n")
    _touch(path, datetime(2027, 1, 1, 0, 5, tzinfo=UTC))
    times = _events([path])["time"].to_list()
    assert times == [datetime(2026, 12, 31, 23, 59, 58, tzinfo=UTC),
                     datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC)]


def test_never_a_date_in_the_future(tmp_path: Path) -> None:
    # a file last written in March holds no line from later in that year
    path = tmp_path / "mail.log"
    path.write_text("Nov 28 10:00:00 mx postfix/smtpd[1]: connect from a.example[192.0.2.1]\n"
                    "Mar  2 10:00:00 mx postfix/smtpd[2]: connect from a.example[192.0.2.2]\n")
    _touch(path, datetime(2027, 3, 2, 10, 30, tzinfo=UTC))
    times = _events([path])["time"].to_list()
    assert [t.year for t in times] == [2026, 2027]
    assert all(t <= datetime(2027, 3, 3, tzinfo=UTC) for t in times)


def test_explicit_year_rolls_over(tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    path.write_text("Dec 31 23:59:58 mx postfix/smtpd[1]: connect from a.example[192.0.2.1]\n"
                    "Jan  1 00:00:01 mx postfix/smtpd[2]: connect from a.example[192.0.2.2]\n")
    times = _events([path], ReadOptions(year=2019, timezone="UTC"))["time"].to_list()
    assert [t.year for t in times] == [2019, 2020]


def test_traditional_stamps_use_the_configured_zone(tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    path.write_text("Jul  1 12:00:00 mx postfix/smtpd[1]: connect from a.example[192.0.2.1]\n"
                    "2026-07-01T12:00:01+02:00 mx postfix/smtpd[2]: connect from "
                    "a.example[192.0.2.2]\n")
    opts = ReadOptions(year=2026, timezone="Europe/Berlin")
    times = _events([path], opts)["time"].to_list()
    assert times == [datetime(2026, 7, 1, 10, 0, 0, tzinfo=UTC),
                     datetime(2026, 7, 1, 10, 0, 1, tzinfo=UTC)]


def test_bad_bytes_become_unparsed_rows_with_reasons(tmp_path: Path) -> None:
    good = b"Nov 28 08:00:00 mx postfix/smtpd[1]: connect from a.example[192.0.2.1]"
    data = b"\n".join([
        good,
        b"Nov 28 08:00:01 mx postfix/smtpd[2]: connect from a\x00b[192.0.2.2]",
        b"Nov 28 08:00:02 mx postfix/smtpd[3]: connect from \xff\xfe[192.0.2.3]",
        b"Nov 28 08:00:03 mx postfix/smtpd[4]: connect from " + b"x" * 20000 + b"[192.0.2.4]",
        good.replace(b"[1]", b"[5]") + b"\r",
        b"",
        b"Nov 28 08:00:04 mx postfix/smtpd[6]: connect from a.exa",
    ])
    path = tmp_path / "mail.log"
    path.write_bytes(data)
    stats = ReadStats()
    chunks = list(read_chunks([path], ReadOptions(year=2026, timezone="UTC"), stats))
    events = pl.concat([c.events for c in chunks])
    unparsed = pl.concat([c.unparsed for c in chunks])
    reasons = dict(zip(unparsed["line_no"].to_list(), unparsed["reason"].to_list(), strict=True))
    assert events["line_no"].to_list() == [1, 5]  # CRLF line parses
    assert reasons[2] == "NUL byte in line"
    assert reasons[3] == "invalid UTF-8"
    assert reasons[4] == "overlong line"
    assert reasons[7].startswith("truncated")
    assert stats.lines == 7
    assert all(len(line) <= 512 for line in unparsed["line"].to_list())


def test_mail_warn_lines_are_not_counted_twice(tmp_path: Path) -> None:
    warn_line = ("Nov 28 08:00:05 mx postfix/smtpd[9]: warning: non-SMTP command from "
                 "a.example[192.0.2.9]: GET / HTTP/1.1\n")
    log = tmp_path / "mail.log"
    log.write_text(_log(10) + warn_line + _log(10, 10))
    warn = tmp_path / "mail.warn"
    # the same warning, plus one from before mail.log begins
    early = warn_line.replace("08:00:05", "07:00:00").replace("[9]", "[8]")
    warn.write_text(early + warn_line)
    for p in (log, warn):
        _touch(p, datetime(2026, 11, 28, 12, tzinfo=UTC))
    stats = ReadStats()
    events = _events([warn, log], stats=stats)
    warnings = events.filter(pl.col("kind") == "non_smtp_command")
    assert warnings["pid"].sort().to_list() == [8, 9]
    assert stats.skipped_duplicate_lines == 1


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    from triage.errors import InputError

    with pytest.raises(InputError, match="no such log file"):
        _events([tmp_path / "nope.log"])


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_many_chunks_give_the_same_events_as_one(tmp_path: Path, workers: int) -> None:
    """Blocks parsed one at a time or several at once on a thread pool: the same events."""
    path = tmp_path / "mail.log"
    path.write_text(_log(3000))
    _touch(path, datetime(2026, 11, 28, 12, tzinfo=UTC))
    one = _events([path])
    many = _events([path], ReadOptions(timezone="UTC", chunk_bytes=4096, workers=workers))
    assert many.height == one.height == 3000
    assert many["line_no"].to_list() == list(range(1, 3001))
    assert many.equals(one)


_LOGLINES = Path("/work/shared/reference/loglines/exporters/hsn723_test_lines.log")


@pytest.mark.skipif(not _LOGLINES.is_file(), reason=f"reference line set not found: {_LOGLINES}")
def test_reference_exporter_lines_all_parse() -> None:
    """A line set from another project's test suite: every line is a known event."""
    stats = ReadStats()
    chunks = list(read_chunks([_LOGLINES], ReadOptions(year=2026, timezone="UTC"), stats))
    unparsed = pl.concat([c.unparsed for c in chunks])
    assert stats.lines == 67
    assert unparsed.height == 0, unparsed["line"].to_list()
