"""Rule feedback (promotable, stale, ham hits) and `triage init`'s Procmail reading."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from triage.feedback import assess, ham_hits, rule_hits
from triage.initconf import detect, procmail_folders, render
from triage.model import Rule, RuleKind, RuleState

NOW = datetime(2025, 10, 12, tzinfo=UTC)
T = pl.Datetime("us", "UTC")


def _rejects(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"time": T, "host": pl.String, "queue_id": pl.String,
                                      "action": pl.String, "rule_id": pl.String,
                                      "client_ip": pl.String, "sender": pl.String},
                        orient="row")


def test_promotable_stale_and_ham_flag() -> None:
    day = timedelta(days=1)
    rej = _rejects([
        (NOW - 2 * day, "mx", None, "warn", "R0001", "192.0.2.1", "a@x.example"),
        (NOW - 2 * day, "mx", "ABC123", "warning", "R0002", "192.0.2.2", "b@y.example"),
        (NOW - 1 * day, "mx", None, "reject", "R0003", "192.0.2.3", "c@z.example"),
        (NOW - 1 * day, "mx", None, "reject", None, "192.0.2.4", "d@z.example"),
    ])
    mail = pl.DataFrame({"host": ["mx.example.org"], "queue_id": ["ABC123"], "role": ["ham"]})
    sessions = pl.DataFrame({"client_ip": ["192.0.2.3"], "sasl_username": [None]},
                            schema={"client_ip": pl.String, "sasl_username": pl.String})
    hits = rule_hits(rej)
    assert hits.filter(pl.col("rule_id") == "R0001")["warns"].to_list() == [1]
    assert hits["hits"].sum() == 3
    ham = ham_hits(rej, mail, sessions, pl.DataFrame())
    assert ham["rule_id"].to_list() == ["R0002"] and ham["why"].to_list() == ["ham folder"]
    rules = [
        Rule("R0001", RuleKind.CLIENT_CIDR, "192.0.2.1/32", state=RuleState.TRIAL,
             approved=NOW - 20 * day),
        Rule("R0002", RuleKind.HEADER, "/^Subject: hi/", state=RuleState.TRIAL,
             approved=NOW - 20 * day),
        Rule("R0003", RuleKind.CLIENT_CIDR, "192.0.2.3/32", state=RuleState.ACTIVE,
             approved=NOW - 200 * day),
        Rule("R0004", RuleKind.HELO, "/^x$/", state=RuleState.ACTIVE, approved=NOW - 200 * day),
        Rule("R0005", RuleKind.HELO, "/^y$/", state=RuleState.REJECTED),
    ]
    fb = {f.rule_id: f for f in assess(rules, hits, ham, NOW, trial_days=14, stale_days=90)}
    assert set(fb) == {"R0001", "R0002", "R0003", "R0004"}
    assert fb["R0001"].promotable and fb["R0001"].flag == "promotable"
    assert not fb["R0002"].promotable and fb["R0002"].flag == "HAM"
    assert not fb["R0003"].stale and fb["R0004"].stale
    sessions = pl.DataFrame({"client_ip": ["192.0.2.3"], "sasl_username": ["alice"]})
    assert ham_hits(rej, mail, sessions, pl.DataFrame())["why"].to_list() == [
        "ham folder", "authenticated"]


def test_procmailrc_folders_and_init_text(tmp_path: Path) -> None:
    rc = ("MAILDIR=$HOME/Maildir  # Maildir++\nDEFAULT=$MAILDIR/\n"
          ":0:\n* ^X-Spam-Flag: YES\n.Junk/\n:0\n* ^From:.*list\n.Lists/\n:0\n| /usr/bin/true\n")
    folders, default = procmail_folders(rc, tmp_path)
    assert folders == [f"{tmp_path}/Maildir/.Junk", f"{tmp_path}/Maildir/.Lists"]
    assert default == f"{tmp_path}/Maildir"
    (tmp_path / ".procmailrc").write_text(rc)
    logs = tmp_path / "log"
    logs.mkdir()
    (logs / "mail.log").write_text("")
    d = detect(home=tmp_path, log_dir=logs)
    assert d.spam == [f"{tmp_path}/Maildir/.Junk"] and d.ham == [f"{tmp_path}/Maildir"]
    assert d.logs == [f"{logs}/mail.log*"]
    import tomllib

    text = render(d)
    data = tomllib.loads(text)
    assert data["spam"] == d.spam and data["trial_days"] == 14
    assert text.count("\n# ") >= len(data) - 1  # every setting is explained
