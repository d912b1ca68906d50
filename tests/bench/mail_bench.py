"""Messages per second of `read_mailboxes` vs a bare mail-parser loop, in the same run.

    python tests/bench/mail_bench.py [CORPUS_DIR] [--repeat N]

CORPUS_DIR defaults to ../shared/corpora/spamassassin relative to the repository (the
SpamAssassin public corpus: easy_ham, easy_ham_2, hard_ham, spam, spam_2). The baseline reads
each file and calls mailparser.parse_from_bytes on it, nothing else; triage reads the same
files and builds the full mail table (Received grammar, trusted hop, auth results, address
normalisation). Peak memory is measured in a child process per side, and once more for
triage on a doubled folder list to show that memory does not grow with the folder's size
beyond the table itself.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

SETS = ["easy_ham", "easy_ham_2", "hard_ham", "spam", "spam_2"]
HOSTS = ["phobos.labs.netnoteinc.com", "phobos.labs.spamassassin.taint.org", "jmason.org",
         "spamassassin.taint.org", "zzzzason.org", "netnoteinc.com", "mail.netnoteinc.com",
         "mandark.labs.netnoteinc.com", "dogma.slashnull.org", "webnote.net",
         "hq.pro-ns.net", "linux.midrange.com", "lerami.lerctr.org"]


def _files(root: Path) -> list[Path]:
    return [root / s / f for s in SETS for f in sorted(os.listdir(root / s))]


def baseline(root: Path, q: mp.Queue) -> None:  # type: ignore[type-arg]
    import mailparser

    logging.getLogger("mailparser").setLevel(logging.CRITICAL)
    files = _files(root)
    t = time.perf_counter()
    n = 0
    for f in files:
        mailparser.parse_from_bytes(f.read_bytes())
        n += 1
    q.put((n, time.perf_counter() - t, _peak_mb()))


def triage_side(root: Path, copies: int, q: mp.Queue) -> None:  # type: ignore[type-arg]
    from triage.ingest.mailtable import read_mailboxes

    paths = [root / s for s in SETS] * copies
    before = _peak_mb()  # interpreter + pandas + pyarrow, before any message
    t = time.perf_counter()
    df = read_mailboxes(paths, my_hostnames=HOSTS)
    elapsed = time.perf_counter() - t
    table_mb = df.memory_usage(deep=True).sum() / 2**20
    q.put((len(df), elapsed, _peak_mb(), float(df["trusted"].mean()), before, table_mb))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(target, *args):  # type: ignore[no-untyped-def]
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    p = mp.Process(target=target, args=(*args, q))
    p.start()
    res = q.get()
    p.join()
    return res


def main() -> int:
    here = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", default=str(here.parent / "shared/corpora/spamassassin"))
    ap.add_argument("--repeat", type=int, default=1, help="runs per side (best is kept)")
    args = ap.parse_args()
    root = Path(args.corpus)
    if not all((root / s).is_dir() for s in SETS):
        print(f"corpus not found under {root}", file=sys.stderr)
        return 2
    base = min((_run(baseline, root) for _ in range(args.repeat)), key=lambda r: r[1])
    ours = min((_run(triage_side, root, 1) for _ in range(args.repeat)), key=lambda r: r[1])
    double = _run(triage_side, root, 2)
    b_rate, o_rate = base[0] / base[1], ours[0] / ours[1]
    print(f"messages: {base[0]}")
    print(f"mail-parser loop : {b_rate:8.0f} msg/s  ({base[1]:.2f} s, peak {base[2]:.0f} MB)")
    print(f"triage mail table: {o_rate:8.0f} msg/s  ({ours[1]:.2f} s, peak {ours[2]:.0f} MB, "
          f"trusted hop {ours[3]:.1%})")
    print(f"ratio triage/mail-parser: {o_rate / b_rate:.2f}")
    for label, r in (("1x folders", ours), ("2x folders", double)):
        print(f"memory {label}: {r[0]} rows, start {r[4]:.0f} MB, peak {r[2]:.0f} MB, "
              f"table {r[5]:.0f} MB, peak minus start minus table {r[2] - r[4] - r[5]:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
