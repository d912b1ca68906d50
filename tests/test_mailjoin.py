"""Joining the mail table with a (hand-built) log messages table."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from triage.ingest.mailjoin import join_with_log
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
