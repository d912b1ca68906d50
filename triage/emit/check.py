"""Checking rendered maps before anything is written: with triage's matcher, and with the
real ``postmap -q`` when Postfix is installed.

    report = check_report(files, rules, sender_table, postfix)
    report.problems    # refuse to write: a line without a rule id, a rule whose own line
                       # does not answer its evidence, postmap disagreeing or warning
    report.notes       # worth showing, not an error: evidence answered first by another
                       # (overlapping) rule, keys that cannot be asked to postmap

Each rule's probe keys (its evidence) are looked up in a table holding only that rule's own
line: that is what proves the line is escaped right and means what the rule says. In the
whole map a probe must still get at least the rule's own action (REJECT for an active rule,
WARN or REJECT for a trial one); answered first by another rule it is noted as shadowed.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from triage.emit.postfix import action_verb, shielding_trials
from triage.emit.tables import Entry, Table, is_utf8, parse_table
from triage.errors import InstallError, RuleError
from triage.model import Rule, RuleKind, TableType

if TYPE_CHECKING:
    from triage.emit.install import Postfix

_RULE_ID = re.compile(r"\brule (R\d{4,})\Z")


def table_of(kind: RuleKind, sender_table: TableType | str = TableType.HASH) -> TableType:
    return TableType(sender_table) if kind is RuleKind.SENDER_DOMAIN else kind.table


def kind_of(name: str) -> RuleKind:
    return next(k for k in RuleKind if k.map_name == name)


def probe_keys(rule: Rule) -> list[str]:
    """Lookup keys the rule must answer: its evidence samples, or the key itself when that
    is a literal (an address, a domain)."""
    ev = rule.evidence
    if rule.kind is RuleKind.CLIENT_CIDR:
        return [*ev.ips, rule.key.split("/")[0]]
    if rule.kind is RuleKind.SENDER_DOMAIN:
        return [rule.key]
    if rule.kind is RuleKind.HELO:
        return list(ev.helos)
    return []


def query_refusal(key: str) -> str | None:
    """Why ``key`` cannot be asked with ``postmap -q -`` (one key per input line), or None."""
    if "\n" in key:
        return "it holds a newline, and postmap -q - reads one key per line"
    if "\0" in key:
        return "it holds a NUL, where Postfix cuts the key"
    return None


@dataclass(frozen=True)
class Problem:
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class CheckReport:
    """``problems`` stop the maps from being written; ``notes`` are for the operator."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)


def rule_of(value: str | None) -> str | None:
    """The rule id at the end of an emitted action (``... by rule R0042``), or None."""
    m = _RULE_ID.search(value or "")
    return m.group(1) if m else None


def _strength(value: str | None) -> int:
    """2 for a refusal (REJECT, 4xx, 5xx), 1 for WARN, 0 for anything else or no answer."""
    verb = action_verb(value)
    if verb == "REJECT" or verb[:1] in ("4", "5"):
        return 2
    return 1 if verb == "WARN" else 0


def check_maps(files: dict[str, str], rules: Iterable[Rule],
               sender_table: TableType | str = TableType.HASH,
               postfix: Postfix | None = None) -> list[Problem]:
    """The problems of ``check_report`` (empty = the maps may be written)."""
    return check_report(files, rules, sender_table, postfix).problems


def check_report(files: dict[str, str], rules: Iterable[Rule],
                 sender_table: TableType | str = TableType.HASH,
                 postfix: Postfix | None = None) -> CheckReport:
    """Check rendered maps: every emitted rule has one line carrying its id; its probe keys
    are answered by that line alone (our matcher) and get at least its action from the
    whole map; when ``postfix`` is given and postmap installed, ``postmap -q`` reads each
    file without a warning and gives our matcher's answers, for the whole map and for the
    own lines of every rule whose probes another rule answers first."""
    rules = [r for r in rules if r.state.emitted]
    report = CheckReport()
    with tempfile.TemporaryDirectory(prefix="triage-check-") as tmp:
        for name, text in sorted(files.items()):
            kind = kind_of(name)
            mine = [r for r in rules if r.kind is kind]
            if kind is RuleKind.SENDER_DOMAIN:  # trials render_map leaves out, and why
                left_out = shielding_trials(mine)
                report.notes.extend(Problem(name, f"{rid} (trial) left out: {why}")
                                    for rid, why in left_out.items())
                mine = [r for r in mine if r.id not in left_out]
            _check_file(name, text, table_of(kind, sender_table), mine, postfix, Path(tmp),
                        report)
    return report


def _own_lines(name: str, ours: Table, mine: list[Rule], report: CheckReport
               ) -> dict[str, list[Entry]]:
    """Each rule's lines, by rule id; a problem for a line naming no rule of this map and
    for a rule without exactly one line."""
    if len(ours.entries) != len(mine):
        report.problems.append(Problem(name, f"{len(ours.entries)} lines for {len(mine)} "
                                       "rules"))
    ids = {r.id for r in mine}
    lines: dict[str, list[Entry]] = {}
    for e in ours.entries:
        rid = rule_of(e.value)
        if rid not in ids:
            report.problems.append(Problem(name, f"line {e.line} carries no rule id of this "
                                           f"map: {e.value}"))
            continue
        lines.setdefault(rid, []).append(e)
    for r in mine:
        if len(lines.get(r.id, [])) != 1:
            report.problems.append(Problem(name, f"{r.id} has {len(lines.get(r.id, []))} "
                                           "lines, not one"))
    return lines


def _check_file(name: str, text: str, table: TableType, mine: list[Rule],
                postfix: Postfix | None, tmp: Path, report: CheckReport) -> None:
    try:
        ours = parse_table(text, table, name)
    except RuleError as exc:  # e.g. a delimiter left unescaped: a flag Postfix does not know
        report.problems.append(Problem(name, f"cannot read the rendered map: {exc.message}"))
        return
    lines = _own_lines(name, ours, mine, report)
    probes: list[str] = []
    shadowed: list[tuple[Rule, Table, list[str]]] = []
    for r in mine:
        own = ours.subset(lines.get(r.id, []))
        keys, is_shadowed = _probe_rule(name, r, own, ours, report)
        probes += keys
        if is_shadowed:
            shadowed.append((r, own, keys))
    if postfix is None or not postfix.available():
        return
    _compare_with_postmap(name, text, table, ours, probes or ["probe.invalid"], postfix,
                          tmp / name, report)
    for r, own, keys in shadowed:
        own_text = "".join(f"{e.pattern} {e.value}\n" for e in own.entries)
        _compare_with_postmap(f"{name} ({r.id}'s own line)", own_text, table, own, keys,
                              postfix, tmp / f"{name}.{r.id}", report)


def _probe_rule(name: str, r: Rule, own: Table, ours: Table, report: CheckReport
                ) -> tuple[list[str], bool]:
    """Check ``r``'s probe keys against its own line (``own``) and the whole map (``ours``):
    (the keys checked, whether another rule answers one of them first)."""
    want = r.effective_action().verb.value
    keys, is_shadowed = [], False
    for key in dict.fromkeys(probe_keys(r)):
        if not is_utf8(key):
            report.notes.append(Problem(name, f"{r.id}: evidence {key!r} not checked: "
                                        "not UTF-8, Postfix never looks such keys up"))
            continue
        got = own.lookup(key)
        if rule_of(got) != r.id or action_verb(got) != want:
            report.problems.append(Problem(name, f"{r.id}: its own line answers {key!r} "
                                           f"with {got!r}, not {want}"))
            continue
        full = ours.lookup(key)
        if _strength(full) < _strength(got):
            report.problems.append(Problem(name, f"{r.id}: {key!r} gets {full!r} from the "
                                           f"whole map, weaker than its {want}"))
        elif rule_of(full) != r.id:
            is_shadowed = True
            report.notes.append(Problem(name, f"{r.id}: {key!r} is answered first by "
                                        f"{rule_of(full)} ({full}): shadowed"))
        keys.append(key)
    return keys, is_shadowed


def _compare_with_postmap(label: str, text: str, table: TableType, ours: Table,
                          keys: list[str], postfix: Postfix, path: Path,
                          report: CheckReport) -> None:
    """Write ``text`` to ``path``, ask postmap for ``keys`` and compare with ``ours``."""
    path.write_text(text, encoding="utf-8")
    try:
        postfix.build(table, path)
    except InstallError as exc:
        report.problems.append(Problem(label, exc.message))
        return
    askable = []
    for key in dict.fromkeys(keys):
        why = query_refusal(key)
        if why:
            report.notes.append(Problem(label, f"{key!r} not asked to postmap: {why}"))
        else:
            askable.append(key)
    found, warns = postfix.postmap_query(table, path, askable)
    report.problems.extend(Problem(label, f"postmap: {w}") for w in warns)
    for key in askable:
        theirs, mine = found.get(key), ours.lookup(key)
        if theirs != mine:
            report.problems.append(Problem(label, f"postmap -q {key!r} gives {theirs!r}, "
                                           f"our matcher {mine!r}"))
