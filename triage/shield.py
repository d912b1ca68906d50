"""The never-block shield: everything known to be legitimate, which no rule may touch.

Sources:
- ham (the operator's inbox folders) over a lookback window (default 180 days): client IPs,
  their /24 or /64, rDNS names and domains, HELOs, envelope sender, From and DKIM domains;
- ``rules/allowlist.toml`` shipped with triage (large mailbox providers and ESPs) and the
  operator's own allowlist files in the same format;
- the log: authenticated sessions (their IPs, names, HELOs and senders) and outbound mail
  (the domains our users write to are correspondents whose replies must get through);
- our own infrastructure from the config (``own_infrastructure``): the trusted relays given
  by address or network, and our own addresses, are our networks, which Postfix permits
  (``permit_mynetworks``) before any triage map, so no rule may cover them; the trusted
  relays given by name are our hosts that hand mail to us, so their names are never refused,
  as rDNS or as HELO (they are not "claiming to be us", they are us).

Campaign grouping ignores shielded values; candidate rules are checked against the raw ham
values kept here (a CIDR must contain no ham IP, a regex must match no ham name).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from triage.errors import ConfigError
from triage.features import RULES_DIR, add_features, network_set, to_text
from triage.ingest.address import registered_domain

__all__ = ["LOG_COLUMNS", "Allowlist", "Shield", "build_shield", "load_allowlist",
           "own_infrastructure"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def own_infrastructure(trusted_relays: Iterable[str] = (), my_addresses: Iterable[str] = ()
                       ) -> tuple[tuple[IPNetwork, ...], tuple[str, ...]]:
    """Split the config's ``trusted_relays`` (addresses, networks, host names or globs) and
    our own addresses into (our networks, our relays' names).

    >>> nets, names = own_infrastructure(["192.0.2.7", "198.51.100.0/24", "Relay.example.net."])
    >>> [n.with_prefixlen for n in nets], names
    (['192.0.2.7/32', '198.51.100.0/24'], ('relay.example.net',))
    """
    nets: list[IPNetwork] = []
    names: list[str] = []
    for entry in [*trusted_relays, *my_addresses]:
        text = str(entry).strip().strip("[]")
        if not text:
            continue
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            names.append(text.lower().rstrip("."))
    return tuple(dict.fromkeys(nets)), tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Allowlist:
    """Domains, rDNS domains and networks that are never blocked, with the provider name."""

    domains: dict[str, str] = field(default_factory=dict)
    rdns: dict[str, str] = field(default_factory=dict)
    networks: tuple[tuple[IPNetwork, str], ...] = ()
    mailers: tuple[str, ...] = ()

    def merged(self, other: Allowlist) -> Allowlist:
        return Allowlist({**self.domains, **other.domains}, {**self.rdns, **other.rdns},
                         self.networks + other.networks, self.mailers + other.mailers)

    def mailer_reason(self, mailer: str) -> str | None:
        """Why a header rule on this X-Mailer value is refused (a mainstream client)."""
        for pat in self.mailers:
            if re.search(pat, mailer, re.I):
                return f"allowlist: mail client {pat!r}"
        return None


def load_allowlist(path: str | Path) -> Allowlist:
    """Read an allowlist file (format: see the header of ``rules/allowlist.toml``)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read allowlist: {exc}", file=p) from exc
    domains: dict[str, str] = {}
    rdns: dict[str, str] = {}
    nets: list[tuple[IPNetwork, str]] = []
    for i, prov in enumerate(data.get("provider", [])):
        name = str(prov.get("name", f"provider {i + 1}"))
        for d in prov.get("domains", []):
            domains[str(d).lower().rstrip(".")] = name
        for d in prov.get("rdns", []):
            rdns[str(d).lower().rstrip(".")] = name
        for n in prov.get("networks", []):
            try:
                nets.append((ipaddress.ip_network(str(n), strict=False), name))
            except ValueError as exc:
                raise ConfigError(f"bad network {n!r} for {name}", file=p) from exc
    mailers = tuple(str(m) for m in data.get("mailers", {}).get("patterns", []))
    return Allowlist(domains, rdns, tuple(nets), mailers)


def _set(values: Iterable[object]) -> frozenset[str]:
    if isinstance(values, pd.Series):  # each distinct value once
        distinct = values.dropna().drop_duplicates()
        if isinstance(distinct.dtype, pd.StringDtype):  # nothing but text left
            return frozenset(distinct.tolist()) - {""}
        values = distinct.to_numpy(dtype=object)
    return frozenset(v for v in values if isinstance(v, str) and v)


@dataclass(frozen=True)
class Shield:
    """Known-good values. ``ham_ips`` / ``ham_names`` / ``ham_helos`` / ``ham_senders`` are
    the raw values candidate rules are tested against; the other sets are grouping keys."""

    ham_ips: frozenset[str] = frozenset()
    networks: frozenset[str] = frozenset()
    ham_names: frozenset[str] = frozenset()
    rdns_domains: frozenset[str] = frozenset()
    ham_helos: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()
    ham_senders: frozenset[str] = frozenset()
    allowlist: Allowlist = field(default_factory=Allowlist)
    # Our networks (trusted relays and our own addresses: Postfix's mynetworks) and the
    # names (or globs) of our relays; see ``own_infrastructure``.
    own_networks: tuple[IPNetwork, ...] = ()
    relay_names: tuple[str, ...] = ()

    def is_relay_name(self, name: str | None) -> bool:
        """Whether ``name`` is one of our relays' names (exact or glob, any case)."""
        if not name:
            return False
        n = name.lower().rstrip(".")
        return any(fnmatch.fnmatchcase(n, p) for p in self.relay_names)

    def with_relays(self, relayed: pd.DataFrame, own_hosts: Iterable[str] = (),
                    spam: pd.DataFrame | None = None) -> Shield:
        """Add the connection values of spam that a mailing list relayed (it carries
        List-Id: the client is the list server, which also brings ham) and our own
        domains (from the trusted hop's host names). A ``spam`` client whose HELO or rDNS
        lies in our own domains is our own relay (a forwarder, a backup MX) or a forger; the
        HELO rule catches forgers, so its address is no evidence for an address rule."""
        own = _set(registered_domain(h) for h in own_hosts)
        claims_ours: list[object] = []
        servers: list[object] = []
        server_names: list[object] = []
        server_helos: list[object] = []
        if spam is not None and len(spam):
            mine = spam["helo_domain"].isin(own) | spam["rdns_domain"].isin(own)
            claims_ours = list(spam.loc[mine, "client_ip"])
            # An outbound mail server (smtp3out.example.net, mail04...) relays its users'
            # mail, good and bad: spam through it is no evidence for an address or name rule.
            from triage.generalise import is_mail_server_name

            relay_like = spam["client_name"].map(is_mail_server_name).astype(bool)
            servers = list(spam.loc[relay_like, "client_ip"])
            server_names = list(spam.loc[relay_like, "client_name"])
            server_helos = list(spam.loc[relay_like, "helo"])
        return replace(
            self,
            ham_ips=self.ham_ips | _set(relayed["client_ip"]) | _set(claims_ours)
            | _set(servers),
            networks=self.networks | _set(relayed["net"]),
            ham_names=self.ham_names | _set(relayed["client_name"]) | _set(server_names),
            ham_helos=self.ham_helos | _set(relayed["helo"]) | _set(server_helos),
            rdns_domains=self.rdns_domains | _set(relayed["rdns_domain"]) | own,
            domains=self.domains | _set(relayed["sender_domain"]) | own,
            ham_senders=self.ham_senders | _set(relayed["envelope_sender"]))

    def domain_reason(self, domain: str | None) -> str | None:
        """Why a sender/From domain may not be blocked, or None when it may."""
        if not domain:
            return "no domain"
        reg = registered_domain(domain)
        if reg is None:
            return "public suffix or not a domain"
        if reg in self.allowlist.domains or domain in self.allowlist.domains:
            return f"allowlist: {self.allowlist.domains.get(reg) or self.allowlist.domains[domain]}"
        if reg in self.domains:
            return "seen in ham or outbound mail"
        return None

    def rdns_reason(self, domain: str | None) -> str | None:
        """Why rules anchored on this rDNS/HELO registered domain are refused, or None."""
        if not domain:
            return "no registered domain"
        if domain in self.allowlist.rdns:
            return f"allowlist: {self.allowlist.rdns[domain]}"
        if domain in self.allowlist.domains:
            return f"allowlist: {self.allowlist.domains[domain]}"
        for pattern in self.relay_names:
            # An exact relay name is a ham name (a pattern must not match it); a glob names
            # hosts no list holds, so no pattern may be anchored on its domain at all.
            labels = pattern.split(".")
            globbed = [i for i, lb in enumerate(labels) if any(c in lb for c in "*?[")]
            if globbed and registered_domain(".".join(labels[globbed[-1] + 1:])) == domain:
                return f"our relays' domain ({pattern})"
        return None

    def network_reason(self, net: IPNetwork) -> str | None:
        """Why a network may not be blocked (overlaps one of our networks or an allowlisted
        network), or None."""
        for own in self.own_networks:
            if own.version == net.version and net.overlaps(own):
                return f"our own network {own.with_prefixlen} (trusted relay)"
        for allowed, name in self.allowlist.networks:
            if allowed.version == net.version and (net.overlaps(allowed)):
                return f"allowlist: {name}"
        return None


# The columns of the log tables the shield reads (a caller may read only these).
LOG_COLUMNS: dict[str, tuple[str, ...]] = {
    "sessions": ("sasl_username", "client_ip", "client_name", "helo"),
    "messages": ("sasl_username", "origin", "sender", "client_ip", "queue_id"),
    "deliveries": ("queue_id", "relay", "recipient"),
}


def _where(mask: pd.Series) -> pd.Series:
    """A row mask with NA as False (as indexing a frame with it treats NA)."""
    return mask.fillna(False).astype(bool)


def _log_known_good(logs: object) -> dict[str, set[str]]:
    """IPs, names, HELOs, senders and correspondent domains from authenticated and outbound
    traffic in the log tables (any object with ``sessions``/``messages``/``deliveries``).
    Only the columns read are filtered: a log table has many more."""
    out: dict[str, set[str]] = {k: set() for k in ("ips", "names", "helos", "senders",
                                                   "domains")}
    sessions = getattr(logs, "sessions", None)
    messages = getattr(logs, "messages", None)
    deliveries = getattr(logs, "deliveries", None)
    if sessions is not None and len(sessions) and "sasl_username" in sessions:
        auth = _where(sessions["sasl_username"].notna())
        out["ips"] |= _set(sessions["client_ip"][auth])
        out["names"] |= _set(to_text(sessions["client_name"][auth]))
        out["helos"] |= _set(to_text(sessions["helo"][auth]))
    if messages is None or not len(messages):
        return out
    outbound = messages["sasl_username"].notna() if "sasl_username" in messages else \
        pd.Series(False, index=messages.index)
    if "origin" in messages:
        outbound |= messages["origin"].isin(["pickup", "sendmail"])
    mine = _where(outbound)
    out["senders"] |= _set(to_text(messages["sender"][mine]))
    out["ips"] |= _set(messages["client_ip"][mine]) - {"127.0.0.1", "::1"}
    if deliveries is not None and len(deliveries):
        queue_ids = deliveries["queue_id"].astype(object)  # a hash lookup per row
        sent = _where(queue_ids.isin(_set(messages["queue_id"][mine]))
                      & (deliveries["relay"].astype("string").str.lower() != "local"))
        # one registered domain per distinct recipient
        recipients = _set(to_text(deliveries["recipient"][sent]))
        out["domains"] |= _set(registered_domain(a.rpartition("@")[2]) for a in recipients)
    return out


def build_shield(ham: pd.DataFrame, *, logs: object | None = None,
                 now: pd.Timestamp | None = None, lookback_days: int = 180,
                 allowlist_files: Sequence[str | Path] = (), builtin: bool = True,
                 featured: bool = False, trusted_relays: Sequence[str] = (),
                 my_addresses: Sequence[str] = ()) -> Shield:
    """Build the shield from the ham ``mail`` table (rows older than ``lookback_days``
    before ``now`` are ignored; ``now`` defaults to the newest ham message), the log tables,
    the shipped allowlist (``builtin``), the operator's ``allowlist_files`` and our own
    infrastructure (the config's ``trusted_relays`` and our own addresses, see
    ``own_infrastructure``). ``featured`` says ``ham`` already went through
    ``features.add_features``."""
    allow = load_allowlist(RULES_DIR / "allowlist.toml") if builtin else Allowlist()
    for f in allowlist_files:
        allow = allow.merged(load_allowlist(f))
    h = ham if featured else add_features(ham)
    if len(h) and "received_time" in h and lookback_days:
        t = pd.to_datetime(h["received_time"], utc=True, errors="coerce")
        ref = now if now is not None else t.max()
        if pd.notna(ref):
            h = h[t.isna() | (t >= ref - pd.Timedelta(days=lookback_days))]
    log = _log_known_good(logs) if logs is not None else {k: set() for k in
                                                          ("ips", "names", "helos",
                                                           "senders", "domains")}
    dkim = [d.strip() for v in h.get("dkim_domains", pd.Series(dtype=object)).dropna()
            for d in str(v).split(",")]
    sender_domains = {registered_domain(s.rpartition("@")[2]) for s in log["senders"]}
    ips = _set(h["client_ip"]) | log["ips"]
    own_nets, relay_names = own_infrastructure(trusted_relays, my_addresses)
    exact_relays = _set(n for n in relay_names if "*" not in n and "?" not in n)
    from_domains = _set(h.get("from_domain", ()))
    return Shield(
        ham_ips=ips,
        networks=network_set(ips),
        ham_names=_set(h["client_name"]) | log["names"] | exact_relays,
        rdns_domains=_set(h["rdns_domain"]) | _set(registered_domain(n) for n in log["names"]),
        ham_helos=_set(h["helo"]) | log["helos"] | exact_relays,
        domains=(_set(h["sender_domain"]) | from_domains
                 | _set(registered_domain(str(d)) for d in from_domains)
                 | _set(registered_domain(d) for d in dkim) | _set(sender_domains)
                 | log["domains"]),
        ham_senders=_set(h["envelope_sender"]) | log["senders"],
        allowlist=allow,
        own_networks=own_nets,
        relay_names=relay_names,
    )
