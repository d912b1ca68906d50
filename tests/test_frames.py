"""triage.frames against a small hand-built history whose answers are counted by hand.

The history spans ISO weeks 2025-W36 (Mon 2025-09-01) to 2025-W39; W38 has no rows at all.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import polars as pl
import pytest

import triage
from triage import frames
from triage.model import Rule, RuleKind, RuleState
from triage.store import Store
from triage.weekly import weekly_counts as summary_weekly_counts


def t(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


def _times(*days: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(days), utc=True, format="ISO8601"))


@pytest.fixture
def history() -> SimpleNamespace:
    sessions = pd.DataFrame({
        "host": "mx",
        "connect_time": _times("2025-09-01 10:00", "2025-09-02 10:00", "2025-09-07 23:59",
                               "2025-09-09 08:00", "2025-09-22 00:00", "2025-09-26 12:00"),
        "client_ip": ["192.0.2.10", "192.0.2.11", "198.51.100.1", "192.0.2.10",
                      "203.0.113.5", "192.0.2.10"],
        "sasl_username": [None, None, "alice", None, None, None],
    })
    messages = pd.DataFrame({
        "host": "mx", "queue_id": ["Q1", "Q2", "Q3", "Q4", "Q5"],
        "first_seen": _times("2025-09-01 10:00", "2025-09-02 10:00", "2025-09-03 10:00",
                             "2025-09-04 10:00", "2025-09-23 10:00"),
        "client_ip": ["192.0.2.10", "192.0.2.11", "198.51.100.1", None, "203.0.113.5"],
        "sender": ["a@spam.example", "b@spam.example", "alice@example.org",
                   "root@example.org", "c@spam.example"],
        # inbound, inbound, authenticated submission, local pickup, inbound
        "sasl_username": [None, None, "alice", None, None],
        "origin": ["smtpd", "smtpd", "smtpd", "pickup", "smtpd"],
    })
    rejects = pd.DataFrame({
        "time": _times("2025-09-01 11:00", "2025-09-02 11:00", "2025-09-03 11:00",
                       "2025-09-09 09:00", "2025-09-10 09:00", "2025-09-11 09:00",
                       "2025-09-24 09:00"),
        "host": "mx",
        "action": ["reject", "reject", "reject", "discard", "warn", "hold", "reject"],
        "reason_class": ["client", "client", "spf", "helo", "helo", "content", "client"],
        "rule_id": ["R0001", "R0001", None, None, "R0002", None, "R0005"],
        "client_ip": ["192.0.2.10", "192.0.2.10", "192.0.2.12", "192.0.2.13",
                      "192.0.2.14", "192.0.2.15", "203.0.113.5"],
        "queue_id": [None] * 7,
        "sender": ["x@spam.example"] * 7,
    })
    mail = pd.DataFrame({
        "host": "mx", "queue_id": [f"M{i}" for i in range(9)],
        "role": ["spam", "ham", "ham", "spam", "spam", "spam", "spam", "ham", "spam"],
        "received_time": pd.Series(pd.to_datetime(
            ["2025-09-01 10:00", "2025-09-02 10:00", "2025-09-03 10:00", "2025-09-09 10:00",
             "2025-09-10 10:00", "2025-09-11 10:00", "2025-09-23 10:00", "2025-09-24 10:00",
             None], utc=True)),
        "spf_result": ["softfail", "pass", "pass", None, None, "pass", "none", "pass",
                       "pass"],
        "dkim_result": ["none", "PASS", "pass", "none", "none", "none", "none", "pass",
                        "none"],
        "dmarc_result": ["fail", "pass", "pass", "none", "none", "none", "none", "pass",
                         "none"],
    })
    return SimpleNamespace(sessions=sessions, messages=messages, deliveries=pd.DataFrame(),
                           rejects=rejects, mail=mail)


def _counts(df: pd.DataFrame, measure: str) -> dict[str, int]:
    rows = df[df["measure"] == measure]
    return dict(zip(rows["week"], rows["count"], strict=True))


def test_weeks_and_their_mondays() -> None:
    assert frames.week_start("2025-W36") == t("2025-09-01")
    # ISO week-numbering year: 2024-12-30 is in the first week of 2025
    assert frames.iso_week(_times("2024-12-30 00:00", "2025-09-07 23:59:59")).tolist() == [
        "2025-W01", "2025-W36"]


def test_weekly_counts_known_answer(history: SimpleNamespace) -> None:
    df = frames.weekly_counts(history)
    assert list(df.columns) == frames.WEEKLY_COLUMNS
    weeks = ["2025-W36", "2025-W37", "2025-W38", "2025-W39"]
    assert list(dict.fromkeys(df["week"])) == weeks  # the empty W38 is filled in
    assert _counts(df, "connections") == dict(zip(weeks, [3, 1, 0, 2], strict=True))
    # authenticated and pickup messages are not "received"
    assert _counts(df, "received") == dict(zip(weeks, [2, 0, 0, 1], strict=True))
    assert _counts(df, "leaked") == dict(zip(weeks, [1, 3, 0, 1], strict=True))
    assert _counts(df, "ham") == dict(zip(weeks, [2, 0, 0, 1], strict=True))
    refused = df[df["measure"] == "refused"].set_index(["week", "reason_class"])["count"]
    # warn and hold lines are not refusals; every class is present in every week
    assert set(refused.index.get_level_values("reason_class")) == {"client", "spf", "helo"}
    assert refused["2025-W36", "client"] == 2 and refused["2025-W36", "spf"] == 1
    assert refused["2025-W36", "helo"] == 0 and refused["2025-W37", "helo"] == 1
    assert refused["2025-W38"].sum() == 0 and refused["2025-W39", "client"] == 1
    assert df["reason_class"][df["measure"] != "refused"].isna().all()
    assert (df["week_start"] == df["week"].map(frames.week_start)).all()


def test_leak_rate_known_answer(history: SimpleNamespace) -> None:
    df = frames.leak_rate(history).set_index("week")
    assert list(df.reset_index().columns) == frames.LEAK_COLUMNS
    assert df["leaked"].tolist() == [1, 3, 0, 1]
    assert df["refused"].tolist() == [3, 1, 0, 1]
    assert df.loc["2025-W36", "leak_rate"] == pytest.approx(0.25)
    assert df.loc["2025-W37", "leak_rate"] == pytest.approx(0.75)
    assert math.isnan(df.loc["2025-W38", "leak_rate"])  # neither leaked nor refused
    assert df.loc["2025-W39", "leak_rate"] == pytest.approx(0.5)


def test_auth_mix_known_answer(history: SimpleNamespace) -> None:
    df = frames.auth_mix(history)
    assert list(df.columns) == frames.AUTH_COLUMNS
    got = df.set_index(["week", "role", "check", "result"])
    assert got.loc[("2025-W36", "spam", "spf", "softfail"), "share"] == 1.0
    assert got.loc[("2025-W36", "ham", "dkim", "pass"), "count"] == 2  # PASS and pass
    assert got.loc[("2025-W37", "spam", "spf", "(none)"), "count"] == 2
    assert got.loc[("2025-W37", "spam", "spf", "(none)"), "share"] == pytest.approx(2 / 3)
    assert got.loc[("2025-W37", "spam", "spf", "pass"), "share"] == pytest.approx(1 / 3)
    # shares add up to one per week, role and check; the message without a time is left out
    sums = df.groupby(["week", "role", "check"])["share"].sum()
    assert sums.to_numpy() == pytest.approx(1.0)
    assert df[(df["role"] == "spam") & (df["check"] == "spf")]["count"].sum() == 5


def test_rule_hits_per_week(history: SimpleNamespace) -> None:
    df = frames.rule_hits(history)
    assert list(df.columns) == frames.RULE_HIT_COLUMNS
    got = {(w, r): (rj, wn) for w, r, rj, wn in
           df[["week", "rule_id", "rejects", "warns"]].itertuples(index=False)}
    assert got == {("2025-W36", "R0001"): (2, 0), ("2025-W37", "R0002"): (0, 1),
                   ("2025-W39", "R0005"): (1, 0)}
    r1 = df[df["rule_id"] == "R0001"].iloc[0]
    assert r1["hits"] == 2 and r1["last_hit"] == t("2025-09-02 11:00")


def _rule(rid: str, state: RuleState, approved: str | None) -> Rule:
    when = datetime.fromisoformat(approved).replace(tzinfo=UTC) if approved else None
    return Rule(rid, RuleKind.CLIENT_CIDR, f"192.0.2.{int(rid[1:])}/32", state=state,
                approved=when, created=when)


RULES = [
    _rule("R0001", RuleState.ACTIVE, "2025-09-01"),   # last hit W36
    _rule("R0002", RuleState.TRIAL, "2025-09-08"),    # last hit 2025-09-10 (a WARN)
    _rule("R0003", RuleState.PROPOSED, None),         # never approved: not counted
    _rule("R0004", RuleState.RETIRED, "2025-09-01"),  # approved, never fired
    _rule("R0005", RuleState.ACTIVE, "2025-08-18"),   # last hit 2025-09-24
    _rule("R0006", RuleState.REJECTED, "2025-08-01"),  # rejected: not counted
]


def test_rule_durability_known_answer(history: SimpleNamespace) -> None:
    # "now" = the newest time in the history: 2025-09-26 12:00
    df = frames.rule_durability(history, RULES).set_index("weeks_after")
    assert list(df.reset_index().columns) == frames.DURABILITY_COLUMNS
    assert df.index.tolist() == [1, 4, 12]
    # one week on: R0001, R0002, R0004, R0005 are old enough; only R0005 fired that late
    # (R0001 last on 2025-09-02, R0002 last on 2025-09-10, R0004 never)
    assert df.loc[1, ["rules", "firing"]].tolist() == [4, 1]
    assert df.loc[1, "share"] == pytest.approx(0.25)
    # four weeks on: only R0005 (approved 2025-08-18) is old enough, and it still fires
    assert df.loc[4, ["rules", "firing"]].tolist() == [1, 1]
    assert df.loc[12, "rules"] == 0 and math.isnan(df.loc[12, "share"])


def test_rule_durability_with_a_later_now(history: SimpleNamespace) -> None:
    df = frames.rule_durability(history, RULES, now=t("2025-12-31")).set_index("weeks_after")
    # twelve weeks after approval no rule fires any more (the history ends in September)
    assert df.loc[12, ["rules", "firing"]].tolist() == [4, 0]
    assert df.loc[12, "share"] == 0.0


def test_rule_durability_without_rules_is_empty_with_columns(
        history: SimpleNamespace) -> None:
    for rules in ([], [RULES[2]]):
        df = frames.rule_durability(history, rules)
        assert df.empty and list(df.columns) == frames.DURABILITY_COLUMNS


def test_campaigns_first_last_week_and_size() -> None:
    def msg(day: str, ip: str, sender: str, role: str = "spam") -> dict[str, object]:
        return {"role": role, "received_time": t(day), "host": "mx.example.org",
                "client_ip": ip, "client_name": None, "helo": None,
                "envelope_sender": sender, "from_domain": sender.rpartition("@")[2],
                "list_id": None}

    mail = pd.DataFrame([
        # one source in three weeks: W36, W37, W39
        msg("2025-09-02", "192.0.2.10", "a@one-spam.example"),
        msg("2025-09-09", "192.0.2.10", "b@two-spam.example"),
        msg("2025-09-24", "192.0.2.10", "c@three-spam.example"),
        # one sender domain from two addresses, both in W37
        msg("2025-09-10", "203.0.113.1", "x@bulk.example.net"),
        msg("2025-09-11", "203.0.113.99", "y@bulk.example.net"),
        # alone
        msg("2025-09-12", "198.51.100.77", "z@alone-spam.example"),
        msg("2025-09-12", "198.51.100.1", "friend@example.org", role="ham"),
    ])
    h = SimpleNamespace(sessions=pd.DataFrame(), messages=pd.DataFrame(),
                        deliveries=pd.DataFrame(), rejects=pd.DataFrame(), mail=mail)
    df = frames.campaigns(h, my_hostnames=["mx.example.org"])
    assert list(df.columns) == frames.CAMPAIGN_COLUMNS
    rows = {r.messages: r for r in df.itertuples(index=False)}
    assert sorted(rows) == [1, 2, 3] and df["messages"].tolist() == [3, 2, 1]
    big = rows[3]
    assert (big.first_week, big.last_week, big.weeks_active, big.span_weeks) == (
        "2025-W36", "2025-W39", 3, 4)
    assert any("client_ip=192.0.2.10" in tie for tie in big.ties)
    pair = rows[2]
    assert (pair.first_week, pair.last_week, pair.weeks_active, pair.span_weeks) == (
        "2025-W37", "2025-W37", 1, 1)


def test_empty_history_gives_empty_frames_with_columns(tmp_path: Path) -> None:
    h = triage.load_history(tmp_path / "none")
    tr = frames.trends(h, RULES)
    expected = {"weekly": frames.WEEKLY_COLUMNS, "leak": frames.LEAK_COLUMNS,
                "auth": frames.AUTH_COLUMNS, "campaigns": frames.CAMPAIGN_COLUMNS,
                "rule_hits": frames.RULE_HIT_COLUMNS}
    for name, columns in expected.items():
        df = getattr(tr, name)
        assert df.empty and list(df.columns) == columns, name
    assert tr.weeks == []
    # rules but no history: nothing is old enough, nothing fires
    assert tr.durability["rules"].sum() == 0


def test_weekly_counts_agree_with_the_scan_summary(history: SimpleNamespace,
                                                   tmp_path: Path) -> None:
    """The same history stored as a scan stores it: triage.weekly (what `triage scan` and
    `triage stats` show) and triage.frames count the same."""
    store = Store(tmp_path)
    gen = store.begin()
    for table in ("sessions", "messages", "rejects", "mail"):
        gen.add(table, pl.from_pandas(getattr(history, table)))
    gen.commit([], {}, {})
    loaded = triage.load_history(tmp_path)
    wide = frames.weekly_counts(loaded).groupby(["week", "measure"])["count"].sum().unstack()
    leak = frames.leak_rate(loaded).set_index("week")
    rows = summary_weekly_counts(store)
    assert [r["week"] for r in rows] == ["2025-W36", "2025-W37", "2025-W39"]
    for r in rows:
        w = r["week"]
        assert (wide.loc[w, "connections"], wide.loc[w, "received"], wide.loc[w, "refused"],
                wide.loc[w, "leaked"], wide.loc[w, "ham"]) == (
            r["connections"], r["messages"], r["refused"], r["leaked_spam"], r["ham"])
        assert leak.loc[w, "leak_rate"] == pytest.approx(r["leak_rate"], abs=5e-4)
