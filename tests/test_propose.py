"""Generalisers and the proposal run: nothing ever reaches known ham."""

from __future__ import annotations

import ipaddress
import re

import pandas as pd
from helpers_campaign import frame, row

from triage.features import add_features
from triage.generalise import (
    Limits,
    cidr_candidates,
    name_pattern,
    rdns_candidates,
    sender_candidates,
)
from triage.model import RuleKind
from triage.propose import ProposeOptions, propose
from triage.shield import build_shield


def _spam_from(ips: list[str], days: int = 3) -> pd.DataFrame:
    return add_features(frame([row("spam", i % days, ip, None, "x.example.net",
                                   f"s{i}@spam.example") for i, ip in enumerate(ips)]))


def test_cidr_grows_over_spam_but_never_over_ham() -> None:
    spam = _spam_from([f"198.51.100.{i}" for i in (1, 2, 5, 9, 130, 140)])
    ham = frame([row("ham", 0, "198.51.100.200", "mail.example.org", "mail.example.org",
                     "a@example.org")])
    shield = build_shield(ham)
    cands = cidr_candidates(spam, shield, Limits(v4_widest=24))
    nets = [ipaddress.ip_network(k) for k in cands["key"]]
    assert nets, "the spam block yields a network"
    ham_ip = ipaddress.ip_address("198.51.100.200")
    assert all(ham_ip not in n for n in nets)
    assert all(n.prefixlen >= 24 for n in nets)
    # 198.51.100.0/25 holds 4 spam sources and no ham: it is reached
    assert ipaddress.ip_network("198.51.100.0/25") in nets


def test_cidr_single_host_needs_two_messages() -> None:
    spam = _spam_from(["192.0.2.1"])
    assert cidr_candidates(spam, build_shield(frame([]))).empty
    spam = _spam_from(["192.0.2.1", "192.0.2.1"])
    assert cidr_candidates(spam, build_shield(frame([])))["key"].tolist() == ["192.0.2.1/32"]


def test_ipv6_stays_within_bounds() -> None:
    spam = _spam_from([f"2001:db8:0:{i}::1" for i in range(4)])
    cands = cidr_candidates(spam, build_shield(frame([])), Limits(v6_widest=48))
    nets = [ipaddress.ip_network(k) for k in cands["key"]]
    assert nets and all(48 <= n.prefixlen <= 64 for n in nets)


def test_name_pattern_anchored_on_registered_domain() -> None:
    p = name_pattern("adsl-198-51-100-7.pool.example.net", "example.net", 1)
    assert p is not None and p.endswith(r"\.example\.net$") and p.startswith("^")
    assert re.search(p, "adsl-192-0-2-1.pool.example.net")
    assert not re.search(p, "adsl-1-2-3-4.pool.example.net.evil.example")
    assert name_pattern("mail.example.net", "example.net", 3) == r"(^|\.)example\.net$"


def test_rdns_regex_never_matches_a_ham_name() -> None:
    spam = add_features(frame([row("spam", i, f"198.51.100.{i}", f"dsl-{i}.pool.example.net",
                                   "x", f"a{i}@spam.example") for i in range(1, 7)]))
    ham_name = "dsl-99.pool.example.net"
    ham = frame([row("ham", 0, "192.0.2.99", ham_name, "x", "b@example.org")])
    cands = rdns_candidates(spam, build_shield(ham), Limits())
    assert all(not re.search(k, ham_name, re.I) for k in cands["key"])
    # without that ham name the same spam gives a pattern that does match the pool
    free = rdns_candidates(spam, build_shield(frame([])), Limits())
    assert any(re.search(k, ham_name, re.I) for k in free["key"])


def test_rdns_regex_needs_several_hosts() -> None:
    spam = add_features(frame([row("spam", i, "198.51.100.1", "dsl-1.pool.example.net", "x",
                                   f"a{i}@spam.example") for i in range(5)]))
    assert rdns_candidates(spam, build_shield(frame([])), Limits(min_hosts=3)).empty


def test_sender_domains_refuse_suffixes_shielded_and_providers() -> None:
    senders = ["a@bad.example", "b@bad.example", "c@gmail.com", "d@gmail.com",
               "e@ham.example", "f@ham.example", "g@co.uk", "h@co.uk"]
    spam = add_features(frame([row("spam", i, f"198.51.100.{i}", None, "x", s)
                               for i, s in enumerate(senders)]))
    ham = frame([row("ham", 0, "192.0.2.1", None, "x", "friend@ham.example")])
    keys = set(sender_candidates(spam, build_shield(ham))["key"])
    assert keys == {"bad.example"}


def test_planted_campaign_is_proposed_and_ham_untouched() -> None:
    noise = [row("spam", i % 7, f"203.0.113.{i % 200 + 1}", None, f"h{i}.example{i}.com",
                 f"n{i}@noise{i}.example") for i in range(300)]
    planted = [row("spam", i % 5, f"198.51.100.{i % 8 + 1}", f"{i % 8 + 1}.cable.example.net",
                   "promo.example.biz", f"deal{i}@promo.example") for i in range(40)]
    ham = [row("ham", i % 7, "192.0.2.10", "mail.example.org", "mail.example.org",
               f"friend{i}@example.org") for i in range(30)]
    ham.append(row("ham", 3, "198.51.100.200", "200.cable.example.net", "pc.example.net",
                   "neighbour@example.com"))
    result = propose(frame(noise + planted), frame(ham),
                     options=ProposeOptions(my_hostnames=("mx.example.org",)))
    assert 1 <= len(result.rules) <= 15
    from triage.backtest import refused
    spam_ref = refused(result.rules, add_features(frame(planted)))
    assert spam_ref.notna().mean() >= 0.9, "the planted campaign is refused"
    assert refused(result.rules, add_features(frame(ham))).isna().all(), "no ham refused"
    kinds = {r.kind for r in result.rules}
    assert kinds & {RuleKind.CLIENT_CIDR, RuleKind.CLIENT_NAME, RuleKind.SENDER_DOMAIN}
    for r in result.rules:
        assert r.evidence.ham_hits == 0 and r.evidence.spam_hits >= 2
        assert r.evidence.days >= 2


def test_outbound_mail_servers_and_access_providers_are_not_blocked_wholesale() -> None:
    """Spam through an ISP's outbound mail servers is no evidence against their addresses or
    names, and spam from its dynamic pool never yields a pattern for the ISP's whole domain
    (the same domain names the servers that carry its customers' good mail)."""
    servers = [row("spam", i % 4, f"198.51.100.{16 + i % 4}",
                   f"mail0{i % 4}.svc.isp.example.net", f"mail0{i % 4}.svc.isp.example.net",
                   f"x{i}@junk{i % 3}.example") for i in range(12)]
    pool = [row("spam", i % 5, f"203.0.113.{40 + i}", f"cpe-203-0-113-{40 + i}.res.isp.example.net",
                f"cpe-203-0-113-{40 + i}.res.isp.example.net", f"y{i}@junk{i % 3}.example")
            for i in range(10)]
    ham = [row("ham", i % 7, "192.0.2.10", "mail.example.org", "mail.example.org",
               f"friend{i}@example.org") for i in range(20)]
    result = propose(frame(servers + pool), frame(ham),
                     options=ProposeOptions(my_hostnames=("mx.example.org",)))
    from triage.backtest import refused
    for r in result.rules:
        assert r.key not in (r"(^|\.)isp\.example\.net$", r"(^|\.)example\.net$"), r.key
    # a later good message through those servers is not refused
    later = frame([row("ham", 9, "198.51.100.18", "mail02.svc.isp.example.net",
                       "mail02.svc.isp.example.net", "neighbour@isp.example.net"),
                   row("ham", 9, "198.51.100.30", "smtp3out.isp.example.net",
                       "smtp3out.isp.example.net", "other@isp.example.net")])
    assert refused(result.rules, add_features(later)).isna().all()


def test_cidr_never_covers_our_own_networks() -> None:
    spam = _spam_from([f"198.51.100.{i}" for i in (1, 2, 5, 9, 130, 140)])
    shield = build_shield(frame([]), trusted_relays=["198.51.100.128/28", "relay.example.org"])
    nets = [ipaddress.ip_network(k) for k in cidr_candidates(spam, shield, Limits())["key"]]
    own = ipaddress.ip_network("198.51.100.128/28")
    assert nets and not any(n.overlaps(own) for n in nets)
    assert ipaddress.ip_network("198.51.100.0/25") in nets
    assert shield.is_relay_name("Relay.Example.org.") and "relay.example.org" in shield.ham_helos


def test_shield_takes_authenticated_and_outbound_traffic_from_the_log() -> None:
    from types import SimpleNamespace

    def logs(text: object) -> SimpleNamespace:
        return SimpleNamespace(
            sessions=pd.DataFrame({
                "client_ip": ["198.51.100.4", "203.0.113.9"],
                "client_name": ["Laptop.Example.NET.", "bad.example"],
                "helo": ["LAPTOP", "bad"], "sasl_username": ["alice", None]}, dtype=text),
            messages=pd.DataFrame({
                "client_ip": ["127.0.0.1", "198.51.100.4", "203.0.113.9", "192.0.2.50"],
                "sender": ["Bob@Example.org", "alice@example.org", "x@bad.example", "c@d.e"],
                "queue_id": ["Q1", "Q2", "Q3", "Q4"],
                "origin": ["pickup", "smtpd", "smtpd", None],
                "sasl_username": [None, "alice", None, None]}, dtype=text),
            deliveries=pd.DataFrame({
                "queue_id": ["Q1", "Q2", "Q2", "Q3", "Q1"],
                "recipient": ["friend@mail.partner.co.uk", "local@example.org",
                              "x@other.example", "v@victim.example", "y@norelay.example"],
                "relay": ["mx.partner.co.uk", "LOCAL", "mx.other.example", "mx.victim",
                          None]}, dtype=text))

    ham = add_features(frame([row("ham", 1, "192.0.2.8", None, "mail.example.org",
                                  "d@example.org")]))
    shields = [build_shield(ham, logs=logs(t), featured=True, builtin=False)
               for t in (object, "str")]
    assert shields[0] == shields[1]
    s = shields[0]
    assert s.ham_ips == {"192.0.2.8", "198.51.100.4"}
    assert s.networks == {"192.0.2.0/24", "198.51.100.0/24"}
    assert "laptop.example.net" in s.ham_names and "laptop" in s.ham_helos
    assert s.ham_senders >= {"bob@example.org", "alice@example.org"}
    assert "bad.example" not in s.ham_names and "x@bad.example" not in s.ham_senders
    # correspondents: outbound mail's recipients, not the local ones nor a null relay's
    assert {"partner.co.uk", "other.example"} <= s.domains
    assert not {"victim.example", "norelay.example"} & s.domains


def test_grouped_is_groupby_agg() -> None:
    from triage.generalise import _grouped

    df = pd.DataFrame({"k": ["b", "a", None, "b", "c"], "j": ["x", "y", "y", None, "x"],
                       "v": ["1", "2", "3", None, "1"], "n": [1, 2, 3, 4, 5]})
    for part in (df, df.iloc[:0], df.iloc[2:3]):
        for by, named in (("k", {"size": ("k", "size"), "u": ("v", "nunique"),
                                 "f": ("v", "first")}),
                          (["k", "j"], {"u": ("v", "nunique"), "s": ("n", "sum")})):
            pd.testing.assert_frame_equal(_grouped(part, by, **named),
                                          part.groupby(by).agg(**named))


def test_proposal_says_how_much_ham_it_could_not_check() -> None:
    """A ham message without a trusted Received hop has no client address to replay: a
    connection rule's note says so instead of counting it as checked."""
    planted = [row("spam", i % 5, f"198.51.100.{i % 8 + 1}", f"{i % 8 + 1}.cable.example.net",
                   "promo.example.biz", f"deal{i}@promo.example") for i in range(40)]
    ham = [row("ham", i % 7, "192.0.2.10", "mail.example.org", "mail.example.org",
               f"friend{i}@example.org") for i in range(10)]
    blind = [row("ham", 2, None, None, "friend.example.org",  # type: ignore[arg-type]
                  "friend@example.org") for _ in range(3)]
    result = propose(frame(planted), frame(ham + blind),
                     options=ProposeOptions(my_hostnames=("mx.example.org",)))
    cidr = [r for r in result.rules if r.kind is RuleKind.CLIENT_CIDR]
    assert cidr, [r.key for r in result.rules]
    assert all("3 ham messages could not be checked: no trusted Received hop" in r.note
               for r in cidr)
    senders = [r for r in result.rules if r.kind is RuleKind.SENDER_DOMAIN]
    assert all("could not be checked" not in r.note for r in senders)
