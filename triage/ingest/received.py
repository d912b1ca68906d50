"""Our own grammar for Received headers, and the trusted hop.

mail-parser splits Received headers with regular expressions that lose the IP when the HELO is
a keyword and cannot tell the HELO (written by the sender) from the reverse DNS name and IP
(written by the receiving MTA). This module reads one header into a :class:`Received` record:

* Postfix / sendmail: ``from HELO (RDNS [IP]) (TLS comments) by HOST (Postfix) with ESMTPS
  id QID for <rcpt>; DATE``. ``RDNS`` is ``unknown`` when Postfix could not verify it
  (it becomes ``None``); the IP may be ``[IPv6:...]``; sendmail adds ``ident@`` and
  ``(may be forged)``.
* Exim: ``from RDNS ([IP]:PORT helo=HELO) by HOST with esmtps (Exim 4.96) id 1abc-0001-xy``
  and ``from [IP] (port=N helo=HELO)``.
* qmail: ``from RDNS (HELO helo) (user@IP) by HOST with SMTP``; the ``(qmail 123 invoked ...)``
  lines carry no hop and read as ``None``.
* Microsoft: ``from HELO (IP) by HOST (IP) with Microsoft SMTP Server ...``, ``from HELO
  ([IP]) by HOST with Microsoft SMTPSVC(...)`` and the old ``from HOST - IP by ...``.
* fetchmail: ``from HOST [IP] by localhost with POP3 (fetchmail-x) for user (single-drop)``.

The sender controls the HELO (left of the client address) and the envelope addresses (right of
the ``by`` host: ``for <rcpt>``, Exim's ``(envelope-from <sender>)``), so the parser never
reads the IP or the receiving host from them. The ``by`` clause is found reading from the
*end* of the header: the first top-level ``by`` word there, with each ``<...>`` address and
quoted string skipped whole, as Postfix quotes them (a ``"`` or ``\\`` inside a quoted local
part is escaped), so neither a HELO nor an address can move it. The TCP information is the
*last* address-bearing comment before that ``by`` (the MTA writes it right after the HELO),
and only the comments the MTA writes after it say whether the hop used TLS or SMTP AUTH. A
HELO such as ``for``, ``x (y [192.0.2.1]) by evil``, ``a(b`` or ``x (Authenticated sender:
y)`` and a recipient such as ``<"bob+x> by evil.example"@example.net>`` therefore cannot move
the IP, the rDNS name, the receiving host or the queue id.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Final

__all__ = [
    "Received",
    "TrustedHop",
    "host_matches",
    "infer_my_hostnames",
    "parse_received",
    "trusted_hop",
]

# A header longer than this is hostile or broken; the useful part is at the start.
_MAX_LEN = 8192


@dataclass(frozen=True, slots=True)
class Received:
    """One Received header, split into fields. Absent parts are ``None``.

    ``helo`` is what the client said (sender-controlled); ``rdns`` and ``ip`` are what the
    receiving MTA ``by`` saw. ``rdns`` is ``None`` when the MTA wrote ``unknown``.
    """

    helo: str | None = None
    rdns: str | None = None
    ip: str | None = None
    by: str | None = None
    queue_id: str | None = None
    protocol: str | None = None
    for_addr: str | None = None
    date: datetime | None = None
    software: str | None = None
    tls: bool = False
    authenticated: str | None = None

    def as_dict(self) -> dict[str, object]:
        """The fields as a plain dict (for tests and JSON)."""
        return {f: getattr(self, f) for f in self.__slots__}


# A token: (kind, text, start, end), kind "word" or "comment" (a comment's text excludes
# the outer parentheses). Plain tuples: a parse makes a dozen, and reads them by index.
_Tok = tuple[str, str, int, int]
_KIND: Final = 0
_TEXT: Final = 1
_START: Final = 2


_KEYWORDS = frozenset({"from", "by", "via", "with", "id", "for"})
_WORD_RE = re.compile(r"[^\s]+")
# "RDNS [IP]" with sendmail's optional ident@ and trailing "(may be forged)", Exim's
# "[IP]:port helo=x" (no RDNS inside the comment).
_TCP_INFO_RE = re.compile(
    r"^(?:(?P<ident>[^\s@\[\]()]+)@)?(?P<rdns>[^\s\[\]()@]+)?\s*"
    r"\[(?:IPv6:)?(?P<ip>[0-9A-Fa-f:.]+)\](?::\d+)?(?P<rest>(?:\s.*)?)$",
    re.S | re.I,
)
# qmail "(user@IP)" / "(IP)", Microsoft "(IP)"
_PAREN_IP_RE = re.compile(r"^(?:[^\s@]+@)?\[?(?P<ip>[0-9A-Fa-f:.]+)\]?$")
_QMAIL_HELO_RE = re.compile(r"^(?:HELO|EHLO)\s+(?P<helo>\S+)$", re.I)
_EXIM_HELO_RE = re.compile(r"(?:^|\s)helo=(?P<helo>\S+)", re.I)
_AUTH_RE = re.compile(r"^Authenticated sender:\s*(?P<who>.+)$", re.I | re.S)
_TLS_RE = re.compile(r"^using\s+(?:TLS|SSL)", re.I)


@functools.lru_cache(maxsize=8192)
def _ip(text: str) -> str | None:
    """The canonical form of an IP address, or None if ``text`` is not one. An IPv4-mapped
    IPv6 address (``IPv6:::ffff:192.0.2.7``) is the IPv4 address, as Postfix logs and
    matches such a client."""
    if text.lower().startswith("ipv6:"):
        text = text[5:]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _mask(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """``text`` with the inside of each span (an address or quoted string, delimiters
    kept, spans apart) replaced by ``x``, so that a recipient such as ``<"x) by y
    (z"@example.net>`` is one word without comments or keywords."""
    pieces: list[str] = []
    pos = 0
    for start, end in sorted(spans):
        pieces += (text[pos : start + 1], "x" * (end - start - 2))
        pos = end - 1
    pieces.append(text[pos:])
    return "".join(pieces)


def _escaped(text: str, i: int) -> bool:
    """Whether the character at ``i`` follows an odd run of backslashes."""
    j = i
    while j > 0 and text[j - 1] == "\\":
        j -= 1
    return (i - j) % 2 == 1


# The last word "by" (between white space, parentheses and the ends of the text), and an
# address without quotes or escapes.
_LAST_BY_RE = re.compile(r"(?s:.*)(?<![^\s()])by(?![^\s()])", re.I)
_PLAIN_ADDRESS_RE = re.compile(r"<[^<>]*>")
_PARENS_RE = re.compile(r"[()]")


def _by_clause(text: str) -> tuple[int | None, list[tuple[int, int]]]:
    """Where the ``by`` clause starts (None without one), and the ``<...>`` addresses and
    quoted strings of that clause (see ``_scan_from_end``).

    Usually nothing after the last word ``by`` is quoted or escaped, every ``<`` there
    pairs with a ``>`` and no parenthesis there closes a comment opened before it: that
    word is then the one the scan stops at, found without reading the text one character
    at a time."""
    m = _LAST_BY_RE.match(text)
    if m is None:
        return None, []  # no word "by" at all, so none the scan could stop at
    at = m.end() - 2
    tail = text[at:]
    # (and no backslash right before it: a "\(by" is not the word)
    if '"' not in tail and "\\" not in text[max(at - 2, 0) :]:
        units = [(a.start() + at, a.end() + at) for a in _PLAIN_ADDRESS_RE.finditer(tail)]
        rest = _PLAIN_ADDRESS_RE.sub("", tail) if units else tail
        if "<" not in rest and ">" not in rest and _closed_from_the_right(rest):
            return at, units
    return _scan_from_end(text)


def _closed_from_the_right(text: str) -> bool:
    """Whether reading ``text`` from its end, every ``(`` closes a comment that a ``)``
    opened, ending outside any comment."""
    if "(" not in text and ")" not in text:
        return True
    depth = 0
    for c in reversed(_PARENS_RE.findall(text)):
        if c == ")":
            depth += 1
        elif c == "(" and depth:
            depth -= 1
    return depth == 0


def _scan_from_end(text: str, semicolon: bool = False
                   ) -> tuple[int | None, list[tuple[int, int]]]:
    """Where the ``by`` clause starts (None without one), and the ``<...>`` addresses and
    quoted strings of that clause, each skipped whole. With ``semicolon``: where the
    top-level ``;`` before the date is, read the same way.

    The text is read from its end to the first top-level word ``by``: what follows that
    word is what the MTA wrote plus envelope addresses, and an address cannot hide the word
    or fake one, because the scan jumps from its closing ``>`` (or ``"``) to its opening
    one, in a comment too (``(envelope-from <...>)``, or Postfix's ``(envelope-from
    "..."@example.com)`` when built with RECEIVED_ENVELOPE_FROM). Inside a quoted string a
    ``"`` or ``\\`` is escaped with a backslash (Postfix's quote_822_local), so the opening
    quote is the nearest ``"`` to the left after an even run of backslashes. The HELO, left
    of ``by``, is never read. Linear in the text: each position is looked at a bounded
    number of times."""
    quote_open: dict[int, int] = {}
    angle_open: dict[int, int] = {}
    no_quote_upto = -1  # no unescaped '"' at or below this index

    def open_quote(close: int) -> int:
        nonlocal no_quote_upto
        if close in quote_open:
            return quote_open[close]
        j = text.rfind('"', no_quote_upto + 1, close)
        while j >= 0 and _escaped(text, j):
            j = text.rfind('"', no_quote_upto + 1, j)
        if j < 0:
            no_quote_upto = max(no_quote_upto, close - 1)
        quote_open[close] = j
        return j

    def open_angle(close: int) -> int:
        # <(?:"(?:[^"\\]|\\.)*"|[^<>"\\])*> read from its end; each position's answer
        # is remembered, so a text full of ">" is still read once.
        p = close - 1
        seen: list[int] = []
        found = -1
        while p >= 0:
            if p in angle_open:
                found = angle_open[p]
                break
            seen.append(p)
            c = text[p]
            if c == "<":
                found = p
                break
            if c in ">\\" or (c == '"' and (_escaped(text, p) or (p := open_quote(p)) < 0)):
                break
            p -= 1
        for s in seen:
            angle_open[s] = found
        return found

    units: list[tuple[int, int]] = []
    depth = 0
    end = -1  # end of the top-level word being read, -1 between words
    i = len(text) - 1
    while i >= 0:
        c = text[i]
        j = -1
        if c == ">":
            j = open_angle(i)
        elif c == '"' and not _escaped(text, i):
            j = open_quote(i)
        if j >= 0:
            units.append((j, i + 1))
            if depth == 0 and end < 0:
                end = i + 1
            i = j - 1
            continue
        if semicolon and c == ";" and depth == 0:
            return i, units
        if c.isspace() or (c in "()" and not _escaped(text, i)):
            if end >= 0 and not semicolon and text[i + 1 : end].lower() == "by":
                return i + 1, units
            end = -1
            if c == ")":
                depth += 1
            elif c == "(" and depth:
                depth -= 1
        elif depth == 0 and end < 0:
            end = i + 1
        i -= 1
    if end >= 0 and not semicolon and text[:end].lower() == "by":
        return 0, units
    return None, units


_PAREN_RE = re.compile(r"\\.|[()]", re.S)


def _comment_spans(masked: str) -> list[tuple[int, int]]:
    """Top-level balanced ``(...)`` spans. Unbalanced parentheses are ordinary characters,
    so a HELO like ``a(b`` cannot swallow the rest of the header."""
    stack: list[int] = []
    pairs: list[tuple[int, int]] = []
    # Only parentheses matter; an escaped one (\\( or \\)) is text.
    for m in _PAREN_RE.finditer(masked):
        ch, i = m.group(), m.start()
        if ch == "(":
            stack.append(i)
        elif ch == ")" and stack:
            start = stack.pop()
            if not stack:
                pairs.append((start, i + 1))
    if stack:
        # An unmatched "(" below a matched pair: the pairs inside it are still comments.
        pairs = _inner_pairs(list(masked), set(stack))
    return pairs


def _inner_pairs(chars: list[str], literal: set[int]) -> list[tuple[int, int]]:
    """Redo the matching with the unmatched opening parentheses treated as text."""
    depth = 0
    start = 0
    pairs: list[tuple[int, int]] = []
    for i, ch in enumerate(chars):
        if i in literal or (i > 0 and chars[i - 1] == "\\"):
            continue
        if ch == "(":
            if depth == 0:
                start = i
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            if depth == 0:
                pairs.append((start, i + 1))
    return pairs


# A comment without parentheses inside, a word, or a parenthesis outside both (nested or
# unbalanced parentheses, for _comment_spans to sort out).
# A comment (with at most one level of comments inside, like Postfix's TLS details), a word,
# or a parenthesis outside both (deeper or unbalanced parentheses, for _comment_spans to sort
# out). Possessive, so that an unclosed comment costs no backtracking.
_SIMPLE_TOKEN_RE = re.compile(r"\((?:[^()]++|\([^()]*+\))*+\)|[^\s()]+|[()]")


def _tokens(text: str, masked: str) -> list[_Tok]:
    """Words and top-level comments of ``text``, with their positions, as ``masked`` (the
    same text with some spans masked, see ``_mask``) splits them."""
    if "\\" not in masked:
        # Usually no comment is escaped and the parentheses are simple: quicker ways find
        # the same tokens.
        toks = _split_tokens(text, masked)
        if toks is None:
            toks = _simple_tokens(text, masked)
        if toks is not None:
            return toks
    return _general_tokens(text, masked)


def _general_tokens(text: str, masked: str) -> list[_Tok]:
    """Top-level comments as ``_comment_spans`` pairs them, and the words between."""
    toks: list[_Tok] = []
    pos = 0
    for start, end in [*_comment_spans(masked), (len(text), len(text))]:
        for m in _WORD_RE.finditer(masked, pos, start):
            a, b = m.span()
            toks.append(("word", text[a:b], a, b))
        if end > start:
            toks.append(("comment", text[start + 1 : end - 1].strip(), start, end))
        pos = end
    return toks


def _simple_tokens(text: str, masked: str) -> list[_Tok] | None:
    """The tokens when no comment nests more than one level deep and every parenthesis
    belongs to a comment; None otherwise."""
    toks: list[_Tok] = []
    for m in _SIMPLE_TOKEN_RE.finditer(masked):
        a, b = m.span()
        if masked[a] == "(":
            if b - a == 1:
                return None  # a parenthesis outside any simple comment
            toks.append(("comment", text[a + 1 : b - 1].strip(), a, b))
        elif masked[a] == ")":
            return None
        else:
            toks.append(("word", text[a:b], a, b))
    return toks


def _split_tokens(text: str, masked: str) -> list[_Tok] | None:
    """The tokens when ``text`` (white space already collapsed to single spaces) splits at
    its spaces into words and comments: in every piece, parentheses only open at its start
    and close at its end, never below depth zero, all closed at the end. The top-level
    comments are then the pieces from the one that opens a comment to the one that closes
    it, and the words the other pieces, as the general tokenizer finds them; None when
    the text is not like that."""
    toks: list[_Tok] = []
    depth = start = pos = 0
    for piece in masked.split(" "):
        end = pos + len(piece)
        if "(" in piece or ")" in piece:
            body = piece.lstrip("(")
            inner = body.rstrip(")")
            if "(" in inner or ")" in inner:
                return None
            opens = len(piece) - len(body)
            if depth == 0:
                if not opens:
                    return None  # a ")" outside any comment
                start = pos
            depth += opens - (len(body) - len(inner))
            if depth < 0:
                return None
            if depth == 0:
                toks.append(("comment", text[start + 1 : end - 1].strip(), start, end))
        elif depth == 0 and piece:
            toks.append(("word", text[pos:end], pos, end))
        pos = end + 1
    return toks if depth == 0 else None


def _split_date(text: str) -> tuple[str, datetime | None]:
    """Split ``clauses; date`` at the last top-level semicolon (not in a comment, an address
    or a quoted string: an envelope address after the date may hold one) when a date
    follows it."""
    at = _date_semicolon(text)
    if at is None:
        return text, None
    tail = text[at + 1 :]
    when = _parse_date(tail)
    if when is None and _BY_FROM_RE.search(tail):
        return text, None
    return text[:at], when


def _date_semicolon(text: str) -> int | None:
    """The last top-level ``;`` (see ``_scan_from_end``): usually simply the last one."""
    at = text.rfind(";")
    if at < 0:
        return None
    tail = text[at + 1 :]
    if ('"' not in tail and "<" not in tail and ">" not in tail and "\\" not in tail
            and _closed_from_the_right(tail)):
        return at
    return _scan_from_end(text, semicolon=True)[0]


_BY_FROM_RE = re.compile(r"\b(?:by|from)\b")
# The usual shape, "[Day, ]DD Mon YYYY HH:MM[:SS] +HHMM", read without the stdlib's general
# parser; every other text goes to parsedate_to_datetime.
_RFC5322_DATE_RE = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),[ \t]+)?([0-9]{1,2})[ \t]+([A-Za-z]{3,9})[ \t]+"
    r"([0-9]{4})[ \t]+([0-9]{1,2}):([0-9]{1,2})(?::([0-9]{1,2}))?[ \t]+([+-])([0-9]{4})")
_MONTHS = {m: i % 12 + 1 for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
     "january", "february", "march", "april", "may", "june", "july", "august", "september",
     "october", "november", "december"])}


def _parse_date(text: str) -> datetime | None:
    text = text.strip()
    if text.endswith(")"):
        # A trailing "(zone)" comment: the last "(" when no ")" comes before the end.
        i = text.rfind("(")
        if i >= 0 and ")" not in text[i + 1 : -1]:
            text = text[:i].strip()
    if not text:
        return None
    try:
        when = _fast_date(text) or parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC with unknown local zone (RFC 5322 3.3)
        when = when.replace(tzinfo=UTC)
    return when


def _fast_date(text: str) -> datetime | None:
    """``parsedate_to_datetime(text)`` for the usual shape (the same values, the same
    errors); None for any other text. As in the stdlib, a year below 100 is moved into
    1969-2068 and ``-0000`` gives a naive datetime."""
    m = _RFC5322_DATE_RE.fullmatch(text)
    if m is None:
        return None
    day, month, year, hour, minute, second, sign, zone = m.groups()
    mon = _MONTHS.get(month.lower())
    if mon is None:
        return None
    yy = int(year)
    if yy < 100:
        yy += 1900 if yy > 68 else 2000
    when = (yy, mon, int(day), int(hour), int(minute), int(second or 0))
    offset = int(zone)
    if offset == 0 and sign == "-":
        return datetime(*when)
    seconds = (offset // 100) * 3600 + (offset % 100) * 60
    return datetime(*when, tzinfo=_zone(-seconds if sign == "-" else seconds))


@functools.lru_cache(maxsize=256)
def _zone(seconds: int) -> timezone:
    return timezone(timedelta(seconds=seconds))


def parse_received(value: str) -> Received | None:
    """Parse one Received header value (without the ``Received:`` name).

    Returns ``None`` when the header names neither a ``from`` nor a ``by`` host, such as
    ``(qmail 123 invoked from network)``. Never raises.

    >>> r = parse_received("from mail.example.com (mail.example.com [192.0.2.1])\\n"
    ...     "\\tby mx.example.net (Postfix) with ESMTPS id 4Xy2Zq1kQmz9sWQ\\n"
    ...     "\\tfor <bob@example.net>; Tue, 3 Sep 2024 10:00:00 +0200 (CEST)")
    >>> (r.helo, r.rdns, r.ip, r.by, r.queue_id)
    ('mail.example.com', 'mail.example.com', '192.0.2.1', 'mx.example.net', '4Xy2Zq1kQmz9sWQ')
    """
    if not isinstance(value, str):
        return None
    text = " ".join(value[:_MAX_LEN].split())  # white space runs as one space, stripped
    clauses, when = _split_date(text)
    fields = _clauses(clauses)
    if fields is None:
        return None
    helo, rdns, ip, by, queue_id, protocol, for_addr, software, tls, auth = fields
    return Received(helo, rdns, ip, by, queue_id, protocol, for_addr, when, software, tls,
                    auth)


_Clauses = tuple[str | None, str | None, str | None, str | None, str | None, str | None,
                 str | None, str | None, bool, str | None]


@functools.lru_cache(maxsize=8192)
def _clauses(clauses: str) -> _Clauses | None:
    """The fields of a Received header before its date: (helo, rdns, ip, by, queue_id,
    protocol, for_addr, software, tls, authenticated); None without a from or by clause.
    Cached: hops without a queue id (fetchmail, local pickup) repeat word for word."""
    by_at, units = _by_clause(clauses)
    # The from clause is not masked: a "<" or '"' in the HELO must not pair with one that
    # the MTA (or a client certificate's CN) wrote further on and hide the client address.
    head = clauses if by_at is None else clauses[:by_at]
    toks = _tokens(head, head)
    has_from = bool(toks) and toks[0][_KIND] == "word" and toks[0][_TEXT].lower() == "from"
    if by_at is None and not has_from:
        return None
    by_toks: list[_Tok] = []
    if by_at is not None:
        tail = clauses[by_at:]
        by_toks = _tokens(tail, _mask(tail, [(a - by_at, b - by_at) for a, b in units]))[1:]
    fields = _read_by(by_toks)
    helo, rdns, ip, tls, auth = _read_from(clauses, toks[1:] if has_from else [], fields)
    get = fields.get
    protocol = get("with")
    return (helo, rdns, ip, get("by"), get("id"), protocol, get("for"), get("software"),
            tls or _tls_protocol(protocol), auth)


# RFC 3848 and RFC 6531 protocol names for a client that authenticated (SMTP AUTH).
_AUTH_PROTOCOL_RE = re.compile(r"(?:ESMTP|LMTP|UTF8SMTP|UTF8LMTP)S?A", re.I)


def _tls_protocol(proto: str | None) -> bool:
    """ESMTPS / ESMTPSA (RFC 3848) mean the hop used TLS."""
    if not proto:
        return False
    upper = proto.upper()
    return "SMTP" in upper and upper.rstrip("A").endswith("S")


def _read_by(toks: Sequence[_Tok]) -> dict[str, str]:
    """Fields of the ``by HOST (software) via X with PROTO id QID for <rcpt>`` part.

    ``software`` is the first comment after the host, ``comments`` all comments joined
    (Exim puts its name after the protocol)."""
    out: dict[str, str] = {}
    comments: list[str] = []
    key = "by"
    words: list[str] = []
    for kind, text, _, _ in toks:
        if kind == "comment":
            comments.append(text)
            continue
        low = text.lower()
        # The first word after "by" is the host even if it looks like a keyword.
        if low in _KEYWORDS and (words or key != "by"):
            _store(out, key, words)
            key = low
            continue
        words.append(text)
    _store(out, key, words)
    if comments:
        out["software"] = comments[0]
        out["comments"] = " ".join(comments)
    return out


def _store(out: dict[str, str], key: str, words: list[str]) -> None:
    if words and key not in out:
        strip = ";,<>" if key == "for" else ";,"
        out[key] = words[0].strip(strip) or words[0]
    words.clear()


def _read_from(
    text: str, toks: Sequence[_Tok], by: dict[str, str]
) -> tuple[str | None, str | None, str | None, bool, str | None]:
    """(helo, rdns, ip, tls, authenticated sender) from the ``from`` clause tokens."""
    if not toks:
        return None, None, None, False, None
    qmail_helo = any(kind == "comment" and _QMAIL_HELO_RE.match(comment) is not None
                     for kind, comment, _, _ in toks)
    software = (by.get("comments", "") + " " + by.get("with", "")).lower()
    exim = "exim" in software
    qmail = "qmail" in software or qmail_helo
    if exim:
        # Exim writes the client right after "from": "RDNS ([IP]:PORT helo=HELO)" or "[IP]
        # (helo=HELO)". The HELO is inside that comment, so a comment after it is the
        # client's text (a HELO such as "x) (y [192.0.2.1]").
        toks = toks[:2]
    first = toks[0][_START]
    for n in range(len(toks) - 1, 0, -1):
        tok = toks[n]
        if tok[_KIND] != "comment":
            continue
        m = _TCP_INFO_RE.match(tok[_TEXT])
        if m and _ip(m.group("ip")):
            before = text[first : tok[_START]].strip() or None
            ip = _ip(m.group("ip"))
            tls, auth = _session_comments(toks[n + 1 :], by.get("with"))
            if m.group("rdns") or not exim:
                return before, _rdns(m.group("rdns")), ip, tls, auth
            helo_m = _EXIM_HELO_RE.search(m.group("rest"))
            rdns = _rdns(before) if before and not before.startswith("[") else None
            return (helo_m.group("helo") if helo_m else before), rdns, ip, tls, auth
        m = _PAREN_IP_RE.match(tok[_TEXT])
        if m and _ip(m.group("ip")):
            # Only qmail writes "user@IP" in this comment.
            qmail = qmail or "@" in tok[_TEXT]
            return (*_qmail_or_ms(text, toks, tok, qmail), _ip(m.group("ip")),
                    *_session_comments(toks[n + 1 :], by.get("with")))
    return (*_bare_address(toks), False, None)


def _session_comments(toks: Sequence[_Tok], protocol: str | None) -> tuple[bool, str | None]:
    """(tls, authenticated sender) from the comments after the client address: where Postfix
    writes ``(using TLS...)`` and ``(Authenticated sender: NAME)``; the HELO, before the
    address, is the client's text. The sender counts only with a protocol that says the
    client authenticated (``ESMTPA``, ``ESMTPSA``, ``LMTPA`` ..., RFC 3848), as Postfix
    writes it."""
    tls = False
    auth = None
    authenticated = protocol is not None and _AUTH_PROTOCOL_RE.fullmatch(protocol) is not None
    for kind, comment, _, _ in toks:
        if kind == "comment":
            tls = tls or _TLS_RE.match(comment) is not None
            if auth is None and authenticated and (m := _AUTH_RE.match(comment)):
                auth = m.group("who").strip()
    return tls, auth


def _rdns(name: str | None) -> str | None:
    if not name or name.lower() == "unknown":
        return None
    return name


def _qmail_or_ms(
    text: str, toks: Sequence[_Tok], ip_tok: _Tok, qmail: bool
) -> tuple[str | None, str | None]:
    """qmail writes ``from RDNS (HELO x) (IP)``; Microsoft ``from HELO (IP)``."""
    first_word = toks[0][_TEXT] if toks[0][_KIND] == "word" else None
    if qmail:
        helo = next((m.group("helo") for t in toks if t[_KIND] == "comment"
                     for m in [_QMAIL_HELO_RE.match(t[_TEXT])] if m), None)
        rdns = _rdns(first_word)
        return (helo or rdns), rdns
    return (text[toks[0][_START] : ip_tok[_START]].strip() or None), None


def _bare_address(toks: Sequence[_Tok]) -> tuple[str | None, str | None, str | None]:
    """fetchmail ``from HOST [IP]``, Exim ``from [IP] (helo=x)``, old Microsoft
    ``from HOST - IP``: no comment carries the address."""
    words = [t[_TEXT] for t in toks if t[_KIND] == "word"]
    helo = words[0] if words else None
    ip = None
    for i, w in enumerate(words):
        bracketed = w.startswith("[") and w.endswith("]")
        if bracketed or i > 0:
            ip = _ip(w.strip("[]"))
            if ip:
                break
    for t in toks:
        m = _EXIM_HELO_RE.search(t[_TEXT]) if t[_KIND] == "comment" else None
        if m:
            return m.group("helo"), None, ip
    if helo and helo.startswith("[") and ip:
        helo = None if len(words) == 1 else helo
    return helo, None, ip


# --- the trusted hop -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrustedHop:
    """The hop where our own MX received the message from the outside world.

    ``index`` counts Received headers from the top (0 = newest). ``internal_only`` is true
    when every hop down to the last one was internal (locally submitted mail).
    """

    index: int
    received: Received
    internal_only: bool = False


def host_matches(name: str | None, patterns: Iterable[str]) -> bool:
    """Whether a host name matches one of ``patterns`` (exact names or shell globs,
    case-insensitive, a trailing dot ignored).

    >>> host_matches("MX1.example.net.", ["mx*.example.net"])
    True
    """
    if not name:
        return False
    return _host_matches(name, tuple(patterns))


@functools.lru_cache(maxsize=16384)
def _host_matches(name: str, patterns: tuple[str, ...]) -> bool:
    # Host names and pattern lists repeat from message to message.
    name = name.lower().rstrip(".")
    return any(fnmatch.fnmatchcase(name, p.lower().rstrip(".")) for p in patterns)


def _relay_matches(hop: Received, relays: Sequence[str]) -> bool:
    """A trusted relay is given as a host name / glob (matched against the verified rDNS)
    or as an IP network."""
    for entry in relays:
        net = _network(entry)
        if net is None:
            if host_matches(hop.rdns, [entry]):
                return True
            continue
        if hop.ip and _address(hop.ip) in net:
            return True
    return False


@functools.lru_cache(maxsize=256)
def _network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


# Parsed once per distinct address (``Received.ip`` is canonical, so it always parses).
_address = functools.lru_cache(maxsize=8192)(ipaddress.ip_address)


@functools.lru_cache(maxsize=8192)
def _loopback(ip: str) -> bool:
    return _address(ip).is_loopback


_RETRIEVAL = frozenset({"POP3", "POP", "IMAP", "IMAP4", "IMAPS", "POP3S", "ODMR", "ETRN"})


def _internal(hop: Received, my_hostnames: Sequence[str]) -> bool:
    """The client of this hop is ourselves: loopback (content filter re-injection) or one of
    our hosts by verified rDNS. Never by HELO, which the client chooses."""
    if hop.protocol and hop.protocol.upper() in _RETRIEVAL:
        # fetchmail/getmail pulling from our own mailbox provider: below this hop is the
        # provider's MX, which the walk follows only if it is in my_hostnames or a relay.
        return True
    if hop.ip is not None:
        if _loopback(hop.ip):
            return True
    elif hop.rdns is None and hop.helo is None:
        return True  # "from userid@localhost" style local pickup
    return host_matches(hop.rdns, my_hostnames)


def trusted_hop(
    hops: Sequence[Received | None],
    my_hostnames: Sequence[str],
    trusted_relays: Sequence[str] = (),
    *,
    texts: Sequence[str] | None = None,
    screen: bool = True,
) -> TrustedHop | None:
    """Find the hop whose client data can be trusted.

    ``hops`` are the parsed Received headers top (newest) first. Starting from the topmost
    hop added by one of ``my_hostnames``, walk down while the client is internal (loopback,
    one of our hosts) or a trusted relay and the next hop down was written by us or by that
    relay; the hop where that stops is the trusted one. Headers above the topmost of ours are
    ignored (added after delivery); headers below the trusted hop were written by the sender.

    ``texts``, the header values ``hops`` were parsed from (same order), let the walk skip
    headers whose text cannot hold the ``by`` host it looks for, without parsing them when
    ``hops`` parses lazily: one of our host names above the topmost of ours, and one of ours,
    a relay, localhost or the client's name right below an internal hop (``screen=False``
    parses them all: the same result, slower). A header above the topmost of ours that cannot
    be parsed but whose text may name one of our hosts ends the walk with no trusted hop:
    it may be our own header, made unreadable by what a sender put in it, and the next one of
    ours below it could be one the sender wrote.
    """
    # Index access only: ``hops`` may parse lazily (see mailtable), and the walk rarely
    # needs more than the top few headers.
    mine = tuple(my_hostnames)
    ours: Callable[[str], bool] = _anything
    chain: Callable[[str], bool] = _anything
    may_be_ours: Callable[[str], bool] = _nothing
    if texts is None:
        texts = [""] * len(hops)  # unknown: any header may name any host
    else:
        screens = _screens(mine, tuple(trusted_relays))
        may_be_ours = screens[0]
        if screen:
            ours, chain = screens
    start = None
    for i in range(len(hops)):
        if not ours(texts[i]):
            continue
        h = hops[i]
        if h is None:
            if may_be_ours(texts[i]):
                return None  # fail safe (see above)
            continue
        if host_matches(h.by, mine):
            start = i
            break
    if start is None:
        return None
    i = start
    current = hops[i]
    assert current is not None
    while True:
        internal = _internal(current, my_hostnames)
        relay = not internal and _relay_matches(current, trusted_relays)
        if not (internal or relay):
            return TrustedHop(i, current)
        if (internal and i + 1 < len(hops) and not chain(texts[i + 1])
                and not _may_hold(current.rdns, texts[i + 1])):
            # Whatever the header below says, one of ours did not write it.
            return TrustedHop(i, current, internal_only=internal)
        below = hops[i + 1] if i + 1 < len(hops) else None
        # A configured relay's own Received header is the one right below our hop: trusting
        # the relay (by its address, which our MX recorded) is trusting what it wrote, under
        # whatever name it gave itself in "by".
        if below is None or not (relay or _written_by_us_or_relay(
                below, current, my_hostnames, trusted_relays)):
            return TrustedHop(i, current, internal_only=internal)
        i += 1
        current = below


@functools.lru_cache(maxsize=64)
def _screens(mine: tuple[str, ...], relays: tuple[str, ...]
             ) -> tuple[Callable[[str], bool], Callable[[str], bool]]:
    """``_may_name`` for our host names, and for the ``by`` hosts that continue our chain
    (ours, a relay, localhost)."""
    return _may_name(mine), _may_name((*mine, *relays, *_LOCALHOST))


def _may_name(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """A quick test of a Received header's text, false only when none of its words can be a
    ``by`` host matching one of ``patterns`` the way ``host_matches`` does. The host is a
    word (ended by white space, a comment's parenthesis, the ";" before the date or the end
    of the text) less the ";" and "," around it, lower-cased, without trailing dots; a plain
    name must equal it, and fnmatch's own regular expression for a glob match all of it.
    Text that is not ASCII is not screened (its lower case can depend on context)."""
    names: list[str] = []
    globs: list[str] = []
    for p in patterns:
        low = p.lower().rstrip(".")
        if "*" in low or "?" in low or "[" in low:
            rx = fnmatch.translate(low)
            if not rx.endswith("\\Z"):
                return _anything
            globs.append(rx[:-2])
        else:
            names.append(low)
    if not names and not globs:
        return _nothing
    word = (re.compile(r"(?:^|[\s();,])(?:" + "|".join(globs) + r")\.*(?=[\s();,]|$)")
            if globs else None)

    def maybe(text: str) -> bool:
        text = text[:_MAX_LEN]
        if not text.isascii():
            return True
        low = text.lower()
        end = len(low)
        for name in names:
            i = low.find(name)
            while i >= 0:
                j = i + len(name)
                while j < end and low[j] == ".":
                    j += 1
                if (i == 0 or _bounds(low[i - 1])) and (j == end or _bounds(low[j])):
                    return True
                i = low.find(name, i + 1)
        return word is not None and word.search(low) is not None

    return maybe


def _bounds(ch: str) -> bool:
    """Whether ``ch`` ends a word of a Received header before its ``by`` host is read."""
    return ch.isspace() or ch in "();,"


def _may_hold(name: str | None, text: str) -> bool:
    """Whether ``text`` (a Received header, as ``_may_name`` screens it) may have ``name``
    as its ``by`` host, compared case-insensitively."""
    return bool(name) and name.lower() in text[:_MAX_LEN].lower()  # type: ignore[union-attr]


def _anything(text: str) -> bool:
    return True


def _nothing(text: str) -> bool:
    return False


_LOCALHOST = ("localhost", "localhost.localdomain")


def _written_by_us_or_relay(
    below: Received, above: Received, my_hostnames: Sequence[str], relays: Sequence[str]
) -> bool:
    """The next hop down continues our chain if one of our hosts, a trusted relay or the
    host the hop above connected from wrote it (a loopback hop's ``by`` is often just
    ``localhost``)."""
    if host_matches(below.by, my_hostnames) or host_matches(below.by, relays):
        return True
    if below.by and below.by.lower() in _LOCALHOST:
        return True
    return bool(above.rdns and below.by and above.rdns.lower() == below.by.lower())


def infer_my_hostnames(topmost_by: Iterable[str | None], min_share: float = 0.05) -> list[str]:
    """Guess our MX host names from the ``by`` host of each message's topmost Received.

    Every host that wrote the topmost header of at least ``min_share`` of the messages is
    taken: mail delivered by one server (or a few MX hosts) shows the same names on top.
    ``localhost`` is never inferred.
    """
    counts: dict[str, int] = {}
    total = 0
    for name in topmost_by:
        total += 1
        if name and name.lower() not in {"localhost", "localhost.localdomain"}:
            key = name.lower().rstrip(".")
            counts[key] = counts.get(key, 0) + 1
    if not total:
        return []
    return sorted(n for n, c in counts.items() if c / total >= min_share)
