"""Move what the bench wrote in minutes onto a simulated multi-week time line.

The bench replays one session at a time and records, for each, the byte range of mail.log its
lines occupy (connect to disconnect, plus delivery), the real second it started and the
simulated time it stands for. Each line then gets ``simulated start + (its real stamp - real
start)``: lines of one session stay together and in order, and sessions keep the corpus's
arrival pattern. The text after the timestamp is never changed.

Delivered messages get the same treatment: the date of our own Received header (which names
the queue id) becomes the simulated delivery time, and so do the Maildir file name and mtime.
"""

from __future__ import annotations

import email.utils
import gzip
import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

_STAMP = re.compile(rb"^([A-Z][a-z]{2}) ([ \d]\d) (\d\d):(\d\d):(\d\d) ")
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


@dataclass
class Segment:
    start: int  # byte offsets in mail.log
    end: int
    real_start: datetime  # whole second, UTC (the bench's syslog clock)
    sim_start: datetime


def parse_stamp(line: bytes, near: datetime) -> datetime | None:
    """The traditional syslog stamp of ``line`` as UTC, in the year that puts it nearest
    ``near`` (syslog stamps carry no year)."""
    m = _STAMP.match(line)
    if not m:
        return None
    mon = _MONTHS.index(m.group(1).decode()) + 1
    day, hh, mm, ss = (int(g) for g in m.groups()[1:])
    cands = [datetime(near.year + k, mon, day, hh, mm, ss, tzinfo=UTC) for k in (-1, 0, 1)]
    return min(cands, key=lambda d: abs(d - near))


def format_stamp(when: datetime) -> bytes:
    return f"{_MONTHS[when.month - 1]} {when.day:2d} {when:%H:%M:%S}".encode()


def rewrite(log: bytes, segments: list[Segment]) -> list[tuple[datetime, bytes]]:
    """Every line of ``log`` with its simulated time and rewritten stamp.

    Lines before the first segment (daemon start-up) are placed just before it, lines after
    the last one (shutdown) just after it.
    """
    out: list[tuple[datetime, bytes]] = []
    if not segments:
        return out
    bounds = [(s.start, s.end, s) for s in segments]
    first, last = segments[0], segments[-1]
    pos = 0
    seg_i = 0
    for raw in log.splitlines(keepends=True):
        line_start = pos
        pos += len(raw)
        while seg_i < len(bounds) and line_start >= bounds[seg_i][1]:
            seg_i += 1
        if seg_i < len(bounds) and line_start >= bounds[seg_i][0]:
            seg = bounds[seg_i][2]
        elif line_start < first.start:
            seg = first
        else:
            seg = last if seg_i >= len(bounds) else segments[max(seg_i - 1, 0)]
        real = parse_stamp(raw, seg.real_start)
        if real is None:  # a continuation or garbage line: keep it where it is
            out.append((out[-1][0] if out else seg.sim_start, raw))
            continue
        when = seg.sim_start + (real - seg.real_start)
        out.append((when, format_stamp(when) + raw[15:]))
    return out


def write_rotated(lines: list[tuple[datetime, bytes]], out_dir: Path, first_monday: date,
                  weeks: int) -> list[Path]:
    """Split by ISO week like a weekly logrotate with ``compress`` and ``delaycompress``: the
    last week is mail.log, the one before mail.log.1, older ones mail.log.N.gz. Each file's
    mtime is the time of its last line."""
    start = datetime.combine(first_monday, datetime.min.time(), UTC)
    buckets: list[list[tuple[datetime, bytes]]] = [[] for _ in range(weeks)]
    for when, line in lines:
        k = min(max((when - start) // timedelta(weeks=1), 0), weeks - 1)
        buckets[k].append((when, line))
    for old in out_dir.glob("mail.log*"):
        old.unlink()
    written = []
    for age, bucket in enumerate(reversed(buckets)):
        data = b"".join(line for _, line in bucket)
        if age == 0:
            path = out_dir / "mail.log"
            path.write_bytes(data)
        elif age == 1:
            path = out_dir / "mail.log.1"
            path.write_bytes(data)
        else:
            path = out_dir / f"mail.log.{age}.gz"
            # A fixed gzip header time keeps regenerated files byte-identical for equal input.
            with open(path, "wb") as raw, gzip.GzipFile(
                    filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
                gz.write(data)
        if bucket:
            t = bucket[-1][0].timestamp()
            os.utime(path, (t, t))
        written.append(path)
    return written


def shift_header_dates(data: bytes, delta: timedelta) -> bytes:
    """Move the Date header and the dates of the Received headers by ``delta``, so that
    what the sender's side wrote agrees with the simulated arrival time."""
    head, sep, body = data.partition(b"\n\n")

    def fix_date(value: str) -> str:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return value
        if when is None or when.tzinfo is None:
            return value
        return " " + email.utils.format_datetime(when + delta)

    def fix(m: re.Match[bytes]) -> bytes:
        name, value = m.group(1), m.group(2).decode("latin-1")
        if name.lower() == b"date":
            return name + b":" + fix_date(value).encode("latin-1")
        before, semi, after = value.rpartition(";")
        if not semi:
            return m.group(0)
        return name + b":" + (before + ";" + fix_date(after)).encode("latin-1")

    head = re.sub(rb"(?mi)^(Date|Received):((?:.*)(?:\n[ \t].*)*)", fix, head)
    return head + sep + body


_OUR_RECEIVED = re.compile(
    rb"^(Received: from .*(?:\n[ \t].*)*?\n[ \t]+by (?P<by>\S+) \(Postfix\) with E?SMTP id "
    rb"(?P<qid>[0-9A-F]+)(?:\n[ \t].*)*?;)(?P<date>[^\n]*)", re.M)


def warp_message(path: Path, delivered_at: dict[str, datetime], dest_dir: Path,
                 seen: bool) -> Path | None:
    """Copy one delivered Maildir file to ``dest_dir``/new or /cur with its simulated time."""
    data = path.read_bytes()
    m = _OUR_RECEIVED.search(data)
    if not m or m.group("qid").decode() not in delivered_at:
        return None
    when = delivered_at[m.group("qid").decode()]
    stamp = (" " + email.utils.format_datetime(when) + " (UTC)").encode()
    data = data[:m.start("date")] + stamp + data[m.end("date"):]
    # Procmail names files "<epoch>.<pid>_<n>.<host>"; only the epoch moves.
    rest = path.name.split(".", 1)[1]
    name = f"{int(when.timestamp())}.{rest}" + (":2,S" if seen else "")
    out = dest_dir / ("cur" if seen else "new") / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    os.utime(out, (when.timestamp(), when.timestamp()))
    return out
