"""Replay candidate rules over all history with the emitter's matcher.

Every (candidate, value) pair is decided by ``triage.emit.postfix`` (the code that renders the
maps and answers as Postfix would), so the backtest and Postfix agree on what a rule matches.
Asking that matcher about every candidate and every row would cost candidates x rows; instead
each candidate names an ``anchor`` (the domain its regex is anchored on, or the literal it
equals) and only values under that anchor are asked. Anchoring makes this exact: a regex
ending in ``\\.example\\.net$`` cannot match a name outside ``example.net``. Networks are found
with integer masks first, then confirmed the same way.

Tables replayed: leaked spam and ham (``mail`` rows after ``features.add_features``) and the
log's connections (``log_rows``): delivered messages, refused attempts, sessions without mail.
Rows Postfix permits before any triage map (``permitted``: loopback, ``mynetworks``, SASL) are
never counted as refused, as in the main.cf snippet (``emit.postfix.snippet``).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from triage.emit.postfix import Hit, MapSet, Verdict, render_line, sender_lookup_keys
from triage.emit.tables import Table, parse_table
from triage.features import to_text
from triage.generalise import key_error, subject_probe
from triage.ingest.address import ascii_domain, client_address
from triage.ingest.mailjoin import _short_host
from triage.model import Rule, RuleKind, RuleState

__all__ = ["HOP_KINDS", "LOG_ROW_COLUMNS", "client_address", "confirm_no_ham", "header_column",
           "header_line", "in_networks", "known_messages", "log_rows", "match",
           "no_trusted_hop", "permitted", "refused", "summarise", "to_rule"]

Progress = Callable[[str], None]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def to_rule(kind: str, key: str, rid: str = "R0000") -> Rule:
    """A candidate as an active rule (the form the matcher answers for)."""
    return Rule(rid, RuleKind(kind), key, state=RuleState.ACTIVE)


@functools.lru_cache(maxsize=65536)
def _table_for(kind: str, key: str) -> Table:
    """The one-line map of a candidate, as the emitter writes it and the matcher reads it."""
    return parse_table(render_line(to_rule(kind, key)), RuleKind(kind).table)


class _Tables:
    """Candidate maps built on first use: most candidates never meet a value to confirm.
    A candidate whose key the emitter refuses (``generalise.key_error``) has no map: it
    matches nothing, as a rule that can never be written refuses nothing."""

    def __init__(self, cands: pd.DataFrame) -> None:
        self._keys = list(zip(cands["kind"], cands["key"], strict=True))

    def __getitem__(self, i: int) -> Table | None:
        kind, key = str(self._keys[i][0]), str(self._keys[i][1])
        if key_error(kind, key) is not None:
            return None
        return _table_for(kind, key)


def _tables(cands: pd.DataFrame) -> _Tables:
    return _Tables(cands)


# (values, probes): parallel lists, the value each probe was made from
Probes = tuple[list[object], list[str]]
# (cand, value) pairs, in order
Pairs = list[tuple[int, object]]


def _suffixes_of(values: Iterable[object], prefix: str = "") -> Probes:
    """(value, probe) for each value and each of its parent domains, the value first."""
    vals: list[object] = []
    probes: list[str] = []
    for v in values:
        labels = str(v).lower().rstrip(".").split(".")
        for i in range(len(labels)):
            vals.append(v)
            probes.append(prefix + ".".join(labels[i:]))
    return vals, probes


def _suffix_probes(values: pd.Series, prefix: str = "") -> pd.DataFrame:
    """(value, probe) for every parent domain of each distinct value (``a.b.example.net``
    -> ``b.example.net``, ``example.net``, ``net``); the value itself is a probe too."""
    vals, probes = _suffixes_of(pd.unique(values.dropna()), prefix)
    return pd.DataFrame({"value": vals, "probe": probes}, dtype=object)


def _literal_probes(values: pd.Series, prefix: str = "") -> pd.DataFrame:
    uniq = pd.unique(values.dropna())
    return pd.DataFrame({"value": uniq,
                         "probe": [prefix + str(v).strip().lower() for v in uniq]},
                        dtype=object)


def _domain_probes(values: pd.Series) -> Probes:
    """(value, probe) for each distinct address of ``values`` and every parent domain of
    its domain (right of the last ``@``): domains in order of first appearance, each
    domain's probes from the longest, each probe's addresses in order of appearance."""
    by_domain: dict[str, list[object]] = {}
    for a in pd.unique(values.dropna()):
        if isinstance(a, str):
            by_domain.setdefault(a.rpartition("@")[2], []).append(a)
    vals: list[object] = []
    probes: list[str] = []
    for dom_vals, dom_probes in ((group, _suffixes_of([d])[1])
                                 for d, group in by_domain.items()):
        for probe in dom_probes:
            vals.extend(dom_vals)
            probes.extend([probe] * len(dom_vals))
    return vals, probes


def _confirm(pairs: Pairs, tables: _Tables, lookup_keys: Callable[[str], list[str]]
             ) -> Pairs:
    """Keep the (cand, value) pairs the matcher says match (each pair once)."""
    out: Pairs = []
    for c, v in dict.fromkeys(pairs):
        table = tables[c]
        if table is not None and any(table.lookup(k) is not None
                                     for k in lookup_keys(str(v))):
            out.append((c, v))
    return out


def _anchored_hits(cands: pd.DataFrame, tables: _Tables, column: pd.Series,
                   probes: pd.DataFrame | Probes, lookup_keys: Callable[[str], list[str]]
                   ) -> pd.DataFrame:
    """Rows of ``column`` holding a value that some probe puts under a candidate's anchor
    and that the matcher confirms. Joined on the distinct values, in plain dicts: the
    probes are many, the anchors few."""
    if isinstance(probes, pd.DataFrame):
        probes = (probes["value"].tolist(), probes["probe"].tolist())
    by_probe: dict[str, list[int]] = {}
    for c, anchor in zip(cands["cand"].tolist(), cands["anchor"].tolist(), strict=True):
        if isinstance(anchor, str):
            for p in anchor.split("|"):
                by_probe.setdefault(p, []).append(c)
    pairs = [(c, v) for v, p in zip(*probes, strict=True) for c in by_probe.get(p, ())]
    return _value_rows(column, _confirm(pairs, tables, lookup_keys))


def _value_rows(column: pd.Series, good: Pairs) -> pd.DataFrame:
    """(``cand``, ``row``) for each row of ``column`` whose value is in a (``cand``,
    ``value``) pair of ``good``: by row, then in ``good``'s order."""
    by_value: dict[object, list[int]] = {}
    for c, v in good:
        by_value.setdefault(v, []).append(c)
    out_c: list[int] = []
    out_r: list[int] = []
    if by_value:
        values = column.to_numpy()
        keep = pd.Series(values, dtype=object).isin(list(by_value)).to_numpy(dtype=bool)
        for r in np.flatnonzero(keep).tolist():
            for c in by_value.get(values[r], ()):
                out_c.append(c)
                out_r.append(r)
    return pd.DataFrame({"cand": np.array(out_c, dtype=np.int64),
                         "row": np.array(out_r, dtype=np.int64)})


def _ipv4_ints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dotted quads -> uint64 (vectorised); returns (mask of valid IPv4, ints)."""
    s = pd.Series(values, dtype=object).astype("string")
    ok = s.str.fullmatch(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})").fillna(False)
    ok_np = ok.to_numpy(dtype=bool)
    ints = np.zeros(len(s), dtype=np.uint64)
    if ok_np.any():
        parts = s[ok].str.split(".", expand=True).astype(np.uint64).to_numpy()
        valid = (parts <= 255).all(axis=1)
        vals = (parts[:, 0] << 24) | (parts[:, 1] << 16) | (parts[:, 2] << 8) | parts[:, 3]
        where = np.flatnonzero(ok_np)
        ok_np[where[~valid]] = False
        ints[where] = vals
    return ok_np, ints


def _per_distinct(values: pd.Series, convert: Callable[[str], object],
                  needed: Callable[[str], bool]) -> pd.Series:
    """``convert`` of each text value (once per distinct value; non-text values kept), or
    ``values`` itself when no value is ``needed`` to change."""
    codes, uniq = pd.factorize(values, use_na_sentinel=True)
    if not any(isinstance(u, str) and needed(u) for u in uniq):
        return values
    conv = [convert(u) if isinstance(u, str) else u for u in uniq]
    return pd.Series([conv[c] if c >= 0 else None for c in codes], index=values.index,
                     dtype=object)


def _client_addresses(ips: pd.Series) -> pd.Series:
    """``client_address`` of each value (once per distinct value); non-text values kept."""
    return _per_distinct(ips, client_address, lambda u: ":" in u)


def _ascii_sender(address: str) -> str:
    """``address`` with its domain in ASCII (``address.ascii_domain``), as sender domain
    keys are written: an address stored before domains were made ASCII
    (``x@bücher.example``) is looked up as ``x@xn--bcher-kva.example``."""
    if address.isascii():
        return address
    local, at, domain = address.rpartition("@")
    ascii_form = ascii_domain(domain) if at else None
    return f"{local}@{ascii_form}" if ascii_form else address


def _ascii_senders(values: pd.Series) -> pd.Series:
    """``_ascii_sender`` of each text value of ``values`` (the same Series when all are
    ASCII, as they are in any table written since)."""
    return _per_distinct(values, _ascii_sender, lambda u: not u.isascii())


def _network(kind: str, key: str) -> IPNetwork | None:
    """The network of a client_cidr candidate, None when the emitter refuses its key."""
    if key_error(kind, key) is not None:
        return None
    return ipaddress.ip_network(key, strict=False)


def _ip_hits(cands: pd.DataFrame, tables: _Tables, ips: pd.Series) -> pd.DataFrame:
    """Rows whose client address lies in a candidate network: per prefix length one integer
    mask and one index lookup, then the matcher confirms each (network, address) pair.
    Addresses are looked up as Postfix does (``client_address``: IPv4-mapped as IPv4)."""
    uniq = np.asarray(pd.unique(ips.dropna()), dtype=object)
    canon = np.asarray([client_address(v) if isinstance(v, str) else v for v in uniq],
                       dtype=object)
    nets = [_network(str(k), str(key)) for k, key in zip(cands["kind"], cands["key"],
                                                          strict=True)]
    cand_ids = cands["cand"].to_numpy()
    out_c: list[np.ndarray] = []
    out_v: list[np.ndarray] = []
    is4, ints = _ipv4_ints(canon)
    v4 = [(i, n) for i, n in enumerate(nets) if n is not None and n.version == 4]
    for length in sorted({n.prefixlen for _, n in v4}):
        group = [(i, n) for i, n in v4 if n.prefixlen == length]
        sel = [i for i, _ in group]
        index = pd.Index([int(n.network_address) for _, n in group], dtype="uint64")
        mask = np.uint64(((1 << length) - 1) << (32 - length))
        pos = index.get_indexer(pd.Index(ints & mask))
        hit = is4 & (pos >= 0)
        out_c.append(cand_ids[np.array(sel)[pos[hit]]])
        out_v.append(uniq[hit])
    v6 = [(i, n) for i, n in enumerate(nets) if n is not None and n.version == 6]
    if v6:
        for s, c in zip(uniq[~is4], canon[~is4], strict=True):
            try:
                a = ipaddress.ip_address(c)
            except ValueError:
                continue
            for i, n in v6:
                if a.version == 6 and a in n:
                    out_c.append(np.array([cand_ids[i]]))
                    out_v.append(np.array([s], dtype=object))
    pairs: Pairs = list(zip(np.concatenate(out_c).tolist() if out_c else [],
                            np.concatenate(out_v).tolist() if out_v else [], strict=True))
    return _value_rows(ips, _confirm(pairs, tables, lambda v: [client_address(v)]))


def match(cands: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """All (``cand``, ``row``) pairs where candidate ``cand`` (a ``cands`` column, or its
    index) matches row position ``row`` of ``table`` (featured ``mail`` rows or
    ``log_rows``). Header candidates are matched only where ``table`` has headers."""
    if "cand" not in cands:
        cands = cands.assign(cand=cands.index)
    parts = []
    for kind, group in cands.groupby("kind", sort=True):
        tables_list = _tables(group)
        local = group.assign(cand_global=group["cand"].to_numpy(),
                             cand=np.arange(len(group)))
        hits = _kind_hits(RuleKind(str(kind)), local, tables_list, table)
        if hits is not None and len(hits):
            hits = hits.assign(cand=local["cand_global"].to_numpy()[hits["cand"].to_numpy()
                                                                    .astype(int)])
            parts.append(hits)
    if not parts:
        return pd.DataFrame({"cand": pd.Series(dtype=object), "row": pd.Series(dtype=int)})
    return pd.concat(parts, ignore_index=True).drop_duplicates(ignore_index=True)


def _kind_hits(kind: RuleKind, cands: pd.DataFrame, tables: _Tables,
               table: pd.DataFrame) -> pd.DataFrame | None:
    if kind is RuleKind.CLIENT_CIDR:
        return _ip_hits(cands, tables, table["client_ip"])
    if kind is RuleKind.CLIENT_NAME:
        col = table["client_name"]
        return _anchored_hits(cands, tables, col, _suffix_probes(col), lambda v: [v])
    if kind is RuleKind.HELO:
        col = table["helo"]
        probes = pd.concat([_suffix_probes(col), _literal_probes(col)], ignore_index=True)
        return _anchored_hits(cands, tables, col, probes, lambda v: [v])
    if kind is RuleKind.SENDER_DOMAIN:
        col = _ascii_senders(table["envelope_sender"])
        return _anchored_hits(cands, tables, col, _domain_probes(col), sender_lookup_keys)
    parts = []
    for header, probes_of in _HEADER_PROBES.items():
        lines = header_column(table, header)
        if lines is None:
            continue
        vals: list[object] = []
        line_probes: list[str] = []
        for line in lines.dropna().drop_duplicates().tolist():
            for p in probes_of(str(line)):
                vals.append(line)
                line_probes.append(p)
        parts.append(_anchored_hits(cands, tables, lines, (vals, line_probes), lambda v: [v]))
    return pd.concat(parts, ignore_index=True) if parts else None


# The columns of the log tables ``log_rows`` reads (a caller may read only these).
LOG_ROW_COLUMNS: dict[str, tuple[str, ...]] = {
    "messages": ("client_ip", "client_name", "helo", "sender", "first_seen", "host",
                 "queue_id", "origin", "sasl_username"),
    "rejects": ("client_ip", "client_name", "helo", "sender", "time", "queue_id"),
    "sessions": ("client_ip", "client_name", "helo", "connect_time", "n_messages",
                 "n_rejects", "sasl_username"),
}
_LOG_ROW_FIELDS = ("client_ip", "client_name", "helo", "envelope_sender", "time")
# The log row column each kind's map looks up, besides the client address every row has.
_LOOKUP = {RuleKind.CLIENT_NAME: "client_name", RuleKind.HELO: "helo",
           RuleKind.SENDER_DOMAIN: "envelope_sender"}


# pandas' default text dtype: a column of no values in it joins the log's text columns
# without turning them into Python objects
_TEXT_DTYPE = pd.Series(["x"]).dtype


def _flags(mask: pd.Series) -> np.ndarray:
    """A boolean mask as numpy, NA as False (as indexing with it treats NA)."""
    return mask.fillna(False).to_numpy(dtype=bool)


def _log_part(table: pd.DataFrame, keep: np.ndarray, fields: dict[str, str | None],
              outcome: str, known: np.ndarray | bool, wanted: set[str]) -> pd.DataFrame:
    """The rows ``keep`` of ``table`` as log rows: only the ``wanted`` columns are taken."""
    cols = {f: table[c][keep].reset_index(drop=True) if c is not None
            else pd.Series([None] * int(keep.sum()), dtype=_TEXT_DTYPE)
            for f, c in fields.items() if f in wanted}
    return pd.DataFrame({**cols, "outcome": outcome, "known": known})


def known_messages(*mail: pd.DataFrame) -> pd.DataFrame:
    """The (``host``, ``queue_id``) of every labelled message of the ``mail`` tables
    (spam and ham) that has both: what ``log_rows`` needs to tell a labelled delivery
    from an unknown one. A table without a ``host`` column adds nothing."""
    parts = [m[["host", "queue_id"]] for m in mail if "host" in m and "queue_id" in m]
    if not parts:
        return pd.DataFrame({"host": pd.Series(dtype=object),
                             "queue_id": pd.Series(dtype=object)})
    return pd.concat(parts, ignore_index=True).dropna().drop_duplicates(ignore_index=True)


def _known(messages: pd.DataFrame, known: pd.DataFrame | Iterable[str]) -> np.ndarray:
    """Per row of the log's ``messages``: whether it is a labelled message. With a
    (``host``, ``queue_id``) frame (``known_messages``) both must agree: Postfix hosts and
    instances each count queue ids on their own, so a queue id alone can name another
    host's message. A row without a host (either side) is never known: counted unknown,
    its hit stays in view. Plain queue ids match on the queue id alone."""
    if isinstance(known, pd.DataFrame) and "host" in known:
        if "host" not in messages or not len(known):
            return np.zeros(len(messages), dtype=bool)
        k = known[["host", "queue_id"]].dropna()
        pairs = pd.MultiIndex.from_arrays([_short_host(k["host"]),
                                           k["queue_id"].astype("string")])
        host, qid = _short_host(messages["host"]), messages["queue_id"].astype("string")
        found = pd.MultiIndex.from_arrays([host, qid]).isin(pairs)
        return found & _flags(host.notna() & qid.notna())
    ids = known["queue_id"] if isinstance(known, pd.DataFrame) else known
    return messages["queue_id"].isin(set(ids)).to_numpy(dtype=bool)


def log_rows(logs: object, known_queue_ids: pd.DataFrame | Iterable[str] = (),
             kinds: Iterable[RuleKind | str] | None = None) -> pd.DataFrame:
    """The log's SMTP attempts as rows a rule could have refused: delivered messages
    (``outcome`` = delivered; ``known`` when it is a labelled message), refused attempts
    (rejected) and sessions that sent no mail (no_mail). Authenticated and locally
    submitted mail is left out: the restrictions permit it before any rule.

    ``known_queue_ids``: the labelled messages as a (``host``, ``queue_id``) frame
    (``known_messages(spam, ham)``), matched on both (see ``_known``); plain queue ids are
    still read, matched on the queue id alone, which is right for one Postfix instance only.

    ``kinds``: only the lookup columns of these rule kinds (``client_name``, ``helo``,
    ``envelope_sender``) besides ``client_ip``, ``time``, ``outcome`` and ``known`` (the
    backtest of candidates of a few kinds needs no more); default all."""
    lookups = set(_LOOKUP.values()) if kinds is None else \
        {_LOOKUP[k] for k in map(RuleKind, kinds) if k in _LOOKUP}
    wanted = {"client_ip", "time"} | lookups
    parts = []
    messages = getattr(logs, "messages", None)
    if messages is not None and len(messages):
        m = messages
        keep = np.ones(len(m), dtype=bool)
        if "origin" in m:
            keep &= _flags(m["origin"].isna() | (m["origin"] == "smtpd"))
        if "sasl_username" in m:
            keep &= _flags(m["sasl_username"].isna())
        known = _known(m[keep], known_queue_ids)
        parts.append(_log_part(m, keep, {"client_ip": "client_ip", "client_name": "client_name",
                                         "helo": "helo", "envelope_sender": "sender",
                                         "time": "first_seen"}, "delivered", known,
                               wanted))
    rejects = getattr(logs, "rejects", None)
    if rejects is not None and len(rejects):
        keep = _flags(rejects["queue_id"].isna())
        parts.append(_log_part(rejects, keep, {
            "client_ip": "client_ip", "client_name": "client_name", "helo": "helo",
            "envelope_sender": "sender", "time": "time"}, "rejected", False, wanted))
    sessions = getattr(logs, "sessions", None)
    if sessions is not None and len(sessions):
        s = sessions
        keep = _flags((s["n_messages"] == 0) & (s["n_rejects"] == 0)
                      & s["sasl_username"].isna())
        parts.append(_log_part(s, keep, {
            "client_ip": "client_ip", "client_name": "client_name", "helo": "helo",
            "envelope_sender": None, "time": "connect_time"}, "no_mail", False, wanted))
    if not parts:
        parts.append(pd.DataFrame(columns=[f for f in _LOG_ROW_FIELDS if f in wanted]
                                  + ["outcome", "known"]))
    rows = pd.concat(parts, ignore_index=True)
    # Only the normalised lookup values are needed here, not the shapes: a log holds
    # millions of attempts.
    out = pd.DataFrame({c: to_text(rows[c]) for c in ("client_name", "helo",
                                                      "envelope_sender") if c in lookups},
                       index=rows.index)
    ips = rows["client_ip"].to_numpy(dtype=object, copy=True)
    ips[rows["client_ip"].isna().to_numpy(dtype=bool)] = None
    out["client_ip"] = pd.Series(ips, index=rows.index, dtype=object)
    out["time"] = rows["time"]
    for col in ("outcome", "known"):
        out[col] = rows[col].to_numpy()
    return out


def summarise(cands: pd.DataFrame, spam: pd.DataFrame, ham: pd.DataFrame,
              log: pd.DataFrame | None = None, active: Sequence[Rule] = (),
              progress: Progress | None = None, *, mynetworks: Sequence[IPNetwork] = ()
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Backtest every candidate: returns (``cands`` with ``spam_hits``, ``ham_hits``,
    ``ham_unchecked``, ``log_delivered_unknown``, ``log_rejected``, ``log_no_mail``,
    ``overlap_active``, ``days``) and the (``cand``, ``row``) spam hit pairs for set cover.
    Rows from ``mynetworks`` (our own networks and trusted relays) are permitted, as by
    Postfix. ``ham_unchecked``: the ham messages a connection candidate could not be
    checked against, having no trusted Received hop (``no_trusted_hop``): zero ham hits
    says nothing about them."""
    cands = cands.reset_index(drop=True)
    cands = cands.assign(cand=np.arange(len(cands)))
    spam_hits = _drop_permitted(match(cands, spam), spam, cands, mynetworks)
    if progress:
        progress("spam replayed")
    ham_hits = _drop_permitted(match(cands, ham), ham, cands, mynetworks)
    out = cands.copy()
    out["spam_hits"] = spam_hits.groupby("cand").size().reindex(out["cand"], fill_value=0) \
        .to_numpy()
    out["ham_hits"] = ham_hits.groupby("cand").size().reindex(out["cand"], fill_value=0) \
        .to_numpy()
    unchecked = int(no_trusted_hop(ham).sum())
    out["ham_unchecked"] = np.where(out["kind"].isin(HOP_KINDS), unchecked, 0)
    if "day" in spam:
        days = spam_hits.assign(day=spam["day"].to_numpy()[spam_hits["row"].to_numpy()
                                                          .astype(int)])
        out["days"] = days.groupby("cand")["day"].nunique().reindex(out["cand"], fill_value=0) \
            .to_numpy()
    for name in ("log_delivered_unknown", "log_rejected", "log_no_mail", "overlap_active"):
        out[name] = 0
    if log is not None and len(log):
        log_hits = _drop_permitted(match(cands, log), log, cands, mynetworks)
        outcome = log["outcome"].to_numpy()[log_hits["row"].to_numpy().astype(int)]
        known = log["known"].to_numpy()[log_hits["row"].to_numpy().astype(int)]
        for name, sel in (("log_delivered_unknown", (outcome == "delivered") & ~known),
                          ("log_rejected", outcome == "rejected"),
                          ("log_no_mail", outcome == "no_mail")):
            out[name] = log_hits[sel].groupby("cand").size().reindex(
                out["cand"], fill_value=0).to_numpy()
        if progress:
            progress("log replayed")
    if active:
        out["overlap_active"] = _overlap(active, spam, spam_hits).reindex(
            out["cand"], fill_value=0).to_numpy()
    return out, spam_hits


# The kinds whose lookup value comes from the trusted Received hop (client address and
# name, HELO); a sender or header candidate is checked on values the hop does not give.
HOP_KINDS = (RuleKind.CLIENT_CIDR.value, RuleKind.CLIENT_NAME.value, RuleKind.HELO.value)


def no_trusted_hop(mail: pd.DataFrame) -> np.ndarray:
    """Per ``mail`` row: no trusted Received hop was found (``trusted`` not true), so there
    is no client address, name or HELO to check a connection rule against. A row with a
    trusted hop but no client address (local submission) is not one: Postfix permits it.
    Without a ``trusted`` column, a row without ``client_ip``."""
    if "client_ip" not in mail:
        return np.ones(len(mail), dtype=bool)
    no_ip = _flags(mail["client_ip"].isna())
    if "trusted" not in mail:
        return no_ip
    return no_ip & ~_flags(mail["trusted"].astype("boolean"))


def _drop_permitted(hits: pd.DataFrame, table: pd.DataFrame, cands: pd.DataFrame,
                    mynetworks: Sequence[IPNetwork] = ()) -> pd.DataFrame:
    """``hits`` without the rows Postfix lets through before the candidate's table is
    asked: ``permitted`` rows, where clients in ``mynetworks`` still meet header_checks."""
    if hits.empty:
        return hits
    rows = hits["row"].to_numpy().astype(int)
    ok = permitted(table)[rows]
    if mynetworks and "client_ip" in table:
        kind = cands["kind"].to_numpy()[hits["cand"].to_numpy().astype(int)]
        ours = in_networks(table["client_ip"], mynetworks)[rows]
        ok |= ours & (kind != RuleKind.HEADER.value)
    return hits[~ok]


def _overlap(active: Sequence[Rule], spam: pd.DataFrame, hits: pd.DataFrame) -> pd.Series:
    """Per candidate: its spam rows that the active rules refuse already."""
    maps = MapSet.from_rules([r if r.state.emitted else replace(r, state=RuleState.ACTIVE)
                              for r in active])
    rows = np.unique(hits["row"].to_numpy().astype(int))
    refused = {r for r in rows if check_row(maps, spam.iloc[r]).refused}
    return hits[hits["row"].isin(refused)].groupby("cand").size()


def _text(v: object) -> str | None:
    return v if isinstance(v, str) and v else None


def from_line(address: object) -> str | None:
    """A From header line rebuilt from a ``mail`` row's From address (rows stored before
    the raw ``from_header`` column existed)."""
    return f"From: {address}" if _text(address) else None


def x_mailer_line(mailer: object) -> str | None:
    """The X-Mailer header line for a ``mail`` row's (decoded) X-Mailer."""
    m = _text(mailer)
    return f"X-Mailer: {m.strip()}" if m and m.strip() else None


def subject_line(subject: object) -> str | None:
    """The Subject header line header_checks sees for a ``mail`` row's subject."""
    return f"Subject: {subject}" if _text(subject) else None


def message_id_line(message_id: object) -> str | None:
    """The Message-ID header line for a ``mail`` row's id (stored without ``<>``)."""
    mid = _text(message_id)
    return f"Message-ID: <{mid.strip().strip('<>')}>" if mid else None


# The header lines replayed for a ``mail`` row, by header name: the raw header column
# (``mailtable.raw_header``, what header_checks matches: display names, comments, every
# address, encoded words) and, for a row without it (history stored before that column),
# the decoded column and the line rebuilt from it.
_HEADER_SOURCES: dict[str, tuple[str, str, Callable[[object], str | None]]] = {
    "From": ("from_header", "from_address", from_line),
    "X-Mailer": ("x_mailer_header", "x_mailer", x_mailer_line),
    "Subject": ("subject_header", "subject", subject_line),
    "Message-ID": ("message_id_header", "message_id", message_id_line),
}


def header_line(name: str, raw: object, decoded: object) -> str | None:
    """The header line ``name`` of one ``mail`` row: ``Name: raw`` when the row has the raw
    value, else the line rebuilt from the decoded value."""
    if isinstance(raw, str):
        return f"{name}: {raw}"
    return _HEADER_SOURCES[name][2](decoded)


def header_column(table: pd.DataFrame, name: str) -> pd.Series | None:
    """``header_line`` for every row of ``table`` (None where the row has no such header);
    None when ``table`` has neither column (log rows)."""
    raw_col, col, _ = _HEADER_SOURCES[name]
    if raw_col not in table and col not in table:
        return None
    none = [None] * len(table)
    raw = table[raw_col].astype(object).tolist() if raw_col in table else none
    dec = table[col].astype(object).tolist() if col in table else none
    return pd.Series([header_line(name, r, d) for r, d in zip(raw, dec, strict=True)],
                     index=table.index, dtype=object)


_RUN_RE = re.compile(r"[a-z0-9.-]+")
_MSGID_RHS_RE = re.compile(r"Message-ID:\s*<[^<>@]*@([^<>@]*)>", re.I)


def _from_probes(line: str) -> list[str]:
    """``from:`` and each name a From key can be anchored on in ``line``. The key
    (``generalise.header_candidates``) is an LDH domain after ``@`` or ``.`` and before
    ``>``, white space or the end: a dot-suffix of a maximal run of LDH characters."""
    return ["from:" + p for run in _RUN_RE.findall(line.lower())
            for p in _suffixes_of([run])[1]]


def _x_mailer_probes(line: str) -> list[str]:
    return ["x-mailer:" + line.partition(":")[2].strip().lower()]


def _subject_probes(line: str) -> list[str]:
    probe = subject_probe(line.partition(":")[2])
    return [probe] if probe else []


def _message_id_probes(line: str) -> list[str]:
    """``message-id:`` and each parent domain of the right-hand side the Message-ID key
    (``generalise.message_id_key``) reads: after the first ``<`` and ``@``, up to ``>``."""
    m = _MSGID_RHS_RE.match(line)
    return _suffixes_of([m.group(1)], "message-id:")[1] if m else []


_HEADER_PROBES: dict[str, Callable[[str], list[str]]] = {
    "From": _from_probes, "X-Mailer": _x_mailer_probes, "Subject": _subject_probes,
    "Message-ID": _message_id_probes,
}


def check_row(maps: MapSet, row: pd.Series) -> Verdict:
    """``MapSet.check`` for one featured row (header lines as ``header_line`` makes them)."""
    headers = []
    for name, (raw_col, col, _) in _HEADER_SOURCES.items():
        line = header_line(name, row.get(raw_col), row.get(col))
        if line:
            headers.append(line)
    sender = row.get("envelope_sender")
    return maps.check(client_ip=client_address(_text(row.get("client_ip"))),
                      client_name=_text(row.get("client_name")), helo=_text(row.get("helo")),
                      sender=_ascii_sender(sender) if isinstance(sender, str) else None,
                      headers=headers)


def permitted(table: pd.DataFrame, mynetworks: Sequence[IPNetwork] = ()) -> np.ndarray:
    """Rows no rule can refuse: the restrictions start with permit_mynetworks and
    permit_sasl_authenticated, so loopback clients (local submission, content filter
    re-injection), clients in ``mynetworks`` (our own networks and trusted relays, which
    main.cf's mynetworks must hold) and authenticated submissions pass before any triage
    map is asked."""
    ok = np.zeros(len(table), dtype=bool)
    if "client_ip" in table:
        ip = _client_addresses(table["client_ip"].astype(object))
        ok |= np.array([isinstance(v, str) and (v.startswith("127.") or v == "::1")
                        for v in ip], dtype=bool)
        if mynetworks:
            ok |= in_networks(ip, mynetworks)
    for col in ("authenticated", "sasl_username"):
        if col in table:
            v = table[col]
            ok |= (v.notna() & (v.astype(str).str.len() > 0)
                   & ~v.astype(str).str.lower().isin(["false", "none", "0"])).to_numpy(dtype=bool)
    return ok


def in_networks(ips: pd.Series, networks: Sequence[IPNetwork]) -> np.ndarray:
    """Per value of ``ips``: whether it is an address inside one of ``networks`` (each
    distinct value parsed once)."""
    codes, uniq = pd.factorize(ips, use_na_sentinel=True)
    if not networks or not len(uniq):
        return np.zeros(len(ips), dtype=bool)

    def inside(v: object) -> bool:
        try:
            a = ipaddress.ip_address(str(v).strip("[]"))
        except ValueError:
            return False
        if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
            a = a.ipv4_mapped  # as Postfix sees the client (see client_address)
        return any(a.version == n.version and a in n for n in networks)

    flags = np.array([inside(v) for v in uniq] + [False], dtype=bool)
    return flags[codes]  # the sentinel -1 picks the trailing False


def _field_ids(values: pd.Series, decide: Callable[[object], Hit | None]) -> pd.Series:
    """Rule id refusing each value (decided once per distinct value); None otherwise."""
    codes, uniq = pd.factorize(values, use_na_sentinel=True)
    ids = []
    for u in uniq:
        hit = decide(u)
        ids.append(hit.rule_id if hit is not None and hit.verb != "WARN" else None)
    return pd.Series([ids[c] if c >= 0 else None for c in codes], index=values.index,
                     dtype=object)


def refused(rules: Sequence[Rule], table: pd.DataFrame, *,
            mynetworks: Sequence[IPNetwork] = ()) -> pd.Series:
    """Per row of ``table``: the rule id that refuses it with ``rules`` in force, or None.
    Rows Postfix permits first (``permitted``, with ``mynetworks``) are never refused.

    The same walk as ``MapSet.check`` (the first restriction in main.cf order that finds a
    rejecting entry wins), taken one restriction at a time: each depends on one field only
    (client name and address, HELO, sender, one header line), so each distinct value is
    looked up once, whatever the number of rows."""
    none = pd.Series([None] * len(table), index=table.index, dtype=object)
    if not rules or not len(table):
        return none
    # proposals are replayed as if approved (MapSet only renders rules in force)
    maps = MapSet.from_rules([r if r.state.emitted else replace(r, state=RuleState.ACTIVE)
                              for r in rules])
    present = {r.kind for r in rules}

    def col(name: str) -> pd.Series:
        if name not in table:
            return pd.Series([None] * len(table), index=table.index, dtype=object)
        c = table[name].astype(object)
        return c.where(c.notna(), None)

    steps: list[pd.Series] = []   # smtpd restrictions, in main.cf order
    headers: list[pd.Series] = []  # header_checks (cleanup), after them
    ip, name = _client_addresses(col("client_ip")), col("client_name")
    for kind in (RuleKind.CLIENT_CIDR, RuleKind.CLIENT_NAME):
        if kind in present:
            pair = pd.Series(list(zip(name, ip, strict=True)), index=table.index)
            steps.append(_field_ids(pair, lambda p, k=kind: maps.lookup(  # type: ignore[misc]
                k, [x for x in (p[0] or ("unknown" if p[1] else None), p[1]) if x])))
    if RuleKind.HELO in present:
        steps.append(_field_ids(col("helo"), lambda h: maps.lookup(RuleKind.HELO, [str(h)])))
    if RuleKind.SENDER_DOMAIN in present:
        steps.append(_field_ids(_ascii_senders(col("envelope_sender")), lambda a: maps.lookup(
            RuleKind.SENDER_DOMAIN, sender_lookup_keys(str(a)))))
    if RuleKind.HEADER in present:
        for header in _HEADER_SOURCES:
            lines = header_column(table, header)
            if lines is not None:
                headers.append(_field_ids(lines, lambda h: maps.lookup(RuleKind.HEADER,
                                                                       [str(h)])))
    out = none
    for ids in steps:
        out = out.where(out.notna(), ids)
    # permit_mynetworks ends the smtpd restrictions only: header_checks run in cleanup for
    # our networks' mail too (local and authenticated mail skip them, see the snippet)
    out = out.where(~permitted(table, mynetworks), None)
    for ids in headers:
        out = out.where(out.notna(), ids)
    return out.where(~permitted(table), None)


def confirm_no_ham(rules: Sequence[Rule], ham: pd.DataFrame, *,
                   mynetworks: Sequence[IPNetwork] = ()) -> set[str]:
    """Ids of every rule among ``rules`` that refuses some ham row. ``refused`` names the
    first rule that refuses each row (Postfix order); a second rule refusing the same row
    is found once the first is set aside, so this repeats until no rule refuses ham."""
    unsafe: set[str] = set()
    while True:
        ids = refused([r for r in rules if r.id not in unsafe], ham, mynetworks=mynetworks)
        found = {i for i in ids.dropna()}
        if not found:
            return unsafe
        unsafe |= found

