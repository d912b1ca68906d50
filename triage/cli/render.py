"""rich rendering for the CLI. The only place (with prompts.py) that writes to the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

console = Console()


def render_explain(result: dict[str, object]) -> None:
    """One log line, as triage reads it."""
    kind = result.get("kind")
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("line", str(result.get("line")))
    table.add_row("program", str(result.get("program")))
    table.add_row("candidates", ", ".join(result.get("candidate_kinds", []) or []) or "-")  # type: ignore[arg-type]
    table.add_row("kind", str(kind) if kind else "[red]not an event[/red]")
    fields = result.get("fields")
    if isinstance(fields, dict):
        for key, value in fields.items():
            table.add_row(f"  {key}", repr(value) if isinstance(value, str) else str(value))
    for key in ("unparsed_reason", "note"):
        if key in result:
            table.add_row(key, str(result[key]))
    console.print(table)
