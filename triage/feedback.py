"""Rule feedback from the log: hits per rule and week, ham hits, promotable and stale rules.

Every action text triage emits carries the rule id, so the reader's ``rejects`` table has it
in ``rule_id`` for reject lines (``action`` = reject) and for WARN lines of rules on trial
(``warn`` from smtpd access maps, ``warning`` from header_checks).

A hit is on *ham* when the message it matched was later found in a ham folder, or when it
came from authenticated (submission) traffic; such a rule is flagged whatever its state,
because a false reject is the one outcome the operator cannot afford.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from triage.model import Rule, RuleState

if TYPE_CHECKING:  # imported where used: RuleFeedback and assess_counts need no polars
    import polars as pl

__all__ = ["RuleFeedback", "assess", "assess_counts", "ham_counts", "ham_hits", "hit_totals",
           "rule_hits"]

WARN_ACTIONS = ("warn", "warning")
HIT_ACTIONS = ("reject", *WARN_ACTIONS)
# How long after a NOQUEUE warn line the same client's message may get its queue id.
_QUEUE_WINDOW = timedelta(minutes=10)


def _hits(rejects: pl.DataFrame) -> pl.DataFrame:
    import polars as pl

    if rejects.height == 0 or "rule_id" not in rejects.columns:
        return pl.DataFrame(schema={"time": pl.Datetime("us", "UTC"), "rule_id": pl.String,
                                    "action": pl.String})
    return rejects.filter(pl.col("rule_id").is_not_null()
                          & pl.col("action").is_in(HIT_ACTIONS))


def rule_hits(rejects: pl.DataFrame) -> pl.DataFrame:
    """Hits per (ISO week, rule id): columns ``week``, ``rule_id``, ``rejects``, ``warns``,
    ``hits``, ``last_hit``."""
    import polars as pl

    hits = _hits(rejects)
    return hits.group_by(pl.col("time").dt.strftime("%G-W%V").alias("week"), "rule_id").agg(
        (pl.col("action") == "reject").sum().cast(pl.Int64).alias("rejects"),
        pl.col("action").is_in(WARN_ACTIONS).sum().cast(pl.Int64).alias("warns"),
        pl.len().cast(pl.Int64).alias("hits"),
        pl.col("time").max().alias("last_hit"),
    ).sort("week", "rule_id")


def _short(col: str) -> pl.Expr:
    """Syslog writes the short host name, Received headers the full one: compare the first
    label only."""
    import polars as pl

    return pl.col(col).str.to_lowercase().str.split(".").list.first()


def ham_hits(rejects: pl.DataFrame, mail: pl.DataFrame, sessions: pl.DataFrame,
             messages: pl.DataFrame) -> pl.DataFrame:
    """Rule hits on legitimate mail: columns ``rule_id``, ``time``, ``client_ip``,
    ``queue_id``, ``why`` (``ham folder`` or ``authenticated``)."""
    import polars as pl

    hits = _hits(rejects)
    cols = ["rule_id", "time", "client_ip", "queue_id", "why"]
    empty = pl.DataFrame(schema={"rule_id": pl.String, "time": pl.Datetime("us", "UTC"),
                                 "client_ip": pl.String, "queue_id": pl.String,
                                 "why": pl.String})
    if hits.height == 0:
        return empty
    found = [empty]
    hits = hits.with_columns(_short("host").alias("_host"))
    if mail.height and "role" in mail.columns:
        ham = mail.filter((pl.col("role") == "ham") & pl.col("queue_id").is_not_null()).select(
            _short("host").alias("_host"), "queue_id").unique()
        # A WARN in the DATA stage (header_checks) names the queue id.
        direct = hits.filter(pl.col("queue_id").is_not_null()).join(
            ham, on=["_host", "queue_id"])
        found.append(direct.select(*cols[:4], pl.lit("ham folder").alias("why")))
        # A WARN at RCPT time is logged before the queue file exists (NOQUEUE): find the
        # message the same client sent with the same sender right after it.
        if messages.height:
            msgs = messages.select(_short("host").alias("_host"), "client_ip", "sender",
                                   pl.col("queue_id").alias("_qid"), "first_seen")
            later = hits.filter(pl.col("queue_id").is_null()).join(
                msgs, on=["_host", "client_ip", "sender"]).filter(
                (pl.col("first_seen") >= pl.col("time"))
                & (pl.col("first_seen") <= pl.col("time") + _QUEUE_WINDOW))
            later = later.join(ham.rename({"queue_id": "_qid"}), on=["_host", "_qid"])
            found.append(later.select(*cols[:4], pl.lit("ham folder").alias("why")))
    if sessions.height and "sasl_username" in sessions.columns:
        auth = sessions.filter(pl.col("sasl_username").is_not_null()).select(
            "client_ip").unique()
        found.append(hits.join(auth, on="client_ip").select(
            *cols[:4], pl.lit("authenticated").alias("why")))
    return pl.concat(found, how="vertical_relaxed").unique(
        subset=["rule_id", "time", "client_ip", "queue_id"], keep="first").sort("rule_id",
                                                                              "time")


@dataclass(frozen=True)
class RuleFeedback:
    """What the log says about one rule."""

    rule_id: str
    state: str
    hits: int
    last_hit: datetime | None
    ham_hits: int
    promotable: bool   # on trial long enough, no ham hit: may become active
    stale: bool        # no hit for ``stale_days``: candidate for retirement

    @property
    def flag(self) -> str:
        """One word for the summary: HAM beats everything else."""
        if self.ham_hits:
            return "HAM"
        if self.promotable:
            return "promotable"
        return "stale" if self.stale else ""


def assess(rules: Sequence[Rule], hits: pl.DataFrame, ham: pl.DataFrame, now: datetime,
           trial_days: int = 14, stale_days: int = 90) -> list[RuleFeedback]:
    """Feedback for every trial or active rule (``hits`` from :func:`rule_hits`, ``ham``
    from :func:`ham_hits`).

    A trial rule is promotable when it has been on trial ``trial_days`` (from its approval)
    with no ham hit. A rule is stale when its last hit and its approval are both more than
    ``stale_days`` ago.
    """
    return assess_counts(rules, hit_totals(hits), ham_counts(ham), now, trial_days,
                         stale_days)


def hit_totals(hits: pl.DataFrame) -> dict[str, tuple[int, datetime | None]]:
    """Per rule id, from :func:`rule_hits`: (hits, last hit)."""
    import polars as pl

    totals: dict[str, tuple[int, datetime | None]] = {}
    if hits.height:
        for rid, n, last in hits.group_by("rule_id").agg(
                pl.col("hits").sum(), pl.col("last_hit").max()).iter_rows():
            totals[rid] = (int(n), last)
    return totals


def ham_counts(ham: pl.DataFrame) -> dict[str, int]:
    """Per rule id, from :func:`ham_hits`: how many hits were on ham."""
    return dict(ham.group_by("rule_id").len().iter_rows()) if ham.height else {}


def assess_counts(rules: Sequence[Rule], totals: Mapping[str, tuple[int, datetime | None]],
                  ham_count: Mapping[str, int], now: datetime, trial_days: int = 14,
                  stale_days: int = 90) -> list[RuleFeedback]:
    """:func:`assess` from the per-rule counts (:func:`hit_totals`, :func:`ham_counts`)."""
    out = []
    for rule in sorted(rules, key=lambda r: r.id):
        if not rule.state.emitted:
            continue
        n, last = totals.get(rule.id, (0, None))
        since = rule.approved or rule.created
        bad = ham_count.get(rule.id, 0)
        promotable = (rule.state is RuleState.TRIAL and not bad and since is not None
                      and now - since >= timedelta(days=trial_days))
        # A rule approved again (retired -> active) is not stale for hits it had before.
        ref = max((t for t in (last, since) if t is not None), default=None)
        stale = ref is not None and now - ref > timedelta(days=stale_days)
        out.append(RuleFeedback(rule.id, rule.state.value, n, last, bad, promotable, stale))
    return out
