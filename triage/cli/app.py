"""The `triage` command line: thin wrappers around library functions.

Each command parses its options, calls one library function and renders the result.
Library errors (TriageError) become a one-line message and exit status 1 in one place: main().
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

# polars allocates through jemalloc, which by default keeps freed pages for 10 s and gives
# each thread one of 4 arenas per core. The log reader frees a block's worth of frames per
# block on several threads (parse workers, polars' pool, the writer): one arena lets each
# thread reuse the pages another freed, and pages still unused after 0.5 s go back to the
# system. Measured on 1M lines: peak RSS 445 -> 420 MB at the same CPU time (narenas:1 -20 MB,
# 0.5 s instead of 1 s -5 MB). Returning them at once (decay 0) would save about 30 MB more
# but cost 3-4 s of system time (page faults on every reuse). Must be set before polars is
# first imported; a user's own setting wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "narenas:1,dirty_decay_ms:500,muzzy_decay_ms:0")

import typer

from triage import __version__
from triage.errors import TriageError

app = typer.Typer(
    name="triage",
    help="Turn a Postfix mail.log and leaked spam into reviewed Postfix blacklist rules.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="triage.toml to use (default: $TRIAGE_CONFIG, "
                 "./triage.toml, ~/.config/triage/triage.toml).", show_default=False),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"triage {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """triage: Postfix log and leaked-spam analysis that proposes blacklist rules."""


def main() -> None:
    """Console-script entry point: domain errors become one line on stderr and exit 1.

    Usage errors are click's (exit 2, with the usage line); Ctrl-C exits 130.
    """
    try:
        app(args=spread_multi_options(sys.argv[1:]))
    except TriageError as exc:
        typer.echo(f"triage: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        sys.exit(130)


# Options that take several values after one flag (`--spam A B`), for commands without
# positional arguments, where that reading is unambiguous. click wants one value per flag.
MULTI_VALUE_OPTIONS = {"evaluate": ("--spam", "--ham", "--log", "--my-hostname")}


def spread_multi_options(args: list[str]) -> list[str]:
    """``evaluate --spam A B --ham C`` -> ``evaluate --spam A --spam B --ham C``.

    >>> spread_multi_options(["evaluate", "--spam", "a", "b", "--json"])
    ['evaluate', '--spam', 'a', '--spam', 'b', '--json']
    """
    if not args or args[0] not in MULTI_VALUE_OPTIONS:
        return args
    multi = MULTI_VALUE_OPTIONS[args[0]]
    out, flag = [args[0]], None
    for arg in args[1:]:
        if arg.startswith("-"):
            flag = arg if arg in multi else None
            out.append(arg)
        elif flag is not None and out[-1] != flag:
            out += [flag, arg]
        else:
            out.append(arg)
    return out


# Commands are defined in their own modules and registered here, so parallel work on
# different commands does not touch the same lines.
from triage.cli import commands  # noqa: E402,F401
