"""The history: an embedded Parquet dataset under the state directory, plus scan state.

Layout of ``state_dir``::

    state.json                       schema version, committed generation, log cursors, scans
    history/<table>/week=<ISO week>/g<generation>.parquet
    seen/g<generation>.json.gz       message keys already read, per mail folder
    carry/g<generation>/<name>.parquet  the log assembler's open state (see below)
    cache/*.json                     figures computed from one generation (see read_cache)
    lock                             held (flock) while a scan runs

Each scan is one *generation*. It writes its files under their final names with its own
generation number, then replaces ``state.json`` (temp file, fsync, rename): that rename is the
commit. Readers only look at files whose generation is at most the committed one, and the next
scan deletes files of generations that never committed, so a crash or ``kill -9`` at any point
leaves the previous history. The same files can be read by Dask or Spark: a hive-style
partition per ISO week (``week=2025-W41``).

The carried state is what the log assembler still holds open where the log read stopped:
smtpd sessions and queue files in progress, and its short windows of SPF and milter results
and hop links (``triage.ingest.assemble.CARRIED``). It belongs with the cursors: the next scan
goes on from both, so a session or message in progress at scan time becomes one row, not two
halves. It is one Parquet file per frame, named in ``state.json`` (``carry``: directory, format
and frames) and committed by the same rename as the cursors, so a crash leaves the old
cursors with the old state or the new with the new. A state directory without it (the first
scan, or one written by an older triage) starts the assembler afresh; one whose directory was
removed does too (the way out when it cannot be read, which is an error naming the file:
the files are written atomically, so that takes a damaged disk or a hand).

Reading the scan state (cursors, seen keys, caches) needs neither polars nor pandas: a scan
that finds nothing new imports neither. The seen keys are gzipped JSON for that reason (state
directories written before keep their Parquet seen file until the next commit).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import os
import re
import shutil
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from triage.atomicfile import atomic_target, remove_stale_temps
from triage.errors import TriageError
from triage.logcursor import Cursor

if TYPE_CHECKING:  # imported where used: a scan with nothing new needs neither
    import pandas as pd
    import polars as pl

__all__ = ["SCHEMA_VERSION", "TABLES", "Carry", "History", "ScanBusy", "Store",
           "load_history"]

SCHEMA_VERSION = 1
# Each history table and the time column that places a row in its ISO week.
TABLES: dict[str, str] = {
    "sessions": "connect_time",
    "messages": "first_seen",
    "deliveries": "time",
    "rejects": "time",
    "mail": "received_time",
}
NO_WEEK = "none"  # rows without a time (a message with no trusted Received time)
_GEN_RE = re.compile(r"^g(\d{8})(?:-\d{4})?\.parquet$")
_FLUSH_ROWS = 250_000  # rows a scan buffers per table before writing a part file
# the files a scan replaces atomically in the state directory itself (proposed-generation:
# see triage.scan); their temp files left by a killed scan are swept under the lock
_ROOT_FILES = frozenset({"state.json", "proposed-generation"})


class ScanBusy(TriageError):
    """Another scan holds the lock."""


@dataclass
class Carry:
    """The log assembler's open state handed from one scan to the next: its frames by name,
    in the assembler's ``format`` (``triage.ingest.assemble.CARRY_FORMAT``)."""

    format: int
    frames: dict[str, pl.DataFrame]


@dataclass
class State:
    """What ``state.json`` holds."""

    generation: int = 0
    cursors: list[Cursor] = field(default_factory=list)
    seen_file: str | None = None          # relative to the state dir
    scans: list[dict[str, Any]] = field(default_factory=list)
    schema: int = SCHEMA_VERSION
    # the carried state: {"dir": relative to the state dir, "format": n, "frames": [names]}
    carry: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"schema": self.schema, "generation": self.generation,
               "cursors": [c.to_json() for c in self.cursors], "seen_file": self.seen_file,
               "scans": self.scans}
        if self.carry is not None:
            out["carry"] = self.carry
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> State:
        carry = data.get("carry")
        return cls(generation=int(data.get("generation", 0)),
                   cursors=[Cursor.from_json(c) for c in data.get("cursors", [])],
                   seen_file=data.get("seen_file"), scans=list(data.get("scans", [])),
                   schema=int(data.get("schema", SCHEMA_VERSION)),
                   carry=dict(carry) if isinstance(carry, Mapping) else None)


@dataclass
class History:
    """The history as pandas DataFrames (one per table), for notebooks and reports."""

    sessions: pd.DataFrame
    messages: pd.DataFrame
    deliveries: pd.DataFrame
    rejects: pd.DataFrame
    mail: pd.DataFrame
    scans: list[dict[str, Any]]


class Store:
    """One state directory. Use :meth:`lock` around a scan, :meth:`commit` to finish it."""

    def __init__(self, state_dir: str | Path):
        self.root = Path(state_dir).expanduser()

    # -- reading -----------------------------------------------------------------------------

    def state(self) -> State:
        """The committed state (an empty one before the first scan)."""
        path = self.root / "state.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return State()
        except (OSError, ValueError) as exc:
            raise TriageError(f"cannot read scan state: {exc}", file=path) from exc
        state = State.from_json(data)
        if state.schema > SCHEMA_VERSION:
            raise TriageError(f"history has schema {state.schema}; this triage reads up to "
                              f"{SCHEMA_VERSION}: upgrade triage", file=path)
        return state

    def seen(self, state: State | None = None) -> dict[str, set[str]]:
        """Message keys already read, per configured mail folder."""
        state = state or self.state()
        if state.seen_file is None:
            return {}
        path = self.root / state.seen_file
        if path.suffix == ".parquet":  # written by an earlier triage
            import polars as pl

            try:
                frame = pl.read_parquet(path)
                return {folder: set(keys) for folder, keys in
                        frame.group_by("folder").agg(pl.col("key")).iter_rows()}
            except (OSError, pl.exceptions.PolarsError) as exc:
                raise TriageError(f"cannot read the seen messages: {exc}", file=path) from exc
        try:
            # a truncated gzip stream is an EOFError, a damaged one a zlib.error
            data = json.loads(gzip.decompress(path.read_bytes()))
        except (OSError, EOFError, zlib.error, ValueError) as exc:
            raise TriageError(f"cannot read the seen messages: {exc or type(exc).__name__}",
                              file=path) from exc
        if not isinstance(data, dict) or not all(isinstance(k, list) for k in data.values()):
            raise TriageError("cannot read the seen messages: not a map of folder to keys",
                              file=path)
        return {folder: set(keys) for folder, keys in data.items()}

    def carry(self, state: State | None = None) -> Carry | None:
        """The log assembler's state carried from the last scan; None when there is none
        (the first scan, a state directory of an older triage, or its directory removed).
        A file that cannot be read is a TriageError that names it."""
        state = state or self.state()
        info = state.carry
        if info is None:
            return None
        directory = self.root / str(info.get("dir", ""))
        if not info.get("dir") or not directory.is_dir():
            return None
        import polars as pl

        frames = {}
        for name in info.get("frames", []):
            path = directory / f"{name}.parquet"
            try:
                frames[str(name)] = pl.read_parquet(path)
            except (OSError, pl.exceptions.PolarsError) as exc:
                raise TriageError(
                    f"cannot read the sessions and messages left open by the last scan: {exc}."
                    f" Remove {directory} to go on without them (the rows of those in "
                    "progress then come in two parts)", file=path) from exc
        return Carry(format=int(info.get("format", 0)), frames=frames)

    def commit_key(self, state: State | None = None) -> str:
        """Names the committed history: its generation and the time of its scan."""
        state = state or self.state()
        when = state.scans[-1].get("time", "") if state.scans else ""
        return f"{state.generation}@{when}"

    def read_cache(self, name: str) -> dict[str, Any] | None:
        """What :meth:`write_cache` stored under ``name`` for the history as it is now
        (None when it was stored for another generation, or never)."""
        try:
            data = json.loads((self.root / "cache" / f"{name}.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("key") != self.commit_key():
            return None
        value = data.get("value")
        return value if isinstance(value, dict) else None

    def write_cache(self, name: str, key: str, value: Mapping[str, Any]) -> None:
        """Keep ``value`` (JSON) computed from the history named ``key`` (see
        :meth:`commit_key`, taken before the computation): written only if the history is
        still that one, replaced atomically; a state directory that cannot be written
        just has no cache."""
        if key != self.commit_key():
            return
        with contextlib.suppress(OSError):
            (self.root / "cache").mkdir(parents=True, exist_ok=True)
            _write_text_atomic(self.root / "cache" / f"{name}.json",
                               json.dumps({"key": key, "value": value}))

    def files(self, table: str, weeks: Iterable[str] | None = None,
              generation: int | None = None) -> list[Path]:
        """Committed Parquet files of ``table`` (optionally only some ISO weeks)."""
        gen = self.state().generation if generation is None else generation
        base = self.root / "history" / table
        if not base.is_dir():
            return []
        wanted = None if weeks is None else {f"week={w}" for w in weeks}
        out = []
        for part in sorted(base.iterdir()):
            if not part.name.startswith("week=") or (wanted is not None
                                                     and part.name not in wanted):
                continue
            for f in sorted(part.iterdir()):
                m = _GEN_RE.match(f.name)
                if m and int(m.group(1)) <= gen:
                    out.append(f)
        return out

    def weeks(self, table: str = "messages") -> list[str]:
        """ISO weeks that have rows of ``table``, oldest first."""
        return sorted({f.parent.name[5:] for f in self.files(table)} - {NO_WEEK})

    def read(self, table: str, weeks: Iterable[str] | None = None,
             columns: list[str] | None = None, *, missing_ok: bool = False) -> pl.DataFrame:
        """One table of the history (polars), all weeks or the given ones; only
        ``columns`` when given (``missing_ok``: those a file lacks are left out of it,
        instead of an error)."""
        import polars as pl

        def one(f: Path) -> pl.DataFrame:
            if columns is None or not missing_ok:
                return pl.read_parquet(f, columns=columns)
            have = pl.read_parquet_schema(f)
            return pl.read_parquet(f, columns=[c for c in columns if c in have])

        frames = [one(f) for f in self.files(table, weeks)]
        frames = [f for f in frames if f.height]
        if not frames:
            return pl.DataFrame()
        return pl.concat(frames, how="diagonal_relaxed")

    # -- locking -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, wait: float = 0.0) -> Iterator[None]:
        """Hold the scan lock; wait up to ``wait`` seconds for another scan, then ScanBusy.

        flock is released by the kernel when the process dies, so a killed scan never
        leaves a stale lock behind.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
                        raise ScanBusy(f"another scan is running (pid {holder or '?'}); "
                                       f"waited {wait:g} s", file=self.root) from None
                    time.sleep(0.1)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    # -- writing -----------------------------------------------------------------------------

    def begin(self) -> Generation:
        """Start a new generation: forget files left by scans that never committed."""
        state = self.state()
        self._sweep(state)
        return Generation(self, state, state.generation + 1)

    def _sweep(self, committed: State) -> None:
        """Delete files of generations after ``committed`` (and superseded seen files and
        carried state), and the temp files a killed scan left. Called under the lock."""
        remove_stale_temps(self.root, _ROOT_FILES.__contains__)
        for table_dir in (self.root / "history").glob("*/week=*"):
            for f in table_dir.iterdir():
                m = _GEN_RE.match(f.name)
                if (m and int(m.group(1)) > committed.generation) or f.name.endswith(".tmp"):
                    f.unlink(missing_ok=True)
        seen_dir = self.root / "seen"
        if seen_dir.is_dir():
            current = committed.seen_file
            for f in seen_dir.iterdir():
                if current is None or f.name != Path(current).name:
                    f.unlink(missing_ok=True)
        carry_dir = self.root / "carry"
        if carry_dir.is_dir():
            keep = (committed.carry or {}).get("dir")
            for d in carry_dir.iterdir():
                if keep is None or d.name != Path(keep).name:
                    if d.is_dir():
                        shutil.rmtree(d, ignore_errors=True)
                    else:
                        d.unlink(missing_ok=True)
        for f in (self.root / "cache").glob("*.tmp"):
            f.unlink(missing_ok=True)


class Generation:
    """The files of one scan, written but not yet committed."""

    def __init__(self, store: Store, base: State, number: int):
        self.store, self.base, self.number = store, base, number
        self.rows: dict[str, int] = {}
        self._buffer: dict[str, list[pl.DataFrame]] = {}
        self._parts = 0
        self.weeks: set[str] = set()  # ISO weeks this generation wrote rows to

    def add(self, table: str, frame: pl.DataFrame) -> None:
        """Add rows of ``table``; they are written in week partitions, in part files of a
        bounded number of rows, so memory stays bounded on a big first scan."""
        if frame.height == 0:
            return
        buf = self._buffer.setdefault(table, [])
        buf.append(frame)
        self.rows[table] = self.rows.get(table, 0) + frame.height
        if sum(f.height for f in buf) >= _FLUSH_ROWS:
            self._flush(table)

    def _flush(self, table: str) -> None:
        buf = self._buffer.pop(table, [])
        if buf:
            self._parts += 1
            self._write_part(table, buf, self._parts)

    def _write_part(self, table: str, buf: list[pl.DataFrame], number: int) -> None:
        import polars as pl

        frame = pl.concat(buf, how="diagonal_relaxed")
        weeks = frame.select(pl.col(TABLES[table]).dt.strftime("%G-W%V").fill_null(NO_WEEK)
                             .alias("_week"))["_week"]
        frame = frame.with_columns(weeks)
        for (week,), part in frame.group_by("_week"):
            self.weeks.add(str(week))
            directory = self.store.root / "history" / table / f"week={week}"
            directory.mkdir(parents=True, exist_ok=True)
            _write_parquet(part.drop("_week"),
                           directory / f"g{self.number:08d}-{number:04d}.parquet")

    def _flush_all(self) -> None:
        """Write every buffered table, two at a time (polars writes without the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        jobs = []
        for table in list(self._buffer):
            buf = self._buffer.pop(table)
            if buf:
                self._parts += 1
                jobs.append((table, buf, self._parts))

        with ThreadPoolExecutor(max_workers=2) as pool:
            for future in [pool.submit(self._write_part, *job) for job in jobs]:
                future.result()

    def commit(self, cursors: list[Cursor], seen: Mapping[str, set[str]],
               scan: dict[str, Any], carry: Carry | None = None) -> State:
        """Make this generation the history: the state file's rename is the commit point.

        ``carry`` is the log assembler's state to go with ``cursors``; None keeps the last
        one (the logs were not read)."""
        root = self.store.root
        self._flush_all()
        (root / "seen").mkdir(parents=True, exist_ok=True)
        seen_name = f"seen/g{self.number:08d}.json.gz"
        keys = {folder: sorted(k) for folder, k in sorted(seen.items())}
        with atomic_target(root / seen_name) as tmp:
            tmp.write_bytes(gzip.compress(json.dumps(keys).encode(), compresslevel=1,
                                          mtime=0))
        carried = self.base.carry if carry is None else self._write_carry(carry)
        state = State(generation=self.number, cursors=cursors, seen_file=seen_name,
                      scans=[*self.base.scans, {"generation": self.number, **scan}],
                      carry=carried)
        _fsync_dirs(root)
        _write_text_atomic(root / "state.json", json.dumps(state.to_json(), indent=1))
        self.store._sweep(state)
        return state

    def _write_carry(self, carry: Carry) -> dict[str, Any]:
        """Write ``carry`` under this generation's name; what ``state.json`` says of it."""
        name = f"carry/g{self.number:08d}"
        directory = self.store.root / name
        directory.mkdir(parents=True, exist_ok=True)
        for frame_name, frame in sorted(carry.frames.items()):
            _write_parquet(frame, directory / f"{frame_name}.parquet")
        return {"dir": name, "format": carry.format, "frames": sorted(carry.frames)}


def _write_parquet(frame: pl.DataFrame, target: Path) -> None:
    # zstd level 1: about 20% less CPU than the default level 3 for files 2-4% larger
    with atomic_target(target) as tmp:
        frame.write_parquet(tmp, compression="zstd", compression_level=1)


def _write_text_atomic(target: Path, text: str) -> None:
    with atomic_target(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _fsync_dirs(root: Path) -> None:
    """Make the renames of the files under ``root`` durable before the commit."""
    dirs = [root, *[p for p in root.rglob("*") if p.is_dir()]] if root.is_dir() else []
    for d in dirs:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_history(state_dir: str | Path, weeks: Iterable[str] | None = None) -> History:
    """The committed history under ``state_dir`` as pandas DataFrames.

    >>> h = load_history("/nonexistent")
    >>> len(h.rejects), h.scans
    (0, [])
    """
    store = Store(state_dir)
    wanted = list(weeks) if weeks is not None else None
    frames = {t: store.read(t, wanted).to_pandas() for t in TABLES}
    return History(**frames, scans=store.state().scans)
