"""The review of pending proposals as a state machine, with no terminal I/O.

    session = ReviewSession(book, approver="alice", retest=my_backtest)
    while (card := session.current()) is not None:
        outcome = session.decide(Choice.TRIAL)            # or ACTIVE, REJECT, SKIP, QUIT,
                                                          # or EDIT with key="^narrower$"
Each decision is written to the rulebook the moment it is made (one atomic file write), so an
interrupted review loses nothing. An edit changes the key, reruns the backtest through
``retest``, keeps only the evidence samples the new key matches (``keep_matching_samples``) and
is saved only when the new key still hits no ham; the card stays current so the person then
approves or rejects the edited rule. The CLI (triage/cli/review_cmd.py) draws the
cards and asks the questions; scripts pass a decisions file (``parse_decisions``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from triage.emit.postfix import render_line, sender_lookup_keys, validate_key
from triage.emit.tables import parse_table
from triage.errors import RuleError
from triage.model import Evidence, Rule, RuleKind, RuleState
from triage.rulebook import Rulebook

Retest = Callable[[Rule], Evidence]


class Choice(StrEnum):
    TRIAL = "trial"      # approve, WARN first (the default)
    ACTIVE = "active"    # approve, REJECT now
    REJECT = "reject"
    EDIT = "edit"
    SKIP = "skip"
    QUIT = "quit"
    HELP = "help"


# One-letter answers at the prompt, and the words a decisions file may use.
ALIASES: dict[str, Choice] = {
    "": Choice.TRIAL, "t": Choice.TRIAL, "a": Choice.TRIAL, "approve": Choice.TRIAL,
    "A": Choice.ACTIVE, "r": Choice.REJECT, "e": Choice.EDIT, "s": Choice.SKIP,
    "q": Choice.QUIT, "?": Choice.HELP, "h": Choice.HELP,
    **{c.value: c for c in Choice},
}

HELP = """\
t, Enter  approve as trial: the rule only warns (WARN) until the log shows no ham hit
A         approve as active: Postfix refuses (REJECT) from the next reload
r         reject: the proposal is remembered and not offered again unless it grows
e         edit the key (narrow a network, tighten a regex); the backtest reruns first
s         skip: decide later
q         quit: every decision so far is saved
?         this help"""


# The evidence sample list a kind's key is matched against (a header key: by its header
# name); the other lists describe the same messages but are not what the key looks at.
_SAMPLE_FIELDS = {RuleKind.CLIENT_CIDR: "ips", RuleKind.HELO: "helos",
                  RuleKind.SENDER_DOMAIN: "senders"}
_HEADER_SAMPLES = {"subject": "subjects", "message-id": "message_ids"}
_SAMPLE_NAMES = {"ips": "sample IPs", "helos": "sample HELOs", "senders": "sample senders",
                 "subjects": "sample subjects", "message_ids": "sample Message-IDs"}


def sample_field(rule: Rule) -> str | None:
    """The ``Evidence`` list of sample values that ``rule``'s key is matched against
    (``"ips"`` for a client_cidr rule, ``"subjects"`` for a ``^Subject:`` header rule ...),
    or None when the evidence keeps no samples of that field (client_name, other headers)."""
    if rule.kind is RuleKind.HEADER:
        name = rule.key[1:].partition(":")[0].lower()  # validate_key: "^Name:..."
        return _HEADER_SAMPLES.get(name)
    return _SAMPLE_FIELDS.get(rule.kind)


def _lookup_keys(field: str, value: str) -> list[str]:
    """What Postfix looks up for one sample value (the backtest's header lines)."""
    if field == "senders":
        return sender_lookup_keys(value)
    if field == "subjects":
        return [f"Subject: {value}"]
    if field == "message_ids":
        return [f"Message-ID: <{value.strip().strip('<>')}>"]
    return [value]


def matching_samples(rule: Rule, values: Iterable[str], field: str | None = None
                     ) -> tuple[str, ...]:
    """The ``values`` (samples of ``field``, by default ``sample_field(rule)``) that the
    rule's key matches, with the emitter's matcher for the rule's map type.

    >>> r = Rule("R0001", RuleKind.CLIENT_CIDR, "192.0.2.0/25")
    >>> matching_samples(r, ["192.0.2.7", "192.0.2.200"])
    ('192.0.2.7',)
    """
    field = field or sample_field(rule) or ""
    table = parse_table(render_line(replace(rule, state=RuleState.ACTIVE)), rule.kind.table)
    return tuple(v for v in values
                 if any(table.lookup(k) is not None for k in _lookup_keys(field, v)))


def keep_matching_samples(rule: Rule) -> tuple[Evidence, str]:
    """The rule's evidence without the samples its (edited) key no longer matches, and a
    note for the person when some were dropped ("" otherwise). The emitter checks every
    sample against the map, so a stale one would stop it writing any map."""
    field = sample_field(rule)
    if field is None:
        return rule.evidence, ""
    values: tuple[str, ...] = getattr(rule.evidence, field)
    kept = matching_samples(rule, values, field)
    if len(kept) == len(values):
        return rule.evidence, ""
    name = _SAMPLE_NAMES[field]
    note = (f"none of the {len(values)} {name} match the new key (dropped them)" if not kept
            else f"dropped {len(values) - len(kept)} of {len(values)} {name} the new key "
            "does not match")
    changes: dict[str, Any] = {field: kept}
    return replace(rule.evidence, **changes), note


def parse_choice(answer: str) -> Choice:
    """A prompt answer or decisions-file word -> Choice (RuleError when unknown)."""
    a = answer.strip()
    choice = ALIASES.get(a) or ALIASES.get(a.lower())
    if choice is None:
        raise RuleError(f"unknown answer {answer!r} (t, A, r, e, s, q or ?)")
    return choice


@dataclass(frozen=True)
class Card:
    """What a person needs to decide on one proposal."""

    rule: Rule
    trial_line: str       # the map line as it will stand if approved as trial
    active_line: str      # ... and if approved as active
    position: int         # 1-based, among the proposals of this session
    total: int
    note: str = ""        # e.g. the last edit's result


@dataclass(frozen=True)
class Outcome:
    rule_id: str
    choice: Choice
    saved: bool
    message: str


@dataclass
class ReviewSession:
    book: Rulebook
    approver: str = ""
    retest: Retest | None = None
    now: Callable[[], datetime | None] = lambda: None
    pending: list[str] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    finished: bool = False
    _index: int = 0
    _note: str = ""

    def __post_init__(self) -> None:
        if not self.pending:
            self.pending = [r.id for r in self.book.in_state(RuleState.PROPOSED)]

    def current(self) -> Card | None:
        """The card to decide on, or None when the session is over."""
        while not self.finished and self._index < len(self.pending):
            rule = self.book.get(self.pending[self._index])
            if rule.state is RuleState.PROPOSED:
                return Card(rule, render_line(replace(rule, state=RuleState.TRIAL)),
                            render_line(replace(rule, state=RuleState.ACTIVE)),
                            self._index + 1, len(self.pending), self._note)
            self._index += 1  # decided elsewhere meanwhile
        return None

    def _next(self, outcome: Outcome) -> Outcome:
        self.outcomes.append(outcome)
        self._index += 1
        self._note = ""
        return outcome

    def decide(self, choice: Choice, key: str | None = None) -> Outcome:
        """Apply one decision to the current card and save it at once."""
        card = self.current()
        if card is None:
            raise RuleError("no proposal left to review")
        rid = card.rule.id
        if choice is Choice.HELP:
            return Outcome(rid, choice, False, HELP)
        if choice is Choice.QUIT:
            self.finished = True
            return Outcome(rid, choice, False, "review stopped; decisions so far are saved")
        if choice is Choice.SKIP:
            return self._next(Outcome(rid, choice, False, f"{rid} skipped"))
        if choice is Choice.EDIT:
            return self._edit(card.rule, key)
        state = {Choice.TRIAL: RuleState.TRIAL, Choice.ACTIVE: RuleState.ACTIVE,
                 Choice.REJECT: RuleState.REJECTED}[choice]
        if state is not RuleState.REJECTED and card.rule.evidence.ham_hits > 0:
            return Outcome(rid, choice, False, f"{rid} hits ham "
                           f"({card.rule.evidence.ham_hits}); edit or reject it")
        self.book.set_state(rid, state, approver=self.approver, now=self.now())
        return self._next(Outcome(rid, choice, True, f"{rid} {state}"))

    def _edit(self, rule: Rule, key: str | None) -> Outcome:
        if not key:
            return Outcome(rule.id, Choice.EDIT, False, "edit needs the new key")
        try:
            new_key = validate_key(rule.kind, key)
        except RuleError as exc:
            self._note = exc.message
            return Outcome(rule.id, Choice.EDIT, False, exc.message)
        edited = replace(rule, key=new_key)
        if self.retest is not None:
            edited = replace(edited, evidence=self.retest(edited))
        evidence, dropped = keep_matching_samples(edited)
        edited = replace(edited, evidence=evidence)
        if edited.evidence.ham_hits > 0:
            self._note = f"{new_key!r} hits ham ({edited.evidence.ham_hits}); not saved"
            return Outcome(rule.id, Choice.EDIT, False, self._note)
        try:
            self.book.save(edited)
        except RuleError as exc:
            self._note = exc.message
            return Outcome(rule.id, Choice.EDIT, False, exc.message)
        self._note = (f"key changed to {new_key!r}: {edited.evidence.spam_hits} spam hits, "
                      f"0 ham hits" + (f"; {dropped}" if dropped else ""))
        out = Outcome(rule.id, Choice.EDIT, True, self._note)
        self.outcomes.append(out)
        return out

    def goto(self, rid: str) -> None:
        """Make ``rid`` the current card (for scripted decisions)."""
        if rid not in self.pending or self.book.get(rid).state is not RuleState.PROPOSED:
            raise RuleError(f"{rid} is not a pending proposal")
        self._index = self.pending.index(rid)
        self.finished = False
        self._note = ""

    def approve_all(self, choice: Choice = Choice.TRIAL) -> list[Outcome]:
        """Accept every pending proposal as proposed (``--approve-all``)."""
        out = []
        while self.current() is not None:
            out.append(self.decide(choice))
            if not out[-1].saved:  # hits ham: leave it pending
                self._next(Outcome(out[-1].rule_id, Choice.SKIP, False, out[-1].message))
        return out


def parse_decisions(text: str, source: str = "<decisions>") -> list[tuple[str, Choice, str]]:
    """A decisions file: ``R0042 trial``, ``R0043 reject``, ``R0044 edit ^new\\.key$``, one
    per line; a line starting with ``#`` is a comment (a key may contain ``#``).
    Returns (rule id, choice, key)."""
    out = []
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 2:
            raise RuleError("want 'RULE_ID CHOICE [KEY]'", file=source, line=no)
        try:
            choice = parse_choice(parts[1])
        except RuleError as exc:
            raise RuleError(exc.message, file=source, line=no) from None
        if choice is Choice.EDIT and len(parts) < 3:
            raise RuleError("edit needs the new key", file=source, line=no)
        out.append((parts[0], choice, parts[2] if len(parts) > 2 else ""))
    return out


def apply_decisions(session: ReviewSession, decisions: Iterable[tuple[str, Choice, str]]
                    ) -> list[Outcome]:
    """Apply scripted decisions by rule id (proposals not named stay pending)."""
    out = []
    for rid, choice, key in decisions:
        session.goto(rid)
        out.append(session.decide(choice, key or None))
    return out
