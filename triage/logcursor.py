"""Read only what is new in a set of mail.log files, across rotation and compression.

A cursor remembers, per log file, its device and inode, its size, how far it was read (an
offset in the file's *content*, i.e. after decompression), how many lines that was, and a
hash of its first line. The next scan matches each file it finds to a cursor:

* by the first-line hash: ``mail.log`` renamed to ``mail.log.1`` keeps its inode and its first
  line; ``mail.log.1`` compressed to ``mail.log.2.gz`` gets a new inode but keeps its content,
  so the content offset is still right;
* a file whose first line is new (a fresh ``mail.log`` after rotation, or one emptied by
  copytruncate and written again) is read from the start.

Only whole lines are consumed: a line still being written stays for the next scan. When two
files have the same first line (``mail.log.2`` and ``mail.log.2.gz`` while logrotate is
compressing) only one of them is read.

This module reads files through the log reader's public pieces (``open_log``,
``parse_block``); it adds the start offset that the reader's ``read_chunks`` does not have.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the reader (polars) is imported when something is read
    from datetime import datetime

    from triage.ingest.maillog import Chunk, ReadOptions, ReadStats

__all__ = ["Cursor", "LogInput", "head_hash", "plan_reads", "read_new", "unchanged"]

_HEAD_LIMIT = 64 * 1024  # a first line longer than this is hashed by its first 64 KiB


@dataclass(frozen=True)
class Cursor:
    """How far one log file has been read."""

    path: str
    dev: int
    ino: int
    size: int          # size on disk when it was last read (compressed size for .gz)
    offset: int        # bytes of content consumed (whole lines only)
    lines: int         # lines consumed
    head: str | None   # sha256 of the first line (with its newline); None while it has none

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Cursor:
        return cls(**data)  # type: ignore[arg-type]


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

    def cursor(self) -> Cursor:
        """The cursor to save after this file was read."""
        return Cursor(str(self.path), self.dev, self.ino, self.size,
                      self.done_offset, self.done_lines, self.head)


def head_hash(path: str | Path) -> str | None:
    """sha256 of the file's first complete line (decompressed), or None if it has none yet."""
    from triage.ingest.maillog import open_log

    with open_log(path) as f:
        line = f.readline(_HEAD_LIMIT)
    if not line.endswith(b"\n") and len(line) < _HEAD_LIMIT:
        return None
    return hashlib.sha256(line).hexdigest()


def plan_reads(paths: Sequence[str | Path], cursors: Sequence[Cursor],
               opts: ReadOptions | None = None) -> list[LogInput]:
    """Match the files found now to the saved cursors; oldest content first.

    >>> plan_reads([], [])
    []
    """
    if not paths:
        return []
    if unchanged(paths, cursors):
        # Nothing to read: skip ordering by content time, which reads every file's head.
        return [LogInput(Path(c.path), c.dev, c.ino, c.size, c.head, c.offset, c.lines)
                for c in cursors]
    from triage.ingest.maillog import ReadOptions, order_files

    # mail.warn / mail.err copies of mail.log lines are not read (see maillog.order_files).
    primary, _secondary = order_files(paths, opts or ReadOptions())
    by_head: dict[str, list[Cursor]] = {}
    for c in cursors:
        if c.head is not None:
            by_head.setdefault(c.head, []).append(c)
    by_inode = {(c.dev, c.ino): c for c in cursors}
    inputs: list[LogInput] = []
    chosen: dict[str, LogInput] = {}
    for path in primary:
        st = path.stat()
        item = LogInput(path, st.st_dev, st.st_ino, st.st_size, head_hash(path))
        prev = _match(item, by_head, by_inode)
        if prev is not None:
            item.offset, item.lines = prev.offset, prev.lines
        if item.head is not None and item.head in chosen:
            first = chosen[item.head]
            # Prefer the file that continues a cursor by inode (the one still written to).
            if prev is not None and (prev.dev, prev.ino) == (item.dev, item.ino):
                first.duplicate_of, chosen[item.head] = item.path, item
            else:
                item.duplicate_of = first.path
        elif item.head is not None:
            chosen[item.head] = item
        inputs.append(item)
    return inputs


def unchanged(paths: Sequence[str | Path], cursors: Sequence[Cursor]) -> bool:
    """True when the files are exactly the ones last read, each with the size it had: then
    there is nothing new to read (a line that was incomplete then still is)."""
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
    compressed = _is_compressed(item.path)
    if not compressed and item.size < best.offset:
        return None  # shorter than what was read: rewritten from scratch with the same line
    return best


def _is_compressed(path: Path) -> bool:
    with open(path, "rb") as f:
        magic = f.read(6)
    return magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic == b"\xfd7zXZ\x00"


Progress = Callable[[Path, int, int, int | None], None]  # path, lines, bytes, total bytes


def read_new(inputs: Sequence[LogInput], opts: ReadOptions | None = None,
             stats: ReadStats | None = None, progress: Progress | None = None,
             workers: int | None = None) -> Iterator[Chunk]:
    """Parse the unread part of each input, in order; update ``done_offset``/``done_lines``.

    A file's cursor fields are final once the iterator has moved past its last chunk.
    """
    from triage.ingest.maillog import ReadOptions, ReadStats, reference_time

    opts = opts or ReadOptions()
    stats = stats if stats is not None else ReadStats()
    if workers is None:
        workers = 1 if opts.year is not None else max(1, min(4, os.cpu_count() or 1))
    for item in inputs:
        item.done_offset, item.done_lines = item.offset, item.lines
        if item.duplicate_of is not None:
            continue
        stats.files.append(str(item.path))
        total = None if _is_compressed(item.path) else item.size
        ref = reference_time(item.path, opts)
        for chunk, end in _parse_from(item, ref, opts, workers):
            item.done_offset = end
            item.done_lines += chunk.lines
            stats.lines += chunk.lines
            stats.events += chunk.kinds.height
            stats.unparsed += chunk.unparsed.height
            stats.programs.update(chunk.programs)
            if progress is not None:
                progress(item.path, item.done_lines - item.lines, end - item.offset,
                         None if total is None else total - item.offset)
            yield chunk


def _blocks(path: Path, offset: int, chunk_bytes: int) -> Iterator[tuple[bytes, int]]:
    """Blocks of whole lines from ``offset`` on, with the content offset after each block.
    A trailing line without its newline is left unread (it may still be being written)."""
    from triage.ingest.maillog import iter_blocks

    for block, _, end in iter_blocks(path, chunk_bytes, offset, partial_tail=False):
        yield block, end


def _parse_from(item: LogInput, ref: datetime, opts: ReadOptions, workers: int
                ) -> Iterator[tuple[Chunk, int]]:
    """Parse blocks on a thread pool (polars releases the GIL), yielded in order."""
    from triage.ingest.maillog import parse_block

    line_no = item.lines + 1
    year_state: dict[str, int] = {}
    if workers == 1:
        for block, end in _blocks(item.path, item.offset, opts.chunk_bytes):
            chunk = parse_block(block, str(item.path), line_no, False, ref, opts, year_state)
            line_no += chunk.lines
            yield chunk, end
        return
    pending: deque[tuple[Future[Chunk], int]] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for block, end in _blocks(item.path, item.offset, opts.chunk_bytes):
            pending.append((pool.submit(parse_block, block, str(item.path), line_no, False,
                                        ref, opts, {}), end))
            line_no += block.count(b"\n")
            while len(pending) > workers:
                fut, pos = pending.popleft()
                yield fut.result(), pos
        while pending:
            fut, pos = pending.popleft()
            yield fut.result(), pos
