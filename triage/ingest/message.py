"""Bytes of one message -> :class:`MessageRecord`. The only module that imports mail-parser.

Speed: the headers are all that the ``mail`` table needs, and Python's own parser reads a
message's headers and MIME structure several times faster than mail-parser decodes every body
part (see ``tests/bench/mail_bench.py``). So every message goes through the stdlib parser
(``compat32`` policy: tolerant, keeps raw values, records defects instead of raising), and only
messages that are broken (a MIME or header defect) or explicitly asked for (``full=True``) are
handed to mail-parser, whose defect categories then name what is wrong.

Never raises on message content: broken MIME, 8-bit junk in headers, missing or huge headers
are counted as defects.
"""

from __future__ import annotations

import email.parser
import email.policy
import logging
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message

import mailparser

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
    """The headers of one message (in order, top first) and what was wrong with it."""

    headers: list[tuple[str, str]]
    size: int
    unixfrom: str | None = None
    defect_kinds: list[str] = field(default_factory=list)

    @property
    def defects(self) -> int:
        """Number of defects found (header and MIME)."""
        return len(self.defect_kinds)

    def get(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), or None."""
        low = name.lower()
        return next((v for n, v in self.headers if n.lower() == low), None)

    def get_all(self, name: str) -> list[str]:
        """All headers called ``name``, top first."""
        low = name.lower()
        return [v for n, v in self.headers if n.lower() == low]

    def positions(self, name: str) -> list[tuple[int, str]]:
        """(index among all headers, value) for each header called ``name``."""
        low = name.lower()
        return [(i, v) for i, (n, v) in enumerate(self.headers) if n.lower() == low]


def _split_unixfrom(data: bytes) -> tuple[bytes, str | None]:
    """Remove an mbox ``From `` line (kept in single-message files by some tools)."""
    if not data.startswith(b"From "):
        return data, None
    end = data.find(b"\n")
    if end < 0:
        return b"", data.decode("latin-1").strip()
    return data[end + 1 :], data[:end].decode("latin-1").strip()


def _header_defects(data: bytes) -> list[str]:
    """Defects the stdlib does not report: 8-bit bytes and over-long lines in the header."""
    end = data.find(b"\n\n")
    end2 = data.find(b"\r\n\r\n")
    if end < 0 or (0 <= end2 < end):
        end = end2
    head = data if end < 0 else data[:end]
    kinds = []
    if not head.isascii():
        kinds.append("NonASCIIHeaderBytes")
    if len(head) > _MAX_LINE and max(map(len, head.split(b"\n"))) > _MAX_LINE:
        kinds.append("HeaderLineTooLong")
    if end < 0 and data:
        kinds.append("NoHeaderBodySeparator")
    return kinds


def _stdlib_defects(msg: Message) -> list[str]:
    return [type(d).__name__ for part in msg.walk() for d in part.defects]


def _mailparser_defects(data: bytes) -> list[str]:
    """mail-parser's categories for a broken message; its own failure is a defect too."""
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
    kinds = _header_defects(body)
    try:
        if len(body) <= _FULL_PARSE_LIMIT:
            msg = _PARSER.parsebytes(body)
        else:
            msg = _HEADER_PARSER.parsebytes(body)
            kinds.append("HugeMessageBodyNotChecked")
        kinds.extend(_stdlib_defects(msg))
        headers = [(str(n), _as_text(v)) for n, v in msg.raw_items()]
    except (RecursionError, ValueError, TypeError, LookupError) as exc:
        msg = None
        kinds.append(f"Unparseable:{type(exc).__name__}")
        headers = []
    if msg is not None and not headers and body.strip():
        kinds.append("NoHeaders")
    if full or (kinds and len(body) <= _FULL_PARSE_LIMIT):
        extra = [k for k in _mailparser_defects(body) if k not in kinds]
        kinds.extend(extra)
    return MessageRecord(headers=headers, size=len(data), unixfrom=unixfrom,
                         defect_kinds=kinds)


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


def decode_header_value(value: str | None) -> str | None:
    """Decode RFC 2047 encoded words and unfold; junk is kept as it is rather than lost."""
    if value is None:
        return None
    text = value
    if _ENCODED_WORD.search(value):
        try:
            text = str(make_header(decode_header(value)))
        except (LookupError, ValueError, UnicodeError, AssertionError):
            text = value
    return re.sub(r"\s*\r?\n\s*", " ", text).strip()
