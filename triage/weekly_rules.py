"""The scan's rule steps: new proposals from the history into the rulebook, and what the log
says about the rules already in the maps.

    report = propose_from_history(store, book, cfg)    # stored as `proposed` rules
    fb = rule_feedback(store, book.emitted(), cfg)      # hits, promotable, stale, ham

Both read the history committed by :func:`triage.scan.scan`; neither prints. The person
decides later (``triage review`` or the review at the end of ``triage scan``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from triage.config import Config
from triage.feedback import RuleFeedback, assess_counts, ham_counts, hit_totals
from triage.model import Evidence, Rule, RuleState
from triage.rulebook import Rulebook, should_repropose
from triage.store import NO_WEEK, Store
from triage.weekly import all_weeks

if TYPE_CHECKING:  # imported where used: the feedback of a scan with nothing new needs none
    import pandas as pd

    from triage.propose import ProposeOptions

__all__ = ["ProposalReport", "feedback_json", "history_retest", "iso_week",
           "propose_from_history", "rule_feedback"]

# Log tables the proposer reads (the shield's known-good traffic, the backtest's attempts).
_LOG_TABLES = ("sessions", "messages", "deliveries", "rejects")


@dataclass
class ProposalReport:
    """What one proposal run changed in the rulebook, and the campaigns it saw.

    ``new``: stored with a fresh id. ``renewed``: rejected before, but the evidence grew
    substantially (``rulebook.should_repropose``), so offered again. ``refreshed``: still
    pending from an earlier scan, evidence brought up to date. ``kept_out``: ids of rejected
    or retired rules the proposer found again and that are not offered again.
    ``campaigns``: one dict per campaign of the leaked spam whose first message falls in
    ``week`` (the new campaigns; two messages or more), with the ids of the proposals that
    cover it; ``single_messages``: how many new leaked messages share nothing with others.
    """

    week: str | None
    new: list[Rule] = field(default_factory=list)
    renewed: list[Rule] = field(default_factory=list)
    refreshed: list[Rule] = field(default_factory=list)
    kept_out: list[str] = field(default_factory=list)
    campaigns: list[dict[str, Any]] = field(default_factory=list)
    single_messages: int = 0

    @property
    def offered(self) -> list[Rule]:
        """The proposals this run put before the reviewer (new and renewed)."""
        return [*self.new, *self.renewed]

    def to_json(self) -> dict[str, Any]:
        def rule(r: Rule) -> dict[str, Any]:
            ev = r.evidence
            return {"id": r.id, "kind": str(r.kind), "key": r.key, "messages": ev.messages,
                    "days": ev.days, "spam_hits": ev.spam_hits, "ham_hits": ev.ham_hits,
                    "campaign": ev.campaign}

        return {"new": [rule(r) for r in self.new], "renewed": [rule(r) for r in self.renewed],
                "refreshed": [rule(r) for r in self.refreshed], "kept_out": self.kept_out}


def iso_week(t: datetime | pd.Timestamp) -> str:
    """``2025-W41`` for a time (the history's partition names: ISO weeks in UTC, so a time
    in another zone is converted first)."""
    if t.tzinfo is not None:
        t = t.astimezone(UTC)
    return t.strftime("%G-W%V")


def _recent_weeks(store: Store, table: str, since: datetime | None) -> list[str] | None:
    """The partitions of ``table`` from ``since``'s week on (None = all of them)."""
    if since is None:
        return None
    first = iso_week(since)
    weeks = [w for w in store.weeks(table) if w >= first]
    return [*weeks, NO_WEEK] if table == "mail" else weeks


def _history(store: Store, lookback_days: int, logs: bool = True
             ) -> tuple[pd.DataFrame, SimpleNamespace]:
    """The mail table and (``logs``) the log tables of the last ``lookback_days``, by ISO
    week; of the log tables only the columns the proposer reads (``_log_columns``);
    without ``logs`` the log tables are empty frames."""
    import pandas as pd

    weeks = sorted({w for t in ("mail", *_LOG_TABLES) for w in store.weeks(t)})
    since = None
    if weeks and lookback_days:
        year, week = weeks[-1].split("-W")
        latest = datetime.fromisocalendar(int(year), int(week), 1).replace(tzinfo=UTC)
        since = latest - timedelta(days=lookback_days)
    mail = store.read("mail", _recent_weeks(store, "mail", since)).to_pandas()
    tables = {t: store.read(t, _recent_weeks(store, t, since), columns=_log_columns(t),
                            missing_ok=True).to_pandas() if logs
              else pd.DataFrame() for t in _LOG_TABLES}
    return mail, SimpleNamespace(**tables)


def _log_columns(table: str) -> list[str]:
    """The columns of a log table the proposer reads: the shield's and ``log_rows``'."""
    from triage.backtest import LOG_ROW_COLUMNS
    from triage.shield import LOG_COLUMNS

    return list(dict.fromkeys([*LOG_COLUMNS.get(table, ()),
                               *LOG_ROW_COLUMNS.get(table, ())]))


def _options(cfg: Config, mail: pd.DataFrame) -> ProposeOptions:
    from triage.propose import ProposeOptions

    names = tuple(cfg.my_hostnames)
    if not names and "host" in mail:
        # the same fallback as the scan's trusted hop: syslog's short name stands for mx.*
        hosts = sorted({str(h).lower() for h in mail["host"].dropna()})
        names = tuple(p for h in hosts for p in (h, f"{h}.*"))
    return ProposeOptions(my_hostnames=names, trusted_relays=tuple(cfg.trusted_relays),
                          allowlist_files=cfg.allowlist_files())


def propose_from_history(store: Store, book: Rulebook, cfg: Config,
                         now: datetime | None = None,
                         options: ProposeOptions | None = None) -> ProposalReport:
    """Propose rules from the leaked spam in the history (spam folder rows that the rules
    in the maps, trial ones counted as refusing, would not refuse), against the ham rows
    and the log tables, and store them in ``book`` as ``proposed`` rules.

    A key the book already has is not proposed again: a pending proposal gets the new
    evidence, a rejected one comes back only when its evidence grew substantially, a
    retired, trial or active one is left alone.
    """
    from triage.backtest import refused
    from triage.propose import ProposeOptions, propose

    mail, logs = _history(store, (options or ProposeOptions()).lookback_days)
    weeks = all_weeks(store)
    report = ProposalReport(week=weeks[-1] if weeks else None)
    if not len(mail) or "role" not in mail:
        return report
    spam = mail[mail["role"] == "spam"].reset_index(drop=True)
    ham = mail[mail["role"] == "ham"].reset_index(drop=True)
    in_force = [replace(r, state=RuleState.ACTIVE) for r in book.emitted()]
    leaked = spam[refused(in_force, spam).isna().to_numpy()].reset_index(drop=True)
    if not len(leaked):
        return report
    opts = options or _options(cfg, mail)
    found = propose(leaked, ham, logs=logs, active=book.emitted(), options=opts)
    stamp = (now or datetime.now(UTC)).replace(microsecond=0)
    stored: dict[str, str] = {}  # proposer's provisional id -> id in the book
    for r in found.rules:
        kept = _store(book, r, stamp, report)
        if kept is not None:
            stored[r.id] = kept.id
    new = _new_campaigns(found.campaigns, found.rules, stored, report.week)
    report.campaigns = [c for c in new if c["messages"] > 1]
    report.single_messages = len(new) - len(report.campaigns)
    return report


def _store(book: Rulebook, r: Rule, now: datetime, report: ProposalReport) -> Rule | None:
    """Put one proposal into the book (see propose_from_history); the stored rule or None."""
    old = book.find(r.kind, r.key)
    if old is None:
        rule = book.propose(r.kind, r.key, evidence=r.evidence, note=r.note, now=now)
        report.new.append(rule)
        return rule
    if old.state is RuleState.PROPOSED:
        rule = old
        if old.evidence != r.evidence:
            rule = book.save(replace(old, evidence=r.evidence, note=r.note))
        report.refreshed.append(rule)
        return rule
    if old.state is RuleState.REJECTED and should_repropose(old.evidence, r.evidence):
        book.set_state(old.id, RuleState.PROPOSED)
        rule = book.save(replace(book.get(old.id), evidence=r.evidence,
                                 note=f"{r.note}; proposed again: evidence grew"))
        report.renewed.append(rule)
        return rule
    report.kept_out.append(old.id)
    return None


def _new_campaigns(table: pd.DataFrame, rules: Sequence[Rule], stored: dict[str, str],
                   week: str | None) -> list[dict[str, Any]]:
    """Campaigns whose first message arrived in ``week``, largest first."""
    import pandas as pd

    if week is None or not len(table):
        return []
    by_campaign: dict[str, list[str]] = {}
    for r in rules:
        if r.id in stored and r.evidence.campaign:
            by_campaign.setdefault(r.evidence.campaign, []).append(stored[r.id])
    out = []
    row: dict[Any, Any]
    for row in table.to_dict("records"):
        first = pd.Timestamp(row["first_seen"])
        if pd.isna(first) or iso_week(first) != week:
            continue
        out.append({"campaign": str(row["campaign"]), "messages": int(row["messages"]),
                    "days": int(row["days"]), "first_seen": first.isoformat(),
                    "last_seen": pd.Timestamp(row["last_seen"]).isoformat(),
                    "ties": list(row["ties"]),
                    "proposals": by_campaign.get(str(row["campaign"]), [])})
    return out


def rule_feedback(store: Store, rules: Sequence[Rule], cfg: Config,
                  now: datetime | None = None) -> list[RuleFeedback]:
    """What the log says about the rules in the maps (trial and active): hits, last hit,
    ham hits, promotable (trial passed) and stale (retirement candidates).

    Only lines logged since a rule was created count for it: ids are never reused, so a
    line carrying the id from before that belongs to another rule set (e.g. a rulebook
    started afresh), not to this rule.

    The counts read from the history are cached for its generation and these rules (ids and
    start times), so a scan that finds nothing new reads no Parquet for them.
    """
    emitted = [r for r in rules if r.state.emitted]
    if not emitted:
        return []
    since = {r.id: r.created or r.approved for r in emitted}
    key = store.commit_key()
    rules_key = {rid: t.isoformat() if t else None for rid, t in sorted(since.items())}
    cached = store.read_cache("feedback")
    if cached is not None and cached.get("rules") == rules_key:
        totals = {rid: (int(n), datetime.fromisoformat(last) if last else None)
                  for rid, (n, last) in cached["totals"].items()}
        ham = {rid: int(n) for rid, n in cached["ham"].items()}
    else:
        totals, ham = _feedback_counts(store, since)
        store.write_cache("feedback", key, {
            "rules": rules_key, "ham": ham,
            "totals": {rid: [n, last.isoformat() if last else None]
                       for rid, (n, last) in totals.items()}})
    return assess_counts(emitted, totals, ham, now or datetime.now(UTC), cfg.trial_days,
                         cfg.stale_days)


def _feedback_counts(store: Store, since: dict[str, datetime | None]
                     ) -> tuple[dict[str, tuple[int, datetime | None]], dict[str, int]]:
    """Hits (count, last) and ham hits per rule id, counting lines from ``since`` on."""
    import polars as pl

    from triage.feedback import ham_hits, rule_hits

    starts = [t for t in since.values() if t is not None]
    first = min(starts) if len(starts) == len(since) else None
    cols = ["time", "host", "queue_id", "action", "rule_id", "client_ip", "sender"]
    rejects = store.read("rejects", _recent_weeks(store, "rejects", first), columns=cols)
    if rejects.height:
        start = pl.DataFrame({"rule_id": list(since),
                              "_since": list(since.values())},
                             schema={"rule_id": pl.String, "_since": pl.Datetime("us", "UTC")})
        rejects = rejects.join(start, on="rule_id").filter(
            pl.col("_since").is_null() | (pl.col("time") >= pl.col("_since"))).drop("_since")
    hits = rule_hits(rejects)
    # The joins that find ham behind a hit are read only when some rule fired.
    mail = sessions = messages = pl.DataFrame()
    if hits.height:
        mail = store.read("mail", columns=["host", "queue_id", "role"])
        sessions = store.read("sessions", _recent_weeks(store, "sessions", first),
                              columns=["client_ip", "sasl_username"])
        messages = store.read("messages", _recent_weeks(store, "messages", first),
                              columns=["host", "client_ip", "sender", "queue_id",
                                       "first_seen"])
    return hit_totals(hits), ham_counts(ham_hits(rejects, mail, sessions, messages))


def feedback_json(fb: Sequence[RuleFeedback]) -> list[dict[str, Any]]:
    """The feedback as JSON-ready dicts (``flag``: HAM, promotable, stale or empty)."""
    out = []
    for f in fb:
        d = asdict(f)
        d["last_hit"] = f.last_hit.isoformat() if f.last_hit else None
        d["flag"] = f.flag
        out.append(d)
    return out


def history_retest(store: Store, lookback_days: int = 180) -> Callable[[Rule], Evidence]:
    """A backtest for edited rules in the review: how many spam and ham rows of the history
    (the proposer's lookback) the rule, as if active, would refuse. The history is read on
    the first edit only."""
    frames: dict[str, pd.DataFrame] = {}

    def retest(rule: Rule) -> Evidence:
        import pandas as pd

        from triage.backtest import refused

        if not frames:
            mail, _ = _history(store, lookback_days, logs=False)
            role = mail["role"] if "role" in mail else pd.Series(dtype=object)
            frames["spam"], frames["ham"] = mail[role == "spam"], mail[role == "ham"]
        active = [replace(rule, state=RuleState.ACTIVE)]
        return replace(rule.evidence,
                       spam_hits=int(refused(active, frames["spam"]).notna().sum()),
                       ham_hits=int(refused(active, frames["ham"]).notna().sum()))

    return retest
