"""The message adapter: tolerant header reading, defect counts."""

from __future__ import annotations

import logging

import pytest

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
