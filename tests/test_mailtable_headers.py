"""The mail table's raw header columns, the envelope sender from trusted headers only, and
one ASCII form for every domain."""

from __future__ import annotations

from pathlib import Path

from triage.ingest.mailbox import RawMessage
from triage.ingest.mailtable import (
    MAIL_COLUMNS,
    iter_row_chunks,
    mail_frame,
    mail_row,
    raw_header,
    rows_frame,
)
from triage.ingest.message import read_message

MX = ["mx.example.net"]


def _received(client: str = "spammer.example (unknown [203.0.113.9])", qid: str = "4Q") -> str:
    return (f"Received: from {client} by mx.example.net (Postfix) with ESMTP id {qid}; "
            "Tue, 3 Sep 2024 10:00:00 +0200\n")


def _row(data: bytes, mine: list[str] = MX) -> dict[str, object]:
    return mail_row(RawMessage("p", "k", data, None), read_message(data), "spam", mine)


def test_raw_header_columns_hold_what_header_checks_sees() -> None:
    data = ("Return-Path: <a@example.org>\r\n" + _received().replace("\n", "\r\n")
            + 'From: "alerts@spamdom.example (fwd)" <owner@lists.example.org>\r\n'
            "Subject: =?utf-8?q?Claim?= your\r\n\treward\r\n"
            "X-Mailer: Bulk 9 \r\n"
            "Message-ID: <a b@spamdom.example> <z@other.example>\r\n\r\nbody\r\n").encode()
    row = _row(data)
    assert row["from_header"] == '"alerts@spamdom.example (fwd)" <owner@lists.example.org>'
    assert row["from_address"] == "owner@lists.example.org"
    # not decoded; the fold kept as a newline (CR LF -> LF), as Postfix joins the lines
    assert row["subject_header"] == "=?utf-8?q?Claim?= your\n\treward"
    assert row["subject"] == "Claim your reward"
    assert row["x_mailer_header"] == "Bulk 9 "
    assert row["message_id_header"] == "<a b@spamdom.example> <z@other.example>"
    assert row["message_id"] == "z@other.example"
    frame = mail_frame([row])
    assert list(frame.columns) == MAIL_COLUMNS
    assert frame["from_header"].tolist() == [row["from_header"]]
    assert raw_header(None) is None and raw_header("a\r\n b") == "a\n b"


def test_raw_header_columns_are_in_the_row_tuples(tmp_path: Path) -> None:
    (tmp_path / "1").write_bytes((_received() + "From: Bob <bob@example.org>\n"
                                  "Subject: hi\n\nbody\n").encode())
    (tmp_path / "2").write_bytes(b"Subject: no from\n\nbody\n")
    chunks = list(iter_row_chunks([tmp_path], role="spam", my_hostnames=MX))
    rows = [r for chunk in chunks for r in chunk]
    assert len(rows) == 2 and all(len(r) == len(MAIL_COLUMNS) for r in rows)
    df = rows_frame(rows).sort_values("subject", ignore_index=True)
    assert df["from_header"].tolist() == ["Bob <bob@example.org>", None]
    assert df["subject_header"].tolist() == ["hi", "no from"]
    assert df["message_id_header"].tolist() == [None, None]


def test_return_path_below_the_trusted_received_is_ignored() -> None:
    # no local delivery wrote one: the only Return-Path is the sender's
    data = (_received() + "Return-Path: <billing@innocent-bank.example>\n"
            "From: a@spamdom.example\nSubject: x\n\nbody\n").encode()
    row = _row(data)
    assert row["trusted_index"] == 0
    assert row["envelope_sender"] is None and row["sender_domain"] is None
    assert row["sender_domain_full"] is None


def test_return_path_above_the_trusted_received_is_used() -> None:
    data = ("Return-Path: <bounce@list.example>\n"
            + _received("localhost (localhost [127.0.0.1])", "5Q")
            + _received()
            + "Return-Path: <billing@innocent-bank.example>\n"
            "From: a@spamdom.example\nSubject: x\n\nbody\n").encode()
    row = _row(data)
    assert row["trusted_index"] == 1
    assert row["envelope_sender"] == "bounce@list.example"
    assert row["sender_domain"] == "list.example"


def test_forged_return_path_leaves_the_mbox_from_line() -> None:
    data = ("From real@sender.example Tue Sep  3 10:00:01 2024\n" + _received()
            + "Return-Path: <billing@innocent-bank.example>\n"
            "From: a@spamdom.example\nSubject: x\n\nbody\n").encode()
    assert _row(data)["envelope_sender"] == "real@sender.example"


def test_without_a_trusted_hop_only_a_return_path_above_every_received_counts() -> None:
    forged = (_received() + "Return-Path: <billing@innocent-bank.example>\n"
              "Subject: x\n\nbody\n").encode()
    assert _row(forged, ["mx.other.example"])["envelope_sender"] is None
    delivered = ("Return-Path: <bounce@list.example>\n" + _received()
                 + "Subject: x\n\nbody\n").encode()
    assert _row(delivered, ["mx.other.example"])["envelope_sender"] == "bounce@list.example"


def test_idn_domains_have_one_ascii_value_in_every_column() -> None:
    data = ("Return-Path: <promo@xn--bcher-kva.example>\n"
            + _received("h1.example (mail.xn--bcher-kva.example [203.0.113.10])")
            + "From: Bücher <promo@bücher.example>\nReply-To: <r@Bücher.example>\n"
            "Message-ID: <1@mail.bücher.example>\nSubject: s\n\nx\n").encode()
    row = _row(data)
    a_label = "xn--bcher-kva.example"
    assert row["envelope_sender"] == f"promo@{a_label}"
    assert row["from_address"] == f"promo@{a_label}"
    assert (row["sender_domain"], row["from_domain"], row["rdns_domain"],
            row["reply_to_domain"], row["message_id_domain"]) == (a_label,) * 5
    assert row["from_domain_full"] == row["sender_domain_full"] == a_label
    # the raw header is kept as the sender wrote it: that is what header_checks sees
    assert row["from_header"] == "Bücher <promo@bücher.example>"
