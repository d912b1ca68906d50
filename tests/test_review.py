"""`triage review`: the state machine, scripted decisions, prompts through CliRunner, and a
review killed mid-way that keeps every decision made before the kill."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from triage.cli import prompts
from triage.cli.app import app
from triage.emit.postfix import pcre_literal
from triage.errors import RuleError
from triage.model import Evidence, Rule, RuleKind, RuleState
from triage.review import Choice, ReviewSession, apply_decisions, parse_decisions
from triage.rulebook import load_rulebook, save_rules

P = RuleState.PROPOSED


def proposals() -> list[Rule]:
    return [
        Rule("R0001", RuleKind.CLIENT_CIDR, "192.0.2.0/24", state=P,
             evidence=Evidence(campaign="C1", spam_hits=9, messages=9, days=3,
                               ips=("192.0.2.7", "192.0.2.200"))),
        Rule("R0002", RuleKind.SENDER_DOMAIN, "spam.example", state=P,
             evidence=Evidence(spam_hits=4, messages=4, days=2)),
        Rule("R0003", RuleKind.HELO, pcre_literal("bot.example.net"), state=P,
             evidence=Evidence(spam_hits=5, helos=("bot.example.net",))),
        Rule("R0004", RuleKind.HEADER, r"^Subject:.*pills", state=P,
             evidence=Evidence(spam_hits=3)),
    ]


@pytest.fixture
def book_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state" / "rules"
    save_rules(d, proposals())
    (tmp_path / "triage.toml").write_text('state_dir = "state"\n')
    return d


def _states(d: Path) -> dict[str, str]:
    return {r.id: str(r.state) for r in load_rulebook(d)}


def test_state_machine_saves_each_decision(book_dir: Path) -> None:
    ham_of = {"192.0.2.0/25": 1}
    session = ReviewSession(load_rulebook(book_dir), "alice",
                            retest=lambda r: Evidence(spam_hits=7, ham_hits=ham_of.get(r.key, 0)))
    card = session.current()
    assert card is not None and card.position == 1 and card.total == 4
    assert card.trial_line == "192.0.2.0/24 WARN trial rule R0001"
    assert card.active_line == "192.0.2.0/24 REJECT 5.7.1 blocked by rule R0001"
    out = session.decide(Choice.EDIT, "192.0.2.0/25")  # hits ham: not saved
    assert not out.saved and load_rulebook(book_dir).get("R0001").key == "192.0.2.0/24"
    out = session.decide(Choice.EDIT, "192.0.2.0/26")
    assert out.saved and load_rulebook(book_dir).get("R0001").key == "192.0.2.0/26"
    assert session.current().rule.id == "R0001"  # type: ignore[union-attr]
    session.decide(Choice.ACTIVE)
    assert _states(book_dir)["R0001"] == "active"  # on disk at once
    session.decide(Choice.REJECT)
    session.decide(Choice.SKIP)
    assert session.decide(Choice.HELP).saved is False
    session.decide(Choice.QUIT)
    assert session.current() is None
    assert _states(book_dir) == {"R0001": "active", "R0002": "rejected", "R0003": "proposed",
                                 "R0004": "proposed"}
    assert load_rulebook(book_dir).get("R0001").approver == "alice"


def test_decisions_file_and_errors(book_dir: Path, tmp_path: Path) -> None:
    text = "# week 2\nR0003 reject\nR0001 edit 192.0.2.0/25\nR0001 active\nR0004 trial\n"
    session = ReviewSession(load_rulebook(book_dir), "bob")
    apply_decisions(session, parse_decisions(text))
    assert _states(book_dir) == {"R0001": "active", "R0002": "proposed", "R0003": "rejected",
                                 "R0004": "trial"}
    assert load_rulebook(book_dir).get("R0001").key == "192.0.2.0/25"
    with pytest.raises(RuleError) as exc:
        parse_decisions("R0001 trial\nR0002 maybe\n", "d.txt")
    assert (exc.value.file, exc.value.line) == ("d.txt", 2)
    with pytest.raises(RuleError, match="not a pending"):
        apply_decisions(session, [("R0003", Choice.TRIAL, "")])


def test_approve_all_leaves_ham_hitters_pending(tmp_path: Path) -> None:
    d = tmp_path / "rules"
    rules = proposals()
    rules[1] = Rule("R0002", RuleKind.SENDER_DOMAIN, "spam.example", state=P,
                    evidence=Evidence(spam_hits=4, ham_hits=1))
    save_rules(d, rules)
    ReviewSession(load_rulebook(d)).approve_all()
    assert _states(d) == {"R0001": "trial", "R0002": "proposed", "R0003": "trial",
                          "R0004": "trial"}


def test_cli_without_terminal_refuses_to_prompt(book_dir: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["review", "-c", str(tmp_path / "triage.toml")])
    assert res.exit_code == 1 and "--decisions" in str(res.exception)
    assert _states(book_dir)["R0001"] == "proposed"


def test_cli_prompts(book_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prompts, "stdin_is_terminal", lambda: True)
    # R0001: edit then approve (Enter = trial); R0002 reject; R0003 skip; R0004: help, quit
    answers = "e\n192.0.2.0/25\n\nr\ns\n?\nq\n"
    res = CliRunner().invoke(app, ["review", "--approver", "carol", "-c",
                                   str(tmp_path / "triage.toml")], input=answers,
                             terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "192.0.2.0/24 WARN trial rule R0001" in res.output
    assert "approve as active" in res.output  # the help text
    assert _states(book_dir) == {"R0001": "trial", "R0002": "rejected", "R0003": "proposed",
                                 "R0004": "proposed"}
    rule = load_rulebook(book_dir).get("R0001")
    assert rule.key == "192.0.2.0/25" and rule.approver == "carol"


def test_cli_approve_all_and_decisions(book_dir: Path, tmp_path: Path) -> None:
    dec = tmp_path / "decisions.txt"
    dec.write_text("R0002 active\n")
    cfg = str(tmp_path / "triage.toml")
    assert CliRunner().invoke(app, ["review", "--decisions", str(dec), "-c", cfg]).exit_code == 0
    assert _states(book_dir)["R0002"] == "active"
    assert CliRunner().invoke(app, ["review", "--approve-all", "-c", cfg]).exit_code == 0
    assert set(_states(book_dir).values()) == {"trial", "active"}


def test_killed_review_keeps_decisions(book_dir: Path, tmp_path: Path) -> None:
    """A real process on a pseudo-terminal: two answers, then SIGKILL while it waits for the
    third. The two decisions are on disk; the rest stays pending; no file is half-written."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "triage.cli", "review", "-c",
                             str(tmp_path / "triage.toml")], stdin=slave, stdout=slave,
                            stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    try:
        def wait_for(rid: str, state: str) -> None:
            end = time.monotonic() + 30
            while _states(book_dir).get(rid) != state:
                assert proc.poll() is None and time.monotonic() < end, f"{rid} not {state}"
                time.sleep(0.05)

        def drain() -> None:
            import select
            while select.select([master], [], [], 0.2)[0]:
                try:
                    os.read(master, 65536)
                except OSError:
                    return

        drain()
        os.write(master, b"A\n")
        wait_for("R0001", "active")
        os.write(master, b"r\n")
        wait_for("R0002", "rejected")
        drain()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        os.close(master)
    assert proc.returncode == -signal.SIGKILL
    assert _states(book_dir) == {"R0001": "active", "R0002": "rejected", "R0003": "proposed",
                                 "R0004": "proposed"}
    assert not list(book_dir.glob(".*.tmp"))
