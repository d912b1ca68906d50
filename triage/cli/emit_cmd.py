"""`triage emit`: the Postfix maps from the rulebook, checked, written, installed, reloaded."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from triage.cli.app import ConfigOpt, app
from triage.config import Config, load_config
from triage.errors import InstallError

if TYPE_CHECKING:  # the emitter is imported when a command runs, not when the CLI starts
    from triage.emit.install import Postfix


def postfix_of(cfg: Config) -> Postfix:
    from triage.emit.install import Postfix

    return Postfix(cfg.postfix_dir, cfg.postfix_config_dir, cfg.postfix_command)


@app.command("emit")
def emit_command(
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Write the maps into this directory.", show_default=False)] = None,
    install: Annotated[bool, typer.Option(
        help="Install the maps into the configured postfix_dir (previous set kept for "
        "`triage rules rollback`).")] = False,
    reload: Annotated[bool, typer.Option(
        help="Run `postfix reload` after --install; restores the previous maps if Postfix "
        "refuses the new ones.")] = False,
    show_snippet: Annotated[bool, typer.Option(
        "--snippet", help="Print the main.cf lines that wire the maps in, and exit.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Render the Postfix maps (client cidr, client-name pcre, HELO pcre, sender hash,
    header_checks pcre) for the trial and active rules, check them with triage's matcher and
    with postmap, and write them (stdout without --out/--install)."""
    from triage.emit.install import check_maps, install_and_reload, render_maps, write_maps
    from triage.emit.postfix import snippet
    from triage.model import TableType
    from triage.rulebook import load_rulebook

    cfg = load_config(config)
    sender_table = TableType(cfg.sender_table)
    if show_snippet:
        typer.echo(snippet(cfg.postfix_dir, sender_table), nl=False)
        return
    book = load_rulebook(cfg.rulebook_dir())
    rules = book.emitted()
    files = render_maps(rules, sender_table)
    postfix = postfix_of(cfg)
    problems = check_maps(files, rules, sender_table, postfix)
    if problems:
        for p in problems:
            typer.echo(f"triage: {p}", err=True)
        raise InstallError(f"{len(problems)} problem(s) in the rendered maps; nothing written")
    if out is not None:
        write_maps(out, files, postfix, sender_table)
        typer.echo(f"wrote {len(files)} maps ({len(rules)} rules) to {out}", err=True)
    if install:
        if install_and_reload(postfix, files, sender_table, reload=reload):
            typer.echo(f"installed {len(files)} maps ({len(rules)} rules) in "
                       f"{cfg.postfix_dir}" + (" and reloaded Postfix" if reload else ""),
                       err=True)
        else:  # nothing written: .previous still holds the set before these maps
            typer.echo(f"the maps in {cfg.postfix_dir} are unchanged ({len(rules)} rules)"
                       + ("; reloaded Postfix" if reload else ""), err=True)
    elif reload:
        postfix.reload()
    if out is None and not install:
        for name, text in sorted(files.items()):
            typer.echo(f"==> {name} <==")
            typer.echo(text, nl=False)
