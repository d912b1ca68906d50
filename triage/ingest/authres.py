"""Authentication results written into a message: Received-SPF, Authentication-Results,
DKIM-Signature ``d=`` domains.

Only our own results count. The caller decides which headers sit above the trusted Received
header (see :func:`trusted_results`); this module reads their text. Result values are lower
case: pass, fail, softfail, neutral, none, temperror, permerror (plus policy for DKIM/DMARC).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from triage.ingest.received import host_matches

__all__ = [
    "AuthResults",
    "SpfHeader",
    "TrustedAuth",
    "dkim_signature_domains",
    "normalise_result",
    "parse_authentication_results",
    "parse_received_spf",
    "trusted_results",
]

_RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy")
# Old names (RFC 4408 and some implementations) for the same results.
_ALIASES = {"error": "temperror", "unknown": "permerror", "hardfail": "fail",
            "transient-error": "temperror", "permanent-error": "permerror"}


def normalise_result(word: str | None) -> str | None:
    """Lower-case result name; old aliases mapped; anything else -> None."""
    if not word:
        return None
    w = word.strip().strip(";,").lower()
    w = _ALIASES.get(w, w)
    return w if w in _RESULTS else None


@dataclass(frozen=True, slots=True)
class SpfHeader:
    """One Received-SPF header (RFC 7208 9.1, policyd-spf and others)."""

    result: str | None
    client_ip: str | None = None
    helo: str | None = None
    envelope_from: str | None = None
    identity: str | None = None
    receiver: str | None = None


_KV_RE = re.compile(r"([A-Za-z][A-Za-z0-9_.-]*)\s*=\s*(\"(?:[^\"\\]|\\.)*\"|[^\s;]+)")


def _strip_comments(text: str) -> str:
    """Remove (possibly nested) comments; an unbalanced "(" ends the useful text."""
    out: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif not depth:
            out.append(ch)
    return "".join(out)


def parse_received_spf(value: str) -> SpfHeader | None:
    """Read ``Received-SPF: Pass (mailfrom) identity=mailfrom; client-ip=192.0.2.1;
    helo=mail.example.com; envelope-from=a@example.com; receiver=<UNKNOWN>``.

    >>> parse_received_spf("Softfail (mailfrom) identity=mailfrom; client-ip=192.0.2.1").result
    'softfail'
    """
    text = re.sub(r"\s+", " ", value or "").strip()
    first, _, _ = text.partition(" ")
    result = normalise_result(first)
    if result is None:
        return None
    pairs = {k.lower(): v.strip('"') for k, v in _KV_RE.findall(_strip_comments(text))}
    return SpfHeader(
        result=result,
        client_ip=pairs.get("client-ip"),
        helo=pairs.get("helo"),
        envelope_from=pairs.get("envelope-from"),
        identity=pairs.get("identity"),
        receiver=pairs.get("receiver"),
    )


@dataclass(frozen=True, slots=True)
class AuthResults:
    """One Authentication-Results header (RFC 8601): the authserv-id and, per method,
    the result and its properties (``header.d``, ``smtp.mailfrom`` ...)."""

    authserv_id: str
    results: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def result(self, method: str) -> str | None:
        """The first result for ``method`` (``spf``, ``dkim``, ``dmarc`` ...)."""
        return next((r for m, r, _ in self.results if m == method), None)

    def pass_domains(self, method: str, prop: str) -> list[str]:
        """Values of ``prop`` for every passing ``method`` (e.g. dkim / header.d)."""
        return [p[prop].lower() for m, r, p in self.results
                if m == method and r == "pass" and prop in p]


def parse_authentication_results(value: str) -> AuthResults | None:
    """Read ``mx.example.net; dkim=pass (2048-bit key) header.d=example.com; spf=pass
    smtp.mailfrom=example.com; dmarc=fail (p=reject dis=none) header.from=example.com``.

    >>> ar = parse_authentication_results("mx.example.net 1; dkim=pass header.d=example.com")
    >>> ar.authserv_id, ar.result("dkim"), ar.pass_domains("dkim", "header.d")
    ('mx.example.net', 'pass', ['example.com'])
    """
    text = _strip_comments(re.sub(r"\s+", " ", value or "")).strip()
    parts = [p.strip() for p in text.split(";")]
    if not parts or not parts[0]:
        return None
    authserv_id = parts[0].split()[0].lower()  # an optional version number follows
    out = AuthResults(authserv_id)
    for part in parts[1:]:
        m = re.match(r"([A-Za-z0-9_-]+)\s*=\s*([A-Za-z-]+)", part)
        if not m:
            continue
        method, result = m.group(1).lower(), normalise_result(m.group(2))
        if result is None:
            continue
        props = {k.lower(): v.strip('"') for k, v in _KV_RE.findall(part[m.end():])}
        out.results.append((method, result, props))
    return out


def dkim_signature_domains(values: Iterable[str]) -> list[str]:
    """The ``d=`` domain of each DKIM-Signature header, lower case, unique, in order.
    These are what the sender claims; only a passing result of ours verifies one."""
    found: list[str] = []
    for value in values:
        m = re.search(r"(?:^|;)\s*d\s*=\s*([^;\s]+)", re.sub(r"\s+", " ", value or ""))
        if m:
            d = m.group(1).lower().rstrip(".")
            if d not in found:
                found.append(d)
    return found


@dataclass(frozen=True, slots=True)
class TrustedAuth:
    """SPF, DKIM and DMARC as our own MX recorded them."""

    spf_result: str | None = None
    dkim_result: str | None = None
    dmarc_result: str | None = None
    dkim_pass_domains: tuple[str, ...] = ()
    spf_client_ip: str | None = None


def trusted_results(
    headers: Sequence[tuple[str, str]],
    trusted_pos: int,
    my_hostnames: Sequence[str],
) -> TrustedAuth:
    """Results from the headers above position ``trusted_pos`` (the index, among all
    headers, of the trusted Received header); the nearest one above it wins.

    Authentication-Results count only with one of our host names as authserv-id.
    Received-SPF has no such id; above our trusted Received only our MX can have written it.
    The Received-SPF headers read are those of the nearest delivery that has one (up to the
    next Received header above): among them ``identity=mailfrom`` wins over a HELO check
    (``_identity_rank``), then the nearest: the envelope sender's result, as
    Authentication-Results ``spf=`` gives it (which counts only without a Received-SPF).
    Anything below ``trusted_pos`` was written by the sender and is ignored.
    """
    spf: SpfHeader | None = None
    spf_done = False  # a delivery with a Received-SPF has been read: look no further up
    methods: dict[str, str] = {}
    dkim_domains: list[str] = []
    for i in range(min(trusted_pos, len(headers)) - 1, -1, -1):
        name, value = headers[i]
        low = name.lower()
        if low == "received":
            spf_done = spf is not None
        elif low == "received-spf" and not spf_done:
            parsed = parse_received_spf(value)
            if parsed is not None and (spf is None
                                       or _identity_rank(parsed) < _identity_rank(spf)):
                spf = parsed
        elif low == "authentication-results":
            ar = parse_authentication_results(value)
            if ar is None or not host_matches(ar.authserv_id, my_hostnames):
                continue
            for method, result, _ in ar.results:
                methods.setdefault(method, result)
            dkim_domains += [d for d in ar.pass_domains("dkim", "header.d")
                             if d not in dkim_domains]
    # Several signatures: one that verified is what matters for "is this domain's mail".
    dkim = "pass" if dkim_domains else methods.get("dkim")
    return TrustedAuth(
        spf_result=(spf.result if spf else None) or methods.get("spf"),
        dkim_result=dkim,
        dmarc_result=methods.get("dmarc"),
        dkim_pass_domains=tuple(dkim_domains),
        spf_client_ip=spf.client_ip if spf else None,
    )


def _identity_rank(spf: SpfHeader) -> int:
    """How well a Received-SPF stands for the envelope sender's result (lower is better):
    ``identity=mailfrom``; then one that names no identity (RFC 7208 makes the key
    optional; some writers put a comment there); ``identity=helo`` last. policyd-spf
    checks HELO first and may prepend a header for each identity; the HELO one is the
    message's result only when there is no MAIL FROM one (the null sender, ``<>``)."""
    identity = (spf.identity or "").lower()
    return 0 if identity == "mailfrom" else 2 if identity == "helo" else 1
