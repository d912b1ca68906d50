"""`triage parse` and `triage explain` through the command line, and help for every command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from triage.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
CHAIN = ROOT / "tests" / "samples" / "chain" / "mail.log"
runner = CliRunner()


def _triage(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "triage.cli", *args], capture_output=True,
                          text=True, input=stdin, cwd=ROOT)


def test_parse_jsonl_to_stdout() -> None:
    res = _triage("parse", str(CHAIN), "--year", "2026", "--table", "rejects")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["reason_class"] for r in rows] == ["unknown_user", "header"]
    assert rows[0]["time"].startswith("2026-11-28T08:00:01")
    assert "rejects 2" in res.stderr and "0 unparsed" in res.stderr


def test_parse_all_tables_as_parquet(tmp_path: Path) -> None:
    res = _triage("parse", str(CHAIN), "--year", "2026", "--table", "all", "--format",
                  "parquet", "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    sizes = {p.stem: pl.read_parquet(p).height for p in (tmp_path / "out").glob("*.parquet")}
    assert sizes == {"events": 25, "sessions": 4, "messages": 3, "deliveries": 2,
                     "rejects": 2, "unparsed": 0}
    messages = pl.read_parquet(tmp_path / "out" / "messages.parquet")
    assert messages.schema["first_seen"] == pl.Datetime("us", "UTC")
    # pandas (through pyarrow) reads every table, list columns included (an Arrow schema
    # with string views inside lists could not be read by pandas)
    import pandas as pd

    frames = {p.stem: pd.read_parquet(p) for p in (tmp_path / "out").glob("*.parquet")}
    assert {n: len(f) for n, f in frames.items()} == sizes
    assert frames["messages"]["dkim_domains"].map(lambda v: v is None or len(v) >= 0).all()


def test_parse_csv_to_file_is_complete(tmp_path: Path) -> None:
    out = tmp_path / "sessions.csv"
    res = _triage("parse", str(CHAIN), "--year", "2026", "--table", "sessions", "--format",
                  "csv", "--out", str(out))
    assert res.returncode == 0, res.stderr
    frame = pl.read_csv(out)
    assert frame.height == 4 and "client_ip" in frame.columns
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_parse_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    res = _triage("parse", str(tmp_path / "nope.log"))
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0 and "no such log file" in res.stderr


def test_parse_bad_option_is_a_usage_error() -> None:
    res = _triage("parse", str(CHAIN), "--table", "nonsense")
    assert res.returncode == 2


def test_explain_a_reject_line() -> None:
    line = ("Nov 28 08:49:01 mx postfix/smtpd[1203]: NOQUEUE: reject: RCPT from "
            "unknown[203.0.113.5]: 554 5.7.1 <unknown[203.0.113.5]>: Client host rejected: "
            "blocked by rule R0042; from=<a@spam.example> to=<bob@example.org> proto=ESMTP "
            "helo=<spam.example>")
    res = runner.invoke(app, ["explain", line, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["kind"] == "reject"
    assert out["fields"]["rule_id"] == "R0042" and out["fields"]["helo"] == "spam.example"
    assert out["candidate_kinds"][0] == "reject"


def test_explain_says_why_a_line_is_not_an_event() -> None:
    res = runner.invoke(app, ["explain", "Nov 28 08:49:01 mx postfix/smtpd[1]: connect from",
                              "--json"])
    assert res.exit_code == 0
    out = json.loads(res.output)
    assert out["kind"] is None and "unrecognised" in out["unparsed_reason"]
    res = runner.invoke(app, ["explain", "Nov 28 08:49:01 mx dovecot: imap-login: hi",
                              "--json"])
    assert json.loads(res.output)["note"].startswith("not a mail program line")


def _commands() -> list[str]:
    import typer.main

    group = typer.main.get_command(app)
    names = []
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        subs = getattr(cmd, "commands", None)
        names += [f"{name} {sub}" for sub in subs] if subs else [name]
    return sorted(names)


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help(command: str) -> None:
    res = runner.invoke(app, [*command.split(), "--help"])
    assert res.exit_code == 0
    assert len(res.output.strip()) > 40


@pytest.mark.parametrize("command", _commands())
def test_command_is_described_in_the_readme(command: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(rf"triage {re.escape(command)}\b", readme), \
        f"`triage {command}` is not described in README.md"


def test_evaluate_takes_several_paths_after_one_flag() -> None:
    """The contract's `--spam PATH... --ham PATH...` reads as repeated flags."""
    from triage.cli.app import spread_multi_options

    assert spread_multi_options(["evaluate", "--spam", "a", "b", "--by", "week", "--ham", "c"]) \
        == ["evaluate", "--spam", "a", "--spam", "b", "--by", "week", "--ham", "c"]
    assert spread_multi_options(["parse", "a", "b"]) == ["parse", "a", "b"]
    md = ROOT / "samples" / "maildir"
    spam = [str(md / "alice" / ".Spam"), str(md / "bob" / ".Spam")]
    ham = [str(md / "alice"), str(md / "bob")]
    one = _triage("evaluate", "--spam", *spam, "--ham", *ham, "--json",
                  "--config", str(ROOT / "samples" / "triage.toml"))
    assert one.returncode == 0, one.stderr
    each = _triage("evaluate", "--spam", spam[0], "--spam", spam[1], "--ham", ham[0],
                   "--ham", ham[1], "--json", "--config", str(ROOT / "samples" / "triage.toml"))
    total = json.loads(one.stdout)["total"]
    assert total == json.loads(each.stdout)["total"]
    assert total["spam_test"] + total["ham_test"] + total["unplaced"] == 223 + 624


def test_parse_all_into_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    target.write_bytes(b"previous content")
    res = _triage("parse", str(CHAIN), "--year", "2026", "--table", "all", "--format",
                  "parquet", "--out", str(target))
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert "--out must be a directory" in res.stderr
    assert target.read_bytes() == b"previous content"


def test_writer_thread_writes_in_order_and_hands_errors_back(tmp_path: Path) -> None:
    from triage.cli.output import TableWriter, WriterThread

    out = tmp_path / "t.csv"
    writer = TableWriter("csv", out)
    bg = WriterThread()
    for i in range(5):
        bg.put(writer, pl.DataFrame({"n": [i]}))
    bg.finish()
    writer.close()
    assert out.read_text().split() == ["n", "0", "1", "2", "3", "4"]

    class Broken(TableWriter):
        def write(self, frame: pl.DataFrame) -> None:
            raise OSError("disk full")

    bg = WriterThread()
    bg.put(Broken("csv", tmp_path / "u.csv"), pl.DataFrame({"n": [1]}))
    with pytest.raises(OSError, match="disk full"):
        bg.finish()


def test_parquet_writer_appends_frames_and_iterables(tmp_path: Path) -> None:
    """Frames and iterables of frames go to one file, in order, in row groups of at least
    ROW_GROUP_ROWS rows (the last may be smaller), with the table's schema (chunks with a
    column missing, or all-null under another type, are conformed); pandas reads it."""
    import pandas as pd
    import pyarrow.parquet as pq

    from triage.cli.output import ROW_GROUP_ROWS, TableWriter

    schema = pl.Schema({"n": pl.Int64, "name": pl.String,
                        "time": pl.Datetime("us", "UTC")})
    out = tmp_path / "t.parquet"
    writer = TableWriter("parquet", out, empty=pl.DataFrame(schema=schema))
    n = ROW_GROUP_ROWS * 5 // 2
    big = pl.DataFrame({"n": range(n), "name": [f"h{i % 7}" for i in range(n)]})
    writer.write(big)  # no time column at all
    writer.write(iter([pl.DataFrame({"n": [-1], "name": [None], "time": [None]}),
                       pl.DataFrame(schema=schema),
                       pl.DataFrame({"n": [-2], "name": ["x"]})]))
    writer.close()
    assert writer.rows == n + 2
    back = pl.read_parquet(out)
    assert back.schema == schema
    assert back["n"].to_list() == [*range(n), -1, -2]
    assert back["name"][-1] == "x" and back["time"].null_count() == n + 2
    meta = pq.ParquetFile(out).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [n, 2]
    frame = pd.read_parquet(out)
    assert str(frame["time"].dtype) == "datetime64[us, UTC]" and frame["name"].iloc[0] == "h0"
    assert not list(tmp_path.glob(".*.tmp"))


def test_parse_interrupted_keeps_the_previous_output(tmp_path: Path) -> None:
    """Ctrl-C while `triage parse` streams Parquet: exit 130, the previous files are kept,
    no temporary file is left behind, and the encoding threads do not hold the exit."""
    import os
    import signal
    import time

    lines = CHAIN.read_text().splitlines(keepends=True)
    log = tmp_path / "mail.log"
    log.write_text("".join(lines * (300_000 // len(lines))))
    out = tmp_path / "out"
    out.mkdir()
    (out / "events.parquet").write_bytes(b"previous")
    proc = subprocess.Popen([sys.executable, "-m", "triage.cli", "parse", str(log), "--year",
                             "2026", "--table", "all", "--format", "parquet", "--out",
                             str(out)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(out.glob(".events.parquet.*.tmp")):  # the writers are open: parsing
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert (out / "events.parquet").read_bytes() == b"previous"
    assert sorted(p.name for p in out.iterdir()) == ["events.parquet"]
