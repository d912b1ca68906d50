"""Candidate rule keys generalised from spam only as far as the evidence allows.

Each generaliser takes the spam rows (``features.add_features`` output) and the shield and
returns a candidate table: ``kind`` (``RuleKind`` value), ``key`` (in the kind's syntax),
``anchor`` (the domain a regex is anchored on, or the literal a key equals; the backtest uses
it to find the few values a key can match), ``generaliser`` and ``sources`` (distinct spam
hosts behind it). A candidate never contains known ham: CIDR blocks stop growing before a ham
address, regexes are tested against every ham name of their domain, domains in the shield or
the allowlist and public suffixes are refused. A key the emitter would refuse to write
(``emit.postfix.validate_key``: say a sender domain that is not an LDH name) is never a
candidate.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from triage.emit.postfix import V4_WIDEST_PREFIX, V6_WIDEST_PREFIX, pcre_literal, validate_key
from triage.errors import RuleError
from triage.features import is_random_label, rdns_shape
from triage.ingest.address import client_address, registered_domain
from triage.model import RuleKind
from triage.shield import Shield

__all__ = [
    "CANDIDATE_COLUMNS", "Limits", "cidr_candidates", "header_candidates", "header_values",
    "helo_candidates", "key_error", "message_id_domain", "message_id_key", "name_pattern",
    "rdns_candidates", "sender_candidates", "subject_key", "subject_probe",
]

CANDIDATE_COLUMNS = ["kind", "key", "anchor", "generaliser", "sources"]


@dataclass(frozen=True)
class Limits:
    """How far evidence must go before a key is generalised."""

    v4_widest: int = 24          # never a network wider than this (IPv4 prefix length)
    v6_widest: int = 48          # ... nor wider than this for IPv6
    v6_narrowest: int = 64       # IPv6 hosts rotate inside their /64: never block less
    min_messages: int = 2        # distinct spam messages behind any candidate
    min_sources: int = 2         # distinct spam addresses inside a network wider than a host
    min_hosts: int = 3           # distinct spam host names behind an rDNS/HELO regex
    min_days: int = 2            # distinct days the spam behind a proposal arrived on
    min_subject_chars: int = 10  # a Subject rule needs a subject at least this long ...
    min_subject_words: int = 2   # ... of at least this many words
    # Message-ID domain rules are off by default: mailing lists pass on their authors'
    # Message-IDs, so on the SpamAssassin corpus's time split every such rule that later met
    # ham hit list mail (webnote.net, heanet.ie, easydns.com on ILUG and Razor lists).
    message_id_rules: bool = False


@functools.lru_cache(maxsize=65536)
def key_error(kind: str, key: str) -> str | None:
    """Why the emitter would refuse ``key`` as a ``kind`` rule (``validate_key``), or None."""
    try:
        validate_key(RuleKind(kind), key)
    except (RuleError, ValueError) as exc:
        return str(exc)
    return None


def _frame(rows: Iterable[Mapping[str, object]]) -> pd.DataFrame:
    """The candidate table of ``rows``, less any whose key the emitter would refuse (such a
    rule could never be written, and the backtest could not replay it)."""
    return pd.DataFrame([r for r in rows if key_error(str(r["kind"]), str(r["key"])) is None],
                        columns=CANDIDATE_COLUMNS)


def _cols(df: pd.DataFrame, *names: str) -> pd.DataFrame:
    """The columns ``names`` of ``df`` that it has: the spam rows carry dozens of columns,
    and filtering rows copies every column taken along."""
    return df[[n for n in names if n in df]]


def _grouped(df: pd.DataFrame, by: str | list[str], **named: tuple[str, str]
             ) -> pd.DataFrame:
    """``df.groupby(by).agg(**named)`` for the reductions used here (``size``,
    ``nunique``, ``sum``, ``first``): the same frame (keys sorted, missing keys left out),
    one reduction per column, without the overhead of a named aggregation (several
    milliseconds a call, many calls per proposal run)."""
    g = df.groupby(by)
    return pd.DataFrame({name: g.size() if how == "size" else getattr(g[col], how)()
                         for name, (col, how) in named.items()})


# ---------------------------------------------------------------------------- networks

def _ip_ints(ips: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """IPv4 as uint32 and IPv6 as their upper 64 bits (uint64); two arrays with -1 / junk
    removed by the caller via the returned masks."""
    v4 = np.zeros(len(ips), dtype=np.uint64)
    ver = np.zeros(len(ips), dtype=np.int8)
    for i, s in enumerate(ips):
        try:
            a = ipaddress.ip_address(s)
        except ValueError:
            continue
        ver[i] = a.version
        v4[i] = int(a) if a.version == 4 else int(a) >> 64
    return v4, ver


def cidr_candidates(spam: pd.DataFrame, shield: Shield, limits: Limits = Limits()
                    ) -> pd.DataFrame:
    """Grow a network around each spam address, one bit at a time, while it holds no ham
    address and, beyond a single host, at least ``min_sources`` distinct spam addresses.
    The widest network reached (bounded by ``v4_widest``/``v6_widest``, and never wider than
    the emitter accepts: ``emit.postfix.V4_WIDEST_PREFIX``/``V6_WIDEST_PREFIX``) is the
    candidate.
    """
    # addresses as Postfix matches them: an IPv4-mapped address is the IPv4 address
    ips = spam["client_ip"].dropna()
    counts = ips.map(lambda v: client_address(v) if isinstance(v, str) else v).value_counts()
    ham_ips = {client_address(v) if isinstance(v, str) else v for v in shield.ham_ips}
    counts = counts[~counts.index.isin(ham_ips)]
    if shield.own_networks:
        # Our own networks are permitted before any map: spam from them is no evidence,
        # and a block growing towards one stops at its first address (aligned blocks nest).
        counts = counts[[not _in_networks(ip, shield.own_networks) for ip in counts.index]]
    if counts.empty:
        return _frame([])
    spam_ips = list(counts.index)
    s_int, s_ver = _ip_ints(spam_ips)
    h_int, h_ver = _ip_ints(sorted(ham_ips)
                            + [str(n.network_address) for n in shield.own_networks])
    rows = []
    # a network wider than validate_key accepts would be dropped by _frame, leaving its
    # spam with no candidate at all: stop growing at the emitter's bound instead
    v4_wide = max(limits.v4_widest, V4_WIDEST_PREFIX)
    v6_wide = max(limits.v6_widest, V6_WIDEST_PREFIX)
    for version, bits, narrow, wide in ((4, 32, 32, v4_wide),
                                        (6, 64, limits.v6_narrowest, v6_wide)):
        sel = s_ver == version
        if not sel.any():
            continue
        ips, msgs = s_int[sel], counts.to_numpy()[sel]
        ham = h_int[h_ver == version]
        best = np.full(len(ips), -1)
        alive = np.ones(len(ips), dtype=bool)
        for length in range(narrow, wide - 1, -1):
            mask = np.uint64(((1 << length) - 1) << (bits - length))
            net = ips & mask
            alive &= ~np.isin(net, ham & mask)
            _, inv, n_src = np.unique(net, return_inverse=True, return_counts=True)
            n_msg = np.bincount(inv, weights=msgs)
            need = 1 if length == narrow else limits.min_sources
            ok = alive & (n_src[inv] >= need) & (n_msg[inv] >= limits.min_messages)
            best[ok] = length
        for ip_val, length, src in _widest(ips, best, bits):
            addr = int(ip_val) if version == 4 else int(ip_val) << 64
            net_obj = ipaddress.ip_network((addr, int(length)))
            if shield.network_reason(net_obj) is None:
                rows.append({"kind": RuleKind.CLIENT_CIDR.value, "key": net_obj.with_prefixlen,
                             "anchor": None, "generaliser": "cidr", "sources": src})
    return _frame(rows).drop_duplicates("key", ignore_index=True)


def _in_networks(ip: object, nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
                 ) -> bool:
    try:
        addr = ipaddress.ip_address(str(ip))
    except ValueError:
        return False
    return any(addr.version == n.version and addr in n for n in nets)


def _widest(ips: np.ndarray, best: np.ndarray, bits: int) -> list[tuple[int, int, int]]:
    """One (network, length, distinct sources) per network reached; a network nested in a
    wider one reached by another address is dropped."""
    keep = best >= 0
    ips, best = ips[keep], best[keep]
    if not len(ips):
        return []
    masks = np.array([((1 << int(b)) - 1) << (bits - int(b)) for b in best], dtype=np.uint64)
    df = pd.DataFrame({"net": ips & masks, "len": best, "ip": ips})
    agg = _grouped(df, ["net", "len"], sources=("ip", "nunique")).reset_index()
    agg = agg.sort_values("len")
    out: list[tuple[int, int, int]] = []
    taken: list[tuple[int, int]] = []
    for net, length, src in agg.itertuples(index=False):
        if any(int(tn) == int(net) & (((1 << tl) - 1) << (bits - tl)) and tl <= length
               for tn, tl in taken):
            continue
        taken.append((int(net), int(length)))
        out.append((int(net), int(length), int(src)))
    return out


# ---------------------------------------------------------------------------- names

def _label_pattern(label: str, level: int) -> str:
    if level >= 2:
        return "[^.]+"
    parts = []
    for token in re.split(r"([-_])", label):
        if not token or token in "-_":
            parts.append(token)
        elif token.isdigit():
            parts.append(r"\d+")
        elif is_random_label(token):
            parts.append("[a-z0-9]+")
        else:
            # digit runs vary between hosts of one pool; letters name the pool
            parts.append("".join(r"\d+" if p.isdigit() else pcre_literal(p, anchored=False)
                                 for p in re.split(r"(\d+)", token) if p))
    return "".join(parts)


def name_pattern(name: str, domain: str, level: int) -> str | None:
    """A regex for ``name`` anchored on its registered ``domain``.

    level 1: digit runs and random-looking labels become classes; level 2: the first label
    too; level 3: any name under the domain.

    >>> name_pattern("adsl-198-51-100-7.pool.example.net", "example.net", 1)
    '^adsl-\\\\d+-\\\\d+-\\\\d+-\\\\d+\\\\.pool\\\\.example\\\\.net$'
    """
    dom = pcre_literal(domain, anchored=False)
    if level >= 3:
        return rf"(^|\.){dom}$"
    if not name.endswith("." + domain):
        return None
    labels = name[: -len(domain) - 1].split(".")
    parts = [_label_pattern(lb, 2 if (level == 2 and i == 0) else 1)
             for i, lb in enumerate(labels)]
    return "^" + r"\.".join(parts) + rf"\.{dom}$"


def _pattern_candidates(values: pd.DataFrame, ham_values: Iterable[str], kind: RuleKind,
                        shield: Shield, blocked_domains: frozenset[str],
                        limits: Limits) -> list[dict[str, object]]:
    """Patterns at each level over (``name``, ``domain``, ``ip``) rows; kept when they come
    from ``min_hosts`` distinct names and match no ham value of the same domain."""
    ham_by_domain: dict[str, list[str]] | None = None

    def ham_under(domain: str) -> Sequence[str]:
        """The ham values under ``domain`` (indexed on first use: often no pattern gets
        this far)."""
        nonlocal ham_by_domain
        if ham_by_domain is None:
            ham_by_domain = {}
            for hv in ham_values:
                for d in _suffixes(hv):
                    ham_by_domain.setdefault(d, []).append(hv)
        return ham_by_domain.get(domain, ())

    v = values.dropna(subset=["name", "domain"])
    v = v[[shield.rdns_reason(d) is None for d in v["domain"]]] if len(v) else v
    rows: list[dict[str, object]] = []
    for level in (1, 2, 3):
        if level == 3:
            # A pattern for a whole registered domain is refused where the spam hosts show
            # an access or mail provider (dynamic pools, outbound mail servers): the same
            # domain names its customers' legitimate mail servers too.
            providers = {d for n, d in zip(v["name"], v["domain"], strict=True)
                         if is_provider_host(str(n))}
            v = v[~v["domain"].isin(blocked_domains | providers)]
        # one pattern per distinct (name, domain), mapped back to the messages
        pairs = v[["name", "domain"]].value_counts().reset_index(name="msg")
        pats = [name_pattern(n, d, level)
                for n, d in zip(pairs["name"], pairs["domain"], strict=True)]
        g = pairs.assign(pattern=pd.Series(pats, index=pairs.index, dtype=object)).dropna()
        agg = _grouped(g, ["pattern", "domain"], hosts=("name", "nunique"),
                       messages=("msg", "sum")).reset_index()
        agg = agg[(agg["hosts"] >= limits.min_hosts) & (agg["messages"] >= limits.min_messages)]
        for pat, dom, hosts in agg[["pattern", "domain", "hosts"]].itertuples(index=False):
            ham_here = ham_under(dom)
            if ham_here and any(re.search(pat, h, re.I | re.ASCII) for h in ham_here):
                continue
            rows.append({"kind": kind.value, "key": pat, "anchor": dom,
                         "generaliser": f"{kind.value}_level{level}", "sources": int(hosts)})
    return rows


# First labels of outbound mail servers: smtp3out, mail04, mx1, relay-2, mailout, mta7 ...
MAIL_SERVER_RE = re.compile(
    r"^(?:[a-z]*smtp[a-z0-9-]*|mail[0-9-]*|mailout[0-9-]*|mx[0-9-]*|relay[0-9-]*|"
    r"mta[0-9-]*|out(?:bound)?[0-9-]*|[a-z]*-out[0-9-]*|mailhost[0-9-]*|mailgw[0-9-]*)$",
    re.I)
_PROVIDER_SHAPES = frozenset({"ip_embedded", "dynamic", "residential", "static_pool",
                              "numeric"})


def is_mail_server_name(name: str | None) -> bool:
    """The host name looks like an outbound mail server (its first label)."""
    return bool(name) and bool(MAIL_SERVER_RE.match(str(name).split(".", 1)[0]))


def is_provider_host(name: str) -> bool:
    """An outbound mail server or an access-pool (dynamic, residential ...) host name."""
    return is_mail_server_name(name) or rdns_shape(name) in _PROVIDER_SHAPES


def _suffixes(name: str) -> list[str]:
    labels = name.lower().rstrip(".").split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


def rdns_candidates(spam: pd.DataFrame, shield: Shield, limits: Limits = Limits()
                    ) -> pd.DataFrame:
    """Client-name regexes from the spam rDNS names (see ``name_pattern``)."""
    values = pd.DataFrame({"name": spam["client_name"], "domain": spam["rdns_domain"]})
    blocked = shield.rdns_domains | shield.domains
    return _frame(_pattern_candidates(values, shield.ham_names, RuleKind.CLIENT_NAME, shield,
                                      blocked, limits))


def helo_candidates(spam: pd.DataFrame, shield: Shield, my_names: Sequence[str] = (),
                    limits: Limits = Limits()) -> pd.DataFrame:
    """HELO regexes: generalised FQDNs (as rDNS names), exact names that are not FQDNs
    sent from several addresses, and any HELO claiming to be us. "Us" is each of
    ``my_names`` but our relays' names (``shield.relay_names``): a relay of ours greets
    our MX with its own name, from addresses the config may not list all of."""
    fq = _cols(spam, "helo", "helo_domain")[spam["helo_shape"].isin(["fqdn", "random"])]
    values = pd.DataFrame({"name": fq["helo"], "domain": fq["helo_domain"]})
    blocked = shield.rdns_domains | shield.domains | {r for n in shield.ham_helos
                                                      for r in _suffixes(n)[-1:]}
    rows = _pattern_candidates(values, shield.ham_helos, RuleKind.HELO, shield,
                               frozenset(blocked), limits)
    odd = _cols(spam, "helo", "client_ip")[spam["helo_shape"].isin(["not_fqdn", "ours"])]
    agg = _grouped(odd, "helo", ips=("client_ip", "nunique"), messages=("helo", "size"))
    agg = agg[(agg["ips"] >= limits.min_sources) & (agg["messages"] >= limits.min_messages)
              & ~agg.index.isin(shield.ham_helos)]
    for helo, ips in agg["ips"].items():
        rows.append({"kind": RuleKind.HELO.value, "key": pcre_literal(str(helo)),
                     "anchor": str(helo), "generaliser": "helo_exact", "sources": int(ips)})
    ours = [n.lower() for n in my_names if "*" not in n and n.lower() not in shield.ham_helos
            and not shield.is_relay_name(n)]
    if ours and (spam["helo_shape"] == "ours").sum() >= limits.min_messages:
        key = "^(" + "|".join(pcre_literal(n, anchored=False) for n in ours) + ")$"
        rows.append({"kind": RuleKind.HELO.value, "key": key, "anchor": "|".join(ours),
                     "generaliser": "helo_ours", "sources": 0})
    return _frame(rows).drop_duplicates("key", ignore_index=True)


def sender_candidates(spam: pd.DataFrame, shield: Shield, limits: Limits = Limits()
                      ) -> pd.DataFrame:
    """Envelope sender registered domains: never a public suffix (``registered_domain``
    gives None for those), a shielded or an allowlisted domain."""
    agg = _grouped(_cols(spam, "sender_domain", "client_ip").dropna(subset=["sender_domain"]),
                   "sender_domain",
                   messages=("sender_domain", "size"), sources=("client_ip", "nunique"))
    agg = agg[agg["messages"] >= limits.min_messages]
    rows = [{"kind": RuleKind.SENDER_DOMAIN.value, "key": d, "anchor": d,
             "generaliser": "sender_domain", "sources": int(src)}
            for d, src in agg["sources"].items() if shield.domain_reason(str(d)) is None]
    return _frame(rows)


def _subject_text(subject: object) -> str | None:
    """A subject's words, lower case, joined by one space (white space runs, folding
    included, count as one space); None for a subject a Subject rule is never made from
    (empty, or a word not printable ASCII: Postfix sees the raw, MIME-encoded header, not
    the decoded text)."""
    if not isinstance(subject, str):
        return None
    words = subject.split()
    if not words or not all(w.isascii() and w.isprintable() for w in words):
        return None
    return " ".join(words).lower()


def subject_probe(subject: object) -> str | None:
    """The backtest's anchor for a subject: ``subject:`` and a digest of ``_subject_text``
    (a digest, as an anchor may not hold ``|``), or None."""
    text = _subject_text(subject)
    if text is None:
        return None
    return "subject:" + hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def subject_key(subject: str) -> str:
    """A header_checks regex for exactly this subject, up to case and white space: each
    word through the emitter's ``pcre_literal`` (so metacharacters, ``/`` and control
    characters are escapes), white space runs as ``\\s+``, anchored on both ends.

    >>> subject_key("50% off / today")
    '^Subject:\\\\s*50\\\\%\\\\s+off\\\\s+\\\\/\\\\s+today\\\\s*$'
    """
    words = [pcre_literal(w, anchored=False) for w in subject.split()]
    return r"^Subject:\s*" + r"\s+".join(words) + r"\s*$"


def message_id_domain(message_id: object) -> str | None:
    """The registered domain right of the ``@`` of a Message-ID (``<`` ``>`` optional), or
    None (no ``@``, an address literal, a public suffix)."""
    if not isinstance(message_id, str) or "@" not in message_id:
        return None
    dom = message_id.strip().strip("<>").rpartition("@")[2].strip().lower().rstrip(".")
    if not dom or dom.startswith("[") or not re.fullmatch(r"[a-z0-9.-]+", dom):
        return None
    return registered_domain(dom)


def message_id_key(domain: str) -> str:
    """A header_checks regex for Message-IDs whose right-hand side is ``domain`` or a
    name under it."""
    dom = pcre_literal(domain, anchored=False)
    return rf"^Message-ID:\s*<[^<>@]*@([^<>@]*\.)?{dom}>"


def header_values(df: pd.DataFrame, raw: str, decoded: str) -> pd.Series | None:
    """A header's values as header_checks sees them: the ``raw`` column of the ``mail``
    table (``mailtable.raw_header``: not decoded, folding kept) where a row has it, else
    the ``decoded`` column (rows stored before the raw columns existed); None when ``df``
    has neither column."""
    if raw not in df:
        return df[decoded].astype(object) if decoded in df else None
    values = df[raw].astype(object)
    has = np.array([isinstance(v, str) for v in values], dtype=bool)
    fallback = df[decoded].astype(object) if decoded in df else None
    return values.where(has, fallback)


def _stripped(values: pd.Series) -> pd.Series:
    """Text values without surrounding white space; anything else None."""
    return values.map(lambda v: v.strip() if isinstance(v, str) else None).astype(object)


def _subject_rows(spam: pd.DataFrame, ham: pd.DataFrame, limits: Limits
                  ) -> list[dict[str, object]]:
    """Subjects shared by several spam messages from several sources over several days,
    long enough to be specific, and equal (as ``subject_probe`` sees them) to no ham
    subject. Made from the raw Subject header (``header_values``): Postfix matches that,
    not the decoded text, so an encoded subject gives a key for its encoded words."""
    subjects = header_values(spam, "subject_header", "subject")
    if subjects is None:
        return []
    probes = subjects.map(subject_probe)
    s = _cols(spam, "client_ip", "day").assign(subject=subjects, probe=probes) \
        .dropna(subset=["probe"])
    if s.empty:
        return []
    ham_subjects = header_values(ham, "subject_header", "subject")
    ham_probes = set(ham_subjects.map(subject_probe).dropna()) \
        if ham_subjects is not None else set()
    days = s["day"] if "day" in s else pd.Series(0, index=s.index)
    agg = _grouped(s.assign(d=days), "probe", messages=("probe", "size"),
                   sources=("client_ip", "nunique"), days=("d", "nunique"),
                   subject=("subject", "first"))
    need_days = limits.min_days if "day" in s else 1
    agg = agg[(agg["messages"] >= limits.min_messages) & (agg["sources"] >= limits.min_sources)
              & (agg["days"] >= need_days) & ~agg.index.isin(ham_probes)]
    rows: list[dict[str, object]] = []
    for probe, a in agg.iterrows():
        text = _subject_text(a["subject"]) or ""
        if len(text) < limits.min_subject_chars or len(text.split()) < limits.min_subject_words:
            continue
        rows.append({"kind": RuleKind.HEADER.value, "key": subject_key(str(a["subject"])),
                     "anchor": str(probe), "generaliser": "header_subject",
                     "sources": int(a["sources"])})
    return rows


def _message_id_rows(spam: pd.DataFrame, shield: Shield, ham: pd.DataFrame, limits: Limits
                     ) -> list[dict[str, object]]:
    """Message-ID registered domains shared by several spam messages from several sources,
    in no ham Message-ID, not shielded (ham sender/From/DKIM domains, the allowlists)."""
    if "message_id" not in spam:
        return []
    s = _cols(spam, "client_ip").assign(mid=spam["message_id"].map(message_id_domain)) \
        .dropna(subset=["mid"])
    if s.empty:
        return []
    ham_domains = set(ham["message_id"].map(message_id_domain).dropna()) \
        if "message_id" in ham else set()
    agg = _grouped(s, "mid", messages=("mid", "size"), sources=("client_ip", "nunique"))
    agg = agg[(agg["messages"] >= limits.min_messages) & (agg["sources"] >= limits.min_sources)
              & ~agg.index.isin(ham_domains)]
    return [{"kind": RuleKind.HEADER.value, "key": message_id_key(str(d)),
             "anchor": f"message-id:{d}", "generaliser": "header_message_id",
             "sources": int(src)}
            for d, src in agg["sources"].items() if shield.domain_reason(str(d)) is None]


def header_candidates(spam: pd.DataFrame, shield: Shield, ham: pd.DataFrame,
                      limits: Limits = Limits()) -> pd.DataFrame:
    """header_checks keys for spam that connection features do not single out: the From
    registered domain, the exact X-Mailer, the Message-ID domain and the Subject (see
    ``_subject_rows``), each only when absent from ham. The set cover counts them only on
    spam no connection candidate covers."""
    rows: list[dict[str, object]] = []
    agg = _grouped(_cols(spam, "from_domain", "client_ip").dropna(subset=["from_domain"]),
                   "from_domain",
                   messages=("from_domain", "size"), sources=("client_ip", "nunique"))
    agg = agg[(agg["messages"] >= limits.min_messages)
              & (agg["sources"] >= limits.min_sources)]
    for d, src in agg["sources"].items():
        # only a domain name of LDH labels (A-labels for IDNs): the backtest finds the From
        # headers such a key can match by the LDH runs in them
        if (shield.domain_reason(str(d)) is None
                and key_error(RuleKind.SENDER_DOMAIN.value, str(d)) is None):
            dom = pcre_literal(str(d), anchored=False)
            rows.append({"kind": RuleKind.HEADER.value,
                         "key": rf"^From:.*[@.]{dom}(>|\s|$)", "anchor": f"from:{d}",
                         "generaliser": "header_from", "sources": int(src)})
    # the raw header, as for subjects (``header_values``)
    ham_xm = header_values(ham, "x_mailer_header", "x_mailer")
    ham_mailers = {str(m).lower() for m in _stripped(ham_xm).dropna()} \
        if ham_xm is not None else set()
    spam_xm = header_values(spam, "x_mailer_header", "x_mailer")
    xm = _cols(spam, "client_ip").assign(
        xm=_stripped(spam_xm) if spam_xm is not None else None).dropna(subset=["xm"])
    agg = _grouped(xm, "xm", messages=("xm", "size"), sources=("client_ip", "nunique"))
    agg = agg[(agg["messages"] >= limits.min_messages) & (agg["sources"] >= limits.min_sources)
              & ~agg.index.str.lower().isin(ham_mailers) & (agg.index.str.len() >= 4)]
    for mailer, src in agg["sources"].items():
        if shield.allowlist.mailer_reason(str(mailer)) is not None:
            continue
        rows.append({"kind": RuleKind.HEADER.value,
                     "key": r"^X-Mailer:\s*" + pcre_literal(str(mailer), anchored=False)
                     + r"\s*$", "anchor": f"x-mailer:{str(mailer).lower()}",
                     "generaliser": "header_x_mailer", "sources": int(src)})
    if limits.message_id_rules:
        rows += _message_id_rows(spam, shield, ham, limits)
    rows += _subject_rows(spam, ham, limits)
    return _frame(rows)
