"""Received grammar: annotated samples (tests/samples/received/*.txt), properties, trusted hop."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triage.ingest.received import (
    Received,
    host_matches,
    infer_my_hostnames,
    parse_received,
    trusted_hop,
)

SAMPLES = Path(__file__).parent / "samples" / "received"


def _load_samples() -> list[pytest.param]:
    """Each ``# expect:`` line applies to the header that starts on the next line and runs
    through its continuation lines (lines that start with white space)."""
    params = []
    for path in sorted(SAMPLES.glob("*.txt")):
        lines = path.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("# expect:"):
                expect = json.loads(line[len("# expect:"):])
                start = i + 1
                header = [lines[start]]
                j = start + 1
                while j < len(lines) and lines[j][:1] in (" ", "\t"):
                    header.append(lines[j])
                    j += 1
                value = "\n".join(header)
                assert value.startswith("Received:"), f"{path.name}:{start + 1}"
                value = value[len("Received:"):]
                params.append(pytest.param(value, expect, id=f"{path.name}:{start + 1}"))
                i = j
            else:
                i += 1
    return params


SAMPLE_PARAMS = _load_samples()


def test_samples_exist() -> None:
    assert len(SAMPLE_PARAMS) >= 30


@pytest.mark.parametrize(("value", "expect"), SAMPLE_PARAMS)
def test_sample(value: str, expect: dict[str, object] | None) -> None:
    got = parse_received(value)
    if expect is None:
        assert got is None
        return
    assert got is not None
    fields = got.as_dict()
    for key, want in expect.items():
        assert fields[key] == want, key


def _addresses_in(text: str) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses written in ``text``, an IPv4-mapped one also as its IPv4 address."""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for cand in re.findall(r"[0-9A-Fa-f:.]+", text):
        for piece in (cand, cand.strip(".:")):
            with contextlib.suppress(ValueError):
                addr = ipaddress.ip_address(piece)
                found.add(addr)
                if addr.version == 6 and addr.ipv4_mapped is not None:
                    found.add(addr.ipv4_mapped)
    return found


_fragments = st.sampled_from([
    "from ", " by ", " with ESMTP ", " id ", " for ", "(", ")", "[", "]", "<", ">", "; ",
    "unknown", "IPv6:", "192.0.2.1", "2001:db8::1", "198.51.100.7", " helo=", "HELO ",
    "\n\t", "\\", "\"", "mx.example.net", "(Postfix)", ":25", "@", "::ffff:203.0.113.4",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_fragments, st.text(max_size=8)), max_size=30).map("".join))
def test_never_raises_and_ip_comes_from_input(value: str) -> None:
    got = parse_received(value)
    if got is not None and got.ip is not None:
        assert ipaddress.ip_address(got.ip) in _addresses_in(value)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_never_raises_on_any_text(value: str) -> None:
    got = parse_received(value)
    assert got is None or isinstance(got, Received)


def test_huge_header_is_bounded() -> None:
    # Only the first 8 KiB are read: the address after 100,000 "(" is never reached.
    value = "from " + "(" * 100_000 + " (unknown [192.0.2.1]) by mx.example.net"
    got = parse_received(value)
    assert got is not None and got.ip is None and got.by is None
    got = parse_received("from a (unknown [192.0.2.1]) by mx.example.net " + "x " * 100_000)
    assert got is not None and got.ip == "192.0.2.1"


def test_date_is_tz_aware() -> None:
    got = parse_received("from a (unknown [192.0.2.1]) by mx.example.net (Postfix) "
                         "with ESMTP id 4A; Tue, 3 Sep 2024 10:00:00 -0000")
    assert got is not None and got.date is not None
    assert got.date.utcoffset() is not None and got.date.hour == 10


# --- trusted hop --------------------------------------------------------------------------

def _hops(*values: str) -> list[Received | None]:
    return [parse_received(v) for v in values]


OUR_HOP = ("from mail.example.com (mail.example.com [192.0.2.1]) by mx.example.net (Postfix) "
           "with ESMTP id 4AAA")
FILTER_HOP = ("from localhost (localhost [127.0.0.1]) by mx.example.net (Postfix) "
              "with ESMTP id 4BBB")
FORGED = ("from mail-ed1.google.example (mail-ed1.google.example [198.51.100.9]) "
          "by mx.example.net (Postfix) with ESMTPS id 4CCC")


def test_trusted_hop_walks_through_content_filter() -> None:
    hop = trusted_hop(_hops(FILTER_HOP, OUR_HOP, FORGED), ["mx.example.net"])
    assert hop is not None and hop.index == 1
    assert hop.received.ip == "192.0.2.1" and hop.received.queue_id == "4AAA"


def test_trusted_hop_stops_at_external_client_even_if_below_claims_us() -> None:
    # FORGED claims to be by our host as well, but the hop above it came from outside.
    hop = trusted_hop(_hops(OUR_HOP, FORGED), ["mx.example.net"])
    assert hop is not None and hop.index == 0 and hop.received.ip == "192.0.2.1"


def test_headers_above_ours_are_ignored() -> None:
    above = ("from imap.example.net (imap.example.net [192.0.2.250]) by other.example.org "
             "(Postfix) with ESMTP id 4DDD")
    hop = trusted_hop(_hops(above, OUR_HOP), ["*.example.net"])
    assert hop is not None and hop.index == 1


def test_no_hop_of_ours() -> None:
    assert trusted_hop(_hops(OUR_HOP), ["mx.example.org"]) is None
    assert trusted_hop([None, None], ["mx.example.net"]) is None


def test_trusted_relay_by_name_and_network() -> None:
    relay_hop = ("from backup.example.org (backup.example.org [203.0.113.5]) "
                 "by mx.example.net (Postfix) with ESMTP id 4EEE")
    backup_in = ("from spam.example.com (unknown [192.0.2.66]) by backup.example.org "
                 "(Postfix) with ESMTP id 4FFF")
    hops = _hops(relay_hop, backup_in)
    assert trusted_hop(hops, ["mx.example.net"]).received.ip == "203.0.113.5"  # type: ignore[union-attr]
    for relays in (["backup.example.org"], ["203.0.113.0/24"]):
        hop = trusted_hop(hops, ["mx.example.net"], relays)
        assert hop is not None and hop.received.ip == "192.0.2.66", relays


def test_helo_never_makes_a_hop_internal() -> None:
    liar = ("from mx.example.net (unknown [192.0.2.66]) by mx.example.net (Postfix) "
            "with ESMTP id 4GGG")
    hop = trusted_hop(_hops(liar, FORGED), ["mx.example.net"])
    assert hop is not None and hop.index == 0 and hop.received.ip == "192.0.2.66"


def test_locally_submitted() -> None:
    hop = trusted_hop(_hops(FILTER_HOP), ["mx.example.net"])
    assert hop is not None and hop.internal_only


def test_host_matches() -> None:
    assert host_matches("MX1.Example.NET.", ["mx?.example.net"])
    assert not host_matches("mx1.example.net.evil.example", ["mx?.example.net"])
    assert not host_matches(None, ["*"])


def test_infer_my_hostnames() -> None:
    tops = ["mx.example.net"] * 90 + ["localhost"] * 50 + ["other.example.org"] * 2
    assert infer_my_hostnames(tops) == ["mx.example.net"]
    assert infer_my_hostnames([]) == []


def test_trusted_relay_without_rdns_is_followed_by_its_address() -> None:
    """A relay we trust by address, with no reverse DNS and its own name for itself in
    "by": its Received header below ours is followed; a client claiming the relay's name
    from another address is not."""
    relay_hop = ("from relay.example.org (unknown [203.0.113.5]) "
                 "by mx.example.net (Postfix) with ESMTP id 4EEE")
    relay_in = ("from spam.example.com (unknown [192.0.2.66]) by gw-internal.example.org "
                "(8.12.5/8.12.5) with ESMTP id g6K4xYs0")
    hops = _hops(relay_hop, relay_in)
    assert trusted_hop(hops, ["mx.example.net"]).received.ip == "203.0.113.5"  # type: ignore[union-attr]
    hop = trusted_hop(hops, ["mx.example.net"], ["203.0.113.5"])
    assert hop is not None and hop.received.ip == "192.0.2.66"
    impostor = ("from relay.example.org (unknown [198.51.100.9]) "
                "by mx.example.net (Postfix) with ESMTP id 4EEF")
    hop = trusted_hop(_hops(impostor, relay_in), ["mx.example.net"], ["203.0.113.5"])
    assert hop is not None and hop.received.ip == "198.51.100.9"


# --- IPv4-mapped client addresses -----------------------------------------------------------

@pytest.mark.parametrize("value", [
    "from a (unknown [IPv6:::ffff:192.0.2.7]) by mx.example.net (Postfix) with ESMTP id 4M1",
    "from a (unknown [IPv6:::FFFF:c000:207]) by mx.example.net (Postfix) with ESMTP id 4M2",
    "from a (host.example.com [::ffff:192.0.2.7]) by relay.example.net (8.12.5/8.12.5) "
    "with ESMTP id g5KJ8WI08701",
    "from dhiggins ([::ffff:192.0.2.7]) (IDENT: nnzrjkx) by netc.example with esmtp",
    "from unknown (HELO a.example) (::ffff:192.0.2.7) by mta3.example.com with SMTP",
    "from a.example ([::ffff:192.0.2.7]:41234 helo=a.example) by mx.example.net with esmtp "
    "(Exim 4.96) id 1qXyZa-000abc-Dk",
], ids=["postfix", "postfix-hex", "sendmail", "ident", "qmail", "exim"])
def test_ipv4_mapped_client_is_ipv4(value: str) -> None:
    """Postfix logs and matches a client at ::ffff:192.0.2.7 as 192.0.2.7: so do we."""
    got = parse_received(value)
    assert got is not None and got.ip == "192.0.2.7"


def test_ipv6_that_is_not_mapped_stays_ipv6() -> None:
    got = parse_received("from a (unknown [IPv6:2001:DB8::7]) by mx.example.net (Postfix)")
    assert got is not None and got.ip == "2001:db8::7"
    got = parse_received("from a (unknown [IPv6:::192.0.2.7]) by mx.example.net (Postfix)")
    assert got is not None and got.ip == "::c000:207"  # IPv4-compatible, not mapped


def test_ipv4_mapped_loopback_and_relay_network() -> None:
    """A content filter re-injecting over ::ffff:127.0.0.1 is loopback (internal), and a relay
    trusted by its IPv4 network is recognised at its mapped address."""
    mapped_filter = ("from localhost (localhost [IPv6:::ffff:127.0.0.1]) by mx.example.net "
                     "(Postfix) with ESMTP id 4BBC")
    hop = trusted_hop(_hops(mapped_filter, OUR_HOP, FORGED), ["mx.example.net"])
    assert hop is not None and hop.index == 1 and hop.received.ip == "192.0.2.1"
    relay_hop = ("from backup.example.org (unknown [IPv6:::ffff:203.0.113.5]) "
                 "by mx.example.net (Postfix) with ESMTP id 4EEF")
    backup_in = ("from spam.example.com (unknown [192.0.2.66]) by backup.example.org "
                 "(Postfix) with ESMTP id 4FFG")
    hop = trusted_hop(_hops(relay_hop, backup_in), ["mx.example.net"], ["203.0.113.0/24"])
    assert hop is not None and hop.index == 1 and hop.received.ip == "192.0.2.66"
