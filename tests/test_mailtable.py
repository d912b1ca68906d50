"""The mail table: trusted features from forged messages, the CLI, the SpamAssassin corpus."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import triage
from triage.cli.app import app
from triage.ingest.mailtable import MAIL_COLUMNS, read_mailboxes

SAMPLES = Path(__file__).parent / "samples" / "mail"
CORPUS = Path(os.environ.get("TRIAGE_SA_CORPUS", "/work/shared/corpora/spamassassin"))
CONTRACT = ["path", "role", "message_id", "received_time", "host", "queue_id", "trusted",
            "client_ip", "client_name", "helo", "envelope_sender", "from_address",
            "from_domain", "sender_domain", "spf_result", "dkim_result", "dkim_domains",
            "dmarc_result", "subject", "x_mailer", "list_id", "defects"]


@pytest.fixture
def spam_dir(tmp_path: Path) -> Path:
    d = tmp_path / "spam"
    d.mkdir()
    shutil.copy(SAMPLES / "forged_provider.eml", d / "1")
    return d


def test_contract_columns() -> None:
    assert MAIL_COLUMNS[: len(CONTRACT)] == CONTRACT


def test_forged_headers_below_ours_are_ignored(spam_dir: Path) -> None:
    df = triage.read_mailboxes([spam_dir], role="spam", my_hostnames=["mx.example.net"])
    assert len(df) == 1
    row = df.iloc[0]
    # The hop below the content filter's localhost hop is where the client connected.
    assert row["trusted"] and row["trusted_index"] == 1
    assert row["queue_id"] == "4WqR7m0Q3hz9sTb" and row["host"] == "mx.example.net"
    assert row["client_ip"] == "203.0.113.66"
    assert row["client_name"] is None
    assert row["helo"] == "mail-ot1-f42.google.example"
    assert row["spf_result"] == "softfail"
    assert row["dkim_result"] == "none" and row["dmarc_result"] == "none"
    assert row["dkim_pass_domains"] is None
    # What the sender wrote is still evidence, labelled as such.
    assert row["dkim_domains"] == "google.example"
    # Registered domains (publicsuffixlist); the full names are kept next to them.
    assert row["from_domain"] == "example.com" and row["sender_domain"] == "example.com"
    assert row["from_domain_full"] == "pay.example.com"
    assert row["envelope_sender"] == "billing@pay.example.com"
    assert row["reply_to_domain"] == "example.org"
    assert row["subject"] == "Your invoice is overdue – act now"
    assert row["message_id_domain"] == "google.example"
    assert str(row["received_time"]) == "2024-09-03 08:00:05+00:00"


def test_authserv_id_of_someone_else_is_ignored(tmp_path: Path) -> None:
    text = (SAMPLES / "forged_provider.eml").read_text()
    text = text.replace("Authentication-Results: mx.example.net; dkim=none",
                        "Authentication-Results: mx.google.example; dkim=pass header.d=x.example")
    (tmp_path / "1").write_text(text)
    row = read_mailboxes([tmp_path], my_hostnames=["mx.example.net"]).iloc[0]
    assert row["dkim_result"] is None and row["dkim_pass_domains"] is None


def test_without_our_hostname_nothing_is_trusted(spam_dir: Path) -> None:
    row = read_mailboxes([spam_dir], my_hostnames=["mx.example.org"]).iloc[0]
    assert not row["trusted"]
    assert row["client_ip"] is None and row["spf_result"] is None


def test_inferred_hostnames(spam_dir: Path) -> None:
    row = read_mailboxes([spam_dir]).iloc[0]
    assert row["client_ip"] == "203.0.113.66"


def test_cli_jsonl_and_csv(spam_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["mail", str(spam_dir), "--role", "spam",
                              "--my-hostname", "mx.*.net"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["client_ip"] == "203.0.113.66"
    assert rows[0]["role"] == "spam"
    out = tmp_path / "m.csv"
    res = runner.invoke(app, ["mail", str(spam_dir), "--format", "csv", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text().splitlines()[0].startswith("path,role,message_id")


def test_cli_missing_folder_is_one_line_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["mail", str(tmp_path / "nope")])
    assert res.exit_code != 0
    assert "no such mail folder" in str(res.exception)


# The hosts that received mail for the corpus' owner, top to bottom of his chain:
# the local Postfix (obfuscated into several names by the corpus' anonymiser), fetchmail on
# localhost, then the MX hosts that fetchmail pulled from. spam_2 also holds spam donated
# by other people, received by their own servers.
SA_HOSTNAMES = [
    "phobos.labs.netnoteinc.com", "phobos.labs.spamassassin.taint.org", "jmason.org",
    "spamassassin.taint.org", "zzzzason.org", "netnoteinc.com", "mail.netnoteinc.com",
    "mandark.labs.netnoteinc.com", "dogma.slashnull.org", "webnote.net",
    "hq.pro-ns.net", "linux.midrange.com", "lerami.lerctr.org",
]
SA_SETS = {"easy_ham": "ham", "easy_ham_2": "ham", "hard_ham": "ham",
           "spam": "spam", "spam_2": "spam"}


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"corpus not found at {CORPUS}")
def test_spamassassin_corpus(capsys: pytest.CaptureFixture[str]) -> None:
    frames = [read_mailboxes([CORPUS / name], role=role, my_hostnames=SA_HOSTNAMES)
              for name, role in SA_SETS.items()]
    import pandas as pd

    df = pd.concat(frames, ignore_index=True)
    assert len(df) == 6046
    assert df["path"].is_unique
    share = float(df["trusted"].mean())
    external = df[df["trusted"] & ~df["local_origin"].fillna(False)]
    ext_share = len(external) / len(df)
    with capsys.disabled():
        print(f"\nSpamAssassin corpus: {len(df)} messages, trusted hop {share:.1%}, "
              f"external client known {ext_share:.1%}, "
              f"with defects {float((df['defects'] > 0).mean()):.1%}")
    # 135 easy_ham messages carry no Received header at all, and several hundred were
    # generated on the owner's MX itself (local_origin: its loopback is the first hop).
    no_received = df["hops"] == 0
    assert share > 0.95 and ext_share > 0.85
    assert (df["trusted"] | no_received).mean() > 0.99
    # No trusted client is ourselves or a documentation artefact.
    assert not external["client_ip"].isin(["127.0.0.1", "::1"]).any()
    assert external["host"].isin([h.lower() for h in SA_HOSTNAMES]).all()
