"""triage evaluate: a small labelled set whose answer is known by construction."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from helpers_campaign import frame, row
from typer.testing import CliRunner

from triage.evaluate import evaluate, period_of


def _data() -> tuple[pd.DataFrame, pd.DataFrame]:
    # One spam source network sends on days 0-13 (weeks 2025-W36 and W37); ham from an
    # unrelated server both weeks. Week 1 has nothing to learn from; week 2 learns the
    # network (and the sender domain) from week 1.
    spam = [row("spam", d, f"198.51.100.{d % 5 + 1}", None, f"h{d}.spam.example",
                f"x{d}@bulk.example") for d in range(14)]
    ham = [row("ham", d, "192.0.2.10", "mail.example.org", "mail.example.org",
               f"f{d}@example.org") for d in range(14)]
    return frame(spam), frame(ham)


def test_period_of_iso_week() -> None:
    t = pd.Series([pd.Timestamp("2025-09-01", tz="UTC"), pd.Timestamp("2025-08-31", tz="UTC"),
                   pd.NaT])
    assert period_of(t).tolist() == ["2025-W36", "2025-W35", None]


def test_evaluate_known_answer() -> None:
    spam, ham = _data()
    result = evaluate(spam, ham)
    periods = {p["period"]: p for p in result["periods"]}
    assert list(periods) == ["2025-W36", "2025-W37"]
    first, second = periods["2025-W36"], periods["2025-W37"]
    assert first["rules"] == 0 and first["spam_caught"] == 0 and first["spam_test"] == 7
    assert second["rules"] >= 1
    assert second["spam_caught"] == second["spam_test"] == 7
    assert result["total"] == {"spam_test": 14, "spam_caught": 7, "ham_test": 14,
                               "ham_rejected": 0, "unplaced": 0,
                               "rules": second["rules"]}


def test_ham_seen_earlier_is_never_rejected() -> None:
    # The same network sends ham in week 1: no rule may cover it in week 2.
    spam, ham = _data()
    ham = pd.concat([ham, frame([row("ham", 2, "198.51.100.3", None, "ok.example.com",
                                     "friend@ok.example")])], ignore_index=True)
    second = evaluate(spam, ham)["periods"][1]
    assert second["ham_rejected"] == 0


def test_cli_json(tmp_path: Path) -> None:
    from triage.cli.app import app

    def write(folder: Path, rows: pd.DataFrame) -> None:
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True)
        for i, r in enumerate(rows.itertuples()):
            stamp = r.received_time.strftime("%a, %d %b %Y %H:%M:%S +0000")
            text = (f"Return-Path: <{r.envelope_sender}>\n"
                    f"Received: from {r.helo} ({r.client_name or 'unknown'} "
                    f"[{r.client_ip}])\n\tby mx.example.org (Postfix) with ESMTP id "
                    f"Q{i:05d}\n\tfor <u@example.org>; {stamp}\n"
                    f"From: <{r.from_address}>\nSubject: test {i}\n"
                    f"Message-ID: <{r.message_id}>\n\nbody\n")
            (folder / "cur" / f"{i}.eml:2,S").write_text(text)

    spam, ham = _data()
    write(tmp_path / "spam", spam)
    write(tmp_path / "ham", ham)
    res = CliRunner().invoke(app, ["evaluate", "--spam", str(tmp_path / "spam"), "--ham",
                                   str(tmp_path / "ham"), "--my-hostname", "mx.example.org",
                                   "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert set(data["total"]) >= {"spam_test", "spam_caught", "ham_test", "ham_rejected"}
    assert data["total"]["spam_test"] == 14 and data["total"]["ham_rejected"] == 0
    assert data["total"]["spam_caught"] == 7
