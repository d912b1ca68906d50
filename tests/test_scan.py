"""The weekly scan: incremental reads over rotation, crash safety, the lock, the samples' week."""

from __future__ import annotations

import gzip
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from triage.config import Config, load_config
from triage.errors import ConfigError
from triage.ingest.logtables import collect_tables
from triage.ingest.maillog import ReadOptions
from triage.logcursor import plan_reads, read_new
from triage.rulebook import load_rulebook
from triage.scan import scan
from triage.store import ScanBusy, Store, load_history
from triage.weekly import week_summary

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
MTIME = datetime(2025, 10, 12, tzinfo=UTC).timestamp()  # year inference: same for all files
OPTS = ReadOptions(timezone="UTC")


def sample_lines() -> list[bytes]:
    """Every line of the samples' logs, oldest first."""
    out: list[bytes] = []
    for name in ("mail.log.5.gz", "mail.log.4.gz", "mail.log.3.gz", "mail.log.2.gz",
                 "mail.log.1", "mail.log"):
        data = (SAMPLES / name).read_bytes()
        if name.endswith(".gz"):
            data = gzip.decompress(data)
        out.extend(data.splitlines(keepends=True))
    return out


def _append(path: Path, lines: list[bytes]) -> None:
    with path.open("ab") as f:
        f.writelines(lines)
    os.utime(path, (MTIME, MTIME))


def _compress(src: Path, dst: Path) -> None:
    dst.write_bytes(gzip.compress(src.read_bytes()))
    os.utime(dst, (MTIME, MTIME))
    src.unlink()


def rotation_steps(d: Path, lines: list[bytes]):
    """Write the log the way syslog and logrotate (delaycompress) would, yielding between
    steps: append, rotate, late writes into the rotated file, compress, a partial line."""
    n = len(lines)
    cut = [0, n // 6, n // 3, n // 2, 2 * n // 3, 5 * n // 6, n]
    log = d / "mail.log"
    _append(log, lines[cut[0]:cut[1]])
    yield
    _append(log, lines[cut[1]:cut[2]])
    yield
    log.rename(d / "mail.log.1")                               # rotate
    _append(d / "mail.log.1", lines[cut[2]:cut[2] + 5])        # syslog not yet HUPed
    _append(log, lines[cut[2] + 5:cut[3]])
    yield
    _compress(d / "mail.log.1", d / "mail.log.2.gz")           # next rotation
    log.rename(d / "mail.log.1")
    _append(log, lines[cut[3]:cut[4]])
    last = lines[cut[4]]
    _append(log, [last[:10]])                                  # a line being written
    yield
    _append(log, [last[10:], *lines[cut[4] + 1:cut[5]]])
    yield
    os.rename(d / "mail.log.2.gz", d / "mail.log.3.gz")
    _compress(d / "mail.log.1", d / "mail.log.2.gz")
    log.rename(d / "mail.log.1")
    _append(log, lines[cut[5]:cut[6]])
    yield


def _events(frames: list[pl.DataFrame]) -> pl.DataFrame:
    keep = ["time", "host", "program", "pid", "queue_id", "kind", "client_ip"]
    return pl.concat(frames).select(keep).sort(keep, nulls_last=True)


def test_every_line_read_exactly_once_across_rotation(tmp_path: Path) -> None:
    lines = sample_lines()
    d = tmp_path / "log"
    d.mkdir()
    cursors: list = []
    got: list[pl.DataFrame] = []
    total = 0
    for _ in rotation_steps(d, lines):
        inputs = plan_reads(sorted(d.glob("mail.log*")), cursors, OPTS)
        for chunk in read_new(inputs, OPTS):
            got.append(chunk.events)
            total += chunk.lines
        cursors = [i.cursor() for i in inputs if i.duplicate_of is None]
    whole = tmp_path / "whole.log"
    _append(whole, lines)
    want, stats = collect_tables([whole], OPTS, tables=("events",))
    assert total == len(lines) == stats.lines
    assert _events(got).equals(_events([want["events"]]))


def _cfg(tmp: Path, logs: str, spam: tuple[str, ...] = (), ham: tuple[str, ...] = ()
         ) -> Config:
    return Config(source=None, logs=(logs,), spam=spam, ham=ham,
                  my_hostnames=("mx.example.org",), state_dir=tmp / "state",
                  log_timezone="UTC")


def _table(frame: pl.DataFrame,
           drop: tuple[str, ...] = ("file", "line_no", "session_id")) -> pl.DataFrame:
    """Sorted rows without the columns that name the file a row was read from."""
    cols = [c for c in frame.columns if c not in drop and not isinstance(frame.schema[c],
                                                                          pl.List)]
    return frame.select(cols).sort(cols, nulls_last=True)


def test_scans_over_rotation_equal_one_read(tmp_path: Path) -> None:
    lines = sample_lines()
    d = tmp_path / "log"
    d.mkdir()
    cfg = _cfg(tmp_path, str(d / "mail.log*"))
    scanned = 0
    for _ in rotation_steps(d, lines):
        scanned += scan(cfg).lines
    assert scanned == len(lines)
    assert scan(cfg).nothing_new
    whole = tmp_path / "whole.log"
    _append(whole, lines)
    want, _ = collect_tables([whole], OPTS, tables=("rejects", "deliveries"))
    store = Store(cfg.state_dir)
    for table in ("rejects", "deliveries"):
        assert _table(store.read(table)).equals(_table(want[table])), table


def _copy_samples(dst: Path) -> Path:
    """A writable copy of the samples (inputs are never modified, copies included)."""
    shutil.copytree(SAMPLES, dst, ignore=shutil.ignore_patterns(".state", "*.py"))
    cfg = dst / "triage.toml"
    cfg.write_text(cfg.read_text().replace('state_dir = ".state"', 'state_dir = "state"'))
    return cfg


def _history(state: Path) -> dict[str, pl.DataFrame]:
    """The history's tables, sorted, with the copy's own directory taken out of paths."""
    h = load_history(state)
    root = str(state.parent.resolve())
    out = {}
    for t in ("sessions", "messages", "deliveries", "rejects", "mail"):
        frame = pl.from_pandas(getattr(h, t))
        frame = frame.with_columns([pl.col(c).str.replace_all(root, "", literal=True)
                                    for c, dt in frame.schema.items() if dt == pl.String])
        out[t] = _table(frame)
    return out


_SCAN = ("import sys; from triage.config import load_config; from triage.scan import scan; "
         "scan(load_config(sys.argv[1]))")


def test_kill_9_at_random_points_then_rescan_equals_clean_run(tmp_path: Path) -> None:
    clean_cfg = _copy_samples(tmp_path / "clean")
    scan(load_config(clean_cfg))
    want = _history(tmp_path / "clean" / "state")
    cfg = _copy_samples(tmp_path / "crash")
    rng = random.Random(7)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", _SCAN, str(cfg)], check=True)
    full = time.perf_counter() - started
    shutil.rmtree(tmp_path / "crash" / "state")
    kills = attempts = 0
    limit = full
    while kills < 4 and attempts < 20:  # a scan that ends before its kill aims earlier
        attempts += 1
        proc = subprocess.Popen([sys.executable, "-c", _SCAN, str(cfg)])
        time.sleep(rng.uniform(0.1, limit))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        else:
            limit = max(0.2, limit * 0.7)
        proc.wait()
    assert kills >= 3
    scan(load_config(cfg))
    got = _history(tmp_path / "crash" / "state")
    for table in want:
        assert got[table].equals(want[table]), table
    # The store sweeps what killed scans left in its own directories (an interrupted rule
    # file write may leave a temp file in the rulebook; the rule files themselves are whole).
    for sub in ("history", "seen"):
        assert not list((tmp_path / "crash" / "state" / sub).rglob("*.tmp")), sub
    assert not list((tmp_path / "crash" / "state").glob(".*.tmp"))  # state.json's
    # A scan killed after its commit but before its proposals proposes on the next run.
    def proposals(state: Path) -> set[tuple[str, str, str]]:
        return {(str(r.kind), r.key, str(r.state)) for r in load_rulebook(state / "rules")}

    assert proposals(tmp_path / "crash" / "state") == proposals(tmp_path / "clean" / "state")
    assert proposals(tmp_path / "clean" / "state")


def test_second_scan_stops_with_a_clear_message(tmp_path: Path) -> None:
    cfg = load_config(_copy_samples(tmp_path / "s"))
    store = Store(cfg.state_dir)
    with store.lock():
        t0 = time.perf_counter()
        with pytest.raises(ScanBusy, match="another scan is running"):
            scan(cfg, wait=0.3)
        assert 0.3 <= time.perf_counter() - t0 < 3
        proc = subprocess.run([sys.executable, "-m", "triage.cli", "scan", "--wait", "0",
                               "--config", str(cfg.source)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "another scan is running" in proc.stderr
    assert store.state().generation == 0


def test_second_scan_waits_for_the_first(tmp_path: Path) -> None:
    cfg = load_config(_copy_samples(tmp_path / "s"))
    store = Store(cfg.state_dir)
    held = threading.Event()

    def hold() -> None:
        with store.lock():
            held.set()
            time.sleep(0.5)

    t = threading.Thread(target=hold)
    t.start()
    held.wait()
    result = scan(cfg, wait=10)
    t.join()
    assert result.committed and result.lines > 0


def test_missing_folder_names_the_setting(tmp_path: Path) -> None:
    # (a missing mbox in a directory that exists is read as empty: test_scan_followups.py)
    cfg = _cfg(tmp_path, str(SAMPLES / "mail.log"), spam=(str(tmp_path / "nope" / "spam"),))
    with pytest.raises(ConfigError, match="setting 'spam': no such mail folder"):
        scan(cfg)
    with pytest.raises(ConfigError, match="setting 'logs'"):
        scan(replace(cfg, logs=(str(tmp_path / "none*"),)))


def _maildir_count(folder: Path) -> int:
    return sum(1 for sub in ("cur", "new") for p in (folder / sub).iterdir() if p.is_file())


def test_samples_week_and_next_weeks_rule_hits(tmp_path: Path) -> None:
    cfg = load_config(_copy_samples(tmp_path / "s"))
    first = scan(cfg)
    spam = sum(_maildir_count(Path(cfg.resolve(p))) for p in cfg.spam)
    ham = sum(_maildir_count(Path(cfg.resolve(p))) for p in cfg.ham)
    assert sum(first.mail.values()) == spam + ham
    assert first.weeks == [f"2025-W{w}" for w in range(36, 42)]
    store = Store(cfg.state_dir)
    s = week_summary(store)
    assert s["week"] == "2025-W41"
    assert s["refused"]["total"] >= sum(v["rejects"] for v in s["rule_hits"].values()) > 0
    assert s["leaked_spam"] > 0 and s["ham"] > 0
    # Next week: trial rule R0100 warns on a spam client three times; trial rule R0101 warns
    # on a message that is in a ham folder, which must be flagged.
    log = Path(cfg.resolve("mail.log"))
    mtime = log.stat().st_mtime
    ham_qid = store.read("mail").filter(pl.col("role") == "ham")["queue_id"][0]
    t = store.read("messages")["first_seen"].max() + timedelta(days=7)
    stamp = t.strftime("%b %e %H:%M:%S")
    warn = (f"{stamp} mx postfix/smtpd[4242]: NOQUEUE: warn: RCPT from spam.example.net"
            "[192.0.2.7]: <spam.example.net>: Client host trial rule R0100; "
            "from=<a@spam.example.net> to=<bob@example.org> proto=ESMTP helo=<x>\n")
    on_ham = (f"{stamp} mx postfix/cleanup[4243]: {ham_qid}: warning: header Subject: hi "
              "from h.example.com[198.51.100.9]; from=<a@example.com> to=<bob@example.org> "
              "proto=ESMTP helo=<h.example.com>: trial rule R0101\n")
    with log.open("a") as f:
        f.write(warn * 3 + on_ham)
    os.utime(log, (mtime + 7 * 86400, mtime + 7 * 86400))  # the log's year stays 2025
    second = scan(cfg)
    assert second.lines == 4
    nxt = week_summary(store)
    assert nxt["week"] == t.strftime("%G-W%V")
    assert nxt["rule_hits"] == {"R0100": {"rejects": 0, "warns": 3},
                                "R0101": {"rejects": 0, "warns": 1}}
    assert nxt["ham_hits"] == {"R0101": 1}
