"""The only place that reads from stdin: questions for `triage review`."""

from __future__ import annotations

import sys

import typer


def stdin_is_terminal() -> bool:
    """Whether questions can be asked (tests replace this to drive prompts)."""
    # stdin may be closed altogether (`triage scan <&-` from cron): then sys.stdin is None
    return sys.stdin is not None and sys.stdin.isatty()


def ask(question: str, default: str = "") -> str:
    """One line of answer; EOF counts as "q" so a closed stdin never hangs the review."""
    try:
        return str(typer.prompt(question, default=default, show_default=False))
    except (EOFError, typer.Abort):
        return "q"
