"""`triage scan`, `triage stats` and `triage init`: the weekly loop on the command line."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from triage.cli import prompts
from triage.cli.app import ConfigOpt, app
from triage.config import Config, load_config
from triage.errors import ConfigError, InstallError
from triage.scan import ScanProgress, ScanResult, scan
from triage.store import Store
from triage.weekly import week_summary, weekly_counts

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

# Only what a scan with nothing new needs is imported above: the progress bars, the review,
# the emitter and `triage init` are imported where used (a cron scan's time is mostly
# Python's start).

# No markup: what these consoles print holds HELOs, addresses, map lines and paths, which
# are data (a "[/]" in a spam's HELO must print as written, not style or crash the output).
console = Console(markup=False, emoji=False)
err_console = Console(stderr=True, markup=False, emoji=False)

REVIEW_LATER = ("Review them with `triage review` at a terminal, or without one with "
                "`triage review --decisions FILE` (lines like 'R0042 trial') or "
                "`triage review --approve-all`; then `triage emit --install`.")


def _progress_columns() -> tuple[Any, ...]:
    """The columns of the progress bars: name, bar, count and rate, time left."""
    from rich.progress import (
        BarColumn,
        ProgressColumn,
        Task,
        TextColumn,
        TimeRemainingColumn,
    )

    class _Rate(ProgressColumn):
        """Lines or messages per second (the bar itself may count bytes)."""

        def render(self, task: Task) -> Text:
            done = task.fields.get("count", 0)
            unit = task.fields.get("unit", "")
            elapsed = task.elapsed or 0.0
            rate = f"{done / elapsed:,.0f} {unit}/s" if elapsed > 0.05 else ""
            return Text(f"{done:,} {unit}  {rate}")

    return (TextColumn("{task.description:<18}"), BarColumn(), _Rate(),
            TimeRemainingColumn())


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
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the week's summary, proposals and rule feedback as JSON "
        "(no review).")] = False,
    wait: Annotated[float | None, typer.Option(
        "--wait", help="Seconds to wait for a running scan (default: config lock_wait).",
        show_default=False)] = None,
) -> None:
    """The weekly job: read what is new in mail.log and the mail folders, add it to the
    history, show the week, propose rules; at a terminal, review them and install the
    approved maps after a confirmation."""
    cfg = load_config(config)
    quiet = as_json or not err_console.is_terminal
    if quiet:
        result = scan(cfg, wait=wait)
    else:
        from rich.progress import Progress

        with Progress(*_progress_columns(), console=err_console,
                      transient=False) as progress:
            result = scan(cfg, progress=_Bars(progress), wait=wait)
    summary = week_summary(Store(cfg.state_dir))
    if result.proposals is not None:
        summary["new_campaigns"] = result.proposals.campaigns
        summary["new_single_messages"] = result.proposals.single_messages
    if as_json:
        from triage.weekly_rules import feedback_json

        typer.echo(json.dumps({"scan": _scan_json(result), "summary": summary,
                               "proposals": _proposals_json(result),
                               "feedback": feedback_json(result.feedback)},
                              indent=1, default=str))
        return
    _render_scan(result)
    _render_summary(summary)
    _render_feedback(result)
    _render_proposals(result)
    if no_review or not prompts.stdin_is_terminal():
        # cron and pipes: never wait for an answer nobody can give
        if result.pending:
            console.print(f"{result.pending} proposal(s) wait for review. {REVIEW_LATER}")
        return
    _review_and_install(cfg, result)


def _scan_json(r: ScanResult) -> dict[str, Any]:
    return {"generation": r.generation, "committed": r.committed, "lines": r.lines,
            "events": r.events, "unparsed": dict(r.unparsed), "rows": r.rows, "mail": r.mail,
            "weeks": r.weeks, "seconds": round(r.seconds, 3), "problems": r.problems}


def _proposals_json(r: ScanResult) -> dict[str, Any]:
    report = r.proposals.to_json() if r.proposals is not None else {
        "new": [], "renewed": [], "refreshed": [], "kept_out": []}
    return {"pending": r.pending, "ran": r.proposals is not None, **report}


def _render_scan(r: ScanResult) -> None:
    for p in r.problems:  # a damaged rotated .gz, a file gone mid-scan, a rewritten file
        err_console.print(Text(f"triage: {p}", style="yellow"))
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
    if "new_campaigns" in s:
        camps = [f"{c['campaign']} {c['messages']} msgs/{c['days']}d"
                 + (f" ({c['ties'][0]})" if c["ties"] else "")
                 + (f" -> {', '.join(c['proposals'])}" if c["proposals"] else "")
                 for c in s["new_campaigns"]]
        singles = s.get("new_single_messages", 0)
        t.add_row("new campaigns", "; ".join(camps[:6])
                  + (f" and {len(camps) - 6} more" if len(camps) > 6 else "")
                  + (f"{'; ' if camps else ''}{singles} single message(s)" if singles else "")
                  or "none")
    console.print(t)
    for rid, n in s["ham_hits"].items():
        console.print(Text(f"RULE {rid} HIT HAM {n} TIME(S): check it now "
                           f"(`triage rules show {rid}`)", style="bold red"))


def _render_feedback(r: ScanResult) -> None:
    """The rules in the maps as the log sees them: one line, then the flagged ones."""
    if not r.feedback:
        return
    trial = sum(f.state == "trial" for f in r.feedback)
    console.print(f"Rules in the maps: {len(r.feedback)} ({trial} on trial, "
                  f"{len(r.feedback) - trial} active); "
                  f"{sum(f.hits for f in r.feedback):,} hits since they were created.")
    for f in r.feedback:
        if f.flag == "HAM":
            console.print(Text(f"RULE {f.rule_id} HIT HAM {f.ham_hits} TIME(S) "
                               f"({f.state}): check it now (`triage rules show {f.rule_id}`)",
                               style="bold red"))
    for flag, what in (("promotable", "trial passed (no ham hit): may become active"),
                       ("stale", "no hit for a long time: candidates for retirement "
                        "(`triage rules retire ID`)")):
        ids = [f.rule_id for f in r.feedback if f.flag == flag]
        if ids:
            console.print(f"{', '.join(ids)}: {what}")


def _render_proposals(r: ScanResult) -> None:
    p = r.proposals
    if p is not None and (p.new or p.renewed):
        ids = ", ".join(x.id for x in p.offered)
        console.print(f"New proposals: {ids}"
                      + (f" ({len(p.renewed)} rejected before, evidence grew)"
                         if p.renewed else "") + ".")
    if p is not None and p.kept_out:
        console.print(f"Not proposed again (rejected or retired): {', '.join(p.kept_out)}.")


def _yes(question: str) -> bool:
    return prompts.ask(f"{question} [y/N]", "n").strip().lower() in ("y", "yes")


def _review_and_install(cfg: Config, result: ScanResult) -> None:
    """The interactive end of the scan: the review (the same loop as `triage review`),
    promotion of trial rules that passed, then the maps that changed, installed after a
    confirmation."""
    from triage.cli.emit_cmd import postfix_of
    from triage.cli.review_cmd import review_loop
    from triage.emit.install import check_maps, install_and_reload, render_maps
    from triage.model import TableType
    from triage.review import ReviewSession
    from triage.rulebook import load_rulebook, promote_trials
    from triage.weekly_rules import history_retest

    book = load_rulebook(cfg.rulebook_dir())
    session = ReviewSession(book, getpass.getuser(), retest=history_retest(
        Store(cfg.state_dir)))
    if session.current() is not None:
        console.print()
        review_loop(session, console)
    passed = [f for f in result.feedback if f.promotable and not f.ham_hits]
    if passed and _yes(f"Make {', '.join(f.rule_id for f in passed)} active (REJECT): "
                       "their trial passed with no ham hit?"):
        for rule in promote_trials(book, passed, approver=getpass.getuser()):
            console.print(f"{rule.id} active")
    sender_table = TableType(cfg.sender_table)
    rules = book.emitted()
    files = render_maps(rules, sender_table)
    changed = {name: text for name, text in files.items()
               if _installed(cfg.postfix_dir / name) != text}
    if not changed:
        console.print(f"The maps in {cfg.postfix_dir} are up to date ({len(rules)} rules).")
        return
    postfix = postfix_of(cfg)
    problems = check_maps(files, rules, sender_table, postfix)
    if problems:
        for p in problems:
            err_console.print(f"triage: {p}")
        raise InstallError(f"{len(problems)} problem(s) in the rendered maps; nothing "
                           "installed")
    _render_changes(changed, cfg.postfix_dir)
    reload = " and run `postfix reload`" if cfg.postfix_reload else ""
    if not _yes(f"Install these maps into {cfg.postfix_dir}{reload}?"):
        console.print("Nothing installed; the decisions are saved (`triage emit --install` "
                      "installs them later).")
        return
    install_and_reload(postfix, files, sender_table, reload=cfg.postfix_reload)
    console.print(f"Installed {len(files)} maps ({len(rules)} rules) in {cfg.postfix_dir}"
                  + (" and reloaded Postfix." if cfg.postfix_reload else
                     "; run `postfix reload` for them to take effect at once."))


def _installed(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _render_changes(changed: dict[str, str], directory: Path) -> None:
    """The map lines that would come and go (comments left out: they only count rules)."""
    console.print(f"\nChanges to the maps in {directory}:")
    for name, text in sorted(changed.items()):
        def entries(t: str | None) -> list[str]:
            return [ln for ln in (t or "").splitlines() if ln and not ln.startswith("#")]

        before = _installed(directory / name)
        new, old = entries(text), entries(before)
        if new == old:
            if before is None:
                console.print(Text(name, style="bold") + " (new, no rules yet)")
            continue
        console.print(Text(name, style="bold"))
        for ln in old:
            if ln not in new:
                console.print(Text(f"  - {ln}", style="red"))
        for ln in new:
            if ln not in old:
                console.print(Text(f"  + {ln}", style="green"))


@app.command("stats")
def stats_command(
    config: ConfigOpt = None,
    weeks: Annotated[int, typer.Option("--weeks", "-n", min=1,
                                       help="How many recent weeks.")] = 8,
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
    out: Annotated[Path, typer.Option(
        "--config", "--out", "-c", "-o",
        help="The config file to write (the file the other commands then read).")]
        = Path("~/.config/triage/triage.toml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")]
        = False,
) -> None:
    """Look at this machine (mail logs, ~/.procmailrc) and write a commented triage.toml."""
    from triage.cli.output import atomic_path
    from triage.initconf import detect, render

    target = out.expanduser()
    if target.exists() and not force:
        raise ConfigError("exists already (use --force to overwrite)", file=target)
    text = render(detect())
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        # without --force, a file that appeared since the check above is not replaced either
        with atomic_path(target, replace=force) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except FileExistsError:
        raise ConfigError("exists already (use --force to overwrite)", file=target) from None
    console.print(text)
    console.print(f"Wrote {target}. Check each setting, then run `triage scan`.")
