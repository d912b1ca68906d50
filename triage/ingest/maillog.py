"""Read mail.log files into typed events, in bounded memory, vectorised over chunks of lines.

A file is read in blocks of whole lines (``chunk_bytes``). Each block becomes a polars frame of
lines; the syslog header (timestamp, host, program tag) is split with string slicing, the line
kind is chosen from (daemon, first word) and each kind's regular expression runs only over the
lines that can be of that kind (see ``linekinds``). A per-line Python loop would top out near
pflogsumm's speed; this keeps the per-line work in Rust.

Nothing here raises on bad input: NUL bytes, invalid UTF-8, overlong and truncated lines become
``unparsed`` rows with a reason.
"""

from __future__ import annotations

import io
import os
import re
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl

from triage.config import DEFAULT_RULE_ID_PATTERN
from triage.errors import InputError
from triage.ingest.extract import (
    FIRST_WORD_RE,
    MILTER_PROGRAMS,
    candidates,
    extract_events,
)
from triage.ingest.kindframes import KindFrames
from triage.ingest.logfile import (  # noqa: F401 - also this module's API
    MAX_LINE_BYTES,
    READ_ERRORS,
    SECONDARY_NAME,
    TAIL_BYTES,
    BlockReader,
    iter_blocks,
    open_log,
)

# A block costs a fixed ~30 ms of CPU plus ~2.5 us per line, and holds several times its
# size in frames while it is parsed. About half of the fixed cost (~13-18 ms) is compiling
# regexes: polars keeps the last 32 compiled regexes per thread, and a block runs ~70
# patterns (header, first word, line kinds, reject tails, reason classes), so each block
# compiles them all again (and warms their lazy DFAs from cold). Bigger blocks pay it less
# often. `triage parse` reads 8 MiB blocks one at a time (polars spreads each block's work
# over the cores): on 1M lines about 1 s less CPU than 4 MiB blocks two at a time, as fast,
# 10 MB less memory. The weekly scan reads 16 MiB blocks (SCAN_CHUNK_BYTES): on the bench's
# busy week about 0.5 s less CPU than 8 MiB, for 15-45 MB more peak memory.
DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024
SCAN_CHUNK_BYTES = 16 * 1024 * 1024
_MONTHS = {m: i + 1 for i, m in enumerate(
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])}
_POSTFIX_TAG = re.compile(r"^(postfix(?:-[\w.-]+)?)((?:/[\w.-]+)*)/([\w.-]+)$")

UNPARSED_SCHEMA = pl.Schema({"file": pl.String(), "line_no": pl.Int64(), "reason": pl.String(),
                             "line": pl.String()})


@dataclass(frozen=True)
class ReadOptions:
    """How to read traditional timestamps and rule ids.

    ``year``: the year of the first traditional timestamp of each file (later lines roll over
    at Dec -> Jan). When None the year is inferred from the file's mtime: the latest year that
    does not put the line in the future of the file's last write.
    """

    year: int | None = None
    timezone: str | None = None
    rule_id_pattern: str = DEFAULT_RULE_ID_PATTERN
    chunk_bytes: int = field(default_factory=lambda: chunk_bytes_setting(DEFAULT_CHUNK_BYTES))
    # blocks parsed at once on a thread pool (polars releases the GIL); each holds a block's
    # worth of frames, so this multiplies the memory held. One is as fast on 2 cores: polars
    # already runs a block's kinds in parallel.
    workers: int = field(default_factory=lambda: int(os.environ.get("TRIAGE_PARSE_WORKERS")
                                                     or 1))


def chunk_bytes_setting(default: int) -> int:
    """The block size: ``$TRIAGE_CHUNK_BYTES`` when set, else ``default``."""
    value = os.environ.get("TRIAGE_CHUNK_BYTES", "")
    return int(value) if value.strip() else default


@dataclass
class Chunk:
    kinds: KindFrames
    unparsed: pl.DataFrame
    lines: int
    # lines per program name of the lines with a syslog header (mail programs and others)
    programs: dict[str, int] = field(default_factory=dict)
    file: str = ""

    @property
    def events(self) -> pl.DataFrame:
        """The wide events table of this chunk (built on demand; see KindFrames)."""
        return self.kinds.wide()


@dataclass
class ReadStats:
    lines: int = 0
    events: int = 0
    unparsed: int = 0
    programs: Counter[str] = field(default_factory=Counter)  # lines per program, all programs
    files: list[str] = field(default_factory=list)
    skipped_duplicate_lines: int = 0
    # files (or parts of files) not read, one "file: what happened" each (logcursor.read_new)
    problems: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# files


def first_timestamp(path: str | Path, opts: ReadOptions) -> datetime | None:
    """The time of the first line with a parsable timestamp (for ordering files by content)."""
    try:
        with open_log(path) as f:
            head = f.read(256 * 1024)
    except (*READ_ERRORS, InputError):
        return None
    lines = (head.split(b"\n")[:-1] or head.split(b"\n"))[:2000]
    # all candidate lines in one frame: one polars pass, not one per line
    frame = pl.DataFrame({"line": [raw.decode("utf-8", "replace") for raw in lines]},
                         schema={"line": pl.String})
    times = _timestamps(frame, reference_time(path, opts), opts).drop_nulls()
    return times[0] if len(times) else None


_SECONDARY = SECONDARY_NAME


def order_files(paths: Sequence[str | Path], opts: ReadOptions, missing_ok: bool = False
                ) -> tuple[list[Path], list[Path]]:
    """Split into primary logs and mail.warn/mail.err style logs, each ordered by content time.

    Debian's rsyslog writes warnings to mail.log *and* mail.warn/mail.err; the secondary files
    are read only for times no primary file covers, so no line is counted twice. A missing
    file is an error, or (``missing_ok``: rotated away since it was listed) left out.
    """
    primary: list[tuple[datetime, int, Path]] = []
    secondary: list[tuple[datetime, int, Path]] = []
    far = datetime.max.replace(tzinfo=UTC)
    for i, p in enumerate(paths):
        path = Path(p)
        if not path.exists():
            if missing_ok:
                continue
            raise InputError("no such log file", file=path)
        if path.is_dir():
            raise InputError("is a directory, not a log file", file=path)
        t = first_timestamp(path, opts) or far
        # on equal first times, the name with the higher rotation number is older
        target = secondary if _SECONDARY.search(path.name) else primary
        target.append((t, -_rotation_number(path.name), path))
        del i
    return [p for *_, p in sorted(primary)], [p for *_, p in sorted(secondary)]


def _rotation_number(name: str) -> int:
    m = re.search(r"\.(\d+)(?:\.(?:gz|bz2|xz))?$", name)
    return int(m.group(1)) if m else 0


def reference_time(path: str | Path, opts: ReadOptions) -> datetime:
    """Reference 'now' for year inference: the file's mtime in the log time zone (naive)."""
    tz = _zone(opts.timezone)
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        mtime = datetime.now().timestamp()
    return datetime.fromtimestamp(mtime, tz).replace(tzinfo=None)


def _zone(name: str | None) -> ZoneInfo:
    if name:
        return ZoneInfo(name)
    try:
        link = os.readlink("/etc/localtime")
        return ZoneInfo(link.split("zoneinfo/", 1)[1])
    except (OSError, IndexError, ValueError, KeyError):
        return ZoneInfo("UTC")


# --------------------------------------------------------------------------------------------
# one block -> events


def lines_frame(block: bytes, first_line_no: int, is_last: bool) -> tuple[pl.DataFrame, list]:
    """Split a block into a frame (line_no, line); NUL / overlong / truncated lines go aside."""
    bad: list[tuple[int, str, str]] = []
    if b"\x00" in block or (b"\r" in block and b"\r" in block.replace(b"\r\n", b"\n")):
        raw_lines = block.split(b"\n")
        if raw_lines and raw_lines[-1] == b"":
            raw_lines.pop()
        clean: list[str | None] = []
        for i, raw in enumerate(raw_lines):
            if len(raw) > MAX_LINE_BYTES:  # (parse_block reports the other overlong lines)
                bad.append((first_line_no + i, "overlong line", _show(raw)))
                clean.append(None)
            elif b"\x00" in raw:
                bad.append((first_line_no + i, "NUL byte in line", _show(raw)))
                clean.append(None)
            elif b"\r" in raw.rstrip(b"\r"):
                bad.append((first_line_no + i, "carriage return inside line", _show(raw)))
                clean.append(None)
            else:
                clean.append(raw.rstrip(b"\r").decode("utf-8", "replace"))
        frame = pl.DataFrame({"line": pl.Series(clean, dtype=pl.String)})
    else:
        frame = pl.read_csv(io.BytesIO(block), has_header=False, separator="\x00",
                            quote_char=None, new_columns=["line"], encoding="utf8-lossy",
                            schema={"line": pl.String})
    frame = frame.with_row_index("line_no", offset=first_line_no).with_columns(
        pl.col("line_no").cast(pl.Int64))
    if is_last and not block.endswith(b"\n") and frame.height:
        last = frame["line"][-1]
        bad.append((first_line_no + frame.height - 1,
                    "truncated: no newline at end of file", last or ""))
        frame = frame.head(frame.height - 1)
    return frame, bad


def _show(raw: bytes) -> str:
    return raw[:512].decode("utf-8", "replace").replace("\x00", "\\0")


def parse_block(block: bytes, file: str, first_line_no: int, is_last: bool,
                ref: datetime, opts: ReadOptions, year_state: dict[str, int]) -> Chunk:
    """Parse one block of whole lines into events and unparsed rows."""
    frame, bad = lines_frame(block, first_line_no, is_last)
    n_lines = frame.height + sum(1 for b in bad if b[1].startswith("truncated"))
    line = pl.col("line")
    length = line.str.len_bytes()
    bad_utf8 = line.str.contains("\ufffd", literal=True)
    unparsed = [
        frame.filter(length > MAX_LINE_BYTES).select(
            "line_no", pl.lit("overlong line").alias("reason"), line.str.slice(0, 512)),
        frame.filter(bad_utf8 & (length <= MAX_LINE_BYTES)).select(
            "line_no", pl.lit("invalid UTF-8").alias("reason"), "line"),
    ]
    frame = frame.filter(line.is_not_null() & (length > 0) & (length <= MAX_LINE_BYTES)
                         & ~bad_utf8)
    frame = _split_header(frame)
    frame = frame.with_columns(_timestamps(frame, ref, opts, year_state).alias("time"))
    no_header = pl.col("time").is_null() | pl.col("msg").is_null()
    unparsed.append(frame.filter(no_header).select(
        "line_no", pl.lit("no syslog header (timestamp host program:)").alias("reason"), "line"))
    # From here on the line is carried as its parts; it is rebuilt for the rare unparsed row.
    frame = _tag_columns(frame.filter(~no_header).drop("line", "trad", "ts"))
    programs = dict(frame.group_by("program").len().iter_rows())
    stamps = frame.select("line_no", "ts_text")
    frame = frame.drop("ts_text")
    by_kind, unknown = extract_events(frame, opts.rule_id_pattern)
    del frame  # the lines' text is no longer needed; free it before the next step
    if unknown.height:
        unknown = unknown.join(stamps, on="line_no")
        unparsed.append(unknown.select(
            "line_no", pl.lit("unrecognised line of a mail program").alias("reason"),
            _rebuild_line()))
    bad_frame = pl.DataFrame(bad, schema={"line_no": pl.Int64, "reason": pl.String,
                                          "line": pl.String}, orient="row")
    unparsed_df = pl.concat([u.select("line_no", "reason", "line") for u in unparsed]
                            + [bad_frame]).with_columns(pl.lit(file).alias("file"))
    return Chunk(kinds=KindFrames(by_kind, file),
                 unparsed=unparsed_df.select(list(UNPARSED_SCHEMA)).sort("line_no"),
                 lines=n_lines, programs=programs, file=file)


def conform(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """The columns of ``schema``, in its order and types."""
    return frame.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])


# The header ends at the first ": " (timestamps, host names and program tags contain none).
# One short regular expression reads it; its match ends there, so its cost does not depend on
# the length of the message. The first word of the message, which picks the candidate line
# kinds, is read later and only for lines of mail programs.
_HEADER_RE = (
    r"^(?P<ts_text>[A-Z][a-z]{2} (?: [1-9]|[0-9]{1,2}) [0-9]{2}:[0-9]{2}:[0-9]{2}|"
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:Z|[+-][0-9]{2}:?[0-9]{2})"
    r") (?P<host>[^ ]+) (?P<program>[^ \[:]+)(?:\[(?P<pid_text>[0-9]+)\])?: "
)


def _split_header(frame: pl.DataFrame) -> pl.DataFrame:
    line = pl.col("line")
    h = line.str.extract_groups(_HEADER_RE)
    return frame.with_columns(h.alias("_h")).with_columns(
        pl.col("_h").struct.field("ts_text"),
        pl.col("_h").struct.field("host"),
        pl.col("_h").struct.field("program"),
        pl.col("_h").struct.field("pid_text").cast(pl.Int64, strict=False).alias("pid"),
        line.str.slice(line.str.find(": ", literal=True) + 2).alias("msg"),
    ).drop("_h").with_columns(
        (pl.col("ts_text").str.slice(3, 1) == " ").alias("trad"),
        pl.col("ts_text").alias("ts"),
        pl.when(pl.col("ts_text").is_not_null()).then(pl.col("msg")).alias("msg"),
    )


def _rebuild_line() -> pl.Expr:
    pid = pl.when(pl.col("pid").is_not_null()).then(
        pl.format("[{}]", pl.col("pid"))).otherwise(pl.lit(""))
    return pl.concat_str([pl.col("ts_text"), pl.lit(" "), pl.col("host"), pl.lit(" "),
                          pl.col("program"), pid, pl.lit(": "), pl.col("msg")]).alias("line")


def _timestamps(frame: pl.DataFrame, ref: datetime, opts: ReadOptions,
                year_state: dict[str, int] | None = None) -> pl.Series:
    """UTC timestamps for a frame with a ``line`` column (or ``ts`` + ``trad`` columns)."""
    if "ts" not in frame.columns:
        frame = _split_header(frame)
    frame = frame.select("ts", "trad")
    ts, trad = pl.col("ts"), pl.col("trad")
    zone = _zone(opts.timezone).key
    iso = ts.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%#z", strict=False, time_zone="UTC")
    if opts.year is not None:
        year = _year_by_rollover(frame, opts.year, year_state if year_state is not None else {})
    else:
        year = pl.lit(ref.year)
    naive = pl.concat_str([year.cast(pl.String), pl.lit(" "), ts]).str.to_datetime(
        "%Y %b %e %H:%M:%S", strict=False)
    if opts.year is None:
        limit = ref + timedelta(days=1)  # clock skew between hosts; never further ahead
        naive = pl.when(naive > limit).then(naive.dt.offset_by("-1y")).otherwise(naive)
    local = naive.dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null")
    out = frame.select(pl.when(trad).then(local.dt.convert_time_zone("UTC")).otherwise(iso)
                       .alias("time"))
    return out["time"]


def _year_by_rollover(frame: pl.DataFrame, first_year: int, state: dict[str, int]) -> pl.Expr:
    """Year per line when the first line's year is given: +1 at each Dec -> Jan jump."""
    months = frame.select(pl.col("ts").str.slice(0, 3).replace_strict(
        _MONTHS, default=None, return_dtype=pl.Int64).forward_fill())["ts"]
    prev = state.get("month")
    offset = state.get("offset", 0)
    shifted = months.shift(1, fill_value=prev if prev is not None else months[0] if len(months)
                           else 1)
    step = (((shifted - months) >= 6).cast(pl.Int64) - ((months - shifted) >= 6).cast(pl.Int64))
    years = step.fill_null(0).cum_sum() + offset + first_year
    if len(months):
        last = months.drop_nulls()
        if len(last):
            state["month"] = int(last[-1])
        state["offset"] = int(years[-1]) - first_year
    return pl.lit(years)


_TAG_CACHE: dict[str, tuple[str, str | None, str | None, str]] = {}


POSTFIX_DAEMONS = frozenset({
    "anvil", "bounce", "cleanup", "discard", "dnsblog", "error", "flush", "lmtp", "local",
    "master", "oqmgr", "pickup", "pipe", "postalias", "postcat", "postconf", "postdrop",
    "postfix", "postfix-script", "postkick", "postlock", "postlog", "postlogd", "postmap",
    "postmulti", "postqueue", "postscreen", "postsuper", "proxymap", "qmgr", "qmqpd", "relay",
    "retry", "scache", "sendmail", "showq", "smtp", "smtpd", "spawn", "tlsmgr", "tlsproxy",
    "trace", "trivial-rewrite", "verify", "virtual",
})


def split_program(name: str) -> tuple[str, str | None, str | None, str]:
    """'postfix-out/submission/smtpd' -> (program name, instance, service, daemon)."""
    hit = _TAG_CACHE.get(name)
    if hit is None:
        m = _POSTFIX_TAG.match(name)
        # Other daemons often log under a postfix/ name too (postfwd, postgrey, the Perl SPF
        # policy server): they are counted as other programs, not read as Postfix lines.
        if m and m.group(3) in POSTFIX_DAEMONS:
            service = m.group(2).strip("/") or None
            hit = (name, m.group(1), service, m.group(3))
        else:
            hit = (name, None, None, name)
        if len(_TAG_CACHE) < 10_000:
            _TAG_CACHE[name] = hit
    return hit


def _tag_columns(frame: pl.DataFrame) -> pl.DataFrame:
    names = frame["program"].unique().to_list()
    parts = {n: split_program(n) for n in names if n is not None}
    lookup = pl.DataFrame(
        [(n, p[1], p[2], p[3]) for n, p in parts.items()],
        schema={"program": pl.String, "instance": pl.String, "service": pl.String,
                "daemon": pl.String}, orient="row")
    return frame.join(lookup, on="program", how="left")


# --------------------------------------------------------------------------------------------
# many files -> a stream of chunks


def read_chunks(paths: Sequence[str | Path], opts: ReadOptions | None = None,
                stats: ReadStats | None = None) -> Iterator[Chunk]:
    """Parse log files in content-time order, one chunk of events at a time.

    mail.warn / mail.err style files contribute only lines outside the time span of the primary
    files (their other lines are copies of mail.log lines); the skipped lines are counted in
    ``stats.skipped_duplicate_lines``.
    """
    opts = opts or ReadOptions()
    stats = stats if stats is not None else ReadStats()
    primary, secondary = order_files(paths, opts)
    spans: list[tuple[datetime, datetime]] = []
    for path in primary + secondary:
        is_secondary = path in secondary
        stats.files.append(str(path))
        ref = reference_time(path, opts)
        year_state: dict[str, int] = {}
        first: datetime | None = None
        last: datetime | None = None
        for chunk in _parse_blocks(path, ref, opts, year_state):
            stats.lines += chunk.lines
            if is_secondary and spans:
                covered = pl.lit(False)
                for lo, hi in spans:
                    covered = covered | pl.col("time").is_between(lo, hi)
                before = chunk.kinds.height
                chunk.kinds = chunk.kinds.filter(~covered)
                stats.skipped_duplicate_lines += before - chunk.kinds.height
            span = chunk.kinds.time_range()
            if span is not None:
                first = span[0] if first is None else min(first, span[0])
                last = span[1] if last is None else max(last, span[1])
            stats.events += chunk.kinds.height
            stats.unparsed += chunk.unparsed.height
            stats.programs.update(chunk.programs)
            yield chunk
        if not is_secondary and first is not None and last is not None:
            spans.append((first, last))


def _parse_blocks(path: Path, ref: datetime, opts: ReadOptions,
                  year_state: dict[str, int]) -> Iterator[Chunk]:
    """Parse the blocks of one file, several at a time on a thread pool, yielded in order.

    polars releases the GIL while it works, so threads give real parallelism here. Line
    numbers of a block need the line count of the blocks before it, counted cheaply up front.
    With ``--year`` the Dec -> Jan rollover is sequential state, so blocks go one by one.
    """
    workers = 1 if opts.year is not None else max(1, min(opts.workers, os.cpu_count() or 1))
    line_no = 1
    if workers == 1:
        for block, is_last, _ in iter_blocks(path, opts.chunk_bytes):
            chunk = parse_block(block, str(path), line_no, is_last, ref, opts, year_state)
            line_no += chunk.lines
            yield chunk
        return
    pending: deque[Future[Chunk]] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for block, is_last, _ in iter_blocks(path, opts.chunk_bytes):
            pending.append(pool.submit(parse_block, block, str(path), line_no, is_last, ref,
                                       opts, {}))
            line_no += block.count(b"\n") + (1 if is_last and not block.endswith(b"\n") else 0)
            while len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def explain_line(line: str, opts: ReadOptions | None = None) -> dict[str, object]:
    """How one log line is read: header fields, candidate kinds, the kind chosen, its fields.

    >>> line = "Nov 28 08:48:53 mx postfix/smtpd[7]: connect from a.example[192.0.2.1]"
    >>> explain_line(line)["kind"]
    'connect'
    """
    opts = opts or ReadOptions()
    text = line.rstrip("\r\n")
    ref = datetime.now(_zone(opts.timezone)).replace(tzinfo=None)
    chunk = parse_block((text + "\n").encode("utf-8", "surrogateescape"), "<line>", 1, False,
                        ref, opts, {})
    header = _split_header(pl.DataFrame({"line": [text]}))
    program = header["program"][0]
    msg = header["msg"][0]
    word = header.select(pl.col("msg").str.extract(FIRST_WORD_RE, 1))["msg"][0]
    cands: tuple[str, ...] = ()
    if program:
        _, instance, _, daemon = split_program(program)
        if instance is not None or program in MILTER_PROGRAMS:
            cands = candidates(program, daemon, word, instance is not None)
    out: dict[str, object] = {"line": text, "program": program, "message": msg,
                              "first_word": word, "candidate_kinds": list(cands)}
    events = chunk.events
    if events.height:
        row = events.row(0, named=True)
        out["kind"] = row["kind"]
        out["fields"] = {k: v for k, v in row.items()
                         if v is not None and k not in ("file", "line_no", "kind")}
    elif chunk.unparsed.height:
        out["kind"] = None
        out["unparsed_reason"] = chunk.unparsed["reason"][0]
    else:
        out["kind"] = None
        out["note"] = ("not a mail program line: counted, not parsed" if program
                       else "no syslog header")
    return out
