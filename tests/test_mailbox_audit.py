"""mbox reading as Procmail and mail clients leave the file: a message half-written at scan
time, the locks writers hold, client-state headers rewritten when a message is read, and
files that hold no message."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from triage.config import load_config
from triage.ingest import mailbox
from triage.ingest.mailbox import (
    MBOX_CLIENT_HEADERS,
    RawMessage,
    detect_format,
    iter_messages,
    message_keys,
)
from triage.scan import scan
from triage.store import Store

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _entry(n: int, extra: bytes = b"", body: bytes = b"hello\n") -> bytes:
    """One mbox entry as Procmail appends it: From_ line, headers, body, blank line."""
    return (f"From a{n}@example.com Tue Sep  3 10:00:0{n % 10} 2024\n"
            f"From: a{n}@example.com\nSubject: m{n}\nMessage-ID: <{n}@example.com>\n"
            ).encode() + extra + b"\n" + body + b"\n"


def _read(paths: list[Path], skip_keys: frozenset[str] | set[str] = frozenset()
          ) -> tuple[list[RawMessage], list[str]]:
    """The messages and the reasons given for what was left out."""
    notes: list[str] = []
    msgs = list(iter_messages(paths, skip_keys=skip_keys,
                              on_skip=lambda _p, why: notes.append(why)))
    return msgs, notes


def _subjects(msgs: list[RawMessage]) -> list[bytes]:
    return [next((ln for ln in m.data.split(b"\n") if ln.startswith(b"Subject:")), b"")
            for m in msgs]


def _age(path: Path, seconds: float = 60) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


@pytest.fixture(autouse=True)
def _short_lock_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mailbox, "_LOCK_WAIT", 0.3)


# --- files with no message (bug 8) -----------------------------------------------------


@pytest.mark.parametrize("content", [b"", b" \n\n\t\r\n", b"\n" * 70000],
                         ids=["zero-bytes", "white-space", "long-white-space"])
def test_empty_file_holds_no_message(tmp_path: Path, content: bytes) -> None:
    box = tmp_path / "spam"
    box.write_bytes(content)
    assert detect_format(box) == "empty"
    assert list(iter_messages([box])) == []
    assert list(message_keys([box])) == []


def test_white_space_then_text_is_still_a_message(tmp_path: Path) -> None:
    f = tmp_path / "one.eml"
    f.write_bytes(b"\n\n" + b"Subject: s\n\nbody\n")
    assert detect_format(f) == "file"
    assert len(list(iter_messages([f]))) == 1


def test_empty_files_in_folders_are_skipped_with_a_reason(tmp_path: Path) -> None:
    mh = tmp_path / "mh"
    mh.mkdir()
    (mh / "1").write_bytes(b"")
    (mh / "2").write_bytes(b"From: a@example.com\nSubject: s\n\nbody\n")
    (mh / "3").write_bytes(b"\n \n")
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1700000000.M1P1.host").write_bytes(b"")
    assert [Path(m.path).name for m in iter_messages([mh, maildir])] == ["2"]
    msgs, notes = _read([mh, maildir])
    assert len(msgs) == 1
    assert notes == ["empty file: no message"] * 3


# --- a message still being written; locks (bug 6) ----------------------------------------


def test_half_written_last_message_is_left_for_the_next_read(tmp_path: Path) -> None:
    box = tmp_path / "spam"
    full = _entry(1) + _entry(2)
    box.write_bytes(full[:len(_entry(1)) + 60])  # Procmail in the middle of message 2
    msgs, notes = _read([box])
    assert _subjects(msgs) == [b"Subject: m1"]
    assert len(notes) == 1 and "middle of a line" in notes[0]
    _age(box)  # however old: a line cut short is no whole message
    assert _subjects(_read([box])[0]) == [b"Subject: m1"]

    box.write_bytes(full)  # delivery done: the next read returns message 2, whole
    seen = {m.key for m in msgs}
    again, notes = _read([box], skip_keys=seen)
    assert notes == []
    assert [m.data for m in again] == [_entry(2)[:-1]]  # without the separating blank line


def test_mbox_whose_first_line_is_being_written_is_no_single_message(tmp_path: Path) -> None:
    box = tmp_path / "spam"
    box.write_bytes(b"Fro")  # Procmail has just begun the first message of a new mbox
    assert detect_format(box) == "mbox"
    msgs, notes = _read([box])
    assert msgs == [] and len(notes) == 1 and "middle of a line" in notes[0]
    box.write_bytes(_entry(1))
    assert _subjects(_read([box])[0]) == [b"Subject: m1"]


def test_last_message_without_blank_line_waits_until_the_mbox_settles(tmp_path: Path
                                                                     ) -> None:
    box = tmp_path / "spam"
    box.write_bytes(_entry(1) + _entry(2)[:-1])  # cut at a line end, no blank line yet
    msgs, notes = _read([box])
    assert _subjects(msgs) == [b"Subject: m1"]
    assert len(notes) == 1 and "no blank line" in notes[0]
    _age(box)  # nobody has written it for a minute: whole, as the writer left it
    msgs, notes = _read([box])
    assert _subjects(msgs) == [b"Subject: m1", b"Subject: m2"] and notes == []


def test_last_message_ending_with_a_blank_line_is_read_at_once(tmp_path: Path) -> None:
    box = tmp_path / "spam"
    box.write_bytes(_entry(1) + _entry(2))
    msgs, notes = _read([box])
    assert _subjects(msgs) == [b"Subject: m1", b"Subject: m2"] and notes == []


def test_dot_lock_skips_the_mbox_this_time(tmp_path: Path) -> None:
    box = tmp_path / "spam"
    box.write_bytes(_entry(1) + _entry(2))
    lock = tmp_path / "spam.lock"
    lock.write_bytes(b"0")
    started = time.monotonic()
    msgs, notes = _read([box])
    assert msgs == []
    assert len(notes) == 1 and "spam.lock" in notes[0] and "not read this time" in notes[0]
    assert time.monotonic() - started < 5
    _age(lock, 2000)  # older than Procmail's LOCKTIMEOUT: stale, Procmail would break it
    assert len(_read([box])[0]) == 2
    lock.unlink()
    assert len(_read([box])[0]) == 2


_HOLDER = """
import fcntl, sys, time
with open(sys.argv[1], "ab") as f:
    fcntl.lockf(f.fileno(), fcntl.LOCK_EX)
    f.write(bytes.fromhex(sys.argv[2])); f.flush()
    print("locked", flush=True)
    time.sleep(float(sys.argv[4]))
    f.write(bytes.fromhex(sys.argv[3])); f.flush()
    if sys.argv[4] == "0":
        sys.stdin.readline()
"""


def _hold(box: Path, first: bytes, rest: bytes = b"", seconds: float = 0
          ) -> subprocess.Popen[str]:
    """Another process (a delivery) with an exclusive fcntl lock on ``box``: it writes
    ``first``, waits ``seconds`` (0: until its stdin is closed), writes ``rest``, unlocks."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(box), first.hex(), rest.hex(),
                             str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


def test_write_lock_of_another_process_skips_the_mbox_this_time(tmp_path: Path) -> None:
    box = tmp_path / "spam"
    box.write_bytes(_entry(1) + _entry(2))
    proc = _hold(box, b"")
    try:
        msgs, notes = _read([box])
        assert msgs == []
        assert len(notes) == 1 and "write lock" in notes[0]
    finally:
        proc.communicate("\n")
    assert len(_read([box])[0]) == 2


def test_reader_waits_for_a_delivery_to_finish(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mailbox, "_LOCK_WAIT", 10.0)
    box = tmp_path / "spam"
    box.write_bytes(_entry(1))
    two = _entry(2)
    proc = _hold(box, two[:60], two[60:], seconds=0.5)  # half of it written, then the rest
    try:
        msgs, notes = _read([box])
    finally:
        proc.communicate()
    assert notes == []
    assert [m.data for m in msgs] == [_entry(1)[:-1], two[:-1]]


_TRY_LOCK = """
import fcntl, sys
with open(sys.argv[1], "ab") as f:
    try:
        fcntl.lockf(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit(1)
"""


def test_lock_is_let_go_while_the_caller_has_a_message(tmp_path: Path) -> None:
    box = tmp_path / "spam"
    box.write_bytes(_entry(1) + _entry(2))
    gen = iter_messages([box])
    try:
        assert next(gen).key
        # Procmail delivering now is not kept waiting while the caller parses.
        assert subprocess.run([sys.executable, "-c", _TRY_LOCK, str(box)]).returncode == 0
        assert len(list(gen)) == 1
    finally:
        gen.close()


def test_mbox_appended_to_while_read_is_read_on(tmp_path: Path) -> None:
    box = tmp_path / "spam"
    box.write_bytes(_entry(1) + _entry(2))
    gen = iter_messages([box])
    first = next(gen)
    with box.open("ab") as f:
        f.write(_entry(3))
    rest = list(gen)
    assert _subjects([first, *rest]) == [b"Subject: m1", b"Subject: m2", b"Subject: m3"]


def test_mbox_rewritten_while_read_is_read_again_without_repeats(tmp_path: Path) -> None:
    box = tmp_path / "spam"
    big = b"spam spam spam\n" * 2000  # larger than the read-ahead buffer
    box.write_bytes(b"".join(_entry(n, body=big) for n in (1, 2, 3, 4)))
    msgs, notes = [], []
    gen = iter_messages([box], on_skip=lambda _p, why: notes.append(why))
    msgs.append(next(gen))
    msgs.append(next(gen))
    # A client expunges message 1 and marks the others read, rewriting the file in place.
    with box.open("r+b") as f:
        f.write(b"".join(_entry(n, b"Status: RO\n", big) for n in (2, 3, 4)))
        f.truncate()
    msgs.extend(gen)
    assert _subjects(msgs) == [b"Subject: m1", b"Subject: m2", b"Subject: m3", b"Subject: m4"]
    assert all(m.data.startswith(b"From a") and m.data.endswith(big) for m in msgs)
    assert notes == []


# --- client-state headers (bug 7) ------------------------------------------------------


def test_client_state_headers_keep_the_key(tmp_path: Path) -> None:
    box = tmp_path / "spam"
    box.write_bytes(_entry(1) + _entry(2) + _entry(3))
    keys = list(message_keys([box]))
    # mutt marks 1 read and replied, Dovecot gives every message a UID and keywords, and
    # puts its folder data on the first message (a folded field).
    box.write_bytes(
        _entry(1, b"X-IMAPbase: 1700000000 0000000003\n\t$Junk NonJunk\n"
                  b"Status: RO\nX-Status: A\nContent-Length: 6\nLines: 1\nX-UID: 1\n"
                  b"X-Keywords: $Junk                              \n")
        + _entry(2, b"status:O\nX-UID: 2\nX-Keywords:\n")
        + _entry(3, b"X-UID: 3\nStatus: O\r\n"))
    assert list(message_keys([box])) == keys
    assert list(iter_messages([box], skip_keys=set(keys))) == []
    assert {"Status", "X-Status", "X-Keywords", "X-UID", "Content-Length",
            "Lines"} <= set(MBOX_CLIENT_HEADERS)


@pytest.mark.parametrize("changed", [
    _entry(1, b"Subject: another\n"),                  # a header that is not client state
    _entry(1, b"X-UIDL: 7\nStatuses: RO\n"),           # names that only start the same
    _entry(1, body=b"hello\nStatus: RO\n"),            # a body line, not a header
], ids=["other-header", "similar-names", "body-line"])
def test_other_changes_make_another_message(tmp_path: Path, changed: bytes) -> None:
    box = tmp_path / "spam"
    box.write_bytes(_entry(1))
    key = next(message_keys([box]))
    box.write_bytes(changed)
    assert next(message_keys([box])) != key


def test_keys_of_messages_without_client_headers_are_those_of_before(tmp_path: Path) -> None:
    """The digest of the whole message, as before these headers were left out: a history
    of seen keys stays valid."""
    box = tmp_path / "spam"
    box.write_bytes(_entry(1) + _entry(1))
    digest = hashlib.sha1(_entry(1)[:-1]).hexdigest()[:20]
    prefix = f"mbox:{box.resolve()}:{digest}"
    assert list(message_keys([box])) == [prefix, prefix + "#2"]


def test_message_seen_under_its_old_key_is_not_read_again(tmp_path: Path) -> None:
    """A message that already had Status when the old key (its whole digest) was stored."""
    box = tmp_path / "spam"
    data = _entry(1, b"Status: O\nX-UID: 1\n")
    box.write_bytes(data + _entry(2))
    old = f"mbox:{box.resolve()}:{hashlib.sha1(data[:-1]).hexdigest()[:20]}"
    keys = list(message_keys([box]))
    assert keys[0] != old
    assert [m.key for m in iter_messages([box], skip_keys={old})] == keys[1:]


# --- the weekly scan over an mbox ----------------------------------------------------------


def _scan_dir(tmp_path: Path) -> Path:
    (tmp_path / "mail.log").write_bytes(b"".join(
        (SAMPLES / "mail.log").read_bytes().splitlines(keepends=True)[:20]))
    (tmp_path / "triage.toml").write_text(
        'logs = ["mail.log"]\nspam = ["spam.mbox"]\nham = []\n'
        'my_hostnames = ["mx.example.org"]\nlog_timezone = "UTC"\nlog_year = 2025\n'
        'state_dir = ".state"\npostfix_dir = ".state/maps"\n')
    return tmp_path


def test_scan_counts_each_mbox_message_once(tmp_path: Path) -> None:
    d = _scan_dir(tmp_path)
    cfg = load_config(d / "triage.toml")
    box = d / "spam.mbox"
    box.write_bytes(b"")
    assert scan(cfg, rules=False).mail == {str(box): 0}
    box.write_bytes(_entry(1) + _entry(2)[:70])  # message 2 half-written by Procmail
    assert scan(cfg, rules=False).mail == {str(box): 1}
    box.write_bytes(_entry(1) + _entry(2))
    assert scan(cfg, rules=False).mail == {str(box): 1}
    box.write_bytes(_entry(1, b"Status: RO\n") + _entry(2, b"Status: RO\nX-Status: A\n"))
    assert scan(cfg, rules=False).mail == {str(box): 0}
    rows = Store(d / ".state").read("mail")
    assert sorted(rows.get_column("subject").to_list()) == ["m1", "m2"]


@pytest.mark.parametrize("sequential", [False, True])
def test_scan_says_which_mail_it_left_for_later(tmp_path: Path, sequential: bool,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("triage.scan._SEQUENTIAL", sequential)
    d = _scan_dir(tmp_path)
    cfg = load_config(d / "triage.toml")
    box = d / "spam.mbox"
    box.write_bytes(_entry(1) + _entry(2)[:70])  # message 2 half-written by Procmail
    result = scan(cfg, rules=False)  # new log lines too: the folder reader may run apart
    assert result.mail == {str(box): 1}
    assert len(result.problems) == 1 and result.problems[0].startswith(f"{box}: ")
    lock = d / "spam.mbox.lock"
    lock.write_bytes(b"0")  # Procmail delivers the next one
    result = scan(cfg, rules=False)
    assert result.mail == {str(box): 0}
    assert len(result.problems) == 1 and "spam.mbox.lock" in result.problems[0]
    lock.unlink()
    box.write_bytes(_entry(1) + _entry(2))
    result = scan(cfg, rules=False)
    assert result.mail == {str(box): 1} and result.problems == []


# --- with the real Procmail (Debian's: dotlocking and fcntl) -------------------------------

# .ci/run installs procmail: in CI (CI=true) these tests must run, not skip
needs_procmail = pytest.mark.skipif(shutil.which("procmail") is None
                                    and os.environ.get("CI") != "true",
                                    reason="procmail not installed")


def _procmail(box: Path, tmp_path: Path, n: int) -> subprocess.Popen[bytes]:
    rc = tmp_path / "rc"
    rc.write_text(f":0:\n{box}\n")  # a local lockfile: spam.mbox.lock, then fcntl
    proc = subprocess.Popen(["procmail", "-f", "spammer@example.com", "-m", str(rc)],
                            stdin=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(f"From: a{n}@example.com\nSubject: m{n}\n\n".encode() + _BODY)
    proc.stdin.close()
    return proc


_BODY = b"line of spam\n" * 800


@needs_procmail
def test_reader_waits_while_procmail_is_in_the_middle_of_a_delivery(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Procmail writes the first byte ("F"), and when the mbox was read in the same second
    sleeps a second, holding its lock, before the rest (its NFS atime trick)."""
    monkeypatch.setattr(mailbox, "_LOCK_WAIT", 10.0)
    box = tmp_path / "spam.mbox"
    box.write_bytes(_entry(0, body=_BODY))
    trapped = False
    for n in range(1, 4):  # the trap needs the write in the second it was read: retry
        while time.time() % 1 > 0.3:
            time.sleep(0.02)
        t = int(time.time())
        os.utime(box, (t, t))
        size = box.stat().st_size
        proc = _procmail(box, tmp_path, n)
        while box.stat().st_size == size and proc.poll() is None:
            time.sleep(0.002)
        trapped = box.stat().st_size == size + 1  # "F" written, Procmail asleep
        msgs, notes = _read([box])
        assert proc.wait(timeout=30) == 0
        assert notes == []
        assert _subjects(msgs) == [f"Subject: m{i}".encode() for i in range(n + 1)]
        assert all(m.data.endswith(_BODY) for m in msgs)
        if trapped:
            break
    assert trapped


@needs_procmail
def test_reads_while_procmail_delivers_return_each_message_once(tmp_path: Path) -> None:
    box = tmp_path / "spam.mbox"
    n = 5

    def deliver() -> None:
        for i in range(n):
            assert _procmail(box, tmp_path, i).wait(timeout=30) == 0

    writer = threading.Thread(target=deliver)
    writer.start()
    seen: dict[str, RawMessage] = {}
    while writer.is_alive():
        for m in iter_messages([box] if box.exists() else [], skip_keys=set(seen)):
            assert m.key not in seen
            seen[m.key] = m
        time.sleep(0.02)
    writer.join()
    for m in iter_messages([box], skip_keys=set(seen)):
        seen[m.key] = m
    assert sorted(_subjects(list(seen.values()))) == [f"Subject: m{i}".encode()
                                                      for i in range(n)]
    assert all(m.data.endswith(_BODY) for m in seen.values())
