"""The Postfix test bench works: mail is delivered and filed, access maps refuse with 5xx and
a rule id in mail.log, and stopping it leaves nothing running."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest
from postfixbench import Bench, default_spec
from postfixbench.replay import ReplayMessage, TrustedHop, load_message, replay

pytestmark = pytest.mark.postfix

CORPUS_STYLE = """\
From sender@example.com  Thu Aug 22 12:36:23 2002
Return-Path: <sender@example.com>
Delivered-To: someone@upstream.example
Received: from localhost (localhost [127.0.0.1])
\tby upstream.example (Postfix) with ESMTP id D03E543C36
\tfor <someone@localhost>; Thu, 22 Aug 2002 07:36:16 -0400 (EDT)
Received: from mail.example.com (mail.example.com [192.0.2.10]) by
    mx.upstream.example (8.11.6/8.11.6) with ESMTP id g7MBYrZ04811 for
    <someone@upstream.example>; Thu, 22 Aug 2002 12:34:53 +0100
Received: from laptop (laptop.lan [10.1.2.3]) by mail.example.com (Postfix)
    with ESMTP id 10CF8406D7; Thu, 22 Aug 2002 07:34:10 -0400
X-Spam-Status: No, hits=-2.0
From: Sender <sender@example.com>
To: someone@upstream.example
Subject: {subject}
Message-ID: <{mid}>
Date: Thu, 22 Aug 2002 12:34:00 +0100

Hello.
.leading dot survives
"""


def _corpus_file(tmp_path: Path, subject: str) -> tuple[Path, str]:
    mid = f"{uuid.uuid4().hex}@example.com"
    path = tmp_path / f"{mid}.eml"
    path.write_text(CORPUS_STYLE.format(subject=subject, mid=mid))
    return path, mid


def test_load_message_takes_trusted_hop_and_drops_upstream_headers(tmp_path: Path) -> None:
    path, _ = _corpus_file(tmp_path, "hello")
    msg = load_message(path)
    assert msg is not None
    assert (msg.hop.client_ip, msg.hop.client_name, msg.hop.helo) == (
        "192.0.2.10", "mail.example.com", "mail.example.com")
    assert msg.sender == "sender@example.com"
    text = msg.data.decode()
    # Everything the upstream receiver added is gone, the sender's own hop stays.
    assert "Delivered-To" not in text and "X-Spam-Status" not in text
    assert "mx.upstream.example" not in text and "by mail.example.com (Postfix)" in text
    assert not text.startswith("From ")


def test_ham_lands_in_inbox_with_our_headers(postfix_bench: Bench, tmp_path: Path) -> None:
    path, mid = _corpus_file(tmp_path, "quarterly report")
    msg = load_message(path, label="ham")
    assert msg is not None
    res = replay(postfix_bench, msg, ["alice@example.org"])
    assert res.accepted, res
    delivered = postfix_bench.delivered("alice", "", mid)
    head = delivered.read_text().split("\n\n", 1)[0]
    assert re.search(r"^Received: from mail\.example\.com \(mail\.example\.com \[192\.0\.2\.10\]\)"
                     rf"\n\s+by mx\.example\.org \(Postfix\) with ESMTP id {res.queue_id}", head,
                     re.M), head
    assert re.search(r"^Received-SPF: Pass \(mailfrom\) .*client-ip=192\.0\.2\.10", head, re.M)
    assert re.search(r"^Authentication-Results: mx\.example\.org; spf=pass "
                     r"smtp\.mailfrom=example\.com", head, re.M)
    assert re.search(r"^Authentication-Results: mx\.example\.org; dmarc=pass", head, re.M)
    assert re.search(r"^Authentication-Results: mx\.example\.org; dkim=none", head, re.M)
    assert "\n.leading dot survives" in delivered.read_text()
    assert not list((postfix_bench.paths.maildir("alice") / ".Spam").glob("*/*" + mid))
    postfix_bench.wait_for_log(rf"postfix/local\[\d+\]: {res.queue_id}: to=<alice@example\.org>"
                               r".*status=sent \(delivered to command: /usr/bin/procmail")


def test_spam_lands_in_spam_folder(postfix_bench: Bench, tmp_path: Path) -> None:
    path, mid = _corpus_file(tmp_path, "cheap watches")
    msg = load_message(path, label="spam")
    assert msg is not None
    res = replay(postfix_bench, msg, ["bob@example.org"])
    assert res.accepted, res
    delivered = postfix_bench.delivered("bob", ".Spam", mid)
    head = delivered.read_text().split("\n\n", 1)[0]
    assert f"by mx.example.org (Postfix) with ESMTP id {res.queue_id}" in head
    assert re.search(r"^Received-SPF: Pass", head, re.M)
    assert re.search(r"^Authentication-Results: mx\.example\.org;", head, re.M)
    assert re.search(r"^X-Bench-Label: spam$", head, re.M)
    inbox = postfix_bench.paths.maildir("bob") / "new"
    assert not any(mid in f.read_text() for f in inbox.glob("*")) if inbox.exists() else True


def _hop(ip: str, name: str = "unknown", helo: str = "client.example.com") -> TrustedHop:
    return TrustedHop(helo=helo, client_name=name, client_ip=ip, by="", date=None)


def _message(sender: str, hop: TrustedHop, subject: str = "test") -> ReplayMessage:
    data = (f"From: <{sender}>\nSubject: {subject}\n"
            f"Message-ID: <{uuid.uuid4().hex}@example.com>\n\nbody\n").encode()
    return ReplayMessage("inline", sender, hop, data)


def test_client_access_reject_gives_5xx_and_logs_rule_id(postfix_bench: Bench) -> None:
    off = postfix_bench.log_offset()
    res = replay(postfix_bench, _message("a@example.com", _hop("192.0.2.66")),
                 ["alice@example.org"])
    assert (res.stage, res.code) == ("RCPT", 554)
    assert "blocked by rule R0042" in res.reply
    line = postfix_bench.wait_for_log(
        r"postfix/smtpd\[\d+\]: NOQUEUE: reject: RCPT from unknown\[192\.0\.2\.66\]: 554 5\.7\.1 "
        r"<unknown\[192\.0\.2\.66\]>: Client host rejected: blocked by rule R0042;", since=off)
    assert "from=<a@example.com> to=<alice@example.org> proto=ESMTP" in line


@pytest.mark.parametrize(
    ("sender", "hop", "rcpt", "code", "reply", "log"),
    [
        pytest.param("x@example.com", _hop("192.0.2.77"), "alice@example.org", 550,
                     "SPF fail", r"policyd-spf\[\d+\]: : 550 5\.7\.23 .*SPF fail", id="spf-fail"),
        pytest.param("x@example.com", _hop("192.0.2.10", "mail.example.com", "mail.example.com"),
                     "nobody-here@example.org", 550, "User unknown",
                     r"reject: RCPT from mail\.example\.com\[192\.0\.2\.10\]: 550 5\.1\.1",
                     id="unknown-user"),
        pytest.param("x@example.com", _hop("192.0.2.10", "mail.example.com", "mail.example.com"),
                     "victim@elsewhere.example", 554, "Relay access denied",
                     r"reject: RCPT from .*: 554 5\.7\.1 <victim@elsewhere\.example>: "
                     r"Relay access denied", id="relay"),
        pytest.param("x@example.com", _hop("192.0.2.11", helo="spambot.example.com"),
                     "alice@example.org", 554, "rule R0044",
                     r"Helo command rejected: bad HELO rule R0044", id="helo"),
        pytest.param("x@example.com", _hop("192.0.2.12", "host-12.dyn.example.invalid"),
                     "alice@example.org", 554, "rule R0043",
                     r"Client host rejected: dynamic rDNS rule R0043", id="client-name"),
        pytest.param("x@spammer.example", _hop("192.0.2.13"), "alice@example.org", 554,
                     "rule R0045", r"Sender address rejected: sender domain rule R0045",
                     id="sender"),
    ],
)
def test_refusals(postfix_bench: Bench, sender: str, hop: TrustedHop, rcpt: str, code: int,
                  reply: str, log: str) -> None:
    off = postfix_bench.log_offset()
    res = replay(postfix_bench, _message(sender, hop), [rcpt])
    assert (res.stage, res.code) == ("RCPT", code), res
    assert reply in res.reply
    postfix_bench.wait_for_log(log, since=off)


def test_header_check_reject_after_data(postfix_bench: Bench) -> None:
    off = postfix_bench.log_offset()
    hop = _hop("198.51.100.20", "smtp.example.net", "smtp.example.net")
    res = replay(postfix_bench, _message("a@example.net", hop, "cheap viagra"),
                 ["alice@example.org"])
    assert (res.stage, res.code, res.queue_id) == ("DATA", 550, None)
    postfix_bench.wait_for_log(r"postfix/cleanup\[\d+\]: \w+: reject: header Subject: cheap "
                               r"viagra from smtp\.example\.net\[198\.51\.100\.20\];.*rule R0046",
                               since=off)


def test_log_has_every_daemon(postfix_bench: Bench, tmp_path: Path) -> None:
    path, mid = _corpus_file(tmp_path, "for the log")
    msg = load_message(path)
    assert msg is not None
    res = replay(postfix_bench, msg, ["alice@example.org"])
    postfix_bench.delivered("alice", "", mid)
    postfix_bench.wait_for_log(rf"postfix/qmgr\[\d+\]: {res.queue_id}: removed")
    text = postfix_bench.log_text()
    for prog in ("postfix/smtpd", "postfix/cleanup", "postfix/qmgr", "postfix/local",
                 "policyd-spf", "opendkim", "opendmarc"):
        assert re.search(rf"^\w{{3}} [ \d]\d \d\d:\d\d:\d\d mx {prog}\[\d+\]: ", text, re.M), prog


def test_stop_leaves_nothing_running() -> None:
    bench = Bench.start(default_spec())
    root = bench.paths.root
    assert bench._proc is not None
    netns = os.readlink(f"/proc/{bench._proc.pid}/ns/net")
    inside = [p for p in os.listdir("/proc") if p.isdigit() and _netns_of(p) == netns]
    assert len(inside) >= 6  # unshare, init, rsyslogd, dnsmasq, milters, master, ...
    bench.stop()
    assert not [p for p in inside if os.path.exists(f"/proc/{p}")]
    assert not root.exists()


def _netns_of(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def test_bench_log_parses_without_unparsed_postfix_lines(postfix_bench: Bench,
                                                         tmp_path: Path) -> None:
    import triage

    path, _ = _corpus_file(tmp_path, "for the parser")
    msg = load_message(path)
    assert msg is not None
    res = replay(postfix_bench, msg, ["alice@example.org"])
    replay(postfix_bench, _message("a@example.com", _hop("192.0.2.66")), ["alice@example.org"])
    postfix_bench.wait_for_log(rf"postfix/qmgr\[\d+\]: {res.queue_id}: removed")
    parsed = triage.read_maillog([postfix_bench.paths.maillog])
    assert len(parsed.rejects) >= 1 and len(parsed.deliveries) >= 1
    # no line of Postfix, policyd-spf, opendkim or opendmarc is left unread
    unparsed = parsed.unparsed[parsed.unparsed["line"].str.contains(
        r" (?:postfix/[\w/-]+|policyd-spf|opendkim|opendmarc)\[")]
    assert unparsed.empty, unparsed["line"].tolist()
    # and the bench's policyd-spf result reaches the replayed message
    row = parsed.messages[parsed.messages["queue_id"] == res.queue_id].iloc[0]
    assert row["spf_result"] in {"pass", "fail", "softfail", "neutral", "none", "temperror",
                                 "permerror"}
