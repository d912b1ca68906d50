"""Mail addresses and domains: syntax normalisation (email-validator, no DNS) and registered
domains (publicsuffixlist, offline)."""

from __future__ import annotations

import functools
import re
from email.utils import getaddresses

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES
from publicsuffixlist import PublicSuffixList

__all__ = ["address_domain", "normalise_address", "parse_address", "registered_domain"]


@functools.cache
def _psl() -> PublicSuffixList:
    # Built once on first use: it reads the bundled list (~50 ms).
    return PublicSuffixList()


# An unquoted ASCII local part (RFC 5322 atext and dots) and an ASCII host name.
_PLAIN_ADDRESS_RE = re.compile(r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+)@([A-Za-z0-9.-]+)")


@functools.lru_cache(maxsize=65536)
def normalise_address(addr: str | None) -> str | None:
    """``Local@Example.COM`` -> ``Local@example.com``; the null sender ``<>`` -> ``""``.

    Spam is full of invalid addresses; those are kept (domain lower-cased) rather than
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
        if "xn--" not in domain and local.lower() not in CASE_INSENSITIVE_MAILBOX_NAMES:
            # Valid or not, such an address comes out as below: email-validator keeps an
            # ASCII dot-atom local part and lower-cases an ASCII domain (which never ends
            # in a dot when valid); only the role names above and IDNA labels change.
            return f"{local}@{domain.rstrip('.')}"
    try:
        return validate_email(a, check_deliverability=False,
                              allow_smtputf8=True).normalized
    except (EmailNotValidError, UnicodeError, ValueError):
        pass
    if "@" not in a:
        return None
    local, _, domain = a.rpartition("@")
    return f"{local}@{domain.lower().rstrip('.')}"


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
    """The domain part of an address, lower case."""
    if not addr or "@" not in addr:
        return None
    return addr.rpartition("@")[2].lower().rstrip(".") or None


_ADDRESS_LITERAL_RE = re.compile(r"[\d.]+|[0-9a-f:]+")


@functools.lru_cache(maxsize=65536)
def registered_domain(name: str | None) -> str | None:
    """``mail.example.co.uk`` -> ``example.co.uk``. A public suffix itself, a bare label,
    an address literal or junk -> None (None never groups unrelated senders together)."""
    if not name:
        return None
    n = name.strip().lower().rstrip(".")
    if not n or "." not in n or n.startswith("[") or _ADDRESS_LITERAL_RE.fullmatch(n):
        return None
    try:
        return _psl().privatesuffix(n)
    except (ValueError, UnicodeError):
        return None
