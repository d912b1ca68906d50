"""Whether the stdlib's parser would find no defect in a multipart message, without parsing it.

``email.feedparser`` reads a multipart body line by line through a stack of boundary
predicates, building a ``Message`` per part; on a typical multipart message that costs ten
times reading its headers. The defects it records there come from the structure alone: a
missing or unusable boundary, a multipart with an encoding other than 7bit/8bit/binary, no
first or no closing boundary, a part whose header block is broken. :func:`clean_multipart`
follows the same structure with regular-expression searches for boundary lines and says
``True`` only when every step is one it has checked to be defect-free; anything unusual
(consecutive boundary lines, an enclosed message, a digest, 8-bit or odd header lines in a
part, deep nesting, a line that could be two boundaries) makes it answer ``False``, and the
caller then runs the stdlib parser, so the answer never changes a result.

Lines are what the feed parser reads: ended by CRLF, CR or LF. A boundary line is
``--BOUNDARY``, optionally ``--``, optional blanks, then the end of the line (its
``boundaryre``); while a part is read, a boundary line of any enclosing multipart ends it.
"""

from __future__ import annotations

import re
from email.message import Message
from email.policy import compat32

__all__ = ["clean_multipart", "content_type"]

_MAX_DEPTH = 8
# A field's first line (the feed parser's header pattern less its bare-colon and "From "
# cases, which it reports as defects or treats specially).
_FIELD_START = re.compile(r"[\041-\071\073-\176]+:")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)?")


class _Unsure(Exception):
    """A step this module does not vouch for: let the stdlib decide."""


def content_type(headers: list[tuple[str, str]], default: str = "text/plain") -> str:
    """``Message.get_content_type`` for compat32 ASCII headers: the first Content-Type's
    type, lower case; ``default`` without one, text/plain when it has no single "/"."""
    for name, value in headers:
        if len(name) == 12 and name.lower() == "content-type":
            ctype = value.partition(";")[0].strip().lower()
            return ctype if ctype.count("/") == 1 else "text/plain"
    return default


# What may follow "--BOUNDARY" on a boundary line (the rest of the feed parser's boundaryre).
_BOUNDARY_TAIL = re.compile(r"(--)?[ \t]*(?=[\r\n]|\Z)")


class _Boundary:
    """The lines of one multipart's boundary, found with ``str.find`` (a regular expression
    anchored at line starts would try every position of the body)."""

    __slots__ = ("needle",)

    def __init__(self, boundary: str) -> None:
        self.needle = "--" + boundary

    def at(self, text: str, pos: int) -> re.Match[str] | None:
        """The tail of a boundary line starting at ``pos`` (a line start), if it is one;
        group 1 is set for a closing line."""
        if not text.startswith(self.needle, pos):
            return None
        return _BOUNDARY_TAIL.match(text, pos + len(self.needle))

    def search(self, text: str, pos: int) -> tuple[int, re.Match[str]] | None:
        """(start, tail) of the first boundary line starting at or after ``pos``."""
        needle = self.needle
        i = text.find(needle, pos)
        while i >= 0:
            # A line starts after CR or LF (a "-" never continues a CRLF).
            if i == 0 or text[i - 1] in "\r\n":
                m = _BOUNDARY_TAIL.match(text, i + len(needle))
                if m is not None:
                    return i, m
            i = text.find(needle, i + 1)
        return None


def clean_multipart(headers: list[tuple[str, str]], body: str) -> bool:
    """True when the stdlib's compat32 parser would record no defect for a message with
    these (defect-free, ASCII) top-level ``headers`` of a multipart type and this ``body``
    (the text after the blank line, decoded like the stdlib: ASCII, surrogate escapes).
    False means "not known": the caller must parse the message."""
    try:
        _multipart(headers, body, 0, [], 0)
    except _Unsure:
        return False
    return True


def _multipart(headers: list[tuple[str, str]], text: str, pos: int,
               outer: list[_Boundary], depth: int) -> int:
    """Check the multipart body starting at ``pos``; return where it ends (the boundary line
    of an enclosing multipart, or the end of the text)."""
    if depth > _MAX_DEPTH or content_type(headers) == "multipart/digest":
        raise _Unsure  # digest parts default to message/rfc822
    msg = Message(policy=compat32)
    for name, value in headers:
        msg.set_raw(name, value)
    boundary = msg.get_boundary()
    if boundary is None:
        raise _Unsure  # NoBoundaryInMultipartDefect
    if str(msg.get("content-transfer-encoding", "8bit")).lower() not in (
            "7bit", "8bit", "binary"):
        raise _Unsure  # InvalidMultipartContentTransferEncodingDefect
    own = _Boundary(boundary)
    # The preamble runs to the first line of ours; an enclosing boundary or the end of the
    # text first, or our closing line first, is StartBoundaryNotFoundDefect.
    found = _next_boundary(text, pos, [*outer, own])
    if found is None or found[0] is not own or found[3]:
        raise _Unsure
    stack = [*outer, own]
    while True:
        _, _, after, _ = found
        if _boundary_at(text, after, stack) is not None:
            raise _Unsure  # consecutive boundary lines: the feed parser skips them
        end = _part(text, after, stack, depth)
        found = _next_boundary(text, end, stack) if end < len(text) else None
        if found is None or found[1] != end or found[0] is not own:
            raise _Unsure  # the end of the text or an enclosing boundary: no closing line
        if found[3]:
            break
    # The epilogue runs to an enclosing boundary line or the end of the text.
    rest = _next_boundary(text, found[2], outer) if outer else None
    return len(text) if rest is None else rest[1]


def _part(text: str, pos: int, stack: list[_Boundary], depth: int) -> int:
    """Check one part (headers, then its body) starting at ``pos``; return where it ends:
    the next boundary line of ``stack`` or the end of the text."""
    headers: list[tuple[str, str]] = []
    lines: list[str] = []
    body = None
    while pos < len(text):
        if _boundary_at(text, pos, stack) is not None:
            break  # a boundary line ends the header block: the part has no body
        end = _LINE.match(text, pos).end()  # type: ignore[union-attr]  # matches ""
        line = text[pos:end]
        pos = end
        content = line.rstrip("\r\n")
        if not content:
            body = pos
            break
        if not line.isascii():
            raise _Unsure
        if content[0] in " \t":
            if not lines:
                raise _Unsure  # FirstHeaderLineIsContinuationDefect
            lines.append(line)
        elif _FIELD_START.match(content):
            if lines:
                headers.append(_field(lines))
            lines = [line]
        else:
            raise _Unsure  # MissingHeaderBodySeparatorDefect, a bare colon, "From "
    if lines:
        headers.append(_field(lines))
    maintype = content_type(headers).partition("/")[0]
    if maintype == "message":
        raise _Unsure
    if body is None:
        if maintype == "multipart":
            raise _Unsure  # StartBoundaryNotFoundDefect
        return pos  # a boundary line or the end of the text
    if maintype == "multipart":
        return _multipart(headers, text, body, stack, depth + 1)
    found = _next_boundary(text, body, stack)
    return len(text) if found is None else found[1]


def _field(lines: list[str]) -> tuple[str, str]:
    """``Compat32.header_source_parse``."""
    name, value = lines[0].split(":", 1)
    value = value.lstrip(" \t") + "".join(lines[1:])
    return name, value.rstrip("\r\n")


def _boundary_at(text: str, pos: int, stack: list[_Boundary]) -> _Boundary | None:
    """The boundary of ``stack`` whose line starts at ``pos`` (a line start), if any."""
    hits = [b for b in stack if b.at(text, pos)]
    if len(hits) > 1:
        raise _Unsure  # one line, two boundaries
    return hits[0] if hits else None


def _next_boundary(text: str, pos: int, stack: list[_Boundary]
                   ) -> tuple[_Boundary, int, int, bool] | None:
    """The first boundary line of ``stack`` at or after ``pos``: (its boundary, where the
    line starts, where the next line starts, whether it is a closing line)."""
    best: tuple[int, re.Match[str]] | None = None
    which = None
    for b in stack:
        found = b.search(text, pos)
        if found is not None and (best is None or found[0] < best[0]):
            best, which = found, b
    if best is None or which is None:
        return None
    start, tail = best
    _boundary_at(text, start, stack)  # refuse a line that two boundaries match
    after = _LINE.match(text, tail.end()).end()  # type: ignore[union-attr]
    return which, start, after, tail.group(1) is not None
