"""Postfix map text from rules, and the one matcher that answers as Postfix would.

Rendering (every attacker-derived string is validated or escaped for its table type):

    >>> from triage.model import Rule, RuleKind, RuleState
    >>> render_line(Rule("R0042", RuleKind.CLIENT_CIDR, "192.0.2.0/24", state=RuleState.ACTIVE))
    '192.0.2.0/24 REJECT 5.7.1 blocked by rule R0042'
    >>> helo = Rule("R0043", RuleKind.HELO, pcre_literal("a b/c"), state=RuleState.TRIAL)
    >>> print(render_line(helo))
    /^a\\x20b\\/c$/ WARN trial rule R0043

Matching, for the backtest and for checks of emitted files (semantics in ``triage.emit.tables``):

    maps = MapSet.from_rules(rules)        # or MapSet.from_dir(Path("/etc/postfix/triage"))
    v = maps.check(client_ip="192.0.2.7", client_name="unknown", helo="x", sender="a@b.example")
    v.refused, v.rule_id, v.warnings       # True, "R0042", ()

``MapSet.check`` walks the restrictions in the order the main.cf snippet wires them
(``snippet()``): check_client_access on the cidr map then the client-name pcre map (each looked
up with the client name, then the client address, as Postfix does for non-fixed tables),
check_helo_access, check_sender_access (user@domain, domain, parent domains, user@; the Debian
default parent_domain_matches_subdomains includes smtpd_access_maps), then header_checks on
each header line. The first REJECT ends the check; a WARN is recorded and the walk goes on.
``matches(rule_or_lines, key)`` is the single-table form: the value Postfix would return.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from triage.config import DEFAULT_RULE_ID_PATTERN
from triage.emit.pcre_subset import non_utf8_escape, pcre2_refusal, unsafe_construct
from triage.emit.tables import Table, compile_pcre, is_utf8, parse_table, read_table
from triage.errors import RuleError
from triage.model import Action, Rule, RuleKind, RuleState, TableType, Verb

__all__ = [
    "V4_WIDEST_PREFIX", "V6_WIDEST_PREFIX", "MapSet", "Verdict", "matches", "pcre_literal",
    "render_action", "render_line", "render_map", "snippet", "validate_key",
]

_DOMAIN_RE = re.compile(r"(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+"
                        r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
_HEADER_KEY_RE = re.compile(r"\^[A-Za-z0-9][A-Za-z0-9-]*:")
_ACTION_TEXT_RE = re.compile(r"[A-Za-z0-9 ,.;:()'_-]{1,200}\Z")
_STATUS_RE = re.compile(r"5\.\d{1,3}\.\d{1,3}\Z")
# Anything in a reject text a log reader could take for a rule id: "R" and four or more
# digits anywhere, in either case (the rulebook's id syntax, ``model.RULE_ID_RE``), and
# whatever the default ``rule_id_pattern`` finds. ``render_action`` appends the rule's own
# id, so the text never needs one.
_RULE_ID_TOKEN_RE = re.compile(r"r\d{4,}", re.IGNORECASE)
_DEFAULT_RULE_ID_RE = re.compile(DEFAULT_RULE_ID_PATTERN)

# The widest network a client_cidr key may name, whoever wrote it (proposals, review edits,
# hand-edited rule files). The generaliser proposes no wider than /24 and /48
# (``generalise.Limits``); a person may widen by hand to a whole provider block (a /16 is
# 65536 addresses; an IPv6 /32 is a whole ISP's allocation), no further: a wider network
# takes in unrelated organisations and their mail servers.
V4_WIDEST_PREFIX = 16
V6_WIDEST_PREFIX = 32

# Networks a blacklist rule may not touch: no Internet client connects from them, and our
# own LAN (RFC 1918, CGNAT/VPN ranges) reaches Postfix through permit_mynetworks before any
# map, so such a rule is pointless at best and a hazard if mynetworks is ever narrowed.
# Documentation ranges (RFC 5737, RFC 3849) are allowed: samples and tests use them.
_NOT_CLIENT_NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
    (ipaddress.IPv4Network("0.0.0.0/8"), "'this network' (unspecified, RFC 1122)"),
    (ipaddress.IPv4Network("10.0.0.0/8"), "private (RFC 1918)"),
    (ipaddress.IPv4Network("100.64.0.0/10"), "shared address space (carrier-grade NAT, "
                                             "RFC 6598)"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "loopback"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "link-local"),
    (ipaddress.IPv4Network("172.16.0.0/12"), "private (RFC 1918)"),
    (ipaddress.IPv4Network("192.168.0.0/16"), "private (RFC 1918)"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "multicast"),
    (ipaddress.IPv4Network("240.0.0.0/4"), "reserved (and broadcast)"),
    (ipaddress.IPv6Network("::/128"), "unspecified"),
    (ipaddress.IPv6Network("::1/128"), "loopback"),
    (ipaddress.IPv6Network("fc00::/7"), "unique local (private)"),
    (ipaddress.IPv6Network("fe80::/10"), "link-local"),
    (ipaddress.IPv6Network("ff00::/8"), "multicast"),
)
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")

# Probes for catch-all regexes: names as different as a HELO or client name gets. A key
# that matches every one of them (or the empty string) is no rule but a wall. Short and odd
# ones first: the test stops at the first probe a key misses, so a key whose backtracking
# grows with the length of a name (which the matcher would meet in the backtest anyway)
# is usually let go on a short one.
_NAME_PROBES = ("[192.0.2.1]", "a", "unknown", "localhost", "mail.example.com",
                "dsl-198-51-100-7.dynamic.example.net")
# ... and header values: the key's own header name is put before each.
_HEADER_PROBES = ("hello", "=?UTF-8?B?SGk=?=", "Re: meeting tomorrow",
                  "Alice <alice@example.org>", "<20260105.1234@mail.example.com>")


def pcre_literal(text: str, anchored: bool = True) -> str:
    """A regex matching ``text`` literally (whole key when anchored). Everything but letters,
    digits, ``-`` and ``_`` becomes an escape, so the pattern has no white space, no
    delimiter and no control character, whatever ``text`` holds. Non-ASCII text is escaped
    byte by byte (Postfix's PCRE sees UTF-8 bytes)."""
    out = []
    for b in text.encode("utf-8", "surrogateescape"):
        c = chr(b)
        if c.isascii() and (c.isalnum() or c in "-_"):
            out.append(c)
        elif 0x21 <= b < 0x7F:
            out.append("\\" + c)
        else:
            out.append(f"\\x{b:02x}")
    body = "".join(out)
    return f"^{body}$" if anchored else body


def validate_key(kind: RuleKind, key: str, *,
                 verify_pcre: Callable[[str], str | None] | None = None) -> str:
    """Return the normalised key for ``kind``, or raise RuleError.

    - any kind: UTF-8 text (no escaped byte that is not part of UTF-8, no lone surrogate:
      Postfix refuses lookup keys that are not UTF-8, so such a rule never matches).
    - client_cidr: an IPv4/IPv6 address or network; host bits are cleared ("192.0.2.9/24" ->
      "192.0.2.0/24"), a bare address gets /32 or /128; no zone id, no IPv4-mapped networks;
      no wider than ``V4_WIDEST_PREFIX`` (/16) or ``V6_WIDEST_PREFIX`` (/32); nothing that
      overlaps loopback, private (RFC 1918, IPv6 unique local), shared (CGNAT), link-local,
      unspecified, multicast or reserved space (IPv6: outside global unicast 2000::/3).
    - client_name, helo, header: a regex in the subset where Python's re and PCRE agree:
      printable ASCII only (use \\xHH escapes, whose byte runs must be UTF-8), compiles in
      Python and, as far as ``pcre_subset.pcre2_refusal`` can tell, in PCRE2 (repeat counts
      up to 65535, no POSIX collating elements, nesting and size within PCRE2's limits),
      none of the constructs in ``pcre_subset.unsafe_construct``; a header key starts with
      ``^Name:``; no catch-all (``_refuse_catch_all``: a name regex that matches the empty
      string or every one of a few very different names, a header regex that matches every
      one of a few very different values of its header). ``verify_pcre(regex)`` (e.g.
      ``install.Postfix.pcre_error``, which asks the real postmap) may add its refusal: it
      returns an error message or None.
    - sender_domain: a lower-case DNS name of LDH labels with at least one dot.
    """
    if not isinstance(key, str) or not key:
        raise RuleError(f"empty {kind} key")
    if not is_utf8(key):
        raise RuleError(f"{kind} key is not valid UTF-8 (it holds bytes that are not UTF-8 "
                        f"text; Postfix never matches those): {key!r}")
    if kind is RuleKind.CLIENT_CIDR:
        return _validate_cidr(key)
    if kind is RuleKind.SENDER_DOMAIN:
        dom = key.lower().rstrip(".")
        if not _DOMAIN_RE.match(dom):
            raise RuleError(f"not a domain name: {key!r}")
        return dom
    return _validate_regex(kind, key, verify_pcre)


def _validate_regex(kind: RuleKind, key: str,
                    verify_pcre: Callable[[str], str | None] | None) -> str:
    if any(not (0x20 < ord(c) < 0x7F) for c in key):
        raise RuleError(f"{kind} regex has white space, control or non-ASCII characters "
                        f"(write them as \\xHH): {key!r}")
    bad = unsafe_construct(key)
    if bad:
        raise RuleError(f"{kind} regex uses {bad!r}, outside the supported subset: {key!r}")
    if key.endswith("\\") and not key.endswith("\\\\"):
        raise RuleError(f"{kind} regex ends with a lone backslash: {key!r}")
    if kind is RuleKind.HEADER and not _HEADER_KEY_RE.match(key):
        raise RuleError(f"header regex must start with ^Header-Name: ({key!r})")
    bad = non_utf8_escape(key)
    if bad:
        raise RuleError(f"{kind} regex escapes bytes {bad} that are not UTF-8: Postfix "
                        f"refuses such keys, so it could never match (write each non-ASCII "
                        f"character as its whole UTF-8 sequence): {key!r}")
    bad = pcre2_refusal(key)
    if bad:
        raise RuleError(f"bad {kind} regex {key!r}: it has {bad}, which Postfix's PCRE2 "
                        "refuses")
    try:
        re.compile(key, re.ASCII)
    except (re.error, OverflowError, RecursionError) as exc:
        raise RuleError(f"bad {kind} regex {key!r}: {exc}") from exc
    _refuse_catch_all(kind, key)
    if verify_pcre is not None:
        err = verify_pcre(_escape_delimiter(key))
        if err:
            raise RuleError(f"postmap refuses the {kind} regex {key!r}: {err}")
    return key


def _refuse_catch_all(kind: RuleKind, key: str) -> None:
    """Raise RuleError for a regex that would match (nearly) every lookup, as Postfix
    matches it (caseless, unanchored search). Deliberately a concrete, conservative test:
    a name regex is refused when it matches the empty string (``.*``, ``^``, ``(?:)``,
    ``x?`` ...: it can match without reading a character of the name) or all of
    ``_NAME_PROBES``; a header regex when it matches ``Name: value`` for all of
    ``_HEADER_PROBES``. A real rule names a pool, a domain or a text, so it misses most
    of them."""
    rx = compile_pcre(key, where=f"{kind} key")
    if kind is RuleKind.HEADER:
        name = key[1:].partition(":")[0]
        if all(rx.search(f"{name}: {v}") for v in _HEADER_PROBES):
            raise RuleError(f"{kind} regex {key!r} matches every {name} header tried "
                            f"({len(_HEADER_PROBES)} very different values): a catch-all "
                            "would refuse most mail")
        return
    if rx.search(""):
        raise RuleError(f"{kind} regex {key!r} matches the empty string: such a regex "
                        "matches every name (as '.*' or '^' do) or, like '^$', none")
    if all(rx.search(v) for v in _NAME_PROBES):
        raise RuleError(f"{kind} regex {key!r} matches every name tried "
                        f"({' '.join(_NAME_PROBES)}): a catch-all would refuse most mail")


def _validate_cidr(key: str) -> str:
    if any(c not in "0123456789abcdefABCDEF:./" for c in key):
        raise RuleError(f"not an address or network: {key!r}")
    try:
        net = ipaddress.ip_network(key, strict=False)
    except ValueError as exc:
        raise RuleError(f"not an address or network: {key!r}") from exc
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(
            ipaddress.IPv6Network("::ffff:0:0/96")):
        raise RuleError(f"IPv4-mapped network never matches an IPv4 client: {key!r}")
    widest = V4_WIDEST_PREFIX if net.version == 4 else V6_WIDEST_PREFIX
    if net.prefixlen < widest:
        raise RuleError(f"network {net.with_prefixlen} is too wide: a client_cidr rule may "
                        f"name at most a /{widest} ({key!r})")
    for special, what in _NOT_CLIENT_NETWORKS:
        if special.version == net.version and net.overlaps(special):
            raise RuleError(f"network {net.with_prefixlen} overlaps {special.with_prefixlen}, "
                            f"{what}: no Internet client connects from there ({key!r})")
    if isinstance(net, ipaddress.IPv6Network) and not net.subnet_of(_V6_GLOBAL_UNICAST):
        raise RuleError(f"network {net.with_prefixlen} is outside IPv6 global unicast "
                        f"{_V6_GLOBAL_UNICAST} (reserved): no Internet client connects from "
                        f"there ({key!r})")
    return net.with_prefixlen


def _escape_delimiter(regex: str) -> str:
    """Put a backslash before every ``/`` not already escaped (Postfix ends the regex at the
    first unescaped delimiter, even inside a character class)."""
    out, i = [], 0
    while i < len(regex):
        c = regex[i]
        if c == "\\" and i + 1 < len(regex):
            out.append(regex[i:i + 2])
            i += 2
            continue
        out.append("\\/" if c == "/" else c)
        i += 1
    return "".join(out)


def render_action(action: Action, rid: str) -> str:
    """``REJECT 5.7.1 blocked by rule R0042`` or ``WARN trial rule R0042``. The text may
    hold no rule id (``rid`` is appended; the first id in a log line is the one credited)."""
    if action.verb is Verb.WARN:
        return f"WARN trial rule {rid}"
    if not _STATUS_RE.match(action.status):
        raise RuleError(f"{rid}: enhanced status must look like 5.7.1, not {action.status!r}")
    if not _ACTION_TEXT_RE.match(action.text):
        # no '$' (pcre substitution), no newline, nothing Postfix could read as a second verb
        raise RuleError(f"{rid}: reject text must be plain printable text: {action.text!r}")
    found = _DEFAULT_RULE_ID_RE.search(action.text) or _RULE_ID_TOKEN_RE.search(action.text)
    if found:
        # the log reader and MapSet take the first id in the line: this one, not ``rid``
        raise RuleError(f"{rid}: reject text must not name a rule id ({found.group(0)!r}): "
                        f"the emitter appends 'by rule {rid}' itself: {action.text!r}")
    return f"REJECT {action.status} {action.text} by rule {rid}"


def render_line(rule: Rule, table: TableType | None = None) -> str:
    """The map line for ``rule`` (its effective action: WARN while on trial)."""
    table = TableType(table or rule.kind.table)
    if table not in rule.kind.tables:
        raise RuleError(f"{rule.id}: a {rule.kind} rule cannot go in a {table} table")
    key = validate_key(rule.kind, rule.key)
    action = render_action(rule.effective_action(), rule.id)
    if table is TableType.PCRE:
        return f"/{_escape_delimiter(key)}/ {action}"
    return f"{key} {action}"


def _order(rule: Rule) -> tuple[object, ...]:
    """Where ``rule``'s line goes in its map. Postfix uses the FIRST matching line of a cidr
    or pcre table, and a WARN answer ends that table's lookup like DUNNO. So:

    - cidr: every REJECT (active) line before every WARN (trial) line, so a trial network
      never shields an active one (a trial /32 inside an active /24 still rejects); within
      one action the narrowest network first, so the most specific rule is the one named.
    - pcre: REJECT lines before WARN lines, each group by rule id (older rules first).
    - hash/texthash: an exact lookup, the order does not matter; by key, for stable diffs.
    """
    rank = 0 if rule.effective_action().verb is Verb.REJECT else 1
    if rule.kind is RuleKind.CLIENT_CIDR:
        net = ipaddress.ip_network(validate_key(rule.kind, rule.key))
        return (rank, net.version, -net.prefixlen, int(net.network_address), rule.id)
    if rule.kind is RuleKind.SENDER_DOMAIN:
        return (validate_key(rule.kind, rule.key), rule.id)
    return (rank, rule.id)


def render_map(kind: RuleKind, rules: Iterable[Rule], table: TableType | None = None) -> str:
    """The whole map file for ``kind``: a header comment, then one line per emitted rule
    (trial and active) in a stable order. Two rules with the same key are an error."""
    table = TableType(table or kind.table)
    chosen = sorted((r for r in rules if r.kind is kind and r.state.emitted), key=_order)
    seen: dict[str, str] = {}
    for r in chosen:
        k = validate_key(kind, r.key)
        if k in seen:
            raise RuleError(f"{r.id} and {seen[k]} have the same {kind} key {k!r}")
        seen[k] = r.id
    left_out = shielding_trials(chosen) if kind is RuleKind.SENDER_DOMAIN else {}
    head = [f"# triage {kind} map for {kind.hook} ({table}); generated by `triage emit`,",
            "# edit the rulebook, not this file.",
            f"# {len(chosen)} rule(s)."]
    lines = [f"# {r.id} (trial) left out: {left_out[r.id]}" if r.id in left_out
             else render_line(r, table) for r in chosen]
    return "\n".join(head + lines) + "\n"


def shielding_trials(chosen: Sequence[Rule]) -> dict[str, str]:
    """Trial sender rules whose domain lies under an active rule's domain, with why they are
    left out of the map. Postfix looks the sender's domain up before its parent domains and
    stops at the first key found; a WARN answer ends the lookup like DUNNO, so a trial line
    for sub.spam.example would shield that subdomain from the active REJECT of spam.example.
    Left out, its senders meet the active rule, which is stronger."""
    active = {validate_key(r.kind, r.key): r.id for r in chosen
              if r.state.emitted and r.effective_action().verb is Verb.REJECT}
    out: dict[str, str] = {}
    for r in chosen:
        if not r.state.emitted or r.id in active.values():
            continue
        name = validate_key(r.kind, r.key)
        while "." in name:
            name = name.split(".", 1)[1]
            if name in active:
                out[r.id] = f"{r.key} is under {name} of active {active[name]}, which refuses it"
                break
    return out


def snippet(maps_dir: str | Path, sender_table: TableType = TableType.HASH) -> str:
    """The main.cf lines that wire the maps in, after the permits for our own clients."""
    d = str(maps_dir).rstrip("/")
    permits = "permit_mynetworks, permit_sasl_authenticated"
    st = TableType(sender_table)
    return "\n".join([
        "# triage: blacklist maps (authenticated and local clients are never checked)",
        "# mynetworks must hold your own relays (trusted_relays in triage.toml): the backtest",
        "# lets them pass here, as permit_mynetworks does; only header_checks see their mail",
        f"smtpd_client_restrictions = {permits},",
        f"    check_client_access cidr:{d}/{RuleKind.CLIENT_CIDR.map_name},",
        f"    check_client_access pcre:{d}/{RuleKind.CLIENT_NAME.map_name}",
        f"smtpd_helo_restrictions = {permits},",
        f"    check_helo_access pcre:{d}/{RuleKind.HELO.map_name}",
        f"smtpd_sender_restrictions = {permits},",
        f"    check_sender_access {st}:{d}/{RuleKind.SENDER_DOMAIN.map_name}",
        f"header_checks = pcre:{d}/{RuleKind.HEADER.map_name}",
        "# header_checks run in cleanup, for every message: in master.cf, give the submission",
        "# services -o receive_override_options=no_header_body_checks so they skip them.",
        "",
    ])


def action_verb(value: str | None) -> str:
    """The action word of a map value, upper-cased (``REJECT``, ``WARN``, ``550`` ...), or
    "" for no value."""
    return value.split(None, 1)[0].upper() if value and value.strip() else ""


@dataclass(frozen=True)
class Hit:
    """One table answering one lookup: which restriction, which key, the value and rule id."""

    kind: RuleKind
    hook: str
    key: str
    value: str
    rule_id: str | None

    @property
    def verb(self) -> str:
        return action_verb(self.value)


@dataclass(frozen=True)
class Verdict:
    """The outcome of ``MapSet.check``: refused by ``reject`` (None when accepted) and the
    WARN hits logged on the way."""

    reject: Hit | None
    warnings: tuple[Hit, ...] = ()

    @property
    def refused(self) -> bool:
        return self.reject is not None

    @property
    def rule_id(self) -> str | None:
        return self.reject.rule_id if self.reject else None


def sender_lookup_keys(sender: str, null_key: str = "<>") -> list[str]:
    """check_sender_access lookup order for a hash table (Postfix 3.7, Debian defaults):
    user@domain, domain, each parent domain (``mail.example.com`` then ``example.com`` then
    ``com``), then ``user@``. The null sender is looked up as ``<>``."""
    if not sender:
        return [null_key]
    local, at, domain = sender.rpartition("@")
    if not at:
        return [sender]
    keys = [sender]
    name = domain
    while name:
        keys.append(name)
        dot = name.find(".", 1)
        if dot < 0:
            break
        name = name[dot + 1:]
    keys.append(local + "@")
    return keys


_CHECK_ORDER = (RuleKind.CLIENT_CIDR, RuleKind.CLIENT_NAME, RuleKind.HELO,
                RuleKind.SENDER_DOMAIN, RuleKind.HEADER)


class MapSet:
    """All emitted maps, answering whether a session or message would be refused, and by
    which rule. Build it from rules (``from_rules``) or from map files (``from_dir``)."""

    def __init__(self, tables: Mapping[RuleKind, Table],
                 rule_id_pattern: str = DEFAULT_RULE_ID_PATTERN) -> None:
        self.tables = dict(tables)
        self._rid = re.compile(rule_id_pattern)

    @classmethod
    def from_rules(cls, rules: Iterable[Rule], sender_table: TableType = TableType.HASH) -> MapSet:
        """The maps ``render_map`` would write for ``rules`` (trial and active ones)."""
        rules = list(rules)
        tables = {}
        for kind in RuleKind:
            table = sender_table if kind is RuleKind.SENDER_DOMAIN else kind.table
            tables[kind] = parse_table(render_map(kind, rules, table), table, kind.map_name)
        return cls(tables)

    @classmethod
    def from_dir(cls, directory: Path, sender_table: TableType = TableType.HASH) -> MapSet:
        """Read the map sources in ``directory`` (missing files count as empty maps)."""
        tables = {}
        for kind in RuleKind:
            table = sender_table if kind is RuleKind.SENDER_DOMAIN else kind.table
            path = directory / kind.map_name
            tables[kind] = read_table(path, table) if path.exists() else parse_table("", table)
        return cls(tables)

    def _hit(self, kind: RuleKind, key: str, value: str) -> Hit:
        m = self._rid.search(value)
        return Hit(kind, kind.hook, key, value, m.group(1) if m else None)

    def lookup(self, kind: RuleKind, keys: Sequence[str]) -> Hit | None:
        """The first of ``keys`` found in ``kind``'s table (Postfix stops at the first key
        found, whatever its value)."""
        table = self.tables.get(kind)
        if table is None:
            return None
        for key in keys:
            value = table.lookup(key)
            if value is not None:
                return self._hit(kind, key, value)
        return None

    def check(self, client_ip: str | None = None, client_name: str | None = None,
              helo: str | None = None, sender: str | None = None,
              headers: Iterable[str] | None = None) -> Verdict:
        """Would Postfix refuse this session/message, and by which rule? ``headers`` are
        whole header lines (``"Subject: hello"``, folded lines keep their newline). A value
        of None skips that restriction (e.g. no headers for a session refused before DATA)."""
        warnings: list[Hit] = []
        for kind in _CHECK_ORDER:
            if kind in (RuleKind.CLIENT_CIDR, RuleKind.CLIENT_NAME):
                # Postfix looks up the name ("unknown" without rDNS) and then the address.
                name = client_name or ("unknown" if client_ip else None)
                keys = [k for k in (name, client_ip) if k]
                hits = [self.lookup(kind, keys)]
            elif kind is RuleKind.HELO:
                hits = [self.lookup(kind, [helo])] if helo is not None else []
            elif kind is RuleKind.SENDER_DOMAIN:
                hits = [self.lookup(kind, sender_lookup_keys(sender))] if sender is not None \
                    else []
            else:
                hits = [self.lookup(kind, [h]) for h in headers or ()]
            for hit in hits:
                if hit is None:
                    continue
                if hit.verb == "WARN":
                    warnings.append(hit)
                elif hit.verb == "REJECT" or hit.verb[:1] in ("4", "5"):
                    return Verdict(hit, tuple(warnings))
        return Verdict(None, tuple(warnings))


def matches(rule_or_lines: Rule | Iterable[Rule] | str | Iterable[str], key: str,
            table: TableType | str | None = None) -> str | None:
    """The value Postfix would return for ``key``: from one rule, several rules of one kind,
    or map text/lines of type ``table``. For a sender_domain rule this is the exact lookup
    (as ``postmap -q``); use ``MapSet.check(sender=...)`` for the full access(5) order."""
    if isinstance(rule_or_lines, Rule):
        rule_or_lines = [rule_or_lines]
    if isinstance(rule_or_lines, str):
        if table is None:
            raise ValueError("map text needs its table type")
        return parse_table(rule_or_lines, table).lookup(key)
    items = list(rule_or_lines)
    if items and all(isinstance(r, Rule) for r in items):
        rules = [r for r in items if isinstance(r, Rule)]
        kind = rules[0].kind
        ttype = TableType(table or kind.table)
        # a proposal (or a rejected rule) is matched as if it were active
        live = [r if r.state.emitted else _as_active(r) for r in rules]
        return parse_table(render_map(kind, live, ttype), ttype).lookup(key)
    if table is None:
        raise ValueError("map lines need their table type")
    return parse_table([str(x) for x in items], table).lookup(key)


def _as_active(rule: Rule) -> Rule:
    from dataclasses import replace

    return replace(rule, state=RuleState.ACTIVE)
