"""The assembler's rows come out in one order, run after run, and its vectorised bookkeeping
(incarnation numbers of reused queue ids) agrees with the plain loop it replaced."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from triage.ingest import assemble as asm
from triage.ingest.assemble import RECENT, Assembler, Tables
from triage.ingest.logtables import batched, collect_tables
from triage.ingest.maillog import ReadOptions, read_chunks

OPTS = ReadOptions(year=2026, timezone="UTC")


def _busy_log(path: Path, sessions: int = 400) -> Path:
    """Many overlapping smtpd sessions (several starting in the same second) and messages,
    some of them reusing a queue id."""
    rnd = random.Random(5)
    t0 = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
    lines: list[tuple[datetime, int, str]] = []
    for i in range(sessions):
        start = t0 + timedelta(seconds=i // 3)  # three sessions per second
        pid = 1000 + rnd.randrange(60)  # pids are reused by later sessions
        ip = f"192.0.2.{i % 250 + 1}"
        qid = f"{0xAB0000 + rnd.randrange(150):X}"  # queue ids are reused too
        host = rnd.choice(["mx1", "mx2"])

        def add(dt: float, text: str, _s: datetime = start, _h: str = host) -> None:
            lines.append((_s + timedelta(seconds=dt), len(lines), f"{_h} {text}"))

        add(0, f"postfix/smtpd[{pid}]: connect from c{i}.example[{ip}]")
        add(1, f"postfix/smtpd[{pid}]: {qid}: client=c{i}.example[{ip}]")
        add(1, f"postfix/cleanup[300]: {qid}: message-id=<{i}@example>")
        add(2, f"postfix/qmgr[150]: {qid}: from=<a{i}@example.com>, size=100, nrcpt=1 "
               "(queue active)")
        add(2, f"postfix/smtpd[{pid}]: disconnect from c{i}.example[{ip}] ehlo=1 mail=1 "
               "rcpt=1 data=1 quit=1 commands=5")
        add(3, f"postfix/local[400]: {qid}: to=<u{i}@example.org>, relay=local, delay=1, "
               "delays=1/0/0/0, dsn=2.0.0, status=sent (delivered to mailbox)")
        add(3, f"postfix/qmgr[150]: {qid}: removed")
    lines.sort()
    path.write_text("".join(f"{t.strftime('%b %d %H:%M:%S')} {text}\n"
                            for t, _, text in lines))
    return path


def _assembled(path: Path, batch_events: int) -> list[Tables]:
    asm = Assembler()
    out = [asm.feed(b.kinds) for b in batched(read_chunks([path], OPTS), batch_events)]
    return [*out, asm.finish()]


@pytest.mark.parametrize("batch_events", [300, 100_000])
def test_each_batch_is_in_start_order(tmp_path: Path, batch_events: int) -> None:
    log = _busy_log(tmp_path / "mail.log")
    outs = _assembled(log, batch_events)
    sessions = [t.sessions for t in outs if t.sessions.height]
    messages = [t.messages for t in outs if t.messages.height]
    assert sum(s.height for s in sessions) == 400 and sum(m.height for m in messages) == 400
    for s in sessions:
        assert s.equals(s.sort("connect_time", "host", "pid", maintain_order=True))
    for m in messages:
        assert m.equals(m.sort("first_seen", "host", "instance", "queue_id",
                               maintain_order=True))


def test_two_reads_give_equal_tables(tmp_path: Path) -> None:
    log = _busy_log(tmp_path / "mail.log")
    first, _ = collect_tables([log], OPTS)
    for _ in range(3):
        again, _ = collect_tables([log], OPTS)
        for name, frame in first.items():
            assert frame.equals(again[name], null_equal=True), name


def _incarnations_by_loop(batches: list[pl.DataFrame]) -> list[list[int]]:
    """The former per-row loop: a queue id's incarnation is one more than its previous one's
    when that ended within RECENT of this one's end (rows in first_seen order)."""
    recent: dict[tuple[str, str, str], tuple[int, datetime]] = {}
    out = []
    for closed in batches:
        numbers = []
        for host, inst, qid, last_seen in closed.select(
                "host", "instance", "queue_id", "last_seen").iter_rows():
            prev = recent.get((host, inst, qid))
            n = 0 if prev is None or last_seen - prev[1] > RECENT else prev[0] + 1
            recent[(host, inst, qid)] = (n, last_seen)
            numbers.append(n)
        out.append(numbers)
    return out


def test_incarnation_numbers_match_the_loop() -> None:
    rnd = random.Random(11)
    t0 = datetime(2026, 11, 28, tzinfo=UTC)
    batches = []
    clock = 0
    for b in range(12):
        rows = []
        for _ in range(rnd.choice([5, 40, 200])):
            clock += rnd.choice([1, 60, 600, 1800])
            first = t0 + timedelta(seconds=clock)
            rows.append({"host": rnd.choice(["a", "b"]), "instance": rnd.choice(["-", "out"]),
                         "queue_id": f"Q{rnd.randrange(25 if b % 2 else 400)}",
                         "first_seen": first,
                         "last_seen": first + timedelta(seconds=rnd.choice([0, 5, 7200]))})
        batches.append(pl.DataFrame(rows).sort("first_seen", "host", "instance", "queue_id",
                                                "last_seen"))
    asm = Assembler()
    got = [asm._with_incarnations(closed)["incarnation"].to_list() for closed in batches]
    assert got == _incarnations_by_loop(batches)
    assert max(max(g) for g in got) >= 2  # ids reused within a batch and across batches


# One queue file whose sender and helo come from lines of several kinds (pickup and qmgr;
# a header check and a milter), so the order of those lines decides the message row.
CROSSED = """\
Nov 28 09:00:00 mx postfix/pickup[1800]: C0FFEE1: uid=0 from=<root>
Nov 28 09:00:01 mx postfix/cleanup[1402]: C0FFEE1: warning: header Subject: a from local; \
from=<root@mx.example.org> to=<x@example.org> proto=ESMTP helo=<first.example>
Nov 28 09:00:02 mx postfix/qmgr[1500]: C0FFEE1: from=<root@mx.example.org>, size=100, nrcpt=1 \
(queue active)
Nov 28 09:00:03 mx postfix/cleanup[1402]: C0FFEE1: milter-reject: END-OF-MESSAGE from \
unknown[203.0.113.32]: 5.7.1 no; from=<ceo@example.com> to=<bob@example.org> proto=ESMTP \
helo=<second.example>
"""


@pytest.mark.parametrize("sample", ["chain/mail.log", "maillog/queue.log", "maillog/milters.log",
                                    "maillog/smtpd.log", "busy", "crossed"])
def test_message_rows_need_line_order_only_among_some_kinds(tmp_path: Path,
                                                            sample: str) -> None:
    """The per-chunk message rows are the same from the events in line order as from the
    cheaper order the assembler uses (see ``_message_events``)."""
    path = Path(__file__).parent / "samples" / sample
    if sample == "busy":
        path = _busy_log(tmp_path / "mail.log")
    elif sample == "crossed":
        path = tmp_path / "mail.log"
        path.write_text(CROSSED)
    wanted = (pl.col("queue_id").is_not_null() & (pl.col("queue_id") != "NOQUEUE")
              & pl.col("instance").is_not_null())
    for batch in batched(read_chunks([path], OPTS)):
        ev = asm._message_events(batch.kinds).filter(wanted)
        in_lines = batch.kinds.pick(asm._MESSAGE_EVENTS, asm._MESSAGE_COLUMNS_IN).filter(wanted)
        assert ev.sort("line_no").equals(in_lines, null_equal=True)
        rows = [asm._message_partials(frame.with_columns(pl.lit(None, pl.String)
                                                         .alias("session_id")))
                for frame in (ev, in_lines)]
        key = [*asm._MESSAGE_KEY, "seq"]
        assert rows[0].sort(key).equals(rows[1].sort(key), null_equal=True)
        if sample == "crossed":
            assert rows[0].select("sender", "helo").row(0) == ("root", "second.example")


def test_spf_buffer_keeps_one_result_per_client_and_time() -> None:
    """Results added batch by batch (times repeating across batches, some out of order) give
    the same buffer as deduplicating all of them at once: the mailfrom identity's result
    wins, then the later line's."""
    rnd = random.Random(3)
    t0 = datetime(2026, 11, 28, tzinfo=UTC)
    asm_ = Assembler()
    batches = []
    clock = 0
    for _ in range(15):
        rows = []
        for _ in range(rnd.choice([0, 3, 30])):
            clock += rnd.choice([0, 0, 1, 2])
            rows.append({"host": "mx", "client_ip": f"192.0.2.{rnd.randrange(4)}",
                         "time": t0 + timedelta(seconds=clock - rnd.choice([0, 0, 0, 5])),
                         "result": rnd.choice(["pass", "fail", "none"]), "helo": "h",
                         "identity_rank": rnd.choice([0, 1])})
        frame = pl.DataFrame(rows, schema={"host": pl.String, "client_ip": pl.String,
                                           "time": pl.Datetime("us", "UTC"),
                                           "result": pl.String, "helo": pl.String,
                                           "identity_rank": pl.Int8})
        batches.append(frame)
        asm_._add_spf(frame)
    everything = pl.concat(batches)
    expected = everything.sort("time", "identity_rank", maintain_order=True).unique(
        ["host", "client_ip", "time"], keep="last", maintain_order=True)
    assert asm_.spf is not None and asm_.spf.equals(expected)
    assert asm_.spf["time"].is_sorted() and asm_.spf.height < everything.height


@pytest.mark.parametrize("collide", [False, True])
def test_rows_by_key_are_together_in_line_order(monkeypatch: pytest.MonkeyPatch,
                                               collide: bool) -> None:
    """``_by_key`` sorts by a hash of the key; keys sharing a hash (forced here) fall back to
    sorting by the key itself."""
    if collide:
        monkeypatch.setattr(asm, "_key_hash", lambda keys: pl.lit(0, pl.UInt64))
    rnd = random.Random(9)
    n = 500
    ev = pl.DataFrame({"line_no": rnd.sample(range(10_000), n),
                       "host": [rnd.choice(["a", "b", "c"]) for _ in range(n)],
                       "pid": [rnd.randrange(20) for _ in range(n)]})
    out = asm._by_key(ev, ["host", "pid"])
    assert out.sort("line_no").equals(ev.sort("line_no"))
    runs = out.select((pl.struct("host", "pid") != pl.struct("host", "pid").shift(1))
                      .fill_null(True).sum()).item()
    assert runs == ev.select(pl.struct("host", "pid").n_unique()).item()  # keys together
    assert out.select((pl.col("line_no").diff() > 0).over("host", "pid").fill_null(True)
                      .all()).item()  # each key's rows in line order
