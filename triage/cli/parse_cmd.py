"""`triage parse` and `triage explain`: mail.log -> tables; how one line is read."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from triage.cli.app import ConfigOpt, app
from triage.cli.output import Format, TableWriter, WriterThread
from triage.config import load_config
from triage.errors import InputError

# The log reader (polars) is imported when a command runs, not when the CLI starts.


class Table(StrEnum):
    events = "events"
    sessions = "sessions"
    messages = "messages"
    deliveries = "deliveries"
    rejects = "rejects"
    unparsed = "unparsed"
    all = "all"


@app.command("parse")
def parse_command(
    logs: Annotated[list[Path], typer.Argument(
        help="mail.log files (plain, .gz, .bz2, .xz), in any order.", show_default=False)],
    year: Annotated[int | None, typer.Option(
        min=1970, max=9999, help="Year of the first traditional timestamp of each file "
        "(default: log_year in the config, else inferred from the file's modification time).",
        show_default=False)]
        = None,
    table: Annotated[Table, typer.Option(
        help="Which table to write; 'all' writes one file per table into --out DIR.")]
        = Table.events,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.jsonl,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output file (a directory with --table all); default stdout.",
        show_default=False)] = None,
    config: ConfigOpt = None,
) -> None:
    """Parse mail.log files into tables (events, sessions, messages, deliveries, rejects,
    unparsed). Streams in bounded memory; a summary goes to stderr."""
    from triage.ingest.logtables import TABLES, empty_table, iter_tables
    from triage.ingest.maillog import ReadOptions, ReadStats

    cfg = load_config(config)
    opts = ReadOptions(year=year if year is not None else cfg.log_year,
                       timezone=cfg.log_timezone, rule_id_pattern=cfg.rule_id_pattern)
    names = list(TABLES) if table is Table.all else [table.value]
    if table is Table.all:
        if out is None:
            raise InputError("--table all needs --out DIR")
        if out.exists() and not out.is_dir():
            raise InputError("--table all writes one file per table: --out must be a "
                             "directory", file=out)
        out.mkdir(parents=True, exist_ok=True)
        ext = "jsonl" if fmt is Format.jsonl else fmt.value
        targets: dict[str, Path | None] = {n: out / f"{n}.{ext}" for n in names}
    else:
        targets = {names[0]: out}
    writers = {n: TableWriter(fmt.value, targets[n], empty=empty_table(n)) for n in names}
    stats = ReadStats()
    background = WriterThread()
    try:
        # Parquet is for analysis: its events come kind after kind within each batch (half
        # the encoding time, and no wide table held); text outputs keep the log's line order.
        for part in iter_tables(logs, opts, stats, tables=names,
                                events_by_kind=fmt is Format.parquet):
            # handed over and dropped here (the dict is the reader's too): the writer holds
            # what it still needs, nothing of this batch is kept while the next is assembled
            for name in [n for n in part if n in writers]:
                background.put(writers[name], part.pop(name))
            part.clear()
        background.finish()
    except BaseException:
        background.stop()
        for w in writers.values():
            w.abort()
        raise
    for w in writers.values():
        w.close()
    rows = ", ".join(f"{n} {w.rows}" for n, w in writers.items())
    typer.echo(f"triage parse: {stats.lines} lines in {len(stats.files)} file(s): {rows}; "
               f"{stats.unparsed} unparsed, {stats.skipped_duplicate_lines} duplicate lines "
               "skipped", err=True)
    from triage.ingest.extract import MILTER_PROGRAMS
    from triage.ingest.maillog import split_program

    others = {p: n for p, n in stats.programs.items()
              if split_program(p)[1] is None and p not in MILTER_PROGRAMS}
    if others:
        top = sorted(others.items(), key=lambda kv: -kv[1])[:8]
        typer.echo("other programs (counted, not parsed): "
                   + ", ".join(f"{p} {n}" for p, n in top), err=True)


@app.command("explain")
def explain_command(
    what: Annotated[str, typer.Argument(
        help="One mail.log line (quoted), or a file holding one message.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Show how triage reads one log line (kind and fields) or one message file."""
    from triage.ingest.maillog import ReadOptions, explain_line

    cfg = load_config(config)
    if "\n" not in what and len(what) < 4096 and _is_file(Path(what)):
        raise InputError("explaining a message file is not available yet; pass a log line")
    opts = ReadOptions(timezone=cfg.log_timezone, rule_id_pattern=cfg.rule_id_pattern)
    result = explain_line(what, opts)
    if as_json:
        typer.echo(json.dumps(result, default=str, indent=2))
        return
    from triage.cli.render import render_explain

    render_explain(result)


def _is_file(path: Path) -> bool:
    """Whether ``path`` names a file; a log line is often no possible file name at all
    (a part longer than NAME_MAX, a NUL byte), and then it is not one."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False
