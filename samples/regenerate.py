#!/usr/bin/env python3
"""Regenerate samples/: six ISO weeks of mail.log and the Procmail Maildirs, written by the
real Postfix test bench (tests/postfixbench) replaying the SpamAssassin corpus.

    sudo python3 samples/regenerate.py [--corpus DIR] [--out samples]

Needs root and the Debian packages listed in .ci/run. Takes a few minutes. See
samples/README.md for what is in the data and how its timestamps are made.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))

from postfixbench import Bench, BenchSpec  # noqa: E402
from postfixbench.replay import replay  # noqa: E402
from postfixbench.scenario import LOCAL_USERS, build_plan  # noqa: E402
from postfixbench.timewarp import (  # noqa: E402
    Segment,
    rewrite,
    shift_header_dates,
    warp_message,
    write_rotated,
)

DELIVERY = re.compile(rb" postfix/local\[\d+\]: ([0-9A-F]+): to=<.*status=sent ")
DEFAULT_CORPUS = HERE.parent.parent / "shared" / "corpora" / "spamassassin"


def sample_spec() -> BenchSpec:
    spec = BenchSpec(myhostname="mx.example.org", mydomain="example.org",
                     other_domains=(), users=LOCAL_USERS)
    spec.mx_records.append(("example.org", "mx.example.org"))
    spec.txt_records += [("example.org", "v=spf1 mx -all"),
                         ("_dmarc.example.org", "v=DMARC1; p=reject")]
    return spec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--seed", type=int, default=20250901)
    args = ap.parse_args()
    t0 = time.monotonic()
    plan = build_plan(args.corpus, sample_spec(), seed=args.seed)
    print(f"plan: {len(plan.items)} sessions, {Counter(i.kind for i in plan.items)}",
          flush=True)
    segments: list[Segment] = []
    outcome: Counter[str] = Counter()
    delivered_labels: Counter[str] = Counter()
    with Bench.start(plan.spec) as bench:
        next_free = plan.items[0].sim_time
        for n, item in enumerate(plan.items):
            off = bench.log_offset()
            real_start = datetime.now(UTC).replace(microsecond=0)
            sim_start = max(item.sim_time, next_free)
            # No XCLIENT: the bench's DNS gives Postfix the same rDNS name, so the log looks
            # like a real MX's (no "xclient=" counter in the disconnect lines).
            item.msg.data = shift_header_dates(item.msg.data, plan.shift)
            res = replay(bench, item.msg, item.recipients, helo=item.helo, xclient=False)
            bench.wait_for_log(rf"disconnect from \S+\[{item.msg.hop.client_ip}\]", since=off)
            if res.accepted:
                bench.wait_for_log(rf": {res.queue_id}: removed", since=off)
                delivered_labels[item.msg.label] += 1
            end = bench.log_offset()
            segments.append(Segment(off, end, real_start, sim_start))
            took = datetime.now(UTC) - real_start
            next_free = sim_start + took + timedelta(seconds=1)
            outcome[f"{item.kind}:{'accepted' if res.accepted else res.stage + str(res.code)}"] += 1
            if n % 100 == 0:
                print(f"  {n}/{len(plan.items)} replayed", flush=True)
        bench.wait_idle()
        time.sleep(0.5)
        bench.stop(remove=False)
        log = bench.paths.maillog.read_bytes()
        lines = rewrite(log, segments)
        # The sessions' simulated times (not the raw corpus times) decide delivery times.
        delivered_at = {}
        for when, line in lines:
            m = DELIVERY.search(line)
            if m:
                delivered_at[m.group(1).decode()] = when
        write_rotated(lines, args.out, plan.first_day, plan.weeks)
        counts = _copy_maildirs(bench, args.out / "maildir", delivered_at, plan.first_day,
                                plan.weeks)
        shutil.rmtree(bench.paths.root, ignore_errors=True)
    manifest = {
        "generated_by": "samples/regenerate.py",
        "seed": args.seed,
        "first_day": plan.first_day.isoformat(),
        "weeks": plan.weeks,
        "year": plan.first_day.year,
        "log_timezone": "UTC",
        "myhostname": plan.spec.myhostname,
        "sessions": len(plan.items),
        "sessions_by_kind_and_outcome": dict(sorted(outcome.items())),
        "maildir_messages": counts,
        "rules": plan.notes["rules"],
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest, indent=2))
    print(f"done in {time.monotonic() - t0:.0f}s")
    return 0


def _copy_maildirs(bench: Bench, dest: Path, delivered_at: dict[str, datetime],
                   first_day: object, weeks: int) -> dict[str, int]:
    if dest.exists():
        shutil.rmtree(dest)
    last_week = max(delivered_at.values()) - timedelta(days=7) if delivered_at else None
    counts: dict[str, int] = {}
    for user in LOCAL_USERS:
        for folder in ("", ".Spam"):
            src = bench.paths.maildir(user) / folder
            out = dest / user / folder
            n = 0
            for f in sorted((src / "new").glob("*")) if (src / "new").is_dir() else []:
                qid_time = warp_message(f, delivered_at, out, seen=False)
                if qid_time is None:
                    continue
                when = datetime.fromtimestamp(qid_time.stat().st_mtime, UTC)
                if last_week is not None and when < last_week:
                    # Older mail has been read: Maildir moves it to cur/ with the S flag.
                    seen = out / "cur" / (qid_time.name + ":2,S")
                    seen.parent.mkdir(parents=True, exist_ok=True)
                    qid_time.rename(seen)
                n += 1
            counts[f"{user}/{folder or 'INBOX'}"] = n
    return counts


if __name__ == "__main__":
    sys.exit(main())
