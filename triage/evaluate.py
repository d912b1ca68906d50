"""Time-split evaluation: would the rules triage proposes have refused next week's spam?

For each period k (ISO week of the trusted Received time; the sender's Date header lies),
triage learns from everything before k as the weekly job would have: the ham of weeks < k
is the shield, the rules in force that refuse some of that ham are retired (the trial
feedback would have caught them), the spam of weeks < k that the rules in force do not
refuse is what leaked, and its proposals are approved automatically. Week k is then
scored with the Postfix matcher: spam caught, ham rejected. Loopback clients, clients in our
own networks (``ProposeOptions.trusted_relays`` given by address, our own addresses) and
authenticated ones pass, as ``permit_mynetworks`` and ``permit_sasl_authenticated`` pass them
before any triage map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import pandas as pd

from triage.backtest import confirm_no_ham, refused
from triage.model import Rule, RuleState
from triage.propose import ProposeOptions, featured, propose

__all__ = ["evaluate", "log_before", "period_of"]

Progress = Callable[[str], None]
_LOG_TIME = {"sessions": "connect_time", "messages": "first_seen", "rejects": "time",
             "deliveries": "time"}


def period_of(times: pd.Series, by: str = "week") -> pd.Series:
    """``YYYY-Www`` (ISO week) of each time; None where the time is missing."""
    if by != "week":
        raise ValueError(f"unknown period {by!r} (only 'week')")
    t = pd.to_datetime(times, utc=True, errors="coerce")
    iso = t.dt.isocalendar()
    text = iso["year"].astype("string") + "-W" + iso["week"].astype("string").str.zfill(2)
    return text.astype(object).where(t.notna(), None)


def _week_start(period: str) -> pd.Timestamp:
    year, week = period.split("-W")
    return pd.Timestamp.fromisocalendar(int(year), int(week), 1).tz_localize("UTC")


def log_before(logs: object | None, end: pd.Timestamp) -> object | None:
    """The log tables restricted to rows before ``end`` (what was known then)."""
    if logs is None:
        return None
    tables = {}
    for name, col in _LOG_TIME.items():
        df = getattr(logs, name, None)
        if df is not None:
            tables[name] = df[pd.to_datetime(df[col], utc=True) < end] if len(df) else df
    return SimpleNamespace(**tables)


@dataclass
class _State:
    active: list[Rule]
    next_id: int = 1


def evaluate(spam: pd.DataFrame, ham: pd.DataFrame, *, logs: object | None = None,
             by: str = "week", options: ProposeOptions | None = None,
             progress: Progress | None = None) -> dict[str, Any]:
    """Run the time split and return the ``triage evaluate`` JSON document:
    ``{"periods": [{"period", "spam_test", "spam_caught", "ham_test", "ham_rejected",
    "rules", ...}], "total": {...}}``. Messages without a trusted Received time cannot be
    placed in a period and are counted in ``total.unplaced``."""
    opts = options or ProposeOptions()
    spam, ham = featured(spam, opts), featured(ham, opts)
    spam = spam.assign(period=period_of(spam["received_time"], by))
    ham = ham.assign(period=period_of(ham["received_time"], by))
    unplaced = int(spam["period"].isna().sum() + ham["period"].isna().sum())
    spam, ham = spam[spam["period"].notna()], ham[ham["period"].notna()]
    periods = sorted(set(spam["period"]) | set(ham["period"]))
    state = _State(active=[])
    nets = opts.mynetworks()
    out = []
    for k in periods:
        start = _week_start(k)
        train_spam, train_ham = spam[spam["period"] < k], ham[ham["period"] < k]
        retired, added = _learn(state, train_spam, train_ham, log_before(logs, start),
                                replace(opts, now=start), progress)
        test_spam, test_ham = spam[spam["period"] == k], ham[ham["period"] == k]
        caught = refused(state.active, test_spam, mynetworks=nets).notna()
        rejected = refused(state.active, test_ham, mynetworks=nets).notna()
        out.append({"period": k, "spam_test": len(test_spam), "spam_caught": int(caught.sum()),
                    "ham_test": len(test_ham), "ham_rejected": int(rejected.sum()),
                    "rules": len(state.active), "rules_added": added,
                    "rules_retired": retired})
        if progress:
            progress(f"{k}: {int(caught.sum())}/{len(test_spam)} spam caught, "
                     f"{int(rejected.sum())}/{len(test_ham)} ham rejected, "
                     f"{len(state.active)} rules")
    total = {key: sum(p[key] for p in out) for key in
             ("spam_test", "spam_caught", "ham_test", "ham_rejected")}
    total["unplaced"] = unplaced
    total["rules"] = len(state.active)
    return {"periods": out, "total": total}


def _learn(state: _State, spam: pd.DataFrame, ham: pd.DataFrame, logs: object | None,
           opts: ProposeOptions, progress: Progress | None) -> tuple[int, int]:
    """One weekly run: retire rules that refuse known ham, propose from the spam the
    remaining rules let through, approve every proposal. Returns (retired, added)."""
    retired = 0
    nets = opts.mynetworks()
    if state.active and len(ham):
        hits = confirm_no_ham(state.active, ham, mynetworks=nets)  # every one, not the first
        retired = sum(r.id in hits for r in state.active)
        state.active = [r for r in state.active if r.id not in hits]
    if not len(spam):
        return retired, 0
    leaked = spam[refused(state.active, spam, mynetworks=nets).isna().to_numpy()]
    if not len(leaked):
        return retired, 0
    found = propose(leaked.reset_index(drop=True), ham.reset_index(drop=True), logs=logs,
                    active=state.active, options=replace(opts, first_id=state.next_id))
    approved = [replace(r, state=RuleState.ACTIVE) for r in found.rules]
    state.active.extend(approved)
    state.next_id += len(found.rules)
    return retired, len(approved)
