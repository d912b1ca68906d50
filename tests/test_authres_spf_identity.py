"""Received-SPF from policyd-spf: the MAIL FROM identity is the message's SPF result.

postfix-policyd-spf-python checks the HELO name first, then the envelope sender, and may
prepend a Received-SPF for each; for the null sender only the HELO one exists. Postfix puts
prepended headers above the Received header it writes for the delivery.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from triage import read_mailboxes
from triage.ingest.authres import parse_received_spf, trusted_results

MINE = ["mx.example.net"]

HELO_PASS = ("Pass (helo) identity=helo; client-ip=203.0.113.9; helo=mail.example.org; "
             "envelope-from=alice@example.org; receiver=<UNKNOWN>")
MAILFROM_SOFTFAIL = ("Softfail (mailfrom) identity=mailfrom; client-ip=203.0.113.9; "
                     "helo=mail.example.org; envelope-from=alice@example.org; "
                     "receiver=<UNKNOWN>")
NULL_SENDER_HELO_FAIL = ("Fail (helo) identity=helo; client-ip=203.0.113.9; "
                         "helo=mail.example.org; envelope-from=<>; receiver=<UNKNOWN>")
OUR_RECEIVED = ("from mail.example.org (mail.example.org [203.0.113.9]) by mx.example.net "
                "(Postfix) with ESMTPS id 4A1B2C3D4E for <bob@example.net>; "
                "Tue, 2 Sep 2025 10:00:00 +0000")


def test_the_policyd_spf_headers_say_which_identity() -> None:
    helo, mfrom = parse_received_spf(HELO_PASS), parse_received_spf(MAILFROM_SOFTFAIL)
    assert helo is not None and (helo.result, helo.identity) == ("pass", "helo")
    assert mfrom is not None and (mfrom.result, mfrom.identity) == ("softfail", "mailfrom")


@pytest.mark.parametrize("order", ["helo nearest", "mailfrom nearest"])
def test_mailfrom_identity_wins_over_helo_whatever_the_order(order: str) -> None:
    spf = [("Received-SPF", MAILFROM_SOFTFAIL), ("Received-SPF", HELO_PASS)]
    if order == "mailfrom nearest":
        spf.reverse()
    headers = [*spf, ("Received", OUR_RECEIVED)]
    got = trusted_results(headers, 2, MINE)
    assert got.spf_result == "softfail"
    assert got.spf_client_ip == "203.0.113.9"


def test_null_sender_uses_the_helo_result() -> None:
    headers = [("Received-SPF", NULL_SENDER_HELO_FAIL), ("Received", OUR_RECEIVED)]
    assert trusted_results(headers, 1, MINE).spf_result == "fail"


def test_a_forged_mailfrom_header_below_our_hop_does_not_beat_our_helo_one() -> None:
    headers = [("Received-SPF", NULL_SENDER_HELO_FAIL), ("Received", OUR_RECEIVED),
               ("Received-SPF", MAILFROM_SOFTFAIL.replace("Softfail", "Pass"))]
    assert trusted_results(headers, 1, MINE).spf_result == "fail"


def test_a_later_delivery_does_not_replace_this_ones_result() -> None:
    # our MX relayed the message on to an inner host that checked SPF again (for our MX's
    # address): the result of the delivery at the trusted hop is the nearest one
    inner = ("Pass (mailfrom) identity=mailfrom; client-ip=192.0.2.25; helo=mx.example.net; "
             "envelope-from=alice@example.org; receiver=<UNKNOWN>")
    headers = [("Received-SPF", inner),
               ("Received", "from mx.example.net (mx.example.net [192.0.2.25]) by "
                "store.example.net (Postfix) with ESMTP id 9Z; Tue, 2 Sep 2025 10:00:01 +0000"),
               ("Received-SPF", NULL_SENDER_HELO_FAIL), ("Received", OUR_RECEIVED)]
    got = trusted_results(headers, 3, MINE)
    assert (got.spf_result, got.spf_client_ip) == ("fail", "203.0.113.9")


def test_received_spf_still_comes_before_authentication_results() -> None:
    ar = ("Authentication-Results", "mx.example.net; spf=pass smtp.mailfrom=example.org")
    both = [ar, ("Received-SPF", HELO_PASS), ("Received-SPF", MAILFROM_SOFTFAIL),
            ("Received", OUR_RECEIVED)]
    assert trusted_results(both, 3, MINE).spf_result == "softfail"
    assert trusted_results([ar, ("Received", OUR_RECEIVED)], 1, MINE).spf_result == "pass"


def test_the_mail_table_reports_the_envelope_senders_result(tmp_path: Path) -> None:
    folder = tmp_path / "spam"
    folder.mkdir()
    (folder / "1").write_text(
        "Return-Path: <alice@example.org>\n"
        f"Received-SPF: {MAILFROM_SOFTFAIL}\n"
        f"Received-SPF: {HELO_PASS}\n"
        f"Received: {OUR_RECEIVED}\n"
        "From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: hello\n"
        "Message-ID: <1@example.org>\nDate: Tue, 2 Sep 2025 09:59:58 +0000\n\nbody\n")
    mail = read_mailboxes([folder], role="spam", my_hostnames=MINE)
    assert mail["spf_result"].tolist() == ["softfail"]
