"""The figures of one ISO week from the history: what ``triage scan`` and ``triage stats`` show.

Every figure is a plain dict of counts, so it renders as a rich table or as JSON alike. The
figures of a week are kept in the state directory's cache for the generation they were
computed from, so a scan that finds nothing new shows them without reading the history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from triage.store import Store

if TYPE_CHECKING:  # imported where used: a cached summary needs no polars
    import polars as pl

__all__ = ["all_weeks", "week_summary", "weekly_counts"]

REFUSING = ("reject", "discard")


# Bump when the figures change, so a cache written by another version is not used.
_SUMMARY_VERSION = 1


def _counts(frame: pl.DataFrame, col: str) -> dict[str, int]:
    if frame.height == 0 or col not in frame.columns:
        return {}
    vc = frame.get_column(col).fill_null("(none)").value_counts(sort=True)
    return {str(k): int(v) for k, v in vc.iter_rows()}


def _week(frame: pl.DataFrame, col: str, week: str) -> pl.DataFrame:
    """Rows whose ``col`` falls in ``week``: a partition file may hold rows of other weeks
    only if the clock jumped, but filtering keeps the figures exact."""
    import polars as pl

    if frame.height == 0:
        return frame
    return frame.filter(pl.col(col).dt.strftime("%G-W%V") == week)


def all_weeks(store: Store) -> list[str]:
    """Every ISO week the history has rows in (the summary's weeks), oldest first."""
    return sorted({w for t in ("sessions", "messages", "rejects", "mail")
                   for w in store.weeks(t)})


def week_summary(store: Store, week: str | None = None) -> dict[str, Any]:
    """The week's figures (default: the latest week in the history).

    Keys: ``week``, ``received`` (connections, inbound messages, authenticated/outbound),
    ``refused`` (total and per reason class), ``warned``, ``leaked_spam``, ``ham``,
    ``auth`` (SPF/DKIM/DMARC results of the leaked spam and of the ham, from our own
    headers), ``rule_hits`` (per rule id: rejects, warns), ``ham_hits`` (rule ids that hit
    ham: flagged), ``unparsed`` (lines not understood by the scans that read this week).
    """
    key = store.commit_key()
    cache = store.read_cache("summary") or {}
    if cache.get("version") != _SUMMARY_VERSION:
        cache = {"version": _SUMMARY_VERSION, "latest": None, "weeks": {}}
    dirty = False
    if week is None:
        week = cache["latest"]
        if week is None:
            weeks = all_weeks(store)
            if not weeks:
                return {"week": None}
            week = cache["latest"] = weeks[-1]
            dirty = True
    if week not in cache["weeks"]:
        cache["weeks"][week] = _summary(store, week)
        dirty = True
    if dirty:
        store.write_cache("summary", key, cache)
    return dict(cache["weeks"][week])


def _summary(store: Store, week: str) -> dict[str, Any]:
    """The figures of ``week``, read from the history (see week_summary)."""
    import polars as pl

    from triage.feedback import ham_hits, rule_hits

    sessions = _week(store.read("sessions", [week]), "connect_time", week)
    messages = _week(store.read("messages", [week]), "first_seen", week)
    rejects = _week(store.read("rejects", [week]), "time", week)
    mail = _week(store.read("mail", [week]), "received_time", week)
    inbound = messages.filter(pl.col("sasl_username").is_null()
                              & (pl.col("origin") == "smtpd")) if messages.height else messages
    authed = messages.height - inbound.height if messages.height else 0
    refused = rejects.filter(pl.col("action").is_in(REFUSING)) if rejects.height else rejects
    warned = rejects.filter(pl.col("action").is_in(("warn", "warning"))) \
        if rejects.height else rejects
    spam = mail.filter(pl.col("role") == "spam") if mail.height else mail
    ham = mail.filter(pl.col("role") == "ham") if mail.height else mail
    hits = rule_hits(rejects)
    # Ham may be found in any week's folders; read only what the join needs, and only
    # when some rule fired.
    mail_all = store.read("mail", columns=["host", "queue_id", "role"]) \
        if hits.height else pl.DataFrame()
    bad = ham_hits(rejects, mail_all, sessions, messages)
    return {
        "week": week,
        "received": {"connections": sessions.height, "messages": inbound.height,
                     "authenticated": authed},
        "refused": {"total": refused.height, "by_reason": _counts(refused, "reason_class")},
        "warned": warned.height,
        "leaked_spam": spam.height,
        "ham": ham.height,
        "auth": {role: {k: _counts(frame, f"{k}_result") for k in ("spf", "dkim", "dmarc")}
                 for role, frame in (("spam", spam), ("ham", ham))},
        "rule_hits": {rid: {"rejects": r, "warns": w}
                      for rid, r, w in hits.select("rule_id", "rejects", "warns").iter_rows()},
        "ham_hits": _counts(bad, "rule_id"),
    }


def weekly_counts(store: Store, weeks: int | None = None) -> list[dict[str, Any]]:
    """One row of counts per ISO week (the last ``weeks`` weeks, oldest first):
    week, connections, messages, refused, warned, leaked_spam, ham, rule_hits, leak_rate."""
    known = all_weeks(store)
    chosen: Sequence[str] = known[-weeks:] if weeks else known
    rows = []
    for week in chosen:
        s = week_summary(store, week)
        refused, leaked = s["refused"]["total"], s["leaked_spam"]
        rows.append({
            "week": week, "connections": s["received"]["connections"],
            "messages": s["received"]["messages"], "refused": refused,
            "warned": s["warned"], "leaked_spam": leaked, "ham": s["ham"],
            "rule_hits": sum(v["rejects"] + v["warns"] for v in s["rule_hits"].values()),
            "leak_rate": round(leaked / (leaked + refused), 3) if leaked + refused else None,
        })
    return rows
