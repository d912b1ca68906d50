"""Joining the mail table with a (hand-built) log messages table."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from triage.ingest.mailjoin import MAX_JOIN_GAP, join_with_log
from triage.ingest.mailtable import read_mailboxes

SAMPLE = Path(__file__).parent / "samples" / "mail" / "forged_provider.eml"


def _messages(**over: object) -> pd.DataFrame:
    row: dict[str, object] = {
        "host": "mx", "instance": "postfix", "queue_id": "4WqR7m0Q3hz9sTb", "incarnation": 0,
        "first_seen": pd.Timestamp("2024-09-03 08:00:05", tz="UTC"),
        "last_seen": pd.Timestamp("2024-09-03 08:00:07", tz="UTC"),
        "client_name": "unknown", "client_ip": "203.0.113.66",
        "helo": "mail-ot1-f42.google.example", "sender": "billing@pay.example.com",
        "size": 1200, "nrcpt": 1, "message_id": "<20240903075957.A1B2@mail-ot1-f42.google.example>",
        "spf_result": "softfail", "dkim_result": None, "dmarc_result": "none",
        "parent_queue_id": None, "status": "delivered",
    }
    row.update(over)
    return pd.DataFrame([row])


@pytest.fixture
def mail(tmp_path: Path) -> pd.DataFrame:
    shutil.copy(SAMPLE, tmp_path / "1")
    return read_mailboxes([tmp_path], role="spam", my_hostnames=["mx.example.net"])


def test_join_confirms(mail: pd.DataFrame) -> None:
    out = join_with_log(mail, _messages())
    assert bool(out.loc[0, "log_matched"])
    assert out.loc[0, "log_disagreement"] is None
    assert out.loc[0, "log_status"] == "delivered"
    assert len(out) == len(mail)


def test_join_fills_missing_fields(mail: pd.DataFrame) -> None:
    mail = mail.copy()
    mail.loc[0, "spf_result"] = None
    out = join_with_log(mail, _messages())
    assert out.loc[0, "spf_result"] == "softfail"
    assert out.loc[0, "log_disagreement"] is None


def test_join_flags_disagreement(mail: pd.DataFrame) -> None:
    out = join_with_log(mail, _messages(client_ip="192.0.2.99", dmarc_result="fail"))
    assert out.loc[0, "log_disagreement"] == "client_ip,dmarc_result"
    assert out.loc[0, "client_ip"] == "203.0.113.66"  # the header value is kept
    assert out.loc[0, "log_client_ip"] == "192.0.2.99"


def test_join_picks_the_closest_incarnation(mail: pd.DataFrame) -> None:
    old = _messages(first_seen=pd.Timestamp("2024-06-01", tz="UTC"), client_ip="192.0.2.1",
                    incarnation=0)
    new = _messages(incarnation=1)
    out = join_with_log(mail, pd.concat([old, new], ignore_index=True))
    assert out.loc[0, "log_incarnation"] == 1 and out.loc[0, "log_disagreement"] is None


def test_no_match_on_a_recycled_id_far_away(mail: pd.DataFrame) -> None:
    # The same (host, queue id) 600 days earlier: another message, whose trusted-looking
    # fields must neither fill nor contradict this one's.
    mail = mail.copy()
    mail.loc[0, "spf_result"] = None
    far = pd.Timestamp("2023-01-10 08:00", tz="UTC")
    out = join_with_log(mail, _messages(first_seen=far, last_seen=far, client_ip="198.51.100.200",
                                        spf_result="pass", message_id="<other@else.example>"))
    assert not bool(out.loc[0, "log_matched"])
    assert out.loc[0, "spf_result"] is None and out.loc[0, "log_disagreement"] is None
    assert pd.isna(out.loc[0, "log_first_seen"])


def test_time_bound_is_the_queue_lifetime_plus_slack(mail: pd.DataFrame) -> None:
    assert timedelta(days=5) < MAX_JOIN_GAP <= timedelta(days=7)
    when = mail.loc[0, "received_time"]

    def joined(start: timedelta, max_gap: timedelta = MAX_JOIN_GAP) -> bool:
        log = _messages(first_seen=when + start, last_seen=when + start + timedelta(hours=1))
        return bool(join_with_log(mail, log, max_gap=max_gap).loc[0, "log_matched"])

    # the loaded log may start late in a deferred message's life (older lines rotated away)
    assert joined(timedelta(days=5))
    assert not joined(MAX_JOIN_GAP + timedelta(minutes=1))
    assert not joined(-MAX_JOIN_GAP - timedelta(hours=1, minutes=1))  # ended long before
    assert not joined(timedelta(hours=2), max_gap=timedelta(hours=1))


def test_no_match_without_both_times(mail: pd.DataFrame) -> None:
    # no time to rule out a recycled id
    assert not bool(join_with_log(mail, _messages(first_seen=None, last_seen=None))
                    .loc[0, "log_matched"])
    assert not bool(join_with_log(mail, _messages().drop(columns=["first_seen", "last_seen"]))
                    .loc[0, "log_matched"])
    mail = mail.copy()
    mail["received_time"] = None
    assert not bool(join_with_log(mail, _messages()).loc[0, "log_matched"])


def test_reused_id_takes_the_incarnation_nearest_in_time(mail: pd.DataFrame) -> None:
    # A short id reused within the bound: the incarnation whose span holds the header's time
    # wins over one that started nearer to it but had ended before.
    when = mail.loc[0, "received_time"]
    before = _messages(first_seen=when - timedelta(minutes=30),
                       last_seen=when - timedelta(minutes=29), client_ip="192.0.2.1",
                       incarnation=0)
    ours = _messages(first_seen=when - timedelta(hours=2), last_seen=when + timedelta(days=1),
                     incarnation=1)
    after = _messages(first_seen=when + timedelta(days=2), client_ip="192.0.2.2",
                      incarnation=2)
    out = join_with_log(mail, pd.concat([after, before, ours], ignore_index=True))
    assert out.loc[0, "log_incarnation"] == 1 and out.loc[0, "log_disagreement"] is None


def test_no_match_on_other_host(mail: pd.DataFrame) -> None:
    out = join_with_log(mail, _messages(host="mx2"))
    assert not bool(out.loc[0, "log_matched"])
    assert out.loc[0, "log_disagreement"] is None


LOG = SAMPLE.with_suffix(".log")  # the log lines of forged_provider.eml at mx


@pytest.mark.parametrize(("ip", "disagreement"), [("203.0.113.66", None),
                                                  ("192.0.2.200", "client_ip")])
def test_cli_with_log(tmp_path: Path, ip: str, disagreement: str | None) -> None:
    import json

    from typer.testing import CliRunner

    from triage.cli.app import app

    spam = tmp_path / "spam"
    spam.mkdir()
    shutil.copy(SAMPLE, spam / "1")
    log = tmp_path / "mail.log"
    log.write_text(LOG.read_text().replace("203.0.113.66", ip))
    # syslog has no year: it is inferred from the file's last write, so pin that to the
    # message's year (the join needs the log and the Received header to be days apart).
    written = pd.Timestamp("2024-09-03 09:00", tz="UTC").timestamp()
    os.utime(log, (written, written))
    # No --my-hostname: the log's host "mx" stands for mx.example.net.
    res = CliRunner().invoke(app, ["mail", str(spam), "--log", str(log)])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout.splitlines()[0])
    assert row["log_matched"] is True and row["log_size"] == 1200
    assert row["client_ip"] == "203.0.113.66"
    assert row["log_disagreement"] == disagreement


def test_sender_domain_case_is_not_a_disagreement(mail: pd.DataFrame) -> None:
    out = join_with_log(mail, _messages(sender="billing@PAY.Example.COM"))
    assert out.loc[0, "log_disagreement"] is None
    out = join_with_log(mail, _messages(sender="other@pay.example.com"))
    assert out.loc[0, "log_disagreement"] == "envelope_sender"
