"""Bounds on what a rule may say, whoever wrote it (proposal, review edit, hand-edited file):
no network wider than a provider block or touching non-Internet space, no catch-all regex,
no rule id in a reject text other than the one the emitter appends."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import pytest
from helpers_campaign import frame, row

from triage.cli.app import main
from triage.emit.postfix import (
    V4_WIDEST_PREFIX,
    V6_WIDEST_PREFIX,
    MapSet,
    pcre_literal,
    render_line,
    validate_key,
)
from triage.errors import RuleError
from triage.features import add_features
from triage.generalise import Limits, cidr_candidates, name_pattern, subject_key
from triage.model import Action, Evidence, Rule, RuleKind, RuleState
from triage.review import Choice, ReviewSession
from triage.rulebook import RuleFileError, load_rulebook, save_rules
from triage.shield import Shield

CIDR, HELO, NAME, HEADER = (RuleKind.CLIENT_CIDR, RuleKind.HELO, RuleKind.CLIENT_NAME,
                            RuleKind.HEADER)


# ------------------------------------------------------------------ network width (item 1)

@pytest.mark.parametrize("key", ["0.0.0.0/0", "10.0.0.0/1", "198.0.0.0/15", "::/0",
                                 "2001:db8::/31", "2000::/3"])
def test_network_wider_than_the_bound_is_refused(key: str) -> None:
    with pytest.raises(RuleError, match="too wide"):
        validate_key(CIDR, key)


@pytest.mark.parametrize(("key", "normal"), [
    ("198.51.0.0/16", "198.51.0.0/16"), ("2001:db8::/32", "2001:db8::/32"),
    ("192.0.2.9/24", "192.0.2.0/24"), ("203.0.113.7", "203.0.113.7/32"),
    ("2001:db8:1:2::/64", "2001:db8:1:2::/64")])
def test_networks_up_to_the_bound_are_kept(key: str, normal: str) -> None:
    assert validate_key(CIDR, key) == normal


def test_bounds_are_at_least_as_wide_as_what_the_generaliser_proposes() -> None:
    # an operator may widen a proposal by hand, up to a provider block, never narrower
    # than a proposal could already be
    assert (V4_WIDEST_PREFIX, V6_WIDEST_PREFIX) == (16, 32)
    assert Limits().v4_widest >= V4_WIDEST_PREFIX and Limits().v6_widest >= V6_WIDEST_PREFIX


@pytest.mark.parametrize(("key", "why"), [
    ("10.1.2.0/24", "RFC 1918"), ("172.31.0.0/16", "RFC 1918"), ("192.168.1.5", "RFC 1918"),
    ("127.0.0.1", "loopback"), ("169.254.1.0/24", "link-local"),
    ("100.64.1.0/24", "carrier-grade NAT"), ("224.0.0.1", "multicast"),
    ("240.0.0.0/16", "reserved"), ("255.255.255.255", "reserved"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("::1", "loopback"),
    ("fe80::/64", "link-local"), ("fd00:1::/48", "unique local"), ("ff02::1", "multicast"),
    ("64:ff9b::c000:201", "outside IPv6 global unicast")])
def test_network_outside_the_internet_is_refused(key: str, why: str) -> None:
    with pytest.raises(RuleError, match=why):
        validate_key(CIDR, key)


@pytest.fixture
def cidr_book(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    save_rules(d, [Rule("R0001", CIDR, "192.0.2.0/24", state=RuleState.PROPOSED,
                        evidence=Evidence(spam_hits=9, messages=9, days=3,
                                          ips=("192.0.2.7",)))])
    return d


@pytest.mark.parametrize(("edit", "why"), [("0.0.0.0/0", "too wide"), ("::/0", "too wide"),
                                           ("10.0.0.0/1", "too wide"),
                                           ("192.168.0.0/24", "RFC 1918")])
def test_review_edit_to_a_huge_or_private_network_is_not_saved(cidr_book: Path, edit: str,
                                                               why: str) -> None:
    # the backtest finds no ham (say the ham folders are small): the key bound must hold
    session = ReviewSession(load_rulebook(cidr_book), "alice",
                            retest=lambda r: Evidence(spam_hits=9, ham_hits=0))
    out = session.decide(Choice.EDIT, edit)
    assert not out.saved and why in out.message
    assert load_rulebook(cidr_book).get("R0001").key == "192.0.2.0/24"
    card = session.current()
    assert card is not None and card.rule.key == "192.0.2.0/24" and why in card.note


def _write_rule(d: Path, rid: str, kind: str, key: str, text: str = "blocked") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{rid}.toml"
    path.write_text(f'id = "{rid}"\nkind = "{kind}"\nkey = \'{key}\'\nstate = "active"\n\n'
                    f'[action]\nverb = "REJECT"\nstatus = "5.7.1"\ntext = "{text}"\n')
    return path


@pytest.mark.parametrize(("kind", "key", "why"), [
    ("client_cidr", "10.0.0.0/8", "too wide"), ("client_cidr", "192.168.4.0/24", "RFC 1918"),
    ("helo", ".*", "empty string"), ("client_name", ".", "every name")])
def test_stored_rule_out_of_bounds_is_a_one_line_error_naming_the_file(
        tmp_path: Path, kind: str, key: str, why: str) -> None:
    d = tmp_path / "rules"
    _write_rule(d, "R0001", "client_cidr", "198.51.100.0/24")
    bad = _write_rule(d, "R0002", kind, key)
    with pytest.raises(RuleFileError) as info:
        load_rulebook(d)
    msg = str(info.value)
    assert msg.startswith(f"{bad}:3: ") and why in msg and "\n" not in msg


def test_cli_reports_an_out_of_bounds_rule_file_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "triage.toml").write_text('state_dir = "state"\n')
    bad = _write_rule(tmp_path / "state" / "rules", "R0003", "client_cidr", "0.0.0.0/0")
    monkeypatch.setattr(sys, "argv", ["triage", "rules", "list", "-c",
                                      str(tmp_path / "triage.toml")])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 1
    assert err.count("\n") == 1 and f"{bad}:3: " in err and "too wide" in err


def test_cidr_candidates_stop_at_the_emitters_bound() -> None:
    # Limits wider than the emitter accepts: the network reached (a /8 here) used to be
    # dropped as unwritable, leaving the spam with no candidate; now growth stops at /16
    ips = ["198.51.0.1", "198.51.200.1", "198.50.0.1", "198.49.0.1"]
    spam = add_features(frame([row("spam", i % 3, ip, None, "x.example.net",
                                   f"s{i}@spam.example") for i, ip in enumerate(ips)]))
    keys = cidr_candidates(spam, Shield(), Limits(v4_widest=8))["key"].tolist()
    assert keys == ["198.51.0.0/16"]
    assert all(ipaddress.ip_network(k).prefixlen >= V4_WIDEST_PREFIX for k in keys)


# ------------------------------------------------------------------ catch-all regexes (item 1)

@pytest.mark.parametrize("kind", [HELO, NAME])
@pytest.mark.parametrize(("key", "why"), [
    (".*", "empty string"), ("^", "empty string"), ("(?:)", "empty string"),
    ("x?", "empty string"), ("[^.]*", "empty string"), ("^$", "empty string"),
    (".", "every name"), (".+", "every name"), ("[a-z0-9]", "every name"),
    (r"\S", "every name")])
def test_catch_all_name_regex_is_refused(kind: RuleKind, key: str, why: str) -> None:
    with pytest.raises(RuleError, match=why):
        validate_key(kind, key)


@pytest.mark.parametrize("key", [r"^Subject:", r"^Subject:.*", r"^Subject:.", r"^X-Mailer:\s*",
                                 r"^From:.+"])
def test_catch_all_header_regex_is_refused(key: str) -> None:
    with pytest.raises(RuleError, match="catch-all"):
        validate_key(HEADER, key)


@pytest.mark.parametrize(("kind", "key"), [
    (HELO, pcre_literal("localhost")), (HELO, r"^[^.]+$"),  # non-FQDN greetings
    (HELO, r"^(mx\.example\.org|example\.org)$"),
    (NAME, name_pattern("adsl-198-51-100-7.pool.example.net", "example.net", 1) or ""),
    (NAME, name_pattern("adsl-198-51-100-7.pool.example.net", "example.net", 2) or ""),
    (NAME, name_pattern("adsl-198-51-100-7.pool.example.net", "example.net", 3) or ""),
    (NAME, r"^unknown$"),
    (HEADER, r"^Subject:\s*$"), (HEADER, subject_key("cheap pills today")),
    (HEADER, r"^From:.*[@.]spam\.example(>|\s|$)"), (HEADER, r"^X-Mailer:\s*BulkBot\s*$")])
def test_ordinary_keys_are_not_taken_for_catch_alls(kind: RuleKind, key: str) -> None:
    assert validate_key(kind, key) == key


def test_review_edit_to_a_catch_all_regex_is_not_saved(tmp_path: Path) -> None:
    d = tmp_path / "rules"
    key = pcre_literal("bot.example.net")
    save_rules(d, [Rule("R0001", HELO, key, state=RuleState.PROPOSED,
                        evidence=Evidence(spam_hits=5, helos=("bot.example.net",)))])
    session = ReviewSession(load_rulebook(d), retest=lambda r: Evidence(spam_hits=5))
    for edit in (".*", "(?:)", "."):
        out = session.decide(Choice.EDIT, edit)
        assert not out.saved and "regex" in out.message
    assert load_rulebook(d).get("R0001").key == key


# ------------------------------------------------------------------ rule ids in texts (item 2)

@pytest.mark.parametrize("text", ["blocked, see rule R0099", "blocked by rule R0042",
                                  "see R0099", "listed (r0099)", "blocked R123456",
                                  "policy:R00991"])
def test_reject_text_naming_a_rule_id_is_refused(text: str) -> None:
    rule = Rule("R0042", CIDR, "192.0.2.0/24", Action.reject(text), state=RuleState.ACTIVE)
    with pytest.raises(RuleError, match="rule id"):
        render_line(rule)


@pytest.mark.parametrize("text", ["blocked", "spam from this host", "listed since 2026",
                                  "see policy 4.2 (rules, section 9999)"])
def test_reject_text_without_an_id_credits_its_own_rule(text: str) -> None:
    rule = Rule("R0042", CIDR, "192.0.2.0/24", Action.reject(text), state=RuleState.ACTIVE)
    assert render_line(rule) == f"192.0.2.0/24 REJECT 5.7.1 {text} by rule R0042"
    assert MapSet.from_rules([rule]).check(client_ip="192.0.2.7").rule_id == "R0042"


def test_stored_rule_with_an_id_in_its_text_is_a_one_line_error(tmp_path: Path) -> None:
    d = tmp_path / "rules"
    bad = _write_rule(d, "R0042", "client_cidr", "192.0.2.0/24", text="blocked, see rule R0099")
    with pytest.raises(RuleFileError) as info:
        load_rulebook(d)
    msg = str(info.value)
    assert msg.startswith(f"{bad}:") and "R0099" in msg and "rule id" in msg
    assert "\n" not in msg
