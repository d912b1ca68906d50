"""The message adapter: tolerant header reading, defect counts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from triage.ingest.mailbox import RawMessage
from triage.ingest.mailtable import mail_row, read_mailboxes
from triage.ingest.message import decode_header_value, read_message


def test_clean_message_has_no_defects() -> None:
    rec = read_message(b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n")
    assert rec.defects == 0 and rec.get("SUBJECT") == "hi"


def test_broken_mime_is_counted_not_fatal() -> None:
    data = (b"From: a@example.com\nContent-Type: multipart/mixed\n\n"  # no boundary
            b"--x\nContent-Type: text/plain\n\nhi\n--x--\n")
    rec = read_message(data)
    assert rec.defects >= 1
    assert "NoBoundaryInMultipartDefect" in rec.defect_kinds


def test_8bit_junk_in_headers() -> None:
    rec = read_message(b"From: a@example.com\nSubject: caf\xe9 \xff\xfe\n\nbody\n")
    assert "NonASCIIHeaderBytes" in rec.defect_kinds
    assert rec.get("subject") == "caf\xe9 \xff\xfe"  # Latin-1 fallback keeps every byte


def test_utf8_header_bytes_decode_as_utf8() -> None:
    rec = read_message("Subject: café\n\n".encode())
    assert rec.get("subject") == "café"


def test_missing_headers_and_garbage() -> None:
    assert read_message(b"").headers == []
    rec = read_message(b"\x00\x01 not a message at all")
    assert rec.defects >= 1
    rec = read_message(b"just a body line\n\nmore\n")
    assert rec.defects >= 1


def test_huge_header_line() -> None:
    rec = read_message(b"From: a@example.com\nX-Junk: " + b"A" * 100_000 + b"\n\nbody\n")
    assert "HeaderLineTooLong" in rec.defect_kinds
    assert rec.get("from") == "a@example.com"


def test_unixfrom_line_is_split_off() -> None:
    rec = read_message(b"From a@example.com  Thu Aug 22 13:17:22 2002\nSubject: s\n\nb\n")
    assert rec.unixfrom is not None and rec.unixfrom.startswith("From a@example.com")
    assert rec.get("subject") == "s" and rec.defects == 0


def test_mailparser_logger_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        read_message(b"Content-Type: multipart/mixed\n\n--x\n", full=True)
    assert not [r for r in caplog.records if r.name.startswith("mailparser")]


def test_decode_header_value() -> None:
    assert decode_header_value("=?utf-8?b?Y2Fmw6k=?=\n\tx") == "café x"
    assert decode_header_value("=?bogus-charset?q?x?=") == "=?bogus-charset?q?x?="
    assert decode_header_value(None) is None


# Junk encoded words: the stdlib raises HeaderParseError / CharsetError (not ValueError) on
# some, and decodes others to nothing; the raw text is kept and the message counts a defect.
JUNK_WORDS = [
    "=?utf-8?b?Q?=",  # bad base64 padding: HeaderParseError
    "=?=?utf-8*enx-bad\u00e9 =C3?Q??b??q?=",  # malformed charset name: CharsetError
    "=?utf-8?b?!!!?=",  # no base64 characters: decodes to nothing
    "a =?utf-8?b?====?= b",
    "=?utf-8?b?!!!?= =?utf-8?q?x?=",  # the lost word hidden by its neighbour
    "=?bogus-charset?q?x?=",
]


@pytest.mark.parametrize("value", JUNK_WORDS)
def test_junk_encoded_word_is_kept(value: str) -> None:
    assert decode_header_value(value) == value
    assert decode_header_value(f"{value}\n\tmore") == f"{value} more"


def test_good_encoded_words_still_decode() -> None:
    assert decode_header_value("=?utf-8?b?Y2Fm?= =?utf-8?q?=C3=A9?=") == "café"
    assert decode_header_value("=?iso-8859-1?q?caf=E9?= au lait") == "café au lait"
    assert decode_header_value("=?utf-8?q??=") == ""  # an empty word loses nothing


RECEIVED = ("Received: from a.example (unknown [192.0.2.1]) by mx.example.net (Postfix) "
            "with ESMTP id 4QAB; Tue, 3 Sep 2024 10:00:00 +0200\n")


@pytest.mark.parametrize("value", JUNK_WORDS)
def test_junk_encoded_word_is_a_defect(value: str) -> None:
    data = f"{RECEIVED}From: a@example.com\nSubject: {value}\n\nbody\n".encode()
    rec = read_message(data)
    assert rec.defect_kinds.count("UndecodableEncodedWord") == 1
    assert rec.get("subject") == value and rec.get("received") is not None
    clean = read_message(f"{RECEIVED}Subject: =?utf-8?q?caf=C3=A9?=\n\nbody\n".encode())
    assert "UndecodableEncodedWord" not in clean.defect_kinds


def test_junk_encoded_word_does_not_stop_the_folder(tmp_path: Path) -> None:
    (tmp_path / "1").write_bytes(f"{RECEIVED}From: a@b.example\nSubject: =?utf-8?b?Q?=\n"
                                 "X-Mailer: =?utf-8*en?q?x?=\n\nbody\n".encode())
    (tmp_path / "2").write_bytes(b"From: ok@b.example\nSubject: fine\n\nbody\n")
    df = read_mailboxes([tmp_path], role="spam", my_hostnames=["mx.example.net"])
    assert len(df) == 2
    bad = df[df["subject"] != "fine"].iloc[0]
    assert bad["subject"] == "=?utf-8?b?Q?=" and bad["x_mailer"] == "=?utf-8*en?q?x?="
    assert bad["defect_kinds"].split(",").count("UndecodableEncodedWord") == 2
    assert bad["client_ip"] == "192.0.2.1"


def _nested(depth: int) -> bytes:
    parts = "".join(f'--b{i}\nContent-Type: multipart/mixed; boundary="b{i + 1}"\n\n'
                    for i in range(depth))
    return (f"{RECEIVED}From: a@spamdom.example\nSubject: buy now\nMIME-Version: 1.0\n"
            f'Content-Type: multipart/mixed; boundary="b0"\n\n{parts}x\n').encode()


@pytest.mark.parametrize("depth", [1000, 3000])
def test_deep_mime_keeps_the_headers(depth: int) -> None:
    # Sender-written nesting makes the stdlib parser recurse too deep; the headers above it,
    # our own Received first, are still read (header-only) and the failure is a defect.
    data = _nested(depth)
    rec = read_message(data)
    assert "Unparseable:RecursionError" in rec.defect_kinds
    assert [n for n, _ in rec.headers] == ["Received", "From", "Subject", "MIME-Version",
                                           "Content-Type"]
    row = mail_row(RawMessage("p", "k", data, None), rec, "spam", ["mx.example.net"])
    assert row["trusted"] and row["client_ip"] == "192.0.2.1" and row["queue_id"] == "4QAB"
    assert row["from_address"] == "a@spamdom.example" and row["subject"] == "buy now"
