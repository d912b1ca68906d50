"""Weekly aggregates of the history as tidy pandas DataFrames, for notebooks and reports.

Every helper takes the history (``triage.load_history(state_dir)``, or any object with the
same DataFrame attributes) and returns one tidy frame: one observation per row, one variable
per column, weeks as ISO week labels (``2025-W41``) plus ``week_start`` (the week's Monday,
00:00 UTC) for time axes. Weeks with no rows in between are filled with zero counts, so a
quiet week shows as a dip rather than disappearing from a chart.

The figures are counted as ``triage scan`` counts them (``triage.weekly``), and rule hits
come from ``triage.feedback``, so a notebook and the weekly summary never disagree.

    >>> import triage, triage.frames as frames
    >>> h = triage.load_history("/nonexistent")
    >>> list(frames.weekly_counts(h).columns)
    ['week', 'week_start', 'measure', 'reason_class', 'count']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import pandas as pd
import polars as pl

from triage.feedback import HIT_ACTIONS
from triage.feedback import rule_hits as _feedback_rule_hits
from triage.model import Rule, RuleState
from triage.weekly import REFUSING

__all__ = [
    "AUTH_COLUMNS", "CAMPAIGN_COLUMNS", "DURABILITY_COLUMNS", "HORIZONS", "LEAK_COLUMNS",
    "RULE_HIT_COLUMNS", "WEEKLY_COLUMNS", "HistoryLike", "Trends", "auth_mix", "campaigns",
    "history_end", "history_weeks", "iso_week", "leak_rate", "rule_durability", "rule_hits",
    "trends", "week_start", "weekly_counts",
]

WEEKLY_COLUMNS = ["week", "week_start", "measure", "reason_class", "count"]
MEASURES = ("connections", "received", "refused", "leaked", "ham")
AUTH_COLUMNS = ["week", "week_start", "role", "check", "result", "count", "share"]
CAMPAIGN_COLUMNS = ["campaign", "messages", "first_week", "last_week", "weeks_active",
                    "span_weeks", "first_seen", "last_seen", "ties"]
RULE_HIT_COLUMNS = ["week", "week_start", "rule_id", "rejects", "warns", "hits", "last_hit"]
DURABILITY_COLUMNS = ["weeks_after", "rules", "firing", "share"]
LEAK_COLUMNS = ["week", "week_start", "leaked", "refused", "leak_rate"]
HORIZONS = (1, 4, 12)
NONE = "(none)"  # an empty result or reason, as the weekly summary shows it
# Where each table's rows are placed in time (as in triage.store.TABLES).
_TIME = {"sessions": "connect_time", "messages": "first_seen", "rejects": "time",
         "mail": "received_time"}


class HistoryLike(Protocol):
    """What the helpers read: ``triage.store.History`` or a hand-built stand-in."""

    sessions: pd.DataFrame
    messages: pd.DataFrame
    deliveries: pd.DataFrame
    rejects: pd.DataFrame
    mail: pd.DataFrame


_DTYPES: dict[str, Any] = {"week_start": "datetime64[ns, UTC]", "count": "int64",
                           "leaked": "int64", "refused": "int64", "leak_rate": "float64",
                           "share": "float64", "rules": "int64", "firing": "int64",
                           "weeks_after": "int64", "messages": "int64",
                           "weeks_active": "int64", "span_weeks": "int64",
                           "rejects": "int64", "warns": "int64", "hits": "int64",
                           "first_seen": "datetime64[ns, UTC]",
                           "last_seen": "datetime64[ns, UTC]",
                           "last_hit": "datetime64[ns, UTC]"}


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=_DTYPES.get(c, object)) for c in columns})


# -- weeks -------------------------------------------------------------------------------------
def iso_week(times: pd.Series) -> pd.Series:
    """ISO week labels (``2025-W41``) of tz-aware times, in UTC as the store partitions them;
    missing times give missing labels."""
    t = pd.to_datetime(times, utc=True, errors="coerce")
    return t.dt.strftime("%G-W%V").astype(object).where(t.notna(), None)


def week_start(week: str) -> pd.Timestamp:
    """The Monday 00:00 UTC that starts an ISO week label: ``week_start("2025-W36")`` is
    2025-09-01."""
    year, num = week.split("-W")
    return pd.Timestamp(datetime.fromisocalendar(int(year), int(num), 1), tz="UTC")


def _frame(h: HistoryLike, table: str) -> pd.DataFrame:
    df = getattr(h, table, None)
    return df if isinstance(df, pd.DataFrame) else pd.DataFrame()


def _weeks_of(df: pd.DataFrame, col: str) -> pd.Series:
    if df.empty or col not in df:
        return pd.Series(dtype=object)
    return iso_week(df[col])


def history_weeks(h: HistoryLike) -> list[str]:
    """Every ISO week from the first to the last one with rows in any table, oldest first
    (weeks without rows in between included)."""
    seen = set()
    for table, col in _TIME.items():
        seen |= set(_weeks_of(_frame(h, table), col).dropna())
    if not seen:
        return []
    first, last = week_start(min(seen)), week_start(max(seen))
    n = (last - first).days // 7 + 1
    return [(first + timedelta(weeks=i)).strftime("%G-W%V") for i in range(n)]


def _with_start(df: pd.DataFrame) -> pd.DataFrame:
    """Insert ``week_start`` right after ``week``."""
    starts = {w: week_start(w) for w in df["week"].unique()}
    df.insert(1, "week_start", pd.to_datetime(df["week"].map(starts), utc=True))
    return df


def _count_by_week(df: pd.DataFrame, col: str, weeks: list[str]) -> pd.Series:
    counts = _weeks_of(df, col).value_counts()
    return counts.reindex(weeks, fill_value=0).astype("int64")


def _text(series: pd.Series) -> pd.Series:
    """Values as strings, a missing one as ``(none)``, as the weekly summary counts them."""
    return series.astype(object).where(series.notna(), NONE).astype(str)


# -- weekly counts -----------------------------------------------------------------------------
def _inbound(messages: pd.DataFrame) -> pd.DataFrame:
    """Messages received from the outside: not authenticated, not local (as triage.weekly)."""
    if messages.empty:
        return messages
    keep = pd.Series(True, index=messages.index)
    if "sasl_username" in messages:
        keep &= messages["sasl_username"].isna()
    if "origin" in messages:
        keep &= messages["origin"] == "smtpd"
    return messages[keep]


def _refused(rejects: pd.DataFrame) -> pd.DataFrame:
    if rejects.empty or "action" not in rejects:
        return rejects.iloc[0:0]
    return rejects[rejects["action"].isin(REFUSING)]


def _role(mail: pd.DataFrame, role: str) -> pd.DataFrame:
    if mail.empty or "role" not in mail:
        return mail.iloc[0:0]
    return mail[mail["role"] == role]


def weekly_counts(h: HistoryLike) -> pd.DataFrame:
    """Counts per ISO week, long: columns ``week``, ``week_start``, ``measure``,
    ``reason_class``, ``count``.

    ``measure`` is ``connections`` (smtpd sessions), ``received`` (inbound messages
    accepted into the queue), ``refused`` (reject and discard lines, one row per
    ``reason_class`` seen anywhere in the history), ``leaked`` (messages in the spam
    folders) or ``ham`` (messages in the ham folders). ``reason_class`` is only set on
    ``refused`` rows; every week has every row, zero when nothing happened.
    """
    weeks = history_weeks(h)
    if not weeks:
        return _empty(WEEKLY_COLUMNS)
    mail, rejects = _frame(h, "mail"), _refused(_frame(h, "rejects"))
    parts = []
    simple = {
        "connections": _count_by_week(_frame(h, "sessions"), "connect_time", weeks),
        "received": _count_by_week(_inbound(_frame(h, "messages")), "first_seen", weeks),
        "leaked": _count_by_week(_role(mail, "spam"), "received_time", weeks),
        "ham": _count_by_week(_role(mail, "ham"), "received_time", weeks),
    }
    for measure in MEASURES:
        if measure != "refused":
            s = simple[measure]
            parts.append(pd.DataFrame({"week": weeks, "measure": measure,
                                       "reason_class": None, "count": s.to_numpy()}))
            continue
        if rejects.empty:
            continue
        by = pd.DataFrame({"week": iso_week(rejects["time"]),
                           "reason_class": _text(rejects.get("reason_class",
                                                             pd.Series(None, rejects.index)))})
        sizes = by.dropna(subset=["week"]).groupby(["week", "reason_class"]).size()
        # Every class in every week, so stacked bars of the classes line up week by week.
        grid = pd.MultiIndex.from_product([weeks, sorted(set(by["reason_class"]))],
                                          names=["week", "reason_class"])
        table = sizes.reindex(grid, fill_value=0).rename("count").reset_index()
        table["measure"] = "refused"
        parts.append(table)
    out = pd.concat(parts, ignore_index=True)[["week", "measure", "reason_class", "count"]]
    out["count"] = out["count"].astype("int64")
    order = {m: i for i, m in enumerate(MEASURES)}
    out = out.sort_values(["week", "measure", "reason_class"],
                          key=lambda s: s.map(order) if s.name == "measure" else s,
                          ignore_index=True)
    return _with_start(out)


def leak_rate(h: HistoryLike, counts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per ISO week: ``leaked``, ``refused`` and ``leak_rate`` = leaked / (leaked + refused),
    the share of the spam that reached a mailbox instead of being refused in the SMTP
    session (NaN in a week with neither). ``counts`` reuses a :func:`weekly_counts` result.
    """
    counts = weekly_counts(h) if counts is None else counts
    if counts.empty:
        return _empty(LEAK_COLUMNS)
    weeks = list(dict.fromkeys(counts["week"]))
    per = counts[counts["measure"].isin(["leaked", "refused"])].groupby(
        ["week", "measure"])["count"].sum().unstack("measure")
    per = per.reindex(index=weeks, columns=["leaked", "refused"], fill_value=0).fillna(0)
    out = per.astype("int64").reset_index().rename_axis(columns=None)
    total = out["leaked"] + out["refused"]
    out["leak_rate"] = (out["leaked"] / total.where(total > 0)).astype("float64")
    return _with_start(out)[LEAK_COLUMNS]


# -- SPF / DKIM / DMARC ------------------------------------------------------------------------
def auth_mix(h: HistoryLike) -> pd.DataFrame:
    """SPF, DKIM and DMARC results of the leaked spam and of the ham per ISO week, from our
    own trusted headers: columns ``week``, ``week_start``, ``role`` (spam, ham), ``check``
    (spf, dkim, dmarc), ``result`` (``(none)`` when no result was recorded), ``count`` and
    ``share`` (of that week's messages of that role)."""
    mail = _frame(h, "mail")
    if mail.empty or "role" not in mail or "received_time" not in mail:
        return _empty(AUTH_COLUMNS)
    mail = mail[mail["role"].isin(["spam", "ham"])]
    parts = []
    for check in ("spf", "dkim", "dmarc"):
        col = f"{check}_result"
        results = _text(mail[col]) if col in mail else pd.Series(NONE, index=mail.index)
        parts.append(pd.DataFrame({"week": iso_week(mail["received_time"]),
                                   "role": mail["role"].astype(str), "check": check,
                                   "result": results.str.lower()}))
    long = pd.concat(parts, ignore_index=True).dropna(subset=["week"])
    if long.empty:
        return _empty(AUTH_COLUMNS)
    out = long.groupby(["week", "role", "check", "result"]).size().rename("count").reset_index()
    out["count"] = out["count"].astype("int64")
    out["share"] = out["count"] / out.groupby(["week", "role", "check"])["count"].transform(
        "sum")
    return _with_start(out)[AUTH_COLUMNS]


# -- campaigns ---------------------------------------------------------------------------------
def campaigns(h: HistoryLike, my_hostnames: Sequence[str] = (),
              allowlist_files: Sequence[str] = ()) -> pd.DataFrame:
    """The leaked spam of the whole history grouped into campaigns (``triage.cluster``, with
    the shield ``triage.propose`` uses: ham, the log's authenticated and outbound traffic,
    list-relayed spam, our own domains, the allowlists). One row per campaign, largest
    first: ``campaign``, ``messages``, ``first_week``, ``last_week``, ``weeks_active``
    (weeks with at least one message), ``span_weeks`` (first to last, inclusive),
    ``first_seen``, ``last_seen`` and ``ties`` (the shared values that hold it together).
    A campaign that comes back has ``weeks_active`` > 1."""
    # Imported here: clustering pulls in numpy and the feature code, which the other
    # helpers do not need.
    from triage.cluster import campaigns as cluster_campaigns
    from triage.features import add_features
    from triage.shield import build_shield

    mail = _frame(h, "mail")
    spam = _role(mail, "spam")
    if spam.empty:
        return _empty(CAMPAIGN_COLUMNS)
    spam = add_features(spam.reset_index(drop=True), my_hostnames)
    ham = add_features(_role(mail, "ham").reset_index(drop=True), my_hostnames)
    shield = build_shield(ham, logs=h, allowlist_files=allowlist_files, featured=True)
    # As in triage.propose: a mailing list's server also brings ham, and our own relays
    # are no evidence, so neither may tie spam together.
    relayed = spam["list_id"].notna() if "list_id" in spam else pd.Series(False, spam.index)
    hosts = [*my_hostnames, *pd.concat([spam.get("host", pd.Series(dtype=object)),
                                        ham.get("host", pd.Series(dtype=object))])
             .dropna().astype(str).unique()]
    shield = shield.with_relays(spam[relayed], [x for x in hosts if "*" not in x], spam)
    labels, table = cluster_campaigns(spam, shield)
    placed = pd.DataFrame({"campaign": labels.to_numpy(), "week": spam["week"].to_numpy()})
    weeks = placed.dropna(subset=["week"]).groupby("campaign")["week"].agg(
        first_week="min", last_week="max", weeks_active="nunique")
    out = table.merge(weeks, left_on="campaign", right_index=True, how="left")
    span = [(week_start(b) - week_start(a)).days // 7 + 1 if isinstance(a, str) else 0
            for a, b in zip(out["first_week"], out["last_week"], strict=True)]
    out["span_weeks"] = pd.Series(span, index=out.index, dtype="int64")
    out["weeks_active"] = out["weeks_active"].fillna(0).astype("int64")
    out["messages"] = out["messages"].astype("int64")
    return out[CAMPAIGN_COLUMNS].reset_index(drop=True)


# -- rules -------------------------------------------------------------------------------------
def _hit_rows(rejects: pd.DataFrame) -> pl.DataFrame:
    """The columns ``triage.feedback`` reads, as polars (the rest may hold mixed objects)."""
    cols = [c for c in ("time", "rule_id", "action") if c in rejects]
    if rejects.empty or len(cols) < 3:
        return pl.DataFrame()
    rows = rejects[cols].astype({"rule_id": object, "action": object})
    # in UTC, as the other frames place their rows in weeks (a log read in its own zone
    # would otherwise put a hit near midnight on Sunday into the next or previous week);
    # rows without a time have no week and are left out, as everywhere else
    rows = rows.assign(time=pd.to_datetime(rows["time"], utc=True, errors="coerce"))
    return pl.from_pandas(rows[rows["time"].notna()])


def rule_hits(h: HistoryLike) -> pd.DataFrame:
    """Hits of triage's rules per ISO week and rule (reject lines of active rules, WARN
    lines of rules on trial; ``triage.feedback.rule_hits``): ``week``, ``week_start``,
    ``rule_id``, ``rejects``, ``warns``, ``hits``, ``last_hit``. A week in which a rule did
    not fire has no row."""
    hits = _feedback_rule_hits(_hit_rows(_frame(h, "rejects")))
    if hits.height == 0:
        return _empty(RULE_HIT_COLUMNS)
    out = hits.to_pandas()
    out["last_hit"] = pd.to_datetime(out["last_hit"], utc=True)
    return _with_start(out)[RULE_HIT_COLUMNS]


def _approval(rule: Rule) -> pd.Timestamp | None:
    since = rule.approved or rule.created
    return None if since is None else pd.Timestamp(since).tz_convert("UTC")


def history_end(h: HistoryLike) -> pd.Timestamp | None:
    """The newest time anywhere in the history: "now" for a history read after the fact."""
    ends = []
    for table, col in _TIME.items():
        df = _frame(h, table)
        if not df.empty and col in df:
            t = pd.to_datetime(df[col], utc=True, errors="coerce").max()
            if pd.notna(t):
                ends.append(t)
    return max(ends) if ends else None


def rule_durability(h: HistoryLike, rules: Iterable[Rule],
                    now: datetime | pd.Timestamp | None = None,
                    horizons: Sequence[int] = HORIZONS) -> pd.DataFrame:
    """Share of approved rules still firing ``horizons`` weeks after their approval:
    columns ``weeks_after``, ``rules`` (rules approved at least that long before ``now``),
    ``firing`` (those of them with a hit, reject or WARN, that long after approval or later)
    and ``share`` (NaN when no rule is old enough yet).

    Approved means on trial, active or retired (a retired rule that stopped firing counts as
    not firing: it did not last); the approval time is ``approved``, else ``created``.
    ``now`` defaults to the newest time in the history. With no approved rule the frame is
    empty (same columns).
    """
    approved = [(r.id, t) for r in rules
                if r.state in (RuleState.TRIAL, RuleState.ACTIVE, RuleState.RETIRED)
                and (t := _approval(r)) is not None]
    if not approved:
        return _empty(DURABILITY_COLUMNS)
    end = history_end(h) if now is None else pd.Timestamp(now)
    if end is not None and end.tzinfo is None:
        end = end.tz_localize("UTC")
    rejects = _frame(h, "rejects")
    last: dict[str, pd.Timestamp] = {}
    if not rejects.empty and {"rule_id", "action", "time"} <= set(rejects.columns):
        hits = rejects[rejects["rule_id"].notna() & rejects["action"].isin(HIT_ACTIONS)]
        times = pd.to_datetime(hits["time"], utc=True)
        last = {str(k): v for k, v in times.groupby(hits["rule_id"].astype(str)).max().items()}
    rows = []
    for weeks in horizons:
        delta = pd.Timedelta(weeks=weeks)
        old_enough = [(rid, t) for rid, t in approved if end is not None and t + delta <= end]
        # The latest hit decides: a rule that fired at or after the horizon was still alive.
        firing = sum(1 for rid, t in old_enough if rid in last and last[rid] >= t + delta)
        rows.append({"weeks_after": weeks, "rules": len(old_enough), "firing": firing,
                     "share": firing / len(old_enough) if old_enough else float("nan")})
    return pd.DataFrame(rows, columns=DURABILITY_COLUMNS).astype(
        {"weeks_after": "int64", "rules": "int64", "firing": "int64", "share": "float64"})


# -- all at once -------------------------------------------------------------------------------
@dataclass
class Trends:
    """Every frame of this module for one history: what the charts of ``triage.plots`` and
    ``triage report`` draw."""

    weekly: pd.DataFrame
    leak: pd.DataFrame
    auth: pd.DataFrame
    campaigns: pd.DataFrame
    rule_hits: pd.DataFrame
    durability: pd.DataFrame
    weeks: list[str] = field(default_factory=list)


def trends(h: HistoryLike, rules: Iterable[Rule] = (), my_hostnames: Sequence[str] = (),
           allowlist_files: Sequence[str] = (),
           now: datetime | pd.Timestamp | None = None) -> Trends:
    """All the frames of one history (the weekly counts computed once)."""
    counts = weekly_counts(h)
    return Trends(weekly=counts, leak=leak_rate(h, counts), auth=auth_mix(h),
                  campaigns=campaigns(h, my_hostnames, allowlist_files),
                  rule_hits=rule_hits(h), durability=rule_durability(h, rules, now),
                  weeks=history_weeks(h))
