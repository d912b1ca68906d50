"""Writing tables to files or stdout: jsonl, csv, parquet; streamed chunk by chunk.

Files are written to a temporary name in the target directory, fsynced and renamed into place,
so an interrupted run leaves either the old file or the new one, never a half-written file.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:  # imported where used: `triage --help` and cheap commands stay light
    import polars as pl

    from triage.parquetfile import ParquetAppender

from triage.atomicfile import atomic_target
from triage.errors import InputError

FORMATS = ("jsonl", "csv", "parquet")
# what a writer takes: a frame, or frames produced one at a time
Table: TypeAlias = "pl.DataFrame | Iterable[pl.DataFrame]"


class Format(StrEnum):
    """The --format choices of commands that write tables."""

    jsonl = "jsonl"
    csv = "csv"
    parquet = "parquet"


@contextlib.contextmanager
def atomic_path(target: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it over ``target`` on success
    (``replace=False``: put it there only if ``target`` does not exist, else
    FileExistsError)."""
    target = check_output(target)
    with atomic_target(target, replace=replace) as tmp:
        yield tmp


def check_output(target: Path) -> Path:
    """``target`` (``~`` expanded) if a file can be written there, else a one-line error:
    for commands to call before their work, not after it."""
    target = target.expanduser()
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise InputError("output directory does not exist", file=directory)
    if target.is_dir():
        raise InputError("is a directory: name an output file", file=target)
    return target


class TableWriter:
    """Append polars frames to one output (a file, or stdout for jsonl/csv)."""

    def __init__(self, fmt: str, out: Path | None, empty: pl.DataFrame | None = None):
        if fmt not in FORMATS:
            raise InputError(f"unknown format {fmt!r} (choose {', '.join(FORMATS)})")
        if fmt == "parquet" and out is None:
            raise InputError("--format parquet needs --out FILE")
        self.fmt, self.out = fmt, out
        self.rows = 0
        self._stack = contextlib.ExitStack()
        # the columns of the table: from a typed empty frame when given, else the first chunk
        self._schema: pl.Schema | None = empty.schema if empty is not None else None
        self._parquet: ParquetAppender | None = None
        self._header = True
        self._stream: IO[Any] | None = None
        if out is None:
            self._stream = sys.stdout
            return
        self._tmp = self._stack.enter_context(atomic_path(out))
        if fmt == "parquet":
            if self._schema is not None:
                self._parquet = _appender(self._tmp, self._schema)
        else:
            self._stream = self._stack.enter_context(open(self._tmp, "w", encoding="utf-8",  # noqa: SIM115
                                                          newline=""))

    def write(self, frame: Table) -> None:
        """Append a frame, or the frames of an iterable, taken one at a time (so they need
        not all exist at once)."""
        import polars as pl

        if not isinstance(frame, pl.DataFrame):
            for part in frame:
                self.write(part)
            return
        if frame.height == 0 and self._schema is not None:
            return
        if self._schema is None:
            self._schema = frame.schema
        else:
            frame = _conform(frame, self._schema)
        self.rows += frame.height
        if self.fmt == "parquet":
            if self._parquet is None:
                self._parquet = _appender(self._tmp, self._schema)
            self._parquet.write(frame)
            return
        if frame.height == 0:
            return
        assert self._stream is not None
        if self.fmt == "csv":
            flat = frame.with_columns([pl.col(c).cast(pl.List(pl.String)).list.join(" ")
                                       for c, t in frame.schema.items() if isinstance(t, pl.List)])
            text = flat.write_csv(include_header=self._header)
            self._header = False
        else:
            buf = io.StringIO()
            frame.write_ndjson(buf)
            text = buf.getvalue()
        self._stream.write(text)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        elif self.fmt == "parquet":  # no schema and no rows: a file with no columns
            import polars as pl

            pl.DataFrame().write_parquet(self._tmp)
        if self.out is None:
            assert self._stream is not None
            self._stream.flush()
        self._stack.close()

    def abort(self) -> None:
        """Drop the partial output (the target keeps its previous content)."""
        if self._parquet is not None:
            self._parquet.abort()
        self._stack.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)


# Parquet row groups of at least this many rows (a batch's frames are gathered until there
# are): a group is held whole, in the wide layout, while polars encodes it; 10,000 events are
# about 0.2 MB compressed, large enough that readers are not slowed by per-group costs.
ROW_GROUP_ROWS = 10_000


class WriterThread:
    """Run ``TableWriter.write`` calls on a thread of their own, in order.

    Encoding (polars) releases the GIL, so writing one batch overlaps reading and assembling
    the next. At most ``depth`` frames wait, so memory stays bounded. An error in
    the thread is raised in the caller at the next :meth:`put` or at :meth:`finish`.
    """

    def __init__(self, depth: int = 2):
        import queue
        import threading

        self._queue: queue.Queue[tuple[TableWriter, Table] | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="triage-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None or self._stopping:
                continue  # drain: the caller is told, or is stopping
            writer, frame = item
            del item
            try:
                writer.write(frame)
            except BaseException as exc:  # handed to the caller
                self._error = exc
            # not kept while waiting for the next one (a batch's events are ~35 MB)
            del writer, frame

    def put(self, writer: TableWriter, frame: Table) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((writer, frame))

    def finish(self) -> None:
        """Wait for every frame to be written; raise the thread's error if there was one."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Drop what is still queued and wait for the write under way (on an error or ^C:
        the caller then aborts the writers, which removes their temporary files)."""
        self._stopping = True
        self._queue.put(None)
        self._thread.join()


def _appender(path: Path, schema: pl.Schema) -> ParquetAppender:
    from triage.parquetfile import ParquetAppender

    # zstd level 1: about twice as fast as the default level, files as small
    return ParquetAppender(path, schema, ROW_GROUP_ROWS, compression="zstd", compression_level=1)


def _conform(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """A chunk in the columns and types of ``schema`` (columns a chunk lacks, and all-null
    columns, which a chunk may carry as another type, come out as typed nulls)."""
    import polars as pl

    if frame.schema == schema:
        return frame
    return frame.select([pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c)
                         for c, t in schema.items()])
