"""Audit of the proposal stages: set cover, shield, evaluate's weekly retirement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import polars as pl
from helpers_campaign import frame, row

from triage.backtest import confirm_no_ham, to_rule
from triage.config import Config
from triage.evaluate import _learn, _State
from triage.model import Rule, RuleKind, RuleState
from triage.propose import ProposeOptions, featured, propose, select
from triage.shield import build_shield
from triage.store import Store
from triage.weekly_rules import iso_week, rule_feedback


def test_select_goes_on_past_a_candidate_whose_gain_shrank() -> None:
    """A candidate whose gain fell below min_messages is dropped, not the end of the cover:
    a lower-scored candidate (penalised for delivered unknown mail) still adds two messages."""
    tested = pd.DataFrame({
        "cand": [0, 1, 2], "kind": ["client_cidr", "client_cidr", "sender_domain"],
        "key": ["192.0.2.0/24", "198.51.100.0/24", "spam.example"],
        "spam_hits": [3, 2, 2], "ham_hits": [0, 0, 0], "days": [2, 2, 2],
        "log_delivered_unknown": [0, 0, 17]})
    hits = pd.DataFrame({"cand": [0, 0, 0, 1, 1, 2, 2], "row": [0, 1, 2, 2, 3, 4, 5]})
    assert select(tested, hits, ProposeOptions()) == [0, 2]


def test_shield_keeps_the_registered_domain_of_a_ham_from_address() -> None:
    """Ham From bob@mail.corp.example (sent through an ESP): corp.example is a correspondent,
    as DKIM and envelope domains are compared at registered-domain level."""
    ham = row("ham", 1, "198.51.100.5", "out.esp.example", "out.esp.example",
              "bounce@esp.example")
    ham["from_address"], ham["from_domain"] = "bob@mail.corp.example", "mail.corp.example"
    shield = build_shield(frame([ham]))
    assert shield.domain_reason("corp.example") is not None
    spam = frame([row("spam", d, f"203.0.{100 + d}.7", None, f"[203.0.{100 + d}.7]",
                      f"x{d}@corp.example") for d in range(4)])
    keys = [(r.kind.value, r.key) for r in propose(spam, frame([ham])).rules]
    assert ("sender_domain", "corp.example") not in keys


def _two_rules_one_ham() -> tuple[list, pd.DataFrame]:
    rules = [to_rule("client_cidr", "192.0.2.0/24", "R0001"),
             to_rule("sender_domain", "spam.example", "R0002")]
    ham = featured(frame([row("ham", 1, "192.0.2.5", "h.example.net", "h.example.net",
                              "a@spam.example")]), ProposeOptions())
    return rules, ham


def test_confirm_no_ham_names_every_rule_not_only_the_first() -> None:
    rules, ham = _two_rules_one_ham()
    assert confirm_no_ham(rules, ham) == {"R0001", "R0002"}


def test_evaluate_retires_every_rule_that_refuses_known_ham() -> None:
    """Two rules in force refuse the same ham row: both are retired, not only the one
    Postfix would meet first (the other would go on refusing that correspondent)."""
    rules, ham = _two_rules_one_ham()
    state = _State(active=list(rules))
    retired, added = _learn(state, ham.iloc[:0], ham, None, ProposeOptions(), None)
    assert (retired, added) == (2, 0)
    assert state.active == []


def test_feedback_reads_the_utc_week_a_rule_was_created_in(tmp_path: Path) -> None:
    """A rule created Monday 01:00 +02:00 (Sunday 23:00 UTC, week 36 of the UTC partitions)
    fired on ham at 23:30 UTC: the hit counts, and the rule is not promotable."""
    store = Store(tmp_path)
    gen = store.begin()
    t = datetime(2025, 9, 7, 23, 30, tzinfo=UTC)
    gen.add("rejects", pl.DataFrame(
        {"time": [t], "host": ["mx"], "queue_id": [None], "action": ["warn"],
         "rule_id": ["R0001"], "client_ip": ["192.0.2.1"], "sender": ["a@example.org"]},
        schema_overrides={"time": pl.Datetime("us", "UTC"), "queue_id": pl.String}))
    gen.add("sessions", pl.DataFrame(
        {"connect_time": [t], "client_ip": ["192.0.2.1"], "sasl_username": ["alice"]},
        schema_overrides={"connect_time": pl.Datetime("us", "UTC")}))
    gen.commit([], {}, {})
    created = datetime(2025, 9, 8, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert iso_week(created) == "2025-W36"
    rule = Rule("R0001", RuleKind.CLIENT_CIDR, "192.0.2.0/24", state=RuleState.TRIAL,
                created=created, approved=created)
    [fb] = rule_feedback(store, [rule], Config(), now=datetime(2025, 10, 1, tzinfo=UTC))
    assert (fb.hits, fb.ham_hits, fb.promotable) == (1, 1, False)


def test_no_name_rule_on_the_domain_of_relays_given_by_glob() -> None:
    """trusted_relays = ["gw*.edge.example"]: our relays gw1, gw2 ... greet and resolve as
    gw<n>.edge.example, so no client-name or HELO pattern may cover that domain."""
    ham = frame([row("ham", 1, "198.51.100.5", "mail.friend.example", "mail.friend.example",
                     "bob@friend.example")])
    spam = frame([row("spam", d, f"203.0.{100 + d}.7", f"gw{d}.edge.example",
                      f"gw{d}.edge.example", f"x{d}@s{d}.example") for d in range(5)])
    assert propose(spam, ham).rules  # without the relay, edge.example is fair game
    opts = ProposeOptions(trusted_relays=("gw*.edge.example",))
    keys = [(r.kind.value, r.key) for r in propose(spam, ham, options=opts).rules]
    assert not [k for k in keys if k[0] in ("client_name", "helo") and "edge" in k[1]]


def test_shipped_allowlist_covers_the_big_providers_country_domains() -> None:
    """The samples' spam proposed a sender rule on yahoo.ca: a provider's country domain
    carries its users' mail like the .com one."""
    from triage.shield import build_shield

    s = build_shield(frame([]))
    for domain in ("yahoo.ca", "mail.yahoo.com.au", "hotmail.it", "live.fr", "aol.co.uk"):
        assert s.domain_reason(domain), domain
    assert s.domain_reason("yahoo-mail.example") is None
