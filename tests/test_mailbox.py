"""Mail folder formats, stable keys, read-only access."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from triage.errors import InputError
from triage.ingest.mailbox import detect_format, iter_messages, message_keys


def _msg(n: int, body: str = "hello\n") -> bytes:
    return (f"From: a{n}@example.com\nSubject: m{n}\nMessage-ID: <{n}@example.com>\n\n"
            f"{body}").encode()


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Content hash and mtime of every file: reading must change neither."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p)] = (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    root = tmp_path / "Maildir"
    for folder in (root, root / ".Spam"):
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True)
    (root / "new" / "1700000000.M1P1.host").write_bytes(_msg(1))
    (root / "cur" / "1700000001.M2P1.host:2,S").write_bytes(_msg(2))
    (root / "tmp" / "1700000002.M3P1.host").write_bytes(_msg(3))  # delivery in progress
    (root / ".Spam" / "cur" / "1700000003.M4P1.host:2,").write_bytes(_msg(4))
    return root


def test_maildir(maildir: Path) -> None:
    before = _snapshot(maildir)
    assert detect_format(maildir) == "maildir"
    subjects = sorted(m.data.split(b"\n")[1] for m in iter_messages([maildir]))
    assert subjects == [b"Subject: m1", b"Subject: m2"]
    with_sub = list(iter_messages([maildir], subfolders=True))
    assert len(with_sub) == 3
    assert len(list(iter_messages([maildir / ".Spam"]))) == 1
    assert _snapshot(maildir) == before


def test_maildir_key_survives_move_and_flags(maildir: Path) -> None:
    keys = set(message_keys([maildir]))
    # A client reads message 1: new/ -> cur/ with flags.
    (maildir / "new" / "1700000000.M1P1.host").rename(
        maildir / "cur" / "1700000000.M1P1.host:2,RS")
    assert set(message_keys([maildir])) == keys
    skipped = list(iter_messages([maildir], skip_keys=keys))
    assert skipped == []


def test_mbox_mboxrd_and_content_length(tmp_path: Path) -> None:
    box = tmp_path / "mbox"
    box.write_bytes(
        b"From a@example.com Tue Sep  3 10:00:00 2024\n" + _msg(1, "x\n>From here\n\n")
        + b"\nFrom b@example.com Tue Sep  3 10:00:01 2024\n"
        # mboxcl: the body holds an unquoted From line; Content-Length covers it.
        + b"From: b@example.com\nContent-Length: 27\n\nline\n\nFrom inside the body\n"
        + b"\nFrom c@example.com Tue Sep  3 10:00:02 2024\n"
        # A bogus Content-Length (spam) must not swallow the next message.
        + b"From: c@example.com\nContent-Length: 99999\n\nbody\n"
        + b"\nFrom d@example.com Tue Sep  3 10:00:03 2024\n" + _msg(4)
        + b"\n"  # the blank line that ends a complete last message (else: still written?)
    )
    before = _snapshot(tmp_path)
    assert detect_format(box) == "mbox"
    msgs = list(iter_messages([box]))
    assert [m.data.split(b"\n")[1][:9] for m in msgs] == [
        b"From: a1@", b"From: b@e", b"From: c@e", b"From: a4@"]
    assert b"\nFrom here\n" in msgs[0].data  # mboxrd ">From " unquoted
    assert b"From inside the body" in msgs[1].data
    assert msgs[0].offset == 0 and msgs[1].offset is not None and msgs[1].offset > 0
    assert len({m.key for m in msgs}) == 4
    assert _snapshot(tmp_path) == before


def test_mbox_keys_stable_when_a_message_is_deleted(tmp_path: Path) -> None:
    one = b"From a@example.com Tue Sep  3 10:00:00 2024\n" + _msg(1) + b"\n"
    two = b"From b@example.com Tue Sep  3 10:00:01 2024\n" + _msg(2) + b"\n"
    box = tmp_path / "mbox"
    box.write_bytes(one + two)
    keys = list(message_keys([box]))
    box.write_bytes(two)
    assert list(message_keys([box])) == keys[1:]


def test_mbox_identical_copies_get_distinct_keys(tmp_path: Path) -> None:
    one = b"From a@example.com Tue Sep  3 10:00:00 2024\n" + _msg(1) + b"\n"
    box = tmp_path / "mbox"
    box.write_bytes(one + one)
    keys = list(message_keys([box]))
    assert len(keys) == 2 and keys[1] == keys[0] + "#2"


def test_mh_and_plain_directory(tmp_path: Path) -> None:
    mh = tmp_path / "mh"
    mh.mkdir()
    for n in (10, 2, 1):
        (mh / str(n)).write_bytes(_msg(n))
    (mh / ".mh_sequences").write_text("unseen: 1-2\n")
    assert detect_format(mh) == "mh"
    assert [m.path.rsplit("/", 1)[1] for m in iter_messages([mh])] == ["1", "2", "10"]

    plain = tmp_path / "plain"
    (plain / "sub").mkdir(parents=True)
    (plain / "a.eml").write_bytes(b"From x@example.com Tue Sep  3 10:00:00 2024\n" + _msg(1))
    (plain / "sub" / "b.eml").write_bytes(_msg(2))
    assert detect_format(plain) == "dir"
    assert len(list(iter_messages([plain]))) == 1
    assert len(list(iter_messages([plain], subfolders=True))) == 2


def test_single_file_and_missing(tmp_path: Path) -> None:
    f = tmp_path / "one.eml"
    f.write_bytes(_msg(1))
    assert detect_format(f) == "file"
    assert len(list(iter_messages([f]))) == 1
    with pytest.raises(InputError):
        list(iter_messages([tmp_path / "missing"]))
