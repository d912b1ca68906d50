"""Mail folders -> the ``mail`` table: one row per message, features from trusted data.

Client IP, rDNS and HELO come from the trusted Received hop (see ``received.trusted_hop``);
SPF, DKIM and DMARC results from headers our MX wrote above it (``authres.trusted_results``).
Everything else (From, Subject, Message-ID ...) is what the sender wrote, kept as evidence.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, overload

from triage.ingest.address import (
    address_domain,
    normalise_address,
    parse_address,
    registered_domain,
)
from triage.ingest.authres import TrustedAuth, dkim_signature_domains, trusted_results
from triage.ingest.mailbox import OnSkip, RawMessage, iter_messages
from triage.ingest.message import MessageRecord, decode_header_value, read_message
from triage.ingest.received import (
    Received,
    _parse_date,
    infer_my_hostnames,
    parse_received,
    trusted_hop,
)

if TYPE_CHECKING:  # imported where a frame is built: the scan's folder reader sends rows
    import pandas as pd

__all__ = ["MAIL_COLUMNS", "guess_my_hostnames", "iter_row_chunks", "mail_frame", "mail_row",
           "raw_header", "read_mailboxes", "rows_frame"]

# The contract columns (docs/ARCHITECTURE.md) first, then extras.
MAIL_COLUMNS = [
    "path", "role", "message_id", "received_time", "host", "queue_id", "trusted",
    "client_ip", "client_name", "helo", "envelope_sender", "from_address", "from_domain",
    "sender_domain", "spf_result", "dkim_result", "dkim_domains", "dmarc_result", "subject",
    "x_mailer", "list_id", "defects",
    # extras
    "key", "size", "hops", "trusted_index", "local_origin", "tls", "authenticated",
    "rdns_domain", "from_domain_full", "sender_domain_full", "reply_to_domain",
    "message_id_domain", "dkim_pass_domains", "user_agent", "date", "defect_kinds",
    # The raw values of the headers rules are made for, as header_checks sees them (not
    # decoded, folding kept as a newline, see ``raw_header``): the backtest replays these.
    "from_header", "subject_header", "x_mailer_header", "message_id_header",
]

Progress = Callable[[int], None]
_SAMPLE_FOR_INFERENCE = 500
_CHUNK = 2000


def _first_by(rec: MessageRecord) -> str | None:
    for value in rec.get_all("received"):
        r = parse_received(value)
        if r is not None and r.by:
            return r.by
    return None


def guess_my_hostnames(paths: Sequence[str | Path], *, subfolders: bool = False,
                       sample: int = _SAMPLE_FOR_INFERENCE) -> list[str]:
    """Infer our MX host names from the topmost Received ``by`` host of the first
    ``sample`` messages of each path (see ``received.infer_my_hostnames``)."""
    tops: list[str | None] = []
    for path in paths:
        for raw in islice(iter_messages([path], subfolders=subfolders), sample):
            tops.append(_first_by(read_message(raw.data)))
    return infer_my_hostnames(tops)


def read_mailboxes(
    paths: str | Path | Sequence[str | Path],
    role: str | None = None,
    my_hostnames: Sequence[str] | None = None,
    *,
    trusted_relays: Sequence[str] = (),
    subfolders: bool = False,
    skip_keys: frozenset[str] | set[str] = frozenset(),
    full: bool = False,
    progress: Progress | None = None,
    on_skip: OnSkip | None = None,
) -> pd.DataFrame:
    """Read mail folders into the ``mail`` table (columns: ``MAIL_COLUMNS``).

    ``role`` (``spam`` / ``ham``) is copied into every row. ``my_hostnames`` are our MX names
    or globs; when None they are inferred from the folders (``guess_my_hostnames``).
    ``skip_keys`` are message keys already read (incremental scans); ``progress`` is called
    with the number of messages read so far; ``on_skip(path, reason)`` hears of what is left
    out for now (an mbox Procmail holds locked, a message still being written, an empty file).
    Messages stream through: memory holds the rows, never the folder.

    >>> df = read_mailboxes([], role="spam", my_hostnames=["mx.example.net"])
    >>> list(df.columns[:4]), len(df)
    (['path', 'role', 'message_id', 'received_time'], 0)
    """
    import pandas as pd

    frames = [rows_frame(rows) for rows in iter_row_chunks(
        paths, role, my_hostnames, trusted_relays=trusted_relays, subfolders=subfolders,
        skip_keys=skip_keys, full=full, progress=progress, on_skip=on_skip)]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


Row = tuple[object, ...]


def iter_row_chunks(
    paths: str | Path | Sequence[str | Path],
    role: str | None = None,
    my_hostnames: Sequence[str] | None = None,
    *,
    trusted_relays: Sequence[str] = (),
    subfolders: bool = False,
    skip_keys: frozenset[str] | set[str] = frozenset(),
    full: bool = False,
    progress: Progress | None = None,
    on_skip: OnSkip | None = None,
) -> Iterator[list[Row]]:
    """The rows of :func:`read_mailboxes` (tuples in ``MAIL_COLUMNS`` order), in lists of at
    most ``_CHUNK``; at least one list, empty when there is no message. :func:`rows_frame`
    types a list. Needs no pandas: the scan's folder reader runs this in a process of its
    own and sends the rows."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    mine = list(my_hostnames) if my_hostnames is not None else guess_my_hostnames(
        paths, subfolders=subfolders)
    # Rows become typed frames every _CHUNK messages: rows cost several times the memory of
    # the same data in columns.
    relays = tuple(trusted_relays)
    rows: list[Row] = []
    sent = False
    messages = iter_messages(paths, subfolders=subfolders, skip_keys=skip_keys,
                             on_skip=on_skip)
    for n, raw in enumerate(messages):
        rows.append(_row(raw, read_message(raw.data, full=full), role, mine, relays))
        if len(rows) == _CHUNK:
            yield rows
            rows, sent = [], True
        if progress is not None and n % 500 == 499:
            progress(n + 1)
    if rows or not sent:
        yield rows


def mail_frame(rows: Iterable[dict[str, object]]) -> pd.DataFrame:
    """Rows from :func:`mail_row` -> a DataFrame with stable dtypes."""
    return rows_frame([tuple(row.get(c) for c in MAIL_COLUMNS) for row in rows])


_DATETIME_COLUMNS = frozenset({"received_time", "date"})
_BOOLEAN_COLUMNS = frozenset({"trusted", "local_origin", "tls"})
_INT_COLUMNS = frozenset({"defects", "size", "hops", "trusted_index"})


def rows_frame(rows: list[Row]) -> pd.DataFrame:
    """Row tuples -> the typed frame, one column at a time: datetimes in UTC (anything
    unreadable NaT), nullable booleans and integers, text as str or None (never NaN)."""
    import pandas as pd

    values = list(zip(*rows, strict=True)) if rows else [()] * len(MAIL_COLUMNS)
    data: dict[str, object] = {}
    for col, column in zip(MAIL_COLUMNS, values, strict=True):
        if col in _DATETIME_COLUMNS:
            data[col] = pd.to_datetime(pd.Series(column, dtype=object), utc=True,
                                       errors="coerce")
        elif col in _BOOLEAN_COLUMNS:
            data[col] = pd.array(column, dtype="boolean")
        elif col in _INT_COLUMNS:
            data[col] = pd.array(column, dtype="Int64")
        else:
            data[col] = pd.Series(column, dtype=object)
    return pd.DataFrame(data, columns=MAIL_COLUMNS)


def mail_row(raw: RawMessage, rec: MessageRecord, role: str | None,
             my_hostnames: Sequence[str], trusted_relays: Sequence[str] = ()
             ) -> dict[str, object]:
    """One row of the ``mail`` table for one message."""
    return dict(zip(MAIL_COLUMNS, _row(raw, rec, role, my_hostnames, trusted_relays),
                    strict=True))


def _row(raw: RawMessage, rec: MessageRecord, role: str | None,
         my_hostnames: Sequence[str], trusted_relays: Sequence[str]) -> tuple[object, ...]:
    """The values of :func:`mail_row`, in ``MAIL_COLUMNS`` order."""
    received = rec.positions("received")
    texts = [v for _, v in received]
    hop = trusted_hop(_LazyHops(texts), my_hostnames, trusted_relays, texts=texts)
    # the trusted Received header's position among all headers
    trusted_pos = received[hop.index][0] if hop is not None else None
    auth = (trusted_results(rec.headers, trusted_pos, my_hostnames)
            if trusted_pos is not None else _NO_AUTH)
    r = hop.received if hop is not None else None
    # the header position a Return-Path must be above (see _envelope_sender)
    above = trusted_pos if trusted_pos is not None else received[0][0] if received else None
    envelope = _envelope_sender(rec, above)
    from_addr = parse_address(rec.get("from"))
    msgid = _message_id(rec.get("message-id"))
    dkim = rec.get_all("dkim-signature")
    return (
        raw.path if raw.offset is None else f"{raw.path}:{raw.offset}",  # path
        role,
        msgid,  # message_id
        r.date if r else None,  # received_time
        r.by.lower() if r and r.by else None,  # host
        r.queue_id if r else None,
        hop is not None,  # trusted
        r.ip if r else None,  # client_ip
        r.rdns.lower() if r and r.rdns else None,  # client_name
        r.helo if r else None,
        envelope,  # envelope_sender
        from_addr,  # from_address
        registered_domain(address_domain(from_addr)),  # from_domain
        registered_domain(address_domain(envelope)),  # sender_domain
        auth.spf_result,
        auth.dkim_result,
        (",".join(dkim_signature_domains(dkim)) or None) if dkim else None,  # dkim_domains
        auth.dmarc_result,
        decode_header_value(rec.get("subject")),
        decode_header_value(rec.get("x-mailer")),
        _list_id(rec.get("list-id")),
        rec.defects,
        raw.key,
        rec.size,
        len(received),  # hops
        hop.index if hop is not None else None,  # trusted_index
        hop.internal_only if hop is not None else None,  # local_origin
        r.tls if r else None,
        r.authenticated if r else None,
        registered_domain(r.rdns) if r else None,  # rdns_domain
        address_domain(from_addr),  # from_domain_full
        address_domain(envelope),  # sender_domain_full
        registered_domain(address_domain(parse_address(rec.get("reply-to")))),
        registered_domain(msgid.rpartition("@")[2] if msgid else None),  # message_id_domain
        ",".join(auth.dkim_pass_domains) or None,
        decode_header_value(rec.get("user-agent")),
        _header_date(rec.get("date")),
        ",".join(rec.defect_kinds) or None,
        raw_header(rec.get("from")),  # from_header
        raw_header(rec.get("subject")),  # subject_header
        raw_header(rec.get("x-mailer")),  # x_mailer_header
        raw_header(rec.get("message-id")),  # message_id_header
    )


_NO_AUTH = TrustedAuth()


class _LazyHops(Sequence[Received | None]):
    """Received headers parsed on first access: the trusted hop is usually among the top
    three, and spam often carries a dozen forged ones below it."""

    def __init__(self, values: list[str]) -> None:
        self._values = values
        self._parsed: dict[int, Received | None] = {}

    def __len__(self) -> int:
        return len(self._values)

    @overload
    def __getitem__(self, i: int) -> Received | None: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Received | None]: ...
    def __getitem__(self, i: int | slice) -> Received | Sequence[Received | None] | None:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self._values)
        if i not in self._parsed:
            self._parsed[i] = parse_received(self._values[i])
        return self._parsed[i]


def raw_header(value: str | None) -> str | None:
    """A header value as Postfix's header_checks see it after ``Name:``: not decoded, a
    folded header one logical line with its line breaks kept as ``\\n`` (CR LF -> LF, as
    the SMTP server stores lines). Only the blanks right after the colon differ (the
    ``MessageRecord`` drops them); header rules allow any there."""
    if value is None:
        return None
    return value.replace("\r\n", "\n") if "\r" in value else value


def _envelope_sender(rec: MessageRecord, limit: int | None) -> str | None:
    """Return-Path as local delivery wrote it (the topmost one above header position
    ``limit``, the trusted hop's Received header, or the topmost Received header when no
    hop is trusted); else the mbox From_ line. A Return-Path below that Received header was
    written before our server got the message, by the sender: it proves nothing. ``limit``
    None (no Received header at all): the topmost Return-Path."""
    for pos, rp in rec.positions("return-path"):
        if limit is not None and pos > limit:
            break
        m = _ANGLE_ADDR_RE.search(rp)
        return normalise_address(f"<{m.group(1)}>" if m else rp.strip())
    if rec.unixfrom:
        parts = rec.unixfrom.split()
        if len(parts) > 1:
            return "" if parts[1] == "MAILER-DAEMON" else normalise_address(parts[1])
    return None


_ANGLE_ADDR_RE = re.compile(r"<([^<>]*)>")
_ANGLE_ID_RE = re.compile(r"<([^<>\s]+)>")


def _message_id(value: str | None) -> str | None:
    if not value:
        return None
    m = _ANGLE_ID_RE.search(value)
    return m.group(1) if m else (value.strip() or None)


def _list_id(value: str | None) -> str | None:
    if not value:
        return None
    m = _ANGLE_ID_RE.search(value)
    return m.group(1).lower() if m else decode_header_value(value)


def _header_date(value: str | None) -> object:
    return _parse_date(value) if value else None
