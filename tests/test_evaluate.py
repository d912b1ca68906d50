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


def _write_maildir(folder: Path, rows: pd.DataFrame) -> None:
    """One message per row, received by mx.example.org from the row's client."""
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


def test_cli_json(tmp_path: Path) -> None:
    from triage.cli.app import app

    spam, ham = _data()
    _write_maildir(tmp_path / "spam", spam)
    _write_maildir(tmp_path / "ham", ham)
    res = CliRunner().invoke(app, ["evaluate", "--spam", str(tmp_path / "spam"), "--ham",
                                   str(tmp_path / "ham"), "--my-hostname", "mx.example.org",
                                   "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert set(data["total"]) >= {"spam_test", "spam_caught", "ham_test", "ham_rejected"}
    assert data["total"]["spam_test"] == 14 and data["total"]["ham_rejected"] == 0
    assert data["total"]["spam_caught"] == 7


# Our MX is mx.example.org; relay.example.org is our own relay (a backup MX), listed in the
# config by address and by name, which also sends from a second address the config misses.
RELAY_CONFIG = ('my_hostnames = ["mx.example.org", "relay.example.org"]\n'
                'trusted_relays = ["192.0.2.25", "relay.example.org"]\n')


def _forgers_and_relay() -> tuple[pd.DataFrame, pd.DataFrame]:
    # Weeks W36 and W37: spam greeting with our MX's or our relay's name, each message from
    # its own network and sender (nothing else ties them); ham from a correspondent daily,
    # and in W37 our relay's own mail, from its listed address (its own Received header
    # lost, so it is the trusted hop) and from its second address.
    spam = [row("spam", d, f"203.0.{d * 2 + k}.9", None,
                "mx.example.org" if k == 0 else "relay.example.org", f"x@s{d}k{k}.example")
            for d in range(14) for k in (0, 1)]
    ham = [row("ham", d, "192.0.2.10", "mail.example.com", "mail.example.com",
               f"f{d}@example.com") for d in range(14)]
    ham += [row("ham", d, ip, None, "relay.example.org", f"me{d}@example.org")
            for d in (8, 10) for ip in ("192.0.2.25", "198.51.100.40")]
    return frame(spam), frame(ham)


def test_our_relay_is_never_refused_as_claiming_to_be_us() -> None:
    """A HELO with our MX's name from outside our networks is refused; our relay greets us
    with its own name, from its listed address (mynetworks, permitted before any map) or
    from one the config misses (its name is never part of the "claims to be us" rule)."""
    from triage.propose import ProposeOptions

    spam, ham = _forgers_and_relay()
    opts = ProposeOptions(my_hostnames=("mx.example.org", "relay.example.org"),
                          trusted_relays=("192.0.2.25", "relay.example.org"))
    first, second = evaluate(spam, ham, options=opts)["periods"]
    assert first["spam_caught"] == 0 and first["ham_rejected"] == 0
    assert second["ham_test"] == 11 and second["ham_rejected"] == 0
    # every forger of the MX's name is refused in W37, no forger of the relay's name
    assert second["spam_test"] == 14 and second["spam_caught"] == 7


def test_cli_passes_the_configs_relays(tmp_path: Path) -> None:
    from triage.cli.app import app

    spam, ham = _forgers_and_relay()
    for name, rows in (("spam", spam), ("ham", ham)):
        _write_maildir(tmp_path / name, rows)
    (tmp_path / "triage.toml").write_text(RELAY_CONFIG)
    res = CliRunner().invoke(app, ["evaluate", "--spam", str(tmp_path / "spam"), "--ham",
                                   str(tmp_path / "ham"), "--config",
                                   str(tmp_path / "triage.toml"), "--json"])
    assert res.exit_code == 0, res.output
    total = json.loads(res.output)["total"]
    assert (total["ham_test"], total["ham_rejected"]) == (18, 0)
    assert (total["spam_test"], total["spam_caught"]) == (28, 7)
