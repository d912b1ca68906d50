"""Mail addresses and domains: syntax normalisation (email-validator, no DNS) and registered
domains (publicsuffixlist, offline); client IP addresses as Postfix matches them.

Every domain comes out in its ASCII form (IDNA A-labels, ``xn--bcher-kva.example``, never
``bücher.example``): that is the form Postfix's maps compare and the form rDNS, HELO and the
log carry, so one domain has one value whichever source it came from.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from email.utils import getaddresses
from typing import overload

import idna  # email-validator's own IDNA library
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES
from publicsuffixlist import PublicSuffixList

__all__ = ["address_domain", "ascii_domain", "client_address", "normalise_address",
           "parse_address", "registered_domain"]


def ascii_domain(name: str) -> str | None:
    """A domain in lower case and ASCII: non-ASCII labels become A-labels (UTS 46 mapping,
    non-transitional, as email-validator does and Postfix with its default
    ``enable_idna2003_compatibility = no``); None when a label has no ASCII form (a
    disallowed code point such as an emoji).

    >>> ascii_domain("Mail.BÜCHER.example")
    'mail.xn--bcher-kva.example'
    """
    n = name.lower()
    if n.isascii():
        return n
    try:
        mapped = idna.uts46_remap(n, std3_rules=False, transitional=False)
        return ".".join(lb if lb.isascii() else idna.alabel(lb).decode("ascii")
                        for lb in mapped.split("."))
    except (idna.IDNAError, UnicodeError, ValueError):
        return None


@functools.cache
def _psl() -> PublicSuffixList:
    # Built once on first use: it reads the bundled list (~50 ms).
    return PublicSuffixList()


# An unquoted ASCII local part (RFC 5322 atext and dots) and an ASCII host name.
_PLAIN_ADDRESS_RE = re.compile(r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+)@([A-Za-z0-9.-]+)")


@functools.lru_cache(maxsize=65536)
def normalise_address(addr: str | None) -> str | None:
    """``Local@Example.COM`` -> ``Local@example.com``; the null sender ``<>`` -> ``""``.

    The domain is in ASCII (``x@bücher.example`` -> ``x@xn--bcher-kva.example``, see
    ``ascii_domain``); a non-ASCII local part is kept. Spam is full of invalid addresses;
    those are kept (domain lower-cased, in ASCII where it has an ASCII form) rather than
    dropped, because they are evidence too. Returns None when there is no ``@`` at all.
    """
    if addr is None:
        return None
    a = addr.strip().strip("<>").strip()
    if not a and addr.strip() in ("<>", ""):
        return "" if addr.strip() == "<>" else None
    m = _PLAIN_ADDRESS_RE.fullmatch(a)
    if m is not None:
        local, domain = m.group(1), m.group(2).lower()
        if local.lower() not in CASE_INSENSITIVE_MAILBOX_NAMES:
            # Valid or not, such an address comes out as below: email-validator keeps an
            # ASCII dot-atom local part and lower-cases an ASCII domain (which never ends
            # in a dot when valid); only the role names above change. An A-label is kept
            # as it is: it is what Postfix compares.
            return f"{local}@{domain.rstrip('.')}"
    try:
        v = validate_email(a, check_deliverability=False, allow_smtputf8=True)
        # .normalized holds the Unicode form of an IDNA domain (U-labels)
        return f"{v.local_part}@{v.ascii_domain}"
    except (EmailNotValidError, UnicodeError, ValueError):
        pass
    if "@" not in a:
        return None
    local, _, domain = a.rpartition("@")
    domain = domain.lower().rstrip(".")
    return f"{local}@{ascii_domain(domain) or domain}"


@functools.lru_cache(maxsize=65536)
def parse_address(header_value: str | None) -> str | None:
    """The first address of a From / Reply-To style header, normalised."""
    # Cached: senders repeat, and the stdlib's address parser is slow.
    if not header_value:
        return None
    m = _BARE_FIELD_RE.fullmatch(header_value) or _NAMED_FIELD_RE.fullmatch(header_value)
    if m is not None:
        # "addr" or "Display Name <addr>" with plain ASCII parts: getaddresses returns
        # this address unchanged.
        return normalise_address(m.group(1))
    pairs = getaddresses([header_value])
    for _, addr in pairs:
        if addr:
            return normalise_address(addr)
    m = _BARE_ADDRESS_RE.search(header_value)
    return normalise_address(m.group()) if m else None


_BARE_ADDRESS_RE = re.compile(r"[^\s<>\"]+@[^\s<>\"]+")
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_PLAIN = f"([{_ATEXT}.]+@[A-Za-z0-9.-]+)"
_BARE_FIELD_RE = re.compile(f"[ \\t\\r\\n]*{_PLAIN}[ \\t\\r\\n]*")
_NAMED_FIELD_RE = re.compile(f"[{_ATEXT}. \\t\\r\\n]*<{_PLAIN}>[ \\t\\r\\n]*")


def address_domain(addr: str | None) -> str | None:
    """The domain part of an address, lower case, in ASCII where it has an ASCII form."""
    if not addr or "@" not in addr:
        return None
    domain = addr.rpartition("@")[2].lower().rstrip(".")
    if not domain.isascii():
        domain = ascii_domain(domain) or domain
    return domain or None


_ADDRESS_LITERAL_RE = re.compile(r"[\d.]+|[0-9a-f:]+")


@functools.lru_cache(maxsize=65536)
def registered_domain(name: str | None) -> str | None:
    """``mail.example.co.uk`` -> ``example.co.uk``, in ASCII (``mail.bücher.example`` and
    ``mail.xn--bcher-kva.example`` -> ``xn--bcher-kva.example``). A public suffix itself, a
    bare label, an address literal, a name with no ASCII form or junk -> None (None never
    groups unrelated senders together)."""
    if not name:
        return None
    n = name.strip().lower().rstrip(".")
    if not n.isascii():
        a = ascii_domain(n)
        if a is None:
            return None
        n = a.rstrip(".")
    if not n or "." not in n or n.startswith("[") or _ADDRESS_LITERAL_RE.fullmatch(n):
        return None
    try:
        return _psl().privatesuffix(n)
    except (ValueError, UnicodeError):
        return None


@functools.lru_cache(maxsize=65536)
def _mapped_v4(ip: str) -> str:
    try:
        a = ipaddress.IPv6Address(ip.strip("[]"))
    except ValueError:
        return ip
    return str(a.ipv4_mapped) if a.ipv4_mapped is not None else ip


@overload
def client_address(ip: str) -> str: ...
@overload
def client_address(ip: None) -> None: ...
def client_address(ip: str | None) -> str | None:
    """A client address as Postfix looks it up in a cidr table: an IPv4-mapped IPv6
    address as the IPv4 address it holds (Postfix logs and matches such a client as IPv4);
    anything else as it is.

    >>> client_address("::ffff:192.0.2.7"), client_address("::ffff:c000:207")
    ('192.0.2.7', '192.0.2.7')
    """
    if ip is None or ":" not in ip or "ffff" not in ip.lower():
        return ip
    return _mapped_v4(ip)
