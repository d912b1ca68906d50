"""`triage report --html FILE`: the trend charts as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from triage.cli.app import ConfigOpt, app
from triage.cli.output import atomic_path, check_output
from triage.config import load_config

console = Console(stderr=True, markup=False, emoji=False)  # paths are data, not markup


@app.command("report")
def report_command(
    html: Annotated[Path, typer.Option(
        "--html", help="Write the report to this HTML file (replaced atomically).",
        show_default=False)],
    config: ConfigOpt = None,
    weeks: Annotated[int | None, typer.Option(
        "--weeks", "-n", min=1, help="Only the last N ISO weeks (default: the whole history).",
        show_default=False)] = None,
) -> None:
    """The weekly trend charts (traffic, refusals, leak rate, SPF/DKIM/DMARC, campaigns,
    rule hits, rule durability) from the history, as one HTML page with no external
    resources."""
    # Imported here: matplotlib is slow to import and only this command needs it.
    from triage.report import report_html

    cfg = load_config(config)
    check_output(html)  # before the work, not after it
    page = report_html(cfg, weeks)
    with atomic_path(html) as tmp:
        tmp.write_text(page, encoding="utf-8")
    console.print(f"Wrote {html} ({len(page) // 1024:,} KiB).")
