"""`triage evaluate`: time-split backtest of the proposals on labelled folders."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from triage.cli.app import ConfigOpt, app
from triage.config import load_config
from triage.errors import InputError


class Period(StrEnum):
    week = "week"


PathsOpt = list[Path]


@app.command("evaluate")
def evaluate_command(
    spam: Annotated[PathsOpt, typer.Option(
        "--spam", help="Spam folder (Maildir, mbox, MH, directory); repeatable.",
        show_default=False)],
    ham: Annotated[PathsOpt, typer.Option(
        "--ham", help="Ham folder; repeatable.", show_default=False)],
    log: Annotated[list[Path] | None, typer.Option(
        "--log", help="mail.log file or quoted glob; repeatable. Adds authenticated and "
        "outbound traffic to the shield and log hits to the backtest.",
        show_default=False)] = None,
    my_hostname: Annotated[list[str] | None, typer.Option(
        "--my-hostname", help="Our MX host name or glob (repeatable; default: config, "
        "else inferred).", show_default=False)] = None,
    by: Annotated[Period, typer.Option("--by", help="Period of the time split.")]
        = Period.week,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
        = False,
    config: ConfigOpt = None,
) -> None:
    """For each week k: learn from weeks before k, approve the proposals, score week k
    (spam caught, ham rejected). Weeks come from our trusted Received header."""
    cfg = load_config(config)
    for p in [*spam, *ham]:
        if not p.exists():
            raise InputError("no such mail folder or file", file=p)
    # heavy modules are imported when the command runs, not when the CLI starts
    from triage import read_maillog
    from triage.cli.mail_cmd import _expand, log_hostnames
    from triage.evaluate import evaluate
    from triage.ingest.mailtable import guess_my_hostnames, read_mailboxes
    from triage.propose import ProposeOptions

    logs = (read_maillog(_expand(log), year=cfg.log_year, timezone=cfg.log_timezone)
            if log else None)
    names = my_hostname or list(cfg.my_hostnames) or \
        (log_hostnames(logs.messages) if logs is not None else None)
    if names is None:
        # Spam and ham may have been fetched by different hosts: infer from both.
        names = guess_my_hostnames([*spam, *ham])
    spam_df = read_mailboxes(spam, role="spam", my_hostnames=names,
                             trusted_relays=cfg.trusted_relays)
    ham_df = read_mailboxes(ham, role="ham", my_hostnames=names,
                            trusted_relays=cfg.trusted_relays)
    opts = ProposeOptions(my_hostnames=tuple(names), trusted_relays=tuple(cfg.trusted_relays),
                          allowlist_files=cfg.allowlist_files())
    result = evaluate(spam_df, ham_df, logs=logs, by=by.value, options=opts)
    if as_json:
        typer.echo(json.dumps(result, indent=1))
        return
    from rich.table import Table

    from triage.cli.render import console

    table = Table("period", "spam", "caught", "ham", "rejected", "rules", box=None)
    for p in result["periods"]:
        table.add_row(p["period"], str(p["spam_test"]), str(p["spam_caught"]),
                      str(p["ham_test"]), str(p["ham_rejected"]), str(p["rules"]))
    t = result["total"]
    share = t["spam_caught"] / t["spam_test"] if t["spam_test"] else 0.0
    table.add_row("total", str(t["spam_test"]), f"{t['spam_caught']} ({share:.0%})",
                  str(t["ham_test"]), str(t["ham_rejected"]), str(t["rules"]),
                  style="bold")
    console.print(table)
    if t.get("unplaced"):
        console.print(f"{t['unplaced']} messages without a trusted Received time were left out")
