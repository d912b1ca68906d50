"""rich rendering for the CLI. The only place (with prompts.py) that writes to the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console()


def render_explain(result: dict[str, object]) -> None:
    """One log line, as triage reads it."""
    # The line and its fields are data (a HELO or sender is the client's own text): every
    # cell is a Text, never console markup, so "[/]" or "[bold]" in a log line shows as is.
    kind = result.get("kind")
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("line", Text(str(result.get("line"))))
    table.add_row("program", Text(str(result.get("program"))))
    kinds = result.get("candidate_kinds")
    table.add_row("candidates", Text(", ".join(map(str, kinds))
                                     if isinstance(kinds, list | tuple) and kinds else "-"))
    table.add_row("kind", Text(str(kind)) if kind else Text("not an event", style="red"))
    fields = result.get("fields")
    if isinstance(fields, dict):
        for key, value in fields.items():
            table.add_row(Text(f"  {key}"),
                          Text(repr(value) if isinstance(value, str) else str(value)))
    for key in ("unparsed_reason", "note"):
        if key in result:
            table.add_row(key, Text(str(result[key])))
    console.print(table)
