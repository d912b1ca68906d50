"""Events -> sessions, messages (queue incarnations), deliveries and rejects, chunk by chunk.

State is bounded: only open smtpd sessions, open queue files and short time windows of
policyd-spf results, milter results and hop links are carried from one chunk to the next;
everything finished is emitted. The aggregations are all mergeable (min, max, sum, first and
last non-null), so a session or message split across chunks is aggregated per chunk and the
partial rows merged, with no per-event Python loop.

Keys and boundaries:

- session: (host, pid) of an smtpd process; a ``connect`` starts a new one, ``disconnect``
  ends it. A session that never disconnects (log cut, crash) ends at the next connect of its
  pid and is emitted with a null ``disconnect_time``.
- message: (host, instance, queue_id); ``removed`` (or a cleanup/milter reject of the queued
  message) ends an incarnation, so a reused queue id starts a new row with ``incarnation``
  one higher when the previous one ended within ``RECENT``.
- policyd-spf logs no queue id and runs in its own process: its result is matched to the
  message by (host, client address) and the nearest earlier time, preferring the mailfrom
  identity. opendkim/opendmarc results are matched by (host, queue id) and time.
- hops: a message's ``parent_queue_id`` comes from ``orig_queue_id`` on its ``client=`` line,
  or from a delivery of another queue file that says ``queued as`` this id, or from a bounce
  notification. Finished messages wait one chunk before they are emitted, so a link logged
  just after the child was removed is still seen.

Across scans (``triage scan`` reads only what is new): :meth:`Assembler.suspend` emits the
finished rows and :meth:`Assembler.carried` gives what is open (sessions, queue files, the
short windows), which the next scan hands to :meth:`Assembler.resume`; the rows are then the
ones a single read of the whole log gives. So that the carried state stays bounded, what stays
open far longer than Postfix would keep it is emitted once the log's time has moved past it:
a session with no line for ``RECENT``, a queue file with no line for ``QUEUE_STALE``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

import polars as pl

from triage.ingest.kindframes import KindFrames
from triage.ingest.maillog import conform

RECENT = timedelta(hours=1)  # how long hop links, milter and SPF results are kept
SPF_TOLERANCE = timedelta(minutes=15)
# a milter's result is logged between a message's first and last line; traditional
# timestamps have whole seconds, and lines of different daemons may come a little out of order
MILTER_SLACK = timedelta(seconds=2)
LINK_TOLERANCE = timedelta(minutes=10)  # a hop's link is logged as its next queue file starts
# A queue file is logged at least every maximal_backoff_time (4000 s) while it waits, and
# expires after maximal_queue_lifetime (5 days): one with no line for longer has gone without
# its "removed" being logged (or sits in the hold queue). It is emitted as it stands.
QUEUE_STALE = timedelta(days=6)
# The state one scan hands to the next (see Assembler.carried); bump CARRY_FORMAT whenever
# these frames or their columns change, so that a newer triage does not misread an older one.
CARRY_FORMAT = 1
CARRIED = ("open_sessions", "open_messages", "spf", "milter", "links", "recent_qids",
           "recent_closed")

_SESSION_EVENTS = ("connect", "disconnect", "client", "reject", "milter", "tls", "sasl_failure",
                   "lost_connection", "timeout", "too_many_errors", "improper_pipelining",
                   "non_smtp_command")
# bounce_notice lines name the original message but are used only as hop links: they may be
# logged after that message's "removed" and must not open a new incarnation of it.
_MESSAGE_EVENTS = ("client", "message_id", "qmgr_from", "removed", "expired", "delivery",
                   "pickup", "check", "milter", "reject")
REJECT_KINDS = ("reject", "milter", "check")
# the event columns each consumer reads
_SESSION_COLUMNS_IN = ["host", "pid", "time", "kind", "daemon", "program",
                       "client_name", "client_ip", "helo", "sasl_username", "sasl_method", "tls",
                       "commands", "action", "stage"]
_MESSAGE_COLUMNS_IN = ["host", "instance", "queue_id", "time", "kind", "pid", "action", "stage",
                       "client_name", "client_ip", "helo", "sender", "size", "nrcpt",
                       "message_id", "sasl_username", "orig_queue_id", "reason", "status"]
_REJECT_ACTIONS = ("reject", "discard")
_DKIM_RANK = {"pass": 4, "fail": 3, "temperror": 2, "none": 1}
_DKIM_NAME = {v: k for k, v in _DKIM_RANK.items()}
_DKIM_RESULT = pl.col("dkim_rank").replace_strict(_DKIM_NAME, default=None,
                                                  return_dtype=pl.String).alias("dkim_result")

SESSION_COLUMNS = ["host", "pid", "connect_time", "disconnect_time", "client_name", "client_ip",
                   "helo", "sasl_username", "tls", "commands", "n_messages", "n_rejects",
                   "program", "sasl_method", "lost_after", "session_id", "spf_result"]
MESSAGE_COLUMNS = ["host", "instance", "queue_id", "incarnation", "first_seen", "last_seen",
                   "client_name", "client_ip", "helo", "sender", "size", "nrcpt", "message_id",
                   "spf_result", "dkim_result", "dmarc_result", "parent_queue_id", "status",
                   "origin", "sasl_username", "orig_queue_id", "dkim_domains", "dmarc_domain",
                   "n_sent", "n_deferred", "n_bounced", "reject_reason", "session_id"]
DELIVERY_COLUMNS = ["time", "host", "queue_id", "recipient", "orig_recipient", "relay", "delay",
                    "dsn", "status", "response", "next_queue_id", "instance", "program", "delays"]
# deliveries also get "hop" (bool), computed by the assembler
_REJECT_SOURCE = ["time", "host", "program", "pid", "queue_id", "stage", "code", "enhanced_code",
                  "object", "reason_class", "reason", "action", "client_name", "client_ip",
                  "helo", "sender", "recipient", "proto", "rule_id", "file", "line_no"]
REJECT_COLUMNS = ["time", "host", "program", "pid", "queue_id", "stage", "code", "enhanced_code",
                  "object", "reason_class", "reason", "action", "client_name", "client_ip",
                  "helo", "sender", "recipient", "proto", "rule_id", "file", "line_no",
                  "session_id"]


_T = pl.Datetime("us", "UTC")
_S, _I = pl.String(), pl.Int64()
SESSION_SCHEMA = pl.Schema({
    "host": _S, "pid": _I, "connect_time": _T, "disconnect_time": _T, "client_name": _S,
    "client_ip": _S, "helo": _S, "sasl_username": _S, "tls": _S, "commands": _S,
    "n_messages": _I, "n_rejects": _I, "program": _S, "sasl_method": _S, "lost_after": _S,
    "session_id": _S, "spf_result": _S})
MESSAGE_SCHEMA = pl.Schema({
    "host": _S, "instance": _S, "queue_id": _S, "incarnation": _I, "first_seen": _T,
    "last_seen": _T, "client_name": _S, "client_ip": _S, "helo": _S, "sender": _S, "size": _I,
    "nrcpt": _I, "message_id": _S, "spf_result": _S, "dkim_result": _S, "dmarc_result": _S,
    "parent_queue_id": _S, "status": _S, "origin": _S, "sasl_username": _S,
    "orig_queue_id": _S, "dkim_domains": pl.List(_S), "dmarc_domain": _S, "n_sent": _I,
    "n_deferred": _I, "n_bounced": _I, "reject_reason": _S, "session_id": _S})
assert list(SESSION_SCHEMA) == SESSION_COLUMNS and list(MESSAGE_SCHEMA) == MESSAGE_COLUMNS
_MESSAGE_KEY = ["host", "instance", "queue_id"]
# the order of emitted rows (within each batch's): sessions by start, messages by first line
_SESSION_ORDER = ["connect_time", "host", "pid", "first_line"]
_MESSAGE_ORDER = ["first_seen", *_MESSAGE_KEY, "last_seen"]


@dataclass
class Tables:
    sessions: pl.DataFrame
    messages: pl.DataFrame
    deliveries: pl.DataFrame
    rejects: pl.DataFrame


def _first(col: str) -> pl.Expr:
    return pl.col(col).drop_nulls().first()


def _last(col: str) -> pl.Expr:
    return pl.col(col).drop_nulls().last()


def _when_kind(kind: str | tuple[str, ...], expr: pl.Expr) -> pl.Expr:
    cond = pl.col("kind") == kind if isinstance(kind, str) else pl.col("kind").is_in(kind)
    return pl.when(cond).then(expr)


# ---- sessions ------------------------------------------------------------------------------

def _runs(ev: pl.DataFrame, keys: list[str], ends_after: pl.Expr | None = None,
          starts_at: pl.Expr | None = None) -> pl.DataFrame:
    """``ev`` (sorted so that each key's rows are together, in line order) with ``seq`` and
    ``run``: each key's rows are cut into runs, a run starting at each ``starts_at`` row or
    after each ``ends_after`` row; ``seq`` numbers a key's runs from 0 (the run before the
    first start, if any, is 0 with ``starts_at``), ``run`` numbers all runs in order.
    Cumulative sums and shifts over the sorted rows stand in for window expressions, which
    cost ~1 us per group. (``run`` is not flagged as sorted: grouping by it then takes the
    hashing path, whose min, max and sum are about twice as fast as over sorted slices.)"""
    new_key = pl.lit(False)
    for c in keys:
        new_key = new_key | ~pl.col(c).eq_missing(pl.col(c).shift(1))
    if starts_at is not None:
        flag = starts_at.cast(pl.Int32)
        count = flag.cum_sum()  # starts up to and including this row
        before_key = count - flag  # ... up to the key's first row
        start = new_key | starts_at
    else:
        assert ends_after is not None
        flag = ends_after.cast(pl.Int32)
        count = before_key = flag.cum_sum() - flag  # ends before this row
        start = new_key | (flag.shift(1, fill_value=0) == 1)
    seq = count - pl.when(new_key).then(before_key).forward_fill()
    return ev.with_columns(seq.cast(pl.Int32).alias("seq"),
                           start.cum_sum().cast(pl.Int64).alias("run"))


def _by_key(ev: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """``ev`` with each key's rows together, in line order. Sorting by a hash of the key is
    several times cheaper than by its strings; a hash shared by two keys (found by counting
    the keys' and the hashes' changes) falls back to sorting by the strings."""
    if len(keys) == 1 and ev.schema[keys[0]].is_integer():
        return ev.sort(keys[0], "line_no")
    ev = ev.with_columns(_key_hash(keys).alias("_hash")).sort("_hash", "line_no")
    changes = [(~pl.col(c).eq_missing(pl.col(c).shift(1))) for c in keys]
    key_changes = changes[0]
    for c in changes[1:]:
        key_changes = key_changes | c
    counts = ev.select(key_changes.sum().alias("k"),
                       (pl.col("_hash") != pl.col("_hash").shift(1)).sum().alias("h"))
    if counts["k"].item() != counts["h"].item():
        ev = ev.sort(*keys, "line_no")
    return ev.drop("_hash")


def _key_hash(keys: list[str]) -> pl.Expr:
    return pl.struct(keys).hash()


def _session_partials(ev: pl.DataFrame, file: str) -> pl.DataFrame:
    """Per-chunk aggregates of smtpd events, one row per (host, pid, seq): a connect starts
    the next session of a process; lines before its first connect (seq 0) continue the
    session carried from the last chunk. ``link_lines``: the reject and client= lines."""
    ev = _runs(_by_process(ev), ["host", "pid"], starts_at=pl.col("kind") == "connect")
    return ev.group_by("run", maintain_order=True).agg(*_SESSION_AGGS).drop("run").with_columns(
        pl.lit(file, pl.String).alias("file"))


def _session_aggs() -> list[pl.Expr]:
    is_reject = (pl.col("kind").is_in(("reject", "milter"))
                 & pl.col("action").is_in(_REJECT_ACTIONS))
    return [
        pl.col("host").first(), pl.col("pid").first(), pl.col("seq").first(),
        pl.col("line_no").min().alias("first_line"),
        pl.col("time").min().alias("first_time"),
        pl.col("time").max().alias("last_time"),
        _when_kind("connect", pl.col("time")).min().alias("connect_time"),
        _when_kind("disconnect", pl.col("time")).max().alias("disconnect_time"),
        _first("client_name"), _first("client_ip"),
        _when_kind(("reject", "milter"), pl.col("helo")).last(ignore_nulls=True).alias("helo"),
        _first("sasl_username"), _first("sasl_method"), _first("tls"),
        _when_kind("disconnect", pl.col("commands")).last(ignore_nulls=True).alias("commands"),
        (pl.col("kind") == "client").sum().cast(pl.Int64).alias("n_messages"),
        is_reject.sum().cast(pl.Int64).alias("n_rejects"),
        _first("program"),
        _when_kind(("lost_connection", "timeout"), pl.col("stage")).last(ignore_nulls=True)
        .alias("lost_after"),
        (pl.col("kind") == "connect").any().alias("has_connect"),
        pl.col("line_no").filter(pl.col("kind").is_in(("reject", "milter", "client")))
        .alias("link_lines"),
    ]


_SESSION_AGGS = _session_aggs()  # polars expressions cost more to build than to run here


def _by_process(ev: pl.DataFrame) -> pl.DataFrame:
    """smtpd events by (host, pid), each process's in line order."""
    if ev["host"].n_unique() == 1:
        return ev.sort("pid", "line_no")
    return _by_key(ev, ["host", "pid"])


def session_id(host: pl.Expr, pid: pl.Expr, start: pl.Expr) -> pl.Expr:
    """A session's id: host, smtpd pid and the time of its connect line (microseconds since
    the epoch). It does not name the file, so it stays the same when mail.log is rotated."""
    return pl.format("{}/{}/{}", host, pid, start.dt.epoch("us"))


def _session_links(partials: pl.DataFrame, carried: pl.DataFrame | None) -> pl.DataFrame:
    """(line_no, session_id) for the reject and client= lines of this chunk."""
    groups = partials.select("host", "pid", "seq", "link_lines",
                             pl.coalesce("connect_time", "first_time").alias("start"))
    start = pl.col("start")
    if carried is not None and carried.height:
        groups = groups.join(carried.select(
            "host", "pid", pl.coalesce("connect_time", "first_time").alias("c_start")),
            on=["host", "pid"], how="left")
        cont = (pl.col("seq") == 0) & pl.col("c_start").is_not_null()
        start = pl.when(cont).then(pl.col("c_start")).otherwise(start)
    return groups.select(pl.col("link_lines").alias("line_no"),
                         session_id(pl.col("host"), pl.col("pid"), start).alias("session_id")
                         ).explode("line_no").drop_nulls("line_no")


def _merge_sessions(carried: pl.DataFrame | None,
                    partials: pl.DataFrame | None) -> pl.DataFrame | None:
    """The carried open sessions (seq 0) merged with this chunk's session rows. Only a row
    of seq 0 (lines before its process's first connect here) can continue a carried one;
    the others are whole already."""
    if carried is None or carried.height == 0 or partials is None:
        return partials if carried is None or carried.height == 0 else carried
    first = pl.col("seq") == 0
    # the carried rows come first, so "first" keeps the earlier value and "last" the later
    merged = pl.concat([carried, partials.filter(first)], how="diagonal_relaxed").group_by(
        "host", "pid", "seq", maintain_order=True).agg(*_SESSION_MERGE)
    return pl.concat([merged, partials.filter(~first)], how="diagonal_relaxed")


_SESSION_MERGE = [
    pl.col("first_line").first(), pl.col("file").first(),
    pl.col("first_time").min(), pl.col("last_time").max(),
    pl.col("connect_time").min(), pl.col("disconnect_time").max(),
    _first("client_name"), _first("client_ip"), _last("helo"), _first("sasl_username"),
    _first("sasl_method"), _first("tls"), _last("commands"),
    pl.col("n_messages").sum(), pl.col("n_rejects").sum(), _first("program"),
    _last("lost_after"), pl.col("has_connect").any(),
]


# ---- messages ------------------------------------------------------------------------------

def _message_aggs() -> list[pl.Expr]:
    rejected = pl.col("terminal") & (pl.col("kind") != "removed")
    status = pl.col("status")
    return [
        pl.col("time").min().alias("first_seen"), pl.col("time").max().alias("last_seen"),
        _when_kind("client", pl.col("client_name")).drop_nulls().first().alias("client_name"),
        _when_kind("client", pl.col("client_ip")).drop_nulls().first().alias("client_ip"),
        _when_kind(("check", "milter", "reject"), pl.col("helo")).drop_nulls().last()
        .alias("helo"),
        _when_kind(("qmgr_from", "pickup", "expired"), pl.col("sender")).drop_nulls().first()
        .alias("sender"),
        _first("size"), _first("nrcpt"), _first("message_id"), _first("sasl_username"),
        _first("orig_queue_id"),
        pl.col("kind").filter(pl.col("kind") == "pickup").first().alias("origin_pickup"),
        _when_kind("client", pl.col("pid")).drop_nulls().first().alias("smtpd_pid"),
        _when_kind("client", pl.col("session_id")).drop_nulls().first().alias("session_id"),
        (pl.col("kind") == "removed").any().alias("removed"),
        (pl.col("kind") == "expired").any().alias("expired"),
        rejected.any().alias("rejected"),
        _when_kind(("check", "milter", "reject"), pl.when(rejected).then(pl.col("reason")))
        .drop_nulls().first().alias("reject_reason"),
        ((pl.col("kind") == "check") & (pl.col("action") == "hold")).any().alias("held"),
        ((pl.col("kind") == "delivery") & (status == "sent")).sum().cast(pl.Int64)
        .alias("n_sent"),
        ((pl.col("kind") == "delivery") & (status == "deferred")).sum().cast(pl.Int64)
        .alias("n_deferred"),
        ((pl.col("kind") == "delivery") & status.is_in(("bounced", "expired"))).sum()
        .cast(pl.Int64).alias("n_bounced"),
        pl.col("terminal").any().alias("closed"),
    ]


# A queued message ends at "removed", or when cleanup (header/body checks) or a milter or
# smtpd refuses it after DATA. A reject at RCPT that carries a queue id only refused one more
# recipient of a message that goes on.
_TERMINAL = (pl.col("kind") == "removed") | (pl.col("action").is_in(_REJECT_ACTIONS) & (
    (pl.col("kind") == "check")
    | (pl.col("kind").is_in(("milter", "reject"))
       & pl.col("stage").is_in(("DATA", "END-OF-MESSAGE", "BDAT")))))
_MESSAGE_AGGS = _message_aggs()  # polars expressions cost more to build than to run here


# The kinds whose rows feed one first/last aggregate together (helo, sender, reject_reason);
# every other aggregate reads one kind, or does not depend on the order of rows.
_MESSAGE_KINDS_IN_ORDER = ("check", "milter", "reject", "qmgr_from", "pickup", "expired")
_MESSAGE_KINDS_ALONE = tuple(k for k in _MESSAGE_EVENTS if k not in _MESSAGE_KINDS_IN_ORDER)


def _message_events(kinds: KindFrames) -> pl.DataFrame:
    """The queue file events as ``_message_partials`` needs them: the kinds of
    ``_MESSAGE_KINDS_IN_ORDER`` together in line order, then the others kind after kind (each
    in line order). Sorting all rows by line would cost about 3x more."""
    return pl.concat([kinds.pick(_MESSAGE_KINDS_IN_ORDER, _MESSAGE_COLUMNS_IN),
                      kinds.pick(_MESSAGE_KINDS_ALONE, _MESSAGE_COLUMNS_IN, line_order=False)])


def _message_partials(ev: pl.DataFrame) -> pl.DataFrame:
    """Per-chunk aggregates of queue file events (ordered as by ``_message_events``), one row
    per (host, instance, queue id, seq): ``seq`` counts the incarnations ended before in this
    chunk."""
    ev = ev.with_columns(_TERMINAL.alias("terminal"))
    # Usually no queue id ends and goes on within one chunk (seq 0 everywhere): checked on
    # the aggregates, which saves numbering the rows by a window expression (~1 us a group).
    ends = pl.col("terminal")
    quick = ev.group_by(*_MESSAGE_KEY).agg(
        *_MESSAGE_AGGS, ends.sum().alias("_ends"),
        pl.col("line_no").filter(ends).min().alias("_first_end"),
        pl.col("line_no").max().alias("_last_line"))
    goes_on = (pl.col("_ends") > 1) | (pl.col("_first_end") != pl.col("_last_line"))
    if not quick.select(goes_on.any()).item():
        return quick.select(*_MESSAGE_KEY, pl.lit(0, pl.Int32).alias("seq"),
                            *[e.meta.output_name() for e in _MESSAGE_AGGS])
    ends_before = ends.cast(pl.Int32).cum_sum().over(*_MESSAGE_KEY) - ends.cast(pl.Int32)
    return ev.sort("line_no").with_columns(ends_before.alias("seq")).group_by(
        *_MESSAGE_KEY, "seq").agg(*_MESSAGE_AGGS)


def _merge_messages(carried: pl.DataFrame | None,
                    partials: pl.DataFrame | None) -> pl.DataFrame | None:
    """The carried open messages (seq 0) merged with this chunk's message rows; only rows
    of a carried queue id are aggregated again, the others are whole already."""
    if carried is None or carried.height == 0 or partials is None:
        return partials if carried is None or carried.height == 0 else carried
    again = pl.col("queue_id").is_in(carried.get_column("queue_id").implode())
    # the carried rows come first, so "first" keeps the earlier value and "last" the later
    merged = pl.concat([carried, partials.filter(again)], how="diagonal_relaxed").group_by(
        *_MESSAGE_KEY, "seq", maintain_order=True).agg(*_MESSAGE_MERGE)
    return pl.concat([merged, partials.filter(~again)], how="diagonal_relaxed")


_MESSAGE_MERGE = [
    pl.col("first_seen").min(), pl.col("last_seen").max(),
    *[_first(c) for c in ("client_name", "client_ip")], _last("helo"),
    *[_first(c) for c in ("sender", "size", "nrcpt", "message_id", "sasl_username",
                          "orig_queue_id", "origin_pickup", "smtpd_pid", "session_id")],
    *[pl.col(c).any() for c in ("removed", "expired", "rejected", "held", "closed")],
    _first("reject_reason"),
    *[pl.col(c).sum() for c in ("n_sent", "n_deferred", "n_bounced")],
]


def _number_runs(keys: pl.DataFrame) -> pl.DataFrame:
    """Incarnation numbers (``_n``) of the closed messages ``keys`` (key, last_seen, and the
    remembered ``_n`` and ``_end`` of the id, or nulls), when an id may close more than once
    in the batch; rows come back by id, with ``_row`` (batch order) and ``_more`` (a later
    row of the same id follows)."""
    # Rows of one id next to each other, in batch order, compared with the row before: no
    # window expressions (those cost ~10 us per group).
    keys = keys.with_row_index("_row").sort(*_MESSAGE_KEY, "_row")
    same = pl.lit(True)
    for c in _MESSAGE_KEY:
        same = same & pl.col(c).eq_missing(pl.col(c).shift(1))
    end = pl.col("last_seen")
    # the previous incarnation: the one before in this batch, else the remembered one
    prev = pl.when(same).then(end.shift(1)).otherwise(pl.col("_end"))
    restart = prev.is_null() | (end - prev > RECENT)
    # A run starts at each id's first row and at each restart: it counts up from 0, or from
    # the remembered number + 1 when it continues that.
    start = restart | ~same
    pos = pl.int_range(pl.len(), dtype=pl.Int64)
    return keys.with_columns(
        (pos - pl.when(start).then(pos).forward_fill()
         + pl.when(start).then(pl.when(restart).then(0).otherwise(pl.col("_n") + 1))
         .forward_fill()).alias("_n"),
        same.shift(-1, fill_value=False).alias("_more"))


def _message_status() -> pl.Expr:
    return (pl.when(pl.col("rejected")).then(pl.lit("rejected"))
            .when(pl.col("expired")).then(pl.lit("expired"))
            .when(pl.col("n_bounced") > 0).then(pl.lit("bounced"))
            .when(pl.col("held") & ~pl.col("removed")).then(pl.lit("held"))
            .when(pl.col("removed") & (pl.col("n_sent") > 0)).then(pl.lit("delivered"))
            .when(pl.col("removed")).then(pl.lit("removed"))
            .when(pl.col("n_deferred") > 0).then(pl.lit("deferred"))
            .otherwise(pl.lit("open")))


@dataclass
class Assembler:
    """Feed event chunks in time order; collect finished rows from each ``feed`` and ``finish``.

    >>> asm = Assembler()
    >>> # for chunk in read_chunks(paths): tables = asm.feed(chunk.kinds)
    """

    open_sessions: pl.DataFrame | None = None
    open_messages: pl.DataFrame | None = None
    pending_messages: pl.DataFrame | None = None
    spf: pl.DataFrame | None = None
    milter: pl.DataFrame | None = None
    links: pl.DataFrame | None = None
    recent_qids: pl.DataFrame | None = None
    session_links: pl.DataFrame | None = None
    recent_closed: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(
        schema={"host": _S, "instance": _S, "queue_id": _S, "_n": _I, "_end": _T}))

    def feed(self, kinds: KindFrames) -> Tables:
        """Take one batch of events (per kind, one file, in time order)."""
        self._buffers(kinds)
        sessions = self._sessions(kinds, final=False)
        closed = self._messages(kinds, final=False)
        messages = self._emit(self.pending_messages)
        self.pending_messages = closed
        self._prune(kinds)
        rejects = self._with_session(kinds.pick(REJECT_KINDS, [*_REJECT_SOURCE, "kind"]))
        return Tables(sessions, messages, self._deliveries(kinds), _rejects(rejects))

    def _with_session(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Add the smtpd session id of each line (reject and client= lines have one)."""
        if self.session_links is not None and self.session_links.height and frame.height:
            return frame.join(self.session_links, on="line_no", how="left",
                              maintain_order="left")
        return frame.with_columns(pl.lit(None, pl.String).alias("session_id"))

    def finish(self) -> Tables:
        sessions = self._sessions(None, final=True)
        still_open = self._messages(None, final=True)
        msgs = [m for m in (self.pending_messages, still_open) if m is not None and m.height]
        messages = self._emit(pl.concat(msgs, how="diagonal_relaxed") if msgs else None)
        self.pending_messages = None
        return self._ended(sessions, messages)

    def suspend(self) -> Tables:
        """End this read without ending the log: emit the finished messages still waiting
        for their next chunk, and keep what is open (sessions, queue files and the short
        windows) for :meth:`carried`. Unlike :meth:`finish`, which ends everything.

        A message removed just before the read stopped is stored now, as a single read of
        the log ending here would store it: the one thing a later line could add is a hop
        link logged after the child's "removed" (see the module docstring), a race of
        milliseconds that the next scan cannot win anyway once the row is stored."""
        pending, self.pending_messages = self.pending_messages, None
        self.session_links = None  # one batch's: nothing after it reads them
        return self._ended(_empty_sessions(), self._emit(pending))

    def _ended(self, sessions: pl.DataFrame, messages: pl.DataFrame) -> Tables:
        """``sessions`` and ``messages`` with the (empty) tables of no further lines."""
        empty = KindFrames()
        rejects = self._with_session(empty.pick(REJECT_KINDS, [*_REJECT_SOURCE, "kind"]))
        return Tables(sessions, messages, self._deliveries(empty), _rejects(rejects))

    def carried(self) -> dict[str, pl.DataFrame]:
        """The open state to hand to the next read of the same log (after
        :meth:`suspend`): the frames named in ``CARRIED`` that are set."""
        return {name: frame for name in CARRIED
                if (frame := getattr(self, name)) is not None}

    @classmethod
    def resume(cls, frames: Mapping[str, pl.DataFrame]) -> Assembler:
        """An assembler that goes on from :meth:`carried`'s frames.

        >>> again = Assembler.resume(Assembler().carried())
        >>> again.open_sessions is None and again.recent_closed.height == 0
        True
        """
        unknown = set(frames) - set(CARRIED)
        if unknown:
            raise ValueError(f"not assembler state: {', '.join(sorted(unknown))}")
        asm = cls()
        for name, frame in frames.items():
            setattr(asm, name, frame)
        return asm

    # -- sessions
    def _sessions(self, kinds: KindFrames | None, final: bool) -> pl.DataFrame:
        carried = self.open_sessions
        partials = None
        self.session_links = None
        if kinds is not None and kinds.height:
            ev = kinds.pick(_SESSION_EVENTS, _SESSION_COLUMNS_IN, line_order=False).filter(
                pl.col("daemon") == "smtpd")
            if ev.height:
                partials = _session_partials(ev, kinds.file)
                self.session_links = _session_links(partials, carried)
                partials = partials.drop("link_lines")
        merged = _merge_sessions(carried, partials)
        if merged is None:
            return _empty_sessions()
        last_seq = pl.col("seq") == pl.col("seq").max().over("host", "pid")
        done = pl.col("disconnect_time").is_not_null() | ~last_seq
        span = kinds.time_range() if kinds is not None else None
        if span is not None:
            # No line of a session for RECENT (smtpd drops an idle client after
            # smtpd_timeout, minutes): its disconnect was not logged (log cut, crash). Emit
            # it now, so open sessions do not pile up over a long log.
            done = done | (pl.col("last_time") < span[1] - RECENT)
        if final:
            done = pl.lit(True)
        merged = merged.with_columns(done.alias("_done"))  # evaluated once for both halves
        closed = merged.filter(pl.col("_done")).drop("_done")
        self.open_sessions = merged.filter(~pl.col("_done")).drop("_done").with_columns(
            pl.lit(0, pl.Int32).alias("seq"))
        # rows without a connect are tails of sessions that began before the log did
        closed = closed.with_columns(
            pl.coalesce("connect_time", "first_time").alias("connect_time"),
        ).with_columns(session_id(pl.col("host"), pl.col("pid"), pl.col("connect_time"))
                       .alias("session_id"))
        # one order for every run: by start, then smtpd process and first line
        return self._session_spf(closed).sort(_SESSION_ORDER).pipe(conform, SESSION_SCHEMA)

    def _session_spf(self, closed: pl.DataFrame) -> pl.DataFrame:
        """policyd-spf's result for each session: its latest result for the session's client
        address between connect and disconnect (it logs no pid or queue id of smtpd)."""
        table = self._spf_table()
        if table is None or closed.height == 0:
            return closed.with_columns(pl.lit(None, pl.String).alias("spf_result"))
        spf = _spf_of(table, closed).select(
            "host", "client_ip", pl.col("time").alias("spf_time"),
            pl.col("result").alias("spf_result"), pl.col("helo").alias("spf_helo"))
        end = pl.coalesce("disconnect_time", "last_time")
        left = closed.with_columns(end.alias("_end")).sort("_end")
        joined = left.join_asof(spf, left_on="_end", right_on="spf_time",
                                by=["host", "client_ip"], strategy="backward",
                                check_sortedness=False)
        inside = pl.col("spf_time") >= pl.col("connect_time")
        return joined.with_columns(
            pl.when(inside).then(pl.col("spf_result")).alias("spf_result"),
            pl.coalesce("helo", pl.when(inside).then(pl.col("spf_helo"))).alias("helo"),
        ).drop("_end", "spf_time", "spf_helo")

    # -- messages
    def _messages(self, kinds: KindFrames | None, final: bool) -> pl.DataFrame | None:
        partials = None
        if kinds is not None and kinds.height:
            ev = self._with_session(_message_events(kinds).filter(
                pl.col("queue_id").is_not_null() & (pl.col("queue_id") != "NOQUEUE")
                & pl.col("instance").is_not_null()))
            if ev.height:
                partials = _message_partials(ev)
        merged = _merge_messages(self.open_messages, partials)
        if merged is None:
            return None
        done = pl.col("closed") | pl.lit(final)
        span = kinds.time_range() if kinds is not None else None
        if span is not None:
            done = done | (pl.col("last_seen") < span[1] - QUEUE_STALE)
        closed = merged.filter(done)
        self.open_messages = merged.filter(~done).with_columns(pl.lit(0, pl.Int32).alias("seq"))
        return closed

    def _emit(self, closed: pl.DataFrame | None) -> pl.DataFrame:
        if closed is None or closed.height == 0:
            return _empty_messages()
        # One order for every run: by first line, then the key (the joins below keep it).
        out = self._with_incarnations(closed.sort(_MESSAGE_ORDER))
        out = self._attach_parents(out)
        out = self._attach_spf(out)
        out = self._attach_milters(out)
        return out.with_columns(
            _message_status().alias("status"),
            pl.coalesce("origin_pickup",
                        pl.when(pl.col("link_kind") == "bounce_notice").then(pl.lit("bounce")),
                        pl.when(pl.col("client_ip").is_not_null()).then(pl.lit("smtpd")))
            .alias("origin"),
        ).pipe(conform, MESSAGE_SCHEMA)

    def _with_incarnations(self, closed: pl.DataFrame) -> pl.DataFrame:
        """Number each (host, instance, queue id) that ended within RECENT of the previous
        one's end: 0, 1, 2 ... ``closed`` is in first_seen order; ``recent_closed`` holds
        the number and end of each id's latest incarnation, one row per id."""
        recent = self.recent_closed
        qids = closed["queue_id"]
        hit = recent["queue_id"].is_in(qids.unique().implode())
        touched = recent.filter(hit)
        keys = closed.select(*_MESSAGE_KEY, "last_seen")
        if touched.height:
            keys = keys.join(touched, on=_MESSAGE_KEY, how="left", nulls_equal=True,
                             maintain_order="left")
        else:
            keys = keys.with_columns(pl.lit(None, pl.Int64).alias("_n"),
                                     pl.lit(None, _T).alias("_end"))
        end = pl.col("last_seen")
        if qids.is_duplicated().any():
            keys = _number_runs(keys)
            n = keys.sort("_row")["_n"]
            latest = keys.filter(~pl.col("_more"))
        else:  # each id once in this batch (the usual case)
            restart = pl.col("_end").is_null() | (end - pl.col("_end") > RECENT)
            latest = keys.with_columns(pl.when(restart).then(0).otherwise(pl.col("_n") + 1)
                                       .alias("_n"))
            n = latest["_n"]
        latest = latest.select(*_MESSAGE_KEY, "_n", end.alias("_end"))
        recent = pl.concat([recent.filter(~hit), touched.join(
            latest, on=_MESSAGE_KEY, how="anti", nulls_equal=True), latest])
        if recent.height > 50_000:  # keep the memory bounded: forget ids that ended long ago
            newest = cast(datetime, closed["last_seen"].max())
            recent = recent.filter(newest - pl.col("_end") <= RECENT)
        self.recent_closed = recent
        return closed.with_columns(n.alias("incarnation"))

    def _attach_parents(self, msgs: pl.DataFrame) -> pl.DataFrame:
        """``msgs`` is in first_seen order (the as-of joins here keep it)."""
        parent = pl.col("orig_queue_id")
        links = None
        if self.links is not None and self.links.height:
            links = self.links.filter(pl.col("child").is_in(msgs["queue_id"].implode()))
        if links is not None and links.height:
            # The link nearest in time to the message's first line: a reused queue id may
            # have had another parent hours before.
            links = (links.sort("time")
                     .select("host", pl.col("child").alias("queue_id"),
                             pl.col("time").alias("link_time"),
                             pl.col("parent").alias("link_parent"), "link_kind"))
            msgs = msgs.join_asof(links, left_on="first_seen", right_on="link_time",
                                  by=["host", "queue_id"], strategy="nearest",
                                  tolerance=LINK_TOLERANCE, check_sortedness=False
                                  ).drop("link_time")
            parent = pl.coalesce("orig_queue_id", "link_parent")
        else:
            msgs = msgs.with_columns(pl.lit(None, pl.String).alias("link_kind"))
        out = msgs.with_columns(parent.alias("parent_queue_id"))
        # a message is never its own parent (a reused queue id that links to itself)
        return out.with_columns(pl.when(pl.col("parent_queue_id") != pl.col("queue_id"))
                                .then(pl.col("parent_queue_id")).alias("parent_queue_id"))

    def _spf_table(self) -> pl.DataFrame | None:
        """The buffered policyd-spf results (see ``_add_spf``), or None."""
        return self.spf if self.spf is not None and self.spf.height else None

    def _add_spf(self, new: pl.DataFrame) -> None:
        """Buffer policyd-spf results one per (host, client address, time) (the mailfrom
        identity's if both were logged, else the later line's), in time order. Only the
        buffered rows from the new rows' first time on can share a key with them, so only
        those are sorted and deduplicated again."""
        old = self.spf
        if old is None or old.height == 0 or new.height == 0:
            self.spf = _dedupe_spf(new) if old is None or old.height == 0 else old
            return
        later = old.get_column("time") >= new.get_column("time").min()
        self.spf = pl.concat([old.filter(~later), _dedupe_spf(pl.concat([old.filter(later),
                                                                         new]))])

    def _attach_spf(self, msgs: pl.DataFrame) -> pl.DataFrame:
        """``msgs`` is in first_seen order (the as-of join keeps it)."""
        table = self._spf_table()
        if table is None:
            return msgs.with_columns(pl.lit(None, pl.String).alias("spf_result"))
        spf = _spf_of(table, msgs).select("host", "client_ip", "time",
                                          pl.col("result").alias("spf_result"),
                                          pl.col("helo").alias("spf_helo"))
        joined = msgs.join_asof(spf, left_on="first_seen", right_on="time",
                                by=["host", "client_ip"], strategy="backward",
                                tolerance=SPF_TOLERANCE, check_sortedness=False)
        return joined.with_columns(pl.coalesce("helo", "spf_helo").alias("helo")).drop(
            "time", "spf_helo")

    def _attach_milters(self, msgs: pl.DataFrame) -> pl.DataFrame:
        milter = None
        if self.milter is not None and self.milter.height:
            # only the results of these messages (the buffer holds an hour and more)
            milter = self.milter.filter(pl.col("queue_id").is_in(msgs["queue_id"].implode()))
        if milter is None or milter.height == 0:
            return msgs.with_columns(pl.lit(None, pl.String).alias("dkim_result"),
                                     pl.lit(None, pl.List(pl.String)).alias("dkim_domains"),
                                     pl.lit(None, pl.String).alias("dmarc_result"),
                                     pl.lit(None, pl.String).alias("dmarc_domain"))
        # A reused queue id: each incarnation takes only the results logged while it was in
        # the queue (the milters run before its queue file is committed).
        rows = msgs.select("host", "queue_id", "first_seen", "last_seen").with_row_index("_row")
        hits = rows.join(milter, on=["host", "queue_id"], maintain_order="right").filter(
            pl.col("time").is_between(pl.col("first_seen") - MILTER_SLACK,
                                      pl.col("last_seen") + MILTER_SLACK))
        agg = hits.group_by("_row").agg(
            pl.col("dkim_rank").max(),
            pl.col("dkim_domain").drop_nulls().unique(maintain_order=True).alias("dkim_domains"),
            pl.col("dmarc_result").last(ignore_nulls=True),
            pl.col("dmarc_domain").last(ignore_nulls=True),
        ).with_columns(_DKIM_RESULT).drop("dkim_rank")
        return msgs.with_row_index("_row").join(agg, on="_row", how="left",
                                                maintain_order="left").drop("_row")

    # -- windows of SPF results, milter results and hop links
    def _buffers(self, kinds: KindFrames) -> None:
        if kinds.height == 0:
            return
        spf = kinds.pick(["spf"], ["host", "client_ip", "time", "result", "helo",
                                   "identity"]).select(
            "host", "client_ip", "time", "result", "helo",
            (pl.col("identity") == "mailfrom").cast(pl.Int8).alias("identity_rank"))
        # kind after kind: each milter aggregate reads one kind
        milter = kinds.pick(["dkim", "dmarc"], ["host", "queue_id", "time", "kind", "result",
                                                "domain"], line_order=False).select(
            "host", "queue_id", "time",
            _when_kind("dkim", pl.col("result")).replace_strict(
                _DKIM_RANK, default=None, return_dtype=pl.Int64).alias("dkim_rank"),
            _when_kind("dkim", pl.when(pl.col("result") == "pass").then(pl.col("domain")))
            .alias("dkim_domain"),
            _when_kind("dmarc", pl.col("result")).alias("dmarc_result"),
            _when_kind("dmarc", pl.col("domain")).alias("dmarc_domain"))
        links = kinds.pick(["delivery", "bounce_notice"], [
            "host", "next_queue_id", "queue_id", "time", "kind"]).filter(
            pl.col("next_queue_id").is_not_null()).select(
            "host", pl.col("next_queue_id").alias("child"), pl.col("queue_id").alias("parent"),
            "time", pl.col("kind").alias("link_kind"))
        self._add_spf(spf)
        self.milter = _append(self.milter, milter)
        self.links = _append(self.links, links)
        qids = kinds.pick(["client", "pickup", "message_id"], ["host", "queue_id", "time"],
                          line_order=False).select("host", "queue_id", "time")
        self.recent_qids = _append(self.recent_qids, qids)

    def _prune(self, kinds: KindFrames) -> None:
        """Forget buffered results older than RECENT before the newest event."""
        span = kinds.time_range()
        if span is None:
            return
        horizon = span[1] - RECENT
        if self.pending_messages is not None and self.pending_messages.height:
            # finished messages still waiting to be emitted need their results
            oldest = cast(datetime, self.pending_messages["first_seen"].min()) - SPF_TOLERANCE
            horizon = min(horizon, oldest)
        recent = pl.col("time") >= horizon
        # Results for messages still in the queue (deferred for hours, say) are kept past
        # the window: they are needed when the message is finally removed and emitted.
        keep = {"spf": recent, "milter": recent, "links": recent, "recent_qids": recent}
        if self.open_messages is not None and self.open_messages.height:
            qids = self.open_messages["queue_id"].unique().implode()
            ips = self.open_messages["client_ip"].drop_nulls().unique().implode()
            keep["milter"] = recent | pl.col("queue_id").is_in(qids)
            keep["links"] = recent | pl.col("child").is_in(qids)
            keep["spf"] = recent | pl.col("client_ip").is_in(ips)
        for name, cond in keep.items():
            frame = getattr(self, name)
            if frame is not None:
                setattr(self, name, frame.filter(cond))

    def _deliveries(self, kinds: KindFrames) -> pl.DataFrame:
        """Delivery rows; ``hop`` marks a hand-over to a queue file in this same log (content
        filter re-injection, a second instance), as opposed to a final delivery."""
        out = kinds.pick(["delivery"], DELIVERY_COLUMNS).select(DELIVERY_COLUMNS)
        if self.recent_qids is None or out.height == 0:
            return out.with_columns(pl.lit(False).alias("hop"))
        # The next queue file must have been created while this delivery was under way (its
        # client= or pickup line falls within the delivery's delay): a remote server's own
        # "queued as" id that happens to equal one of ours is not a hop.
        slack = pl.duration(seconds=60)
        start = pl.col("time") - pl.duration(seconds=pl.col("delay").fill_null(0)) - slack
        rows = out.select("host", "next_queue_id", "time", "delay").with_row_index(
            "_row").filter(pl.col("next_queue_id").is_not_null())
        # the buffer holds an hour of queue files: only those named by these deliveries
        created = self.recent_qids.filter(pl.col("queue_id").is_in(
            rows.get_column("next_queue_id").implode())).select(
            "host", pl.col("queue_id").alias("next_queue_id"), pl.col("time").alias("_created"))
        hops = rows.join(created, on=["host", "next_queue_id"]).filter(
            pl.col("_created").is_between(start, pl.col("time") + slack))["_row"]
        return out.with_columns(pl.int_range(pl.len()).is_in(hops.cast(pl.Int64).implode())
                                .alias("hop"))


def _spf_of(spf: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """The results for the client addresses of ``rows``: the as-of joins by address cost
    about as much per row of the (hour-long) buffer as per row they look up."""
    return spf.filter(pl.col("client_ip").is_in(rows.get_column("client_ip").implode()))


def _dedupe_spf(spf: pl.DataFrame) -> pl.DataFrame:
    return spf.sort("time", "identity_rank", maintain_order=True).unique(
        ["host", "client_ip", "time"], keep="last", maintain_order=True)


def _append(old: pl.DataFrame | None, new: pl.DataFrame) -> pl.DataFrame:
    return new if old is None else pl.concat([old, new], how="vertical_relaxed")


def _rejects(events: pl.DataFrame) -> pl.DataFrame:
    """Reject, milter and header/body check lines as the rejects table."""
    return events.with_columns(
        pl.when(pl.col("queue_id") == "NOQUEUE").then(None).otherwise(pl.col("queue_id"))
        .alias("queue_id"),
        pl.when(pl.col("kind") == "check").then(pl.lit("DATA")).otherwise(pl.col("stage"))
        .alias("stage"),
    ).select(REJECT_COLUMNS)


def _empty_sessions() -> pl.DataFrame:
    return pl.DataFrame(schema=SESSION_SCHEMA)


def _empty_messages() -> pl.DataFrame:
    return pl.DataFrame(schema=MESSAGE_SCHEMA)
