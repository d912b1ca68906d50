"""A scripted week of the weekly loop on a copy of the samples: scan -> proposals in the
rulebook -> review -> emit -> next week's log with the new rules' reject and warn lines ->
rescan reports their hits, the trial rule that passed and the one that hit ham. Also the
scan's interactive end (review, confirmation, install) and its behaviour without a terminal.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from triage.cli import prompts, scan_cmd
from triage.cli.app import app
from triage.config import load_config
from triage.model import Evidence, RuleKind, RuleState
from triage.rulebook import load_rulebook
from triage.scan import scan
from triage.store import Store
from triage.weekly_rules import history_retest, propose_from_history

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich wraps at 80 columns off a terminal; assertions should not depend on wrapping."""
    monkeypatch.setattr(scan_cmd, "console", Console(width=300))


def _copy_samples(dst: Path, extra: str = "") -> Path:
    """A writable copy of the samples (the repository's are never touched), its state and
    maps inside the copy. copytree keeps the logs' mtimes, from which syslog's year comes."""
    shutil.copytree(SAMPLES, dst, ignore=shutil.ignore_patterns(".state", "*.py"))
    cfg = dst / "triage.toml"
    text = cfg.read_text().replace('state_dir = ".state"', 'state_dir = "state"')
    cfg.write_text(text.replace('postfix_dir = ".state/maps"', 'postfix_dir = "state/maps"')
                   + extra)
    return cfg


def _invoke(args: list[str], cfg: Path, input: str | None = None) -> Any:
    res = CliRunner().invoke(app, [*args, "--config", str(cfg)], input=input,
                             terminal_width=200)
    assert res.exit_code == 0, (res.output, res.exception)
    return res


def _scan_json(cfg: Path) -> dict[str, Any]:
    return json.loads(_invoke(["scan", "--no-review", "--json"], cfg).stdout)


def _stamp(t: datetime) -> str:
    # RFC 3339, as rsyslog writes after a switch to its modern template: these lines are
    # stamped with today's date, a year after the samples, whose config fixes log_year
    return t.isoformat()


def _next_week(t: datetime, active: str, a_key: str, trial: str, t_key: str, on_ham: str,
               h_key: str, qid: str) -> list[str]:
    """Postfix lines of the next days: the active sender rule refuses three spam runs, the
    trial rule warns twice (those clients then fail on an unknown recipient), and the other
    trial rule warns on a correspondent whose message is delivered to alice's inbox."""
    s = _stamp(t)
    lines = []
    for i in range(3):
        pid, ip, sender = 7100 + i, f"203.0.113.{10 + i}", f"offer{i}@{a_key}"
        lines += [
            f"{s} mx postfix/smtpd[{pid}]: connect from unknown[{ip}]",
            f"{s} mx postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from unknown[{ip}]: 554 5.7.1 "
            f"<{sender}>: Sender address rejected: blocked by rule {active}; from=<{sender}> "
            f"to=<bob@example.org> proto=ESMTP helo=<{a_key}>",
            f"{s} mx postfix/smtpd[{pid}]: disconnect from unknown[{ip}] ehlo=1 mail=1 "
            "rcpt=0/1 quit=1 commands=3/4"]
    for i in range(2):
        pid, ip, sender = 7200 + i, f"198.51.100.{30 + i}", f"sale{i}@{t_key}"
        name = f"host{i}.example.net"
        lines += [
            f"{s} mx postfix/smtpd[{pid}]: connect from {name}[{ip}]",
            f"{s} mx postfix/smtpd[{pid}]: NOQUEUE: warn: RCPT from {name}[{ip}]: <{sender}>: "
            f"Sender address trial rule {trial}; from=<{sender}> to=<nobody@example.org> "
            f"proto=ESMTP helo=<{name}>",
            f"{s} mx postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from {name}[{ip}]: 550 5.1.1 "
            "<nobody@example.org>: Recipient address rejected: User unknown in local "
            f"recipient table; from=<{sender}> to=<nobody@example.org> proto=ESMTP "
            f"helo=<{name}>",
            f"{s} mx postfix/smtpd[{pid}]: disconnect from {name}[{ip}] ehlo=1 mail=1 "
            "rcpt=0/1 quit=1 commands=3/4"]
    friend, ip, name = f"friend@{h_key}", "192.0.2.44", f"mail.{h_key}"
    lines += [
        f"{s} mx postfix/smtpd[7300]: connect from {name}[{ip}]",
        f"{s} mx postfix/smtpd[7300]: NOQUEUE: warn: RCPT from {name}[{ip}]: <{friend}>: "
        f"Sender address trial rule {on_ham}; from=<{friend}> to=<alice@example.org> "
        f"proto=ESMTP helo=<{name}>",
        f"{s} mx postfix/smtpd[7300]: {qid}: client={name}[{ip}]",
        f"{s} mx postfix/cleanup[7301]: {qid}: message-id=<lunch-1@{h_key}>",
        f"{s} mx postfix/qmgr[229]: {qid}: from=<{friend}>, size=812, nrcpt=1 (queue active)",
        f"{s} mx postfix/local[7302]: {qid}: to=<alice@example.org>, relay=local, delay=0.05, "
        "delays=0.03/0/0/0.02, dsn=2.0.0, status=sent (delivered to command: "
        '/usr/bin/procmail -a "$EXTENSION")',
        f"{s} mx postfix/qmgr[229]: {qid}: removed",
        f"{s} mx postfix/smtpd[7300]: disconnect from {name}[{ip}] ehlo=1 mail=1 rcpt=1 "
        "data=1 quit=1 commands=5"]
    return lines


def _ham_message(t: datetime, h_key: str, qid: str) -> str:
    """The correspondent's message as Procmail filed it in alice's inbox."""
    date = t.strftime("%a, %d %b %Y %H:%M:%S +0000")
    return (f"Return-Path: <friend@{h_key}>\nDelivered-To: alice@example.org\n"
            f"Authentication-Results: mx.example.org; spf=pass smtp.mailfrom={h_key}\n"
            f"Received: from mail.{h_key} (mail.{h_key} [192.0.2.44])\n"
            f"\tby mx.example.org (Postfix) with ESMTP id {qid}\n"
            f"\tfor <alice@example.org>; {date} (UTC)\n"
            f"From: A Friend <friend@{h_key}>\nTo: alice@example.org\n"
            f"Subject: lunch on Friday?\nMessage-ID: <lunch-1@{h_key}>\nDate: {date}\n\n"
            "Are you free on Friday?\n")


def test_scripted_week(tmp_path: Path) -> None:
    # trial_days = 0: a trial rule with no ham hit is promotable at the next scan
    cfg = _copy_samples(tmp_path / "s", "trial_days = 0\n")
    root = tmp_path / "s"
    first = _scan_json(cfg)
    new = first["proposals"]["new"]
    assert first["proposals"]["ran"] and first["proposals"]["pending"] == len(new) >= 4
    book = load_rulebook(root / "state" / "rules")
    assert [r.id for r in book.in_state(RuleState.PROPOSED)] == [p["id"] for p in new]
    assert first["feedback"] == []  # nothing in the maps yet
    senders = [p for p in new if p["kind"] == "sender_domain"]
    assert len(senders) >= 4, new
    trial, active, rejected, on_ham = (p["id"] for p in senders[:4])
    key = {p["id"]: p["key"] for p in new}

    decisions = tmp_path / "decisions.txt"
    decisions.write_text(f"# the week's review\n{trial} trial\n{active} active\n"
                         f"{rejected} reject\n{on_ham} trial\n")
    _invoke(["review", "--decisions", str(decisions)], cfg)
    book = load_rulebook(root / "state" / "rules")
    assert book.get(trial).state is RuleState.TRIAL
    assert book.get(active).state is RuleState.ACTIVE
    assert book.get(rejected).state is RuleState.REJECTED
    assert book.get(on_ham).state is RuleState.TRIAL

    out = tmp_path / "maps"
    _invoke(["emit", "--out", str(out)], cfg)
    sender_map = (out / "sender_domain").read_text()
    assert f"{key[trial]} WARN trial rule {trial}\n" in sender_map
    assert f"{key[active]} REJECT 5.7.1 blocked by rule {active}\n" in sender_map
    assert f"rule {on_ham}\n" in sender_map and f"rule {rejected}" not in sender_map

    # Next week: the rules' lines in mail.log, the correspondent's message in the inbox.
    t = datetime.now(UTC).replace(microsecond=0)
    qid = "9F3E120C7A1"
    with (root / "mail.log").open("a") as f:
        f.write("\n".join(_next_week(t, active, key[active], trial, key[trial], on_ham,
                                     key[on_ham], qid)) + "\n")
    (root / "maildir" / "alice" / "new" / f"{int(t.timestamp())}.M1P7302.mx").write_text(
        _ham_message(t, key[on_ham], qid))
    second = _scan_json(cfg)
    assert second["scan"]["mail"][str(root / "maildir" / "alice")] == 1
    s = second["summary"]
    assert s["week"] == t.strftime("%G-W%V")
    assert s["rule_hits"] == {active: {"rejects": 3, "warns": 0},
                              trial: {"rejects": 0, "warns": 2},
                              on_ham: {"rejects": 0, "warns": 1}}
    assert s["ham_hits"] == {on_ham: 1}
    fb = {f["rule_id"]: f for f in second["feedback"]}
    assert set(fb) == {trial, active, on_ham}
    assert fb[active]["hits"] == 3 and fb[active]["flag"] == ""
    assert fb[trial]["hits"] == 2 and fb[trial]["promotable"] and fb[trial]["flag"] == \
        "promotable"
    assert fb[on_ham]["ham_hits"] == 1 and not fb[on_ham]["promotable"]
    assert fb[on_ham]["flag"] == "HAM"
    # The rejected proposal is not offered again (see also test_rejected_proposals_...).
    assert second["proposals"]["ran"]
    assert rejected not in [p["id"] for p in second["proposals"]["new"]
                            + second["proposals"]["renewed"]]
    assert load_rulebook(root / "state" / "rules").get(rejected).state is RuleState.REJECTED
    # The same week, read as text: the flagged rule is named in red words.
    res = _invoke(["scan", "--no-review"], cfg)
    assert f"RULE {on_ham} HIT HAM 1 TIME(S)" in res.stdout
    assert f"{trial}: trial passed" in res.stdout


def test_without_a_terminal_the_scan_never_prompts(tmp_path: Path) -> None:
    cfg = _copy_samples(tmp_path / "s")
    res = _invoke(["scan"], cfg, input="")  # CliRunner's stdin is not a terminal
    pending = len(load_rulebook(tmp_path / "s" / "state" / "rules").in_state(
        RuleState.PROPOSED))
    assert pending > 0
    assert f"{pending} proposal(s) wait for review" in res.stdout
    assert "triage review --decisions FILE" in res.stdout and "--approve-all" in res.stdout
    assert "[y/N]" not in res.stdout and "[t]rial" not in res.stdout
    res = _invoke(["scan", "--no-review"], cfg)
    assert "Nothing new since the last scan" in res.stdout
    assert f"{pending} proposal(s) wait for review" in res.stdout
    assert not (tmp_path / "s" / "state" / "maps").exists()


def test_scan_at_a_terminal_reviews_then_installs_after_confirmation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prompts, "stdin_is_terminal", lambda: True)
    cfg = _copy_samples(tmp_path / "s")
    maps = tmp_path / "s" / "state" / "maps"
    # trial, active, reject, then quit the review; refuse the installation
    res = _invoke(["scan"], cfg, input="t\nA\nr\nq\nn\n")
    book = load_rulebook(tmp_path / "s" / "state" / "rules")
    first, second, third = (r.id for r in list(book)[:3])
    assert [book.get(r).state for r in (first, second, third)] == [
        RuleState.TRIAL, RuleState.ACTIVE, RuleState.REJECTED]
    assert f"{first} trial" in res.stdout and "Install these maps" in res.stdout
    assert f"+ {book.get(second).key} REJECT 5.7.1 blocked by rule {second}" in res.stdout
    assert "Nothing installed" in res.stdout and not maps.exists()
    # Next run: nothing new; the review starts at the fourth proposal; install this time.
    res = _invoke(["scan"], cfg, input="q\ny\n")
    assert f"{list(book)[3].id} " in res.stdout  # its card
    assert "Installed 5 maps (2 rules)" in res.stdout
    text = "".join(p.read_text() for p in maps.iterdir() if p.is_file()
                   and not p.name.endswith(".db"))
    assert f"rule {first}" in text and f"rule {second}" in text and f"rule {third}" not in text
    res = _invoke(["scan"], cfg, input="q\n")
    assert "are up to date (2 rules)" in res.stdout


def test_rejected_proposals_come_back_only_when_their_evidence_grew(tmp_path: Path) -> None:
    cfg = load_config(_copy_samples(tmp_path / "s"))
    result = scan(cfg)
    assert result.proposals is not None and result.pending == len(result.proposals.new) > 2
    store, book = Store(cfg.state_dir), load_rulebook(cfg.rulebook_dir())
    no, pending = result.proposals.new[0].id, [r.id for r in result.proposals.new[1:]]
    book.set_state(no, RuleState.REJECTED, approver="test")
    again = propose_from_history(store, book, cfg)
    assert again.kept_out == [no] and not again.new and not again.renewed
    assert [r.id for r in again.refreshed] == pending  # same keys, same ids
    assert book.get(no).state is RuleState.REJECTED
    # Had it been rejected on much less evidence, it is offered again (same id).
    book.save(replace(book.get(no), evidence=Evidence(messages=1, days=1)))
    grown = propose_from_history(store, load_rulebook(cfg.rulebook_dir()), cfg)
    assert [r.id for r in grown.renewed] == [no] and not grown.new
    assert load_rulebook(cfg.rulebook_dir()).get(no).state is RuleState.PROPOSED


def test_review_edits_are_backtested_on_the_history(tmp_path: Path) -> None:
    cfg = load_config(_copy_samples(tmp_path / "s"))
    result = scan(cfg)
    assert result.proposals is not None
    retest = history_retest(Store(cfg.state_dir))
    rule = next(r for r in result.proposals.new if r.kind is RuleKind.SENDER_DOMAIN)
    assert retest(rule).spam_hits == rule.evidence.spam_hits > 0
    assert retest(rule).ham_hits == 0
    ham = Store(cfg.state_dir).read("mail").filter(pl.col("role") == "ham")
    domain = ham["envelope_sender"].drop_nulls().str.split("@").list.last().mode()[0]
    edited = retest(replace(rule, key=domain))
    assert edited.ham_hits > 0 and edited.spam_hits < rule.evidence.spam_hits
