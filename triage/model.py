"""Small frozen records shared by the stages: rules, their kinds, states, actions and evidence.

A rule is data. Its ``kind`` says where Postfix looks it up (the restriction hook) and in what
kind of table; its ``action`` is rendered into the map with the rule id in the text, so a reject
or warn line in mail.log names the rule that fired (see ``triage.emit.postfix``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

RULE_ID_RE = re.compile(r"R\d{4,}\Z")


class TableType(StrEnum):
    """Postfix lookup table types that triage writes."""

    CIDR = "cidr"
    PCRE = "pcre"
    HASH = "hash"
    TEXTHASH = "texthash"


class RuleKind(StrEnum):
    """What a rule's key is matched against, and so where Postfix looks it up."""

    CLIENT_CIDR = "client_cidr"      # client address or network; key "192.0.2.0/24"
    CLIENT_NAME = "client_name"      # client rDNS name; key a regex (PCRE subset)
    HELO = "helo"                    # HELO/EHLO argument; key a regex
    SENDER_DOMAIN = "sender_domain"  # envelope sender domain (and its subdomains); key a domain
    HEADER = "header"                # one message header line; key a regex "^Subject:..."

    @property
    def hook(self) -> str:
        """The Postfix restriction (or main.cf parameter) that consults this kind's map."""
        return _HOOKS[self][0]

    @property
    def table(self) -> TableType:
        """The table type emitted for this kind by default."""
        return _HOOKS[self][1]

    @property
    def tables(self) -> tuple[TableType, ...]:
        """All table types this kind may be emitted as (the first is the default)."""
        return _HOOKS[self][2]

    @property
    def map_name(self) -> str:
        """File name of this kind's map inside the maps directory (without a .db suffix)."""
        return _HOOKS[self][3]


_P, _C, _H, _T = TableType.PCRE, TableType.CIDR, TableType.HASH, TableType.TEXTHASH
_HOOKS: dict[RuleKind, tuple[str, TableType, tuple[TableType, ...], str]] = {
    RuleKind.CLIENT_CIDR: ("check_client_access", _C, (_C,), "client.cidr"),
    RuleKind.CLIENT_NAME: ("check_client_access", _P, (_P,), "client_name.pcre"),
    RuleKind.HELO: ("check_helo_access", _P, (_P,), "helo.pcre"),
    RuleKind.SENDER_DOMAIN: ("check_sender_access", _H, (_H, _T), "sender_domain"),
    RuleKind.HEADER: ("header_checks", _P, (_P,), "header_checks.pcre"),
}


class RuleState(StrEnum):
    """Life cycle: proposed -> trial (WARN) -> active (REJECT) -> retired;
    or proposed -> rejected (remembered, so it is not proposed again)."""

    PROPOSED = "proposed"
    TRIAL = "trial"
    ACTIVE = "active"
    REJECTED = "rejected"
    RETIRED = "retired"

    @property
    def emitted(self) -> bool:
        """Whether rules in this state are written to the Postfix maps."""
        return self in (RuleState.TRIAL, RuleState.ACTIVE)


class Verb(StrEnum):
    REJECT = "REJECT"
    WARN = "WARN"


@dataclass(frozen=True)
class Action:
    """What Postfix does on a match. The rule id is appended when the action is rendered.

    ``status`` is the enhanced status code (RFC 3463) put in front of the text of a REJECT;
    Postfix's reply code comes from access_map_reject_code (554) or header_checks (550).
    """

    verb: Verb = Verb.REJECT
    status: str = "5.7.1"
    text: str = "blocked"

    @classmethod
    def reject(cls, text: str = "blocked", status: str = "5.7.1") -> Action:
        return cls(Verb.REJECT, status, text)

    @classmethod
    def warn(cls) -> Action:
        return cls(Verb.WARN, "", "trial")


@dataclass(frozen=True)
class Evidence:
    """Why a rule exists: the campaign it came from and what the backtest found."""

    campaign: str = ""
    spam_hits: int = 0
    ham_hits: int = 0
    overlap_active: int = 0        # spam hits that rules in force refuse already
    messages: int = 0              # distinct spam messages covered
    days: int = 0                  # distinct days those messages arrived on
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    message_ids: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    senders: tuple[str, ...] = ()
    helos: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    """One blacklist rule. ``key`` is in the kind's own syntax (network, regex or domain);
    ``triage.emit.postfix.validate_key`` says which keys are acceptable."""

    id: str
    kind: RuleKind
    key: str
    action: Action = field(default_factory=Action)
    state: RuleState = RuleState.PROPOSED
    evidence: Evidence = field(default_factory=Evidence)
    approver: str = ""
    created: datetime | None = None
    approved: datetime | None = None
    expires: datetime | None = None
    note: str = ""

    def effective_action(self) -> Action:
        """The action as emitted: a rule on trial only warns, whatever its action says."""
        if self.state is RuleState.TRIAL:
            return Action.warn()
        return self.action


def rule_id(number: int) -> str:
    """``rule_id(42) == "R0042"``."""
    return f"R{number:04d}"


def rule_number(rid: str) -> int:
    """Inverse of ``rule_id``; raises ValueError for a malformed id."""
    if not RULE_ID_RE.match(rid):
        raise ValueError(f"not a rule id: {rid!r}")
    return int(rid[1:])
