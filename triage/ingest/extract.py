"""Line kind dispatch and field extraction, as a few lazy polars plans per chunk of lines.

Each line's candidate kinds come from (program, daemon, first word of the message); lines are
grouped by their candidate list, and each group runs its first candidate's regular expression.
Lines it does not match try the next candidate in a further round (a kind with a ``fast``
pattern is two candidates: the fast pattern, then the full one for the lines it leaves). All
groups of a round are collected together (``pl.collect_all``), so polars runs them in parallel
and the per-operation overhead is paid a few times per chunk instead of hundreds.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass
from typing import cast

import polars as pl

from triage.ingest import linekinds as lk

FIRST_WORD_RE = rf"^(?:(?:{lk.QID_RE}|NOQUEUE)?: )?([^ \t:;=\[]+)"
MILTER_PROGRAMS = frozenset({"policyd-spf", "opendkim", "opendmarc"})
_KIND_BY_NAME = {k.name: k for k in lk.KINDS}
_KIND_WORDS = frozenset(w for k in lk.KINDS for w in k.words if w != "*")
_CANDIDATES: dict[tuple[str, str | None, str | None, bool], tuple[str, ...]] = {}
_DTYPES: dict[str, pl.DataType] = {"str": pl.String(), "int": pl.Int64(), "float": pl.Float64(),
                                   "datetime": pl.Datetime("us", "UTC")}
EVENT_SCHEMA = pl.Schema({name: _DTYPES[t] for name, t in lk.EVENT_COLUMNS.items()})
_TEXT_RE = (r"^(?:(?P<code>[245][0-9][0-9]) )?"
            r"(?:(?P<enhanced_code>[245]\.[0-9]{1,3}\.[0-9]{1,3}) )?"
            r"(?:<(?P<object>[^>]*)>: )?")


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

    Cost: a block of lines pays a fixed price per polars operation, so the expressions of each
    kind are built once per process (``_plan``) and every round of matching is one
    ``collect_all``; the rest is per line and lives in the regular expressions.
    """
    is_mail = pl.col("instance").is_not_null() | pl.col("program").is_in(_MILTER_LIST)
    frame = frame.filter(is_mail)
    # A word no kind names selects the same kinds as no word (host names, domains ...): fold
    # it away, so the combinations below stay few.
    frame = (frame.lazy().with_columns(pl.col("msg").str.extract_groups(_HEAD_RE).alias("word"))
             .with_columns(_KIND_WORD).collect(**_COLLECT))
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
    lookup = pl.DataFrame(rows, schema=_LOOKUP_SCHEMA, orient="row")
    frame = frame.join(lookup, on=["program", "daemon", "word"], how="left",
                       nulls_equal=True).drop("word")
    by_id = {v: k for k, v in tuples.items()}
    empty = frame.clear().drop("cset")
    pending = [(part, _steps(by_id[int(cast(int, key[0]))]), 0, n) for n, (key, part) in
               enumerate(frame.partition_by("cset", include_key=False, as_dict=True).items())]
    del frame
    found: dict[str, list[pl.DataFrame]] = {}
    # Kinds and unrecognised parts are put in the order one pattern per candidate kind gives
    # (candidate index, then part), whatever fast patterns ran: the output does not depend on
    # which lines a fast pattern took.
    first: dict[str, tuple[int, int]] = {}
    unknown: list[tuple[tuple[int, int], pl.DataFrame]] = []
    while pending:
        unknown.extend(((steps[-1][2] + 1 if steps else 0, n), part)
                       for part, steps, i, n in pending if i >= len(steps))
        pending = [p for p in pending if p[2] < len(p[1])]
        if not pending:
            break
        results = pl.collect_all([part.lazy().with_columns(_plan(*steps[i][:2]).extract)
                                  .with_columns(_plan(*steps[i][:2]).hit)
                                  for part, steps, i, _ in pending], **_COLLECT)
        tried, pending = pending, []
        for (part, steps, i, n), res in zip(tried, results, strict=True):
            hit = res.get_column("_hit")
            n_hit = int(hit.sum())
            name, _, j = steps[i]
            if n_hit:
                found.setdefault(name, []).append(res if n_hit == res.height
                                                  else res.filter(hit))
                first[name] = min(first.get(name, (j, n)), (j, n))
            if n_hit < res.height:
                pending.append((part.filter(~hit), steps, i + 1, n))
    names = sorted(found, key=first.__getitem__)
    plans = []
    for name in names:
        parts = found[name]
        got = pl.concat(parts).sort("line_no") if len(parts) > 1 else parts[0]
        plans.append(_plan(name).finish(got.lazy(), rule_id_pattern))
    events = dict(zip(names, pl.collect_all(plans, **_COLLECT), strict=True)) if plans else {}
    unknown.sort(key=lambda u: u[0])
    unknown_df = pl.concat([u[1] for u in unknown]) if unknown else empty
    return events, unknown_df


@functools.cache
def _steps(cands: tuple[str, ...]) -> tuple[tuple[str, bool, int], ...]:
    """The patterns to try, in order, for a line with these candidate kinds: (kind, fast,
    index of the kind in ``cands``), a kind's fast pattern first."""
    return tuple(step for j, name in enumerate(cands) for step in
                 ([(name, True, j)] if _KIND_BY_NAME[name].fast else []) + [(name, False, j)])


_MILTER_LIST = sorted(MILTER_PROGRAMS)
# the pattern's empty first group is "" on a match and null otherwise; counted in the plan
# (a Series' struct.field / is_not_null each pay a whole query's overhead, ~0.3 ms a call)
_MATCHED = pl.col("_g").struct.field("_m").is_not_null()
# These plans are a projection or two each: the in-memory engine with the optimisations an
# eager call gets saves about 0.3 ms of planning per plan (about 10 ms per block of lines).
_COLLECT: dict = {"engine": "in-memory", "optimizations": pl.QueryOptFlags.none()}
_KIND_WORD_LIST = sorted(_KIND_WORDS)
# The first word folded as above, without FIRST_WORD_RE's capture (its optional queue id makes
# the regex crate search for it with a backtracker: 0.3 us a line): _HEAD_RE reads the first
# token and the token after a following ": " in one pass (0.18 us), then the word is the first
# token if it is a kind's word, else the second one if the first is a queue id, NOQUEUE or
# empty. No kind's word is one of those, so this is FIRST_WORD_RE's word, folded.
_HEAD_RE = r"^(?P<t>[^ \t:;=\[]*)(?:: (?P<w>[^ \t:;=\[]+))?"
_NO_WORD_RE = rf"^(?:{lk.QID_RE}|NOQUEUE)?$"
if any(re.fullmatch(_NO_WORD_RE, w) for w in _KIND_WORDS):
    raise ValueError("a line kind's word reads as a queue id")
_KIND_WORD = (pl.when(pl.col("word").struct.field("t").is_in(_KIND_WORD_LIST))
              .then(pl.col("word").struct.field("t"))
              .when(pl.col("word").struct.field("w").is_in(_KIND_WORD_LIST)
                    & pl.col("word").struct.field("t").str.contains(_NO_WORD_RE))
              .then(pl.col("word").struct.field("w")).alias("word"))
_LOOKUP_SCHEMA = {"program": pl.String, "daemon": pl.String, "word": pl.String,
                  "cset": pl.Int64}
_BASE_COLUMNS = ("line_no", "time", "host", "program", "pid", "instance", "service", "daemon")


@dataclass(frozen=True, eq=False)  # hashed by identity: one per kind, cached
class _KindPlan:
    """The polars expressions of one line kind, built once per process."""

    kind: lk.LineKind
    extract: list[pl.Expr]  # msg -> struct "_g" of the pattern's groups (with the match
    # marker _m), and for text_tail kinds "_rest", the message after the pattern's match
    hit: list[pl.Expr]  # then "_hit", whether the line is of this kind (and any fix-up of _g)
    fields: tuple[str, ...]

    def finish(self, got: pl.LazyFrame, rule_id_pattern: str) -> pl.LazyFrame:
        """Typed event columns for the matched lines of this kind."""
        rest = ["_rest"] if self.kind.text_tail else []
        out = got.select(*_BASE_COLUMNS, *self._unnest(), *rest).with_columns(
            pl.lit(self.kind.name).alias("kind"))
        for stage in self._stages(rule_id_pattern):
            out = out.with_columns(stage)
        return out.select(self._final())

    @functools.cache  # noqa: B019 (one plan per kind, kept for the process)
    def _unnest(self) -> list[pl.Expr]:
        g = pl.col("_g").struct
        return [g.field(f) for f in self.fields]

    @functools.cache  # noqa: B019
    def _stages(self, rule_id_pattern: str) -> list[list[pl.Expr]]:
        return _finish_stages(self.kind, self.fields, rule_id_pattern)

    @functools.cache  # noqa: B019
    def _final(self) -> list[pl.Expr]:
        # every column already has its EVENT_SCHEMA type (captures are strings; the numeric
        # ones are cast in _finish_stages): a plain projection, cheap to plan
        names = set(_BASE_COLUMNS) | set(self._output_fields()) | {"kind"}
        return [pl.col(c) for c in EVENT_SCHEMA if c in names]

    def _output_fields(self) -> set[str]:
        fields = set(self.fields) - {"_m"}
        if self.kind.text_tail:
            fields |= _TAIL_FIELDS
        if self.kind.name == "dns_warning":
            fields -= {"detail2", "helo", "object"}
            fields |= {"client_ip", "client_name"}
        if self.kind.reject_text:
            fields = (fields - {"text"}) | {"code", "enhanced_code", "object", "reason",
                                            "reason_class", "rule_id"}
        if self.kind.name == "delivery":
            fields.add("next_queue_id")
        elif self.kind.name == "dkim":
            fields |= {"result", "selector", "domain"}
        return fields


def _fields(pattern: str) -> tuple[str, ...]:
    # extract_groups names its struct fields after the groups, in group order
    groups = re.compile(pattern).groupindex
    return tuple(sorted(groups, key=groups.__getitem__))


@functools.cache
def _plan(name: str, fast: bool = False) -> _KindPlan:
    """The plan of a kind's pattern, or (``fast``) of its fast pattern: the same fields."""
    kind = _KIND_BY_NAME[name]
    source = kind.fast if fast else kind.pattern
    if not source.startswith("^"):
        raise ValueError(f"line kind {name}: pattern must be anchored with ^")
    pattern = "^(?P<_m>)" + source[1:]
    fields = _fields(pattern)
    if fast and fields != _fields("^(?P<_m>)" + kind.pattern[1:]):
        raise ValueError(f"line kind {name}: the fast pattern's groups differ from the pattern's")
    extract = [pl.col("msg").str.extract_groups(pattern).alias("_g")]
    if kind.text_tail:
        extract.append(pl.col("msg").str.replace(pattern, "", literal=False, n=1)
                       .alias("_rest"))
    hit = [_MATCHED.alias("_hit")]
    if fast and kind.fast_suffix:
        group, suffix = kind.fast_suffix
        value = pl.col("_g").struct.field(group)
        hit = [(_MATCHED & (value.is_null() | value.str.ends_with(suffix))).alias("_hit"),
               pl.col("_g").struct.with_fields(pl.field(group).str.strip_suffix(suffix))]
    return _KindPlan(kind, extract, hit, fields)


# The from/to/proto/helo tail of a reject text: found by an unanchored search (the leftmost
# place where it matches through the end of the line), then read with an anchored match on
# the short tail alone.
_TAIL_FIND = lk.TAIL
_TAIL_READ = "^" + lk.TAIL
_TAIL_FIELDS = frozenset({"sender", "recipient", "proto", "helo"})


# A reject text may hold a value of the tail as its object ("<HELO>: Helo command rejected"),
# and the HELO, sender and recipient are the client's text: a HELO like
# 'x; from=<ceo@bank.example> proto=ESMTP helo=<y' puts a second place where TAIL matches
# through the end of the line inside the object, left of the real tail. A line whose rest
# holds one of "proto=", "from=<", "to=<", "helo=<" more than once (never, in an ordinary
# line; a fake tail needs one of them and a real one has each at most once) has its
# candidate tails (leftmost first, up to _TAIL_CANDIDATES) scored: a text whose object is
# exactly one of the candidate's sender, recipient or HELO scores that value's length + 1, a
# text with no object 0, one with an object that is none of them -1 (a split inside it). The best
# score wins, the leftmost among equals: a fake tail inside the object leaves a shorter
# object (or none that matches); one inside the trailing HELO cannot beat the real tail's.
_TAIL_CANDIDATES = 6
_REPEATED_MARK = "(?s)" + "|".join(f"{m}.*{m}" for m in ("proto=", "from=<", "to=<", "helo=<"))
# Postfix writes "; " between the text and its tail: the candidates after the leftmost one
# start there (a tail found without it would only repeat one found with it).
_TAIL_NEXT = (r"; (?:from=<.*?>,? )?(?:to=<.*?>,? )?proto=[A-Za-z]+,?(?: helo=<.*>)?$")
_CODES_RE = r"^(?:[245][0-9][0-9] )?(?:[245]\.[0-9]{1,3}\.[0-9]{1,3} )?"


def _tail_choice_stages() -> list[list[pl.Expr]]:
    """"_at" moved to the best scoring candidate tail, for lines with a repeated tail mark."""
    rest = pl.col("_rest")
    stages: list[list[pl.Expr]] = [[
        pl.when(rest.str.contains(_REPEATED_MARK)).then(pl.col("_at")).alias("_a0")]]
    pending: list[pl.Expr] = []  # candidate k's score, computed with candidate k + 1
    for k in range(_TAIL_CANDIDATES):
        a = pl.col(f"_a{k}")
        tail = rest.str.slice(a).str.extract_groups(_TAIL_READ).alias(f"_c{k}")
        body = rest.str.slice(0, a).str.replace(_CODES_RE, "").alias(f"_b{k}")
        step = [tail, body, *pending]
        if k + 1 < _TAIL_CANDIDATES:
            step.append((a + 1 + rest.str.slice(a + 1).str.find(_TAIL_NEXT))
                        .alias(f"_a{k + 1}"))
        stages.append(step)
        c, b = pl.col(f"_c{k}").struct, pl.col(f"_b{k}")
        score: pl.Expr = pl.when(~b.str.starts_with("<")).then(pl.lit(0))
        for f in ("sender", "recipient", "helo"):
            value = c.field(f)
            hit = b.str.starts_with(pl.concat_str([pl.lit("<"), value, pl.lit(">: ")]))
            score = pl.when(hit.fill_null(False)).then(
                pl.max_horizontal(value.str.len_chars() + 1, score.fill_null(-1)))\
                .otherwise(score)
        pending = [pl.when(a.is_not_null()).then(score.fill_null(-1)).alias(f"_s{k}")]
    stages.append(pending)
    scores = [pl.col(f"_s{k}") for k in range(_TAIL_CANDIDATES)]
    stages.append([pl.max_horizontal(scores).alias("_best")])
    stages.append([pl.coalesce(*[pl.when(s == pl.col("_best")).then(pl.col(f"_a{k}"))
                                 for k, s in enumerate(scores)], pl.col("_at")).alias("_at")])
    return stages


def _text_tail_stages() -> list[list[pl.Expr]]:
    """text and the tail's fields. The tail is read with TAIL_FAST (one pass) where that
    matches with a helo ending in ">" (the fields are then the same as TAIL's); the other
    tails with TAIL (a null skips the regex)."""
    rest, at, ok = pl.col("_rest"), pl.col("_at"), pl.col("_ok")
    fast, tail = pl.col("_tf").struct, pl.col("_tail").struct
    helo = fast.field("helo")
    return [
        [rest.str.find(_TAIL_FIND).alias("_at")],
        *_tail_choice_stages(),
        [pl.when(at.is_null()).then(rest).otherwise(rest.str.slice(0, at)).alias("text"),
         rest.str.slice(at).alias("_ts")],
        [pl.col("_ts").str.extract_groups(lk.TAIL_FAST).alias("_tf")],
        [(fast.field("proto").is_not_null() & (helo.is_null() | helo.str.ends_with(">")))
         .alias("_ok")],
        [pl.when(~ok).then(pl.col("_ts")).str.extract_groups(_TAIL_READ).alias("_tail")],
        [pl.when(ok).then(helo.str.strip_suffix(">") if f == "helo" else fast.field(f))
         .otherwise(tail.field(f)).alias(f) for f in ("sender", "recipient", "proto", "helo")],
    ]


def _finish_stages(kind: lk.LineKind, fields_in: tuple[str, ...],
                   rule_id_pattern: str) -> list[list[pl.Expr]]:
    """The with_columns steps that turn a kind's captured groups into typed event columns."""
    fields = [f for f in fields_in if f != "_m"]
    stages: list[list[pl.Expr]] = []
    if kind.name == "dns_warning":
        # the two "verification" forms name the address first; the name goes to client_name
        stages.append([
            pl.coalesce("client_ip", "detail", "detail2").alias("client_ip"),
            pl.coalesce("client_name", "helo", "object").alias("client_name"),
            pl.lit(None, dtype=pl.String).alias("detail"),
            pl.lit(None, dtype=pl.String).alias("helo"),
            pl.lit(None, dtype=pl.String).alias("object"),
        ])
        fields = [f for f in fields if f not in ("detail2", "helo", "object")]
    if kind.text_tail:
        stages.extend(_text_tail_stages())
        fields = [*fields, "text", *sorted(_TAIL_FIELDS)]
    if kind.reject_text and "text" in fields:
        stages.extend(_reject_text_stages("object" in fields, rule_id_pattern,
                                          has_tail="helo" in fields and "object" not in fields))
    if kind.name == "delivery":
        stages.append([pl.col("response").str.extract(
            r"(?:queued|forwarded) as ([0-9A-Za-z]+)\)?[ \t]*$", 1).alias("next_queue_id")])
    elif kind.name == "dkim":
        stages.extend(_dkim_stages())
    elif kind.name == "spf":
        stages.append([pl.col("result").str.to_lowercase()])
    elif kind.name == "disconnect":
        stages.append([pl.col("commands").str.strip_chars()])
    fixes = []
    for col in ("client_name", "helo", "recipient"):  # empty means "not given", except sender
        if col in fields:
            fixes.append(pl.when(pl.col(col) != "").then(pl.col(col)).alias(col))
    for col in ("code", "size", "nrcpt", "client_port", "delay"):
        if col in fields or (col == "code" and kind.reject_text):
            fixes.append(pl.col(col).cast(EVENT_SCHEMA[col], strict=False))
    if fixes:
        stages.append(fixes)
    return stages


_OBJECT_FIELDS = ("helo", "recipient", "sender")


def _reject_text_stages(has_object: bool, rule_id_pattern: str, has_tail: bool = False
                        ) -> list[list[pl.Expr]]:
    """code / enhanced_code / object / reason of a reject text, then its reason class and
    rule id. Only the short leading parts are captured (capture cost grows with length); the
    reason is the rest of the text, sliced off after them."""
    t = pl.col("_t").struct
    code, enhanced, obj = t.field("code"), t.field("enhanced_code"), t.field("object")
    skip = (code.str.len_chars().fill_null(-1) + 1 + enhanced.str.len_chars().fill_null(-1) + 1
            + (obj.str.len_chars() + 4).fill_null(0))
    split = [code.alias("code"), enhanced.alias("enhanced_code"),
             (pl.coalesce("object", obj) if has_object else obj).alias("object"),
             pl.col("text").str.slice(skip).alias("reason")]
    stages = [[pl.col("text").str.extract_groups(_TEXT_RE).alias("_t")]]
    if has_tail:
        # an object with a ">" in it ('<"a>b"@example.org>: ', a HELO holding "<...>") is
        # not read (or is cut short) by _TEXT_RE: it is the tail's sender, recipient or HELO
        # that the text after the codes starts with, in "<...>: " (the longest, if several)
        codes = (code.str.len_chars().fill_null(-1) + 1
                 + enhanced.str.len_chars().fill_null(-1) + 1)
        unsure = obj.is_null() | (pl.col("text").str.count_matches(">: ", literal=True) > 1)
        body = pl.when(unsure).then(pl.col("text").str.slice(codes))
        lens = [pl.when(body.str.starts_with(pl.concat_str([pl.lit("<"), pl.col(f),
                                                            pl.lit(">: ")])))
                .then(pl.col(f).str.len_chars()) for f in _OBJECT_FIELDS]
        stages.append([pl.max_horizontal(lens).alias("_ol")])
        found = pl.coalesce(*[pl.when(n == pl.col("_ol")).then(pl.col(f))
                              for n, f in zip(lens, _OBJECT_FIELDS, strict=True)])
        stages.append([pl.col("_t").struct.with_fields(
            pl.coalesce(found, pl.field("object")).alias("object"))])
    action_class = (pl.when(pl.col("kind") == "milter").then(pl.lit("milter"))
                    .when(pl.col("kind") == "check").then(pl.col("object")))
    return [
        *stages,
        split,
        [pl.concat_str([pl.col("reason").fill_null(""), pl.lit(" "),
                        pl.col("object").fill_null("")]).alias("_probe"),
         pl.col("reason").str.extract(rule_id_pattern, 1).alias("rule_id")],
        *_reason_class_stages(),
        [pl.coalesce("_rc", action_class, pl.lit("other")).alias("reason_class")],
    ]


# Reason classes are matched in REASON_CLASSES order in batches; a later batch searches only
# the texts no earlier class matched: the others are replaced by "", which no class pattern
# matches (a null would not do: str.contains reads the text under a null too). The first
# classes (spf, rbl, relay, unknown_user) cover most rejects: 1.1 -> 0.7 us per reject.
_REASON_BATCHES = (4, 9)
if any(re.search(pattern, "") for _, pattern in lk.REASON_CLASSES):
    raise ValueError("a reason class pattern matches the empty text")


def _reason_class_stages() -> list[list[pl.Expr]]:
    """"_rc": the first reason class whose pattern matches "_probe" (reason and object; built
    once in its own stage: without common-subexpression elimination a probe inside the
    chain is built again for every class)."""
    stages: list[list[pl.Expr]] = []
    bounds = (0, *_REASON_BATCHES, len(lk.REASON_CLASSES))
    for start, stop in itertools.pairwise(bounds):
        if start:
            stages.append([pl.when(pl.col("_rc").is_null()).then(pl.col("_probe"))
                           .otherwise(pl.lit("")).alias("_p")])
        probe = pl.col("_p" if start else "_probe")
        rc = pl.col("_rc") if start else pl.lit(None, dtype=pl.String)
        for name, pattern in reversed(lk.REASON_CLASSES[start:stop]):
            rc = pl.when(probe.str.contains(pattern)).then(pl.lit(name)).otherwise(rc)
        stages.append([rc.alias("_rc")])
    return stages


def _dkim_stages() -> list[list[pl.Expr]]:
    d = pl.col("detail")
    result = (pl.when(d.str.starts_with("DKIM verification successful")).then(pl.lit("pass"))
              .when(d.str.contains(r"bad signature|signature verification failed"))
              .then(pl.lit("fail"))
              .when(d.str.starts_with("no signature data")).then(pl.lit("none"))
              .when(d.str.contains(r"key retrieval failed|SSL error|DNS"))
              .then(pl.lit("temperror"))
              .when(d.str.starts_with("DKIM-Signature field added")).then(pl.lit("signed")))
    sd = d.str.extract_groups(r"\(?s=(?P<selector>[^, \t)]+),? d=(?P<domain>[^, \t)]+)")
    return [[result.alias("result"), sd.alias("_sd")],
            [pl.col("_sd").struct.field("selector"), pl.col("_sd").struct.field("domain")]]
