#!/usr/bin/env python3
"""Benchmark: `triage parse` (all tables assembled, written as Parquet) against pflogsumm.

Makes a mixed-format mail.log with the reference generator, then runs both on the same file
in the same invocation and prints wall time, lines/s, peak RSS and the ratio. With --big it
also parses a 5x larger file, to show that memory stays bounded.

    python3 tests/bench/parse_bench.py [--lines 1000000] [--big] [--keep DIR]

Targets (issue "Foundation"): throughput >= 3x pflogsumm's; peak RSS < 300 MB for 1M lines,
and the 5M-line file within 1.25x of that.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
DEFAULT_GENERATOR = HERE.parents[3] / "shared" / "reference" / "gen_maillog.py"


def run(cmd: list[str], stdout: int | None = subprocess.DEVNULL) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS in MB of that process). Its CPU time
    (user + system) goes to ``CPU``: steadier than wall time on a busy machine."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd[0]} failed: {err[-2000:]}")
    CPU[cmd[0] if cmd[0] != sys.executable else "triage"] = usage.ru_utime + usage.ru_stime
    return wall, usage.ru_maxrss / 1024


CPU: dict[str, float] = {}


def make_log(generator: Path, lines: int, path: Path) -> None:
    subprocess.run([sys.executable, str(generator), "-n", str(lines), "--ts", "mixed",
                    "-o", str(path)], check=True, stdout=subprocess.DEVNULL)


def triage_parse(log: Path, out: Path) -> tuple[float, float]:
    return run([sys.executable, "-m", "triage.cli", "parse", str(log), "--table", "all",
                "--format", "parquet", "--out", str(out)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--big", action="store_true", help="also parse a 5x larger file")
    ap.add_argument("--generator", type=Path, default=Path(
        os.environ.get("TRIAGE_GENERATOR", DEFAULT_GENERATOR)))
    ap.add_argument("--keep", type=Path, help="keep the logs and outputs in this directory")
    args = ap.parse_args()
    if not args.generator.is_file():
        sys.exit(f"generator not found: {args.generator} (use --generator)")
    if shutil.which("pflogsumm") is None:
        sys.exit("pflogsumm not installed (Debian package pflogsumm)")
    work = args.keep or Path(tempfile.mkdtemp(prefix="parse_bench."))
    work.mkdir(parents=True, exist_ok=True)
    try:
        log = work / "mail.log"
        if not log.exists():
            make_log(args.generator, args.lines, log)
        n = sum(1 for _ in log.open("rb"))
        t_pf, rss_pf = run(["pflogsumm", str(log)])
        cpu_pf = CPU["pflogsumm"]
        t_tr, rss_tr = triage_parse(log, work / "out")
        cpu_tr = CPU["triage"]
        print(f"lines           {n:>12,}")
        for name, t, rss, cpu in (("pflogsumm", t_pf, rss_pf, cpu_pf),
                                  ("triage parse", t_tr, rss_tr, cpu_tr)):
            print(f"{name:15} {t:8.2f} s  {n / t:>10,.0f} lines/s  peak RSS {rss:6.0f} MB  "
                  f"CPU {cpu:6.2f} s")
        print(f"ratio           {t_pf / t_tr:8.2f} x pflogsumm's throughput (target >= 3)")
        if args.big:
            big = work / "mail5.log"
            if not big.exists():
                make_log(args.generator, args.lines * 5, big)
            t_big, rss_big = triage_parse(big, work / "out5")
            print(f"triage parse 5x {t_big:8.2f} s  {5 * n / t_big:>10,.0f} lines/s  peak RSS "
                  f"{rss_big:6.0f} MB = {rss_big / rss_tr:.2f} x the 1x file (target <= 1.25)")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
