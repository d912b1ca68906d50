"""`triage review`: one card per pending proposal; decisions saved as they are made."""

from __future__ import annotations

import getpass
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from triage.cli import prompts
from triage.cli.app import ConfigOpt, app
from triage.config import load_config
from triage.errors import InputError, RuleError
from triage.model import Evidence, Rule, RuleKind
from triage.review import (
    Card,
    Choice,
    ReviewSession,
    apply_decisions,
    matching_samples,
    parse_choice,
    parse_decisions,
    sample_field,
)
from triage.rulebook import load_rulebook


def sample_retest(rule: Rule) -> Evidence:
    """Re-check an edited rule against the samples it was proposed from: how many of them
    it still matches. (`triage scan` passes the full history backtest instead.) The
    session then keeps only the samples the new key matches (``keep_matching_samples``)."""
    ev = rule.evidence
    # client_name: the evidence keeps no rDNS names; a bot's HELO often is its rDNS name
    field = sample_field(rule) or ("helos" if rule.kind is RuleKind.CLIENT_NAME else None)
    samples: tuple[str, ...] = getattr(ev, field) if field else ()
    if not samples:
        return ev
    return replace(ev, spam_hits=len(matching_samples(rule, samples, field)))


def _render(console: Console, card: Card) -> None:
    # Keys, map lines and evidence are data (the evidence is the spammer's own text): each
    # cell is a Text, never console markup, so "[/]" or "[a-z]" shows as written.
    r, ev = card.rule, card.rule.evidence
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("as trial", Text(card.trial_line))
    grid.add_row("as active", Text(card.active_line))
    days = f" over {ev.days} days" if ev.days else ""
    grid.add_row("why", Text(f"campaign {ev.campaign or '-'}: {ev.messages} messages{days}"))
    for name, values in (("subjects", ev.subjects), ("senders", ev.senders),
                         ("HELOs", ev.helos), ("IPs", ev.ips)):
        if values:
            grid.add_row(name, Text(", ".join(repr(v) for v in values[:5])))
    grid.add_row("backtest", f"spam hits {ev.spam_hits}, ham hits {ev.ham_hits}, "
                 f"overlap with active rules {ev.overlap_active}")
    if card.note:
        grid.add_row("note", Text(card.note))
    console.print(Panel(grid, title=Text(f"{r.id} {r.kind} ({card.position}/{card.total})")))


@app.command("review")
def review_command(
    decisions: Annotated[Path | None, typer.Option(
        help="Scripted answers, one 'R0042 trial|active|reject|skip|edit KEY' per line.",
        show_default=False)] = None,
    approve_all: Annotated[bool, typer.Option(
        help="Accept every pending proposal as proposed (as trial rules).")] = False,
    approver: Annotated[str | None, typer.Option(
        help="Name recorded as approver (default: the login name).", show_default=False)]
        = None,
    config: ConfigOpt = None,
) -> None:
    """Review pending proposals: approve as trial (WARN) or active (REJECT), reject, edit,
    skip or quit. Each decision is saved as it is made."""
    cfg = load_config(config)
    session = ReviewSession(load_rulebook(cfg.rulebook_dir()), approver or getpass.getuser(),
                            retest=sample_retest)
    if decisions is not None:
        try:
            text = decisions.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror}", file=decisions) from exc
        for out in apply_decisions(session, parse_decisions(text, str(decisions))):
            typer.echo(out.message, err=True)
        return
    if approve_all:
        for out in session.approve_all():
            typer.echo(out.message, err=True)
        return
    if not prompts.stdin_is_terminal():
        raise InputError("stdin is not a terminal: use --decisions FILE or --approve-all")
    review_loop(session, Console())


def review_loop(session: ReviewSession, console: Console) -> None:
    """Ask about each pending card until the session ends (also the review step of
    `triage scan`); each decision is saved by the session as it is made."""
    if session.current() is None:
        console.print("No pending proposals.")
        return
    while (card := session.current()) is not None:
        _render(console, card)
        answer = prompts.ask("[t]rial (Enter) / [A]ctive / [r]eject / [e]dit / [s]kip / "
                             "[q]uit / ?")
        try:
            choice = parse_choice(answer)
        except RuleError as exc:
            console.print(Text(exc.message))
            continue
        key = prompts.ask("new key", card.rule.key) if choice is Choice.EDIT else None
        out = session.decide(choice, key)
        console.print(Text(out.message))
