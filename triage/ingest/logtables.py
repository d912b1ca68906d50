"""read_maillog(): mail.log files -> the six tables, as pandas DataFrames.

Also the streaming form used by ``triage parse`` to write large outputs in bounded memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from triage.config import DEFAULT_RULE_ID_PATTERN
from triage.ingest.assemble import Assembler
from triage.ingest.kindframes import KindFrames
from triage.ingest.maillog import Chunk, ReadOptions, ReadStats, read_chunks

if TYPE_CHECKING:
    import pandas as pd

BATCH_EVENTS = 50_000
TABLES = ("events", "sessions", "messages", "deliveries", "rejects", "unparsed")
Progress = Callable[[int], None]


@dataclass
class LogTables:
    """The tables of one or more mail.log files (pandas DataFrames; times are tz-aware UTC)."""

    events: pd.DataFrame
    sessions: pd.DataFrame
    messages: pd.DataFrame
    deliveries: pd.DataFrame
    rejects: pd.DataFrame
    unparsed: pd.DataFrame
    stats: ReadStats = field(default_factory=ReadStats)


def batched(chunks: Iterable[Chunk], events: int | None = None) -> Iterator[Chunk]:
    """Merge consecutive chunks of one file into batches of about ``events`` events
    (default ``BATCH_EVENTS``): assembly has a fixed cost per call, parsing a cost per byte
    held, so lines are parsed in small blocks and assembled in larger batches. A batch never
    spans two files: line numbers are per file."""
    limit = events if events is not None else BATCH_EVENTS
    batch: list[Chunk] = []
    held = 0
    for chunk in chunks:
        if batch and chunk.file != batch[-1].file:
            yield _merge(batch)
            batch, held = [], 0
        batch.append(chunk)
        held += chunk.kinds.height
        if held >= limit:
            # yielded as soon as full: the next chunk is not read (and held) first
            merged = _merge(batch)
            batch, held = [], 0
            del chunk
            yield merged
            del merged
    if batch:
        yield _merge(batch)


def _merge(batch: list[Chunk]) -> Chunk:
    if len(batch) == 1:
        return batch[0]
    programs: Counter[str] = Counter()
    for c in batch:
        programs.update(c.programs)
    return Chunk(kinds=KindFrames.concat([c.kinds for c in batch]),
                 unparsed=pl.concat([c.unparsed for c in batch]),
                 lines=sum(c.lines for c in batch), programs=dict(programs),
                 file=batch[0].file)


def iter_tables(paths: Sequence[str | Path], opts: ReadOptions | None = None,
                stats: ReadStats | None = None, progress: Progress | None = None,
                tables: Collection[str] = TABLES,
                events_by_kind: bool = False) -> Iterator[dict[str, Any]]:
    """Yield, per batch of input, the finished rows of every table (polars frames).

    Lines are parsed in small blocks (bounded memory) and assembled in batches of about
    ``BATCH_EVENTS`` events: assembly has a fixed cost per call, parsing a cost per byte held.
    With ``events_by_kind=True`` a batch's events are not one frame but an iterator of
    frames, one per kind (each in line order, with every event column), built only as they
    are consumed: a streaming writer then holds one kind's rows at a time, not the wide table
    (cheaper to encode as Parquet too, since each kind leaves most columns null in one run).
    """
    asm = Assembler()
    stats = stats if stats is not None else ReadStats()
    for batch in batched(read_chunks(paths, opts, stats)):
        t = asm.feed(batch.kinds)
        if progress is not None:
            progress(batch.lines)
        out: dict[str, Any] = {
            "sessions": t.sessions, "messages": t.messages, "deliveries": t.deliveries,
            "rejects": t.rejects, "unparsed": batch.unparsed}
        if "events" in tables:  # the wide table costs memory: only when asked for
            out["events"] = (batch.kinds.wide_parts() if events_by_kind
                             else batch.kinds.wide())
        del t, batch  # what the consumer writes is in `out`; nothing else kept meanwhile
        yield out
        del out
    t = asm.finish()
    yield {"sessions": t.sessions, "messages": t.messages}


def collect_tables(paths: Sequence[str | Path], opts: ReadOptions | None = None,
                   tables: Sequence[str] = TABLES,
                   progress: Progress | None = None) -> tuple[dict[str, pl.DataFrame], ReadStats]:
    """All rows of the requested tables as polars frames, plus reading statistics."""
    stats = ReadStats()
    parts: dict[str, list[pl.DataFrame]] = {t: [] for t in tables}
    for out in iter_tables(paths, opts, stats, progress, tables):
        for name, frame in out.items():
            if name in parts and frame.height:
                parts[name].append(frame)
    result = {}
    for name in tables:
        frames = parts[name]
        result[name] = (pl.concat(frames, how="vertical_relaxed") if frames
                        else empty_table(name))
    return result, stats


def empty_table(name: str) -> pl.DataFrame:
    """A zero-row frame with the table's columns and types."""
    from triage.ingest import assemble as a
    from triage.ingest.extract import EVENT_SCHEMA
    from triage.ingest.maillog import UNPARSED_SCHEMA

    if name == "events":
        return pl.DataFrame(schema=EVENT_SCHEMA)
    if name == "unparsed":
        return pl.DataFrame(schema=UNPARSED_SCHEMA)
    if name == "sessions":
        return pl.DataFrame(schema=a.SESSION_SCHEMA)
    if name == "messages":
        return pl.DataFrame(schema=a.MESSAGE_SCHEMA)
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}")
    t = Assembler().feed(KindFrames())
    return t.deliveries if name == "deliveries" else t.rejects


def read_maillog(paths: str | Path | Sequence[str | Path], year: int | None = None,
                 timezone: str | None = None, rule_id_pattern: str | None = None) -> LogTables:
    """Read mail.log files (plain or compressed, any order) into pandas DataFrames.

    >>> logs = read_maillog(["/var/log/mail.log", "/var/log/mail.log.1"])  # doctest: +SKIP
    >>> logs.rejects.groupby("reason_class").size()  # doctest: +SKIP
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    opts = ReadOptions(year=year, timezone=timezone,
                       rule_id_pattern=rule_id_pattern or DEFAULT_RULE_ID_PATTERN)
    frames, stats = collect_tables(paths, opts)
    pdf = {name: frame.to_pandas() for name, frame in frames.items()}
    return LogTables(**pdf, stats=stats)
