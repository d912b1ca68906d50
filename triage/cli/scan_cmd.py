"""`triage scan`, `triage stats` and `triage init`: the weekly loop on the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from triage.cli.app import ConfigOpt, app
from triage.cli.output import atomic_path
from triage.config import load_config
from triage.errors import ConfigError
from triage.initconf import detect, render
from triage.scan import ScanProgress, ScanResult, scan
from triage.store import Store
from triage.weekly import week_summary, weekly_counts

console = Console()
err_console = Console(stderr=True)

NOT_YET = ("Proposals, review and emit are not available yet in this version: the scan "
           "ends with the summary. The history is saved; run `triage scan` again later.")


class _Rate(ProgressColumn):
    """Lines or messages per second (the bar itself may count bytes)."""

    def render(self, task: Task) -> Text:
        done = task.fields.get("count", 0)
        unit = task.fields.get("unit", "")
        elapsed = task.elapsed or 0.0
        rate = f"{done / elapsed:,.0f} {unit}/s" if elapsed > 0.05 else ""
        return Text(f"{done:,} {unit}  {rate}")


class _Bars:
    """One rich progress bar per input, fed by ScanProgress events."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, ev: ScanProgress) -> None:
        task = self.tasks.get(ev.input)
        if task is None:
            task = self.progress.add_task(ev.input, total=ev.bytes_total, count=0,
                                          unit=ev.unit)
            self.tasks[ev.input] = task
        if ev.finished:
            t = self.progress.tasks[task]
            self.progress.update(task, count=ev.done, total=t.completed or 1,
                                 completed=t.completed or 1)
            return
        self.progress.update(task, count=ev.done, completed=ev.bytes_done or 0,
                             total=ev.bytes_total)


@app.command("scan")
def scan_command(
    config: ConfigOpt = None,
    no_review: Annotated[bool, typer.Option(
        "--no-review", help="Do not review proposals (for cron): ingest and summarise only.")]
        = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the week's summary as JSON.")]
        = False,
    wait: Annotated[float | None, typer.Option(
        "--wait", help="Seconds to wait for a running scan (default: config lock_wait).",
        show_default=False)] = None,
) -> None:
    """The weekly job: read what is new in mail.log and the mail folders, add it to the
    history, and show the week."""
    cfg = load_config(config)
    quiet = as_json or not err_console.is_terminal
    if quiet:
        result = scan(cfg, wait=wait)
    else:
        columns = (TextColumn("{task.description:<18}"), BarColumn(), _Rate(),
                   TimeRemainingColumn())
        with Progress(*columns, console=err_console, transient=False) as progress:
            result = scan(cfg, progress=_Bars(progress), wait=wait)
    summary = week_summary(Store(cfg.state_dir))
    if as_json:
        typer.echo(json.dumps({"scan": _scan_json(result), "summary": summary,
                               "proposals": None}, indent=1, default=str))
        return
    _render_scan(result)
    _render_summary(summary)
    if not no_review and sys.stdin.isatty():
        console.print(f"\n[yellow]{NOT_YET}[/yellow]")
    else:
        console.print(f"\n{NOT_YET}")


def _scan_json(r: ScanResult) -> dict[str, Any]:
    return {"generation": r.generation, "committed": r.committed, "lines": r.lines,
            "events": r.events, "unparsed": dict(r.unparsed), "rows": r.rows, "mail": r.mail,
            "weeks": r.weeks, "seconds": round(r.seconds, 3)}


def _render_scan(r: ScanResult) -> None:
    if r.nothing_new:
        console.print(f"Nothing new since the last scan ({r.seconds:.2f} s).")
        return
    new_mail = sum(r.mail.values())
    bad = sum(r.unparsed.values())
    console.print(f"Read {r.lines:,} new log lines and {new_mail:,} new messages in "
                  f"{r.seconds:.1f} s; history generation {r.generation}"
                  + (f"; {bad:,} lines not understood (`triage parse --table unparsed`)"
                     if bad else "") + ".")


def _render_summary(s: dict[str, Any]) -> None:
    if s.get("week") is None:
        console.print("The history is empty.")
        return
    rec, ref = s["received"], s["refused"]
    t = Table(title=f"Week {s['week']}", show_header=False, box=None, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("received", f"{rec['connections']:,} connections, {rec['messages']:,} inbound "
              f"messages, {rec['authenticated']:,} authenticated/outbound")
    reasons = ", ".join(f"{k} {v}" for k, v in ref["by_reason"].items())
    t.add_row("refused", f"{ref['total']:,}" + (f" ({reasons})" if reasons else ""))
    t.add_row("leaked spam", f"{s['leaked_spam']:,}")
    t.add_row("ham", f"{s['ham']:,}")
    for role in ("spam", "ham"):
        mix = s["auth"][role]
        t.add_row(f"auth of {role}", "; ".join(
            f"{k.upper()} " + ", ".join(f"{r} {n}" for r, n in mix[k].items())
            for k in ("spf", "dkim", "dmarc") if mix[k]) or "-")
    hits = ", ".join(f"{rid} {v['rejects']}" + (f"+{v['warns']}w" if v["warns"] else "")
                     for rid, v in s["rule_hits"].items())
    t.add_row("rule hits", hits or "none")
    console.print(t)
    for rid, n in s["ham_hits"].items():
        console.print(f"[bold red]RULE {rid} HIT HAM {n} TIME(S): check it now "
                      f"(`triage rules show {rid}`)[/bold red]")


@app.command("stats")
def stats_command(
    config: ConfigOpt = None,
    weeks: Annotated[int, typer.Option("--weeks", "-n", help="How many recent weeks.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON rows.")] = False,
) -> None:
    """The weekly figures over time, from the history (no scan)."""
    cfg = load_config(config)
    rows = weekly_counts(Store(cfg.state_dir), weeks)
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        console.print("The history is empty: run `triage scan` first.")
        return
    t = Table(title="Weekly figures")
    for key in rows[0]:
        t.add_column(key.replace("_", " "), justify="left" if key == "week" else "right",
                     no_wrap=True)
    for row in rows:
        t.add_row(*("-" if v is None else f"{v:,}" if isinstance(v, int) else str(v)
                    for v in row.values()))
    console.print(t)


@app.command("init")
def init_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the config.")]
        = Path("~/.config/triage/triage.toml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")]
        = False,
) -> None:
    """Look at this machine (mail logs, ~/.procmailrc) and write a commented triage.toml."""
    target = out.expanduser()
    if target.exists() and not force:
        raise ConfigError("exists already (use --force to overwrite)", file=target)
    text = render(detect())
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    console.print(text)
    console.print(f"Wrote {target}. Check each setting, then run `triage scan`.")
