"""The step that moves bench output onto the simulated weeks (no Postfix needed)."""

from __future__ import annotations

import gzip
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from postfixbench.timewarp import Segment, rewrite, shift_header_dates, write_rotated

LOG = (b"Nov 28 09:00:00 mx postfix/master[1]: daemon started\n"
       b"Nov 28 09:00:01 mx postfix/smtpd[5]: connect from a.example.com[192.0.2.1]\n"
       b"Nov 28 09:00:02 mx postfix/smtpd[5]: disconnect from a.example.com[192.0.2.1]\n"
       b"Nov 28 09:00:02 mx postfix/smtpd[5]: connect from b.example.com[192.0.2.2]\n"
       b"Nov 28 09:00:03 mx postfix/smtpd[5]: disconnect from b.example.com[192.0.2.2]\n")


def _segments() -> list[Segment]:
    lines = LOG.splitlines(keepends=True)
    a = len(lines[0])
    b = a + len(lines[1]) + len(lines[2])
    real = datetime(2026, 11, 28, 9, 0, 1, tzinfo=UTC)
    return [Segment(a, b, real, datetime(2025, 9, 1, 8, 0, 0, tzinfo=UTC)),
            Segment(b, len(LOG), real + timedelta(seconds=1),
                    datetime(2025, 9, 8, 23, 59, 59, tzinfo=UTC))]


def test_rewrite_moves_sessions_and_keeps_text() -> None:
    out = rewrite(LOG, _segments())
    stamps = [line[:15].decode() for _, line in out]
    assert stamps == ["Sep  1 07:59:59", "Sep  1 08:00:00", "Sep  1 08:00:01",
                      "Sep  8 23:59:59", "Sep  9 00:00:00"]
    assert [line[15:] for _, line in out] == [raw[15:] for raw in LOG.splitlines(True)]


def test_write_rotated_one_file_per_iso_week(tmp_path: Path) -> None:
    out = rewrite(LOG, _segments())
    files = write_rotated(out, tmp_path, date(2025, 9, 1), 2)
    assert [f.name for f in files] == ["mail.log", "mail.log.1"]
    # 2025-09-08 is a Monday: the second session belongs to the second week.
    assert (tmp_path / "mail.log").read_bytes().startswith(b"Sep  8 23:59:59")
    assert (tmp_path / "mail.log").read_bytes().count(b"\n") == 2
    assert (tmp_path / "mail.log.1").read_bytes().count(b"\n") == 3
    files = write_rotated(out * 2, tmp_path, date(2025, 8, 18), 4)
    assert [f.name for f in files] == ["mail.log", "mail.log.1", "mail.log.2.gz",
                                       "mail.log.3.gz"]
    assert gzip.decompress((tmp_path / "mail.log.3.gz").read_bytes()) == b""


def test_shift_header_dates_moves_date_and_received_only() -> None:
    msg = (b"Received: from a (a [192.0.2.1]) by b with ESMTP id X for\n"
           b"    <x@example.com>; Fri, 2 Aug 2002 22:50:11 +0100\n"
           b"Date: Fri, 02 Aug 2002 23:37:59 +0100\nSubject: Date: Fri, 02 Aug 2002\n\n"
           b"Date: Fri, 02 Aug 2002 23:37:59 +0100\n")
    out = shift_header_dates(msg, timedelta(weeks=1)).decode()
    assert "<x@example.com>; Fri, 09 Aug 2002 22:50:11 +0100" in out
    assert "\nDate: Fri, 09 Aug 2002 23:37:59 +0100\n" in out
    assert "Subject: Date: Fri, 02 Aug 2002" in out
    assert out.endswith("\n\nDate: Fri, 02 Aug 2002 23:37:59 +0100\n")
