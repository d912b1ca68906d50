"""Writing tables to files or stdout: jsonl, csv, parquet; streamed chunk by chunk.

Files are written to a temporary name in the target directory, fsynced and renamed into place,
so an interrupted run leaves either the old file or the new one, never a half-written file.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: `triage --help` and cheap commands stay light
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

from triage.atomicfile import atomic_target
from triage.errors import InputError

FORMATS = ("jsonl", "csv", "parquet")


class Format(StrEnum):
    """The --format choices of commands that write tables."""

    jsonl = "jsonl"
    csv = "csv"
    parquet = "parquet"


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it over ``target`` on success."""
    target = target.expanduser()
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise InputError("output directory does not exist", file=directory)
    with atomic_target(target) as tmp:
        yield tmp


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
        # the schema of the table: from a typed empty frame when given, else the first chunk
        self._schema: pa.Schema | None = (_arrow(empty).schema if empty is not None else None)
        self._pq: pq.ParquetWriter | None = None
        self._header = True
        self._stream: IO[Any]
        if out is None:
            self._stream = sys.stdout
        else:
            self._tmp = self._stack.enter_context(atomic_path(out))
            self._stream = (self._stack.enter_context(open(self._tmp, "wb"))  # noqa: SIM115
                            if fmt == "parquet" else
                            self._stack.enter_context(open(self._tmp, "w", encoding="utf-8",  # noqa: SIM115
                                                           newline="")))

    def write(self, frame: pl.DataFrame) -> None:
        if frame.height == 0 and self._schema is not None:
            return
        table = _arrow(frame)
        if self._schema is None:
            self._schema = table.schema
        else:
            table = _conform(table, self._schema)
        self.rows += frame.height
        if self.fmt == "parquet":
            if self._pq is None:
                import pyarrow as pa
                import pyarrow.parquet as pq

                # zstd level 1 and dictionaries only for the low-cardinality columns: measured
                # here about twice as fast as the defaults, files as small. Min/max statistics
                # only for numbers and times (what readers filter row groups on): on text
                # columns they cost a quarter of the writing time.
                dictionary = [f.name for f in self._schema if f.name in LOW_CARDINALITY]
                stats = [f.name for f in self._schema
                         if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
                         or pa.types.is_timestamp(f.type)]
                self._pq = pq.ParquetWriter(self._stream, self._schema, compression="zstd",
                                            compression_level=1, use_dictionary=dictionary,
                                            write_statistics=stats)
            if table.num_rows:
                self._pq.write_table(table)
            return
        if frame.height == 0:
            return
        import polars as pl

        df = pl.from_arrow(table)
        assert isinstance(df, pl.DataFrame)
        if self.fmt == "csv":
            flat = df.with_columns([pl.col(c).cast(pl.List(pl.String)).list.join(" ")
                                    for c, t in df.schema.items() if isinstance(t, pl.List)])
            text = flat.write_csv(include_header=self._header)
            self._header = False
        else:
            buf = io.StringIO()
            df.write_ndjson(buf)
            text = buf.getvalue()
        self._stream.write(text)

    def close(self) -> None:
        if self._pq is not None:
            self._pq.close()
        elif self.fmt == "parquet" and self._schema is not None:
            import pyarrow.parquet as pq

            pq.write_table(self._schema.empty_table(), self._stream)
        if self.out is None:
            self._stream.flush()
        self._stack.close()

    def abort(self) -> None:
        """Drop the partial output (the target keeps its previous content)."""
        self._stack.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)


class WriterThread:
    """Run ``TableWriter.write`` calls on a thread of their own, in order.

    Encoding Parquet (pyarrow) releases the GIL, so writing one batch overlaps reading and
    assembling the next. At most ``depth`` frames wait, so memory stays bounded. An error in
    the thread is raised in the caller at the next :meth:`put` or at :meth:`finish`.
    """

    def __init__(self, depth: int = 2):
        import queue
        import threading

        self._queue: queue.Queue[tuple[TableWriter, pl.DataFrame] | None] = queue.Queue(depth)
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

    def put(self, writer: TableWriter, frame: pl.DataFrame) -> None:
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


# Columns with few distinct values, where parquet dictionary encoding pays off.
LOW_CARDINALITY = frozenset({
    "host", "program", "instance", "service", "daemon", "kind", "proto", "action", "stage",
    "enhanced_code", "reason_class", "dsn", "status", "sasl_method", "result", "identity", "tls",
    "file", "relay", "origin", "spf_result", "dkim_result", "dmarc_result", "reason", "role",
})


def _arrow(frame: pl.DataFrame) -> pa.Table:
    # the newest Arrow layout keeps polars' string views: no copy of every string
    import polars as pl

    return frame.to_arrow(compat_level=pl.CompatLevel.newest())


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast a chunk to the schema of the first chunk (all-null columns come out as strings)."""
    import pyarrow as pa

    cols = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            cols.append(col if col.type == f.type else col.cast(f.type, safe=False))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)
