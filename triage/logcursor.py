"""Read only what is new in a set of mail.log files, across rotation and compression.

A cursor remembers, per log file, its device and inode, its size, how far it was read (an
offset in the file's *content*, i.e. after decompression), how many lines that was, a hash of
its first line and a hash of the content just before the offset. The next scan matches each
file it finds to a cursor:

* by the first-line hash: ``mail.log`` renamed to ``mail.log.1`` keeps its inode and its first
  line; ``mail.log.1`` compressed to ``mail.log.2.gz`` gets a new inode but keeps its content,
  so the content offset is still right;
* a file whose first line is new (a fresh ``mail.log`` after rotation, or one emptied by
  copytruncate and written again) is read from the start, and so is a file whose content
  before the offset changed (rewritten in place with the same first line: ``sed -i``).

Only whole lines are consumed: a line still being written stays for the next scan, except at
the end of a rotated file (compressed, or renamed and followed by a newer file), where it is
reported as truncated. When two files have the same first line (``mail.log.2`` and
``mail.log.2.gz`` while logrotate is compressing) only one of them is read. A compressed file
read to its end is not read again while it stays the same file.

A file that cannot be read does not stop the others: a compressed file that logrotate is
still writing (or that is damaged at its start) is skipped until it can be read; one that
vanishes during the scan keeps its cursor; one whose compressed data is damaged or cut short
gives what can be read and one unparsed row that says where the rest was lost. Each of these
is one line in ``ReadStats.problems``.

With a fixed log year (``ReadOptions.year``), the cursor also keeps the Dec -> Jan rollover
state, so a file read in several scans gets the same years as one read in one go.

This module reads files through the log reader's public pieces (``BlockReader``,
``parse_block``); it adds the start offset that the reader's ``read_chunks`` does not have.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING

from triage.errors import InputError
from triage.ingest.logfile import SECONDARY_NAME

if TYPE_CHECKING:  # the reader (polars) is imported when something is read
    from datetime import datetime

    from triage.ingest.logfile import BlockReader
    from triage.ingest.maillog import Chunk, ReadOptions, ReadStats

__all__ = ["Cursor", "LogInput", "head_hash", "is_secondary", "plan_reads", "primary_logs",
           "read_new", "unchanged"]

_HEAD_LIMIT = 64 * 1024  # a first line longer than this is hashed by its first 64 KiB
# a rotated file's name: mail.log.1, mail.log.2.gz, mail.log-20250301(.gz)
_ROTATED_NAME = re.compile(r"(?:\.\d+|-\d{8}(?:\d{2})?)(?:\.(?:gz|bz2|xz))?$")
UNREADABLE = "unreadable: damaged or truncated compressed file"  # the unparsed row's reason
# mail.warn / mail.err style names (the log reader's pattern; logfile needs no polars)
_SECONDARY_NAME = SECONDARY_NAME


@dataclass(frozen=True)
class Cursor:
    """How far one log file has been read.

    Fields after ``head`` came later: a cursor saved without them loads with their defaults
    (no rollover state, no check of the content before the offset, not known to be at its end).
    """

    path: str
    dev: int
    ino: int
    size: int          # size on disk when it was last read (compressed size for .gz)
    offset: int        # bytes of content consumed (whole lines only)
    lines: int         # lines consumed
    head: str | None   # sha256 of the first line (with its newline); None while it has none
    # Dec -> Jan rollover with a fixed log year: the month of the last line read (None: none
    # yet) and the years added to the log year up to it
    month: int | None = None
    year_offset: int = 0
    tail: str | None = None  # sha256 of the content before offset (its last TAIL_BYTES)
    at_end: bool = False     # read to its end (compressed: nothing more can be read from it)

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Cursor:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})  # type: ignore[arg-type]


@dataclass
class LogInput:
    """One file to read in this scan: where to start, and the cursor it continues (if any)."""

    path: Path
    dev: int
    ino: int
    size: int
    head: str | None
    offset: int = 0
    lines: int = 0
    duplicate_of: Path | None = None  # same content as another file being read: skipped
    done_offset: int = 0              # filled in while reading
    done_lines: int = 0
    prev: Cursor | None = None        # the cursor this file continues
    compressed: bool = False
    rotated: bool = False             # no longer written to: an unfinished last line is final
    skip: bool = False                # not read in this scan (``problem`` says why, if worth it)
    problem: str | None = None
    # the reading state at done_offset (the cursor's until something is read; see Cursor)
    month: int | None = None
    year_offset: int = 0
    tail: str | None = None
    at_end: bool = False

    def continue_from(self, c: Cursor) -> None:
        """Start where ``c`` stopped."""
        self.prev = c
        self.offset = self.done_offset = c.offset
        self.lines = self.done_lines = c.lines
        self.month, self.year_offset, self.tail, self.at_end = (c.month, c.year_offset,
                                                                c.tail, c.at_end)

    def restart(self) -> None:
        """Read from the start: what was read before is no longer there."""
        self.offset = self.done_offset = self.lines = self.done_lines = 0
        self.month, self.year_offset, self.tail, self.at_end = None, 0, None, False

    def cursor(self) -> Cursor:
        """The cursor to save after this file was read."""
        return Cursor(str(self.path), self.dev, self.ino, self.size,
                      self.done_offset, self.done_lines, self.head,
                      self.month, self.year_offset, self.tail, self.at_end)


def head_hash(path: str | Path) -> str | None:
    """sha256 of the file's first complete line (decompressed), or None if it has none yet.

    Raises InputError when the file cannot be opened, or its compressed data cannot be read
    (logrotate has written only its start so far, or it is damaged).
    """
    from triage.ingest.logfile import open_log

    with open_log(path) as f:
        return _head_of(f, path)


def _head_of(f: IO[bytes], path: str | Path) -> str | None:
    """:func:`head_hash` of the file open as ``f`` (from ``open_log``, at its start)."""
    from triage.ingest.logfile import READ_ERRORS

    try:
        line = f.readline(_HEAD_LIMIT)
    except READ_ERRORS as exc:
        raise InputError(f"cannot read its first line: {str(exc) or type(exc).__name__}",
                         file=path) from exc
    if not line.endswith(b"\n") and len(line) < _HEAD_LIMIT:
        return None
    return hashlib.sha256(line).hexdigest()


def is_secondary(path: str | Path) -> bool:
    """Whether ``path`` is a mail.warn / mail.err style log, whose lines are copies of
    mail.log lines: these files are not read here (see :func:`primary_logs`).

    >>> is_secondary("/var/log/mail.warn.1"), is_secondary("/var/log/mail.log.2.gz")
    (True, False)
    """
    return _SECONDARY_NAME.search(Path(path).name) is not None


def primary_logs(paths: Sequence[str | Path]) -> list[str | Path]:
    """``paths`` without the mail.warn / mail.err style files.

    Incremental reading follows the primary logs only: a line in mail.warn or mail.err is
    also in mail.log, so reading those files would count it twice, and they get no cursor.
    (``triage parse`` reads their lines outside the primary files' time span, lines that
    are only there when mail.log has been rotated away; a scan's history starts with the
    mail.log files it first read.)
    """
    return [p for p in paths if not is_secondary(p)]


def plan_reads(paths: Sequence[str | Path], cursors: Sequence[Cursor],
               opts: ReadOptions | None = None) -> list[LogInput]:
    """Match the files found now to the saved cursors; oldest content first.

    A file that has vanished since it was listed is left out, and so are mail.warn /
    mail.err style files (:func:`primary_logs`). A compressed file that cannot be read yet
    is planned with ``skip`` and a ``problem`` (reported by :func:`read_new`).

    >>> plan_reads([], [])
    []
    """
    paths = primary_logs(paths)
    if not paths:
        return []
    if unchanged(paths, cursors):
        # Nothing to read: skip ordering by content time, which reads every file's head.
        same: list[LogInput] = []
        for c in cursors:
            known = LogInput(Path(c.path), c.dev, c.ino, c.size, c.head)
            known.continue_from(c)
            same.append(known)
        return same
    from triage.ingest.maillog import ReadOptions, order_files

    primary, _none = order_files(paths, opts or ReadOptions(), missing_ok=True)
    by_head: dict[str, list[Cursor]] = {}
    for c in cursors:
        if c.head is not None:
            by_head.setdefault(c.head, []).append(c)
    by_inode = {(c.dev, c.ino): c for c in cursors}
    inputs: list[LogInput] = []
    chosen: dict[str, LogInput] = {}
    for path in primary:
        item = _plan_one(path, by_head, by_inode)
        if item is None:
            continue
        item.rotated = item.compressed or (path != primary[-1]
                                           and _ROTATED_NAME.search(path.name) is not None)
        prev = item.prev
        if item.head is not None and not item.problem and item.head in chosen:
            first = chosen[item.head]
            # Prefer the file that continues a cursor by inode (the one still written to).
            if prev is not None and (prev.dev, prev.ino) == (item.dev, item.ino):
                first.duplicate_of, chosen[item.head] = item.path, item
            else:
                item.duplicate_of = first.path
        elif item.head is not None and not item.problem:
            chosen[item.head] = item
        inputs.append(item)
    return inputs


def _plan_one(path: Path, by_head: dict[str, list[Cursor]],
              by_inode: dict[tuple[int, int], Cursor]) -> LogInput | None:
    """The input for ``path`` (None when it has vanished since it was listed)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    from triage.ingest.logfile import is_compressed, open_log

    item = LogInput(path, st.st_dev, st.st_ino, st.st_size, None)
    try:
        with open_log(path) as f:  # one open for both
            item.compressed = is_compressed(f)
            item.head = _head_of(f, path)
    except InputError as exc:
        if not path.exists():
            return None
        if not item.compressed:
            raise  # cannot be opened: a one-line error, as for a missing setting
        # logrotate is compressing into it (only the gzip header so far), or it is damaged
        # at its start: read it once it can be read
        item.skip = True
        item.problem = (f"{exc.message}: not read in this scan (still being written by "
                        "logrotate, or damaged)")
        same = by_inode.get((item.dev, item.ino))
        if same is not None:  # keep its cursor
            item.continue_from(same)
            item.head = same.head
        return item
    prev = _match(item, by_head, by_inode)
    if prev is not None:
        item.continue_from(prev)
        # a compressed file does not change: read to its end once, there is nothing new
        item.skip = (item.compressed and prev.at_end
                     and (prev.dev, prev.ino, prev.size) == (item.dev, item.ino, item.size))
    return item


def unchanged(paths: Sequence[str | Path], cursors: Sequence[Cursor]) -> bool:
    """True when the files are exactly the ones last read, each with the size it had: then
    there is nothing new to read (a line that was incomplete then still is). mail.warn /
    mail.err style files are not read (:func:`primary_logs`), so they do not count."""
    paths = primary_logs(paths)
    known = {c.path: c for c in cursors}
    if len(known) != len(paths):
        return False
    for p in paths:
        c = known.get(str(p))
        try:
            st = os.stat(p)
        except OSError:
            return False
        if c is None or (st.st_dev, st.st_ino, st.st_size) != (c.dev, c.ino, c.size):
            return False
    return True


def _match(item: LogInput, by_head: dict[str, list[Cursor]],
           by_inode: dict[tuple[int, int], Cursor]) -> Cursor | None:
    """The cursor that ``item`` continues, or None when it is new content."""
    if item.head is None:
        return None
    same = by_head.get(item.head, [])
    if not same:
        return None
    inode = by_inode.get((item.dev, item.ino))
    best = inode if inode is not None and inode in same else max(same, key=lambda c: c.offset)
    if not item.compressed and item.size < best.offset:
        return None  # shorter than what was read: rewritten from scratch with the same line
    return best


Progress = Callable[[Path, int, int, int | None], None]  # path, lines, bytes, total bytes


class _Moved(InputError):
    """The file planned under this name is no longer there."""


def read_new(inputs: Sequence[LogInput], opts: ReadOptions | None = None,
             stats: ReadStats | None = None, progress: Progress | None = None,
             workers: int | None = None) -> Iterator[Chunk]:
    """Parse the unread part of each input, in order; update ``done_offset``/``done_lines``
    (and the rest of the state that :meth:`LogInput.cursor` saves).

    A file's cursor fields are final once the iterator has moved past its last chunk. A file
    that cannot be read (or not all of it) is one line in ``stats.problems``; its cursor
    keeps what was read, and the other files are read.
    """
    from triage.ingest.maillog import ReadOptions, ReadStats

    opts = opts or ReadOptions()
    stats = stats if stats is not None else ReadStats()
    if opts.year is not None:
        workers = 1  # the Dec -> Jan rollover is state carried from block to block
    elif workers is None:
        workers = max(1, min(4, os.cpu_count() or 1))
    for item in inputs:
        item.done_offset, item.done_lines = item.offset, item.lines
        if item.duplicate_of is not None:
            continue
        if item.skip:
            if item.problem:
                stats.problems.append(f"{item.path}: {item.problem}")
            continue
        try:
            yield from _read_one(item, opts, stats, progress, workers)
        except InputError as exc:
            yield from _failed(item, exc, stats)


def _read_one(item: LogInput, opts: ReadOptions, stats: ReadStats,
              progress: Progress | None, workers: int) -> Iterator[Chunk]:
    from triage.ingest.maillog import reference_time

    reader = _open(item, opts, stats)
    try:
        stats.files.append(str(item.path))
        total = None if item.compressed else item.size
        ref = reference_time(item.path, opts)
        for chunk, end, tail, year in _parse_from(item, reader, ref, opts, workers):
            item.done_offset = end
            item.done_lines += chunk.lines
            item.tail = hashlib.sha256(tail).hexdigest()
            item.month, item.year_offset = year
            stats.lines += chunk.lines
            stats.events += chunk.kinds.height
            stats.unparsed += chunk.unparsed.height
            stats.programs.update(chunk.programs)
            if progress is not None:
                progress(item.path, item.done_lines - item.lines, end - item.offset,
                         None if total is None else total - item.offset)
            yield chunk
        item.at_end = reader.at_end
    finally:
        reader.close()


def _open(item: LogInput, opts: ReadOptions, stats: ReadStats) -> BlockReader:
    """A reader at the input's offset, after checking that the content before it is what was
    read last time; when it is not (a file rewritten in place with the same first line, then
    written on past the old offset), a reader from the start."""
    from triage.ingest.logfile import TAIL_BYTES, BlockReader

    reader = BlockReader(item.path, opts.chunk_bytes, item.offset, item.rotated, TAIL_BYTES)
    reader.open()
    if reader.identity() != (item.dev, item.ino):
        reader.close()  # logrotate put another file under this name since it was planned
        raise _Moved("replaced by another file since the scan started", file=item.path)
    if not item.offset:
        return reader
    if item.tail is None:  # a cursor saved before tails were: from now on it has one
        if len(reader.lead) == min(item.offset, TAIL_BYTES):
            item.tail = hashlib.sha256(reader.lead).hexdigest()
        return reader
    if hashlib.sha256(reader.lead).hexdigest() == item.tail:
        return reader
    reader.close()
    stats.problems.append(
        f"{item.path}: the content before line {item.lines + 1} is not what the last scan "
        "read (rewritten in place?): read again from the start")
    item.restart()
    reader = BlockReader(item.path, opts.chunk_bytes, 0, item.rotated)
    reader.open()
    return reader


def _failed(item: LogInput, exc: InputError, stats: ReadStats) -> Iterator[Chunk]:
    """Report a file that could not be read (or not all of it); the cursor keeps what was
    read. A damaged compressed file does not heal: it is marked read to its end, and what
    it lost is one unparsed row."""
    if isinstance(exc, _Moved) or not item.path.exists():
        stats.problems.append(f"{item.path}: rotated away before it was read (logrotate ran "
                              "during the scan?): not read now, its cursor is kept for the "
                              "next scan")
        return
    if not item.compressed:
        stats.problems.append(f"{exc}; lines from {item.done_lines + 1} on are read by the "
                              "next scan")
        return
    item.at_end = True
    stats.problems.append(f"{exc}; what follows line {item.done_lines} cannot be read (the "
                          "file is not read again while it stays the same)")
    import polars as pl

    from triage.ingest.kindframes import KindFrames
    from triage.ingest.maillog import UNPARSED_SCHEMA, Chunk

    row = pl.DataFrame([(str(item.path), item.done_lines + 1, UNREADABLE, exc.message)],
                       schema=UNPARSED_SCHEMA, orient="row")
    stats.unparsed += 1
    yield Chunk(kinds=KindFrames({}, str(item.path)), unparsed=row, lines=0,
                file=str(item.path))


def _parse_from(item: LogInput, reader: BlockReader, ref: datetime, opts: ReadOptions,
                workers: int) -> Iterator[tuple[Chunk, int, bytes, tuple[int | None, int]]]:
    """Parse the reader's blocks on a thread pool (polars releases the GIL), yielded in order
    with the content offset after each, the content before that offset (``reader.tail``) and
    the year rollover state there."""
    from triage.ingest.maillog import parse_block

    line_no = item.lines + 1
    path = str(item.path)
    if workers == 1:
        year_state: dict[str, int] = ({} if item.month is None else
                                      {"month": item.month, "offset": item.year_offset})
        for block, is_last, end in reader:
            chunk = parse_block(block, path, line_no, is_last, ref, opts, year_state)
            line_no += chunk.lines
            yield chunk, end, reader.tail, (year_state.get("month"),
                                            year_state.get("offset", 0))
        return
    pending: deque[tuple[Future[Chunk], int, bytes]] = deque()
    blocks = iter(reader)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while True:
            try:
                block, is_last, end = next(blocks)
            except StopIteration:
                break
            except InputError:
                while pending:  # the blocks read before the error are yielded first
                    fut, pos, tail = pending.popleft()
                    yield fut.result(), pos, tail, (None, 0)
                raise
            pending.append((pool.submit(parse_block, block, path, line_no, is_last, ref, opts,
                                        {}), end, reader.tail))
            line_no += block.count(b"\n") + (1 if is_last and not block.endswith(b"\n") else 0)
            del block
            while len(pending) > workers:
                fut, pos, tail = pending.popleft()
                yield fut.result(), pos, tail, (None, 0)
        while pending:
            fut, pos, tail = pending.popleft()
            yield fut.result(), pos, tail, (None, 0)
