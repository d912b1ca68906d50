#!/usr/bin/env python3
"""Benchmark: `triage scan --no-review` with nothing new, against Python's own start.

Copies the samples into a temporary directory, scans them once (not timed), then times, in
turns so that they share the machine's load: `python3 -c pass`, importing the CLI, and the
second scan (text and --json). Prints the best and the median of each and the rescan's
best as a multiple of Python's start.

    python3 tests/bench/noop_bench.py [--runs 15] [--samples DIR]

Target (issue "The weekly loop"): a second scan with nothing new finishes in under 1 s.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

# the sibling script (run as a script, this folder is on sys.path)
from scan_bench import timed

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--samples", type=Path, default=SAMPLES)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="noop_bench."))
    try:
        data = work / "samples"
        shutil.copytree(args.samples, data, ignore=shutil.ignore_patterns(".state", "*.py"))
        cfg = data / "triage.toml"
        text = cfg.read_text().replace('state_dir = ".state"', f'state_dir = "{work}/state"')
        cfg.write_text(text.replace('postfix_dir = ".state/maps"',
                                    f'postfix_dir = "{work}/state/maps"'))
        scan = [sys.executable, "-m", "triage.cli", "scan", "--config", str(cfg),
                "--no-review"]
        t_first = timed(scan)
        cases = {
            "python3 -c pass": [sys.executable, "-c", "pass"],
            "import the CLI": [sys.executable, "-c", "import triage.cli.app"],
            "scan, nothing new": scan,
            "  the same, --json": [*scan, "--json"],
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, cmd in cases.items():
                times[name].append(timed(cmd))
        print(f"first scan of the samples {t_first:.2f} s (not part of the comparison)")
        print(f"{'':22} {'best':>7} {'median':>7}   ({args.runs} runs each, interleaved)")
        for name, ts in times.items():
            print(f"{name:22} {min(ts):6.3f}s {statistics.median(ts):6.3f}s")
        base, again = min(times["python3 -c pass"]), min(times["scan, nothing new"])
        print(f"scan, nothing new: {again / base:.1f} x Python's start (best of each); "
              f"target < 1 s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
