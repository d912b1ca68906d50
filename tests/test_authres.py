"""Received-SPF, Authentication-Results, DKIM-Signature, and which of them to trust."""

from __future__ import annotations

import pytest

from triage.ingest.authres import (
    dkim_signature_domains,
    parse_authentication_results,
    parse_received_spf,
    trusted_results,
)


@pytest.mark.parametrize(("value", "result", "ip"), [
    # postfix-policyd-spf-python
    ("Pass (mailfrom) identity=mailfrom; client-ip=192.0.2.1; helo=mail.example.com; "
     "envelope-from=a@example.com; receiver=<UNKNOWN>", "pass", "192.0.2.1"),
    ("None (no SPF record) identity=no SPF record; client-ip=2001:db8::5; "
     "helo=x.example; envelope-from=a@example.org; receiver=mx.example.net",
     "none", "2001:db8::5"),
    # RFC 7208 9.1 style with a comment
    ("fail (mybox.example.org: domain of myname@example.com does not designate 192.0.2.1 "
     "as permitted sender) receiver=mybox.example.org; client-ip=192.0.2.1; "
     "envelope-from=\"myname@example.com\"; helo=foo.example.com;", "fail", "192.0.2.1"),
    ("SoftFail (x) client-ip=198.51.100.3", "softfail", "198.51.100.3"),
    ("error (temporary DNS failure)", "temperror", None),
    ("garbage here", None, None),
])
def test_received_spf(value: str, result: str | None, ip: str | None) -> None:
    got = parse_received_spf(value)
    if result is None:
        assert got is None
        return
    assert got is not None and got.result == result and got.client_ip == ip


def test_authentication_results() -> None:
    ar = parse_authentication_results(
        "mx.example.net;\n\tdkim=pass (2048-bit key; unprotected) header.d=example.com "
        "header.i=@example.com header.a=rsa-sha256 header.s=s1 header.b=AbCd;\n"
        "\tdkim=fail (bad signature) header.d=other.example;\n"
        "\tspf=softfail smtp.mailfrom=example.com; dmarc=PASS (p=none dis=none) "
        "header.from=example.com")
    assert ar is not None and ar.authserv_id == "mx.example.net"
    assert ar.result("dkim") == "pass" and ar.result("dmarc") == "pass"
    assert ar.result("spf") == "softfail"
    assert ar.pass_domains("dkim", "header.d") == ["example.com"]
    assert parse_authentication_results("mx.example.net; none").results == []


def test_dkim_signature_domains() -> None:
    sigs = ["v=1; a=rsa-sha256; d=Example.COM; s=a; b=x", "v=1; s=b;\n d=example.org; b=y",
            "v=1; d=example.com; s=c", "broken"]
    assert dkim_signature_domains(sigs) == ["example.com", "example.org"]


MINE = ["mx.example.net"]


def test_only_results_above_the_trusted_hop_and_with_our_id() -> None:
    headers = [
        ("Authentication-Results", "mx.other.example; dkim=pass header.d=bank.example"),
        ("Authentication-Results", "mx.example.net; dmarc=fail header.from=bank.example"),
        ("Received-SPF", "Softfail (mailfrom) client-ip=203.0.113.9"),
        ("Received", "from x (unknown [203.0.113.9]) by mx.example.net (Postfix) id 4A"),
        # Below ours: written by the sender.
        ("Authentication-Results", "mx.example.net; spf=pass; dkim=pass header.d=bank.example"),
        ("Received-SPF", "Pass (mailfrom) client-ip=198.51.100.1"),
    ]
    got = trusted_results(headers, 3, MINE)
    assert got.spf_result == "softfail" and got.spf_client_ip == "203.0.113.9"
    assert got.dmarc_result == "fail"
    assert got.dkim_result is None and got.dkim_pass_domains == ()
    assert trusted_results(headers, 0, MINE).spf_result is None
