"""Postfix lookup tables read back from their text, answering lookups as Postfix does.

One ``Table`` per map file. ``Table.lookup(key)`` returns what ``postmap -q key type:file``
prints (the value) or None, for the subset of each format that triage writes and a bit more:

- cidr (cidr_table(5)): ``network/len value`` or ``address value``; FIRST match in file order,
  not the longest prefix. The lookup key must be a literal IPv4 or IPv6 address as inet_pton
  reads it (no leading zeros, no zone id); IPv4 keys never match IPv6 patterns and the other
  way round (``::ffff:192.0.2.1`` is an IPv6 key). A pattern with host bits set is skipped,
  as Postfix skips it with a warning.
- pcre (pcre_table(5)): ``/regex/flags value``; first match in file order; the regex ends at
  the first delimiter not preceded by a backslash. Each flag letter TOGGLES an option whose
  default comes from Postfix, not from PCRE: ``i`` caseless (default ON), ``s`` dotall (default
  ON: ``.`` matches the newline of a folded header), ``m`` multiline (off), ``x`` extended
  (off), ``A`` anchored (off), ``E`` dollar_endonly (off; no effect with ``m``), ``U``
  ungreedy (off; it changes what a group captures, not whether a line matches, so it is
  accepted except in a pattern with an atomic group), ``X`` is ignored (Postfix built with
  PCRE2 ignores it with a warning). Any other letter: Postfix skips the line with a warning,
  the matcher raises RuleError. Postfix runs PCRE on bytes, without UTF mode, so non-ASCII
  keys are matched byte by byte and only ASCII letters fold case.
- hash, texthash: exact match of the whole key after case folding (postmap folds keys on
  create and on query); the first of duplicate keys wins. Non-ASCII keys fold as Unicode
  (``\u212a`` matches ``k``), as Postfix does with smtputf8_enable = yes, the default from
  compatibility_level 3.6 on (Debian's fresh-install setting).

Lookup keys whose bytes are not valid UTF-8 (escaped bytes from ``surrogateescape`` that do
not form UTF-8, or a surrogate with no byte form) are never found, in any table type: with
smtputf8_enable = yes Postfix refuses them ("non-UTF-8 key ... malformed UTF-8"), and
``postmap`` ignores hash/texthash lines that are not valid UTF-8. A key is cut at its first
NUL first (a C string).

Common lexical rules (as Postfix's readlline): a line whose first non-blank character is ``#``
is a comment, blank lines are skipped, and a line starting with white space continues the
previous one. ``if``/``endif`` blocks and ``!`` negation are not supported: triage never writes
them, and reading them here raises RuleError instead of guessing.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from triage.emit.pcre_subset import tokens
from triage.errors import RuleError
from triage.model import TableType

# pcre_table(5) flags that toggle a Python re flag; Postfix's defaults are in _PCRE_DEFAULT.
_PCRE_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
_PCRE_DEFAULT = re.IGNORECASE | re.DOTALL
_PCRE_OTHER_FLAGS = "AEUX"  # anchored, dollar_endonly, ungreedy, obsolete "extra" (ignored)
_WS = " \t\r\n\v\f"


@dataclass(frozen=True)
class Entry:
    """One effective line of a map: where it came from, its pattern text and its value."""

    line: int
    pattern: str
    value: str


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continuation lines and drop comments and blank lines, like Postfix's readlline."""
    out: list[tuple[int, str]] = []
    for no, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip(_WS)
        stripped = line.lstrip(_WS)
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in _WS and out:
            # Postfix keeps the continuation's leading white space when it joins the lines.
            out[-1] = (out[-1][0], out[-1][1] + line)
            continue
        out.append((no, stripped))
    return out


def parse_ip(key: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in ``key`` as inet_pton would read it, or None (then a cidr table misses)."""
    if not key or any(c not in "0123456789abcdefABCDEF:." for c in key):
        return None  # excludes zone ids, whitespace, brackets and non-ASCII digits
    try:
        if ":" in key:
            return ipaddress.IPv6Address(key)
        return ipaddress.IPv4Address(key)
    except ValueError:
        return None


def c_string(key: str) -> str:
    """The key as C code sees it: it ends at the first NUL."""
    nul = key.find("\0")
    return key if nul < 0 else key[:nul]


def utf8_key(key: str) -> str | None:
    """The key as Postfix looks it up: cut at the first NUL, its bytes read as UTF-8; None
    when they are not UTF-8 (Postfix refuses such a key and finds nothing)."""
    try:
        return c_string(key).encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:  # bytes that are not UTF-8, or a surrogate with no byte form
        return None


def is_utf8(text: str) -> bool:
    """Whether the bytes ``text`` stands for (``surrogateescape``) are valid UTF-8."""
    try:
        text.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        return False
    return True


def to_bytes_text(key: str) -> str:
    """The key as Postfix sees it (UTF-8 bytes), one str character per byte."""
    return c_string(key).encode("utf-8", "surrogateescape").decode("latin-1")


def fold(key: str) -> str:
    """Case folding of hash keys: ASCII lower-casing, Unicode full case folding otherwise."""
    return key.lower() if key.isascii() else key.casefold()


class Table:
    """A parsed map: ``lookup(key)`` gives the value Postfix would return, or None."""

    type: TableType

    def __init__(self, entries: list[Entry], source: str = "<map>") -> None:
        self.entries = entries
        self.source = source

    def lookup(self, key: str) -> str | None:
        """The value Postfix returns for ``key`` (``postmap -q``), or None."""
        e = self.lookup_entry(key)
        return e.value if e else None

    def lookup_entry(self, key: str) -> Entry | None:
        """The entry that answers ``key``, or None (always None for a non-UTF-8 key)."""
        k = utf8_key(key)
        return None if k is None else self._find(k)

    def _find(self, key: str) -> Entry | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def subset(self, entries: Iterable[Entry]) -> Table:
        """A table of the same type holding only ``entries`` (e.g. one rule's own lines)."""
        return type(self)(list(entries), self.source)


class CidrTable(Table):
    type = TableType.CIDR

    def __init__(self, entries: list[Entry], source: str = "<map>") -> None:
        super().__init__(entries, source)
        self._nets: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, Entry]] = []
        for e in entries:
            net = parse_cidr_pattern(e.pattern, f"{source}:{e.line}")
            if net is not None:
                self._nets.append((net, e))

    def _find(self, key: str) -> Entry | None:
        addr = parse_ip(key)
        if addr is None:
            return None
        for net, entry in self._nets:
            if net.version == addr.version and addr in net:
                return entry
        return None


def parse_cidr_pattern(pattern: str, where: str = "") -> (
        ipaddress.IPv4Network | ipaddress.IPv6Network | None):
    """A cidr table pattern as a network; None when Postfix would skip it (host bits set)."""
    if pattern.startswith(("!", "if", "endif")):
        raise RuleError(f"unsupported cidr syntax in {where}: {pattern!r}")
    addr_text, _, bits = pattern.partition("/")
    if addr_text.startswith("[") and addr_text.endswith("]"):
        addr_text = addr_text[1:-1]
    addr = parse_ip(addr_text)
    if addr is None or (bits and not bits.isdigit()):
        raise RuleError(f"bad cidr pattern in {where}: {pattern!r}")
    length = int(bits) if bits else addr.max_prefixlen
    try:
        return ipaddress.ip_network(f"{addr}/{length}", strict=True)
    except ValueError as exc:
        if "host bits" in str(exc):
            return None
        raise RuleError(f"bad cidr pattern in {where}: {pattern!r}") from exc


def split_pcre(line: str, where: str = "") -> tuple[str, str, str, str]:
    """``/regex/flags value`` -> (regex, flags, value, "/regex/flags"), with Postfix's
    delimiter scan (a backslash protects the next character, the delimiter included)."""
    if line.startswith("!") or re.match(r"(?i)(if|endif)\b", line):
        raise RuleError(f"unsupported pcre syntax in {where}: {line[:40]!r}")
    delim, i = line[0], 1
    while i < len(line):
        if line[i] == "\\":
            i += 2
            continue
        if line[i] == delim:
            break
        i += 1
    if i >= len(line):
        raise RuleError(f"no closing regexp delimiter {delim!r} in {where}")
    regex, rest = line[1:i], line[i + 1:]
    j = 0
    while j < len(rest) and rest[j] not in _WS:
        j += 1
    flags, value = rest[:j], rest[j:].strip(_WS)
    if not value:
        raise RuleError(f"no action after the regexp in {where}")
    return regex, flags, value, line[: i + 1 + j]


@dataclass(frozen=True)
class PcrePattern:
    """A pcre table pattern compiled for Python's re; ``search`` answers as Postfix would
    on the key's bytes (one str character per byte, see ``to_bytes_text``)."""

    rx: re.Pattern[str]
    anchored: bool = False

    def search(self, text: str) -> bool:
        return (self.rx.match(text) if self.anchored else self.rx.search(text)) is not None


def compile_pcre(regex: str, flags: str = "", where: str = "") -> PcrePattern:
    """Compile a Postfix pcre pattern for ``Python re`` with the same meaning on byte keys.

    Postfix's defaults differ from PCRE's: caseless and dotall are ON, and each flag letter
    toggles its option (``/a.b/`` crosses a newline, ``/a.b/s`` does not, ``/A/i`` is case
    sensitive). See the module docstring for the letters."""
    opts, anchored, dollar_endonly = _PCRE_DEFAULT, False, False
    for f in flags:
        if f in _PCRE_FLAGS:
            opts ^= _PCRE_FLAGS[f]
        elif f == "A":
            anchored = not anchored
        elif f == "E":
            dollar_endonly = not dollar_endonly
        elif f == "U":
            # Ungreedy changes what a group captures, not whether the pattern matches, as
            # long as backtracking can undo every choice: not so inside an atomic group.
            if "(?>" in regex:
                raise RuleError(f"regexp flag 'U' with an atomic group is not supported "
                                f"in {where}")
        elif f != "X":  # X: Postfix with PCRE2 ignores it ("obsolete regexp option")
            raise RuleError(f"unsupported regexp flag {f!r} in {where}")
    if dollar_endonly and not opts & re.MULTILINE:  # pcre: E is ignored when m is set
        regex = _dollar_at_end_only(regex)
    try:
        # ASCII: PCRE in Postfix runs without UTF mode, so classes and case are ASCII only.
        return PcrePattern(re.compile(regex, opts | re.ASCII), anchored)
    except (re.error, OverflowError, RecursionError) as exc:
        raise RuleError(f"bad regexp in {where}: {exc}") from exc


def _dollar_at_end_only(regex: str) -> str:
    """``regex`` with each ``$`` metacharacter (not escaped, not in a class) written ``\\Z``:
    PCRE's DOLLAR_ENDONLY, where ``$`` no longer matches before a final newline."""
    return "".join("\\Z" if t == "$" else t for t in tokens(regex))


class PcreTable(Table):
    type = TableType.PCRE

    def __init__(self, entries: list[Entry], source: str = "<map>") -> None:
        super().__init__(entries, source)
        self._res: list[tuple[PcrePattern, Entry]] = []
        for e in entries:
            regex, flags, _, _ = split_pcre(e.pattern + " x", f"{source}:{e.line}")
            self._res.append((compile_pcre(regex, flags, f"{source}:{e.line}"), e))

    def _find(self, key: str) -> Entry | None:
        k = to_bytes_text(key)
        for rx, entry in self._res:
            if rx.search(k):
                return entry
        return None


class HashTable(Table):
    type = TableType.HASH

    def __init__(self, entries: list[Entry], source: str = "<map>") -> None:
        super().__init__(entries, source)
        self._keys: dict[str, Entry] = {}
        for e in entries:
            self._keys.setdefault(fold(e.pattern), e)  # postmap keeps the first duplicate

    def _find(self, key: str) -> Entry | None:
        return self._keys.get(fold(key))


class TexthashTable(HashTable):
    type = TableType.TEXTHASH


_CLASSES: dict[TableType, type[Table]] = {
    TableType.CIDR: CidrTable, TableType.PCRE: PcreTable,
    TableType.HASH: HashTable, TableType.TEXTHASH: TexthashTable,
}


def parse_table(text: str | Iterable[str], table: TableType | str,
                source: str = "<map>") -> Table:
    """Read map text (or its lines) of the given table type into a ``Table``."""
    ttype = TableType(table)
    if not isinstance(text, str):
        text = "\n".join(text)
    entries: list[Entry] = []
    hashed = ttype in (TableType.HASH, TableType.TEXTHASH)
    for no, line in logical_lines(text):
        if hashed and not is_utf8(line):
            continue  # postmap: "non-UTF-8 input ... -- ignoring this line"
        if ttype is TableType.PCRE:
            _, _, value, head = split_pcre(line, f"{source}:{no}")
            entry = Entry(no, head, value)
        else:
            parts = line.split(None, 1)
            if len(parts) < 2:
                raise RuleError(f"no value after the key in {source}:{no}")
            entry = Entry(no, parts[0], parts[1].strip(_WS))
        if not is_utf8(entry.value):  # Postfix fails every lookup this line answers
            raise RuleError(f"value not valid UTF-8 in {source}:{no}")
        entries.append(entry)
    return _CLASSES[ttype](entries, source)


def read_table(path: Path, table: TableType | str) -> Table:
    """Read a map file (the text source, not a .db)."""
    return parse_table(path.read_text(encoding="utf-8", errors="surrogateescape"), table,
                       str(path))
