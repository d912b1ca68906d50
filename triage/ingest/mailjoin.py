"""Join the ``mail`` table with the log's ``messages`` table on (host, queue id).

The trusted Received header names the host and queue id under which our MX accepted the
message; the log has the same message with the client, HELO and the SPF/DKIM/DMARC results as
the milters and the policy service logged them. The log completes what the header lacks and
confirms what it has; a field on which both sides disagree is listed in ``log_disagreement``
(a forged or mis-chosen trusted hop, or a queue id recycled by Postfix).

Postfix reuses queue ids (the short ones are inode numbers), so (host, queue id) names a
message only near a time: a log message is joined only when its lines and the trusted
Received header's time lie within ``MAX_JOIN_GAP`` of each other.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from triage.ingest.address import normalise_address

__all__ = ["MAX_JOIN_GAP", "join_with_log"]

# mail column -> messages column
_COMPARED = {
    "client_ip": "client_ip",
    "client_name": "client_name",
    "helo": "helo",
    "envelope_sender": "sender",
    "spf_result": "spf_result",
    "dkim_result": "dkim_result",
    "dmarc_result": "dmarc_result",
    "message_id": "message_id",
}
_LOG_ONLY = ["first_seen", "last_seen", "size", "nrcpt", "status", "incarnation"]

# A queue file lives at most maximal_queue_lifetime (Postfix default 5 days; bounces
# bounce_queue_lifetime, also 5 days), so every log line of the incarnation our Received
# header names lies within that of the header's time, even when the loaded logs miss its
# first lines. The slack covers the last queue run after expiry, a syslog time zone read
# wrongly (up to 14 hours) and clock skew. A log message further away is another message
# under a recycled id; raise the bound (``max_gap``) for a longer maximal_queue_lifetime.
MAX_JOIN_GAP = timedelta(days=5) + timedelta(days=1)


def _short_host(series: pd.Series) -> pd.Series:
    """syslog usually logs the short host name; Received has the FQDN."""
    return series.astype("string").str.lower().str.split(".").str[0]


def _norm(value: object, column: str) -> object:
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value).strip()
    if column == "client_name" and text.lower() == "unknown":
        return None
    if column in ("client_name", "spf_result", "dkim_result", "dmarc_result"):
        return text.lower()
    if column == "message_id":
        return text.strip("<>")
    if column == "envelope_sender":
        # The log keeps the sender's spelling; the header side is normalised.
        return normalise_address(f"<{text.strip('<>')}>")
    return text


def join_with_log(mail: pd.DataFrame, messages: pd.DataFrame, *,
                  max_gap: timedelta = MAX_JOIN_GAP) -> pd.DataFrame:
    """``mail`` with the matching log message's fields added as ``log_*`` columns.

    Empty trusted-hop fields are filled from the log; ``log_matched`` says whether a log
    message was found and ``log_disagreement`` lists (comma-separated) the fields where the
    header and the log differ. A log message matches on (host, queue id) only when the time
    from the header's ``received_time`` to its span (``first_seen`` to ``last_seen``) is at
    most ``max_gap``; without both times there is no match. When several incarnations of a
    reused queue id match, the nearest in time is taken. Rows and their order are those of
    ``mail``.
    """
    out = mail.copy()
    log = messages.copy()
    left = pd.DataFrame({"_row": range(len(out)), "_host": _short_host(out["host"]),
                         "_qid": out["queue_id"].astype("string"),
                         "_when": pd.to_datetime(out["received_time"], utc=True)})
    log["_host"] = _short_host(log["host"])
    log["_qid"] = log["queue_id"].astype("string")
    cols = ["_host", "_qid", *[c for c in {*_COMPARED.values(), *_LOG_ONLY} if c in log]]
    merged = left.dropna(subset=["_host", "_qid", "_when"]).merge(log[cols],
                                                                    on=["_host", "_qid"])
    gap, start_gap = _gaps(merged)
    merged = (merged.assign(_gap=gap, _start_gap=start_gap)[gap <= pd.Timedelta(max_gap)]
              .sort_values(["_gap", "_start_gap"], kind="stable"))
    merged = merged.drop_duplicates("_row").set_index("_row")
    idx = pd.RangeIndex(len(out))
    out["log_matched"] = pd.array(idx.isin(merged.index), dtype="boolean")
    for col in _LOG_ONLY:
        if col in merged:
            out[f"log_{col}"] = merged[col].reindex(idx).to_numpy()
    disagreements: list[list[str]] = [[] for _ in range(len(out))]
    for mcol, lcol in _COMPARED.items():
        if lcol not in merged or mcol not in out:
            continue
        logged = merged[lcol].reindex(idx)
        out[f"log_{lcol}"] = logged.to_numpy()
        filled = []
        for i, (mine, theirs) in enumerate(zip(out[mcol], logged, strict=True)):
            a, b = _norm(mine, mcol), _norm(theirs, mcol)
            if a is not None and b is not None and a != b:
                disagreements[i].append(mcol)
            filled.append(mine if a is not None or b is None else b)
        out[mcol] = pd.Series(filled, index=out.index, dtype=object)
    out["log_disagreement"] = [",".join(d) or None for d in disagreements]
    return out


def _gaps(merged: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """For each candidate: how far its log span is from the header's time (zero inside it),
    and how far its start is (to choose among candidates whose spans both hold it). NaT
    when a time is missing: ``NaT <= bound`` is false, so such a candidate never matches."""
    when = merged["_when"]
    nat = pd.Series(pd.NaT, index=merged.index, dtype="timedelta64[ns]")
    if "first_seen" not in merged:
        return nat, nat
    first = pd.to_datetime(merged["first_seen"], utc=True)
    last = (pd.to_datetime(merged["last_seen"], utc=True).fillna(first)
            if "last_seen" in merged else first)
    zero = pd.Timedelta(0)
    before, after = first - when, when - last
    span_gap = before.where(before > zero, zero) + after.where(after > zero, zero)
    return span_gap.where(first.notna()), before.abs()
