"""`triage rules list|show|retire|rollback`: the rulebook and the installed maps."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from triage.cli.app import ConfigOpt, app
from triage.cli.emit_cmd import postfix_of
from triage.config import load_config
from triage.emit.postfix import render_line
from triage.model import Rule, RuleState
from triage.rulebook import load_rulebook, rule_to_toml

rules_app = typer.Typer(help="The rulebook: list, show and retire rules; roll back the maps.",
                        no_args_is_help=True)
app.add_typer(rules_app, name="rules")


def _as_dict(rule: Rule) -> dict[str, object]:
    return {"id": rule.id, "kind": str(rule.kind), "key": rule.key, "state": str(rule.state),
            "line": render_line(rule) if rule.state.emitted else None,
            "spam_hits": rule.evidence.spam_hits, "ham_hits": rule.evidence.ham_hits,
            "approver": rule.approver,
            "approved": rule.approved.isoformat() if rule.approved else None,
            "expires": rule.expires.isoformat() if rule.expires else None}


@rules_app.command("list")
def list_command(
    state: Annotated[list[RuleState] | None, typer.Option(
        help="Only rules in this state (repeatable).", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    config: ConfigOpt = None,
) -> None:
    """List the rules of the rulebook, oldest first."""
    book = load_rulebook(load_config(config).rulebook_dir())
    rules = [r for r in book if not state or r.state in state]
    if as_json:
        for r in rules:
            typer.echo(json.dumps(_as_dict(r)))
        return
    table = Table("id", "state", "kind", "key", "spam", "ham", "approver")
    for r in rules:
        # Text, not markup: a regex key such as "^[a-z0-9]+\\." or "[/]" is shown as written
        table.add_row(*(Text(v) for v in (r.id, str(r.state), str(r.kind), r.key,
                                          str(r.evidence.spam_hits), str(r.evidence.ham_hits),
                                          r.approver)))
    Console().print(table)


@rules_app.command("show")
def show_command(rule_id: Annotated[str, typer.Argument(help="Rule id, e.g. R0042.")],
                 config: ConfigOpt = None) -> None:
    """Show one rule: its file and the line it puts in the Postfix map."""
    rule = load_rulebook(load_config(config).rulebook_dir()).get(rule_id)
    typer.echo(rule_to_toml(rule), nl=False)
    typer.echo(f"# map line: {render_line(rule) if rule.state.emitted else '(not emitted)'}")


@rules_app.command("retire")
def retire_command(rule_id: Annotated[str, typer.Argument(help="Rule id, e.g. R0042.")],
                   note: Annotated[str | None, typer.Option(help="Why.")] = None,
                   config: ConfigOpt = None) -> None:
    """Retire a rule (it leaves the maps at the next `triage emit`)."""
    book = load_rulebook(load_config(config).rulebook_dir())
    rule = book.set_state(rule_id, RuleState.RETIRED, note=note)
    typer.echo(f"{rule.id} retired; run `triage emit --install --reload` to update Postfix",
               err=True)


@rules_app.command("rollback")
def rollback_command(
    reload: Annotated[bool, typer.Option(help="Run `postfix reload` afterwards.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Put the previously installed set of maps back (a second rollback undoes the first)."""
    from triage.emit.install import rollback

    cfg = load_config(config)
    restored = rollback(postfix_of(cfg), reload=reload)
    typer.echo(f"restored {len(restored)} file(s) in {cfg.postfix_dir}", err=True)
