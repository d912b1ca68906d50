"""Bytes of one message -> :class:`MessageRecord`. The only module that imports mail-parser.

Speed: the headers are all that the ``mail`` table needs, and Python's own parser reads a
message's headers and MIME structure several times faster than mail-parser decodes every body
part (see ``tests/bench/mail_bench.py``). So every message goes through the stdlib parser
(``compat32`` policy: tolerant, keeps raw values, records defects instead of raising), and only
messages that are broken (a MIME or header defect) or explicitly asked for (``full=True``) are
handed to mail-parser, whose defect categories then name what is wrong.

Most messages need not even the stdlib parser: when the header block is plain ASCII fields
(``Name: value`` and continuation lines, ended by a blank line), the stdlib finds no defect
in it and its compat32 headers are the fields' text, so the block is split with regular
expressions (``_simple_headers``). The body then matters only for a multipart message, whose
structure ``mimecheck.clean_multipart`` checks the way the stdlib would. Anything else (8-bit
bytes in the header, a line that is not a field, an enclosed message, a multipart the check
does not vouch for) goes through the stdlib as before, so both paths give the same record.

Never raises on message content: broken MIME, 8-bit junk in headers, missing or huge headers
are counted as defects.
"""

from __future__ import annotations

import email.parser
import email.policy
import logging
import re
from dataclasses import dataclass, field
from email.errors import MessageError
from email.header import decode_header, make_header
from email.message import Message

from triage.ingest.mimecheck import clean_multipart, content_type

__all__ = ["MessageRecord", "decode_header_value", "read_message"]

# mail-parser logs at ERROR for input it tolerates (and at DEBUG for every header); a mail
# folder full of spam would flood the caller's log.
logging.getLogger("mailparser").setLevel(logging.CRITICAL)

# Bodies above this size are not parsed for MIME defects (the headers still are): a 50 MiB
# attachment would cost more than the rest of the folder.
_FULL_PARSE_LIMIT = 4 * 1024 * 1024
# RFC 5322 2.1.1: lines must not exceed 998 characters.
_MAX_LINE = 998

_HEADER_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)
_PARSER = email.parser.BytesParser(policy=email.policy.compat32)


@dataclass(slots=True)
class MessageRecord:
    """The headers of one message (in order, top first) and what was wrong with it.

    Lookups by name use an index built on the first one: change ``headers`` before that,
    not after.
    """

    headers: list[tuple[str, str]]
    size: int
    unixfrom: str | None = None
    defect_kinds: list[str] = field(default_factory=list)
    _names: list[str] | None = field(default=None, init=False, repr=False, compare=False)
    _first: dict[str, int] = field(default_factory=dict, init=False, repr=False,
                                   compare=False)

    @property
    def defects(self) -> int:
        """Number of defects found (header and MIME)."""
        return len(self.defect_kinds)

    def _index(self) -> list[str]:
        """The lower-case names (and ``_first``, each name's first position)."""
        names = self._names
        if names is None:
            names = self._names = [n.lower() for n, _ in self.headers]
            # Built backwards, so that the first position of a name is the one kept.
            self._first = dict(zip(reversed(names), range(len(names) - 1, -1, -1),
                                   strict=True))
        return names

    def _positions(self, low: str) -> list[int]:
        names = self._index()
        i = self._first.get(low)
        if i is None:
            return []
        found = [i]
        for _ in range(names.count(low) - 1):
            i = names.index(low, i + 1)
            found.append(i)
        return found

    def get(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), or None."""
        self._index()
        i = self._first.get(name.lower())
        return None if i is None else self.headers[i][1]

    def get_all(self, name: str) -> list[str]:
        """All headers called ``name``, top first."""
        headers = self.headers
        return [headers[i][1] for i in self._positions(name.lower())]

    def positions(self, name: str) -> list[tuple[int, str]]:
        """(index among all headers, value) for each header called ``name``."""
        headers = self.headers
        return [(i, headers[i][1]) for i in self._positions(name.lower())]


def _split_unixfrom(data: bytes) -> tuple[bytes, str | None]:
    """Remove an mbox ``From `` line (kept in single-message files by some tools)."""
    if not data.startswith(b"From "):
        return data, None
    end = data.find(b"\n")
    if end < 0:
        return b"", data.decode("latin-1").strip()
    return data[end + 1 :], data[:end].decode("latin-1").strip()


def _header_defects(data: bytes) -> tuple[bytes, list[str]]:
    """The header block (up to the first blank line, or all of ``data``) and the defects the
    stdlib does not report: 8-bit bytes and over-long lines in it."""
    end = data.find(b"\n\n")
    # Only a CRLF CRLF that starts before the LF LF matters.
    end2 = data.find(b"\r\n\r\n", 0, len(data) if end < 0 else end + 3)
    if end < 0 or (0 <= end2 < end):
        end = end2
    head = data if end < 0 else data[:end]
    kinds = []
    if not head.isascii():
        kinds.append("NonASCIIHeaderBytes")
    if _has_long_line(head):
        kinds.append("HeaderLineTooLong")
    if end < 0 and data:
        kinds.append("NoHeaderBodySeparator")
    return head, kinds


def _has_long_line(head: bytes) -> bool:
    """Whether a line of ``head`` (split at LF) is longer than ``_MAX_LINE``: some window of
    ``_MAX_LINE + 1`` bytes from a line start holds no LF. Each step jumps to the start of
    the window's last line."""
    pos, size = 0, len(head)
    while size - pos > _MAX_LINE:
        last = head.rfind(b"\n", pos, pos + _MAX_LINE + 1)
        if last < 0:
            return True
        pos = last + 1
    return False


# One header field as the stdlib's feed parser reads it: a name of printable characters
# other than ":" (its headerRE), the colon, the rest of the line and any continuation lines
# (starting with space or tab), each ended by CRLF, CR or LF like its line splitting.
_FIELD = r"([\041-\071\073-\176]+):([^\r\n]*(?:(?:\r\n|\r|\n)[ \t][^\r\n]*)*)(?:\r\n|\r|\n|\Z)"
_FIELD_RE = re.compile(_FIELD)
_FIELDS_RE = re.compile(f"(?:{_FIELD})*")


def _simple_headers(head: bytes) -> tuple[list[tuple[str, str]], int] | None:
    """The headers of an ASCII header block that the stdlib would parse without a defect,
    and where they end; None when the stdlib has to decide.

    ``head`` runs up to the first blank line (LF LF or CRLF CRLF), or beyond the stdlib's
    blank line when a CR alone ends a line: that is then the first of these that follows
    only fields. A compat32 value is the text after the colon with leading blanks removed
    and the line breaks of continuation lines kept (``Compat32.header_source_parse``).
    """
    text = head.decode("ascii")
    if "\r" not in text:
        # LF line ends only, so no blank line before the end of ``head``: every line must
        # start a field or continue one (else: a continuation first, a bare colon, an mbox
        # "From " line, junk, which the stdlib records as a defect).
        if not _LF_FIRST_RE.match(text) or _LF_OTHER_LINE_RE.search(text):
            return None
        return _LF_FIELD_RE.findall(text), len(text)
    end = _FIELDS_RE.match(text).end()  # type: ignore[union-attr]  # matches ""
    if end == 0 or (end < len(text) and text[end] not in "\r\n"):
        return None  # as above, or a line that is neither a field nor blank
    return [(n, v.lstrip(" \t").rstrip("\r\n"))
            for n, v in _FIELD_RE.findall(text, 0, end)], end


# The same for text without CR: a field's name and its value less the leading blanks.
_LF_FIRST_RE = re.compile(r"[\041-\071\073-\176]+:")
_LF_OTHER_LINE_RE = re.compile(r"\n(?![ \t]|[\041-\071\073-\176]+:)")
_LF_FIELD_RE = re.compile(r"^([\041-\071\073-\176]+):[ \t]*(.*(?:\n[ \t].*)*)", re.M)
# A line (ended by CRLF, CR or LF, as the stdlib splits them) that holds only its end.
_BLANK_LINE_RE = re.compile(rb"(?:\A|(?<=\n)|(?<=\r)(?!\n))[\r\n]")


def _body_text(body: bytes, fields_end: int) -> str | None:
    """The text after the blank line that follows the header fields, decoded as the stdlib
    decodes it (ASCII, 8-bit bytes as surrogate escapes)."""
    m = _BLANK_LINE_RE.search(body, fields_end)
    if m is None:
        return None
    start = m.start() + (2 if body[m.start() : m.start() + 2] == b"\r\n" else 1)
    return body[start:].decode("ascii", "surrogateescape")


def _simple_record(body: bytes, head: bytes) -> list[tuple[str, str]] | None:
    """The headers of a message the stdlib would find no defect in, when that is known
    without the stdlib: plain fields, and a body that is not an enclosed message and is
    either not multipart or a multipart that ``mimecheck`` finds sound."""
    simple = _simple_headers(head)
    if simple is None:
        return None
    headers, fields_end = simple
    maintype = content_type(headers).partition("/")[0]
    if maintype == "message":
        return None
    if maintype == "multipart":
        text = _body_text(body, fields_end)
        if text is None or not clean_multipart(headers, text):
            return None
    return headers


def _stdlib_defects(msg: Message) -> list[str]:
    return [type(d).__name__ for part in msg.walk() for d in part.defects]


def _mailparser_defects(data: bytes) -> list[str]:
    """mail-parser's categories for a broken message; its own failure is a defect too."""
    import mailparser  # only unusual messages get here: most runs never import it

    try:
        parsed = mailparser.parse_from_bytes(data)
    except Exception as exc:  # the library raises several unrelated types on junk
        return [f"MailParserFailed:{type(exc).__name__}"]
    return sorted(parsed.defects_categories)


def read_message(data: bytes, *, full: bool = False) -> MessageRecord:
    """Read one message's headers; count its defects.

    With ``full=True`` the whole message is also given to mail-parser; otherwise only
    messages with a defect are.

    >>> rec = read_message(b"Subject: =?utf-8?q?caf=C3=A9?=\\nFrom: a@example.com\\n\\nhi\\n")
    >>> decode_header_value(rec.get("subject")), rec.defects
    ('café', 0)
    """
    body, unixfrom = _split_unixfrom(data)
    head, kinds = _header_defects(body)
    if not kinds and not full and len(body) <= _FULL_PARSE_LIMIT:
        headers = _simple_record(body, head)
        # A junk encoded word is a defect, which the general path below records.
        if headers is not None and not _encoded_word_defects(headers):
            return MessageRecord(headers=headers, size=len(data), unixfrom=unixfrom)
    msg: Message | None
    try:
        if len(body) <= _FULL_PARSE_LIMIT:
            msg = _PARSER.parsebytes(body)
        else:
            msg = _HEADER_PARSER.parsebytes(body)
            kinds.append("HugeMessageBodyNotChecked")
        kinds.extend(_stdlib_defects(msg))
        headers = [(str(n), _as_text(v)) for n, v in msg.raw_items()]
    except (RecursionError, ValueError, TypeError, LookupError) as exc:
        # Sender-written MIME (e.g. a thousand nested multiparts) broke the body parse; the
        # headers, our own trusted Received among them, do not depend on it.
        kinds.append(f"Unparseable:{type(exc).__name__}")
        msg, headers = _headers_only(body, kinds)
    if msg is not None and not headers and body.strip():
        kinds.append("NoHeaders")
    kinds.extend(_encoded_word_defects(headers))
    if full or (kinds and len(body) <= _FULL_PARSE_LIMIT):
        extra = [k for k in _mailparser_defects(body) if k not in kinds]
        kinds.extend(extra)
    return MessageRecord(headers=headers, size=len(data), unixfrom=unixfrom,
                         defect_kinds=kinds)


def _headers_only(body: bytes, kinds: list[str]) -> tuple[Message | None, list[tuple[str, str]]]:
    """The headers of a message whose body the stdlib parser could not read, and their
    defects (added to ``kinds``); no headers when even they cannot be read."""
    try:
        msg = _HEADER_PARSER.parsebytes(body)
        headers = [(str(n), _as_text(v)) for n, v in msg.raw_items()]
    except (RecursionError, ValueError, TypeError, LookupError) as exc:
        kinds.append(f"UnparseableHeaders:{type(exc).__name__}")
        return None, []
    kinds.extend(_stdlib_defects(msg))
    return msg, headers


def _as_text(value: object) -> str:
    """compat32 gives str (with surrogate escapes for 8-bit bytes) or a Header object."""
    text = str(value)
    if _SURROGATE.search(text):
        # 8-bit junk: undo surrogateescape, guess UTF-8, else Latin-1 (never fails).
        raw = text.encode("utf-8", "surrogateescape")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
    return text


_SURROGATE = re.compile("[\udc80-\udcff]")
_ENCODED_WORD = re.compile(r"=\?[^?]+\?[bBqQ]\?")
# An encoded word as ``email.header.decode_header`` finds it (its ``ecre``), base64 only:
# a quoted-printable payload never decodes to nothing.
_BASE64_WORD_RE = re.compile(r"=\?[^?]*?\?[bB]\?(.*?)\?=", re.M)
# What the stdlib raises on a junk encoded word: bad base64 and a malformed charset name
# (email.errors.HeaderParseError, CharsetError), an unknown charset (LookupError) ...
_DECODE_ERRORS = (MessageError, LookupError, ValueError, UnicodeError, AssertionError)


def _decoded(value: str) -> str | None:
    """``value`` with its RFC 2047 encoded words decoded (not unfolded); None when one of them
    is junk: the stdlib cannot decode it, or a base64 word with a payload decodes to
    nothing (``=?utf-8?b?!!!?=``), which would silently drop the sender's text."""
    try:
        text = str(make_header(decode_header(value)))
        for m in _BASE64_WORD_RE.finditer(value):
            if m.group(1) and not any(part for part, _ in decode_header(m.group())):
                return None
    except _DECODE_ERRORS:
        return None
    return text


def _encoded_word_defects(headers: list[tuple[str, str]]) -> list[str]:
    """One ``UndecodableEncodedWord`` defect per header whose encoded words
    :func:`decode_header_value` cannot decode (and so keeps as they are)."""
    # (every header of every message: the cheap "=?" test first, no call per header)
    return ["UndecodableEncodedWord" for _, value in headers
            if "=?" in value and _ENCODED_WORD.search(value) and _decoded(value) is None]


def decode_header_value(value: str | None) -> str | None:
    """Decode RFC 2047 encoded words and unfold; junk is kept as it is rather than lost.

    Junk is a value the stdlib cannot decode or one with a base64 word that decodes to
    nothing: the whole value is then kept undecoded (and :func:`read_message` counts an
    ``UndecodableEncodedWord`` defect).

    >>> decode_header_value("=?utf-8?q?caf=C3=A9?=\\n\\tnoir"), decode_header_value("=?utf-8?b?Q?=")
    ('café noir', '=?utf-8?b?Q?=')
    """
    if value is None:
        return None
    text = value
    if "=?" in value and _ENCODED_WORD.search(value):
        decoded = _decoded(value)
        if decoded is not None:
            text = decoded
    return _LINE_BREAK_RE.sub(" ", text).strip() if "\n" in text else text.strip()


_LINE_BREAK_RE = re.compile(r"\s*\r?\n\s*")
