"""The weekly scan as a library function: read what is new, add it to the history, commit.

After the history is committed the scan proposes rules from it into the rulebook (state
``proposed``, for a person to review) and reads what the log says about the rules in the
maps (``triage.weekly_rules``).

No terminal I/O: progress goes to a callback (``ScanProgress`` events), the result is a
``ScanResult``. ``triage scan`` renders both; a notebook can call :func:`scan` directly.

The log is read as one stream over all scans: the log assembler's open state (sessions and
queue files in progress where the last scan stopped, see ``triage.ingest.assemble``) is
committed with the cursors and handed to the next scan, so a session or message in progress
at scan time is stored once, when it ends, not as two halves.

A scan with nothing new imports neither polars nor pandas: the log cursors and the folders'
seen keys are checked first, the log reader and the mail parser are imported only for input
that has something to read, and the rule feedback comes from the store's cache while the
history and the rules in the maps stay the same.

The scan reads the mail.log files: mail.warn / mail.err style files that the ``logs``
setting names are left out, with one note in ``ScanResult.problems`` (their lines are copies
of mail.log lines; see ``triage.logcursor.primary_logs``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import sys
import threading
import time
import types
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from triage.atomicfile import write_atomic
from triage.config import Config
from triage.errors import ConfigError, TriageError
from triage.feedback import RuleFeedback
from triage.ingest.mailbox import OnSkip, iter_messages
from triage.logcursor import LogInput, is_secondary, plan_reads, read_new, unchanged
from triage.model import RuleState
from triage.rulebook import load_rulebook
from triage.store import Carry, State, Store

if TYPE_CHECKING:  # imported where used (see the module docstring)
    from multiprocessing.connection import Connection

    import pandas as pd
    import polars as pl

    from triage.ingest.assemble import Assembler
    from triage.ingest.maillog import ReadOptions
    from triage.weekly_rules import ProposalReport

__all__ = ["ScanProgress", "ScanResult", "log_paths", "mail_folders", "scan"]


@dataclass(frozen=True)
class ScanProgress:
    """One progress report: ``done`` lines (logs) or messages (folders) of one input.

    ``bytes_done``/``bytes_total`` give logs an ETA (None when unknown: compressed files,
    mail folders). ``finished`` is set once per input when it is done.
    """

    input: str
    unit: str  # "lines" or "messages"
    done: int
    bytes_done: int | None = None
    bytes_total: int | None = None
    finished: bool = False


Progress = Callable[[ScanProgress], None]


@dataclass
class ScanResult:
    """What one scan read and stored."""

    generation: int
    committed: bool
    lines: int = 0
    events: int = 0
    unparsed: Counter[str] = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    mail: dict[str, int] = field(default_factory=dict)  # new messages per folder
    weeks: list[str] = field(default_factory=list)      # ISO weeks that got new rows
    seconds: float = 0.0
    # None when the history did not change since the last proposal run
    proposals: ProposalReport | None = None
    pending: int = 0                                    # proposals waiting for review
    feedback: list[RuleFeedback] = field(default_factory=list)
    # inputs (or parts) not read this time, one "file: what happened" each: log files
    # (ReadStats.problems), then mail (an mbox Procmail holds locked, a message still being
    # written, an empty file)
    problems: list[str] = field(default_factory=list)

    @property
    def nothing_new(self) -> bool:
        return self.lines == 0 and not any(self.mail.values())


def log_paths(cfg: Config) -> list[Path]:
    """The log files the ``logs`` setting names now; a one-line error when none exist."""
    out: list[Path] = []
    for pattern in cfg.logs:
        resolved = cfg.resolve(pattern)
        matches = sorted(glob.glob(resolved)) if glob.has_magic(resolved) else (
            [resolved] if os.path.exists(resolved) else [])
        if not matches:
            raise ConfigError(f"setting 'logs': no log file matches {resolved}",
                              file=cfg.source)
        out.extend(Path(m) for m in matches if os.path.isfile(m))
    return list(dict.fromkeys(out))


def mail_folders(cfg: Config, read_before: Collection[str] = ()) -> list[tuple[str, Path]]:
    """(role, folder) for every ``spam`` and ``ham`` setting.

    A folder that does not exist is a one-line error (a typo), unless it looks like an mbox
    that went away: one read before (its resolved path is in ``read_before``, the keys of
    ``Store.seen``), or an mbox file path (not ending in ``/``) in a directory that exists.
    Mail clients delete an mbox they emptied (mutt does; Procmail creates it again with the
    next message), so such a folder is listed, and a scan reads it as empty.
    """
    out = []
    for role, values in (("spam", cfg.spam), ("ham", cfg.ham)):
        for value in values:
            p = Path(cfg.resolve(value))
            if not p.exists() and not (
                    str(p.resolve()) in read_before
                    or (not value.rstrip().endswith(("/", "/.")) and p.parent.is_dir())):
                raise ConfigError(f"setting '{role}': no such mail folder: {p}",
                                  file=cfg.source)
            out.append((role, p))
    return out


def scan(cfg: Config, progress: Progress | None = None, wait: float | None = None,
         now: datetime | None = None, rules: bool = True) -> ScanResult:
    """Read what is new in the configured logs and folders into the history under
    ``cfg.state_dir``, and commit it as one generation; then (``rules``) propose rules from
    the history into the rulebook and assess the rules in the maps.

    Holds the state directory's lock for the whole scan (waiting up to ``wait`` seconds,
    default ``cfg.lock_wait``, for another scan), so two scans never write the same
    proposals. Inputs are only read.

    mail.warn / mail.err style files in ``logs`` are not read (one note in ``problems``;
    their lines are copies of mail.log lines). A mail folder that no longer exists but was
    read before, or an mbox file whose directory exists, is read as empty, with a note
    (see :func:`mail_folders`).

    The folders may be read in a child process (see :class:`FolderReader`); it does not run
    the caller's main script again, so a script needs no ``if __name__ == "__main__":``.
    """
    started = time.perf_counter()
    logs = log_paths(cfg)
    notes: list[str] = []  # problems found before reading, first in result.problems
    secondary = [p for p in logs if is_secondary(p)]
    if secondary:
        logs = [p for p in logs if not is_secondary(p)]
        if not logs:
            raise ConfigError("setting 'logs': only mail.warn / mail.err style files match "
                              f"({', '.join(p.name for p in secondary)}); the scan reads "
                              "mail.log files", file=cfg.source)
        notes.append(f"{', '.join(p.name for p in secondary)} (setting 'logs'): not read: a "
                     "scan reads the mail.log files (mail.warn / mail.err lines are copies "
                     "of mail.log lines); leave them out of 'logs' to drop this note")
    store = Store(cfg.state_dir)
    report = _serialised(progress or (lambda _p: None))
    with store.lock(cfg.lock_wait if wait is None else wait):
        gen = store.begin()
        state = gen.base
        result = ScanResult(generation=gen.number, committed=False)
        seen = store.seen(state)
        folders = mail_folders(cfg, read_before=seen.keys())
        gone = {folder for _role, folder in folders if not folder.exists()}
        skipped: dict[str, str] = {}  # mail left out for now: path -> why

        def on_skip(path: str, reason: str) -> None:
            skipped[path] = reason

        # Folders with something unread (a directory listing each, not a parse). A folder
        # that turns out to hold nothing new was read to its end here, so its skips are
        # heard here; the others' when they are read.
        todo = [(role, folder) for role, folder in folders if folder not in gone
                and next(iter_messages([folder], skip_keys=seen.setdefault(
                    str(folder.resolve()), set()), on_skip=on_skip), None) is not None]
        background: FolderReader | None = None
        carry: Carry | None = None  # None: the logs were not read, the last one stays
        if unchanged(logs, state.cursors):
            # the files and their sizes are the ones last read: nothing to parse
            inputs = plan_reads(logs, state.cursors)
            for item in inputs:
                item.done_offset, item.done_lines = item.offset, item.lines
            result.files = [str(i.path) for i in inputs]
            hosts: set[str] = set()
        else:
            if todo and cfg.my_hostnames and not _SEQUENTIAL:
                # The folders need our host names only: with them in the config, they are
                # read by a second process while this one parses the log (the mail parser
                # is Python, the log reader polars: on two cores they overlap). It starts
                # first, so its start-up overlaps this process importing the log reader.
                background = FolderReader(
                    [(role, folder, seen[str(folder.resolve())]) for role, folder in todo],
                    list(cfg.my_hostnames), cfg.trusted_relays, report)
            try:
                opts = _read_options(cfg)
                inputs = plan_reads(logs, state.cursors, opts)
                asm = _assembler(store, state)
                hosts = _read_logs(inputs, opts, gen.add, report, result, asm,
                                   want_hosts=not cfg.my_hostnames)
                if result.lines:
                    carry = _carry(asm)
            except BaseException:
                if background is not None:
                    background.stop()
                raise
        names: list[str] | None = None  # our host names, found when a folder has new mail
        done = background.results() if background is not None else {}
        for role, folder in folders:
            key = str(folder.resolve())
            keys = seen.setdefault(key, set())
            if (role, folder) not in todo:
                result.mail[str(folder)] = 0
                continue
            new = done.get(key)
            if new is None and not folder.exists():  # deleted since it was listed
                gone.add(folder)
                result.mail[str(folder)] = 0
                continue
            if new is None:
                if names is None:
                    names = _my_hostnames(cfg, hosts, store)
                new = _read_folder(folder, role, names, cfg, keys, report, on_skip)
            result.mail[str(folder)] = len(new)
            if len(new):
                keys.update(new["key"].astype(str))
                gen.add("mail", _to_polars(new))
        if background is not None:
            skipped.update(background.skipped)
        result.problems[:0] = notes
        result.problems += [f"{folder}: no such mail folder now (an mbox deleted when it "
                            "was emptied?): read as empty" for folder in sorted(gone)]
        result.problems += [f"{path}: {why}" for path, why in sorted(skipped.items())]
        result.rows = dict(gen.rows)
        cursors = [i.cursor() for i in inputs if i.duplicate_of is None]
        if result.nothing_new and _same(cursors, state.cursors):
            result.generation = state.generation
        else:
            gen.commit(cursors, seen, {
                "time": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
                "lines": result.lines, "events": result.events,
                "unparsed": sum(result.unparsed.values()), "rows": result.rows,
                "mail": result.mail}, carry)
            result.weeks = sorted(gen.weeks - {"none"})
            result.committed = True
        if rules:
            _rule_steps(cfg, store, result, now)
    result.seconds = time.perf_counter() - started
    return result


def _read_options(cfg: Config) -> ReadOptions:
    from triage.ingest.maillog import SCAN_CHUNK_BYTES, ReadOptions, chunk_bytes_setting

    return ReadOptions(year=cfg.log_year, timezone=cfg.log_timezone,
                       rule_id_pattern=cfg.rule_id_pattern,
                       chunk_bytes=chunk_bytes_setting(SCAN_CHUNK_BYTES))


def _my_hostnames(cfg: Config, hosts: set[str], store: Store) -> list[str]:
    """Our host names for the trusted hop: the config's, else the log's (this scan's new
    lines, else the history's)."""
    names = list(cfg.my_hostnames) or _hostnames(hosts)
    if not names and store.files("messages"):
        names = _hostnames(set(store.read("messages", columns=["host"])
                               .get_column("host").unique().drop_nulls().to_list()))
    return names


def _rule_steps(cfg: Config, store: Store, result: ScanResult, now: datetime | None) -> None:
    """Proposals (only when the history changed since the last proposal run) and feedback.

    The generation the proposals were made from is kept in ``proposed-generation``, written
    after the rulebook: a scan killed between its commit and its proposals proposes on the
    next run even though that run finds nothing new.
    """
    # imported here: the proposer (pandas, the backtest) is not needed to start the CLI
    from triage.weekly_rules import propose_from_history, rule_feedback

    book = load_rulebook(cfg.rulebook_dir())
    marker = store.root / "proposed-generation"
    done = marker.read_text().strip() if marker.exists() else ""
    if done != str(result.generation) and store.files("mail"):
        result.proposals = propose_from_history(store, book, cfg, now=now)
        write_atomic(marker, f"{result.generation}\n")
    result.pending = len(book.in_state(RuleState.PROPOSED))
    result.feedback = rule_feedback(store, book.emitted(), cfg, now=now)


def _assembler(store: Store, state: State) -> Assembler:
    """The log assembler, going on from the state the last scan left (or afresh)."""
    from triage.ingest.assemble import CARRY_FORMAT, Assembler

    carry = store.carry(state)
    if carry is None or carry.format < CARRY_FORMAT:
        # none (the first scan, an older triage), or an older layout no longer read: the
        # sessions and messages in progress then are stored in two parts, as they were
        return Assembler()
    if carry.format > CARRY_FORMAT:
        raise TriageError(f"the state left by the last scan has format {carry.format}; "
                          f"this triage reads up to {CARRY_FORMAT}: upgrade triage",
                          file=store.root / "state.json")
    try:
        return Assembler.resume(carry.frames)
    except ValueError as exc:
        raise TriageError(f"cannot use the state left by the last scan: {exc}",
                          file=store.root / "state.json") from exc


def _carry(asm: Assembler) -> Carry:
    from triage.ingest.assemble import CARRY_FORMAT

    return Carry(CARRY_FORMAT, asm.carried())


def _read_logs(inputs: Sequence[LogInput], opts: ReadOptions,
               add: Callable[[str, pl.DataFrame], None], report: Progress,
               result: ScanResult, asm: Assembler, want_hosts: bool = True) -> set[str]:
    """Parse the unread parts of the logs into the four log tables with ``asm``, leaving
    in it what is still open; return the log's hosts (``want_hosts``: they name our hosts
    when the config does not)."""
    import polars as pl

    from triage.ingest.logtables import batched
    from triage.ingest.maillog import ReadStats

    stats = ReadStats()
    hosts: set[str] = set()

    def on_chunk(path: Path, lines: int, done: int, total: int | None) -> None:
        report(ScanProgress(path.name, "lines", lines, done, total))

    for chunk in batched(read_new(inputs, opts, stats, on_chunk)):
        tables = asm.feed(chunk.kinds)
        for name in ("sessions", "messages", "deliveries", "rejects"):
            add(name, getattr(tables, name))
        if chunk.unparsed.height:
            result.unparsed.update(chunk.unparsed.get_column("reason").to_list())
        if want_hosts and chunk.kinds.frames:
            # one concatenation per batch: a unique() per kind frame costs a query each
            column = pl.concat([f.get_column("host") for f in chunk.kinds.frames.values()])
            hosts.update(column.unique().drop_nulls().to_list())
    # what is still open stays in ``asm`` for the next scan (see the module docstring)
    tables = asm.suspend()
    add("sessions", tables.sessions)
    add("messages", tables.messages)
    for item in inputs:
        if item.duplicate_of is None and item.done_lines > item.lines:
            report(ScanProgress(item.path.name, "lines", item.done_lines - item.lines,
                                finished=True))
    result.lines, result.events, result.files = stats.lines, stats.events, stats.files
    result.problems = list(stats.problems)
    return hosts


def _hostnames(hosts: set[str]) -> list[str]:
    """Our host names as the log knows them; syslog often has the short name, so ``mx``
    also stands for ``mx.*``."""
    return [p for h in sorted({h.lower() for h in hosts}) for p in (h, f"{h}.*")]


def _read_folder(folder: Path, role: str, names: list[str], cfg: Config, seen: set[str],
                 report: Progress, on_skip: OnSkip | None = None) -> pd.DataFrame:
    """The messages of ``folder`` not read before."""
    from triage.ingest.mailtable import read_mailboxes

    label = f"{folder.parent.name}/{folder.name}"

    def on_messages(n: int) -> None:
        report(ScanProgress(label, "messages", n))

    df = read_mailboxes([folder], role=role, my_hostnames=names or None,
                        trusted_relays=cfg.trusted_relays, skip_keys=seen,
                        progress=on_messages, on_skip=on_skip)
    report(ScanProgress(label, "messages", len(df), finished=True))
    return df


def _serialised(report: Progress) -> Progress:
    """``report`` behind a lock: folder progress may come from FolderReader's thread."""
    lock = threading.Lock()

    def locked(ev: ScanProgress) -> None:
        with lock:
            report(ev)

    return locked


# TRIAGE_SCAN_SEQUENTIAL=1 reads the folders after the logs, in this process.
_SEQUENTIAL = os.environ.get("TRIAGE_SCAN_SEQUENTIAL", "") not in ("", "0")


class FolderReader:
    """Read mail folders in a child process while the caller parses the logs.

    The child is started with ``spawn`` (the parent's polars thread pool must not be forked)
    and only reads the folders: killing either process at any point loses nothing. It runs
    code of this module only, so it is started without the caller's main script (see
    :func:`_main_hidden`). Its
    progress comes back over a pipe to a thread here, which hands it to ``report``. If the
    child fails, :meth:`results` leaves the failed folders out and the caller reads them
    itself, so an error is raised the same way as without the child.
    """

    def __init__(self, jobs: list[tuple[str, Path, set[str]]], names: list[str],
                 trusted_relays: Sequence[str], report: Progress):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_folder_worker, name="triage-folders", daemon=True,
                                 args=(send, [(r, str(f), k) for r, f, k in jobs], names,
                                       tuple(trusted_relays)))
        with _main_hidden():
            self._proc.start()
        send.close()
        self._report = report
        self._frames: dict[str, list[pd.DataFrame]] = {}  # per folder, in chunks
        self._done: set[str] = set()
        self.skipped: dict[str, str] = {}  # mail left out for now: path -> why
        self._thread = threading.Thread(target=self._listen, name="triage-folders",
                                        daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        from triage.ingest.mailtable import rows_frame

        while True:
            try:
                kind, *args = self._recv.recv()
            except (EOFError, OSError):
                return
            if kind == "progress":
                self._report(ScanProgress(*args))
            elif kind == "rows":  # typed at once: rows take several times the memory
                self._frames.setdefault(args[0], []).append(rows_frame(args[1]))
            elif kind == "skipped":
                self.skipped[args[0]] = args[1]
            elif kind == "done":
                self._done.add(args[0])
            elif kind == "end":
                return

    def results(self) -> dict[str, pd.DataFrame]:
        """The new messages per folder (resolved path), once the child is done."""
        import pandas as pd

        from triage.ingest.mailtable import rows_frame

        self._thread.join()
        self._proc.join()
        self._recv.close()
        out = {}
        for key in self._done:
            frames = self._frames.get(key) or [rows_frame([])]
            out[key] = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        return out

    def stop(self) -> None:
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join()
        self._recv.close()


_MAIN_LOCK = threading.Lock()


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """Start a ``spawn`` child here without it running the caller's main script again.

    ``spawn`` makes the child import the parent's ``__main__`` (by its module name, or by
    running its file as ``__mp_main__``) so that what was defined there can be unpickled. A
    script that calls :func:`scan` at its top level, without ``if __name__ ==
    "__main__":``, would then run again in the child: its side effects twice, and a scan
    in the child. The folder reader needs nothing from ``__main__``, and multiprocessing
    leaves a main module without ``__spec__`` and ``__file__`` alone (as for the
    interactive interpreter): such a stand-in takes its place while the child starts. The
    lock keeps two threads from swapping it at once.
    """
    with _MAIN_LOCK:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            if main is None:
                del sys.modules["__main__"]
            else:
                sys.modules["__main__"] = main


def _folder_worker(conn: Connection, jobs: list[tuple[str, str, set[str]]], names: list[str],
                   trusted_relays: tuple[str, ...]) -> None:
    """The child of FolderReader: read each folder, send progress and the frames."""
    import signal

    from triage.ingest.mailtable import iter_row_chunks

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it on Ctrl-C
    try:
        for role, folder, keys in jobs:
            path = Path(folder)
            label = f"{path.parent.name}/{path.name}"
            key = str(path.resolve())

            def on_messages(n: int, label: str = label) -> None:
                conn.send(("progress", label, "messages", n))

            def on_skip(path: str, reason: str) -> None:
                conn.send(("skipped", path, reason))

            # Rows, not frames: this process needs no pandas (half a second of imports);
            # the parent builds the frame. A folder counts only once "done" is sent: if
            # it fails midway, the parent drops its rows and reads it itself.
            count = 0
            try:
                for rows in iter_row_chunks([path], role=role, my_hostnames=names or None,
                                            trusted_relays=trusted_relays, skip_keys=keys,
                                            progress=on_messages, on_skip=on_skip):
                    conn.send(("rows", key, rows))
                    count += len(rows)
            except Exception:  # the parent reads this folder itself, and reports why
                continue
            conn.send(("progress", label, "messages", count, None, None, True))
            conn.send(("done", key))
        conn.send(("end",))
    except (BrokenPipeError, OSError):
        pass  # the parent is gone: nothing to report to


def _to_polars(df: pd.DataFrame) -> pl.DataFrame:
    """The mail table in polars, with text columns kept as text even when all empty."""
    import polars as pl

    frame = pl.from_pandas(df)
    return frame.with_columns([pl.col(c).cast(pl.String) for c, t in frame.schema.items()
                               if t == pl.Null])


def _same(new: Sequence[object], old: Sequence[object]) -> bool:
    return sorted(map(repr, new)) == sorted(map(repr, old))
