#!/usr/bin/env python3
"""Benchmark: `triage scan` of a busy server's week against pflogsumm on the same log lines.

Builds a week: 1M new mail.log lines from the reference generator, 1,000 leaked spam and
10,000 ham as Maildirs (files of the SpamAssassin corpus copied under Maildir names, reused
when the corpus has fewer). Then, in one run: pflogsumm summarising the log, `triage scan
--no-review --json` reading the log and both folders into a fresh history, and a second
scan with nothing new.

    python3 tests/bench/scan_bench.py [--lines 1000000] [--spam 1000] [--ham 10000] [--keep DIR]

Targets (issue "The weekly loop"): the scan takes less time than pflogsumm; the second
scan finishes in under 1 s.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
SHARED = HERE.parents[3] / "shared"
DEFAULT_GENERATOR = SHARED / "reference" / "gen_maillog.py"
DEFAULT_CORPUS = SHARED / "corpora" / "spamassassin"


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} failed: {proc.stderr.decode()[-2000:]}")
    return wall


def maildir(dst: Path, sources: list[Path], count: int) -> None:
    """A Maildir of ``count`` messages copied from ``sources`` (cycled) into cur/."""
    for sub in ("cur", "new", "tmp"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    for i, src in zip(range(count), itertools.cycle(sources), strict=False):
        shutil.copyfile(src, dst / "cur" / f"{1700000000 + i}.M{i}P1.bench:2,S")


def corpus_files(corpus: Path, names: tuple[str, ...]) -> list[Path]:
    return sorted(p for n in names for p in (corpus / n).iterdir()
                  if p.is_file() and not p.name.startswith("cmds"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--spam", type=int, default=1_000)
    ap.add_argument("--ham", type=int, default=10_000)
    ap.add_argument("--generator", type=Path, default=DEFAULT_GENERATOR)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--keep", type=Path, help="keep the inputs in this directory")
    args = ap.parse_args()
    if shutil.which("pflogsumm") is None:
        sys.exit("pflogsumm not installed (Debian package pflogsumm)")
    for p in (args.generator, args.corpus):
        if not p.exists():
            sys.exit(f"not found: {p}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="scan_bench."))
    work.mkdir(parents=True, exist_ok=True)
    try:
        log = work / "log" / "mail.log"
        if not log.exists():
            log.parent.mkdir(exist_ok=True)
            subprocess.run([sys.executable, str(args.generator), "-n", str(args.lines),
                            "--ts", "traditional", "-o", str(log)], check=True,
                           stdout=subprocess.DEVNULL)
        if not (work / "Maildir").exists():
            maildir(work / "Maildir" / ".Spam",
                    corpus_files(args.corpus, ("spam", "spam_2")), args.spam)
            maildir(work / "Maildir", corpus_files(
                args.corpus, ("easy_ham", "easy_ham_2", "hard_ham")), args.ham)
        state = work / "state"
        shutil.rmtree(state, ignore_errors=True)
        cfg = work / "triage.toml"
        # An operator configures the MX names; for the corpus they are the topmost
        # Received hosts of its messages (inferred once here, outside the timings).
        from triage.ingest.mailtable import guess_my_hostnames

        mx = sorted(set(guess_my_hostnames([work / "Maildir/.Spam"]))
                    | set(guess_my_hostnames([work / "Maildir"])))
        cfg.write_text(f'logs = ["{log.parent}/mail.log*"]\nspam = ["{work}/Maildir/.Spam"]\n'
                       f'ham = ["{work}/Maildir"]\nstate_dir = "{state}"\n'
                       f'my_hostnames = {mx!r}\nlog_timezone = "UTC"\n'.replace("'", '"'))
        n = sum(1 for _ in log.open("rb"))
        scan = [sys.executable, "-m", "triage.cli", "scan", "--config", str(cfg),
                "--no-review", "--json"]
        t_pf = timed(["pflogsumm", str(log)])
        t_scan = timed(scan)
        t_again = timed(scan)
        t_import = timed([sys.executable, "-c", "import triage.cli.app"])
        t_python = timed([sys.executable, "-c", "pass"])
        print(f"log lines       {n:>12,}   leaked spam {args.spam:,}   ham {args.ham:,}")
        print(f"pflogsumm       {t_pf:8.2f} s  (log only)")
        print(f"triage scan     {t_scan:8.2f} s  (log + folders, history written)")
        print(f"ratio           {t_pf / t_scan:8.2f} x (pflogsumm time / scan time; target > 1)")
        print(f"scan, nothing new {t_again:6.2f} s  (target < 1 s; {t_import:.2f} s of it is "
              f"starting python and importing the CLI, {t_python:.2f} s starting python; "
              "tests/bench/noop_bench.py times it alone)")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("POLARS_MAX_THREADS", str(os.cpu_count() or 1))
    main()
