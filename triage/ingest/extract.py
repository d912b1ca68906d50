"""Line kind dispatch and field extraction, as a few lazy polars plans per chunk of lines.

Each line's candidate kinds come from (program, daemon, first word of the message); lines are
grouped by their candidate list, and each group runs its first candidate's regular expression.
Lines it does not match try the next candidate in a further round. All groups of a round are
collected together (``pl.collect_all``), so polars runs them in parallel and the per-operation
overhead is paid a few times per chunk instead of hundreds.
"""

from __future__ import annotations

from typing import cast

import polars as pl

from triage.ingest import linekinds as lk

FIRST_WORD_RE = rf"^(?:(?:{lk.QID_RE}|NOQUEUE)?: )?([^\s:;=\[]+)"
MILTER_PROGRAMS = frozenset({"policyd-spf", "opendkim", "opendmarc"})
_KIND_BY_NAME = {k.name: k for k in lk.KINDS}
_KIND_WORDS = frozenset(w for k in lk.KINDS for w in k.words if w != "*")
_CANDIDATES: dict[tuple[str, str | None, str | None, bool], tuple[str, ...]] = {}
_DTYPES: dict[str, pl.DataType] = {"str": pl.String(), "int": pl.Int64(), "float": pl.Float64(),
                                   "datetime": pl.Datetime("us", "UTC")}
EVENT_SCHEMA = pl.Schema({name: _DTYPES[t] for name, t in lk.EVENT_COLUMNS.items()})
_TEXT_RE = (r"^(?:(?P<code>[245][0-9][0-9]) )?"
            r"(?:(?P<enhanced_code>[245]\.[0-9]{1,3}\.[0-9]{1,3}) )?"
            r"(?:<(?P<object>[^>]*)>: )?(?P<reason>.*)$")


def candidates(program: str, daemon: str | None, word: str | None,
               is_postfix: bool) -> tuple[str, ...]:
    """Kinds a line of this program/daemon whose message starts with ``word`` may be.

    Kinds that name the word come first; the catch-all kinds (no word list) follow, except
    ``postfix_info`` when a specific kind claims the word: a known line that does not match
    its pattern is reported as unparsed rather than waved through as "info".
    """
    specific, generic = [], []
    for kind in lk.KINDS:
        if "*" in kind.daemons:
            if not is_postfix:
                continue
        elif daemon not in kind.daemons and program not in kind.daemons:
            continue
        if kind.words and "*" not in kind.words:
            if word in kind.words:
                specific.append(kind.name)
        else:
            generic.append(kind.name)
    if specific:
        generic = [g for g in generic if g != "postfix_info"]
    return tuple(specific + generic)


def extract_events(frame: pl.DataFrame, rule_id_pattern: str
                   ) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """(events by kind, unrecognised lines) for a frame of lines with parsed syslog headers.

    Each kind's frame has the header columns and that kind's fields, typed as in
    EVENT_SCHEMA, in line order.

    ``frame`` has line_no, time, host, program, pid, instance, service, daemon, msg. Lines of
    programs that are not part of the mail system are dropped here (the caller counts them).
    """
    is_mail = pl.col("instance").is_not_null() | pl.col("program").is_in(list(MILTER_PROGRAMS))
    frame = frame.filter(is_mail)
    if "word" not in frame.columns:
        frame = frame.with_columns(pl.col("msg").str.extract(FIRST_WORD_RE, 1).alias("word"))
    # A word no kind names selects the same kinds as no word (host names, domains ...): fold
    # it away, so the combinations below stay few.
    frame = frame.with_columns(
        pl.when(pl.col("word").is_in(list(_KIND_WORDS))).then(pl.col("word")).alias("word"))
    combos = frame.select("program", "daemon", "instance", "word").unique()
    tuples: dict[tuple[str, ...], int] = {}
    rows = []
    for program, daemon, instance, word in combos.iter_rows():
        key = (program, daemon, word, instance is not None)
        cands = _CANDIDATES.get(key)
        if cands is None:
            cands = candidates(*key)
            if len(_CANDIDATES) < 100_000:
                _CANDIDATES[key] = cands
        rows.append((program, daemon, word, tuples.setdefault(cands, len(tuples))))
    lookup = pl.DataFrame(rows, schema={"program": pl.String, "daemon": pl.String,
                                        "word": pl.String, "cset": pl.Int64}, orient="row")
    frame = frame.join(lookup, on=["program", "daemon", "word"], how="left",
                       nulls_equal=True).drop("word")
    by_id = {v: k for k, v in tuples.items()}
    empty = frame.clear().drop("cset")
    pending = [(part, by_id[int(cast(int, key[0]))], 0) for key, part in
               frame.partition_by("cset", include_key=False, as_dict=True).items()]
    del frame
    found: list[tuple[str, pl.LazyFrame]] = []
    unknown: list[pl.DataFrame] = []
    while pending:
        plans = []
        for part, cands, i in pending:
            if i >= len(cands):
                continue
            pattern = _KIND_BY_NAME[cands[i]].pattern
            plans.append(part.lazy().with_columns(
                pl.col("msg").str.extract_groups(pattern).alias("_g")))
        tried = [p for p in pending if p[2] < len(p[1])]
        unknown.extend(p[0] for p in pending if p[2] >= len(p[1]))
        results = pl.collect_all(plans) if plans else []
        pending = []
        for (part, cands, i), res in zip(tried, results, strict=True):
            hit = _matched(res)
            if hit.any():
                found.append((cands[i], _finish(_KIND_BY_NAME[cands[i]],
                                                res.lazy().filter(hit), rule_id_pattern)))
            if not hit.all():
                pending.append((part.filter(~hit), cands, i + 1))
    by_kind: dict[str, list[pl.LazyFrame]] = {}
    for name, plan in found:
        by_kind.setdefault(name, []).append(plan)
    names = list(by_kind)
    plans = [pl.concat(by_kind[n]).sort("line_no") if len(by_kind[n]) > 1 else by_kind[n][0]
             for n in names]
    events = dict(zip(names, pl.collect_all(plans), strict=True)) if plans else {}
    unknown_df = pl.concat(unknown) if unknown else empty
    return events, unknown_df


def _matched(res: pl.DataFrame) -> pl.Series:
    # extract_groups gives all-null fields when the pattern does not match; every kind's
    # pattern sets at least one group on a match
    fields = cast(pl.Struct, res.schema["_g"]).fields
    return res.select(pl.any_horizontal([pl.col("_g").struct.field(f.name).is_not_null()
                                         for f in fields]))[:, 0]


def _finish(kind: lk.LineKind, got: pl.LazyFrame, rule_id_pattern: str) -> pl.LazyFrame:
    """Typed event columns for the lines of one kind (all lazy)."""
    fields = [f.name for f in cast(pl.Struct, got.collect_schema()["_g"]).fields]
    base_cols = [c for c in got.collect_schema().names() if c not in fields and c != "_g"]
    out = got.select(*base_cols, pl.col("_g")).unnest("_g").with_columns(
        pl.lit(kind.name).alias("kind"))
    if kind.name == "dns_warning":
        # the two "verification" forms name the address first; the name goes to client_name
        out = out.with_columns(
            pl.coalesce("client_ip", "detail", "detail2").alias("client_ip"),
            pl.coalesce("client_name", "helo", "object").alias("client_name"),
            pl.lit(None, dtype=pl.String).alias("detail"),
        ).drop("detail2", "helo", "object")
        fields = [f for f in fields if f not in ("detail2", "helo", "object")]
    if kind.reject_text and "text" in fields:
        out = _split_reject_text(out, "object" in fields, rule_id_pattern)
    if kind.name == "delivery":
        out = out.with_columns(pl.col("response").str.extract(
            r"(?:queued|forwarded) as ([0-9A-Za-z]+)\)?\s*$", 1).alias("next_queue_id"))
    elif kind.name == "dkim":
        out = _dkim_fields(out)
    elif kind.name == "spf":
        out = out.with_columns(pl.col("result").str.to_lowercase())
    elif kind.name == "disconnect":
        out = out.with_columns(pl.col("commands").str.strip_chars())
    fixes = []
    for col in ("client_name", "helo", "recipient"):  # empty means "not given", except sender
        if col in fields:
            fixes.append(pl.when(pl.col(col) != "").then(pl.col(col)).alias(col))
    for col in ("code", "size", "nrcpt", "client_port", "delay"):
        if col in fields or (col == "code" and kind.reject_text):
            fixes.append(pl.col(col).cast(EVENT_SCHEMA[col], strict=False))
    if fixes:
        out = out.with_columns(fixes)
    names = out.collect_schema().names()
    return out.select([pl.col(c).cast(EVENT_SCHEMA[c]) for c in EVENT_SCHEMA if c in names])


def _split_reject_text(out: pl.LazyFrame, has_object: bool, rule_id_pattern: str
                       ) -> pl.LazyFrame:
    if has_object:  # header/body check: keep "header"/"body" as the object
        out = out.rename({"object": "_check_object"})
    out = out.with_columns(pl.col("text").str.extract_groups(_TEXT_RE).alias("_t")).drop(
        "text").unnest("_t")
    if has_object:
        out = out.with_columns(pl.coalesce("_check_object", "object").alias("object")).drop(
            "_check_object")
    reason_class = pl.lit(None, dtype=pl.String)
    probe = pl.concat_str([pl.col("reason").fill_null(""), pl.lit(" "),
                           pl.col("object").fill_null("")])
    for name, pattern in reversed(lk.REASON_CLASSES):
        reason_class = pl.when(probe.str.contains(pattern)).then(pl.lit(name)).otherwise(
            reason_class)
    action_class = (pl.when(pl.col("kind") == "milter").then(pl.lit("milter"))
                    .when(pl.col("kind") == "check").then(pl.col("object")))
    return out.with_columns(
        pl.coalesce(reason_class, action_class, pl.lit("other")).alias("reason_class"),
        pl.col("reason").str.extract(rule_id_pattern, 1).alias("rule_id"),
    )


def _dkim_fields(out: pl.LazyFrame) -> pl.LazyFrame:
    d = pl.col("detail")
    result = (pl.when(d.str.starts_with("DKIM verification successful")).then(pl.lit("pass"))
              .when(d.str.contains(r"bad signature|signature verification failed"))
              .then(pl.lit("fail"))
              .when(d.str.starts_with("no signature data")).then(pl.lit("none"))
              .when(d.str.contains(r"key retrieval failed|SSL error|DNS"))
              .then(pl.lit("temperror"))
              .when(d.str.starts_with("DKIM-Signature field added")).then(pl.lit("signed")))
    sd = d.str.extract_groups(r"\(?s=(?P<selector>[^,\s)]+),? d=(?P<domain>[^,\s)]+)")
    return out.with_columns(result.alias("result"), sd.alias("_sd")).unnest("_sd")
