"""Header rules are replayed on the raw header lines header_checks matches, not on values
rebuilt from decoded columns; history stored without the raw columns still replays."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from helpers_campaign import frame, row

from triage.backtest import confirm_no_ham, header_column, match, refused
from triage.emit.postfix import MapSet
from triage.features import add_features
from triage.generalise import message_id_key, subject_probe
from triage.ingest.mailbox import RawMessage
from triage.ingest.mailtable import mail_frame, mail_row
from triage.ingest.message import read_message
from triage.model import Rule, RuleKind, RuleState
from triage.store import Store, load_history

FROM_KEY = r"^From:.*[@.]spamdom\.example(>|\s|$)"  # as generalise.header_candidates makes it


def _rule(key: str, rid: str = "R0001") -> Rule:
    return Rule(rid, RuleKind.HEADER, key, state=RuleState.ACTIVE)


def _ham_message(headers: str, n: int = 0) -> bytes:
    return ("Return-Path: <owner@lists.example.org>\n"
            "Received: from lists.example.org (lists.example.org [198.51.100.5]) by "
            f"mx.example.net (Postfix) with ESMTPS id 4HAM{n}; Tue, 3 Sep 2024 10:00:00 +0200\n"
            f"{headers}\n\nhi\n").encode()


def _ham(*messages: bytes) -> pd.DataFrame:
    rows = [mail_row(RawMessage(f"ham{i}", f"k{i}", m, None), read_message(m), "ham",
                     ["mx.example.net"]) for i, m in enumerate(messages)]
    return add_features(mail_frame(rows), ["mx.example.net"])


def _cands(key: str, anchor: str) -> pd.DataFrame:
    """One header candidate, with the anchor its generaliser gives it."""
    return pd.DataFrame({"kind": [RuleKind.HEADER.value], "key": [key], "anchor": [anchor],
                         "cand": [0]})


FROM_CANDS = _cands(FROM_KEY, "from:spamdom.example")


def test_from_rule_hits_a_ham_whose_display_name_holds_the_domain() -> None:
    ham = _ham(_ham_message('From: "alerts@spamdom.example (forwarded)" '
                            "<owner@lists.example.org>\nSubject: weekly digest"))
    assert ham["from_address"][0] == "owner@lists.example.org"
    rule = _rule(FROM_KEY)
    # Postfix matches the whole From line, display name included
    line = 'From: "alerts@spamdom.example (forwarded)" <owner@lists.example.org>'
    assert MapSet.from_rules([rule]).lookup(RuleKind.HEADER, [line]) is not None
    assert refused([rule], ham).tolist() == ["R0001"]
    assert confirm_no_ham([rule], ham) == {"R0001"}
    hits = match(FROM_CANDS, ham)
    assert hits["row"].tolist() == [0]


# (raw From value, whether header_checks matches FROM_KEY; None: as the matcher says)
FROM_LINES: list[tuple[str, bool | None]] = [
    ('"alerts@spamdom.example (forwarded)" <owner@lists.example.org>', True),
    ("www.SPAMDOM.example <a@example.org>", True),     # any case, after a dot
    ("a@example.org (see mail.spamdom.example)", False),  # ")" is not an end
    ("a@example.org (see mail.spamdom.example )", True),
    ("Spam Dom <x@notspamdom.example>", False),
    ("a@example.org, b@spamdom.example", True),       # every address of the line
    # folded: whether ".*" crosses the newline is the pcre table's "s" flag (matcher's call)
    ('"Name"\n\t<b@spamdom.example>', None),
    ("b@spamdom.example\n\t(comment)", True),
    ("<b@spamdom.example.other.example>", False),
]


@pytest.mark.parametrize(("value", "hit"), FROM_LINES)
def test_from_replay_agrees_with_the_matcher(value: str, hit: bool | None) -> None:
    ham = _ham(_ham_message(f"From: {value}\nSubject: x"))
    assert ham["from_header"][0] == value
    got_match = match(FROM_CANDS, ham)["row"].tolist() == [0]
    got_refused = refused([_rule(FROM_KEY)], ham).notna().tolist() == [True]
    by_matcher = MapSet.from_rules([_rule(FROM_KEY)]).lookup(
        RuleKind.HEADER, [f"From: {value}"]) is not None
    expected = by_matcher if hit is None else hit
    assert (got_match, got_refused, by_matcher) == (expected, expected, expected)


def test_subject_replay_uses_the_raw_encoded_header() -> None:
    # Postfix sees the encoded words; a key made from a spam subject whose text is those
    # encoded words (double encoding) matches this ham, whose decoded subject is "hi there"
    ham = _ham(_ham_message("From: a@example.org\nSubject: =?utf-8?q?hi?= there"))
    assert ham["subject"][0] == "hi there"
    key = r"^Subject:\s*\=\?utf-8\?q\?hi\?\=\s+there\s*$"
    assert refused([_rule(key)], ham).tolist() == ["R0001"]
    assert match(_cands(key, str(subject_probe("=?utf-8?q?hi?= there"))), ham)["row"] \
        .tolist() == [0]
    # and the decoded text alone no longer matches what Postfix would not refuse
    assert refused([_rule(r"^Subject:\s*hi\s+there\s*$")], ham).isna().all()


def test_x_mailer_replay_uses_the_raw_header() -> None:
    ham = _ham(_ham_message("From: a@example.org\nX-Mailer: =?us-ascii?q?Mailer?= 2"))
    key = r"^X-Mailer:\s*\=\?us\-ascii\?q\?Mailer\?\=\x202\s*$"
    assert refused([_rule(key)], ham).tolist() == ["R0001"]
    assert match(_cands(key, "x-mailer:=?us-ascii?q?mailer?= 2"), ham)["row"].tolist() == [0]


def test_message_id_replay_uses_the_raw_header() -> None:
    # the parsed id is the first <...> without white space; Postfix reads the line as is
    ham = _ham(_ham_message("From: a@example.org\n"
                            "Message-ID: <a b@spamdom.example> <z@other.example>"))
    assert ham["message_id"][0] == "z@other.example"
    key = message_id_key("spamdom.example")
    assert refused([_rule(key)], ham).tolist() == ["R0001"]
    assert match(_cands(key, "message-id:spamdom.example"), ham)["row"].tolist() == [0]


def test_rows_without_raw_headers_replay_the_rebuilt_lines() -> None:
    table = add_features(frame([
        row("ham", 0, "192.0.2.1", None, "mail.example.org", "a@spamdom.example",
            x_mailer="Mailer 1"),
        row("ham", 1, "192.0.2.2", None, "mail.example.org", "b@example.org"),
    ]))
    assert header_column(table, "From").tolist() == ["From: a@spamdom.example",
                                                    "From: b@example.org"]
    # a raw column present but empty for a row (old history next to new): that row too
    table["from_header"] = pd.Series([None, '"c@spamdom.example (fwd)" <b@example.org>'],
                                     dtype=object)
    assert header_column(table, "From").tolist() == [
        "From: a@spamdom.example", 'From: "c@spamdom.example (fwd)" <b@example.org>']
    assert refused([_rule(FROM_KEY)], table).tolist() == ["R0001", "R0001"]
    assert sorted(match(FROM_CANDS, table)["row"].tolist()) == [0, 1]
    assert header_column(table, "X-Mailer").tolist() == ["X-Mailer: Mailer 1", None]


def _polars(df: pd.DataFrame) -> pl.DataFrame:
    out = pl.from_pandas(df)
    return out.with_columns([pl.col(c).cast(pl.String) for c, t in out.schema.items()
                             if t == pl.Null])


def test_history_without_the_raw_columns_still_loads_and_replays(tmp_path: Path) -> None:
    """One generation stored before the raw header columns existed, one after."""
    new = _ham(_ham_message('From: "x@spamdom.example (fwd)" <owner@lists.example.org>'),
               _ham_message("From: a@example.org", 1))
    stored = mail_frame([]).columns.tolist()
    old = new.iloc[:0][stored].drop(columns=["from_header", "subject_header",
                                             "x_mailer_header", "message_id_header"])
    old_row = new.iloc[[1]][old.columns].copy()
    old_row["from_address"] = "old@spamdom.example"
    old_row["received_time"] = pd.Timestamp(datetime(2024, 9, 2, 9, tzinfo=UTC))
    store = Store(tmp_path)
    gen = store.begin()
    gen.add("mail", _polars(old_row.reset_index(drop=True)))
    gen.commit([], {}, {})
    only_old = load_history(tmp_path).mail
    assert "from_header" not in only_old
    assert refused([_rule(FROM_KEY)], add_features(only_old)).tolist() == ["R0001"]
    gen = store.begin()
    gen.add("mail", _polars(new[stored].reset_index(drop=True)))
    gen.commit([], {}, {})
    mail = load_history(tmp_path).mail.sort_values("from_address", ignore_index=True)
    assert mail["from_address"].tolist() == ["a@example.org", "old@spamdom.example",
                                             "owner@lists.example.org"]
    ham = add_features(mail)
    assert refused([_rule(FROM_KEY)], ham).tolist() == [None, "R0001", "R0001"]
    assert confirm_no_ham([_rule(FROM_KEY)], ham) == {"R0001"}
    assert sorted(match(FROM_CANDS, ham)["row"].tolist()) == [1, 2]
