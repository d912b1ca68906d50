"""``triage init``: look at this machine and write a commented triage.toml.

It finds the mail logs (Debian's /var/log/mail.log*, else /var/log/maillog*), reads
~/.procmailrc for the folders Procmail files into (a folder whose name says spam or junk is a
spam folder), and falls back to the Debian defaults for what it cannot find.
"""

from __future__ import annotations

import glob
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Detected", "detect", "procmail_folders", "render"]

_ASSIGN = re.compile(r"^\s*(MAILDIR|DEFAULT)\s*=\s*(\S+)")
_SPAMMY = re.compile(r"spam|junk", re.I)


@dataclass
class Detected:
    """What ``detect`` found, with a note per setting saying where it came from."""

    logs: list[str] = field(default_factory=list)
    spam: list[str] = field(default_factory=list)
    ham: list[str] = field(default_factory=list)
    my_hostnames: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)


def procmail_folders(text: str, home: Path) -> tuple[list[str], str | None]:
    """Delivery folders named in a procmailrc, and its default folder (``DEFAULT``).

    >>> procmail_folders("MAILDIR=$HOME/Maildir\\n:0\\n* ^X-Spam: yes\\n.Spam/\\n", Path("/h"))
    (['/h/Maildir/.Spam'], None)
    """
    maildir = str(home)
    default: str | None = None
    folders: list[str] = []
    in_recipe = False
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = _ASSIGN.match(line)
        if m:
            value = _expand(m.group(2), home, maildir)
            if m.group(1) == "MAILDIR":
                maildir = value
            else:
                default = _folder(value, maildir)
            continue
        if line.startswith(":0"):
            in_recipe = True
            continue
        if in_recipe and line.startswith("*"):
            continue
        if in_recipe and not line.startswith(("|", "!", "{", "}")):
            folders.append(_folder(_expand(line, home, maildir), maildir))
        in_recipe = False
    return list(dict.fromkeys(folders)), default


def _expand(value: str, home: Path, maildir: str) -> str:
    """A procmailrc value without its quotes, ``$HOME`` and ``$MAILDIR`` (also ``${...}``)
    replaced."""
    value = value.strip().strip("\"'")
    for var, sub in (("HOME", str(home)), ("MAILDIR", maildir)):
        value = value.replace("${" + var + "}", sub).replace("$" + var, sub)
    return value


def _folder(name: str, maildir: str) -> str:
    name = name.rstrip("/")
    return name if name.startswith("/") else f"{maildir.rstrip('/')}/{name}"


def detect(home: Path | None = None, log_dir: Path = Path("/var/log")) -> Detected:
    """Look at the machine: logs, Procmail folders, host name."""
    home = home or Path.home()
    d = Detected()
    for pattern in ("mail.log*", "maillog*"):
        if glob.glob(str(log_dir / pattern)):
            d.logs = [str(log_dir / pattern)]
            d.notes["logs"] = f"found {pattern} in {log_dir}"
            break
    else:
        d.logs = [str(log_dir / "mail.log*")]
        d.notes["logs"] = f"no mail log found in {log_dir}: Debian default"
    rc = home / ".procmailrc"
    folders: list[str] = []
    default = None
    if rc.is_file():
        folders, default = procmail_folders(rc.read_text(encoding="utf-8", errors="replace"),
                                            home)
    d.spam = [f for f in folders if _SPAMMY.search(Path(f).name)]
    if d.spam:
        d.notes["spam"] = f"from {rc}"
    else:
        found = [str(p) for p in (home / "Maildir/.Spam", home / "Mail/spam") if p.exists()]
        d.spam = found[:1] or [str(home / "Maildir/.Spam")]
        d.notes["spam"] = "found on disk" if found else "Debian default (not found: check it)"
    inbox = default or (str(home / "Maildir") if (home / "Maildir").is_dir() else None)
    d.ham = [inbox] if inbox else [str(home / "Maildir")]
    d.notes["ham"] = (f"DEFAULT in {rc}" if default else "the inbox: ham is what you keep")
    d.my_hostnames = [socket.getfqdn()]
    d.notes["my_hostnames"] = "this machine's name: add every MX name"
    return d


_EXPLAIN = {
    "logs": "mail.log files or globs; rotated and compressed files are read once each",
    "spam": "folders where leaked spam is filed (Procmail or you move it there)",
    "ham": "folders of legitimate mail: rules are checked against it",
    "my_hostnames": "our MX host names (globs allowed): the Received header they write is "
                    "the trusted one",
    "state_dir": "history (Parquet, one partition per ISO week) and scan state",
    "postfix_dir": "where the Postfix maps are installed",
    "postfix_reload": "whether `triage scan` runs `postfix reload` after installing "
                      "approved maps",
    "trial_days": "days a rule warns (WARN) before it may reject",
    "stale_days": "days without a hit before a rule is proposed for retirement",
    "lock_wait": "seconds a second scan waits for a running one",
    "allowlist": "your own never-block lists (same format as the shipped rules/allowlist.toml): "
                 "correspondents, partners, services no rule may ever refuse",
}


def render(d: Detected, state_dir: str = "~/.local/share/triage",
           postfix_dir: str = "/etc/postfix/triage") -> str:
    """The triage.toml text, each setting with a comment saying what it is and where its
    value came from."""
    def toml_list(values: list[str]) -> str:
        return "[" + ", ".join(_quote(v) for v in values) + "]"

    values = {"logs": toml_list(d.logs), "spam": toml_list(d.spam), "ham": toml_list(d.ham),
              "my_hostnames": toml_list(d.my_hostnames), "state_dir": _quote(state_dir),
              "postfix_dir": _quote(postfix_dir), "postfix_reload": "false",
              "trial_days": "14", "stale_days": "90",
              "lock_wait": "10", "allowlist": "[]"}
    out = ["# triage configuration, written by `triage init`. Relative paths are relative",
           "# to this file. See docs/ARCHITECTURE.md.", ""]
    for key, value in values.items():
        note = d.notes.get(key)
        out.append(_comment(_EXPLAIN[key] + (f" ({note})" if note else "")))
        out.append(f"{key} = {value}")
        out.append("")
    return "\n".join(out)


def _quote(value: str) -> str:
    """A TOML basic string: backslash, quote and every control character escaped (a raw
    newline or control character in a path would make the file fail to load)."""
    out = []
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _comment(text: str) -> str:
    """One comment line, whatever ``text`` holds."""
    return "# " + " ".join(text.split())
