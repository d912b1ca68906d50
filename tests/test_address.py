"""Addresses and domains: one ASCII form per domain, IPv4-mapped clients as IPv4."""

from __future__ import annotations

import pytest

from triage.ingest.address import (
    address_domain,
    ascii_domain,
    client_address,
    normalise_address,
    parse_address,
    registered_domain,
)

A_LABEL = "xn--bcher-kva.example"  # bücher.example, as Postfix's maps and the DNS see it


@pytest.mark.parametrize("addr", [
    "<x@xn--bcher-kva.example>", "x@XN--BCHER-KVA.example", "x@bücher.example",
    "x@BÜCHER.Example.", "<x@bücher.example>",
])
def test_idn_addresses_have_their_a_label_domain(addr: str) -> None:
    assert normalise_address(addr) == f"x@{A_LABEL}"


def test_idn_domain_is_one_value_whatever_the_source() -> None:
    # headers (From, Return-Path) and rDNS / HELO / the log must group together
    from_header = parse_address('"Bücher" <Promo@bücher.example>')
    assert from_header == f"Promo@{A_LABEL}"
    assert address_domain(from_header) == A_LABEL
    assert address_domain("x@bücher.example") == A_LABEL
    assert registered_domain("mail.bücher.example") == A_LABEL
    assert registered_domain("mail.xn--bcher-kva.example") == A_LABEL
    assert registered_domain(address_domain(normalise_address("a@mail.bücher.example"))) \
        == A_LABEL
    # a public suffix in Unicode is still a public suffix
    assert registered_domain("a.b.рф") == "b.xn--p1ai"
    assert registered_domain("рф") is None


def test_role_names_and_unicode_local_parts_keep_the_ascii_domain() -> None:
    assert normalise_address("Postmaster@bücher.example") == f"postmaster@{A_LABEL}"
    assert normalise_address("ü@bücher.example") == f"ü@{A_LABEL}"


def test_a_domain_with_no_ascii_form_is_kept_as_evidence_but_never_a_registered_domain() -> None:
    assert ascii_domain("😀.example") is None
    assert normalise_address("a@😀.example") == "a@😀.example"
    assert registered_domain("mail.😀.example") is None


def test_ascii_domain() -> None:
    assert ascii_domain("Mail.BÜCHER.example") == f"mail.{A_LABEL}"
    assert ascii_domain("foo_bar.bücher.example") == f"foo_bar.{A_LABEL}"  # ASCII labels kept
    assert ascii_domain("straße.example") == "xn--strae-oqa.example"  # non-transitional
    assert ascii_domain("Example.COM") == "example.com"


@pytest.mark.parametrize(("ip", "expected"), [
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("::FFFF:c000:207", "192.0.2.7"),
    ("0:0:0:0:0:ffff:c000:207", "192.0.2.7"),
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8::ffff:1", "2001:db8::ffff:1"),
    ("::ffff:zz", "::ffff:zz"),
    ("unknown", "unknown"),
])
def test_client_address_reads_ipv4_mapped_as_ipv4(ip: str, expected: str) -> None:
    assert client_address(ip) == expected
    assert client_address(None) is None
