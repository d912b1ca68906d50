"""End to end with the real Postfix bench: rules from the rulebook, `triage emit --install
--reload` into the bench, then XCLIENT replays. A covered session gets a 5xx naming its rule,
ham is accepted, a trial (WARN) rule logs and accepts; mail.log, read back with
triage.read_maillog, has the rule ids; and triage's matcher predicted every outcome."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from postfixbench import Bench
from postfixbench.replay import ReplayMessage, TrustedHop, replay
from typer.testing import CliRunner

import triage
from triage.cli.app import app
from triage.emit.postfix import MapSet, pcre_literal, snippet
from triage.model import Rule, RuleKind, RuleState
from triage.rulebook import save_rules

pytestmark = pytest.mark.postfix

A, T = RuleState.ACTIVE, RuleState.TRIAL
RULES = [
    Rule("R0101", RuleKind.CLIENT_CIDR, "203.0.113.0/25", state=A),
    Rule("R0102", RuleKind.HELO, pcre_literal("trial-helo.example.com"), state=T),
    Rule("R0103", RuleKind.SENDER_DOMAIN, "blocked-sender.example", state=A),
    Rule("R0104", RuleKind.HEADER, r"^Subject:.*cheap\s+pills", state=A),
    Rule("R0105", RuleKind.CLIENT_NAME, r"^dyn-\d+\.isp\.example$", state=A),
]
RESTRICTIONS = ("smtpd_client_restrictions", "smtpd_helo_restrictions",
                "smtpd_sender_restrictions", "header_checks")


@pytest.fixture
def triage_maps(postfix_bench: Bench, tmp_path: Path) -> Iterator[Path]:
    """The bench's main.cf with triage's maps wired in after its own checks (the bench's
    other tests keep working), restored afterwards."""
    maps = postfix_bench.paths.pf / "triage"
    saved = {name: postfix_bench.postconf_value(name) for name in RESTRICTIONS}
    wired = {}
    for line in snippet(maps).replace(",\n    ", ", ").splitlines():
        if "=" in line and not line.startswith("#"):
            name, value = (x.strip() for x in line.split("=", 1))
            # keep the bench's own list, add triage's checks (not its permits) at the end
            ours = [w.strip() for w in value.split(",") if not w.strip().startswith("permit_")]
            wired[name] = ", ".join([saved[name], *ours]) if name != "header_checks" else \
                f"{saved[name]}, {value}"
    postfix_bench.postconf(*(f"{k}={v}" for k, v in wired.items()))
    yield maps
    postfix_bench.postconf(*(f"{k}={v}" for k, v in saved.items()))
    postfix_bench.reload()


def _message(ip: str, name: str, helo: str, sender: str, subject: str) -> ReplayMessage:
    mid = f"{uuid.uuid4().hex}@example.com"
    data = (f"From: <{sender}>\nTo: alice@example.org\nSubject: {subject}\n"
            f"Message-ID: <{mid}>\nDate: Mon, 05 Jan 2026 10:00:00 +0000\n\nHello.\n").encode()
    return ReplayMessage(mid, sender, TrustedHop(helo, name, ip, "mx.example.org", None), data)


# (session, expected rule id of a refusal or None, expected warning rule id or None)
SESSIONS = [
    ("covered-cidr", ("203.0.113.7", "unknown", "h.example.net", "a@example.com", "hi"),
     "R0101", None),
    ("ham", ("192.0.2.10", "mail.example.com", "mail.example.com", "sender@example.com",
             "quarterly report"), None, None),
    ("outside-cidr", ("203.0.113.200", "unknown", "h.example.net", "a@unlisted.example", "hi"),
     None, None),
    ("warn-helo", ("192.0.2.10", "mail.example.com", "trial-helo.example.com",
                   "sender@example.com", "minutes"), None, "R0102"),
    ("sender", ("192.0.2.10", "mail.example.com", "mail.example.com",
                "x@news.blocked-sender.example", "offer"), "R0103", None),
    ("header", ("192.0.2.10", "mail.example.com", "mail.example.com", "sender@example.com",
                "Cheap   pills today"), "R0104", None),
    ("client-name", ("198.51.100.77", "dyn-5.isp.example", "dyn-5.isp.example",
                     "a@example.com", "hi"), "R0105", None),
]


def test_emitted_maps_enforced_by_postfix(postfix_bench: Bench, triage_maps: Path,
                                          tmp_path: Path) -> None:
    book = tmp_path / "rules"
    save_rules(book, RULES)
    cfg = tmp_path / "triage.toml"
    cfg.write_text(f'rules_dir = "{book}"\npostfix_dir = "{triage_maps}"\n'
                   f'postfix_config_dir = "{postfix_bench.paths.pf}"\n'
                   f'postfix_command = "{postfix_bench.postfix_command()}"\n')
    res = CliRunner().invoke(app, ["emit", "--install", "--reload", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert (triage_maps / "sender_domain.db").exists()

    maps = MapSet.from_dir(triage_maps)
    off = postfix_bench.log_offset()
    for label, (ip, name, helo, sender, subject), refused_by, warned_by in SESSIONS:
        msg = _message(ip, name, helo, sender, subject)
        predicted = maps.check(ip, name, helo, sender, [f"Subject: {subject}"])
        assert predicted.rule_id == refused_by, label
        assert [w.rule_id for w in predicted.warnings] == ([warned_by] if warned_by else []), \
            label
        result = replay(postfix_bench, msg, ["alice@example.org"])
        if refused_by:
            assert not result.accepted and 500 <= result.code < 600, (label, result)
            assert f"rule {refused_by}" in result.reply, (label, result)
        else:
            assert result.accepted, (label, result)
    postfix_bench.wait_for_log(r"reject: header Subject: .*rule R0104", since=off)
    postfix_bench.wait_for_log(r"Client host rejected: blocked by rule R0105", since=off)
    postfix_bench.wait_idle()

    log = tmp_path / "mail.log"
    log.write_text(postfix_bench.log_text(off))
    rejects = triage.read_maillog([log]).rejects
    got = {(str(a), str(r)) for a, r in zip(rejects["action"], rejects["rule_id"], strict=True)
           if isinstance(r, str)}
    assert got == {("reject", "R0101"), ("reject", "R0103"), ("reject", "R0104"),
                   ("reject", "R0105"), ("warn", "R0102")}, rejects.to_string()


SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def _header_lines(data: bytes) -> list[str]:
    """The message's logical header lines as header_checks sees them (folds kept)."""
    head = data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8", "surrogateescape")
    lines: list[str] = []
    for line in head.split("\n"):
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += "\n" + line
        elif line:
            lines.append(line)
    return lines


def test_sample_proposals_reviewed_emitted_and_enforced(postfix_bench: Bench, triage_maps: Path,
                                                        tmp_path: Path) -> None:
    """Issue 6 end to end: proposals from the samples, scripted review (a few as trial, the
    rest active), emit + install + reload into the bench, then every sample message replayed
    with XCLIENT: Postfix refuses exactly what triage's matcher predicts, with the rule id;
    every ham message is accepted; trial rules log a warning and accept."""
    from postfixbench.replay import load_message

    from triage.propose import propose

    boxes = SAMPLES / "maildir"
    spam = triage.read_mailboxes([boxes / u / ".Spam" for u in ("alice", "bob")], role="spam",
                                 my_hostnames=["mx.example.org"])
    ham = triage.read_mailboxes([boxes / u for u in ("alice", "bob")], role="ham",
                                my_hostnames=["mx.example.org"])
    rules = propose(spam, ham).rules
    assert len(rules) >= 5
    book_dir = tmp_path / "rules"
    from triage.rulebook import load_rulebook

    book = load_rulebook(book_dir)
    ids = [book.propose(r.kind, r.key, evidence=r.evidence).id for r in rules]
    decisions = tmp_path / "decisions.txt"
    trial = set(ids[:3])
    decisions.write_text("".join(f"{rid} {'trial' if rid in trial else 'active'}\n"
                                 for rid in ids))
    cfg = tmp_path / "triage.toml"
    cfg.write_text(f'rules_dir = "{book_dir}"\npostfix_dir = "{triage_maps}"\n'
                   f'postfix_config_dir = "{postfix_bench.paths.pf}"\n'
                   f'postfix_command = "{postfix_bench.postfix_command()}"\n')
    runner = CliRunner()
    res = runner.invoke(app, ["review", "--decisions", str(decisions), "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["emit", "--install", "--reload", "--config", str(cfg)])
    assert res.exit_code == 0, res.output

    maps = MapSet.from_dir(triage_maps)
    off = postfix_bench.log_offset()
    refused: dict[str, int] = {}
    warned: set[str] = set()
    n = {"spam": 0, "ham": 0}
    for label in ("spam", "ham"):
        dirs = [boxes / u / (".Spam" if label == "spam" else "") for u in ("alice", "bob")]
        for path in sorted(p for d in dirs for sub in ("new", "cur") for p in (d / sub).iterdir()):
            msg = load_message(path, label=label)
            if msg is None:
                continue
            hop = msg.hop
            predicted = maps.check(hop.client_ip, hop.client_name, hop.helo, msg.sender,
                                   _header_lines(msg.data))
            result = replay(postfix_bench, msg, ["alice@example.org"])
            n[label] += 1
            warned.update(w.rule_id or "" for w in predicted.warnings)
            if predicted.refused:
                assert label == "spam", (path, predicted)
                assert 500 <= result.code < 600 and f"rule {predicted.rule_id}" in result.reply, \
                    (path, predicted, result)
                refused[str(predicted.rule_id)] = refused.get(str(predicted.rule_id), 0) + 1
            elif label == "ham":
                assert result.accepted, (path, result)
            else:  # uncovered spam: whatever Postfix says, it is not one of our rules
                assert not any(f"rule {rid}" in result.reply for rid in ids), (path, result)
    assert n["ham"] > 500 and n["spam"] > 150
    active = set(ids) - trial
    assert set(refused) <= active and len(refused) >= 3, refused
    assert sum(refused.values()) >= 20
    postfix_bench.wait_idle()
    log = tmp_path / "mail.log"
    log.write_text(postfix_bench.log_text(off))
    rejects = triage.read_maillog([log]).rejects
    ours = rejects[rejects["rule_id"].isin(ids)]
    assert set(ours.loc[ours["action"] == "reject", "rule_id"]) == set(refused)
    # smtpd logs a WARN as "warn", cleanup (header_checks) as "warning"
    from triage.feedback import WARN_ACTIONS

    assert set(ours.loc[ours["action"].isin(WARN_ACTIONS), "rule_id"]) == warned & trial
