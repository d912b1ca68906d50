"""Review findings of the audit: an edited key keeps only the evidence samples it matches (so
the emitter's check passes), and keys, map lines and spam evidence are shown as written, never
read as rich markup."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from triage.cli import prompts, render
from triage.cli.app import app
from triage.cli.review_cmd import _render, sample_retest
from triage.emit.install import check_maps, render_maps
from triage.emit.postfix import pcre_literal
from triage.model import Evidence, Rule, RuleKind, RuleState
from triage.review import (
    Card,
    Choice,
    ReviewSession,
    keep_matching_samples,
    matching_samples,
    sample_field,
)
from triage.rulebook import load_rulebook, save_rules

P = RuleState.PROPOSED
CIDR = Rule("R0001", RuleKind.CLIENT_CIDR, "192.0.2.0/24", state=P,
            evidence=Evidence(spam_hits=2, messages=2, ips=("192.0.2.7", "192.0.2.200")))
HELO = Rule("R0002", RuleKind.HELO, r"^bot\d+\.example\.net$", state=P,
            evidence=Evidence(spam_hits=2, helos=("bot1.example.net", "bot22.example.net")))
# Spammer-controlled text that rich would read as markup (or crash on).
HOSTILE = ("Win big [/] now", "[bold]free[/bold] pills", r"\[1.2.3.4]", ":thumbs_up: deal")


def _book(tmp_path: Path, *rules: Rule) -> Path:
    d = tmp_path / "state" / "rules"
    save_rules(d, rules)
    (tmp_path / "triage.toml").write_text('state_dir = "state"\npostfix_dir = "maps"\n')
    return d


# -- bug 1: an edit keeps only the samples the new key matches --------------------------------
def test_narrowed_network_drops_the_samples_outside_it(tmp_path: Path) -> None:
    d = _book(tmp_path, CIDR)
    session = ReviewSession(load_rulebook(d), "alice", retest=sample_retest)
    out = session.decide(Choice.EDIT, "192.0.2.0/25")
    assert out.saved
    assert "dropped 1 of 2 sample IPs" in out.message
    rule = load_rulebook(d).get("R0001")
    assert rule.key == "192.0.2.0/25"
    assert rule.evidence.ips == ("192.0.2.7",)
    assert rule.evidence.spam_hits == 1
    session.decide(Choice.TRIAL)
    rules = load_rulebook(d).emitted()
    assert check_maps(render_maps(rules), rules) == []  # the emitter's own check passes


def test_edit_that_matches_no_sample_says_so(tmp_path: Path) -> None:
    d = _book(tmp_path, CIDR, HELO)
    session = ReviewSession(load_rulebook(d), "alice", retest=sample_retest)
    out = session.decide(Choice.EDIT, "192.0.2.128/26")  # neither .7 nor .200
    assert out.saved and "none of the 2 sample IPs match the new key" in out.message
    assert session.current().note == out.message  # type: ignore[union-attr]
    assert load_rulebook(d).get("R0001").evidence.ips == ()
    session.decide(Choice.SKIP)
    out = session.decide(Choice.EDIT, pcre_literal("other.example.org"))
    assert out.saved and "none of the 2 sample HELOs" in out.message
    assert load_rulebook(d).get("R0002").evidence.helos == ()


def test_any_retest_is_followed_by_the_sample_filter(tmp_path: Path) -> None:
    """`triage scan` passes the history backtest, which updates only the counts."""
    d = _book(tmp_path, HELO)
    session = ReviewSession(load_rulebook(d), "alice",
                            retest=lambda r: replace(r.evidence, spam_hits=40))
    out = session.decide(Choice.EDIT, r"^bot\d\.example\.net$")
    assert out.saved and "dropped 1 of 2 sample HELOs" in out.message
    rule = load_rulebook(d).get("R0002")
    assert rule.evidence.helos == ("bot1.example.net",) and rule.evidence.spam_hits == 40
    session.decide(Choice.ACTIVE)
    rules = load_rulebook(d).emitted()
    assert check_maps(render_maps(rules), rules) == []


def test_unchanged_samples_leave_no_note() -> None:
    assert keep_matching_samples(CIDR) == (CIDR.evidence, "")


@pytest.mark.parametrize(("rule", "field", "values", "kept"), [
    (Rule("R1", RuleKind.SENDER_DOMAIN, "mx.spam.example"), "senders",
     ("a@mx.spam.example", "b@spam.example", "c@x.mx.spam.example"),
     ("a@mx.spam.example", "c@x.mx.spam.example")),
    (Rule("R1", RuleKind.HEADER, r"^Subject:\s*cheap\b"), "subjects",
     ("cheap pills", "CHEAP watches", "hello"), ("cheap pills", "CHEAP watches")),
    (Rule("R1", RuleKind.HEADER, r"^Message-ID:\s*<[0-9a-f]{8}@bulk\.example>"),
     "message_ids", ("deadbeef@bulk.example", "x@bulk.example"), ("deadbeef@bulk.example",)),
    (Rule("R1", RuleKind.CLIENT_CIDR, "2001:db8::/64"), "ips",
     ("2001:db8::1", "2001:db8:1::1", "192.0.2.1"), ("2001:db8::1",)),
])
def test_samples_matched_as_postfix_looks_them_up(rule: Rule, field: str,
                                                  values: tuple[str, ...],
                                                  kept: tuple[str, ...]) -> None:
    assert sample_field(rule) == field
    assert matching_samples(rule, values) == kept


def test_keys_on_fields_without_samples_keep_the_evidence() -> None:
    """A From: header or rDNS key is not matched against subjects or HELOs: kept as is."""
    ev = Evidence(subjects=("hello",), helos=("x.example",))
    for rule in (Rule("R1", RuleKind.HEADER, r"^From:.*@spam\.example", evidence=ev),
                 Rule("R1", RuleKind.CLIENT_NAME, r"^dyn\d+\.isp\.example$", evidence=ev)):
        assert sample_field(rule) is None
        assert keep_matching_samples(rule) == (ev, "")


def test_scripted_edit_then_emit_writes_the_maps(tmp_path: Path) -> None:
    """The auditor's reproducer: `triage review --decisions` narrows /24 to /25, then
    `triage emit` must write the maps instead of refusing them."""
    _book(tmp_path, CIDR)
    cfg = str(tmp_path / "triage.toml")
    dec = tmp_path / "decisions"
    dec.write_text("R0001 edit 192.0.2.0/25\nR0001 trial\n")
    runner = CliRunner()
    res = runner.invoke(app, ["review", "--decisions", str(dec), "-c", cfg])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["emit", "-c", cfg, "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "192.0.2.0/25 WARN trial rule R0001" in (tmp_path / "out" / "client.cidr").read_text()


# -- bug 2: data is never rich markup ---------------------------------------------------------
def _card(rule: Rule, note: str = "") -> Card:
    from triage.emit.postfix import render_line

    return Card(rule, render_line(replace(rule, state=RuleState.TRIAL)),
                render_line(replace(rule, state=RuleState.ACTIVE)), 1, 1, note)


def test_review_card_shows_keys_and_evidence_as_written() -> None:
    rule = Rule("R0001", RuleKind.CLIENT_NAME, r"^[a-z0-9]+\.pool\.spam\.example$", state=P,
                evidence=Evidence(campaign="[red]C1", subjects=HOSTILE,
                                  senders=("[/]@spam.example",), helos=(r"\[1.2",)))
    console = Console(record=True, width=300)
    _render(console, _card(rule, note="key changed to '[/]'"))
    out = console.export_text()
    assert r"/^[a-z0-9]+\.pool\.spam\.example$/ WARN trial rule R0001" in out
    for text in HOSTILE:
        assert repr(text) in out
    assert "'[/]@spam.example'" in out and repr(r"\[1.2") in out
    assert "campaign [red]C1" in out and "key changed to '[/]'" in out


def test_review_prompt_messages_are_not_markup(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The edit's outcome line quotes the key the person typed."""
    rule = Rule("R0001", RuleKind.HELO, r"^x\.example$", state=P,
                evidence=Evidence(subjects=("[/]",), helos=("x.example",)))
    d = _book(tmp_path, rule)
    monkeypatch.setattr(prompts, "stdin_is_terminal", lambda: True)
    res = CliRunner().invoke(app, ["review", "-c", str(tmp_path / "triage.toml")],
                             input="e\n^[/]x$\nq\n", env={"COLUMNS": "250"})
    assert res.exit_code == 0, (res.output, res.exception)
    assert "key changed to '^[/]x$'" in res.output
    assert "none of the 1 sample HELOs match the new key" in res.output
    assert "/^[\\/]x$/ WARN trial rule R0001" in res.output  # the card after the edit
    assert load_rulebook(d).get("R0001").key == "^[/]x$"


def test_rules_list_shows_keys_as_written(tmp_path: Path) -> None:
    keys = [r"^[a-z0-9]+\.pool\.spam\.example$", r"^[bold]x\.example$",
            r"^\[1\.2\.3\.4\]$", "^[/]x$"]
    _book(tmp_path, *(Rule(f"R000{i}", RuleKind.HELO, k, state=RuleState.TRIAL,
                           approver="[i]bob")
                      for i, k in enumerate(keys, 1)))
    res = CliRunner().invoke(app, ["rules", "list", "-c", str(tmp_path / "triage.toml")],
                             env={"COLUMNS": "250"})
    assert res.exit_code == 0, (res.output, res.exception)
    for k in keys:
        assert f" {k} " in res.output
    assert "[i]bob" in res.output


def test_explain_shows_the_log_line_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    console = Console(record=True, width=300)
    monkeypatch.setattr(render, "console", console)
    line = "postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[192.0.2.1]: helo=<[/]x[bold]>"
    render.render_explain({"line": line, "program": "postfix/smtpd", "kind": None,
                           "candidate_kinds": ["reject"], "fields": {"helo": "[/]x[bold]"},
                           "unparsed_reason": "[/] no pattern", "note": ":smile:"})
    out = console.export_text()
    assert line in out and "'[/]x[bold]'" in out and "[/] no pattern" in out
    assert ":smile:" in out and "not an event" in out


def test_edit_with_a_regex_re_cannot_build_is_refused(tmp_path: Path) -> None:
    """re.compile raises OverflowError, not re.error, for a huge repeat count."""
    d = _book(tmp_path, HELO)
    session = ReviewSession(load_rulebook(d), "alice", retest=sample_retest)
    out = session.decide(Choice.EDIT, "^bot{4294967296}$")
    assert not out.saved and "bad helo regex" in out.message
    assert load_rulebook(d).get("R0002").key == HELO.key
