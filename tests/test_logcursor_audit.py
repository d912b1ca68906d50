"""Incremental log reading (triage.logcursor) where files misbehave: Dec -> Jan with a fixed
year over several scans, damaged and half-written .gz files, files rewritten in place,
crash holes without newlines, files that vanish mid-scan, unfinished lines of rotated files."""

from __future__ import annotations

import errno
import gzip
import json
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from triage.config import Config
from triage.ingest.maillog import (
    MAX_LINE_BYTES,
    TAIL_BYTES,
    BlockReader,
    ReadOptions,
    ReadStats,
    iter_blocks,
    read_chunks,
)
from triage.logcursor import UNREADABLE, Cursor, LogInput, plan_reads, read_new
from triage.scan import scan

MTIME = datetime(2025, 10, 12, tzinfo=UTC).timestamp()
OPTS = ReadOptions(timezone="UTC", chunk_bytes=4096)


def _lines(n: int, start: datetime = datetime(2025, 3, 3, 10, 0), step: int = 7,
           first: int = 0) -> list[bytes]:
    """``n`` connect lines, one every ``step`` seconds, numbered from ``first``."""
    out = []
    for i in range(first, first + n):
        t = start + timedelta(seconds=step * (i - first))
        out.append(f"{t:%b} {t.day:2d} {t:%H:%M:%S} mx postfix/smtpd[{1000 + i}]: connect "
                   f"from host{i}.example[192.0.2.{i % 250 + 1}]\n".encode())
    return out


def _write(path: Path, data: bytes, mode: str = "wb") -> None:
    with path.open(mode) as f:
        f.write(data)
    os.utime(path, (MTIME, MTIME))


def _gzip(path: Path, data: bytes) -> None:
    path.write_bytes(gzip.compress(data))
    os.utime(path, (MTIME, MTIME))


def _scan_once(d: Path, cursors: list[Cursor], opts: ReadOptions = OPTS,
               workers: int | None = None
               ) -> tuple[list[Cursor], pl.DataFrame, pl.DataFrame, ReadStats, list[LogInput]]:
    """One incremental read of d/mail.log*, as triage scan does it; cursors go through JSON
    like the saved state."""
    loaded = [Cursor.from_json(json.loads(json.dumps(c.to_json()))) for c in cursors]
    inputs = plan_reads(sorted(d.glob("mail.log*")), loaded, opts)
    stats = ReadStats()
    events, unparsed = [], []
    for chunk in read_new(inputs, opts, stats, workers=workers):
        events.append(chunk.events.select("file", "line_no", "time", "pid"))
        unparsed.append(chunk.unparsed)
    out = [i.cursor() for i in inputs if i.duplicate_of is None]
    ev = pl.concat(events) if events else pl.DataFrame(
        schema={"file": pl.String, "line_no": pl.Int64, "time": pl.Datetime("us", "UTC"),
                "pid": pl.Int64})
    un = pl.concat(unparsed) if unparsed else pl.DataFrame(
        schema={"file": pl.String, "line_no": pl.Int64, "reason": pl.String,
                "line": pl.String})
    return out, ev, un, stats, inputs


# -- bug 2: Dec -> Jan with a fixed log year, read over two scans --------------------------


def test_fixed_year_rollover_state_is_kept_between_scans(tmp_path: Path) -> None:
    lines = _lines(40, start=datetime(2025, 12, 31, 23, 58), step=7)
    cut = next(i for i, line in enumerate(lines) if line.startswith(b"Jan"))
    assert 0 < cut < len(lines)
    opts = ReadOptions(year=2025, timezone="UTC", chunk_bytes=4096)
    log = tmp_path / "mail.log"
    _write(log, b"".join(lines[:cut]))
    cursors, first, *_ = _scan_once(tmp_path, [], opts)
    assert first.height == cut
    assert set(first["time"].dt.year()) == {2025}
    _write(log, b"".join(lines[cut:]), "ab")
    cursors, second, *_ = _scan_once(tmp_path, cursors, opts)
    assert second.height == len(lines) - cut
    # the January lines belong to the next year, as when the file is read in one go
    assert set(second["time"].dt.year()) == {2026}
    assert second["time"].min() == (datetime(2025, 12, 31, 23, 58, tzinfo=UTC)
                                    + timedelta(seconds=7 * cut))
    assert cursors[0].month == 1 and cursors[0].year_offset == 1


def test_cursor_saved_by_an_older_version_still_loads() -> None:
    old = {"path": "/var/log/mail.log", "dev": 1, "ino": 2, "size": 300, "offset": 200,
           "lines": 3, "head": "ab" * 32}
    c = Cursor.from_json(old)
    assert (c.offset, c.lines, c.month, c.year_offset, c.tail, c.at_end) == (
        200, 3, None, 0, None, False)
    assert Cursor.from_json(c.to_json()) == c


# -- bug 3: damaged or truncated compressed files ------------------------------------------


def test_truncated_gz_already_read_does_not_stop_the_other_files(tmp_path: Path) -> None:
    """t_gz: mail.log read, rotated to mail.log.1, then compressed into a .gz cut at 3/4
    (disk full, or a crash while logrotate compressed)."""
    lines = _lines(600)
    log = tmp_path / "mail.log"
    _write(log, b"".join(lines[:300]))
    cursors, ev, *_ = _scan_once(tmp_path, [])
    assert ev.height == 300
    log.rename(tmp_path / "mail.log.1")
    _write(log, b"".join(lines[300:400]))
    cursors, ev, *_ = _scan_once(tmp_path, cursors)
    assert ev.height == 100
    raw = gzip.compress((tmp_path / "mail.log.1").read_bytes())
    _write(tmp_path / "mail.log.2.gz", raw[:len(raw) * 3 // 4])
    (tmp_path / "mail.log.1").unlink()
    log.rename(tmp_path / "mail.log.1")
    _write(log, b"".join(lines[400:450]))

    cursors, ev, un, stats, _ = _scan_once(tmp_path, cursors)
    assert ev.height == 50  # mail.log's new lines; mail.log.1 has nothing new
    assert set(ev["file"]) == {str(log)}
    # the .gz cannot be read as far as the last scan read it: said once, counted once
    assert un.select("file", "line_no", "reason").rows() == [
        (str(tmp_path / "mail.log.2.gz"), 301, UNREADABLE)]
    assert len(stats.problems) == 1 and "mail.log.2.gz" in stats.problems[0]
    assert "damaged or truncated compressed data before content byte" in stats.problems[0]
    gz = next(c for c in cursors if c.path.endswith(".gz"))
    assert gz.at_end and gz.lines == 300

    # the next scan does not try again while the .gz stays the same
    _write(log, b"".join(lines[450:460]), "ab")
    cursors, ev, un, stats, inputs = _scan_once(tmp_path, cursors)
    assert ev.height == 10 and un.height == 0 and stats.problems == []
    assert str(tmp_path / "mail.log.2.gz") not in stats.files
    assert next(i for i in inputs if i.path.name == "mail.log.2.gz").skip


@pytest.mark.parametrize("workers", [1, 2])
def test_truncated_gz_gives_what_it_can_and_one_unparsed_row(tmp_path: Path,
                                                            workers: int) -> None:
    lines = _lines(2000)
    log = tmp_path / "mail.log"
    _write(log, b"".join(lines[:100]))
    cursors, ev, *_ = _scan_once(tmp_path, [])
    assert ev.height == 100
    _write(log, b"".join(lines[100:]), "ab")
    raw = gzip.compress(log.read_bytes())
    log.unlink()
    _write(tmp_path / "mail.log.1.gz", raw[:len(raw) * 3 // 4])

    cursors, ev, un, stats, _ = _scan_once(tmp_path, cursors, workers=workers)
    got = ev["line_no"].to_list()
    # whole lines from where the last scan stopped up to the damage, in order, none twice
    assert got == list(range(101, 101 + len(got))) and len(got) > 500
    assert ev["pid"].to_list() == [1000 + n - 1 for n in got]
    assert un.rows() == [(str(tmp_path / "mail.log.1.gz"), 101 + len(got), UNREADABLE,
                          un["line"][0])]
    assert "after content byte" in un["line"][0]
    assert len(stats.problems) == 1 and "cannot be read" in stats.problems[0]
    (c,) = cursors
    assert c.at_end and c.lines == 100 + len(got)


def test_compressed_file_read_to_its_end_is_not_read_again(tmp_path: Path) -> None:
    lines = _lines(300)
    _gzip(tmp_path / "mail.log.1.gz", b"".join(lines[:200]))
    _write(tmp_path / "mail.log", b"".join(lines[200:250]))
    cursors, ev, *_ = _scan_once(tmp_path, [])
    assert ev.height == 250
    _write(tmp_path / "mail.log", b"".join(lines[250:]), "ab")
    cursors, ev, _, stats, inputs = _scan_once(tmp_path, cursors)
    assert ev.height == 50
    assert stats.files == [str(tmp_path / "mail.log")]
    gz = next(i for i in inputs if i.path.name == "mail.log.1.gz")
    assert gz.skip and gz.cursor().lines == 200 and gz.cursor().at_end


def test_scan_with_a_truncated_rotated_gz_commits_and_counts_it(tmp_path: Path) -> None:
    """t_gz: every scan used to fail with "cannot seek to N" until the file rotated out."""
    lines = _lines(600)
    (tmp_path / "spam").mkdir()
    cfg = Config(source=None, logs=(str(tmp_path / "mail.log*"),), spam=(), ham=(),
                 my_hostnames=("mx.example.org",), state_dir=tmp_path / "state",
                 log_timezone="UTC", log_year=2025)
    log = tmp_path / "mail.log"
    _write(log, b"".join(lines[:300]))
    assert scan(cfg, rules=False).lines == 300
    log.rename(tmp_path / "mail.log.1")
    _write(log, b"".join(lines[300:400]))
    assert scan(cfg, rules=False).lines == 100
    raw = gzip.compress((tmp_path / "mail.log.1").read_bytes())
    _write(tmp_path / "mail.log.2.gz", raw[:len(raw) // 2])
    (tmp_path / "mail.log.1").unlink()
    log.rename(tmp_path / "mail.log.1")
    _write(log, b"".join(lines[400:450]))
    result = scan(cfg, rules=False)
    assert result.committed and result.lines == 50
    _write(log, b"".join(lines[450:460]), "ab")
    result = scan(cfg, rules=False)
    assert result.committed and result.lines == 10


# -- bug 4: a .gz that logrotate is still writing --------------------------------------------


@pytest.mark.parametrize("keep", [10, 25])
def test_gz_with_only_its_header_is_skipped_until_it_can_be_read(tmp_path: Path,
                                                                 keep: int) -> None:
    lines = _lines(300)
    log = tmp_path / "mail.log"
    _write(log, b"".join(lines[:200]))
    cursors, ev, *_ = _scan_once(tmp_path, [])
    log.rename(tmp_path / "mail.log.1")
    _write(log, b"".join(lines[200:250]))
    raw = gzip.compress((tmp_path / "mail.log.1").read_bytes())
    _write(tmp_path / "mail.log.2.gz", raw[:keep])  # logrotate has written the header so far
    cursors, ev, un, stats, _ = _scan_once(tmp_path, cursors)
    assert ev.height == 50 and un.height == 0
    assert len(stats.problems) == 1 and "mail.log.2.gz" in stats.problems[0]
    assert "not read in this scan" in stats.problems[0]
    # logrotate finishes: the .gz continues mail.log.1's cursor, nothing is read twice
    _write(tmp_path / "mail.log.2.gz", raw)
    (tmp_path / "mail.log.1").unlink()
    _write(log, b"".join(lines[250:]), "ab")
    cursors, ev, un, stats, _ = _scan_once(tmp_path, cursors)
    assert ev.height == 50 and un.height == 0 and stats.problems == []


def test_scan_with_a_half_written_gz_does_not_abort(tmp_path: Path) -> None:
    lines = _lines(100)
    (tmp_path / "spam").mkdir()
    cfg = Config(source=None, logs=(str(tmp_path / "mail.log*"),), spam=(), ham=(),
                 my_hostnames=("mx.example.org",), state_dir=tmp_path / "state",
                 log_timezone="UTC")
    _write(tmp_path / "mail.log", b"".join(lines))
    _write(tmp_path / "mail.log.1.gz", gzip.compress(b"".join(_lines(50, first=500)))[:12])
    result = scan(cfg, rules=False)
    assert result.committed and result.lines == 100
    # the scan says which file it left for later
    assert len(result.problems) == 1 and "mail.log.1.gz" in result.problems[0]


# -- bug 5: a file rewritten in place with the same first line ----------------------------


def test_file_rewritten_in_place_is_read_again_from_the_start(tmp_path: Path) -> None:
    lines = _lines(400)
    log = tmp_path / "mail.log"
    _write(log, b"".join(lines[:200]))
    cursors, ev, *_ = _scan_once(tmp_path, [])
    assert ev.height == 200
    kept = [line for i, line in enumerate(lines[:200]) if i % 10 != 5]  # sed -i '/.../d'
    _write(log, b"".join(kept) + b"".join(lines[200:]))  # then written on past the offset
    assert log.stat().st_size > cursors[0].offset
    cursors, ev, un, stats, _ = _scan_once(tmp_path, cursors)
    # no fragment of a line, no line lost: the file is read as new content
    assert un.height == 0
    assert ev.height == len(kept) + 200
    assert ev["pid"].to_list()[-200:] == [1000 + i for i in range(200, 400)]
    assert len(stats.problems) == 1 and "read again from the start" in stats.problems[0]
    assert cursors[0].lines == len(kept) + 200


def test_unchanged_content_resumes_where_it_stopped(tmp_path: Path) -> None:
    lines = _lines(300)
    log = tmp_path / "mail.log"
    _write(log, b"".join(lines[:120]))
    cursors, *_ = _scan_once(tmp_path, [])
    assert cursors[0].tail is not None
    # copied over with the same content (a restore), then written on
    _write(log, b"".join(lines[:120]) + b"".join(lines[120:]))
    cursors, ev, un, stats, _ = _scan_once(tmp_path, cursors)
    assert ev["line_no"].to_list() == list(range(121, 301))
    assert un.height == 0 and stats.problems == []


def test_cursor_without_tail_resumes_and_gets_one(tmp_path: Path) -> None:
    lines = _lines(200)
    log = tmp_path / "mail.log"
    _write(log, b"".join(lines[:100]))
    cursors, *_ = _scan_once(tmp_path, [])
    old = {k: v for k, v in cursors[0].to_json().items()
           if k not in ("month", "year_offset", "tail", "at_end")}
    _write(log, b"".join(lines[100:]), "ab")
    cursors, ev, _, stats, _ = _scan_once(tmp_path, [Cursor.from_json(old)])
    assert ev["line_no"].to_list() == list(range(101, 201)) and stats.problems == []
    assert cursors[0].tail is not None


# -- bug 11: a very long line without a newline (a crash's NUL hole) -----------------------


def _holed(path: Path, hole: int, before: list[bytes], after: list[bytes]) -> None:
    with path.open("wb") as f:
        f.write(b"".join(before))
        f.truncate(f.tell() + hole)  # a hole of NULs, no newline
        f.seek(0, 2)
        f.write(b"\n" + b"".join(after))
    os.utime(path, (MTIME, MTIME))


def test_overlong_line_is_not_held_whole(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    before, after = _lines(30), _lines(30, first=30)
    hole = 64 * MAX_LINE_BYTES
    _holed(log, hole, before, after)
    blocks = list(iter_blocks(log, 4096))
    # memory: no block holds much more than a read and one (cut) line
    assert max(len(b) for b, _, _ in blocks) <= 4096 + MAX_LINE_BYTES + 1
    # the offsets still count the file's bytes, and every line is there once
    assert blocks[-1][2] == log.stat().st_size
    assert sum(b.count(b"\n") for b, _, _ in blocks) == 61
    long_lines = [line for b, _, _ in blocks for line in b.split(b"\n")
                  if len(line) > MAX_LINE_BYTES]
    assert [len(line) for line in long_lines] == [MAX_LINE_BYTES + 1]


def _reference_lines(content: bytes, offset: int, partial_tail: bool
                     ) -> list[tuple[bytes, int]]:
    """(line as BlockReader hands it on, content offset after it) from ``offset``: whole
    lines, overlong ones cut to MAX_LINE_BYTES + 1 bytes."""
    out, pos = [], offset
    while pos < len(content):
        nl = content.find(b"\n", pos)
        if nl < 0:
            if partial_tail:
                out.append((content[pos:][:MAX_LINE_BYTES + 1], len(content)))
            break
        line = content[pos:nl]
        out.append((line[:MAX_LINE_BYTES + 1] + b"\n", nl + 1))
        pos = nl + 1
    return out


def _cut(data: bytes) -> bytes:
    return b"\n".join(line[:MAX_LINE_BYTES + 1] for line in data.split(b"\n"))


def test_block_reader_cuts_overlong_lines_and_keeps_true_tails(tmp_path: Path) -> None:
    rng = random.Random(11)
    path = tmp_path / "mail.log"
    for _ in range(60):
        parts = []
        for _ in range(rng.randint(0, 12)):
            n = rng.choice([0, 5, 80, MAX_LINE_BYTES, MAX_LINE_BYTES + 1, 3 * MAX_LINE_BYTES,
                            rng.randint(1, 5 * MAX_LINE_BYTES)])
            parts.append(bytes(rng.choice(b"abcxyz") for _ in range(n % 977))
                         * (n // 977 + 1))
        content = b"\n".join(parts) + rng.choice([b"", b"\n", b"partial"])
        path.write_bytes(content)
        for chunk in (1000, 4096, 16384, 70000):
            for offset in {0, content.find(b"\n") + 1}:
                tail = rng.choice([True, False])
                with BlockReader(path, chunk, offset, tail, lead=TAIL_BYTES) as reader:
                    assert reader.lead == content[max(0, offset - TAIL_BYTES):offset]
                    got = []
                    for block, _, end in reader:
                        assert reader.tail == content[max(0, end - TAIL_BYTES):end]
                        assert len(block) <= chunk + 2 * (MAX_LINE_BYTES + 2)
                        got.append((block, end))
                lines = _reference_lines(content, offset, tail)
                # an overlong line may also come whole (when one read holds it)
                assert _cut(b"".join(b for b, _ in got)) == b"".join(line for line, _ in lines)
                ends = {e for _, e in lines}
                assert all(e in ends for _, e in got)
                assert (got[-1][1] if got else offset) == (lines[-1][1] if lines else offset)


@pytest.mark.parametrize("chunk", [4096, 1 << 20])
def test_overlong_line_is_one_unparsed_row_and_numbering_goes_on(tmp_path: Path,
                                                                 chunk: int) -> None:
    log = tmp_path / "mail.log"
    before, after = _lines(30), _lines(30, first=30)
    _holed(log, 3 * chunk + 5000, before, after)
    opts = ReadOptions(timezone="UTC", chunk_bytes=chunk)
    stats = ReadStats()
    chunks = list(read_chunks([log], opts, stats))
    unparsed = pl.concat([c.unparsed for c in chunks])
    assert unparsed.select("line_no", "reason").rows() == [(31, "overlong line")]
    assert unparsed["line"][0].startswith("\\0\\0") and len(unparsed["line"][0]) <= 1024
    events = pl.concat([c.events for c in chunks])
    assert events["line_no"].to_list() == list(range(1, 31)) + list(range(32, 62))
    assert stats.lines == 61


def test_cursor_after_an_overlong_line_resumes_without_a_false_rewrite(tmp_path: Path
                                                                      ) -> None:
    log = tmp_path / "mail.log"
    # a long line of varied text: its cut-short form differs from its end in the file
    long = os.urandom(3 * MAX_LINE_BYTES).hex().encode()
    _write(log, b"".join(_lines(10)) + long + b"\n" + b"".join(_lines(1, first=10)))
    # the file ends just after the long line's end: the saved tail is the long line's end
    cursors, ev, un, *_ = _scan_once(tmp_path, [])
    assert un["reason"].to_list() == ["overlong line"] and ev.height == 11
    _write(log, b"".join(_lines(20, first=11)), "ab")
    cursors, ev, un, stats, _ = _scan_once(tmp_path, cursors)
    assert stats.problems == [] and un.height == 0
    assert ev["line_no"].to_list() == list(range(13, 33))


# -- minor: a file that vanishes during the scan; unfinished lines of rotated files --------


def test_file_vanishing_between_planning_and_reading_keeps_its_cursor(tmp_path: Path
                                                                      ) -> None:
    lines = _lines(300)
    log = tmp_path / "mail.log"
    _write(log, b"".join(lines[:100]))
    cursors, *_ = _scan_once(tmp_path, [])
    _write(log, b"".join(lines[100:200]), "ab")
    log.rename(tmp_path / "mail.log.1")
    _write(log, b"".join(lines[200:]))
    inputs = plan_reads(sorted(tmp_path.glob("mail.log*")), cursors, OPTS)
    # logrotate compresses mail.log.1 while the scan runs
    _gzip(tmp_path / "mail.log.2.gz", (tmp_path / "mail.log.1").read_bytes())
    (tmp_path / "mail.log.1").unlink()
    stats = ReadStats()
    n = sum(c.lines for c in read_new(inputs, OPTS, stats))
    assert n == 100  # mail.log
    assert len(stats.problems) == 1 and "rotated away" in stats.problems[0]
    cursors = [i.cursor() for i in inputs if i.duplicate_of is None]
    # the next scan reads the rotated lines from the .gz, from where the cursor stood
    cursors, ev, un, stats, _ = _scan_once(tmp_path, cursors)
    assert ev["pid"].to_list() == [1000 + i for i in range(100, 200)]
    assert un.height == 0


def test_file_renamed_over_between_planning_and_reading_is_not_misread(tmp_path: Path
                                                                       ) -> None:
    lines = _lines(300)
    log = tmp_path / "mail.log"
    _write(log, b"".join(lines[:100]))
    log.rename(tmp_path / "mail.log.1")
    _write(log, b"".join(lines[100:150]))
    cursors, ev, *_ = _scan_once(tmp_path, [])
    assert ev.height == 150
    _write(log, b"".join(lines[150:200]), "ab")
    inputs = plan_reads(sorted(tmp_path.glob("mail.log*")), cursors, OPTS)
    # logrotate runs now: mail.log.1 -> mail.log.2.gz, mail.log -> mail.log.1
    _gzip(tmp_path / "mail.log.2.gz", (tmp_path / "mail.log.1").read_bytes())
    (tmp_path / "mail.log.1").unlink()
    log.rename(tmp_path / "mail.log.1")
    _write(log, b"".join(lines[200:250]))
    stats = ReadStats()
    pids = [p for c in read_new(inputs, OPTS, stats) for p in c.events["pid"].to_list()]
    # the planned mail.log.1 is gone: the file now under its name is not read as if it were
    assert pids == []
    assert len(stats.problems) == 2 and all("rotated away" in p for p in stats.problems)
    cursors = [i.cursor() for i in inputs if i.duplicate_of is None]
    cursors, ev, un, stats, _ = _scan_once(tmp_path, cursors)
    assert sorted(ev["pid"].to_list()) == [1000 + i for i in range(150, 250)]
    assert un.height == 0 and stats.problems == []


def test_listed_file_that_is_gone_when_planning_is_left_out(tmp_path: Path) -> None:
    _write(tmp_path / "mail.log", b"".join(_lines(10)))
    inputs = plan_reads([tmp_path / "mail.log.1", tmp_path / "mail.log"], [], OPTS)
    assert [i.path.name for i in inputs] == ["mail.log"]


def test_unfinished_last_line_of_a_rotated_file_is_reported_once(tmp_path: Path) -> None:
    lines = _lines(300)
    log = tmp_path / "mail.log"
    _write(log, b"".join(lines[:100]) + lines[100][:20])
    cursors, ev, un, *_ = _scan_once(tmp_path, [])
    assert ev.height == 100 and un.height == 0  # still being written: left for later
    log.rename(tmp_path / "mail.log.1")  # rotated; the line is never finished
    _write(log, b"".join(lines[101:200]))
    cursors, ev, un, *_ = _scan_once(tmp_path, cursors)
    assert ev.height == 99
    assert un.select("file", "line_no", "reason", "line").rows() == [
        (str(tmp_path / "mail.log.1"), 101, "truncated: no newline at end of file",
         lines[100][:20].decode())]
    one = next(c for c in cursors if c.path.endswith("mail.log.1"))
    assert one.lines == 101 and one.offset == (tmp_path / "mail.log.1").stat().st_size
    # compressed later: read to its end already, nothing again
    _gzip(tmp_path / "mail.log.2.gz", (tmp_path / "mail.log.1").read_bytes())
    (tmp_path / "mail.log.1").unlink()
    log.rename(tmp_path / "mail.log.1")
    _write(log, b"".join(lines[200:]))
    cursors, ev, un, *_ = _scan_once(tmp_path, cursors)
    assert ev.height == 100 and un.height == 0


class _FailingRead:
    """A file whose reads fail as on a bad disk."""

    def __init__(self, path: Path) -> None:
        self.f = path.open("rb")

    def read(self, n: int = -1) -> bytes:
        raise OSError(errno.EIO, "Input/output error")

    def seek(self, pos: int, whence: int = 0) -> int:
        return self.f.seek(pos, whence)

    def fileno(self) -> int:
        return self.f.fileno()

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> _FailingRead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_read_error_in_a_plain_file_is_reported_and_read_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import triage.ingest.logfile as logfile

    _write(tmp_path / "mail.log.1", b"".join(_lines(50)))
    _write(tmp_path / "mail.log", b"".join(_lines(50, first=50)))
    inputs = plan_reads(sorted(tmp_path.glob("mail.log*")), [], OPTS)
    real = logfile.open_log

    def failing(path: str | Path) -> object:
        return _FailingRead(Path(path)) if Path(path).name == "mail.log.1" else real(path)

    monkeypatch.setattr(logfile, "open_log", failing)
    stats = ReadStats()
    assert sum(c.lines for c in read_new(inputs, OPTS, stats)) == 50
    assert len(stats.problems) == 1 and "next scan" in stats.problems[0]
    one = next(i for i in inputs if i.path.name == "mail.log.1").cursor()
    assert one.lines == 0 and not one.at_end
