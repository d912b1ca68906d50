"""KindFrames: the time range of a batch (concatenated chunks) and of its kinds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from triage.ingest.kindframes import KindFrames

T0 = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)


def _frame(*minutes: int | None) -> pl.DataFrame:
    times = [None if m is None else T0 + timedelta(minutes=m) for m in minutes]
    return pl.DataFrame({"line_no": list(range(len(times))), "time": times},
                        schema={"line_no": pl.Int64, "time": pl.Datetime("us", "UTC")})


def test_time_range_over_kinds_ignores_nulls_and_empty_frames() -> None:
    kf = KindFrames({"connect": _frame(5, None, 3), "removed": _frame(9, 1),
                     "client": _frame()})
    assert kf.time_range() == (T0 + timedelta(minutes=1), T0 + timedelta(minutes=9))
    assert KindFrames({"client": _frame()}).time_range() is None


def test_concat_time_range_is_that_of_the_whole() -> None:
    a = KindFrames({"connect": _frame(5, 7), "removed": _frame(6)})
    b = KindFrames({"connect": _frame(2), "client": _frame(12, 11)})
    c = KindFrames({"client": _frame()})
    for known in (True, False):
        if known:  # the reader asks each chunk for its range before batching
            for part in (a, b, c):
                part.time_range()
        whole = KindFrames.concat([a, b, c])
        expected = (T0 + timedelta(minutes=2), T0 + timedelta(minutes=12))
        assert whole.time_range() == expected
        fresh = KindFrames(dict(whole.frames), whole.file)
        assert fresh.time_range() == expected
