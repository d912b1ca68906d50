"""Received headers whose sender-controlled parts try to move what the receiving MTA wrote.

In the header our Postfix writes, the client controls the HELO (``from HELO (RDNS [IP])``),
the recipient (``for <RCPT>``, its local part quoted by quote_822_local), the CN of a client
certificate and, once authenticated, the SASL name (both cleaned by comment_sanitize). None of
them may move the ``by`` host, the client address, the rDNS name or the queue id, nor make the
hop look authenticated or encrypted. Exim's ``(envelope-from <...>)`` and ``for ADDR`` and the
HELO inside its ``(...helo=...)`` comment are checked as well.
"""

from __future__ import annotations

import ipaddress
import time

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from triage.ingest.received import (
    _by_clause,  # the fast paths: must agree with the scan they shortcut
    _date_semicolon,
    _scan_from_end,
    parse_received,
    trusted_hop,
)

OURS = "mx.example.net"
DATE = "Tue, 3 Sep 2024 10:00:00 +0200"
# A header the sender wrote below ours, claiming our host, a mail provider's address and
# (in the message built around it) passing authentication results.
FORGED = ("from mail-forged.example.com (mail-forged.example.com [198.51.100.200]) "
          f"by {OURS} (Postfix) with ESMTPS id 4FORGED; {DATE}")
TLS = ("(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 "
       "server-signature RSA-PSS (2048 bits) server-digest SHA256)")

_SPECIALS = set('()<>@,;:\\"[]')


def quote_822_local(address: str) -> str:
    """Postfix's quote_822_local: the local part (before the last "@") in quotes, with '"',
    backslash and CR escaped, unless it is a dot-string."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    dot_string = (bool(local) and not local.startswith(".") and not local.endswith(".")
                  and ".." not in local
                  and not any(c in _SPECIALS or c == " " or ord(c) < 32 or ord(c) == 127
                              for c in local))
    if not dot_string:
        local = '"' + "".join("\\" + c if c in '"\\\r' else c for c in local) + '"'
    return local + at + domain


def comment_sanitize(text: str) -> str:
    """Postfix's comment_sanitize (client certificate CN, SASL name in a comment)."""
    out = []
    depth = 0
    for c in text:
        if not (32 <= ord(c) < 127) or c == "\\":
            c = "?"
        elif c == "(":
            depth += 1
        elif c == ")":
            if depth:
                depth -= 1
            else:
                c = "?"
        out.append(c)
    return "".join(out) + ")" * depth


def postfix_received(helo: str, rdns: str, ip: str, *, proto: str = "ESMTP",
                     qid: str = "4AbCdEfGh1", rcpt: str | None = None, tls: bool = False,
                     cn: str | None = None, sasl: str | None = None,
                     sender: str | None = None) -> str:
    """A Received header value as Postfix's smtpd writes it (smtpd.c, data_cmd); with
    ``sender``, as built with RECEIVED_ENVELOPE_FROM."""
    addr = f"IPv6:{ip}" if ":" in ip else ip
    lines = [f"from {helo} ({rdns} [{addr}])"]
    if tls:
        lines.append(TLS)
        lines.append(f'(Client CN "{comment_sanitize(cn)}", Issuer "Example CA" (not verified))'
                     if cn is not None else "(No client certificate requested)")
    if sasl is not None:
        lines.append(f"(Authenticated sender: {comment_sanitize(sasl)})")
    by = f"by {OURS} (Postfix) with {proto} id {qid}"
    if rcpt is None:
        lines += [by + ";", DATE]
    else:
        lines += [by, f"for <{quote_822_local(rcpt)}>; {DATE}"]
    if sender is not None:
        lines.append(f"(envelope-from {quote_822_local(sender)})")
    return "\n\t".join(lines)


def _hop_index(ours: str) -> int:
    """The index of the trusted hop when ``FORGED`` (claiming our host) follows ``ours``,
    with and without the header texts that let the walk skip headers."""
    hops = [parse_received(ours), parse_received(FORGED)]
    for texts in (None, [ours, FORGED]):
        hop = trusted_hop(hops, [OURS], texts=texts)
        assert hop is not None
        if hop.index != 0:
            return hop.index
    return 0


# --- bug: the recipient moved the by clause ---------------------------------------------------

RCPT_ATTACK = ('from attacker.example (unknown [203.0.113.66]) by mx.example.net (Postfix) '
               'with ESMTP id 4AAAAA for <"bob+x> by evil.example"@example.net>; ' + DATE)


def test_recipient_with_quoted_gt_and_by_cannot_move_the_by_host() -> None:
    r = parse_received(RCPT_ATTACK)
    assert r is not None
    assert (r.by, r.queue_id, r.ip, r.rdns, r.helo, r.protocol) == (
        OURS, "4AAAAA", "203.0.113.66", None, "attacker.example", "ESMTP")
    assert r.for_addr == '"bob+x> by evil.example"@example.net'


def test_recipient_cannot_make_a_forged_header_below_the_trusted_one() -> None:
    assert _hop_index(RCPT_ATTACK) == 0
    hop = trusted_hop([parse_received(RCPT_ATTACK), parse_received(FORGED)], [OURS])
    assert hop is not None and hop.received.ip == "203.0.113.66"


def test_helo_and_recipient_together_cannot_move_the_by_host() -> None:
    # The HELO opens '<"', the recipient closes it: a mask that pairs '<' and quotes from
    # the left would then hide our by clause and expose the one inside the recipient.
    value = postfix_received(
        'a<"', "unknown", "203.0.113.66", qid="4REAL",
        rcpt='x> by evil.example (evil.example [198.51.100.9]) with ESMTP id 4FAKE for <"y'
             '@example.net')
    r = parse_received(value)
    assert r is not None
    assert (r.by, r.queue_id, r.ip, r.helo) == (OURS, "4REAL", "203.0.113.66", 'a<"')
    assert _hop_index(value) == 0


def test_escaped_quote_in_recipient_does_not_end_its_quoted_string() -> None:
    # quote_822_local writes a '"' of the local part as '\"': the scan must not pair an
    # escaped quote, nor a '<' inside the quoted string.
    value = postfix_received("x", "unknown", "203.0.113.67", qid="4REAL2",
                             rcpt='a" by evil.example <\\"b@example.net')
    assert '\\"' in value
    r = parse_received(value)
    assert r is not None and (r.by, r.queue_id, r.ip) == (OURS, "4REAL2", "203.0.113.67")


def test_envelope_from_after_the_date_cannot_move_the_by_host() -> None:
    # Postfix built with RECEIVED_ENVELOPE_FROM adds "(envelope-from ADDR)" after the date,
    # the address quoted but not in angle brackets.
    value = postfix_received("x", "unknown", "203.0.113.70", qid="4ENV", rcpt="bob@example.net",
                             sender="x) by evil.example (y; z@spam.example")
    assert '(envelope-from "x) by evil.example (y; z"@spam.example)' in value
    r = parse_received(value)
    assert r is not None and (r.by, r.queue_id, r.ip) == (OURS, "4ENV", "203.0.113.70")
    assert _hop_index(value) == 0


def test_helo_angle_cannot_pair_with_client_certificate_cn() -> None:
    # "<" in the HELO and ">" in the CN of a client certificate: masked as one address, they
    # used to hide our client address and expose a forged one written in the CN.
    value = postfix_received("a<b", "unknown", "203.0.113.68", tls=True,
                             cn="c>d (evil.example [198.51.100.9]) e")
    r = parse_received(value)
    assert r is not None
    assert (r.ip, r.rdns, r.helo, r.by, r.tls) == ("203.0.113.68", None, "a<b", OURS, True)


def test_exim_envelope_addresses_cannot_move_the_by_host() -> None:
    value = ('from mail.example.com ([192.0.2.30]:41234 helo=foo.example.com)\n'
             '\tby mx.example.net with esmtp (Exim 4.96)\n'
             '\t(envelope-from <"x) by evil.example (y"@spam.example>)\n'
             '\tid 1qXyZa-000abc-Dh\n'
             '\tfor "a by evil.example"@example.net; ' + DATE)
    r = parse_received(value)
    assert r is not None
    assert (r.by, r.queue_id, r.ip, r.rdns, r.helo) == (
        OURS, "1qXyZa-000abc-Dh", "192.0.2.30", "mail.example.com", "foo.example.com")
    assert r.for_addr == '"a by evil.example"@example.net'


def test_exim_helo_inside_its_comment_cannot_add_an_address() -> None:
    # Exim writes the HELO inside the comment that holds the client address; a HELO that
    # closes that comment and writes another must not be read as the client.
    value = ("from mail.example.com ([192.0.2.31]:41234 helo=x) (evil.example [198.51.100.9]) "
             "by mx.example.net with esmtp (Exim 4.96) id 1qXyZa-000abc-Di; " + DATE)
    r = parse_received(value)
    assert r is not None and (r.ip, r.rdns, r.helo) == ("192.0.2.31", "mail.example.com", "x")
    value = ("from [192.0.2.32] (port=50312 helo=x) (evil.example [198.51.100.9]) "
             "by mx.example.net with esmtp (Exim 4.96) id 1qXyZa-000abc-Dj; " + DATE)
    r = parse_received(value)
    assert r is not None and (r.ip, r.rdns, r.helo) == ("192.0.2.32", None, "x")


# --- bug: SMTP AUTH and TLS read from the HELO -------------------------------------------------

def test_authenticated_sender_in_the_helo_is_not_read() -> None:
    for proto in ("ESMTP", "ESMTPSA"):
        value = postfix_received("x (Authenticated sender: bob)", "unknown", "203.0.113.9",
                                 proto=proto)
        r = parse_received(value)
        assert r is not None
        assert r.ip == "203.0.113.9" and r.helo == "x (Authenticated sender: bob)"
        assert r.authenticated is None, proto


def test_authenticated_sender_needs_an_authenticating_protocol() -> None:
    # Where Postfix writes it, with the protocol it writes for an authenticated client.
    for proto in ("ESMTPA", "ESMTPSA", "UTF8SMTPSA", "esmtpsa"):
        r = parse_received(postfix_received("laptop", "unknown", "198.51.100.23", proto=proto,
                                            sasl="alice"))
        assert r is not None and r.authenticated == "alice", proto
    # The same comment with a protocol that says no client authenticated is not believed.
    for proto in ("ESMTP", "ESMTPS", "SMTP"):
        r = parse_received(postfix_received("laptop", "unknown", "198.51.100.23", proto=proto,
                                            sasl="alice"))
        assert r is not None and r.authenticated is None, proto


def test_tls_comment_in_the_helo_is_not_read() -> None:
    r = parse_received(postfix_received(f"x {TLS}", "unknown", "203.0.113.10"))
    assert r is not None and r.ip == "203.0.113.10" and r.tls is False
    r = parse_received(postfix_received("x", "unknown", "203.0.113.10", tls=True))
    assert r is not None and r.tls is True


# --- properties ----------------------------------------------------------------------------

_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_HOSTILE = st.sampled_from([
    "by", " by ", "BY", "for", " for <", "from ", "<", ">", '"', '\\"', "\\", "(", ")", "[",
    "]", ";", "@", ",", " id ", " with ESMTPSA ", "evil.example", "[198.51.100.9]",
    "(evil.example [198.51.100.9])", "(unknown [IPv6:2001:db8::66])",
    "(Authenticated sender: mallory)", "(using TLSv1.3 with cipher X)", '(Client CN "x")',
    f" by {OURS} (Postfix) with ESMTPSA id 4EVIL", '<"', '">', "; " + DATE, "helo=",
    "(envelope-from <", "\t", "  ",
])
_text = st.lists(st.one_of(_HOSTILE, st.text(_PRINTABLE, max_size=6)), max_size=12).map("".join)
# Postfix splits a HELO argument at white space and joins the words with single spaces.
_helo = _text.map(lambda s: " ".join(s.split())).filter(bool)
_name = _text.filter(lambda s: s.strip() != "")
_ip = st.one_of(st.ip_addresses().map(str), st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"))
_rdns = st.one_of(st.just("unknown"), st.from_regex(
    r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z0-9]{1,8}){1,3}", fullmatch=True))
_PROTOCOLS = ["SMTP", "ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA", "UTF8SMTPS", "UTF8SMTPSA"]


@settings(max_examples=300, deadline=None)
@given(helo=_helo, rdns=_rdns, ip=_ip, proto=st.sampled_from(_PROTOCOLS),
       qid=st.from_regex(r"[0-9A-Z]{10,12}", fullmatch=True), rcpt=st.none() | _text,
       tls=st.booleans(), cn=st.none() | _text, sasl=st.none() | _name,
       sender=st.none() | _text)
@example(helo="attacker.example", rdns="unknown", ip="203.0.113.66", proto="ESMTP",
         qid="4AAAAAAAAA", rcpt="bob+x> by evil.example", tls=False, cn=None, sasl=None,
         sender=None)
@example(helo='a<"', rdns="unknown", ip="203.0.113.66", proto="ESMTP", qid="4AAAAAAAAA",
         rcpt='x> by evil.example (evil [198.51.100.9]) with ESMTP id 4B for <"y', tls=False,
         cn=None, sasl=None, sender=None)
@example(helo="x (Authenticated sender: bob)", rdns="unknown", ip="::ffff:192.0.2.7",
         proto="ESMTP", qid="4AAAAAAAAA", rcpt=None, tls=False, cn=None, sasl=None,
         sender='x) by evil.example (y; z')
def test_postfix_header_fields_come_from_postfix(
    helo: str, rdns: str, ip: str, proto: str, qid: str, rcpt: str | None, tls: bool,
    cn: str | None, sasl: str | None, sender: str | None,
) -> None:
    """Whatever the client chose, every field Postfix wrote reads back as written."""
    if rcpt is not None:
        rcpt += "@example.net"
    value = postfix_received(helo, rdns, ip, proto=proto, qid=qid, rcpt=rcpt, tls=tls, cn=cn,
                             sasl=sasl, sender=None if sender is None else sender + "@a.example")
    r = parse_received(value)
    assert r is not None
    addr = ipaddress.ip_address(ip)
    want_ip = str(addr.ipv4_mapped or addr) if addr.version == 6 else str(addr)
    assert (r.by, r.queue_id, r.protocol) == (OURS, qid, proto)
    assert r.ip == want_ip
    assert r.rdns == (None if rdns == "unknown" else rdns)
    assert r.helo == helo
    if rcpt is not None:
        assert r.for_addr == " ".join(quote_822_local(rcpt).split())
    assert r.tls == (tls or proto in ("ESMTPS", "ESMTPSA", "UTF8SMTPS", "UTF8SMTPSA"))
    want_auth = (" ".join(comment_sanitize(sasl).split())
                 if sasl is not None and proto.endswith("A") else None)
    assert r.authenticated == want_auth
    assume(not ipaddress.ip_address(want_ip).is_loopback)  # loopback: the walk goes on
    assert _hop_index(value) == 0


_scan_text = st.lists(st.one_of(_HOSTILE, st.sampled_from(["(", ")", "<", ">", '"', "\\", ";"]),
                                st.text(_PRINTABLE, max_size=4)), max_size=25).map("".join)


@settings(max_examples=600, deadline=None)
@given(_scan_text.map(lambda s: " ".join(s.split())))
def test_fast_paths_find_what_the_scan_finds(text: str) -> None:
    fast_at, fast_units = _by_clause(text)
    scan_at, scan_units = _scan_from_end(text)
    assert fast_at == scan_at
    if fast_at is not None:
        assert sorted(fast_units) == sorted(scan_units)
        assert text[fast_at : fast_at + 2].lower() == "by"
    assert _date_semicolon(text) == _scan_from_end(text, semicolon=True)[0]


def test_pathological_headers_parse_in_linear_time() -> None:
    # Each of these is read once from its end; a quadratic scan would take seconds.
    for value in ["from a " + ">" * 8000, 'from a ' + '"' * 8000, "from " + ")" * 8000,
                  ('<"' + " by x>") * 1100, '\\"' * 4000 + ">", "<" + '"a"' * 2600 + ">" * 100,
                  "by " + '"<' * 4000 + ">", "by (" + "<a" * 4000 + ">)" * 10]:
        start = time.process_time()
        parse_received(value)
        assert time.process_time() - start < 1.0, value[:40]


@pytest.mark.parametrize("screen", [True, False])
def test_unreadable_header_that_may_be_ours_ends_the_walk(screen: bool) -> None:
    """Our own header made unreadable must not hand trust to a lower one naming our host."""
    mine = ("mx.example.net",)
    forged = ("from mail-forged.example (mail-forged.example [209.85.128.1]) by mx.example.net "
              "(Postfix) with ESMTP id 4FORGED for <bob@example.net>; "
              "Mon, 1 Jan 2024 10:00:00 +0000")
    texts = ["(((( junk that names mx.example.net", forged]
    hops = [parse_received(t) for t in texts]
    assert hops[0] is None and hops[1] is not None
    assert trusted_hop(hops, mine, texts=texts, screen=screen) is None
    # an unreadable header that cannot name our host (added after delivery) is passed over
    texts[0] = "(((( junk from elsewhere.example"
    hops = [parse_received(t) for t in texts]
    hop = trusted_hop(hops, mine, texts=texts, screen=screen)
    assert hop is not None and hop.index == 1
