"""The mail table's quick paths give what the general code gives.

Header split and multipart check (``message._simple_record``, ``mimecheck``) against the
stdlib parser; Received tokens against the general tokenizer; the trusted-hop screens against
an unscreened walk; the usual date shape against ``parsedate_to_datetime``; plain addresses
against email-validator and ``getaddresses``. Hypothesis builds the inputs from the pieces
that steer each path, the SpamAssassin corpus (when present) adds real mail.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path
from unittest import mock

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from triage.ingest import address, message, received
from triage.ingest.message import MessageRecord, read_message
from triage.ingest.received import parse_received, trusted_hop

CORPUS = Path(os.environ.get("TRIAGE_SA_CORPUS", "/work/shared/corpora/spamassassin"))


def stdlib_record(data: bytes) -> MessageRecord:
    """``read_message`` with the quick path turned off: every message through the stdlib."""
    with mock.patch.object(message, "_simple_record", lambda body, head: None):
        return read_message(data)


# --- messages ------------------------------------------------------------------------------

HEADER_LINES = [
    "From: a@example.com", "Subject: hello", "X-Empty:", "X-Blank:   ", "\tcontinued",
    " continued", "Content-Type: text/plain", "Content-Type: TEXT/HTML; charset=x",
    'Content-Type: multipart/mixed; boundary="b1"', "Content-Type: multipart/alternative;",
    " boundary=b1", "Content-Type: Multipart/Mixed; boundary=b1",
    "Content-Type: multipart/digest; boundary=b1", "Content-Type: multipart/mixed",
    "Content-Type: message/rfc822", "Content-Type: text", "Content-Transfer-Encoding: 7bit",
    "Content-Transfer-Encoding: base64", "Content-Transfer-Encoding:  8bit ",
    ": bare colon", "From someone@example.com Mon Jan  1 00:00:00 2001", "junk line",
    "Foo Bar: baz", "X-8: caf\xe9", "X-Nul: a\x00b",
    "Subject: =?utf-8?q?caf=C3=A9?=", "Subject: =?utf-8?b?Q?=", "X-Mailer: =?utf-8?b?!!!?=",
]
BODY_LINES = [
    "", "text", "--b1", "--b1--", "--b1  ", "--b1\t", "--b1x", "--b1-- trailing", "--b2",
    "--b2--", "Content-Type: text/plain", "Content-Type: multipart/alternative; boundary=b2",
    "Content-Type: multipart/mixed; boundary=b1", "Content-Type: message/rfc822",
    "Content-Type: multipart/mixed", "Content-Transfer-Encoding: base64", " cont",
    "junk line", "From x", ": bare", "X-8: caf\xe9", "caf\xe9 body", "--b1 --",
]
EOLS = ["\n", "\n", "\n", "\r\n", "\r"]


MULTIPART = ['Content-Type: multipart/mixed; boundary="b1"', "Content-Type: multipart/mixed;",
             " boundary=b1", "Subject: s"]
STRUCTURE = ["--b1", "--b1", "--b1--", "", "", "text", "--b2", "--b2--",
             "Content-Type: multipart/alternative; boundary=b2"]


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    eol = draw(st.sampled_from(EOLS))
    mixed = draw(st.booleans()) and draw(st.booleans())
    head = draw(st.lists(st.sampled_from(HEADER_LINES), min_size=0, max_size=6))
    if draw(st.booleans()):  # mostly multipart, mostly boundary lines
        head = draw(st.permutations(MULTIPART))[: draw(st.integers(1, 4))] + head[:2]
        body = draw(st.lists(st.sampled_from(STRUCTURE + BODY_LINES[:8]), max_size=16))
    else:
        body = draw(st.lists(st.sampled_from(BODY_LINES), min_size=0, max_size=14))
    lines = [*head, "", *body]
    ends = [draw(st.sampled_from(EOLS)) if mixed else eol for _ in lines]
    text = "".join(line + end for line, end in zip(lines, ends, strict=True))
    if draw(st.booleans()):
        text = text.rstrip("\r\n")
    return text.encode("latin-1")


CRAFTED = [
    b"From: a@example.com\nSubject: s\n\nbody\n",
    b"From: a@example.com\r\nSubject: s\r\n\r\nbody\r\n",
    b"From: a@example.com\rSubject: s\r\rbody\r",
    b"X: a\r\n\nbody", b"X: a\r\r\n\r\nbody", b"X: a\n\r\n\r\nbody", b" x\nA: b\n\nc",
    b"A: b\nFrom x y\nC: d\n\ne", b"A: b\n: c\n\nd", b"A: b\njunk\n\nc", b"A:\n\tb\n\nc",
    b"From a@b Thu Aug 22 13:17:22 2002\nSubject: s\n\nb\n",
    b'Content-Type: multipart/mixed; boundary="x"\n\npre\n--x\nContent-Type: text/plain\n\n'
    b"hi\n--x\n\nthere\n--x--\nepilogue\n",
    b"Content-Type: multipart/mixed; boundary=x\n\n--x\n\nhi\n",  # no closing line
    b"Content-Type: multipart/mixed; boundary=x\n\nno boundary at all\n",
    b"Content-Type: multipart/mixed; boundary=x\n\n--x--\n--x\n\nhi\n--x--\n",
    b"Content-Type: multipart/mixed; boundary=x\n\n--x\n--x\n\nhi\n--x--\n",
    b"Content-Type: multipart/mixed; boundary=x\n\n--x\n--x--\n",
    b"Content-Type: multipart/mixed; boundary=x\n\n--x--\n\nhi\n--x--\n",  # closing first
    b"Content-Type: multipart/digest; boundary=x\n\n--x\n\nbody\n--x--\n",
    b"Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: multipart/alternative;"
    b" boundary=y\n--x--\n",  # a multipart part without a body
    b"Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: message/rfc822\n\n"
    b"not a header line\n--x--\n",
    b"Content-Type: multipart/mixed; boundary=x\n\n--x\n cont\nA: b\n\nhi\n--x--\n",
    b"Content-Type: multipart/mixed; boundary=x\n\n--x\nX-8: caf\xe9\n\nhi\n--x--\n",
    b"Content-Type: multipart/mixed; boundary=x\n\n--x\n\na\n--x\n--x--\nepilogue\n",
    b"Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: multipart/alternative;"
    b" boundary=y\n\n--y\n\na\n--y\n\nb\n--y--\n--x--\n",
    b"Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: multipart/alternative;"
    b" boundary=y\n\n--y\n\na\n--x--\n",  # inner multipart closed by the outer boundary
    b"Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: multipart/alternative;"
    b" boundary=y\n\n--y\n\na\n--x\n\nb\n--x--\n--x--\n",
    b"Content-Type: multipart/mixed; boundary=x\nContent-Transfer-Encoding: base64\n\n"
    b"--x\n\na\n--x--\n",
    b"Content-Type: multipart/mixed; boundary*0=a; boundary*1=b\n\n--ab\n\na\n--ab--\n",
    b"Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/plain\n--x--\n",
    b"Content-Type: message/rfc822\n\nSubject: inner\n\nbody\n",
    # junk encoded words are a defect on both paths
    b"From: a@example.com\nSubject: =?utf-8?b?Q?=\n\nbody\n",
    b"Subject: =?utf-8?b?!!!?=\r\nX-Mailer: =?utf-8*en?q?x?=\r\n\r\nbody\r\n",
    b"Subject: =?utf-8?q?caf=C3=A9?=\n =?utf-8?b?Y2Fm?=\n\nbody\n",
    b"Content-Type: multipart/mixed; boundary=x\nSubject: =?utf-8?b?Q?=\n\n--x\n\na\n--x--\n",
]


@pytest.mark.parametrize("data", CRAFTED)
def test_quick_record_is_the_stdlib_record(data: bytes) -> None:
    assert read_message(data) == stdlib_record(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_quick_record_is_the_stdlib_record_generated(data: bytes) -> None:
    assert read_message(data) == stdlib_record(data)


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"corpus not found at {CORPUS}")
def test_quick_record_on_the_corpus() -> None:
    files = [p for name in ("easy_ham", "hard_ham", "spam", "spam_2")
             for p in sorted((CORPUS / name).iterdir())[:150]]
    quick = 0
    for path in files:
        data = path.read_bytes()
        rec = read_message(data)
        assert rec == stdlib_record(data), path
        quick += not rec.defects
    assert quick > len(files) // 2


def test_record_lookups() -> None:
    rec = MessageRecord([("A", "1"), ("b", "2"), ("a", "3")], 0)
    assert rec.get("a") == "1" and rec.get("B") == "2" and rec.get("c") is None
    assert rec.get_all("A") == ["1", "3"] and rec.positions("a") == [(0, "1"), (2, "3")]
    assert MessageRecord([], 0).get_all("a") == []


# --- Received ------------------------------------------------------------------------------

PIECES = ["from", "by", "BY", "with", "id", "for", "mail.example.com", "mx.example.net",
          "MX.Example.NET.", "localhost", "[192.0.2.1]", "192.0.2.1", "(", ")", "(x)",
          "(a (b) c)", "((a))", "(using TLSv1.3 (256/256 bits))", "<a@b>", "<a (b>", "<",
          ">", "\\", "\\(", ";", ",", "x;", ";x", ".", "unknown", "(HELO h)", "(u@192.0.2.9)",
          "helo=h", "ESMTPS", "IMAP", "Mon, 1 Jan 2024 10:00:00 +0000", "é", "Σ", "\x1c"]


@st.composite
def received_texts(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.sampled_from(PIECES), min_size=0, max_size=14))
    seps = [draw(st.sampled_from([" ", " ", "", "\n\t", "  "])) for _ in parts]
    return "".join(p + s for p, s in zip(parts, seps, strict=True))


@settings(max_examples=600, deadline=None)
@given(received_texts())
@example("from a (b (c) d)) by x")  # a ")" below depth zero
@example("from a (b by x")  # unclosed
@example("from a(b) by x(y)z")  # comments inside pieces
@example("from a ((b) by x")
def test_quick_tokens_are_the_general_tokens(value: str) -> None:
    text = " ".join(value.split())
    by_at, units = received._by_clause(text)
    masked = text if by_at is None else received._mask(text, units)
    general = received._general_tokens(text, masked)
    assert received._tokens(text, masked) == general
    if "\\" not in masked:
        for quick in (received._split_tokens(text, masked),
                      received._simple_tokens(text, masked)):
            assert quick is None or quick == general


HOST_SETS = [("mx.example.net",), ("mx?.example.net", "localhost"), ("*.example.com",),
             ("[lm]*",), ("MX.Example.NET.",), ()]
RELAY_SETS = [(), ("192.0.2.1",), ("mail.example.com", "198.51.100.0/24")]


AROUND = ["", "", " ", ";", ",", "(x)", ")", "(", ".", "..", "\x1c", "\t", "\n\t", "é", "x",
          "<", ">", "@"]
HOSTS = ["mx.example.net", "MX1.example.net.", "localhost", "mail.example.com", "192.0.2.1",
         "lx", "by"]


@st.composite
def hops(draw: st.DrawFn) -> str:
    """Postfix-like headers with odd characters around the receiving host."""
    if draw(st.integers(0, 3)) == 0:
        return draw(received_texts())
    a, b, c, d = (draw(st.sampled_from(AROUND)) for _ in range(4))
    host, client = draw(st.sampled_from(HOSTS)), draw(st.sampled_from(HOSTS))
    ip = draw(st.sampled_from(["192.0.2.1", "127.0.0.1", "198.51.100.7", "IPv6:::1"]))
    proto = draw(st.sampled_from(["ESMTP", "IMAP", "esmtps"]))
    return (f"from {client} ({client} [{ip}]){a}by{b}{c}{host}{d} (Postfix) with {proto} "
            f"id Q1 for <u@{host}>; Mon, 1 Jan 2024 10:00:00 +0000")


@settings(max_examples=800, deadline=None)
@given(st.lists(hops(), max_size=5), st.sampled_from(HOST_SETS),
       st.sampled_from(RELAY_SETS))
def test_screened_walk_is_the_plain_walk(texts: list[str], mine: tuple[str, ...],
                                         relays: tuple[str, ...]) -> None:
    hops = [parse_received(t) for t in texts]
    assert (trusted_hop(hops, mine, relays, texts=texts)
            == trusted_hop(hops, mine, relays, texts=texts, screen=False))


def reference_date(text: str) -> datetime | None:
    text = re.sub(r"\([^()]*\)\s*$", "", text.strip()).strip()
    if not text:
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(["", "Mon, ", "Sun,\t", "mon, ", "Xyz, "]),
       st.integers(0, 40), st.sampled_from(["Jan", "feb", "JUL", "July", "Sept", "Foo"]),
       st.sampled_from(["2024", "02", "99", "0069", "1999", "10000"]),
       st.sampled_from(["10:00:00", "9:5:7", "23:59", "24:00:00", "10:00:61", "10.00"]),
       st.sampled_from(["+0000", "-0000", "+0530", "-2359", "+2400", "+9999", "GMT", "",
                        "-0400 (EDT)", "+0100 (x) (y)", "+0000)"]))
def test_quick_date_is_the_stdlib_date(day_name: str, day: int, month: str, year: str,
                                       clock: str, zone: str) -> None:
    text = f" {day_name}{day} {month} {year} {clock} {zone} "
    got, want = received._parse_date(text), reference_date(text)
    assert got == want and (got is None or got.utcoffset() == want.utcoffset())  # type: ignore[union-attr]


# --- addresses -----------------------------------------------------------------------------

def reference_normalise(addr: str) -> str | None:
    a = addr.strip().strip("<>").strip()
    if not a and addr.strip() in ("<>", ""):
        return "" if addr.strip() == "<>" else None
    try:
        v = validate_email(a, check_deliverability=False, allow_smtputf8=True)
        return f"{v.local_part}@{v.ascii_domain}"  # domains in ASCII, as Postfix compares them
    except (EmailNotValidError, UnicodeError, ValueError):
        pass
    if "@" not in a:
        return None
    local, _, domain = a.rpartition("@")
    return f"{local}@{domain.lower().rstrip('.')}"


def reference_parse(value: str) -> str | None:
    for _, addr in getaddresses([value]):
        if addr:
            return reference_normalise(addr)
    m = re.search(r"[^\s<>\"]+@[^\s<>\"]+", value)
    return reference_normalise(m.group()) if m else None


LOCALS = ["a", "A.B", "a..b", ".a", "a.", "x+y", "o'brien", "Postmaster", "ABUSE", "www",
          "a" * 65, "é", '"q"', "a b", "!#$%&'*+/=?^_`{|}~-"]
DOMAINS = ["example.com", "EXAMPLE.COM.", "xn--bcher-kva.example", "XN--P1AI", "localhost",
           "x_y.com", "1.2.3.4", "[192.0.2.1]", "-a.com", "a..b.com", "com", "a.123",
           "ex" * 70 + ".com", "Example.Co.UK", "test", "a.invalid"]


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(LOCALS), st.sampled_from(DOMAINS),
       st.sampled_from(["{}", "<{}>", " {} ", "Name <{}>", "J. Doe <{}>", '"Q" <{}>',
                        "=?utf-8?q?x?= <{}>", "{} (comment)", "a, {}", "<{}> x", "Name<{}>",
                        "\t\r\n {}\r\n"]))
def test_quick_addresses_are_the_library_addresses(local: str, domain: str,
                                                   form: str) -> None:
    addr = f"{local}@{domain}"
    assert address.normalise_address.__wrapped__(addr) == reference_normalise(addr)
    value = form.format(addr)
    assert address.parse_address.__wrapped__(value) == reference_parse(value)
