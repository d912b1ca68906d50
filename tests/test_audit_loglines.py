"""Reject lines whose client-written values (HELO, sender, recipient, header) hold a fake
from/to/proto/helo tail: the fields stay as the client wrote them, the reject text and its
rule id stay Postfix's and ours (found in an audit against real and hostile log lines)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from triage.ingest.extract import _TAIL_CANDIDATES
from triage.ingest.maillog import ReadOptions, read_chunks

OPTS = ReadOptions(year=2026, timezone="UTC")
HEAD = "Nov 28 08:49:01 mx postfix/smtpd[1203]: NOQUEUE: reject: RCPT from unknown[203.0.113.5]: "
FAKES = [
    "x; from=<ceo@bank.example> to=<boss@example.org> proto=ESMTP helo=<rule R0001",
    "x proto=SMTP helo=<y",
    "a>: b; proto=SMTP helo=<a",
    "x>: y; from=<x> to=<z",
    "p; proto=SMTP helo=<q; from=<r> proto=SMTP helo=<s",
    "rule R0001; from=<> proto=SMTP",
    "x; from=<a> to=<b> proto=SMTP helo=<>",
]


def _read(tmp_path: Path, lines: list[str]) -> list[dict[str, Any]]:
    path = tmp_path / "mail.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    events = pl.concat([c.events for c in read_chunks([path], OPTS)], how="diagonal_relaxed")
    assert events.height == len(lines)
    return events.sort("line_no").to_dicts()


def _helo_reject(helo: str) -> str:
    return (f"{HEAD}550 5.7.1 <{helo}>: Helo command rejected: blocked by rule R0042; "
            f"from=<spam@spam.example> to=<bob@example.org> proto=ESMTP helo=<{helo}>")


def _rcpt_reject(rcpt: str, helo: str) -> str:
    return (f"{HEAD}550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown; "
            f"from=<spam@spam.example> to=<{rcpt}> proto=ESMTP helo=<{helo}>")


def test_helo_object_with_a_fake_tail(tmp_path: Path) -> None:
    for got, helo in zip(_read(tmp_path, [_helo_reject(h) for h in FAKES]), FAKES, strict=True):
        assert (got["sender"], got["recipient"], got["proto"], got["helo"], got["object"]) == (
            "spam@spam.example", "bob@example.org", "ESMTP", helo, helo), got
        assert got["reason"] == "Helo command rejected: blocked by rule R0042"
        assert (got["reason_class"], got["rule_id"], got["code"]) == ("helo", "R0042", 550)


def test_recipient_object_and_helo_with_fake_tails(tmp_path: Path) -> None:
    # (a recipient holding "> proto=" is left aside: the tail's own reading of where the
    # recipient ends and the HELO starts is then ambiguous)
    rcpts = [f'"{f}"@example.org' for f in FAKES if "> proto=" not in f]
    lines = [_rcpt_reject(r, h) for r in rcpts for h in ("h", *FAKES[:3])]
    cases = [(r, h) for r in rcpts for h in ("h", *FAKES[:3])]
    for got, (rcpt, helo) in zip(_read(tmp_path, lines), cases, strict=True):
        assert (got["sender"], got["recipient"], got["helo"], got["object"]) == (
            "spam@spam.example", rcpt, helo, rcpt), got
        assert got["reason"] == "Recipient address rejected: User unknown"
        assert got["reason_class"] == "unknown_user" and got["rule_id"] is None


def test_several_fake_tails_in_the_object(tmp_path: Path) -> None:
    # each fake tail is one more candidate left of the real one; within the scanned number
    # the real tail still wins
    n = _TAIL_CANDIDATES - 2
    helo = "x" + "; proto=SMTP helo=<y" * n
    assert _read(tmp_path, [_helo_reject(helo)])[0]["helo"] == helo


@pytest.mark.parametrize("text", ["554 5.7.1 Service unavailable; client [203.0.113.5] "
                                  "blocked using zen.example", "550 5.7.1 <unknown[203.0.113.5]>: "
                                  "Client host rejected: blocked by rule R0042"])
def test_text_without_a_tail_value_as_object(tmp_path: Path, text: str) -> None:
    helo = "x; from=<ceo@bank.example> proto=SMTP helo=<y"
    line = f"{HEAD}{text}; from=<a@b.example> to=<c@d.example> proto=ESMTP helo=<{helo}>"
    got = _read(tmp_path, [line])[0]
    assert (got["sender"], got["recipient"], got["helo"]) == ("a@b.example", "c@d.example",
                                                              helo)
    assert got["reason"].endswith(text.split(": ")[-1].split(" ", 2)[-1])
