"""Assembly of events into sessions, messages, deliveries and rejects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

import triage
from triage.ingest.logtables import collect_tables
from triage.ingest.maillog import ReadOptions

# The reference generator lives beside the repository (../shared/reference) on the machines this
# project is developed and tested on; TRIAGE_REFERENCE points elsewhere.
_REFERENCE_DIRS = [Path(p) for p in (os.environ.get("TRIAGE_REFERENCE"),
                                     Path(__file__).resolve().parents[2] / "shared" / "reference",
                                     "/work/shared/reference") if p]
GENERATOR = next((d / "gen_maillog.py" for d in _REFERENCE_DIRS
                  if (d / "gen_maillog.py").is_file()), _REFERENCE_DIRS[0] / "gen_maillog.py")

# A small log: content-filter hop, NOQUEUE reject, SPF and milter results, a reused queue id
# refused by header_checks, and a session still open at the end.
CHAIN = (Path(__file__).parent / "samples" / "chain" / "mail.log").read_text()


@pytest.fixture
def chain_log(tmp_path: Path) -> Path:
    path = tmp_path / "mail.log"
    path.write_text(CHAIN)
    return path


def _tables(path: Path, **kw: int) -> dict[str, pl.DataFrame]:
    frames, _ = collect_tables([path], ReadOptions(year=2026, timezone="UTC", **kw))
    return frames


def test_content_filter_hop_is_one_chain(chain_log: Path) -> None:
    m = _tables(chain_log)["messages"].sort("first_seen")
    first, child, reused = m.row(0, named=True), m.row(1, named=True), m.row(2, named=True)
    assert (first["queue_id"], child["queue_id"], reused["queue_id"]) == (
        "AAA111", "BBB222", "AAA111")
    assert first["parent_queue_id"] is None and child["parent_queue_id"] == "AAA111"
    assert m.filter(pl.col("parent_queue_id").is_null()).height == 2  # two root messages
    assert first["client_ip"] == "192.0.2.10" and first["sender"] == "alice@example.com"
    assert first["spf_result"] == "pass" and first["helo"] == "mail.example.com"
    assert first["dkim_result"] == "pass" and first["dmarc_result"] == "pass"
    assert first["status"] == "delivered" and child["status"] == "delivered"
    # the reused queue id is a second incarnation, refused by header_checks
    assert reused["incarnation"] == 1 and reused["status"] == "rejected"
    assert reused["client_ip"] == "203.0.113.5" and reused["helo"] == "spam.example"
    assert reused["reject_reason"] == "no thanks"


def test_sessions_and_their_rejects(chain_log: Path) -> None:
    t = _tables(chain_log)
    s = t["sessions"].sort("connect_time")
    assert s.height == 4
    first = s.row(0, named=True)
    assert first["client_ip"] == "192.0.2.10" and first["n_rejects"] == 1
    assert first["n_messages"] == 1 and first["helo"] == "mail.example.com"
    assert first["commands"].endswith("commands=5/6")
    last = s.row(3, named=True)
    assert last["disconnect_time"] is None  # still open when the log ends
    r = t["rejects"]
    assert r.height == 2
    noqueue = r.filter(pl.col("queue_id").is_null()).row(0, named=True)
    assert noqueue["reason_class"] == "unknown_user" and noqueue["stage"] == "RCPT"
    # the NOQUEUE reject is attached to its session, and so is the message it then accepted
    start = int(datetime(2026, 11, 28, 8, 0, tzinfo=UTC).timestamp() * 1_000_000)
    assert noqueue["session_id"] == first["session_id"] == f"mx/100/{start}"
    m = t["messages"].filter(pl.col("queue_id") == "AAA111").sort("first_seen")
    later = start + 3600 * 1_000_000
    assert m["session_id"].to_list() == [f"mx/100/{start}", f"mx/100/{later}"]
    assert first["spf_result"] == "pass"  # policyd-spf, matched by client address and time
    header = r.filter(pl.col("queue_id") == "AAA111").row(0, named=True)
    assert header["stage"] == "DATA" and header["object"] == "header"


def test_deliveries_mark_hops(chain_log: Path) -> None:
    d = _tables(chain_log)["deliveries"].sort("time")
    assert d["hop"].to_list() == [True, False]
    assert d["next_queue_id"].to_list() == ["BBB222", None]


@pytest.mark.parametrize("chunk_bytes", [300, 700, 2000])
def test_chunking_does_not_change_the_tables(chain_log: Path, chunk_bytes: int) -> None:
    whole = _tables(chain_log)
    split = _tables(chain_log, chunk_bytes=chunk_bytes)
    for name in ("sessions", "messages", "deliveries", "rejects"):
        a = whole[name].sort(whole[name].columns[:4])
        b = split[name].sort(split[name].columns[:4])
        assert a.equals(b), name


def test_read_maillog_returns_pandas_with_tz_aware_times(chain_log: Path) -> None:
    logs = triage.read_maillog(chain_log, year=2026, timezone="UTC")
    assert list(logs.rejects.columns[:6]) == ["time", "host", "program", "pid", "queue_id",
                                             "stage"]
    assert str(logs.messages["first_seen"].dt.tz) == "UTC"
    assert logs.events["time"].iloc[0] == datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
    assert len(logs.unparsed) == 0


@pytest.mark.skipif(not GENERATOR.is_file(), reason=f"reference generator not found at "
                    f"{GENERATOR} (set TRIAGE_REFERENCE)")
def test_generated_log_matches_truth(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    subprocess.run([sys.executable, str(GENERATOR), "-n", "30000", "--ts", "mixed",
                    "--seed", "7", "-o", str(log)], check=True, capture_output=True)
    truth = json.loads((tmp_path / "mail.log.truth.json").read_text())
    # the generator writes local time at UTC+1 (its tz_minutes); traditional stamps carry none
    frames, stats = collect_tables([log], ReadOptions(timezone="Etc/GMT-1"))
    m, d, r, e = (frames[n] for n in ("messages", "deliveries", "rejects", "events"))
    assert frames["unparsed"].height == 0
    assert stats.lines == truth["lines_written"]
    noqueue = r.filter(pl.col("queue_id").is_null() & pl.col("program").str.ends_with("smtpd"))
    assert noqueue.height == truth["smtpd_noqueue_reject_lines"]
    bounces = m.filter(pl.col("origin") == "bounce").select("host", "queue_id")
    final = d.filter(~pl.col("hop")).join(bounces, on=["host", "queue_id"], how="anti")
    for status in ("sent", "deferred", "bounced"):
        assert final.filter(pl.col("status") == status).height == truth[f"deliveries_{status}"]
    assert e.filter(pl.col("kind") == "expired").height == truth["expired"]
    assert e.filter(pl.col("kind") == "bounce_notice").height == truth["bounce_notifications"]
    assert m.filter(pl.col("orig_queue_id").is_not_null()).height == truth[
        "content_filter_reinjections"]
    # One root per chain. The generator also counts a hand-over to its second instance
    # (postfix-out) as a received message; triage links that hop to its parent.
    roots = m.filter(pl.col("parent_queue_id").is_null() & pl.col("origin").is_in(
        ["smtpd", "pickup"]))
    parents = m.select("host", pl.col("queue_id").alias("parent_queue_id"),
                       pl.col("instance").alias("parent_instance")).unique()
    cross = m.join(parents, on=["host", "parent_queue_id"]).filter(
        pl.col("instance") != pl.col("parent_instance"))
    assert roots.height + cross.height == truth["messages_received"]
    assert m.filter(pl.col("origin") == "pickup").height == truth[
        "messages_received_via_pickup"]
    assert e.filter(pl.col("kind") == "sasl_failure").height == truth["sasl_auth_failures"]


def test_results_of_a_long_deferred_message_are_kept(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A message that stays in the queue for days still gets its SPF, DKIM and DMARC results
    and its parent link, which were logged when it arrived."""
    lines = [
        "Nov 20 08:00:00 mx postfix/smtpd[100]: connect from mail.example.com[192.0.2.10]",
        "Nov 20 08:00:01 mx policyd-spf[300]: prepend Received-SPF: Pass (mailfrom) "
        "identity=mailfrom; client-ip=192.0.2.10; helo=mail.example.com; "
        "envelope-from=a@example.com; receiver=<UNKNOWN>",
        "Nov 20 08:00:02 mx postfix/smtpd[100]: CCC333: client=mail.example.com[192.0.2.10]",
        "Nov 20 08:00:02 mx opendkim[400]: CCC333: DKIM verification successful",
        "Nov 20 08:00:02 mx opendmarc[500]: CCC333: example.com pass",
        "Nov 20 08:00:03 mx postfix/qmgr[150]: CCC333: from=<a@example.com>, size=1000, "
        "nrcpt=1 (queue active)",
        "Nov 20 08:00:03 mx postfix/smtpd[100]: disconnect from mail.example.com[192.0.2.10] "
        "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
        "Nov 20 08:00:04 mx postfix/smtp[600]: CCC333: to=<x@example.net>, relay=none, "
        "delay=1, delays=1/0/0/0, dsn=4.4.1, status=deferred (connect to mx.example.net"
        "[198.51.100.1]:25: Connection timed out)",
    ]
    # a busy day in between, in many small chunks, so the short windows move on
    for i in range(3000):
        t = f"Nov {21 + i // 1000} {10 + (i % 1000) // 60:02d}:{i % 60:02d}:00"
        lines.append(f"{t} mx postfix/smtpd[{2000 + i}]: connect from b.example[192.0.2.99]")
    lines += [
        "Nov 24 08:00:00 mx postfix/smtp[601]: CCC333: to=<x@example.net>, relay=mx.example.net"
        "[198.51.100.1]:25, delay=345600, delays=345599/0/0.5/0.5, dsn=2.0.0, status=sent "
        "(250 ok)",
        "Nov 24 08:00:01 mx postfix/qmgr[150]: CCC333: removed",
    ]
    path = tmp_path / "mail.log"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr("triage.ingest.logtables.BATCH_EVENTS", 200)  # many assembly steps
    frames, _ = collect_tables([path], ReadOptions(year=2026, timezone="UTC",
                                                   chunk_bytes=8192))
    m = frames["messages"].filter(pl.col("queue_id") == "CCC333").row(0, named=True)
    assert m["status"] == "delivered" and m["n_deferred"] == 1
    assert (m["spf_result"], m["dkim_result"], m["dmarc_result"]) == ("pass", "pass", "pass")


@pytest.mark.parametrize("batch", [10, 50_000])
def test_milter_results_of_a_reused_queue_id_stay_with_their_incarnation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    """A queue id used again 20 minutes later: each incarnation gets the DKIM and DMARC
    results logged while it was in the queue, whatever the batches the log is read in."""
    def message(t0: int, ip: str, dkim: str, dmarc: str) -> list[str]:
        ts = [f"Nov 20 08:{t0 + i:02d}:00" for i in range(4)]
        return [
            f"{ts[0]} mx postfix/smtpd[100]: DDD444: client=c.example[{ip}]",
            f"{ts[1]} mx opendkim[400]: DDD444: {dkim}",
            f"{ts[1]} mx opendmarc[500]: DDD444: {dmarc}",
            f"{ts[2]} mx postfix/qmgr[150]: DDD444: from=<a@example.com>, size=1000, "
            "nrcpt=1 (queue active)",
            f"{ts[2]} mx postfix/local[600]: DDD444: to=<x@example.org>, relay=local, "
            "delay=1, delays=1/0/0/0, dsn=2.0.0, status=sent (delivered to mailbox)",
            f"{ts[3]} mx postfix/qmgr[150]: DDD444: removed",
        ]
    lines = (message(0, "192.0.2.1", "DKIM verification successful", "example.com pass")
             + message(20, "192.0.2.2", "no signature data", "spam.example fail"))
    path = tmp_path / "mail.log"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr("triage.ingest.logtables.BATCH_EVENTS", batch)
    frames, _ = collect_tables([path], ReadOptions(year=2026, timezone="UTC",
                                                   chunk_bytes=256))
    m = frames["messages"].sort("first_seen")
    assert m["incarnation"].to_list() == [0, 1]
    assert m.select("client_ip", "dkim_result", "dmarc_result", "dmarc_domain").rows() == [
        ("192.0.2.1", "pass", "pass", "example.com"),
        ("192.0.2.2", "none", "fail", "spam.example")]
