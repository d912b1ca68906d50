"""A multi-week traffic plan from a corpus: which message is replayed when, to whom, and how.

The plan keeps the corpus's own arrival pattern: messages whose trusted Received date falls
in the chosen ISO weeks are replayed in that order, and their simulated time is the original
time shifted by a whole number of weeks (so weekdays and hours stay as they were). Part of the
spam is turned into other refused traffic a real MX sees: dictionary attacks on unknown users,
relay attempts, forged HELOs. DNS records and the operator's existing blacklist (access maps
with rule ids) are derived from the same data, checked so that they never hit the ham.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from postfixbench.replay import ReplayMessage, load_message
from postfixbench.spec import BenchSpec

HAM_DIRS = ("easy_ham", "easy_ham_2", "hard_ham")
SPAM_DIRS = ("spam", "spam_2")
LOCAL_USERS = ("alice", "bob")
# Local parts a dictionary attack tries; none of them exists on the bench.
# Large mailbox providers: spam forges them all the time, but a rule against them would refuse
# real people's mail, so the sample blacklist never lists them.
PROVIDERS = frozenset({"yahoo.com", "hotmail.com", "aol.com", "msn.com", "gmail.com",
                       "excite.com", "netscape.net", "earthlink.net", "juno.com", "mail.com",
                       "compuserve.com", "lycos.com", "yahoo.co.uk", "usa.net"})
GUESSES = ("info", "sales", "admin", "webmaster", "office", "support", "contact", "john",
           "mary", "jobs", "marketing", "service", "news", "billing", "test")


@dataclass
class Item:
    kind: str  # ham, spam, dictionary, relay, forged-helo
    msg: ReplayMessage
    sim_time: datetime  # when the simulated MX receives it (UTC)
    recipients: list[str]
    helo: str | None = None  # HELO override (forged-helo)


@dataclass
class Plan:
    items: list[Item]
    spec: BenchSpec
    first_day: date  # Monday of the first simulated ISO week
    weeks: int
    shift: timedelta  # simulated time - corpus time (whole weeks)
    notes: dict[str, object] = field(default_factory=dict)


def _stable(text: str) -> float:
    """A deterministic number in [0, 1) for a string (independent of PYTHONHASHSEED)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32


def _load(corpus: Path, dirs: tuple[str, ...], label: str, start: datetime,
          end: datetime) -> list[ReplayMessage]:
    out = []
    for d in dirs:
        for path in sorted((corpus / d).iterdir()):
            msg = load_message(path, label=label)
            if msg and msg.hop.date and start <= msg.hop.date < end:
                out.append(msg)
    return out


def _domain(addr: str) -> str:
    return addr.rsplit("@", 1)[1].lower() if "@" in addr else ""


def _from_domain(msg: ReplayMessage) -> str:
    m = re.search(rb"^From:[^\n]*?@([A-Za-z0-9.-]+)", msg.data, re.M | re.I)
    return m.group(1).decode().lower().rstrip(".") if m else ""


def build_plan(corpus: Path, spec: BenchSpec, *, corpus_monday: date = date(2002, 8, 19),
               sim_monday: date = date(2025, 9, 1), weeks: int = 6, ham_share: float = 0.4,
               seed: int = 20250901) -> Plan:
    """Choose and schedule the traffic; extend ``spec`` with DNS records and access maps."""
    rng = random.Random(seed)
    start = datetime.combine(corpus_monday, datetime.min.time(), UTC)
    end = start + timedelta(weeks=weeks)
    shift = datetime.combine(sim_monday, datetime.min.time(), UTC) - start
    ham = [m for m in _load(corpus, HAM_DIRS, "ham", start, end) if rng.random() < ham_share]
    spam = _load(corpus, SPAM_DIRS, "spam", start, end)
    _canonical_rdns(ham + spam)
    items: list[Item] = []
    for m in ham:
        rcpts = [f"{rng.choice(LOCAL_USERS)}@{spec.mydomain}"]
        if rng.random() < 0.08:
            rcpts = [f"{u}@{spec.mydomain}" for u in LOCAL_USERS]
        items.append(Item("ham", m, _utc(m.hop.date) + shift, rcpts))
    for m in spam:
        when = _utc(m.hop.date) + shift
        r = rng.random()
        user = f"{rng.choice(LOCAL_USERS)}@{spec.mydomain}"
        if r < 0.14:
            guesses = rng.sample(GUESSES, rng.randint(2, 5))
            rcpts = [f"{g}@{spec.mydomain}" for g in guesses]
            if rng.random() < 0.4:
                rcpts.insert(rng.randrange(len(rcpts) + 1), user)
            items.append(Item("dictionary", m, when, rcpts))
        elif r < 0.24:
            victim = _original_recipient(m) or f"user{rng.randint(1, 999)}@example.com"
            items.append(Item("relay", m, when, [victim]))
        elif r < 0.34:
            helo = rng.choice([spec.myhostname, spec.mydomain, f"[{m.hop.client_ip}]",
                               m.hop.client_ip])
            items.append(Item("forged-helo", m, when, [user], helo=helo))
        else:
            items.append(Item("spam", m, when, [user]))
    items.sort(key=lambda it: (it.sim_time, it.msg.source))
    plan = Plan(items, spec, sim_monday, weeks, shift)
    _dns(plan)
    _blacklist(plan)
    return plan


def _utc(when: datetime | None) -> datetime:
    assert when is not None  # _load keeps only messages with a dated trusted hop
    return when.astimezone(UTC)


def _original_recipient(msg: ReplayMessage) -> str | None:
    m = re.search(rb"^To:[^\n]*?([A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})", msg.data,
                  re.M | re.I)
    return m.group(1).decode().lower() if m else None


def _canonical_rdns(msgs: list[ReplayMessage]) -> None:
    # One address has one PTR name in the bench's DNS: the first name the corpus shows.
    names: dict[str, str] = {}
    for m in msgs:
        names.setdefault(m.hop.client_ip, m.hop.client_name)
    for m in msgs:
        m.hop = replace(m.hop, client_name=names[m.hop.client_ip])


def _dns(plan: Plan) -> None:
    """FCrDNS for named clients; SPF and DMARC records shaped like today's Internet."""
    spec = plan.spec
    seen: set[str] = set()
    for it in plan.items:
        hop = it.msg.hop
        if hop.client_name != "unknown" and hop.client_ip not in seen:
            seen.add(hop.client_ip)
            spec.a_records.append((hop.client_name, hop.client_ip))
    ham_ips: dict[str, set[str]] = defaultdict(set)
    ham_from: set[str] = set()
    spam_domains: set[str] = set()
    for it in plan.items:
        dom = _domain(it.msg.sender)
        if it.kind == "ham":
            ham_ips[dom].add(it.msg.hop.client_ip)
            ham_from.add(_from_domain(it.msg))
        elif dom:
            spam_domains.add(dom)
    for dom, ips in sorted(ham_ips.items()):
        if dom:  # senders of ham publish SPF that covers their real servers
            spec.txt_records.append((dom, "v=spf1 " + " ".join(f"ip4:{i}" for i in sorted(ips))
                                     + " ~all"))
    for dom in sorted(spam_domains - set(ham_ips)):
        # Domains spam forges: some publish a strict policy (SPF fail: refused by
        # policyd-spf), some a soft one, most nothing.
        x = _stable(dom)
        if x < 0.22:
            spec.txt_records.append((dom, "v=spf1 mx -all"))
        elif x < 0.40:
            spec.txt_records.append((dom, "v=spf1 mx ~all"))
    froms = {_from_domain(it.msg) for it in plan.items if it.kind != "ham"} - ham_from
    for dom in sorted(d for d in froms if d):
        if _stable("dmarc:" + dom) < 0.15:  # forged From of a p=reject domain: opendmarc refuses
            spec.txt_records.append((f"_dmarc.{dom}", "v=DMARC1; p=reject"))
        elif _stable("dmarc:" + dom) < 0.35:
            spec.txt_records.append((f"_dmarc.{dom}", "v=DMARC1; p=none"))
    for dom in sorted(ham_from):
        if dom and _stable("dmarc:" + dom) < 0.3:
            spec.txt_records.append((f"_dmarc.{dom}", "v=DMARC1; p=none"))


_DYNAMIC = re.compile(r"(^|[.-])(dsl|adsl|dial|dialup|dyn|dynamic|ppp|pool|cable|dhcp)"
                      r"[0-9.-]", re.I)


def _blacklist(plan: Plan) -> None:
    """The operator's rules from earlier weeks: a few networks, an rDNS pattern, HELO checks,
    sender domains and a subject, each with a rule id and each checked against the ham."""
    spec = plan.spec
    ham = [it for it in plan.items if it.kind == "ham"]
    spam = [it for it in plan.items if it.kind != "ham"]
    ham_nets = {str(ipaddress.ip_network(f"{it.msg.hop.client_ip}/24", strict=False))
                for it in ham}
    nets = Counter(str(ipaddress.ip_network(f"{it.msg.hop.client_ip}/24", strict=False))
                   for it in spam)
    rule = iter(range(1, 100))
    chosen = [n for n, c in nets.most_common() if c >= 3 and n not in ham_nets][:4]
    for n in chosen:
        spec.client_access.append(f"{n} REJECT listed network rule R{next(rule):04d}")
    if not any(_DYNAMIC.search(it.msg.hop.client_name) for it in ham):
        spec.client_hostname_access.append(
            f"/{_DYNAMIC.pattern}/ REJECT dynamic client rDNS rule R{next(rule):04d}")
    me = re.escape(spec.myhostname) + "|" + re.escape(spec.mydomain)
    spec.helo_access.append(f"/^({me})$/ REJECT forged HELO rule R{next(rule):04d}")
    spec.helo_access.append(
        rf"/^\[?[0-9]+(\.[0-9]+){{3}}\]?$/ REJECT bare IP HELO rule R{next(rule):04d}")
    ham_domains = {_domain(it.msg.sender) for it in ham}
    senders = Counter(_domain(it.msg.sender) for it in spam)
    for dom, c in senders.most_common():
        if c >= 3 and dom and dom not in ham_domains and dom not in PROVIDERS:
            spec.sender_access.append(f"{dom} REJECT listed sender domain rule R{next(rule):04d}")
            if len(spec.sender_access) >= 3:
                break
    subjects = [re.search(rb"^Subject:(.*)$", it.msg.data, re.M | re.I) for it in ham]
    ham_subjects = " ".join(s.group(1).decode("latin-1").lower() for s in subjects if s)
    for word in ("mortgage", "viagra", "casino", "weight loss"):
        if word not in ham_subjects:
            spec.header_checks.append(f"/^Subject:.*{word}/ REJECT spam subject rule "
                                      f"R{next(rule):04d}")
    plan.notes["rules"] = (spec.client_access + spec.client_hostname_access + spec.helo_access
                           + spec.sender_access + spec.header_checks)
