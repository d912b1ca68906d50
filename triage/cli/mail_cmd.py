"""`triage mail`: mail folders -> one row per message (the ``mail`` table)."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from triage.cli.app import ConfigOpt, app
from triage.config import load_config
from triage.errors import InputError
from triage.ingest.mailtable import read_mailboxes


class Role(StrEnum):
    spam = "spam"
    ham = "ham"


class Format(StrEnum):
    jsonl = "jsonl"
    csv = "csv"
    parquet = "parquet"


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
    config: ConfigOpt = None,
) -> None:
    """One row per message with the trusted-hop features (client IP, rDNS, HELO, SPF, DKIM,
    DMARC as our MX recorded them) and the sender-written headers."""
    cfg = load_config(config)
    for p in paths:
        if not p.exists():
            raise InputError("no such mail folder or file", file=p)
    names = my_hostname or list(cfg.my_hostnames) or None
    df = read_mailboxes(paths, role=role.value if role else None, my_hostnames=names,
                        trusted_relays=cfg.trusted_relays, subfolders=subfolders)
    write_table(df, fmt.value, out)


def write_table(df: pd.DataFrame, fmt: str, out: Path | None) -> None:
    """Write ``df`` as jsonl, csv or parquet to ``out`` or stdout."""
    if fmt == "parquet":
        if out is None:
            raise InputError("--format parquet needs --out FILE")
        df.to_parquet(out, index=False)
        return
    target = out.open("w", encoding="utf-8") if out else sys.stdout
    try:
        if fmt == "csv":
            df.to_csv(target, index=False)
        elif len(df):
            df.to_json(target, orient="records", lines=True, date_format="iso",
                       force_ascii=False)
    finally:
        if out:
            target.close()
