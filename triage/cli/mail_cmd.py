"""`triage mail`: mail folders -> one row per message (the ``mail`` table)."""

from __future__ import annotations

import glob
import sys
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer

from triage import read_maillog
from triage.cli.app import ConfigOpt, app
from triage.cli.output import Format, atomic_path, check_output
from triage.config import load_config
from triage.errors import InputError

if TYPE_CHECKING:
    import pandas as pd


class Role(StrEnum):
    spam = "spam"
    ham = "ham"


@app.command("mail")
def mail_command(
    paths: Annotated[list[Path], typer.Argument(
        help="Maildir, mbox file, MH folder or directory of message files.", show_default=False)],
    role: Annotated[Role | None, typer.Option("--role", help="Label every row spam or ham.")]
        = None,
    my_hostname: Annotated[list[str] | None, typer.Option(
        "--my-hostname", help="Our MX host name or glob (repeatable; default: config "
        "my_hostnames, else inferred from the folders).", show_default=False)] = None,
    subfolders: Annotated[bool, typer.Option(
        "--subfolders", help="Also read Maildir++ subfolders and subdirectories.")] = False,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.jsonl,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Write here instead of stdout (required for parquet).",
        show_default=False)] = None,
    log: Annotated[list[Path] | None, typer.Option(
        "--log", help="mail.log file or quoted glob ('mail.log*') to join on (host, queue id); "
        "repeatable. The log "
        "completes the trusted-hop fields and flags disagreements (log_* columns).",
        show_default=False)] = None,
    config: ConfigOpt = None,
) -> None:
    """One row per message with the trusted-hop features (client IP, rDNS, HELO, SPF, DKIM,
    DMARC as our MX recorded them) and the sender-written headers."""
    cfg = load_config(config)
    for p in paths:
        if not p.exists():
            raise InputError("no such mail folder or file", file=p)
    if fmt is Format.parquet and out is None:
        raise InputError("--format parquet needs --out FILE")
    if out is not None:
        check_output(out)  # before reading the folders, not after
    names = my_hostname or list(cfg.my_hostnames) or None
    messages = None
    if log:
        messages = read_maillog(_expand(log), year=cfg.log_year,
                                timezone=cfg.log_timezone).messages
        if names is None:
            names = log_hostnames(messages)
    from triage.ingest.mailtable import read_mailboxes  # heavy: imported when run

    df = read_mailboxes(paths, role=role.value if role else None, my_hostnames=names,
                        trusted_relays=cfg.trusted_relays, subfolders=subfolders)
    if messages is not None:
        from triage.ingest.mailjoin import join_with_log

        df = join_with_log(df, messages)
    write_table(df, fmt.value, out)


def _expand(patterns: list[Path]) -> list[Path]:
    """Expand globs (as in the config's ``logs``); a name without matches is kept so the
    reader reports it as missing."""
    out: list[Path] = []
    for p in patterns:
        matches = sorted(glob.glob(str(p))) if glob.has_magic(str(p)) else []
        if matches:
            out.extend(Path(m) for m in matches)
        else:
            out.append(p)
    return out


def log_hostnames(messages: pd.DataFrame) -> list[str] | None:
    """Our host names as the log knows them; syslog often has the short name, so
    ``mx`` also stands for ``mx.*``."""
    hosts = sorted({str(h).lower() for h in messages["host"].dropna()})
    return [p for h in hosts for p in (h, f"{h}.*")] or None


def write_table(df: pd.DataFrame, fmt: str, out: Path | None) -> None:
    """Write ``df`` as jsonl, csv or parquet to ``out`` or stdout."""
    if fmt == "parquet":
        if out is None:
            raise InputError("--format parquet needs --out FILE")
        with atomic_path(out) as tmp:
            df.to_parquet(tmp, index=False)
        return
    if out is None:
        _write_text(df, fmt, sys.stdout)
        return
    with atomic_path(out) as tmp, tmp.open("w", encoding="utf-8", newline="") as fh:
        _write_text(df, fmt, fh)


def _write_text(df: pd.DataFrame, fmt: str, target: IO[str]) -> None:
    if fmt == "csv":
        df.to_csv(target, index=False)
    elif len(df):
        df.to_json(target, orient="records", lines=True, date_format="iso", force_ascii=False)
