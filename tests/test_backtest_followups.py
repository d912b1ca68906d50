"""Backtest follow-ups: labelled log messages named by (host, queue id); ham that a
connection rule could not be checked against is counted, not silently passed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
from helpers_campaign import frame, row

from triage.backtest import LOG_ROW_COLUMNS, known_messages, log_rows, no_trusted_hop, summarise
from triage.features import add_features
from triage.model import RuleKind

QID = "4A1B2C3D4E"


def _logs(hosts: list[str | None]) -> SimpleNamespace:
    """One delivered message per host, every one under the same queue id."""
    n = len(hosts)
    return SimpleNamespace(
        messages=pd.DataFrame({
            "host": hosts, "queue_id": [QID] * n,
            "client_ip": [f"198.51.100.{i + 1}" for i in range(n)],
            "client_name": [None] * n, "helo": ["pc.example"] * n,
            "sender": ["a@spam.example"] * n,
            "first_seen": pd.to_datetime(["2025-09-02"] * n, utc=True),
            "origin": ["smtpd"] * n, "sasl_username": [None] * n}),
        rejects=pd.DataFrame(), sessions=pd.DataFrame())


def test_a_queue_id_reused_on_another_host_is_not_known() -> None:
    # the spam folder holds mx1's message (Received names the FQDN, syslog the short name)
    labelled = pd.DataFrame({"host": ["mx1.example.net"], "queue_id": [QID]})
    rows = log_rows(_logs(["mx1", "mx2", "MX1.example.net"]), labelled)
    assert rows["known"].tolist() == [True, False, True]


def test_a_row_without_host_is_never_known() -> None:
    labelled = pd.DataFrame({"host": ["mx1.example.net", None], "queue_id": [QID, QID]})
    rows = log_rows(_logs([None, "mx2"]), labelled)
    assert rows["known"].tolist() == [False, False]


def test_plain_queue_ids_still_match_on_the_queue_id() -> None:
    assert log_rows(_logs(["mx1", "mx2"]), [QID])["known"].tolist() == [True, True]


def test_known_messages_takes_host_and_queue_id_of_each_labelled_row() -> None:
    spam = pd.DataFrame({"host": ["mx1.example.net", None, "mx1.example.net"],
                         "queue_id": [QID, "5B", QID]})
    ham = pd.DataFrame({"host": ["mx2.example.net"], "queue_id": ["6C"]})
    got = known_messages(spam, ham, pd.DataFrame({"queue_id": ["7D"]}))
    assert list(zip(got["host"], got["queue_id"], strict=True)) == [
        ("mx1.example.net", QID), ("mx2.example.net", "6C")]
    assert known_messages().empty


def test_the_proposer_reads_the_host_of_log_messages() -> None:
    # the scan reads only these columns of the history's log tables
    assert "host" in LOG_ROW_COLUMNS["messages"]


def test_summarise_counts_the_other_hosts_delivery_as_unknown() -> None:
    spam = add_features(frame([row("spam", d, "198.51.100.1", None, "pc.example",
                                   "a@spam.example") for d in range(3)]))
    spam["host"], spam["queue_id"] = "mx1.example.net", [QID, "8E", "9F"]
    cands = pd.DataFrame([{"kind": RuleKind.CLIENT_CIDR.value, "key": "198.51.100.0/24",
                           "anchor": None}])
    log = log_rows(_logs(["mx1", "mx2"]), known_messages(spam))
    out, _ = summarise(cands, spam, spam.iloc[:0], log)
    assert out["log_delivered_unknown"].tolist() == [1]


def _ham_without_hop() -> pd.DataFrame:
    """Ham from the spam's network whose trusted hop was not found (hop fields empty),
    one with a hop (a correspondent elsewhere) and one submitted locally (hop, no client)."""
    lost = row("ham", 1, "198.51.100.77", "mail.example.org", "mail.example.org",
               "d@example.org")
    lost.update(client_ip=None, client_name=None, helo=None)
    local = row("ham", 2, "192.0.2.1", None, "localhost", "me@example.net")
    local.update(client_ip=None, client_name=None)
    ham = frame([lost, row("ham", 1, "192.0.2.9", "mail.example.com", "mail.example.com",
                           "e@example.com"), local])
    return add_features(ham).assign(trusted=[False, True, True])


def test_ham_without_a_trusted_hop_is_counted_for_connection_candidates() -> None:
    spam = add_features(frame([row("spam", d, f"198.51.100.{d + 1}", None, "pc.example",
                                   "a@spam.example") for d in range(3)]))
    cands = pd.DataFrame([
        {"kind": RuleKind.CLIENT_CIDR.value, "key": "198.51.100.0/24", "anchor": None},
        {"kind": RuleKind.HELO.value, "key": r"^pc\.example$", "anchor": "pc.example"},
        {"kind": RuleKind.SENDER_DOMAIN.value, "key": "spam.example",
         "anchor": "spam.example"}])
    out, _ = summarise(cands, spam, _ham_without_hop())
    assert out["ham_hits"].tolist() == [0, 0, 0]
    assert out["ham_unchecked"].tolist() == [1, 1, 0]


def test_no_trusted_hop_without_a_trusted_column_reads_the_client_address() -> None:
    ham = _ham_without_hop()
    assert no_trusted_hop(ham).tolist() == [True, False, False]
    assert no_trusted_hop(ham.drop(columns="trusted")).tolist() == [True, False, True]
    assert no_trusted_hop(ham.assign(trusted=[None, True, None])).dtype == np.bool_
    assert no_trusted_hop(ham.assign(trusted=[None, True, None])).tolist() == [
        True, False, True]


def test_confirm_no_ham_names_every_rule_that_refuses_ham() -> None:
    """Two rules refusing the same ham row: Postfix names the first, both are unsafe."""
    from triage.backtest import confirm_no_ham
    from triage.model import Rule, RuleKind, RuleState

    ham = pd.DataFrame({"client_ip": ["198.51.100.7"], "client_name": ["mail.friend.example"],
                        "helo": ["mail.friend.example"], "envelope_sender": ["a@friend.example"],
                        "role": ["ham"], "trusted": [True]})
    rules = [Rule("R0001", RuleKind.CLIENT_CIDR, "198.51.100.0/24", state=RuleState.ACTIVE),
             Rule("R0002", RuleKind.HELO, r"^mail\.friend\.example$", state=RuleState.ACTIVE)]
    assert confirm_no_ham(rules, ham) == {"R0001", "R0002"}
