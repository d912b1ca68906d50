"""Reading the history for the proposer: only the columns it uses, from files of any age."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from triage.backtest import LOG_ROW_COLUMNS
from triage.shield import LOG_COLUMNS
from triage.store import Store
from triage.weekly_rules import _history, _log_columns


def _store(tmp_path: Path) -> Store:
    """Two generations of sessions; the older file lacks the sasl_username column."""
    store = Store(tmp_path)
    t = datetime(2025, 9, 1, 10, tzinfo=UTC)
    gen = store.begin()
    gen.add("sessions", pl.DataFrame({"connect_time": [t], "client_ip": ["192.0.2.1"],
                                      "helo": ["a.example"], "n_messages": [1]}))
    gen.commit([], {}, {})
    gen = store.begin()
    gen.add("sessions", pl.DataFrame({"connect_time": [t], "client_ip": ["192.0.2.2"],
                                      "helo": ["b.example"], "n_messages": [0],
                                      "sasl_username": ["alice"], "tls": ["TLSv1.3"]}))
    gen.commit([], {}, {})
    return store


def test_read_columns_missing_ok(tmp_path: Path) -> None:
    store = _store(tmp_path)
    got = store.read("sessions", columns=["client_ip", "sasl_username"], missing_ok=True)
    assert got.columns == ["client_ip", "sasl_username"]
    assert sorted(got.rows(), key=str) == [("192.0.2.1", None), ("192.0.2.2", "alice")]
    with pytest.raises(Exception):  # noqa: B017 - polars' own error for a missing column
        store.read("sessions", columns=["client_ip", "sasl_username"])


def test_history_reads_the_log_columns_the_proposer_uses(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _, logs = _history(store, 180)
    assert set(logs.sessions.columns) == {"connect_time", "client_ip", "helo", "n_messages",
                                          "sasl_username"}
    assert set(_log_columns("sessions")) == set(LOG_COLUMNS["sessions"]) \
        | set(LOG_ROW_COLUMNS["sessions"])
    assert logs.sessions.sort_values("client_ip")["sasl_username"].isna().tolist() \
        == [True, False]
