"""Scans go on where the last one stopped: sessions and messages in progress at scan time are
stored once, whole, by the scan that sees them end; the carried state commits with the
cursors; what stays open far longer than Postfix would keep it is emitted once, in time."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from test_logtables import GENERATOR
from test_scan import OPTS, _append, rotation_steps, sample_lines

from triage import store as store_module
from triage.config import Config
from triage.errors import TriageError
from triage.ingest.assemble import CARRY_FORMAT, QUEUE_STALE, Assembler
from triage.ingest.logtables import collect_tables
from triage.scan import scan
from triage.store import Carry, Store

needs_generator = pytest.mark.skipif(not GENERATOR.is_file(),
                                     reason=f"reference generator not found at {GENERATOR}")


def _cfg(root: Path) -> Config:
    return Config(source=None, logs=(str(root / "mail.log*"),), spam=(), ham=(),
                  my_hostnames=("mx.example.org",), state_dir=root / "state",
                  log_timezone="UTC", log_year=2025)


def _rows(state: Path, table: str) -> pl.DataFrame:
    """A history table as comparable rows: sorted, lists as text, without the log's path."""
    frame = Store(state).read(table)
    frame = frame.drop([c for c in ("file",) if c in frame.columns]).with_columns(
        [pl.col(c).list.join(",") for c, t in frame.schema.items() if isinstance(t, pl.List)])
    return frame.sort(frame.columns, nulls_last=True)


def _scan_in_parts(root: Path, lines: list[bytes], cuts: list[int]) -> Config:
    """Scan ``lines`` appended to one mail.log in parts ending at each of ``cuts``."""
    root.mkdir()
    cfg = _cfg(root)
    start = 0
    for cut in [*cuts, len(lines)]:
        with (root / "mail.log").open("ab") as f:
            f.writelines(lines[start:cut])
        assert scan(cfg, rules=False).lines == cut - start
        start = cut
    return cfg


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    if not GENERATOR.is_file():
        pytest.skip(f"reference generator not found at {GENERATOR}")
    log = tmp_path_factory.mktemp("gen") / "mail.log"
    subprocess.run([sys.executable, str(GENERATOR), "-n", "12000", "--seed", "3", "--ts",
                    "traditional", "--start", "2025-03-03T10:00:00", "-o", str(log)],
                   check=True, capture_output=True)
    return log.read_bytes().splitlines(keepends=True)


@needs_generator
@pytest.mark.parametrize("parts", [2, 3])
def test_log_scanned_in_parts_gives_the_rows_of_one_scan(tmp_path: Path,
                                                         generated: list[bytes],
                                                         parts: int) -> None:
    n = len(generated)
    whole = _scan_in_parts(tmp_path / "whole", generated, [])
    cuts = [n * k // parts + 7 * k for k in range(1, parts)]  # not at a round number
    split = _scan_in_parts(tmp_path / "split", generated, cuts)
    for table in ("sessions", "messages", "deliveries", "rejects"):
        want, got = _rows(whole.state_dir, table), _rows(split.state_dir, table)
        assert got.height == want.height, table
        assert got.equals(want, null_equal=True), table
    messages = _rows(split.state_dir, "messages")
    assert not messages.select(pl.struct("host", "instance", "queue_id", "incarnation")
                               .is_duplicated().any()).item()
    # both end with the same state left open for the next scan
    a, b = Store(whole.state_dir).carry(), Store(split.state_dir).carry()
    assert a is not None and b is not None and a.frames.keys() == b.frames.keys()


def _mx(lines: list[str]) -> list[bytes]:
    return [f"{line}\n".encode() for line in lines]


_SESSION = [
    "Mar  3 10:00:00 mx postfix/smtpd[100]: connect from mail.example.com[192.0.2.10]",
    "Mar  3 10:00:01 mx postfix/smtpd[100]: AAA111: client=mail.example.com[192.0.2.10]",
    "Mar  3 10:00:01 mx postfix/cleanup[200]: AAA111: message-id=<1@example.com>",
    "Mar  3 10:00:02 mx postfix/qmgr[150]: AAA111: from=<a@example.com>, size=1000, "
    "nrcpt=1 (queue active)",
]
_END = [
    "Mar  3 10:00:03 mx postfix/smtpd[100]: disconnect from mail.example.com[192.0.2.10] "
    "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
    "Mar  3 10:00:04 mx postfix/local[300]: AAA111: to=<u@example.org>, relay=local, "
    "delay=3, delays=2/0/0/1, dsn=2.0.0, status=sent (delivered to mailbox)",
    "Mar  3 10:00:04 mx postfix/qmgr[150]: AAA111: removed",
]


def test_a_session_in_progress_is_stored_once_whole(tmp_path: Path) -> None:
    cfg = _scan_in_parts(tmp_path / "s", _mx(_SESSION + _END), [len(_SESSION)])
    sessions, messages = _rows(cfg.state_dir, "sessions"), _rows(cfg.state_dir, "messages")
    assert sessions.height == 1 and messages.height == 1
    s, m = sessions.row(0, named=True), messages.row(0, named=True)
    assert (s["client_ip"], s["n_messages"]) == ("192.0.2.10", 1)
    assert s["commands"].endswith("commands=5")
    assert s["disconnect_time"] is not None
    assert (m["client_ip"], m["sender"], m["status"]) == ("192.0.2.10", "a@example.com",
                                                          "delivered")
    assert m["session_id"] == s["session_id"]


def test_the_first_scan_keeps_what_is_in_progress_for_the_next(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    (root / "mail.log").write_bytes(b"".join(_mx(_SESSION)))
    cfg = _cfg(root)
    result = scan(cfg, rules=False)
    assert result.committed and not result.rows.get("sessions") and not result.rows.get(
        "messages")
    carry = Store(cfg.state_dir).carry()
    assert carry is not None and carry.format == CARRY_FORMAT
    assert carry.frames["open_sessions"].height == 1
    assert carry.frames["open_messages"].height == 1
    # nothing new: the same state, nothing rewritten
    state = json.loads((cfg.state_dir / "state.json").read_text())
    assert not scan(cfg, rules=False).committed
    assert json.loads((cfg.state_dir / "state.json").read_text()) == state


def test_what_stays_open_too_long_is_emitted_once(tmp_path: Path) -> None:
    """A queue file whose removal was never logged and a session whose disconnect was
    never logged come out once the log has moved on past them, then never again."""
    later = ["Mar 10 12:00:00 mx postfix/smtpd[900]: connect from b.example[192.0.2.99]",
             "Mar 10 12:00:05 mx postfix/smtpd[900]: disconnect from b.example[192.0.2.99] "
             "ehlo=1 quit=1 commands=2"]
    cfg = _scan_in_parts(tmp_path / "s", _mx(_SESSION + later), [len(_SESSION)])
    for again in (False, True):
        if again:  # more log: nothing comes out twice
            with (tmp_path / "s" / "mail.log").open("ab") as f:
                f.writelines(_mx(["Mar 17 12:30:00 mx postfix/anvil[901]: statistics: max "
                                  "cache size 1 at Mar 17 12:00:00"]))
            scan(cfg, rules=False)
        messages = _rows(cfg.state_dir, "messages")
        sessions = _rows(cfg.state_dir, "sessions")
        assert messages.get_column("queue_id").to_list() == ["AAA111"]
        assert messages.row(0, named=True)["status"] == "open"
        assert messages.row(0, named=True)["sender"] == "a@example.com"
        assert sorted(sessions.get_column("pid").to_list()) == [100, 900]
        carry = Store(cfg.state_dir).carry()
        assert carry is not None
        for name in ("open_sessions", "open_messages", "pending_messages"):
            assert name not in carry.frames or carry.frames[name].height == 0, name


def test_a_queue_file_waiting_less_than_its_lifetime_stays_open(tmp_path: Path) -> None:
    """A deferred message is retried for days: it is one row when it is finally removed."""
    retry = ("Mar  7 10:00:00 mx postfix/smtp[301]: AAA111: to=<x@example.net>, "
             "relay=none, delay=345600, delays=345600/0/0/0, dsn=4.4.1, status=deferred "
             "(connect to mx.example.net[198.51.100.1]:25: Connection timed out)")
    end = ["Mar  8 10:00:00 mx postfix/smtp[302]: AAA111: to=<x@example.net>, "
           "relay=mx.example.net[198.51.100.1]:25, delay=432000, delays=432000/0/0/0, "
           "dsn=2.0.0, status=sent (250 ok)",
           "Mar  8 10:00:01 mx postfix/qmgr[150]: AAA111: removed"]
    lines = _mx([*_SESSION, _END[0], retry, *end])
    cfg = _scan_in_parts(tmp_path / "s", lines, [len(_SESSION) + 1, len(_SESSION) + 2])
    m = _rows(cfg.state_dir, "messages")
    assert m.height == 1
    assert (m["status"][0], m["n_deferred"][0], m["client_ip"][0]) == ("delivered", 1,
                                                                      "192.0.2.10")
    assert QUEUE_STALE.days > 5  # longer than Postfix's maximal_queue_lifetime


def test_a_crash_before_the_commit_keeps_the_old_cursors_and_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _mx(_SESSION + _END)
    root = tmp_path / "s"
    root.mkdir()
    log = root / "mail.log"
    log.write_bytes(b"".join(lines[:len(_SESSION)]))
    cfg = _cfg(root)
    scan(cfg, rules=False)
    state_file = cfg.state_dir / "state.json"
    before = state_file.read_text()
    with log.open("ab") as f:
        f.writelines(lines[len(_SESSION):])
    real = store_module._write_text_atomic

    def interrupted(target: Path, text: str) -> None:
        if target.name == "state.json":
            raise KeyboardInterrupt  # Ctrl-C just before the commit's rename
        real(target, text)

    monkeypatch.setattr(store_module, "_write_text_atomic", interrupted)
    with pytest.raises(KeyboardInterrupt):
        scan(cfg, rules=False)
    monkeypatch.setattr(store_module, "_write_text_atomic", real)
    assert state_file.read_text() == before
    carry = Store(cfg.state_dir).carry()
    assert carry is not None and carry.frames["open_messages"].height == 1
    scan(cfg, rules=False)  # goes on from the old cursors with the old state
    assert _rows(cfg.state_dir, "messages").height == 1
    assert _rows(cfg.state_dir, "sessions").height == 1
    assert [d.name for d in (cfg.state_dir / "carry").iterdir()] == ["g00000002"]


def _scanned_to_mid_session(tmp_path: Path) -> tuple[Path, list[bytes], Config]:
    """A log cut in the middle of a session and its message, scanned once: (the log, all of
    its lines, the config)."""
    root = tmp_path / "s"
    root.mkdir()
    log = root / "mail.log"
    lines = _mx(_SESSION + _END)
    log.write_bytes(b"".join(lines[:len(_SESSION)]))
    cfg = _cfg(root)
    scan(cfg, rules=False)
    return log, lines, cfg


def test_a_state_dir_of_an_older_triage_starts_afresh(tmp_path: Path) -> None:
    log, lines, cfg = _scanned_to_mid_session(tmp_path)
    state_file = cfg.state_dir / "state.json"
    state = json.loads(state_file.read_text())
    del state["carry"]  # as an older triage wrote it (it emitted what was open)
    state_file.write_text(json.dumps(state))
    with log.open("ab") as f:
        f.writelines(lines[len(_SESSION):])
    assert scan(cfg, rules=False).lines == len(_END)
    # the part before is not known: the message is what this scan saw of it
    m = _rows(cfg.state_dir, "messages")
    assert (m.height, m["status"][0], m["client_ip"][0]) == (1, "delivered", None)


def test_an_unreadable_carried_state_is_an_error_naming_the_file(tmp_path: Path) -> None:
    log, lines, cfg = _scanned_to_mid_session(tmp_path)
    carry_dir = next((cfg.state_dir / "carry").iterdir())
    damaged = carry_dir / "open_messages.parquet"
    damaged.write_bytes(damaged.read_bytes()[:40])
    with log.open("ab") as f:
        f.writelines(lines[len(_SESSION):])
    with pytest.raises(TriageError, match=r"Remove .*carry") as err:
        scan(cfg, rules=False)
    assert err.value.file == str(damaged)
    shutil.rmtree(carry_dir)  # the way out the message names
    assert scan(cfg, rules=False).lines == len(_END)


def test_a_commit_without_a_log_read_keeps_the_carried_state(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    frames = {"open_sessions": pl.DataFrame({"host": ["mx"], "pid": [1]})}
    store.begin().commit([], {}, {}, Carry(CARRY_FORMAT, frames))
    store.begin().commit([], {}, {})  # new mail only: the logs were not read
    carry = store.carry()
    assert carry is not None and carry.frames["open_sessions"].equals(frames["open_sessions"])
    assert [d.name for d in (tmp_path / "state" / "carry").iterdir()] == ["g00000001"]


def test_carried_frames_come_back_with_their_types(tmp_path: Path) -> None:
    """Assembler state through the store is the same state: scans over rotation plus what
    is left open equal one read of the whole log."""
    lines = sample_lines()
    d = tmp_path / "log"
    d.mkdir()
    cfg = Config(source=None, logs=(str(d / "mail.log*"),), spam=(), ham=(),
                 my_hostnames=("mx.example.org",), state_dir=tmp_path / "state",
                 log_timezone="UTC")
    for _ in rotation_steps(d, lines):
        scan(cfg, rules=False)
    store = Store(cfg.state_dir)
    carry = store.carry()
    assert carry is not None
    rest = Assembler.resume(carry.frames).finish()
    whole = tmp_path / "whole.log"
    _append(whole, lines)
    want, _ = collect_tables([whole], OPTS, tables=("sessions", "messages"))
    for table in ("sessions", "messages"):
        got = pl.concat([store.read(table), getattr(rest, table)], how="diagonal_relaxed")
        cols = [c for c in want[table].columns if not isinstance(want[table].schema[c],
                                                                 pl.List)]
        assert got.select(cols).sort(cols, nulls_last=True).equals(
            want[table].select(cols).sort(cols, nulls_last=True), null_equal=True), table


@pytest.mark.parametrize("damage", ["truncated", "garbled", "not keys"])
def test_a_damaged_seen_file_is_an_error_naming_it(tmp_path: Path, damage: str) -> None:
    store = Store(tmp_path / "state")
    store.begin().commit([], {"/spam": {"a", "b"}}, {})
    path = tmp_path / "state" / store.state().seen_file  # type: ignore[operator]
    raw = path.read_bytes()
    if damage == "truncated":  # EOFError from gzip
        path.write_bytes(raw[:len(raw) // 2])
    elif damage == "garbled":  # zlib.error
        path.write_bytes(raw[:10] + b"\xff" * (len(raw) - 18) + raw[-8:])
    else:
        path.write_bytes(gzip.compress(b'["a", "b"]'))
    with pytest.raises(TriageError, match="cannot read the seen messages") as err:
        store.seen()
    assert err.value.file == str(path)
