"""The rulebook: a directory of TOML files, one per rule (``R0042.toml``), git-friendly.

    book = load_rulebook(cfg.rulebook_dir())       # validated; RuleFileError names file:line
    rule = book.propose(RuleKind.CLIENT_CIDR, "192.0.2.0/24", evidence=ev)   # new id, saved
    book.set_state(rule.id, RuleState.TRIAL, approver="alice")

Every rule file is written atomically (temp file, fsync, rename) and its previous version is
kept in ``.backup/``. Ids are never reused: ``next-id`` remembers the next number even if a
rule file is deleted. Rejected proposals stay in the book, so the proposer can ask
``should_repropose`` before offering the same key again. Fields are written in a fixed order and
lists keep their order, so a git diff of the directory shows only what changed.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from triage.atomicfile import remove_stale_temps, write_atomic
from triage.emit.postfix import validate_key
from triage.errors import RuleError
from triage.model import (
    Action,
    Evidence,
    Rule,
    RuleKind,
    RuleState,
    Verb,
    rule_id,
    rule_number,
)


class RuleFileError(RuleError):
    """A rule file is not valid; ``file`` and ``line`` say where."""


# Which state changes a person (or the weekly loop) may make.
TRANSITIONS: dict[RuleState, tuple[RuleState, ...]] = {
    RuleState.PROPOSED: (RuleState.TRIAL, RuleState.ACTIVE, RuleState.REJECTED),
    RuleState.TRIAL: (RuleState.ACTIVE, RuleState.RETIRED, RuleState.REJECTED),
    RuleState.ACTIVE: (RuleState.RETIRED, RuleState.TRIAL),
    RuleState.REJECTED: (RuleState.PROPOSED,),
    RuleState.RETIRED: (RuleState.TRIAL, RuleState.ACTIVE),
}

_TOP = ("id", "kind", "key", "state", "approver", "created", "approved", "expires", "note")
_TIMES = ("created", "approved", "expires")
_EVIDENCE_INTS = ("spam_hits", "ham_hits", "overlap_active", "messages", "days")
_EVIDENCE_LISTS = ("message_ids", "subjects", "senders", "helos", "ips")
_FILE_RE = re.compile(r"R\d{4,}\.toml\Z")
# A temp file of a rule file or next-id write (see atomicfile) this old was left by a killed
# process: nothing else keeps one open that long. (Rule files are written without the
# scan's lock, by `triage review` too, so a younger one may still be in use.)
STALE_TEMP_SECONDS = 3600.0


# -- TOML out -----------------------------------------------------------------------------------
def _toml_str(s: str) -> str:
    out = ['"']
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif 0xD800 <= ord(c) <= 0xDFFF:
            # a lone surrogate (an undecodable byte of a sample) has no TOML form
            out.append("\\ufffd")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, datetime):
        if v.tzinfo is None:
            raise RuleError(f"naive datetime {v} in a rule (times must carry a zone)")
        return v.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def rule_to_toml(rule: Rule) -> str:
    """The text of a rule file (fixed field order; empty values left out)."""
    lines = [f"# triage rule {rule.id}: {rule.kind} ({rule.kind.hook})"]
    for name in _TOP:
        v = getattr(rule, name)
        if v is None or v == "":
            continue
        lines.append(f"{name} = {_toml_value(str(v) if name in ('kind', 'state') else v)}")
    a = rule.action
    lines += ["", "[action]", f"verb = {_toml_value(str(a.verb))}"]
    if a.verb is Verb.REJECT:
        lines += [f"status = {_toml_value(a.status)}", f"text = {_toml_value(a.text)}"]
    lines += ["", "[evidence]"]
    for f in fields(Evidence):
        v = getattr(rule.evidence, f.name)
        if v is None or v == "" or v == ():
            continue
        lines.append(f"{f.name} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


# -- TOML in ------------------------------------------------------------------------------------
def _line_of(text: str, key: str, section: str | None = None) -> int | None:
    current = None
    for no, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith("["):
            current = s.strip("[] ")
        elif current == section and re.match(rf"{re.escape(key)}\s*=", s):
            return no
    return None


def rule_from_toml(text: str, path: Path) -> Rule:
    """Parse and validate one rule file; errors carry the file and, when known, the line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise RuleFileError(f"not valid TOML: {exc}", file=path,
                            line=int(m.group(1)) if m else None) from exc

    def fail(msg: str, key: str | None = None, section: str | None = None) -> RuleFileError:
        return RuleFileError(msg, file=path, line=_line_of(text, key, section) if key else None)

    allowed = {*_TOP, "action", "evidence"}
    for k in data:
        if k not in allowed:
            raise fail(f"unknown field {k!r}", k)
    for k in ("id", "kind", "key", "state"):
        if not isinstance(data.get(k), str):
            raise fail(f"field {k!r} must be a string", k if k in data else None)
    rid = data["id"]
    try:
        rule_number(rid)
    except ValueError:
        raise fail(f"bad rule id {rid!r} (want R0001...)", "id") from None
    if path.name != f"{rid}.toml":
        raise fail(f"rule {rid} is in a file named {path.name}", "id")
    try:
        kind = RuleKind(data["kind"])
    except ValueError:
        raise fail(f"unknown kind {data['kind']!r} (one of {', '.join(RuleKind)})",
                   "kind") from None
    try:
        state = RuleState(data["state"])
    except ValueError:
        raise fail(f"unknown state {data['state']!r} (one of {', '.join(RuleState)})",
                   "state") from None
    try:
        key = validate_key(kind, data["key"])
    except RuleError as exc:
        raise fail(exc.message, "key") from None
    if key != data["key"]:
        raise fail(f"key {data['key']!r} should be written {key!r}", "key")
    times: dict[str, datetime | None] = {}
    for k in _TIMES:
        v = data.get(k)
        if v is not None and not (isinstance(v, datetime) and v.tzinfo is not None):
            raise fail(f"{k} must be a date-time with a zone (e.g. 2026-01-05T10:00:00Z)", k)
        times[k] = v
    for k in ("approver", "note"):
        if not isinstance(data.get(k, ""), str):
            raise fail(f"field {k!r} must be a string", k)
    action = _action(data.get("action", {}), fail)
    evidence = _evidence(data.get("evidence", {}), fail)
    return Rule(rid, kind, key, action, state, evidence, data.get("approver", ""),
                times["created"], times["approved"], times["expires"], data.get("note", ""))


def _action(d: Any, fail: Any) -> Action:
    if not isinstance(d, dict):
        raise fail("[action] must be a table", "action")
    unknown = set(d) - {"verb", "status", "text"}
    if unknown:
        raise fail(f"unknown field {sorted(unknown)[0]!r}", sorted(unknown)[0], "action")
    # A hand-edited file may hold any TOML value: each field's type is checked before use.
    for k in ("verb", "status", "text"):
        if k in d and not isinstance(d[k], str):
            raise fail(f"field {k!r} in [action] must be a string, not "
                       f"{_toml_type(d[k])}", k, "action")
    try:
        verb = Verb(d.get("verb", "REJECT"))
    except ValueError:
        raise fail(f"unknown verb {d.get('verb')!r} (REJECT or WARN)", "verb", "action") from None
    if verb is Verb.WARN:
        return Action.warn()
    action = Action(verb, d.get("status", "5.7.1"), d.get("text", "blocked"))
    from triage.emit.postfix import render_action

    try:
        render_action(replace(action, text="blocked"), "R0000")
    except RuleError as exc:
        raise fail(exc.message.removeprefix("R0000: "), "status", "action") from None
    try:
        render_action(action, "R0000")
    except RuleError as exc:
        raise fail(exc.message.removeprefix("R0000: "), "text", "action") from None
    return action


def _toml_type(v: object) -> str:
    """How a TOML value's type reads in an error message."""
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "a table"
    return "a date or time" if not isinstance(v, str) else "a string"


def _evidence(d: Any, fail: Any) -> Evidence:
    if not isinstance(d, dict):
        raise fail("[evidence] must be a table", "evidence")
    kw: dict[str, Any] = {}
    for k, v in d.items():
        if k in _EVIDENCE_INTS:
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise fail(f"{k} must be a count (integer >= 0)", k, "evidence")
        elif k in _EVIDENCE_LISTS:
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise fail(f"{k} must be a list of strings", k, "evidence")
            v = tuple(v)
        elif k in ("first_seen", "last_seen"):
            if not (isinstance(v, datetime) and v.tzinfo is not None):
                raise fail(f"{k} must be a date-time with a zone", k, "evidence")
        elif k == "campaign":
            if not isinstance(v, str):
                raise fail("campaign must be a string", k, "evidence")
        else:
            raise fail(f"unknown field {k!r}", k, "evidence")
        kw[k] = v
    return Evidence(**kw)


# -- the book -----------------------------------------------------------------------------------
def should_repropose(rejected: Evidence, new: Evidence, factor: float = 2.0,
                     min_more: int = 5) -> bool:
    """Whether a proposal that a person rejected may be offered again: only when its evidence
    grew substantially, i.e. at least ``factor`` times the distinct messages and ``min_more``
    more of them, or ``factor`` times the distinct days. Any ham hit keeps it out."""
    if new.ham_hits > 0:
        return False
    grew_msgs = new.messages >= factor * rejected.messages and \
        new.messages - rejected.messages >= min_more
    grew_days = rejected.days > 0 and new.days >= factor * rejected.days
    return grew_msgs or grew_days


@dataclass
class Rulebook:
    """The rules of one directory, by id. Changes go through methods that save at once."""

    directory: Path
    rules: dict[str, Rule]
    _swept: bool = field(default=False, init=False, repr=False, compare=False)

    def __iter__(self) -> Iterator[Rule]:
        return iter(sorted(self.rules.values(), key=lambda r: rule_number(r.id)))

    def __len__(self) -> int:
        return len(self.rules)

    def get(self, rid: str) -> Rule:
        if rid not in self.rules:
            raise RuleError(f"no rule {rid} in {self.directory}")
        return self.rules[rid]

    def in_state(self, *states: RuleState) -> list[Rule]:
        return [r for r in self if r.state in states]

    def emitted(self) -> list[Rule]:
        """The rules that go into the Postfix maps (trial and active)."""
        return [r for r in self if r.state.emitted]

    def find(self, kind: RuleKind, key: str) -> Rule | None:
        """The rule with this kind and key (any state), if the book has one."""
        k = validate_key(kind, key)
        return next((r for r in self if r.kind is kind and r.key == k), None)

    def allocate_id(self) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sweep_temps()
        counter = self.directory / "next-id"
        n = 1
        if counter.exists():
            text = counter.read_text(encoding="utf-8", errors="replace").strip()
            if not text.isascii() or not text.isdigit():
                raise RuleFileError(f"want the next rule number, not {text[:20]!r}",
                                    file=counter, line=1)
            n = int(text)
        n = max([n, *(rule_number(r) + 1 for r in self.rules)])
        write_atomic(counter, f"{n + 1}\n")
        return rule_id(n)

    def save(self, rule: Rule) -> Rule:
        """Write one rule file (atomically, with the previous version in .backup/)."""
        validate_key(rule.kind, rule.key)
        other = next((r for r in self.rules.values() if r.id != rule.id and r.kind is rule.kind
                      and r.key == rule.key), None)
        if other is not None:
            raise RuleError(f"{other.id} already has {rule.kind} key {rule.key!r}")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sweep_temps()
        write_atomic(self.directory / f"{rule.id}.toml", rule_to_toml(rule),
                     backup_dir=self.directory / ".backup")
        self.rules[rule.id] = rule
        return rule

    def _sweep_temps(self) -> None:
        """Once per book, before it writes: remove the temp files of rule files and of
        ``next-id`` (here and in ``.backup/``) that a killed process left an hour ago or
        more."""
        if self._swept:
            return
        self._swept = True

        def ours(name: str) -> bool:
            return name == "next-id" or _FILE_RE.match(name) is not None

        for directory in (self.directory, self.directory / ".backup"):
            remove_stale_temps(directory, ours, older_than=STALE_TEMP_SECONDS)

    def propose(self, kind: RuleKind, key: str, *, action: Action | None = None,
                evidence: Evidence | None = None, note: str = "",
                now: datetime | None = None) -> Rule:
        """Add a new proposal with a fresh id (or return the existing rule for that key)."""
        key = validate_key(kind, key)
        existing = self.find(kind, key)
        if existing is not None:
            return existing
        rule = Rule(self.allocate_id(), kind, key, action or Action.reject(),
                    RuleState.PROPOSED, evidence or Evidence(), "",
                    now or datetime.now(UTC).replace(microsecond=0), note=note)
        return self.save(rule)

    def set_state(self, rid: str, state: RuleState, *, approver: str = "",
                  now: datetime | None = None, note: str | None = None) -> Rule:
        """Move a rule to ``state`` (as TRANSITIONS allow) and save it."""
        rule = self.get(rid)
        if state is not rule.state and state not in TRANSITIONS[rule.state]:
            raise RuleError(f"{rid} is {rule.state}; it cannot become {state}")
        changes: dict[str, Any] = {"state": state}
        if state in (RuleState.TRIAL, RuleState.ACTIVE):
            changes["approved"] = now or datetime.now(UTC).replace(microsecond=0)
            changes["approver"] = approver or rule.approver
        if note is not None:
            changes["note"] = note
        return self.save(replace(rule, **changes))


class TrialResult(Protocol):
    """What the weekly feedback says about a rule (``triage.feedback.RuleFeedback`` fits).
    Read-only members, so frozen dataclasses match too."""

    @property
    def rule_id(self) -> str: ...
    @property
    def ham_hits(self) -> int: ...
    @property
    def promotable(self) -> bool: ...


def promote_trials(book: Rulebook, feedback: Iterable[TrialResult], approver: str = "triage",
                   now: datetime | None = None) -> list[Rule]:
    """Trial rules whose trial the log passed (promotable, no ham hit) become active, with a
    note; any other rule is left alone. Returns the promoted rules (already saved)."""
    promoted = []
    for fb in feedback:
        rule = book.rules.get(fb.rule_id)
        if rule is None or rule.state is not RuleState.TRIAL or fb.ham_hits or not fb.promotable:
            continue
        note = (rule.note + "; " if rule.note else "") + "trial passed: no ham hit in the log"
        promoted.append(book.set_state(rule.id, RuleState.ACTIVE, approver=approver, now=now,
                                       note=note))
    return promoted


def load_rulebook(directory: Path) -> Rulebook:
    """Read and validate every ``R*.toml`` in ``directory`` (a missing directory is an empty
    book). Two rules with the same kind and key are an error."""
    directory = Path(directory).expanduser()
    rules: dict[str, Rule] = {}
    seen: dict[tuple[RuleKind, str], str] = {}
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            if not _FILE_RE.match(path.name):
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise RuleFileError(f"cannot read: {exc}", file=path) from exc
            rule = rule_from_toml(text, path)
            if (rule.kind, rule.key) in seen:
                raise RuleFileError(f"same {rule.kind} key as {seen[rule.kind, rule.key]}",
                                    file=path, line=_line_of(text, "key"))
            seen[rule.kind, rule.key] = rule.id
            rules[rule.id] = rule
    return Rulebook(directory, rules)


def save_rules(directory: Path, rules: Iterable[Rule]) -> Rulebook:
    """Write several rules into ``directory`` (e.g. from a script or a test)."""
    book = load_rulebook(directory)
    for r in rules:
        book.save(r)
    return book
