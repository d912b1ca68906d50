"""Subject and Message-ID header rules, and the operator's allowlist setting."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers_campaign import COLUMNS, row

from triage.backtest import refused
from triage.config import load_config
from triage.emit.postfix import MapSet, matches, render_line, render_map
from triage.features import add_features
from triage.generalise import Limits, header_candidates, subject_key
from triage.model import Rule, RuleKind, RuleState
from triage.propose import ProposeOptions, propose
from triage.shield import build_shield
from triage.weekly_rules import _options

HAM_SUBJECTS = ["Minutes of Tuesday's meeting", "Re: your exclusive reward today?",
                "Invoice 2025-091", "Claim your exclusive reward", "lunch"]


def _frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[*COLUMNS, "subject"])


def _scattered_spam(subject: str | None, n: int = 12,
                    msgid_domain: str | None = None) -> list[dict[str, object]]:
    """Spam from ``n`` unrelated sources (a /48 each, its own sender and HELO domain, no
    rDNS): no connection rule can cover two of them."""
    out = []
    for i in range(n):
        r = row("spam", i % 6, f"2001:db8:{i + 1:x}::1", None, f"h.host{i}.example",
                f"u{i}@sender{i}.example")
        r["subject"] = subject if subject is not None else f"unrelated subject number {i}"
        if msgid_domain:
            r["message_id"] = f"{i:08x}.{i * 7919:x}@mta{i % 3}.{msgid_domain}"
        out.append(r)
    return out


def _ham() -> list[dict[str, object]]:
    out = []
    for i, s in enumerate(HAM_SUBJECTS * 4):
        r = row("ham", i % 7, "192.0.2.10", "mail.example.org", "mail.example.org",
                f"friend{i}@example.org")
        r["subject"] = s
        out.append(r)
    return out


def _header_rules(rules: list[Rule], header: str) -> list[Rule]:
    return [r for r in rules if r.kind is RuleKind.HEADER and r.key.startswith(f"^{header}:")]


def test_campaign_identified_only_by_subject_gets_a_subject_rule() -> None:
    subject = "Claim your exclusive reward today"
    spam = _frame(_scattered_spam(subject))
    ham = _frame(_ham())
    result = propose(spam, ham, options=ProposeOptions(my_hostnames=("mx.example.org",)))
    subj = _header_rules(result.rules, "Subject")
    assert len(subj) == 1, result.candidates[["kind", "key", "spam_hits", "ham_hits"]]
    rule = subj[0]
    assert rule.evidence.ham_hits == 0 and rule.evidence.spam_hits == len(spam)
    assert rule.evidence.days >= 2
    # no connection rule could: every candidate of another kind covers at most one message
    assert all(r.kind is RuleKind.HEADER for r in result.rules)
    assert refused(result.rules, add_features(spam)).notna().all()
    assert refused(result.rules, add_features(ham)).isna().all()
    for s in HAM_SUBJECTS:
        assert matches(rule, f"Subject: {s}") is None
    # case and folding do not let the same subject through
    assert matches(rule, "Subject: claim your EXCLUSIVE reward\n\ttoday") is not None


def test_subject_rule_only_for_spam_no_connection_rule_covers() -> None:
    subject = "Claim your exclusive reward today"
    spam = _scattered_spam(subject)
    for r in spam:  # the same campaign from one network: a CIDR rule covers it
        r["client_ip"] = "198.51.100." + str(spam.index(r) % 4 + 1)
    result = propose(_frame(spam), _frame(_ham()))
    assert result.rules and not _header_rules(result.rules, "Subject")
    assert any(r.kind is RuleKind.CLIENT_CIDR for r in result.rules)


_WITH_MID = ProposeOptions(limits=Limits(message_id_rules=True))


def test_message_id_rules_are_off_by_default() -> None:
    # mailing lists pass on their authors' Message-IDs: the rule kind must be asked for
    spam = _frame(_scattered_spam(None, msgid_domain="bulk-mailer.example"))
    assert not _header_rules(propose(spam, _frame(_ham())).rules, "Message-ID")


def test_shared_message_id_domain_gets_a_message_id_rule() -> None:
    spam = _frame(_scattered_spam(None, msgid_domain="bulk-mailer.example"))
    ham = _frame(_ham())
    result = propose(spam, ham, options=_WITH_MID)
    mid = _header_rules(result.rules, "Message-ID")
    assert len(mid) == 1 and mid[0].key.endswith(r"@([^<>@]*\.)?bulk-mailer\.example>")
    assert not _header_rules(result.rules, "Subject"), "each subject is sent once"
    assert refused(result.rules, add_features(spam)).notna().all()
    assert refused(result.rules, add_features(ham)).isna().all()
    assert matches(mid[0], "Message-ID: <abc@mta9.bulk-mailer.example>") is not None
    assert matches(mid[0], "Message-ID: <abc@notbulk-mailer.example>") is None
    assert matches(mid[0], "Message-ID: <abc@bulk-mailer.example.org>") is None
    assert matches(mid[0], "References: <abc@bulk-mailer.example>") is None


def test_message_id_domain_seen_in_ham_is_not_proposed() -> None:
    spam = _frame(_scattered_spam(None, msgid_domain="bulk-mailer.example"))
    ham_rows = _ham()
    ham_rows[0]["message_id"] = "x1@bulk-mailer.example"
    result = propose(spam, _frame(ham_rows), options=_WITH_MID)
    assert not _header_rules(result.rules, "Message-ID")


def test_subject_seen_in_ham_is_never_proposed() -> None:
    subject = "Claim your exclusive reward today"
    ham_rows = _ham()
    ham_rows[3]["subject"] = "claim  your exclusive\n REWARD today"  # same up to case/space
    spam, ham = _frame(_scattered_spam(subject)), _frame(ham_rows)
    result = propose(spam, ham)
    assert not _header_rules(result.rules, "Subject")
    f_spam, f_ham = add_features(spam), add_features(ham)
    cands = header_candidates(f_spam, build_shield(f_ham, featured=True), f_ham)
    assert not cands["key"].str.startswith("^Subject:").any()


def test_subject_needs_several_days_and_sources() -> None:
    subject = "Claim your exclusive reward today"
    one_day = _scattered_spam(subject)
    for r in one_day:
        r["received_time"] = pd.Timestamp("2025-09-01 10:00", tz="UTC")
    f = add_features(_frame(one_day))
    ham = add_features(_frame(_ham()))
    cands = header_candidates(f, build_shield(ham, featured=True), ham, Limits())
    assert not cands["key"].str.startswith("^Subject:").any()
    short = add_features(_frame(_scattered_spam("hi there")))
    cands = header_candidates(short, build_shield(ham, featured=True), ham, Limits())
    assert not cands["key"].str.startswith("^Subject:").any()


HOSTILE = [
    "WIN $1000 (today) [50%] off?? ^now$ a|b .* \\1 {2,}",
    "path /etc/passwd/ REJECT 5.7.1 /x/",
    "Hello there\nX-Injected: yes",
    "tab\tand\r\nCRLF /end",
    "#comment-like \\ back\\slash",
]


@pytest.mark.parametrize("subject", HOSTILE)
def test_hostile_subject_map_line_matches_only_its_header(subject: str) -> None:
    rule = Rule("R0001", RuleKind.HEADER, subject_key(subject), state=RuleState.ACTIVE)
    line = render_line(rule)
    assert "\n" not in line and "\r" not in line and "\t" not in line
    text = render_map(RuleKind.HEADER, [rule])
    maps = MapSet.from_rules([rule])
    assert matches(text, f"Subject: {subject}", "pcre") is not None
    assert maps.check(headers=[f"Subject: {subject}"]).rule_id == "R0001"
    # the same words folded over two lines, in other case
    folded = "Subject: " + "\n\t".join(subject.upper().split(" ", 1))
    assert matches(text, folded, "pcre") is not None
    for other in (f"Subject: {subject} and more", f"Subject: Re: {subject}",
                  f"X-Subject: {subject}", f"Subject: {subject[:-1]}",
                  "X-Injected: yes", "Subject: ", "Subject: WIN", f"Comments: {subject}"):
        assert matches(text, other, "pcre") is None, other
        assert not maps.check(headers=[other]).refused


def test_hostile_subject_campaign_end_to_end() -> None:
    subject = HOSTILE[0]
    spam, ham = _frame(_scattered_spam(subject)), _frame(_ham())
    result = propose(spam, ham)
    subj = _header_rules(result.rules, "Subject")
    assert len(subj) == 1
    text = render_map(RuleKind.HEADER, [Rule(subj[0].id, subj[0].kind, subj[0].key,
                                             state=RuleState.ACTIVE)])
    assert matches(text, f"Subject: {subject}", "pcre") is not None
    assert all(matches(text, f"Subject: {s}", "pcre") is None for s in HAM_SUBJECTS)


def _allowlist_setup(tmp_path: Path) -> Path:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "mine.toml").write_text(
        '[[provider]]\nname = "our partner"\ndomains = ["partner.example"]\n', "utf-8")
    cfg = tmp_path / "triage.toml"
    cfg.write_text('allowlist = ["lists/mine.toml"]\n', "utf-8")
    return cfg


def test_operator_allowlist_setting_resolves_relative_to_config(tmp_path: Path) -> None:
    cfg = load_config(_allowlist_setup(tmp_path))
    assert cfg.allowlist == ("lists/mine.toml",)
    assert cfg.allowlist_files() == (str(tmp_path.resolve() / "lists" / "mine.toml"),)
    assert _options(cfg, pd.DataFrame()).allowlist_files == cfg.allowlist_files()


def test_domain_in_operator_allowlist_is_never_proposed(tmp_path: Path) -> None:
    spam_rows = []
    for i in range(12):
        r = row("spam", i % 4, f"2001:db8:{i + 1:x}::1", None, f"h.host{i}.example",
                f"news{i}@partner.example")
        r["subject"] = f"newsletter number {i}"
        r["message_id"] = f"{i}@mta.partner.example"
        spam_rows.append(r)
    spam, ham = _frame(spam_rows), _frame(_ham())
    plain = propose(spam, ham)
    assert any("partner" in r.key for r in plain.rules), "without the allowlist it is proposed"
    cfg = load_config(_allowlist_setup(tmp_path))
    result = propose(spam, ham, options=ProposeOptions(allowlist_files=cfg.allowlist_files()))
    assert not [r for r in result.rules if "partner" in r.key]
    assert not result.candidates["key"].str.contains("partner").any()


def test_scan_proposer_gets_the_configs_trusted_relays(tmp_path: Path) -> None:
    # the weekly scan proposes with the same view of our own relays as `triage evaluate`:
    # their addresses are mynetworks in the backtest, their names never "claim to be us"
    cfg_file = tmp_path / "triage.toml"
    cfg_file.write_text('trusted_relays = ["relay.example.net", "192.0.2.0/28"]\n', "utf-8")
    cfg = load_config(cfg_file)
    assert _options(cfg, pd.DataFrame()).trusted_relays == ("relay.example.net", "192.0.2.0/28")
