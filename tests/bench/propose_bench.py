"""Benchmark: campaigns, proposals and backtest for 10k, 30k and 100k leaked messages
against 100k ham and 1M logged SMTP attempts (synthetic; a script, not a test).

    python3 tests/bench/propose_bench.py [--sizes 10000 30000 100000] [--ham N] [--log N]

Addresses come from the benchmarking range 198.18.0.0/15 (RFC 2544) and 100.64.0.0/10,
names from example.* domains. Spam is a few hundred campaigns (a network, a dynamic rDNS
pool, a sender domain) plus as much one-off noise; ham comes from a few thousand servers;
the log mixes both with unrelated traffic. Prints the time of each stage and the total.
"""

from __future__ import annotations

import argparse
import sys
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd

from triage.propose import ProposeOptions, propose

START = pd.Timestamp("2025-09-01", tz="UTC")


def _ips(prefix: str, third: np.ndarray, fourth: np.ndarray) -> np.ndarray:
    return (prefix + pd.Series(third).astype(str) + "." + pd.Series(fourth).astype(str)) \
        .to_numpy()


def spam_frame(n: int, rng: np.random.Generator, campaigns: int = 300) -> pd.DataFrame:
    """Half the messages in campaigns, half one-off noise."""
    camp = rng.integers(0, campaigns, n)
    noise = rng.random(n) < 0.5
    host = rng.integers(1, 254, n)
    third = np.where(noise, rng.integers(0, 256, n), camp % 256)
    prefix = np.where(noise, "100.64.", "198.18.")
    ip = pd.Series(prefix) + pd.Series(third).astype(str) + "." + pd.Series(host).astype(str)
    cs = pd.Series(camp).astype(str)
    ns = pd.Series(rng.integers(0, 10**9, n)).astype(str)
    name = np.where(noise, None, (pd.Series(host).astype(str) + ".dyn.isp" + cs + ".example")
                    .to_numpy())
    helo = np.where(noise, ("pc" + ns + ".home.example").to_numpy(),
                    ("relay" + pd.Series(host).astype(str) + ".isp" + cs + ".example").to_numpy())
    sender = np.where(noise, ("u@n" + ns + ".example").to_numpy(),
                      ("offer" + ns + "@promo" + cs + ".example").to_numpy())
    return _mail("spam", n, rng, ip.to_numpy(), name, helo, sender)


def ham_frame(n: int, rng: np.random.Generator, servers: int = 3000) -> pd.DataFrame:
    srv = rng.integers(0, servers, n)
    ip = _ips("198.19.", srv // 250, srv % 250 + 1)
    ss = pd.Series(srv).astype(str)
    name = ("mail.org" + ss + ".example").to_numpy()
    sender = ("person@org" + ss + ".example").to_numpy()
    return _mail("ham", n, rng, ip, name, name, sender)


def _mail(role: str, n: int, rng: np.random.Generator, ip: np.ndarray, name: np.ndarray,
          helo: np.ndarray, sender: np.ndarray) -> pd.DataFrame:
    t = START + pd.to_timedelta(rng.integers(0, 6 * 7 * 86400, n), unit="s")
    dom = pd.Series(sender).str.rpartition("@")[2]
    return pd.DataFrame({
        "role": role, "received_time": t, "host": "mx.example.org",
        "queue_id": [f"Q{role[0]}{i:07X}" for i in range(n)], "client_ip": ip,
        "client_name": name, "helo": helo, "envelope_sender": sender,
        "from_address": sender, "from_domain": dom.to_numpy(), "message_id": None,
        "x_mailer": None, "list_id": None, "subject": "hello"})


def log_tables(n: int, spam: pd.DataFrame, ham: pd.DataFrame,
               rng: np.random.Generator) -> SimpleNamespace:
    """n attempts: 30 % replayed ham, 30 % replayed spam, 40 % unrelated (some refused)."""
    parts = [ham.sample(int(n * 0.3), replace=True, random_state=1),
             spam.sample(int(n * 0.3), replace=True, random_state=2)]
    k = n - sum(len(p) for p in parts)
    other = _mail("other", k, rng, _ips("100.65.", rng.integers(0, 256, k),
                                        rng.integers(1, 255, k)),
                  np.array([None] * k), np.array(["unknown.example"] * k),
                  ("x@rand" + pd.Series(rng.integers(0, 10**6, k)).astype(str)
                   + ".example").to_numpy())
    rows = pd.concat([*parts, other], ignore_index=True)
    refused = rng.random(len(rows)) < 0.3
    msgs = rows[~refused]
    rej = rows[refused]
    # replayed mail keeps its queue id (the log knows it), the rest gets fresh ones
    qid = msgs["queue_id"].where(msgs["role"] != "other",
                                 pd.Series([f"L{i:08X}" for i in range(len(msgs))],
                                           index=msgs.index))
    messages = pd.DataFrame({
        "client_ip": msgs["client_ip"], "client_name": msgs["client_name"],
        "helo": msgs["helo"], "sender": msgs["envelope_sender"],
        "first_seen": msgs["received_time"], "queue_id": qid, "origin": "smtpd",
        "sasl_username": None})
    rejects = pd.DataFrame({
        "client_ip": rej["client_ip"], "client_name": rej["client_name"],
        "helo": rej["helo"], "sender": rej["envelope_sender"], "time": rej["received_time"],
        "queue_id": None})
    return SimpleNamespace(messages=messages, rejects=rejects, sessions=None, deliveries=None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    ap.add_argument("--ham", type=int, default=100_000)
    ap.add_argument("--log", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(5737)
    ham = ham_frame(args.ham, rng)
    big = spam_frame(max(args.sizes), rng)
    logs = log_tables(args.log, big, ham, rng)
    print(f"ham {len(ham):,}  log attempts {len(logs.messages) + len(logs.rejects):,}")
    for size in args.sizes:
        spam = big.iloc[:size].reset_index(drop=True)
        stages: list[tuple[str, float]] = []
        t0 = time.perf_counter()

        def mark(msg: str, stages: list[tuple[str, float]] = stages, t0: float = t0) -> None:
            stages.append((msg, time.perf_counter() - t0))

        result = propose(spam, ham, logs=logs,
                         options=ProposeOptions(my_hostnames=("mx.example.org",)),
                         progress=mark)
        total = time.perf_counter() - t0
        steps = ", ".join(f"{m} @{s:.1f}s" for m, s in stages)
        print(f"spam {size:>7,}: {total:6.1f} s  proposals {len(result.rules):>2}  "
              f"candidates {len(result.candidates):>5}  ({steps})")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
