"""Generalisers: only keys the emitter can write, IPv4-mapped clients as IPv4, header keys
made from the raw headers Postfix matches."""

from __future__ import annotations

import ipaddress
import re

import pandas as pd
from helpers_campaign import frame, row

from triage.backtest import refused
from triage.emit.postfix import matches
from triage.features import add_features
from triage.generalise import (
    Limits,
    cidr_candidates,
    header_candidates,
    key_error,
    sender_candidates,
)
from triage.model import Rule, RuleKind, RuleState
from triage.propose import ProposeOptions, propose
from triage.shield import Shield, build_shield


def _spam(n: int = 6, **cols: list[object]) -> pd.DataFrame:
    """``n`` spam rows from ``n`` addresses over three days, with the given columns."""
    rows = [row("spam", i % 3, f"203.0.113.{i + 1}", None, f"h{i}.example.net",
                f"s{i}@spam{i}.example") for i in range(n)]
    df = add_features(frame(rows))
    for name, values in cols.items():
        df[name] = pd.Series(values, index=df.index, dtype=object)
    return df


def test_key_error_says_why_the_emitter_refuses_a_key() -> None:
    assert key_error(RuleKind.SENDER_DOMAIN.value, "xn--bcher-kva.example") is None
    assert key_error(RuleKind.SENDER_DOMAIN.value, "bücher.example") is not None
    assert key_error(RuleKind.CLIENT_CIDR.value, "::ffff:192.0.2.0/120") is not None


def test_sender_candidate_the_emitter_refuses_is_skipped() -> None:
    # e.g. a Unicode domain in history stored before domains were made ASCII
    spam = _spam(sender_domain=["bücher.example"] * 3 + ["xn--bcher-kva.example"] * 3)
    keys = sender_candidates(spam, Shield())["key"].tolist()
    assert keys == ["xn--bcher-kva.example"]


def test_from_candidate_only_for_a_domain_name() -> None:
    spam = _spam(from_domain=["bücher.example"] * 3 + ["spam.example"] * 3)
    keys = header_candidates(spam, Shield(), spam.iloc[:0])["key"].tolist()
    assert [k for k in keys if k.startswith("^From:")] == [r"^From:.*[@.]spam\.example(>|\s|$)"]


def test_propose_with_an_idn_sender_domain_does_not_fail() -> None:
    # sender domains from headers are A-labels (address.normalise_address); a U-label in
    # the table, say from old history, is skipped instead of stopping the whole run
    # unrelated sources (a /48 each, own HELO domain): only the sender domain is shared
    spam = add_features(frame([
        row("spam", i % 3, f"2001:db8:{i + 1:x}::1", None, f"h.host{i}.example",
            f"promo@{'bücher' if i % 2 else 'xn--bcher-kva'}.example") for i in range(12)]))
    spam["sender_domain"] = ["bücher.example" if i % 2 else "xn--bcher-kva.example"
                             for i in range(12)]
    ham = add_features(frame([row("ham", 0, "198.18.0.1", "mail.good.example",
                                  "mail.good.example", "a@good.example")]))
    result = propose(spam, ham, options=ProposeOptions(my_hostnames=("mx.example.net",)))
    keys = {(r.kind, r.key) for r in result.rules}
    assert (RuleKind.SENDER_DOMAIN, "xn--bcher-kva.example") in keys
    assert all(r.key != "bücher.example" for r in result.rules)


def test_cidr_reads_ipv4_mapped_spam_as_ipv4() -> None:
    mapped = ["::ffff:c633:6401", "::ffff:198.51.100.2", "::ffff:c633:6405",
              "::ffff:c633:6409"]
    spam = add_features(frame([row("spam", i % 3, ip, None, "x.example.net",
                                   f"s{i}@spam.example") for i, ip in enumerate(mapped * 2)]))
    # the ham client, also recorded IPv4-mapped, stops the growth at the /25
    ham = frame([row("ham", 0, "::ffff:198.51.100.200", "mail.example.org",
                     "mail.example.org", "a@example.org")])
    nets = [ipaddress.ip_network(k) for k in
            cidr_candidates(spam, build_shield(ham), Limits(v4_widest=24))["key"]]
    assert nets == [ipaddress.ip_network("198.51.100.0/25")]
    assert all(ipaddress.ip_address("198.51.100.200") not in n for n in nets)


def test_subject_key_is_made_from_the_raw_header() -> None:
    raw = "=?utf-8?q?Claim?= your exclusive reward"  # what header_checks sees
    spam = _spam(subject=["Claim your exclusive reward"] * 6, subject_header=[raw] * 6)
    keys = [k for k in header_candidates(spam, Shield(), spam.iloc[:0])["key"]
            if k.startswith("^Subject:")]
    assert len(keys) == 1
    rule = Rule("R0001", RuleKind.HEADER, keys[0], state=RuleState.ACTIVE)
    assert matches(rule, f"Subject: {raw}") is not None
    assert refused([rule], spam).notna().all()


def test_x_mailer_key_is_made_from_the_raw_header() -> None:
    raw = "=?us-ascii?q?Bulk_Sender?= 2.1"
    spam = _spam(x_mailer=["Bulk Sender 2.1"] * 6, x_mailer_header=[f"{raw} "] * 6)
    keys = [k for k in header_candidates(spam, Shield(), spam.iloc[:0])["key"]
            if k.startswith("^X-Mailer:")]
    assert keys == [r"^X-Mailer:\s*" + re.sub(r"([^A-Za-z0-9_-])",
                                             lambda m: "\\x20" if m.group(1) == " "
                                             else "\\" + m.group(1), raw) + r"\s*$"]
    rule = Rule("R0001", RuleKind.HEADER, keys[0], state=RuleState.ACTIVE)
    assert refused([rule], spam).notna().all()
    # a ham with that raw X-Mailer keeps the key from being made
    ham = _spam(1, x_mailer=["Bulk Sender 2.1"], x_mailer_header=[raw])
    assert not header_candidates(spam, Shield(), ham)["key"].str.startswith("^X-Mailer:").any()
