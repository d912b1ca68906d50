"""Replay stored messages through the bench as if their original client sent them again.

For each message the client presents (with XCLIENT, and by binding the connection's source
address to it) the client address, rDNS name and HELO from the message's trusted Received
header, and its envelope sender (Return-Path, else From). The headers the original receiving
side added (everything above and including that Received header, and content-filter headers)
are dropped, so the delivered message looks as if it had arrived here directly; a label header
stands for this site's own content filter verdict.
"""

from __future__ import annotations

import email.utils
import ipaddress
import re
import smtplib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from postfixbench.bench import Bench
from triage.ingest.received import parse_received

_HOSTNAME = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")

# Headers a receiving site or its filters add; the replayed copy must not carry the corpus's.
_DROP_HEADERS = re.compile(
    r"^(?:return-path|delivered-to|x-original-to|x-spam-[\w-]*|x-virus-[\w-]*"
    r"|x-bench-label|x-uidl|status|x-status|x-keywords|content-length|lines):", re.I)


@dataclass(frozen=True)
class TrustedHop:
    helo: str
    client_name: str  # "unknown" when the receiving MTA found no rDNS name
    client_ip: str
    by: str
    date: datetime | None


@dataclass
class ReplayMessage:
    source: str  # a path or a name, for reports
    sender: str
    hop: TrustedHop
    data: bytes  # the message as the original client sent it (headers + body)
    label: str = "ham"


@dataclass
class ReplayResult:
    stage: str  # the last command sent: XCLIENT, EHLO, MAIL, RCPT, DATA
    code: int
    reply: str
    queue_id: str | None = None
    rcpt_replies: list[tuple[str, int, str]] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.queue_id is not None


def _unfold(value: str) -> str:
    return " ".join(value.split())


def _split(raw: bytes) -> tuple[list[bytes], bytes]:
    """Header fields (each with its continuation lines) and the body, LF line ends."""
    raw = raw.replace(b"\r\n", b"\n")
    if raw.startswith(b"From "):  # mbox separator line of the corpus files
        raw = raw.split(b"\n", 1)[1]
    head, _sep, body = raw.partition(b"\n\n")
    fields: list[bytes] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\n" + line
        elif line:
            fields.append(line)
    return fields, body


# Addresses a receiving MX would only see from inside its own site. Documentation ranges
# (RFC 5737) count as public here: hand-written test messages use them as Internet clients.
_INTERNAL_NETS = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/3")]


def _public(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return addr.version == 4 and not any(addr in n for n in _INTERNAL_NETS)


def parse_hop(value: str) -> TrustedHop | None:
    """Read one Received header value; None unless it names a public client address."""
    r = parse_received(value)
    if r is None or r.ip is None or not _public(r.ip) or not r.helo:
        return None
    rdns = r.rdns if r.rdns and _HOSTNAME.fullmatch(r.rdns) else "unknown"
    return TrustedHop(helo=r.helo, client_name=rdns, client_ip=r.ip, by=r.by or "",
                      date=r.date)


def load_message(path: Path, label: str = "ham") -> ReplayMessage | None:
    """A corpus file as a replayable message; None if it has no usable trusted Received."""
    fields, body = _split(path.read_bytes())
    hop, hop_index = None, -1
    for i, f in enumerate(fields):
        name, _, value = f.decode("latin-1").partition(":")
        if name.strip().lower() == "received":
            hop = parse_hop(value)
            if hop is not None:
                hop_index = i
                break
    if hop is None:
        return None
    sender = ""
    for f in fields:
        name, _, value = f.decode("latin-1").partition(":")
        if name.strip().lower() == "return-path":
            sender = _unfold(value).strip("<> ")
            break
    else:
        for f in fields:
            name, _, value = f.decode("latin-1").partition(":")
            if name.strip().lower() == "from":
                sender = email.utils.parseaddr(_unfold(value))[1]
                break
    if sender and "@" not in sender:
        sender = ""
    kept = [f for i, f in enumerate(fields)
            if i > hop_index and not _DROP_HEADERS.match(f.decode("latin-1"))]
    data = b"\n".join(kept) + b"\n\n" + body
    return ReplayMessage(source=str(path), sender=sender, hop=hop, data=data, label=label)


def _xtext(value: str) -> str:
    # RFC 1891 xtext: printable ASCII except "+" and "=", the rest as +HH.
    return "".join(c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}"
                   for c in value)


def replay(bench: Bench, msg: ReplayMessage, recipients: list[str], *,
           helo: str | None = None, xclient: bool = True) -> ReplayResult:
    """One SMTP session as the original client, then MAIL, RCPT..., DATA.

    The connection comes from the original client address. With ``xclient`` (the default) the
    client also sends XCLIENT with that address, the rDNS name and the HELO, so Postfix uses
    them whatever its own DNS lookups say; without it Postfix relies on the bench's DNS (PTR
    and A records) and the EHLO, and its log shows no trace of the replay (no ``xclient=``
    counter in the disconnect line). ``helo`` replaces the message's HELO.
    """
    hop = msg.hop
    helo = helo or hop.helo
    smtp = bench.smtp(source=hop.client_ip)
    try:
        if xclient:
            name = hop.client_name if hop.client_name != "unknown" else "[UNAVAILABLE]"
            code, reply = smtp.docmd(
                f"XCLIENT NAME={_xtext(name)} ADDR={hop.client_ip} HELO={_xtext(helo)}")
            if code != 220:
                return ReplayResult("XCLIENT", code, reply.decode())
        code, reply = smtp.ehlo(helo)
        if code != 250:
            return ReplayResult("EHLO", code, reply.decode())
        code, reply = smtp.mail(msg.sender)
        if code != 250:
            return ReplayResult("MAIL", code, reply.decode())
        result = ReplayResult("RCPT", 0, "")
        accepted = 0
        for rcpt in recipients:
            code, reply = smtp.rcpt(rcpt)
            result.rcpt_replies.append((rcpt, code, reply.decode()))
            result.code, result.reply = code, reply.decode()
            accepted += code == 250
        if not accepted:
            return result
        data = f"{bench.spec.label_header}: {msg.label}\n".encode() + msg.data
        try:
            code, reply = smtp.data(data)
        except smtplib.SMTPDataError as exc:
            return ReplayResult("DATA", exc.smtp_code, exc.smtp_error.decode(), None,
                                result.rcpt_replies)
        text = reply.decode()
        qid = re.search(r"queued as (\w+)", text)
        return ReplayResult("DATA", code, text, qid.group(1) if qid and code == 250 else None,
                            result.rcpt_replies)
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()
