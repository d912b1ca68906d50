"""What a bench instance looks like: host names, users, DNS records, access maps.

The defaults are what the tests need; the sample generator extends them (more DNS records,
more map entries) before the bench starts. Everything is plain data so a spec can be built,
inspected and written out without starting anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Inside the bench's mount namespace the bench directory is also bind-mounted here. opendkim
# refuses config and key files below a world-writable directory (e.g. /tmp), and /media has
# root-owned parents on Debian.
SAFE_MOUNT = Path("/media")

# Uids/gids for the test users. They exist only in the private /etc/passwd the bench mounts
# inside its namespace; on the host, files they own just show the number.
FIRST_UID = 64100


@dataclass(frozen=True)
class User:
    name: str
    uid: int


@dataclass
class BenchSpec:
    myhostname: str = "mx.example.org"
    mydomain: str = "example.org"
    # Extra domains this MX accepts mail for (delivered to the same local users).
    other_domains: tuple[str, ...] = ("example.net",)
    users: tuple[str, ...] = ("alice", "bob")
    # Header a content filter would add; Procmail files a message with this value as spam.
    label_header: str = "X-Bench-Label"
    # DNS: (name, address) A records, (address, name) PTR records, (name, text) TXT records.
    a_records: list[tuple[str, str]] = field(default_factory=list)
    ptr_records: list[tuple[str, str]] = field(default_factory=list)
    txt_records: list[tuple[str, str]] = field(default_factory=list)
    mx_records: list[tuple[str, str]] = field(default_factory=list)
    # Map lines, written verbatim (one entry per line).
    client_access: list[str] = field(default_factory=list)  # cidr, smtpd_client_restrictions
    client_hostname_access: list[str] = field(default_factory=list)  # pcre
    helo_access: list[str] = field(default_factory=list)  # pcre
    sender_access: list[str] = field(default_factory=list)  # hash
    header_checks: list[str] = field(default_factory=list)  # pcre
    # Addresses allowed to use XCLIENT: the replay client connects from the original client
    # addresses, and nothing else can reach this private network namespace.
    xclient_hosts: str = "0.0.0.0/0"

    def user_list(self) -> list[User]:
        return [User(name, FIRST_UID + i) for i, name in enumerate(self.users)]

    @property
    def short_hostname(self) -> str:
        return self.myhostname.split(".", 1)[0]


def default_spec() -> BenchSpec:
    """The spec the bench tests use: a few test domains and one rule of each kind."""
    spec = BenchSpec()
    spec.a_records += [
        ("mx.example.org", "127.0.0.1"),
        ("mail.example.com", "192.0.2.10"),
        ("smtp.example.net", "198.51.100.20"),
    ]
    spec.mx_records += [("example.org", "mx.example.org"), ("example.net", "mx.example.org")]
    spec.ptr_records += [
        ("192.0.2.10", "mail.example.com"),
        ("198.51.100.20", "smtp.example.net"),
    ]
    spec.txt_records += [
        ("example.com", "v=spf1 ip4:192.0.2.10 -all"),
        ("_dmarc.example.com", "v=DMARC1; p=none"),
        ("example.net", "v=spf1 ip4:198.51.100.20 -all"),
        ("_dmarc.example.net", "v=DMARC1; p=reject"),
        ("example.org", "v=spf1 ip4:127.0.0.1 -all"),
        ("_dmarc.example.org", "v=DMARC1; p=reject"),
    ]
    spec.client_access += ["192.0.2.66/32 REJECT blocked by rule R0042"]
    spec.client_hostname_access += [r"/\.dyn\.example\.invalid$/ REJECT dynamic rDNS rule R0043"]
    spec.helo_access += [r"/^spambot\./ REJECT bad HELO rule R0044"]
    spec.sender_access += ["spammer.example REJECT sender domain rule R0045"]
    spec.header_checks += [r"/^Subject:.*viagra/ REJECT spam subject rule R0046"]
    return spec
