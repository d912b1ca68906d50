"""triage.toml -> Config.

Lookup order: ``--config FILE``, ``$TRIAGE_CONFIG``, ``./triage.toml``,
``~/.config/triage/triage.toml``; when none exists the Debian defaults apply.
Relative paths in a config file are relative to the file's directory.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from triage.errors import ConfigError

DEFAULT_RULE_ID_PATTERN = r"\brule (R\d{4,})\b"
# The table types `sender_table` may name (triage.model.TableType's for the sender map).
SENDER_TABLES = ("hash", "texthash")


@dataclass(frozen=True)
class Config:
    source: Path | None = None
    logs: tuple[str, ...] = ("/var/log/mail.log*",)
    # The first of ~/Maildir/.Spam and ~/Mail/spam that exists (see _default_spam).
    spam: tuple[str, ...] = field(default_factory=lambda: _default_spam())
    ham: tuple[str, ...] = ("~/Maildir",)
    my_hostnames: tuple[str, ...] = ()
    trusted_relays: tuple[str, ...] = ()
    state_dir: Path = field(default_factory=lambda: Path("~/.local/share/triage").expanduser())
    postfix_dir: Path = Path("/etc/postfix/triage")
    # The rulebook (TOML files); None = <state_dir>/rules. See rulebook_dir().
    rules_dir: Path | None = None
    # Postfix's config directory for `postfix -c DIR reload` and postmap; None = Postfix's own.
    postfix_config_dir: Path | None = None
    # How to run the postfix command (a shell-like word list), e.g. a wrapper for a test bench.
    postfix_command: str = "postfix"
    # Whether `triage scan` runs `postfix reload` after installing approved maps (off: cidr
    # and pcre maps then take effect as Postfix's processes restart, or at your reload).
    postfix_reload: bool = False
    # Table type of the sender map: "hash" (postmap builds a .db) or "texthash".
    sender_table: str = "hash"
    # Time zone of traditional syslog stamps (which carry none); None = this machine's zone.
    log_timezone: str | None = None
    # Year of the first traditional stamp of each log file, for logs whose modification time
    # says nothing about their content (copied, checked out, archived). None = infer the year
    # from the file's modification time, which is right for live /var/log files.
    log_year: int | None = None
    # A regular expression whose first group is the rule id in reject/warn texts.
    rule_id_pattern: str = DEFAULT_RULE_ID_PATTERN
    # How long a second `triage scan` waits for the first one's lock before it gives up.
    lock_wait: float = 10.0
    # A rule on trial (WARN) may become active after this many days without a ham hit.
    trial_days: int = 14
    # A rule with no hit for this many days becomes a candidate for retirement.
    stale_days: int = 90
    # The operator's own allowlist files (rules/allowlist.toml's format), added to the shipped
    # one: nothing they name is ever proposed. Relative paths are relative to this file.
    allowlist: tuple[str, ...] = ()

    def rulebook_dir(self) -> Path:
        """Where the rule files live."""
        return self.rules_dir if self.rules_dir is not None else self.state_dir / "rules"

    def resolve(self, path: str) -> str:
        """Expand ``~`` and make ``path`` relative to the config file's directory."""
        p = os.path.expanduser(path)
        if self.source is not None and not os.path.isabs(p):
            p = str(self.source.parent / p)
        return p

    def allowlist_files(self) -> tuple[str, ...]:
        """The ``allowlist`` setting with each path resolved (see ``resolve``)."""
        return tuple(self.resolve(p) for p in self.allowlist)


_LIST_KEYS = ("logs", "spam", "ham", "my_hostnames", "trusted_relays", "allowlist")
_PATH_KEYS = ("state_dir", "postfix_dir", "rules_dir", "postfix_config_dir")
_STR_KEYS = ("log_timezone", "rule_id_pattern", "postfix_command", "sender_table")
_NUM_KEYS = ("lock_wait", "trial_days", "stale_days", "log_year")
_BOOL_KEYS = ("postfix_reload",)


def _default_spam() -> tuple[str, ...]:
    """Debian/Procmail habits: Maildir++ ``.Spam`` or ``~/Mail/spam`` (mbox or MH)."""
    for cand in ("~/Maildir/.Spam", "~/Mail/spam"):
        if Path(cand).expanduser().exists():
            return (cand,)
    return ("~/Maildir/.Spam",)


def find_config(explicit: str | Path | None = None) -> Path | None:
    """Return the config file to use, or None for built-in defaults."""
    if explicit:
        p = Path(explicit).expanduser()
        if p.is_dir():
            raise ConfigError("is a directory, not a config file", file=p)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        return p
    env = os.environ.get("TRIAGE_CONFIG")
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise ConfigError(f"$TRIAGE_CONFIG names a missing file: {p}")
        return p
    for cand in (Path("triage.toml"), Path("~/.config/triage/triage.toml").expanduser()):
        if cand.is_file():
            return cand
    return None


def load_config(explicit: str | Path | None = None) -> Config:
    """Load the configuration (see module docstring for the lookup order)."""
    path = find_config(explicit)
    if path is None:
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=path) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not valid TOML: not UTF-8 text ({exc.reason} at byte "
                          f"{exc.start})", file=path) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=path) from exc
    section = data.get("triage", data)
    if not isinstance(section, dict):
        raise ConfigError("'triage' must be a table ([triage]) of settings", file=path)
    if section is not data and set(data) - {"triage"}:
        # settings outside [triage] would be ignored without a word
        raise ConfigError("settings outside the [triage] table: "
                          f"{', '.join(sorted(set(data) - {'triage'}))}", file=path)
    kwargs: dict[str, object] = {"source": path.resolve()}
    unknown = (set(section) - set(_LIST_KEYS) - set(_PATH_KEYS) - set(_STR_KEYS)
               - set(_NUM_KEYS) - set(_BOOL_KEYS))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}", file=path)
    for key in _LIST_KEYS:
        if key in section:
            val = section[key]
            if isinstance(val, str):
                val = [val]
            if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
                raise ConfigError(f"setting '{key}' must be a string or a list of strings",
                                  file=path)
            kwargs[key] = tuple(val)
    for key in _STR_KEYS:
        if key in section:
            if not isinstance(section[key], str):
                raise ConfigError(f"setting '{key}' must be a string", file=path)
            kwargs[key] = section[key]
    _check_strings(kwargs, path)
    for key in _NUM_KEYS:
        if key in section:
            val = section[key]
            if (isinstance(val, bool) or not isinstance(val, (int, float)) or val < 0
                    or not math.isfinite(val)):
                raise ConfigError(f"setting '{key}' must be a non-negative number", file=path)
            if key == "log_year" and not 1970 <= val <= 9999:
                raise ConfigError("setting 'log_year' must be a year such as 2025", file=path)
            kwargs[key] = val if key == "lock_wait" else int(val)
    for key in _BOOL_KEYS:
        if key in section:
            if not isinstance(section[key], bool):
                raise ConfigError(f"setting '{key}' must be true or false", file=path)
            kwargs[key] = section[key]
    cfg = Config(**kwargs)  # type: ignore[arg-type]
    for key in _PATH_KEYS:
        if key in section:
            if not isinstance(section[key], str):
                raise ConfigError(f"setting '{key}' must be a path string", file=path)
            cfg = _replace(cfg, key, Path(cfg.resolve(section[key])))
    return cfg


def _check_strings(settings: dict[str, object], path: Path) -> None:
    """The string settings that are read much later (a parse, an emit) checked now, so a
    wrong value is one line naming this file rather than a traceback from deep inside."""
    zone = settings.get("log_timezone")
    if isinstance(zone, str) and zone:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(zone)
        except (ValueError, OSError, LookupError) as exc:  # ZoneInfoNotFoundError: KeyError
            raise ConfigError(f"setting 'log_timezone': unknown time zone {zone!r} (use an "
                              "IANA name such as 'UTC' or 'Europe/Berlin')", file=path) from exc
    pattern = settings.get("rule_id_pattern")
    if isinstance(pattern, str):
        try:
            groups = re.compile(pattern).groups
        except re.error as exc:
            raise ConfigError(f"setting 'rule_id_pattern' is not a valid regular expression: "
                              f"{exc}", file=path) from exc
        if groups < 1:
            raise ConfigError("setting 'rule_id_pattern' needs a group around the rule id, "
                              r"as in 'rule (R\d{4,})'", file=path)
        if pattern != DEFAULT_RULE_ID_PATTERN:
            # the log reader matches it with polars (Rust's regex: no look-around and no
            # backreferences), the emitter with Python's re: it must suit both
            import polars as pl

            try:
                pl.Series([""]).str.extract(pattern, 1)
            except pl.exceptions.PolarsError as exc:
                why = [ln.strip() for ln in str(exc).splitlines()
                       if ln.strip().startswith("error:")]
                raise ConfigError("setting 'rule_id_pattern' is not a regular expression the "
                                  "log reader can use (" + (why[0] if why else "unsupported "
                                  "syntax") + ")", file=path) from exc
    table = settings.get("sender_table")
    if table is not None and table not in SENDER_TABLES:
        raise ConfigError(f"setting 'sender_table' must be one of {', '.join(SENDER_TABLES)}",
                          file=path)


def _replace(cfg: Config, key: str, value: Path) -> Config:
    from dataclasses import replace

    return replace(cfg, **{key: value})  # type: ignore[arg-type]
