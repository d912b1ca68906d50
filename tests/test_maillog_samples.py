"""The annotated samples under tests/samples/maillog/: every line is read as its comment says.

Each data line follows a ``# expect: {...}`` comment naming the fields it must produce, or
``# expect: null`` (no event), or ``{"unparsed": "reason"}``. Test ids are ``file:line``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from triage.ingest import linekinds
from triage.ingest.maillog import ReadOptions, read_chunks

SAMPLES = Path(__file__).parent / "samples" / "maillog"
OPTS = ReadOptions(year=2026, timezone="UTC")


def _cases() -> list[Any]:
    cases = []
    for path in sorted(SAMPLES.glob("*.log")):
        lines = path.read_text(encoding="utf-8").split("\n")
        for i, line in enumerate(lines):
            if line.startswith("# expect:"):
                expect = json.loads(line.removeprefix("# expect:"))
                cases.append(pytest.param(path, i + 2, expect, id=f"{path.name}:{i + 2}"))
    return cases


_PARSED: dict[Path, tuple[pl.DataFrame, pl.DataFrame]] = {}


def _parsed(path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    if path not in _PARSED:
        chunks = list(read_chunks([path], OPTS))
        _PARSED[path] = (pl.concat([c.events for c in chunks]),
                         pl.concat([c.unparsed for c in chunks]))
    return _PARSED[path]


@pytest.mark.parametrize(("path", "line_no", "expect"), _cases())
def test_sample_line(path: Path, line_no: int, expect: dict[str, Any] | None) -> None:
    events, unparsed = _parsed(path)
    row = events.filter(pl.col("line_no") == line_no)
    bad = unparsed.filter(pl.col("line_no") == line_no)
    if expect is None:
        assert row.height == 0, row.to_dicts()
        assert bad.height == 0, "a non-mail line is counted, not reported as unparsed"
        return
    if "unparsed" in expect:
        assert row.height == 0, row.to_dicts()
        assert bad.height == 1 and expect["unparsed"] in bad["reason"][0]
        return
    assert row.height == 1, f"no event; unparsed: {bad.to_dicts()}"
    got = row.row(0, named=True)
    for key, want in expect.items():
        if key == "conn_use":
            continue
        value = got[key]
        if isinstance(value, datetime):
            value = value.isoformat()
        assert value == want, f"{key}: {value!r} != {want!r}"


def test_every_line_kind_has_a_sample() -> None:
    kinds = set()
    for path in SAMPLES.glob("*.log"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("# expect:"):
                expect = json.loads(line.removeprefix("# expect:")) or {}
                kinds.add(expect.get("kind"))
    missing = set(linekinds.KIND_NAMES) - kinds
    assert not missing, f"line kinds without an annotated sample: {sorted(missing)}"


def test_samples_have_no_unexpected_unparsed_lines() -> None:
    for path in SAMPLES.glob("*.log"):
        text = path.read_text(encoding="utf-8").split("\n")
        allowed = {i + 2 for i, line in enumerate(text)
                   if line.startswith("# expect:") and "unparsed" in line}
        comments = {i + 1 for i, line in enumerate(text) if line.startswith("#")}
        _, unparsed = _parsed(path)
        unexpected = set(unparsed["line_no"].to_list()) - allowed - comments
        assert not unexpected, (path.name, sorted(unexpected))
