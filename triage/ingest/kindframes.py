"""Events kept per line kind: each kind's frame holds only that kind's columns.

A wide events table (one column per field of any kind) allocates every string column for
every row: polars strings are 16-byte views, so 40 mostly-null string columns cost over
600 bytes per line. Per-kind frames hold what each line has; consumers pick the kinds and
columns they need, and the wide table is built only where a user asks for it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

import polars as pl

from triage.ingest.extract import EVENT_SCHEMA


@functools.lru_cache(maxsize=4096)
def _select_exprs(have: tuple[str, ...], cols: tuple[str, ...]) -> list[pl.Expr]:
    """The select list giving ``cols`` from a frame with columns ``have`` (built once per
    shape: building polars expressions in Python costs more than running them here)."""
    present = set(have)
    return [pl.col(c) if c in present else pl.lit(None, EVENT_SCHEMA[c]).alias(c)
            for c in cols]


@functools.lru_cache(maxsize=4096)
def _wide_exprs(have: tuple[str, ...], file: str) -> list[pl.Expr]:
    """The select list giving every event column, in EVENT_SCHEMA's order, from a kind's
    frame with columns ``have`` (``file`` filled in when the frame has none)."""
    present = set(have)
    return [pl.col(c) if c in present
            else pl.lit(file, pl.String).alias(c) if c == "file"
            else pl.lit(None, EVENT_SCHEMA[c]).alias(c) for c in EVENT_SCHEMA]


@dataclass
class KindFrames:
    """Frames by line kind, all from one file (``file``), each sorted by line number."""

    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    file: str = ""
    _span: tuple[tuple[int, ...], tuple[datetime, datetime] | None] | None = field(
        default=None, init=False, repr=False, compare=False)

    @property
    def height(self) -> int:
        return sum(f.height for f in self.frames.values())

    def time_range(self) -> tuple[datetime, datetime] | None:
        """(first, last) event time, or None without events; computed once per instance
        (the reader and the assembler ask several times per batch)."""
        known, span = self._cached_span()
        if not known:
            span = _combine([_series_span(f.get_column("time")) for f in self.frames.values()
                             if f.height])
            self._span = (self._span_key(), span)
        return span

    def _span_key(self) -> tuple[int, ...]:
        return tuple(id(f) for f in self.frames.values())

    def _cached_span(self) -> tuple[bool, tuple[datetime, datetime] | None]:
        """(known, span): the time range if already computed for the current frames."""
        if self._span is not None and self._span[0] == self._span_key():
            return True, self._span[1]
        return False, None

    def filter(self, predicate: pl.Expr) -> KindFrames:
        return KindFrames({k: f.filter(predicate) for k, f in self.frames.items()}, self.file)

    def pick(self, kinds: Iterable[str], columns: Sequence[str],
             line_order: bool = True) -> pl.DataFrame:
        """The rows of ``kinds`` with ``columns`` (null where a kind has no such field),
        in line order (or, with ``line_order=False``, kind after kind, each in line order).
        ``file`` is filled in from the chunk."""
        parts = [self.frames[k] for k in kinds if k in self.frames and self.frames[k].height]
        cols = tuple(dict.fromkeys(["line_no", *columns]))
        out = [frame.select(_select_exprs(tuple(frame.columns), cols)) for frame in parts]
        if not out:
            return pl.DataFrame(schema={c: EVENT_SCHEMA[c] for c in cols})
        joined = pl.concat(out) if len(out) > 1 else out[0]
        if "file" in cols and "file" not in parts[0].columns:
            joined = joined.with_columns(pl.lit(self.file, pl.String).alias("file"))
        return joined.sort("line_no") if len(out) > 1 and line_order else joined

    def wide(self) -> pl.DataFrame:
        """All events with every event column (EVENT_SCHEMA), in line order."""
        parts = list(self.wide_parts())
        if not parts:
            return pl.DataFrame(schema=EVENT_SCHEMA)
        return pl.concat(parts).sort("line_no") if len(parts) > 1 else parts[0]

    def wide_parts(self) -> Iterator[pl.DataFrame]:
        """The events with every event column, one frame per kind (each in line order),
        each built only when the consumer asks for it: a streaming writer then never holds
        the whole wide table, whose null columns cost 16 bytes a row each (and a Parquet
        writer encodes rows grouped by kind in about half the time)."""
        for frame in list(self.frames.values()):
            if frame.height:
                yield frame.select(_wide_exprs(tuple(frame.columns), self.file))

    @staticmethod
    def concat(parts: Sequence[KindFrames]) -> KindFrames:
        if len(parts) == 1:
            return parts[0]
        kinds = dict.fromkeys(k for p in parts for k in p.frames)
        out = KindFrames({k: pl.concat([p.frames[k] for p in parts if k in p.frames])
                          for k in kinds}, parts[0].file)
        # the parts' time ranges (the reader asks for each chunk's) give the whole one
        spans = [p._cached_span() for p in parts]
        if all(known for known, _ in spans):
            out._span = (out._span_key(), _combine([s for _, s in spans if s is not None]))
        return out


def _series_span(times: pl.Series) -> tuple[datetime | None, datetime | None]:
    return cast("datetime | None", times.min()), cast("datetime | None", times.max())


def _combine(spans: Sequence[tuple[datetime | None, datetime | None]]
             ) -> tuple[datetime, datetime] | None:
    """The range covering ``spans`` (null ends are ignored, as polars' min and max do)."""
    if not spans:
        return None
    los = [lo for lo, _ in spans if lo is not None]
    his = [hi for _, hi in spans if hi is not None]
    return cast(tuple[datetime, datetime], (min(los) if los else None, max(his) if his else None))
