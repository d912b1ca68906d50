"""Per-message features for grouping spam and proposing rules.

Input is the ``mail`` table (one row per message, trusted-hop fields) or rows of the log
tables; output adds normalised keys and shapes:

- ``client_ip``: an IPv4-mapped IPv6 address (``::ffff:192.0.2.7``) as the IPv4 address,
  which is how Postfix logs and matches such a client
- ``net``: the client's /24 (IPv4) or /64 (IPv6) as CIDR text
- ``client_name``: rDNS name, lower case, None when Postfix logged ``unknown``
- ``rdns_domain`` (registered domain, offline public suffix list) and ``rdns_shape``
- ``helo`` (lower case), ``helo_domain`` and ``helo_shape``
- ``sender_domain`` / ``from_domain`` (registered domains), ``msgid_shape``
- ``day`` and ``week`` (ISO week ``YYYY-Www``) of the trusted received time

Everything is computed once per distinct value and mapped back, so 10^6 rows with 10^5
distinct names cost 10^5 evaluations.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import tomllib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from triage.ingest.address import client_address, registered_domain
from triage.ingest.received import _ip as canonical_ip
from triage.ingest.received import host_matches

__all__ = [
    "RULES_DIR", "add_features", "helo_shape", "is_random_label", "network_of", "network_set",
    "networks", "rdns_shape", "to_text",
]

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"

_VOWELS = set("aeiouy")
_ADDRESS_LITERAL = re.compile(r"^\[(ipv6:)?[0-9a-f:.]+\]$", re.I)
_BARE_IP = re.compile(r"^[0-9.]+$|^[0-9a-f:]*:[0-9a-f:.]*$", re.I)


# Text that Python's str methods and pandas' (pyarrow's) string kernels strip and lower
# alike: printable ASCII and ASCII white space. Other characters (non-ASCII case mappings,
# control characters) take the pandas path.
_PLAIN_TEXT = re.compile(r"[\x20-\x7e\t\n\r\x0b\x0c]*")
_PYTHON_TEXT_MAX = 2000  # distinct values normalised in Python, above this by pandas


def to_text(series: pd.Series) -> pd.Series:
    """A text column as object dtype holding str or None, lower case, stripped, with the
    log's ``unknown`` placeholder and empty strings turned into None.

    A column of text is normalised once per distinct value (a log has many rows per
    name), in plain Python where that gives the same text as pandas; anything else
    (numbers, mixed types) goes through pandas value by value."""
    if not len(series) or not (isinstance(series.dtype, pd.StringDtype)
                               or (series.dtype == object
                                   and pd.api.types.infer_dtype(series, skipna=True)
                                   in ("string", "empty"))):
        return _to_text(series)
    codes, uniq = pd.factorize(series, use_na_sentinel=True)
    if len(uniq) > _PYTHON_TEXT_MAX:  # pandas' per-call cost pays off
        by_code = np.empty(len(uniq) + 1, dtype=object)  # the last one for missing values
        by_code[:-1] = _to_text(pd.Series(uniq)).to_numpy(dtype=object)
        return pd.Series(by_code[codes], index=series.index, dtype=object)
    values = uniq.tolist()
    norm: list[str | None] = [None] * (len(values) + 1)  # the last one for missing values
    odd = []
    for i, v in enumerate(values):
        if _PLAIN_TEXT.fullmatch(v):
            t = v.strip().lower().rstrip(".")
            norm[i] = None if t in ("", "unknown") else t
        else:
            odd.append(i)
    if odd:
        done = _to_text(pd.Series([values[i] for i in odd], dtype=object))
        for i, t in zip(odd, done.tolist(), strict=True):
            norm[i] = t
    return pd.Series(np.array(norm, dtype=object)[codes], index=series.index, dtype=object)


def _to_text(series: pd.Series) -> pd.Series:
    t = series.astype("string").str.strip().str.lower().str.rstrip(".")
    t = t.mask(t.isin(["", "unknown"]))
    return t.astype(object).where(t.notna(), None)


def _unmapped(ips: pd.Series) -> pd.Series:
    """A column of IP address text with IPv4-mapped IPv6 addresses as IPv4
    (``client_address``);
    only values that can be one (with ``ffff:``) are parsed."""
    s = ips.astype("string").str.lower()
    maybe = s.str.contains("ffff:", regex=False).fillna(False).to_numpy(dtype=bool)
    if not maybe.any():
        return ips
    out = ips.astype(object).copy()
    out[maybe] = _by_unique(ips[maybe], client_address).to_numpy(dtype=object)
    return out


def networks(ips: pd.Series) -> pd.Series:
    """``network_of`` for a column: dotted quads by string slicing (most of any log),
    everything else through ``ipaddress`` once per distinct value."""
    s = ips.astype("string")
    v4 = s.str.fullmatch(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}").fillna(False)
    out = (s.str.rsplit(".", n=1).str[0] + ".0/24").where(v4)
    rest = ips[~v4.to_numpy(dtype=bool)]
    if len(rest):
        out[rest.index] = _by_unique(rest, network_of)
    return out.astype(object).where(out.notna(), None)


# A dotted quad exactly as ``ipaddress`` reads one: four decimal octets up to 255, no
# leading zeros.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


@functools.lru_cache(maxsize=262144)
def network_of(ip: object, v4_prefix: int = 24, v6_prefix: int = 64) -> str | None:
    """``192.0.2.7`` -> ``192.0.2.0/24``; IPv6 -> its /64 (an IPv4-mapped one,
    ``::ffff:192.0.2.7``, is the IPv4 address and gets its /24); junk -> None."""
    if not isinstance(ip, str) or not ip:
        return None
    if v4_prefix == 24 and _DOTTED_QUAD.fullmatch(ip):
        return ip[: ip.rindex(".")] + ".0/24"  # what ipaddress gives, without parsing twice
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = v4_prefix if addr.version == 4 else v6_prefix
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def network_set(ips: Iterable[object]) -> frozenset[str]:
    """The networks (``network_of``) of ``ips``, None left out; dotted quads by slicing."""
    quad = _DOTTED_QUAD.fullmatch
    out: set[str | None] = {ip[: ip.rindex(".")] + ".0/24"
                            if isinstance(ip, str) and quad(ip) else network_of(ip)
                            for ip in ips}
    out.discard(None)
    return frozenset(n for n in out if n)


def is_random_label(label: str) -> bool:
    """Does a host label look machine-generated (``xk7qpz3``, ``a8f3c9d2e1``)?

    Heuristics chosen to leave real words alone: letters mixed with at least three digits,
    a long hex string, or a run of five consonants.
    """
    if len(label) < 6:
        return False
    digits = sum(c.isdigit() for c in label)
    letters = sum(c.isalpha() for c in label)
    if letters and digits >= 3 and not re.fullmatch(r"[a-z]+[-_]?\d+", label):
        return True
    if len(label) >= 8 and re.fullmatch(r"[0-9a-f]+", label) and digits:
        return True
    return re.search(r"[bcdfghjklmnpqrstvwxz]{5}", label) is not None


@functools.cache
def _rdns_patterns(path: Path | None = None) -> tuple[tuple[str, re.Pattern[str]], ...]:
    data = tomllib.loads((path or RULES_DIR / "rdns_patterns.toml").read_text("utf-8"))
    return tuple((p["name"], re.compile(p["regex"], re.I)) for p in data.get("pattern", []))


def _ip_embedded(name: str, ip: str | None) -> bool:
    """The client's IPv4 octets in the name, forwards or backwards (``1-2-0-192.example``)."""
    if not ip or "." not in ip:
        return False
    if ":" in ip:
        ip = client_address(ip)  # "::ffff:192.0.2.7"
        if ":" in ip:
            return False
    octets = ip.split(".")
    numbers = re.findall(r"\d+", name)
    joined = "-".join(numbers)
    return "-".join(octets) in joined or "-".join(reversed(octets)) in joined


def rdns_shape(name: str | None, ip: str | None = None) -> str:
    """Shape of an rDNS name: ``none``, ``ip_embedded``, a shape from
    ``rules/rdns_patterns.toml`` (``dynamic``, ``residential`` ...), ``random`` or ``named``.

    >>> rdns_shape("192-0-2-7.dsl.example.net", "192.0.2.7")
    'ip_embedded'
    """
    if not name:
        return "none"
    if _ip_embedded(name, ip):
        return "ip_embedded"
    for shape, rx in _rdns_patterns():
        if rx.search(name):
            return shape
    return "random" if is_random_label(name.split(".")[0]) else "named"


def helo_shape(helo: str | None, ip: str | None, mine: Callable[[str], bool]) -> str:
    """Shape of a HELO argument: ``none``, ``ours`` (claims our name or address),
    ``address_literal``, ``bare_ip``, ``not_fqdn``, ``random`` or ``fqdn``."""
    if not helo:
        return "none"
    if mine(helo):
        return "ours"
    if _ADDRESS_LITERAL.match(helo):
        return "address_literal"
    if _BARE_IP.match(helo):
        return "bare_ip"
    if "." not in helo or registered_domain(helo) is None:
        return "not_fqdn"
    return "random" if is_random_label(helo.split(".")[0]) else "fqdn"


def _msgid_shape(msgid: str | None, from_domain: str | None) -> str:
    if not msgid:
        return "none"
    local, at, domain = msgid.rpartition("@")
    if not at:
        return "no_domain"
    domain = domain.strip("[]").lower()
    if _BARE_IP.match(domain):
        return "ip_domain"
    reg = registered_domain(domain)
    if reg is None:
        return "bad_domain"
    if from_domain and reg == from_domain:
        return "from_domain"
    return "random_local" if is_random_label(re.sub(r"[^a-z0-9]", "", local.lower())) \
        else "foreign_domain"


def _mine_matcher(my_hostnames: Iterable[str], my_addresses: Iterable[str]
                  ) -> Callable[[str], bool]:
    """Whether a HELO claims one of our names or addresses.

    ``my_hostnames`` are names or shell globs, matched exactly as ``received.host_matches``
    matches them everywhere else (case-insensitive, a trailing dot ignored, ``*`` spanning
    dots, ``?`` and ``[...]``). ``my_addresses`` are IP addresses, claimed bare or as an
    address literal (``[192.0.2.1]``, ``[IPv6:::ffff:192.0.2.1]``) and compared as
    addresses."""
    names = tuple(my_hostnames)
    addrs = {a.strip("[]").lower() for a in my_addresses}
    canonical = {c for a in addrs if (c := canonical_ip(a)) is not None}

    def mine(helo: str) -> bool:
        bare = helo.lower().rstrip(".").strip("[]")
        if bare in addrs or (canonical and canonical_ip(bare) in canonical):
            return True
        return host_matches(helo, names)

    return mine


def _by_unique(values: pd.Series, fn: Callable[[str], object]) -> pd.Series:
    """Apply ``fn`` once per distinct non-null value and map the results back."""
    codes, uniq = pd.factorize(values, use_na_sentinel=True)
    results = [fn(v) for v in uniq]
    return pd.Series([results[c] if c >= 0 else None for c in codes], index=values.index,
                     dtype=object)


def add_features(df: pd.DataFrame, my_hostnames: Sequence[str] = (),
                 my_addresses: Sequence[str] = ()) -> pd.DataFrame:
    """Return a copy of ``df`` (the ``mail`` table, or log rows with ``client_ip``,
    ``client_name``, ``helo`` and ``sender``) with the feature columns of this module.

    >>> row = pd.DataFrame({"client_ip": ["192.0.2.7"], "client_name": ["unknown"],
    ...                     "helo": ["[192.0.2.7]"], "envelope_sender": ["a@mail.example.com"]})
    >>> add_features(row)[["net", "client_name", "helo_shape", "sender_domain"]].iloc[0].tolist()
    ['192.0.2.0/24', None, 'address_literal', 'example.com']
    """
    out = df.copy()
    n = len(out)

    def col(name: str) -> pd.Series:
        return to_text(out[name]) if name in out else pd.Series([None] * n, index=out.index,
                                                                dtype=object)

    ip = _unmapped(col("client_ip"))
    out["client_ip"] = ip
    out["net"] = networks(ip)
    out["client_name"] = col("client_name")
    out["rdns_domain"] = _by_unique(out["client_name"], registered_domain)
    pairs = pd.Series(list(zip(out["client_name"], ip, strict=True)), index=out.index)
    out["rdns_shape"] = _by_unique(pairs, lambda p: rdns_shape(p[0], p[1]))
    mine = _mine_matcher(my_hostnames, my_addresses)
    out["helo"] = col("helo")
    hpairs = pd.Series(list(zip(out["helo"], ip, strict=True)), index=out.index)
    out["helo_shape"] = _by_unique(hpairs, lambda p: helo_shape(p[0], p[1], mine))
    out["helo_domain"] = _by_unique(out["helo"], registered_domain)
    sender = col("envelope_sender") if "envelope_sender" in out else col("sender")
    out["envelope_sender"] = sender
    out["sender_domain"] = _by_unique(sender.map(
        lambda a: a.rpartition("@")[2] if a and "@" in a else None), registered_domain)
    if "from_domain" in out:
        out["from_domain"] = col("from_domain")
    if "message_id" in out:
        mp = pd.Series(list(zip(col("message_id"), col("from_domain")
                                if "from_domain" in out else [None] * n, strict=True)),
                       index=out.index)
        out["msgid_shape"] = _by_unique(mp, lambda p: _msgid_shape(p[0], p[1]))
    time_col = next((c for c in ("received_time", "first_seen", "connect_time", "time")
                     if c in out), None)
    if time_col is not None:
        t = pd.to_datetime(out[time_col], utc=True, errors="coerce")
        iso = t.dt.isocalendar()
        out["day"] = t.dt.strftime("%Y-%m-%d")
        out["week"] = (iso["year"].astype("string") + "-W"
                       + iso["week"].astype("string").str.zfill(2))
    return out
