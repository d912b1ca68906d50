"""From leaked spam to a few safe rule proposals.

    features -> shield -> campaigns -> candidates (``generalise``) -> backtest -> set cover

The set cover is greedy: take the candidate that refuses the most spam not yet covered (kinds
weighted: connection rules before header rules, which only count spam that no connection
candidate covers), until ``max_proposals`` or until no candidate adds ``min_messages``. Only
candidates with zero ham hits take part; the chosen set is then checked as a whole with the
Postfix matcher (``MapSet``) against all ham once more.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from triage.backtest import confirm_no_ham, known_messages, log_rows, summarise, to_rule
from triage.cluster import campaigns
from triage.features import add_features
from triage.generalise import (
    CANDIDATE_COLUMNS,
    Limits,
    cidr_candidates,
    header_candidates,
    helo_candidates,
    rdns_candidates,
    sender_candidates,
)
from triage.model import Evidence, Rule, RuleKind, RuleState, rule_id
from triage.shield import IPNetwork, Shield, build_shield, own_infrastructure

__all__ = ["Proposals", "ProposeOptions", "featured", "propose", "select"]

Progress = Callable[[str], None]

# Preference between kinds when two cover the same spam: connection-level rules refuse
# before DATA and cost the sender nothing to retry elsewhere; header rules come last.
KIND_WEIGHT = {RuleKind.CLIENT_CIDR.value: 1.0, RuleKind.CLIENT_NAME.value: 1.0,
               RuleKind.HELO.value: 0.9, RuleKind.SENDER_DOMAIN.value: 0.9,
               RuleKind.HEADER.value: 0.6}


@dataclass(frozen=True)
class ProposeOptions:
    """Settings of one proposal run."""

    limits: Limits = field(default_factory=Limits)
    max_proposals: int = 15
    lookback_days: int = 180
    my_hostnames: tuple[str, ...] = ()
    my_addresses: tuple[str, ...] = ()
    # The config's trusted_relays: addresses and networks are our own infrastructure, which
    # Postfix permits first (mynetworks); names are our relays, never "claiming to be us".
    trusted_relays: tuple[str, ...] = ()
    allowlist_files: tuple[str, ...] = ()
    first_id: int = 1              # ids of the proposals: R{first_id:04d} ...
    # A tie-breaker, not a veto: delivered mail of unknown label from a spam source is
    # mostly more of the same spam; the reviewer sees the count in the evidence.
    unknown_penalty: float = 0.05  # score lost per delivered log message of unknown label
    now: pd.Timestamp | None = None  # end of the ham lookback (default: newest ham message)

    def mynetworks(self) -> tuple[IPNetwork, ...]:
        """Our own networks: the trusted relays' addresses and our own addresses, which the
        restrictions permit (``permit_mynetworks``) before any triage map."""
        return own_infrastructure(self.trusted_relays, self.my_addresses)[0]


@dataclass
class Proposals:
    """The result: ``rules`` to review (state proposed, evidence filled in), every
    ``candidates`` row with its backtest and why it was or was not chosen, the campaigns."""

    rules: list[Rule]
    candidates: pd.DataFrame
    campaigns: pd.DataFrame
    labels: pd.Series
    shield: Shield


def featured(df: pd.DataFrame, opts: ProposeOptions) -> pd.DataFrame:
    """``df`` with the feature columns (computed once; a featured frame is returned as is)."""
    if "helo_shape" in df and "net" in df:
        return df
    return add_features(df, opts.my_hostnames, opts.my_addresses)


def _candidates(spam: pd.DataFrame, ham: pd.DataFrame, shield: Shield,
                opts: ProposeOptions) -> pd.DataFrame:
    lim = opts.limits
    parts = [cidr_candidates(spam, shield, lim), rdns_candidates(spam, shield, lim),
             helo_candidates(spam, shield, opts.my_hostnames, lim),
             sender_candidates(spam, shield, lim), header_candidates(spam, shield, ham, lim)]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=CANDIDATE_COLUMNS)
    return pd.concat(parts, ignore_index=True).drop_duplicates(["kind", "key"],
                                                               ignore_index=True)


def propose(spam: pd.DataFrame, ham: pd.DataFrame, *, logs: object | None = None,
            active: Sequence[Rule] = (), options: ProposeOptions | None = None,
            progress: Progress | None = None) -> Proposals:
    """Propose rules from leaked ``spam`` (the ``mail`` table of the spam folders) that
    refuse none of ``ham`` (the ``mail`` table of the inbox) nor known-good log traffic.
    ``active`` rules are in force already: their keys are not proposed again and the
    backtest reports the overlap with them."""
    opts = options or ProposeOptions()
    say = progress or (lambda _msg: None)
    spam, ham = featured(spam, opts), featured(ham, opts)
    shield = build_shield(ham, logs=logs, now=opts.now, lookback_days=opts.lookback_days,
                          allowlist_files=opts.allowlist_files, featured=True,
                          trusted_relays=opts.trusted_relays, my_addresses=opts.my_addresses)
    relayed = spam["list_id"].notna() if "list_id" in spam else pd.Series(False, spam.index)
    hosts = [*opts.my_hostnames, *pd.concat([spam.get("host", pd.Series(dtype=object)),
                                             ham.get("host", pd.Series(dtype=object))])
             .dropna().unique()]
    shield = shield.with_relays(spam[relayed], [str(h) for h in hosts if "*" not in str(h)],
                                spam)
    labels, table = campaigns(spam, shield)
    say(f"{len(table)} campaigns")
    cands = _candidates(spam, ham, shield, opts)
    in_force = {(r.kind.value, r.key) for r in active}
    cands = cands[np.array([(k, key) not in in_force for k, key in
                            zip(cands["kind"], cands["key"], strict=True)], dtype=bool)]
    say(f"{len(cands)} candidates")
    known = known_messages(spam, ham)  # (host, queue id): each host counts its own ids
    # the log's lookup columns the candidates' kinds need
    log = log_rows(logs, known, kinds=set(cands["kind"])) if logs is not None else None
    tested, hits = summarise(cands, spam, ham, log, active, progress=say,
                             mynetworks=shield.own_networks)
    tested["score"] = (tested["spam_hits"] * np.log1p(tested.get("days", 1))
                       * tested["kind"].map(KIND_WEIGHT)).round(3)
    chosen = select(tested, hits, opts)
    rules = _rules(tested, chosen, hits, spam, labels, opts)
    unsafe = confirm_no_ham(rules, ham, mynetworks=shield.own_networks)
    rules = [r for r in rules if r.id not in unsafe]
    tested["selected"] = tested["cand"].isin(chosen)
    tested["reason"] = np.where(tested["ham_hits"] > 0, "hits ham",
                                np.where(tested["selected"], "selected", "not needed"))
    say(f"{len(rules)} proposals")
    return Proposals(rules, tested, table, labels, shield)


def select(tested: pd.DataFrame, hits: pd.DataFrame, opts: ProposeOptions) -> list[int]:
    """Greedy weighted set cover over the spam rows (lazy: a candidate's gain only shrinks).
    Header candidates only gain on rows no eligible connection candidate covers."""
    ok = tested[(tested["ham_hits"] == 0)
                & (tested["spam_hits"] >= opts.limits.min_messages)
                & (tested.get("days", opts.limits.min_days) >= opts.limits.min_days)]
    if ok.empty:
        return []
    h = hits[hits["cand"].isin(ok["cand"])]
    by_cand: dict[int, set[int]] = {int(str(c)): set(g.tolist())
                                    for c, g in h.groupby("cand")["row"]}
    header = set(ok.loc[ok["kind"] == RuleKind.HEADER.value, "cand"].astype(int))
    conn_rows = set().union(*(r for c, r in by_cand.items() if c not in header)) \
        if by_cand else set()
    for c in header:
        by_cand[c] = by_cand.get(c, set()) - conn_rows
    info: dict[Any, dict[Any, Any]] = ok.set_index("cand").to_dict("index")

    def score(c: int, gain: int) -> float:
        return (gain * KIND_WEIGHT[str(info[c]["kind"])]
                - float(info[c]["log_delivered_unknown"]) * opts.unknown_penalty)

    heap = [(-score(c, len(rows)), str(info[c]["key"]), c) for c, rows in by_cand.items()]
    heapq.heapify(heap)
    covered: set[int] = set()
    chosen: list[int] = []
    while heap and len(chosen) < opts.max_proposals:
        neg, key, c = heapq.heappop(heap)
        gain = len(by_cand[c] - covered)
        s = score(c, gain)
        if s < -neg - 1e-9:          # stale: push back with its current gain
            heapq.heappush(heap, (-s, key, c))
            continue
        if s <= 0:                   # every other candidate scores no more
            break
        if gain < opts.limits.min_messages:
            continue                 # its gain only shrinks: drop it, not the ones below
        chosen.append(c)
        covered |= by_cand[c]
    return chosen


def _rules(tested: pd.DataFrame, chosen: list[int], hits: pd.DataFrame, spam: pd.DataFrame,
           labels: pd.Series, opts: ProposeOptions) -> list[Rule]:
    info: dict[Any, dict[Any, Any]] = tested.set_index("cand").to_dict("index")
    rows_by = hits.groupby("cand")["row"].agg(list)
    out = []
    for i, c in enumerate(chosen):
        rows = spam.iloc[sorted(rows_by.get(c, []))]
        camp = labels.iloc[sorted(rows_by.get(c, []))].value_counts()
        t = pd.to_datetime(rows["received_time"], utc=True) if "received_time" in rows \
            else pd.Series(dtype="datetime64[ns, UTC]")

        def sample(col: str, n: int = 5, rows: pd.DataFrame = rows) -> tuple[str, ...]:
            if col not in rows:
                return ()
            return tuple(str(v) for v in rows[col].dropna().drop_duplicates().head(n))

        ev = Evidence(
            campaign=str(camp.index[0]) if len(camp) else "",
            spam_hits=int(info[c]["spam_hits"]), ham_hits=int(info[c]["ham_hits"]),
            messages=len(rows), days=int(rows["day"].nunique()) if "day" in rows else 0,
            first_seen=None if t.empty or pd.isna(t.min()) else t.min().to_pydatetime(),
            last_seen=None if t.empty or pd.isna(t.max()) else t.max().to_pydatetime(),
            message_ids=sample("message_id"), subjects=sample("subject"),
            senders=sample("envelope_sender"), helos=sample("helo"), ips=sample("client_ip"))
        base = to_rule(str(info[c]["kind"]), str(info[c]["key"]),
                       rule_id(opts.first_id + i))
        note = (f"{info[c]['generaliser']}; score {info[c]['score']}; "
                f"log: {int(info[c]['log_delivered_unknown'])} delivered unknown, "
                f"{int(info[c]['log_rejected'])} refused already; "
                f"overlap with active rules {int(info[c]['overlap_active'])}")
        unchecked = int(info[c].get("ham_unchecked", 0))
        if unchecked:
            note += (f"; {unchecked} ham messages could not be checked: no trusted "
                     "Received hop")
        out.append(Rule(base.id, base.kind, base.key, state=RuleState.PROPOSED, evidence=ev,
                        note=note))
    return out

