"""The rulebook: round trip of rule files, file:line errors, stable ids, backups, states, and
when a rejected proposal may come back."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from triage.cli.app import app
from triage.emit.postfix import pcre_literal
from triage.errors import RuleError
from triage.model import Action, Evidence, Rule, RuleKind, RuleState
from triage.rulebook import (
    RuleFileError,
    load_rulebook,
    promote_trials,
    rule_from_toml,
    rule_to_toml,
    save_rules,
    should_repropose,
)

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
NASTY = ['quote " and \\ backslash', "new\nline", "tab\there", "\x00nul\x1f", "ünïcödé ✓",
         "'''", '"""', "[section]", "key = 1", "\udcff"]


def _rule(**kw: object) -> Rule:
    base: dict[str, object] = dict(
        id="R0042", kind=RuleKind.HELO, key=pcre_literal("spam bot"), state=RuleState.TRIAL,
        action=Action.reject("spam from this host"),
        evidence=Evidence(campaign="C7", spam_hits=12, ham_hits=0, messages=9, days=4,
                          first_seen=T0, last_seen=T0, message_ids=("<a@b>",),
                          subjects=tuple(NASTY), senders=("x@spam.example",),
                          helos=("spam bot",), ips=("192.0.2.7",)),
        approver="alice", created=T0, approved=T0, expires=T0, note="from week 2026-W02")
    base.update(kw)
    return Rule(**base)  # type: ignore[arg-type]


def test_round_trip_with_hostile_strings(tmp_path: Path) -> None:
    rule = _rule()
    text = rule_to_toml(rule)
    tomllib.loads(text)  # valid TOML
    back = rule_from_toml(text, tmp_path / "R0042.toml")
    # a lone surrogate (an undecodable byte) has no TOML form: it comes back as U+FFFD
    assert back.evidence.subjects == (*rule.evidence.subjects[:-1], "\ufffd")
    assert back == rule.__class__(**{**rule.__dict__, "evidence": back.evidence})
    assert back.evidence.first_seen == T0 and back.action == rule.action


def test_files_stable_and_ids_never_reused(tmp_path: Path) -> None:
    d = tmp_path / "rules"
    book = load_rulebook(d)
    a = book.propose(RuleKind.CLIENT_CIDR, "192.0.2.0/24", now=T0)
    b = book.propose(RuleKind.SENDER_DOMAIN, "spam.example", now=T0)
    assert (a.id, b.id) == ("R0001", "R0002")
    assert book.propose(RuleKind.SENDER_DOMAIN, "SPAM.example", now=T0).id == "R0002"
    first = (d / "R0001.toml").read_text()
    save_rules(d, [a])  # saving the same rule again gives the same bytes
    assert (d / "R0001.toml").read_text() == first
    (d / "R0002.toml").unlink()
    book = load_rulebook(d)
    assert book.propose(RuleKind.HELO, "^x$", now=T0).id == "R0003"


def test_state_changes_are_saved_with_backup(tmp_path: Path) -> None:
    d = tmp_path / "rules"
    book = load_rulebook(d)
    r = book.propose(RuleKind.CLIENT_CIDR, "192.0.2.0/24", now=T0)
    book.set_state(r.id, RuleState.TRIAL, approver="bob", now=T0)
    assert 'state = "proposed"' in (d / ".backup" / "R0001.toml").read_text()
    again = load_rulebook(d).get("R0001")
    assert again.state is RuleState.TRIAL and again.approver == "bob" and again.approved == T0
    with pytest.raises(RuleError, match="cannot become"):
        book.set_state(r.id, RuleState.PROPOSED)
    assert [x.id for x in load_rulebook(d).emitted()] == ["R0001"]


def test_duplicate_key_refused(tmp_path: Path) -> None:
    d = tmp_path / "rules"
    book = load_rulebook(d)
    book.propose(RuleKind.SENDER_DOMAIN, "spam.example")
    with pytest.raises(RuleError, match="already has"):
        book.save(Rule("R0009", RuleKind.SENDER_DOMAIN, "spam.example"))
    (d / "R0009.toml").write_text(rule_to_toml(Rule("R0009", RuleKind.SENDER_DOMAIN,
                                                    "spam.example")))
    with pytest.raises(RuleFileError) as exc:
        load_rulebook(d)
    assert exc.value.file and exc.value.file.endswith("R0009.toml") and exc.value.line == 4


@pytest.mark.parametrize(("change", "line", "message"), [
    (('kind = "helo"', 'kind = "ip"'), 3, "unknown kind"),
    (('state = "trial"', 'state = "on"'), 5, "unknown state"),
    (('key = "^spam\\\\x20bot$"', 'key = "a b"'), 4, "white space"),
    (('id = "R0042"', 'id = "R0043"'), 2, "in a file named"),
    (("spam_hits = 12", "spam_hits = -1"), 18, "count"),
    (("spam_hits = 12", "spam_hits = 12\nbogus = 1"), 19, "unknown field"),
    (('verb = "REJECT"', 'verb = "OK"'), 13, "unknown verb"),
    (('text = "spam from this host"', 'text = "x\\n0.0.0.0/0 OK"'), 15, "plain printable"),
    (("created = 2026-01-05T10:00:00Z", "created = 2026-01-05T10:00:00"), 7, "zone"),
    (("[action]", "[action"), 12, "not valid TOML"),
    # a hand-edited file may hold any TOML type where a string or count is expected
    (('status = "5.7.1"', "status = 5"), 14, r"'status' in \[action\] must be a string"),
    (('text = "spam from this host"', 'text = ["spam"]'), 15, "not an array"),
    (('text = "spam from this host"', "text = {a = 1}"), 15, "not a table"),
    (('verb = "REJECT"', "verb = 1"), 13, "'verb' in \\[action\\] must be a string"),
    (('status = "5.7.1"', 'status = "2.0.0"'), 14, "enhanced status"),
    (('[action]\nverb = "REJECT"\nstatus = "5.7.1"\ntext = "spam from this host"',
      "action = 5"), 12, r"\[action\] must be a table"),
    (('[action]\nverb = "REJECT"\nstatus = "5.7.1"\ntext = "spam from this host"\n\n'
      "[evidence]\nspam_hits = 12\nham_hits = 0\noverlap_active = 0\nmessages = 0\n"
      "days = 0", "evidence = [1]"), 12, r"\[evidence\] must be a table"),
    (("spam_hits = 12", "spam_hits = 12\ncampaign = 5"), 19, "campaign must be a string"),
    (("spam_hits = 12", "spam_hits = 12\nips = [1]"), 19, "list of strings"),
    (("spam_hits = 12", 'spam_hits = 12\nhelos = "x"'), 19, "list of strings"),
    (("spam_hits = 12", 'spam_hits = "12"'), 18, "count"),
    (("spam_hits = 12", "spam_hits = true"), 18, "count"),
    (("spam_hits = 12", 'spam_hits = 12\nfirst_seen = "x"'), 19, "zone"),
    (('kind = "helo"', "kind = 5"), 3, "'kind' must be a string"),
    (('approver = "alice"', "approver = [1]"), 6, "'approver' must be a string"),
    (('key = "^spam\\\\x20bot$"', 'key = "^a{4294967296}$"'), 4, "bad helo regex"),
])
def test_errors_name_file_and_line(tmp_path: Path, change: tuple[str, str], line: int,
                                   message: str) -> None:
    text = rule_to_toml(_rule(evidence=Evidence(spam_hits=12)))
    assert change[0] in text, text
    path = tmp_path / "R0042.toml"
    path.write_text(text.replace(change[0], change[1]))
    with pytest.raises(RuleFileError, match=message) as exc:
        load_rulebook(tmp_path)
    assert (exc.value.file, exc.value.line) == (str(path), line), text
    assert str(exc.value).startswith(f"{path}:{line}: ")


def test_repropose_only_when_evidence_grew() -> None:
    old = Evidence(messages=10, days=2)
    assert not should_repropose(old, Evidence(messages=14, days=3))
    assert should_repropose(old, Evidence(messages=20, days=2))
    assert should_repropose(old, Evidence(messages=11, days=4))
    assert not should_repropose(old, Evidence(messages=100, days=9, ham_hits=1))
    assert not should_repropose(Evidence(messages=1), Evidence(messages=3))


def test_rules_commands(tmp_path: Path) -> None:
    cfg = tmp_path / "triage.toml"
    cfg.write_text('state_dir = "state"\npostfix_dir = "maps"\n')
    d = tmp_path / "state" / "rules"
    save_rules(d, [_rule(), Rule("R0043", RuleKind.SENDER_DOMAIN, "spam.example",
                                 state=RuleState.ACTIVE)])
    runner = CliRunner()
    res = runner.invoke(app, ["rules", "list", "--json", "--state", "active", "-c", str(cfg)])
    assert res.exit_code == 0, res.output
    assert '"id": "R0043"' in res.output and "R0042" not in res.output
    res = runner.invoke(app, ["rules", "show", "R0042", "-c", str(cfg)])
    assert "# map line: /^spam\\x20bot$/ WARN trial rule R0042" in res.output
    res = runner.invoke(app, ["rules", "retire", "R0043", "-c", str(cfg)])
    assert res.exit_code == 0 and load_rulebook(d).get("R0043").state is RuleState.RETIRED
    res = runner.invoke(app, ["rules", "show", "R0099", "-c", str(cfg)])
    assert res.exit_code != 0


def test_promote_trials_only_when_the_log_passed_them(tmp_path: Path) -> None:
    from triage.feedback import RuleFeedback

    d = tmp_path / "rules"
    save_rules(d, [Rule(f"R000{i}", RuleKind.SENDER_DOMAIN, f"s{i}.example", state=st)
                   for i, st in enumerate([RuleState.TRIAL, RuleState.TRIAL, RuleState.TRIAL,
                                           RuleState.ACTIVE], 1)])
    fb = [RuleFeedback("R0001", "trial", 5, T0, 0, True, False),
          RuleFeedback("R0002", "trial", 5, T0, 1, False, False),   # hit ham
          RuleFeedback("R0003", "trial", 0, None, 0, False, False),  # not long enough
          RuleFeedback("R0004", "active", 9, T0, 0, False, False)]
    book = load_rulebook(d)
    assert [r.id for r in promote_trials(book, fb, now=T0)] == ["R0001"]
    states = {r.id: r.state for r in load_rulebook(d)}
    assert states == {"R0001": RuleState.ACTIVE, "R0002": RuleState.TRIAL,
                      "R0003": RuleState.TRIAL, "R0004": RuleState.ACTIVE}
    assert "trial passed" in load_rulebook(d).get("R0001").note


def test_wrong_types_in_a_rule_file_are_one_line_errors(tmp_path: Path) -> None:
    """`triage rules list` on a rule file with ``status = 5``: exit 1 and one line naming
    the file and line, not a TypeError traceback."""
    import subprocess
    import sys

    cfg = tmp_path / "triage.toml"
    cfg.write_text('state_dir = "state"\npostfix_dir = "maps"\n')
    d = tmp_path / "state" / "rules"
    save_rules(d, [Rule("R0001", RuleKind.HELO, "^x$", state=RuleState.ACTIVE)])
    path = d / "R0001.toml"
    text = path.read_text()
    assert 'status = "5.7.1"' in text
    path.write_text(text.replace('status = "5.7.1"', "status = 5"))
    line = next(no for no, ln in enumerate(path.read_text().splitlines(), 1)
                if ln.startswith("status"))
    res = subprocess.run([sys.executable, "-m", "triage.cli", "rules", "list", "-c", str(cfg)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f"triage: error: {path}:{line}: field 'status' in [action] must be a string, "
        "not a number"]


def test_corrupt_next_id_is_a_rule_file_error(tmp_path: Path) -> None:
    d = tmp_path / "rules"
    d.mkdir()
    (d / "next-id").write_text("seven\n")
    with pytest.raises(RuleFileError, match="next rule number") as exc:
        load_rulebook(d).propose(RuleKind.HELO, "^x$", now=T0)
    assert exc.value.file == str(d / "next-id")
