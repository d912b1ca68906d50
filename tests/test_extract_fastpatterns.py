"""A line kind's fast pattern stands in for its full pattern (see ``LineKind.fast``).

Wherever the fast pattern matches a message, the full pattern must match it too and give every
field the same value (and, for text-tail kinds, leave the same rest of the line). Checked with
the reader's own plans (``_plan(kind, fast=True)`` against ``_plan(kind)``), for every kind
with a fast pattern, on every message at hand: the annotated samples, the reference line sets,
a generated log, hostile variants of all of them, and generated lines with hostile fields.
A fast pattern that matches no line would pass trivially, so its hit rate is checked too.
"""

from __future__ import annotations

import functools
import random
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from triage.ingest import extract
from triage.ingest import linekinds as lk
from triage.ingest.extract import _plan, _steps, candidates
from triage.ingest.maillog import ReadOptions, explain_line, read_chunks

TESTS = Path(__file__).parent
REFERENCE = Path("/work/shared/reference")
FAST_KINDS = [k.name for k in lk.KINDS if k.fast]
# characters and pieces an attacker can put in a HELO, an address, a message-id or a reply
HOSTILE = [">", "<", ",", ";", " ", "(", ")", "[", "]", ":", "=", "\t", "\n", "/", ".", "@",
           "> ", ">, ", ", ", "; ", " (", ") ", ")", "))", ":25", ": ", "NOQUEUE", "ABCDE",
           "bcdfghjkLM", ", status=sent (", ">, relay=", ", orig_to=<", ", delays=1/2/3/4",
           ", dsn=5.0.0", ", sasl_method=PLAIN", ", orig_client=a[1.2.3.4]", "; receiver=x",
           "; helo=a", " with cipher X", "Trusted ", "é", "\u2028"]


def _messages_of_line(line: str) -> list[str]:
    """Every tail of the line after a ": " (the message of a syslog line is one of them)."""
    out = [line]
    at = line.find(": ")
    while at >= 0:
        out.append(line[at + 2:])
        at = line.find(": ", at + 1)
    return out


def _corpus_lines() -> list[str]:
    lines: list[str] = []
    for path in sorted((TESTS / "samples").rglob("*.log")):
        lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
    ref = REFERENCE / "loglines"
    if ref.is_dir():
        for path in sorted(ref.rglob("*.log")):
            lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
        for path in sorted(ref.rglob("*.yaml")):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("data: "):
                    data = line.removeprefix("data: ")
                    if data.startswith('"') and data.endswith('"'):
                        data = data[1:-1].replace('\\"', '"').replace("\\\\", "\\")
                    lines.append(data)
    return lines


def _messages(lines: list[str]) -> list[str]:
    return sorted({m for line in lines for m in _messages_of_line(line)})


def _variants(messages: list[str], rounds: int, seed: int) -> list[str]:
    """Hostile variants: pieces inserted, characters dropped or doubled, lines cut short."""
    rnd = random.Random(seed)
    out = set()
    for msg in messages:
        for _ in range(rounds):
            s = msg
            for _ in range(rnd.randint(1, 3)):
                at = rnd.randint(0, len(s))
                op = rnd.random()
                if op < 0.6:
                    s = s[:at] + rnd.choice(HOSTILE) + s[at:]
                elif op < 0.75:
                    s = s[:at] + s[at + 1:]
                elif op < 0.9:
                    s = s[:at] + s[at:at + rnd.randint(1, 12)] + s[at:]
                else:
                    s = s[:at]
            out.add(s)
    return sorted(out)


def _compare(messages: list[str], name: str) -> int:
    """Assert the fast pattern agrees with the full one wherever it matches; its match count."""
    frame = pl.DataFrame({"msg": messages}, schema={"msg": pl.String})
    fast, full = _plan(name, fast=True), _plan(name)
    a = frame.lazy().with_columns(fast.extract).with_columns(fast.hit).collect()
    b = frame.lazy().with_columns(full.extract).with_columns(full.hit).collect()
    hit = a["_hit"]
    cols = ["_g", "_rest"] if full.kind.text_tail else ["_g"]
    got, want = a.filter(hit), b.filter(hit)
    missed = want.filter(~pl.col("_hit"))["msg"].to_list()
    assert not missed, f"{name}: fast pattern matches, full does not: {missed[:5]}"
    diff = ~pl.Series([x == y for x, y in zip(got.select(cols).rows(), want.select(cols).rows(),
                                                strict=True)], dtype=pl.Boolean)
    bad = got.filter(diff)
    if bad.height:
        row = bad.row(0, named=True)
        other = want.filter(diff).row(0, named=True)
        pytest.fail(f"{name}: {row['msg']!r}\n fast: {row['_g']} {row.get('_rest')!r}\n"
                    f" full: {other['_g']} {other.get('_rest')!r}")
    return int(hit.sum())


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return _messages(_corpus_lines())


@pytest.fixture(scope="module")
def generated_lines(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    gen = REFERENCE / "gen_maillog.py"
    if not gen.is_file():
        pytest.skip(f"log generator not found: {gen}")
    out = tmp_path_factory.mktemp("gen") / "mail.log"
    subprocess.run([sys.executable, str(gen), "-n", "50000", "-o", str(out)], check=True,
                   capture_output=True)
    return out.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def generated(generated_lines: list[str]) -> list[str]:
    return _messages(generated_lines)


def test_fast_patterns_exist_and_keep_the_kinds_groups() -> None:
    assert {"delivery", "message_id", "qmgr_from", "client", "reject", "tls", "spf",
            "dkim"} <= set(FAST_KINDS)
    for name in FAST_KINDS:
        assert _plan(name, fast=True).fields == _plan(name).fields
        assert _steps((name, "warning")) == ((name, True, 0), (name, False, 0),
                                             ("warning", False, 1))


@pytest.mark.parametrize("name", FAST_KINDS)
def test_fast_pattern_agrees_on_corpus_and_variants(name: str, corpus: list[str]) -> None:
    assert _compare(corpus, name) > 0, f"{name}: fast pattern matches no sample line"
    _compare(_variants(corpus, 8, seed=1), name)


@pytest.mark.parametrize("name", FAST_KINDS)
def test_fast_pattern_agrees_on_generated_log(name: str, generated: list[str]) -> None:
    hits = _compare(generated, name)
    full = _plan(name)
    frame = pl.DataFrame({"msg": generated})
    matched = frame.lazy().with_columns(full.extract).with_columns(full.hit).collect()
    n_full = int(matched["_hit"].sum())
    # the fast pattern carries the common lines (in the generated log: all of them)
    assert hits >= 0.99 * n_full, (name, hits, n_full)
    own = matched.filter("_hit")["msg"].to_list()
    rnd = random.Random(2)
    _compare(_variants(rnd.sample(own, min(len(own), 1500)), 6, seed=3), name)


def _read(path: Path) -> list[tuple[dict[str, pl.DataFrame], pl.DataFrame]]:
    opts = ReadOptions(year=2026, timezone="UTC", chunk_bytes=1 << 16)
    return [(dict(c.kinds.frames), c.unparsed) for c in read_chunks([path], opts)]


def test_reader_output_is_the_same_without_fast_patterns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        generated_lines: list[str]) -> None:
    """End to end: the same kinds in the same order, the same rows, the same unparsed lines."""
    lines = _corpus_lines() + generated_lines[:20_000]
    rnd = random.Random(6)
    lines += [line for line in _variants(rnd.sample(lines, 4000), 2, seed=7) if "\n" not in line]
    path = tmp_path / "mail.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with_fast = _read(path)
    slow = functools.cache(lambda cands: tuple(s for s in _steps(cands) if not s[1]))
    monkeypatch.setattr(extract, "_steps", slow)
    # and a reject tail never read by TAIL_FAST
    monkeypatch.setattr(lk, "TAIL_FAST", "(?P<sender>)(?P<recipient>)(?P<proto>)(?P<helo>)"
                                         r"[^\x00-\x{10FFFF}]")
    extract._plan.cache_clear()
    try:
        without = _read(path)
    finally:
        extract._plan.cache_clear()
    assert len(with_fast) == len(without)
    for (kinds_a, bad_a), (kinds_b, bad_b) in zip(with_fast, without, strict=True):
        assert list(kinds_a) == list(kinds_b)
        for name, frame in kinds_a.items():
            assert frame.equals(kinds_b[name], null_equal=True), name
        assert bad_a.equals(bad_b, null_equal=True)
    assert sum(f.height for kinds, _ in with_fast for f in kinds.values()) > 20_000


def _tails(messages: list[str]) -> list[str]:
    """Every tail of the messages that starts where a reject tail can start."""
    out = set()
    for msg in messages:
        for mark in ("; ", " from=<", "from=<", "to=<", "proto="):
            at = msg.find(mark)
            while at >= 0:
                out.add(msg[at:])
                at = msg.find(mark, at + 1)
    return sorted(out)


def _compare_tails(tails: list[str]) -> int:
    """TAIL_FAST (with a helo ending in ">", cut off) reads what TAIL reads; its match count."""
    frame = pl.DataFrame({"t": tails}, schema={"t": pl.String})
    fields = ["sender", "recipient", "proto", "helo"]
    got = frame.select(pl.col("t"), pl.col("t").str.extract_groups(lk.TAIL_FAST).alias("f"),
                       pl.col("t").str.extract_groups("^" + lk.TAIL).alias("s")).unnest(
        "f", "s", separator=".")
    helo = pl.col("f.helo")
    ok = got.filter(pl.col("f.proto").is_not_null()
                    & (helo.is_null() | helo.str.ends_with(">")))
    fast = ok.select(pl.col("t"), *[pl.col(f"f.{f}") for f in fields[:3]],
                     helo.str.strip_suffix(">").alias("f.helo"))
    full = ok.select(pl.col("t"), *[pl.col(f"s.{f}").alias(f"f.{f}") for f in fields])
    bad = fast.filter(~pl.Series([a == b for a, b in zip(fast.rows(), full.rows(),
                                                         strict=True)], dtype=pl.Boolean))
    assert bad.height == 0, (bad.row(0), full.filter(pl.col("t") == bad["t"][0]).row(0))
    return ok.height


def test_reject_tail_fast_pattern_agrees(corpus: list[str], generated: list[str]) -> None:
    own = [m for m in generated if " from=<" in m or "proto=" in m]
    rnd = random.Random(8)
    sample = rnd.sample(own, min(len(own), 3000))
    assert _compare_tails(_tails(corpus)) > 10
    assert _compare_tails(_tails(generated)) > 1000
    _compare_tails(_tails(_variants(corpus, 8, seed=9)))
    _compare_tails(_tails(_variants(sample, 6, seed=10)))


_ADDR = st.lists(st.one_of(st.sampled_from(HOSTILE), st.text("aZ09.-_@+", max_size=6)),
                 max_size=4).map("".join)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["; ", "", " ", ";", ";  "]),
    st.one_of(st.just(""), _ADDR.map(lambda a: f"from=<{a}>")),
    st.sampled_from([", ", " ", "", ","]),
    st.one_of(st.just(""), _ADDR.map(lambda a: f"to=<{a}>")),
    st.sampled_from([", ", " ", "", ","]),
    st.sampled_from(["proto=ESMTP", "proto=SMTP", "proto=", "proto=E1"]),
    st.sampled_from([",", "", ", "]),
    st.one_of(st.just(""), _ADDR.map(lambda a: f" helo=<{a}>"), _ADDR.map(lambda a: f" helo={a}")),
).map("".join), min_size=1, max_size=40))
def test_reject_tail_fast_pattern_agrees_on_hostile_fields(tails: list[str]) -> None:
    _compare_tails(tails)


def test_queue_id_trie_is_the_queue_id_pattern() -> None:
    rnd = random.Random(4)
    pools = ["0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", "0123456789ABCDEF",
             "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz", "0123456789BCDFAE",
             "0123456789BCDFxz", "NOQUEUE"]
    words = ["NOQUEUE", "NOQUEU", "NOQUEUEX", ""]
    for _ in range(50_000):
        pool = rnd.choice(pools)
        words.append("".join(rnd.choice(pool) for _ in range(rnd.randint(1, 16))))
    frame = pl.DataFrame({"w": words})
    for noqueue in (False, True):
        full = f"^(?:{lk.QID_RE}{'|NOQUEUE' if noqueue else ''})$"
        fast = f"^(?:{lk.qid_onepass(noqueue)})$"
        got = frame.select(a=pl.col("w").str.contains(full), b=pl.col("w").str.contains(fast))
        assert got["a"].equals(got["b"]), frame.filter(got["a"] != got["b"])["w"].to_list()[:5]
        assert all(bool(re.fullmatch(fast, w)) == bool(re.fullmatch(full, w)) for w in words[:2000])


def test_candidates_name_kinds_not_fast_steps() -> None:
    assert candidates("postfix/smtp", "smtp", "to", True)[0] == "delivery"


# Generated lines: each kind's shape with hostile field values.
_FIELD = st.lists(st.one_of(st.sampled_from(HOSTILE), st.text("aZ09.-_@+", max_size=6)),
                  max_size=5).map("".join)
_QID = st.one_of(st.sampled_from(["ABCDE12345", "1A2B3C", "bcdfgHJKLMN7", "NOQUEUE", "ABCD",
                                  "Abcdfghjklm", "warning", "BCDFBCDFBCDFx"]),
                 st.text("0123456789ABCDEFbcdfGHJxyzNOQUE", min_size=1, max_size=16))
_NUM = st.sampled_from(["0", "12", "1.5", "0.01", "", "x", "3/4"])


def _opt(s: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.just(""), s)


def _join(*parts: st.SearchStrategy[str] | str) -> st.SearchStrategy[str]:
    return st.tuples(*[st.just(p) if isinstance(p, str) else p for p in parts]).map("".join)


_CLIENT = _join(_FIELD, "[", _FIELD, "]", _opt(_join(":", _NUM)))
SHAPES: dict[str, st.SearchStrategy[str]] = {
    "delivery": _join(_QID, ": to=<", _FIELD, ">, ", _opt(_join("orig_to=<", _FIELD, ">, ")),
                      "relay=", _FIELD, ", ", _opt(_join("conn_use=", _NUM, ", ")), "delay=",
                      _NUM, ", ", _opt(_join("delays=", _NUM, ", ")), "dsn=",
                      st.sampled_from(["2.0.0", "5.1.10", "4.4.1", "2.0"]), ", status=",
                      st.sampled_from(["sent", "bounced", "deferred", "x y", ""]),
                      _opt(_join(" (", _FIELD, st.sampled_from([")", "", "))", ") ", ")x"])))),
    "message_id": _join(_QID, ": ", _opt(st.just("resent-")), "message-id=", _opt(st.just("<")),
                        _FIELD, _opt(st.just(">")), _opt(_FIELD)),
    "qmgr_from": _join(_QID, ": from=<", _FIELD, ">, size=", _NUM, ", nrcpt=", _NUM,
                       " (queue active)", _opt(_FIELD)),
    "removed": _join(_QID, ": removed", _opt(_FIELD)),
    "client": _join(_QID, ": client=", _CLIENT, st.lists(st.sampled_from(
        [", sasl_method=", ", sasl_username=", ", sasl_sender=", ", orig_queue_id=",
         ", orig_client=", ", ", "a[1.2.3.4]", "PLAIN", "x,y", "]", "["]), max_size=6).map("".join),
        _opt(_FIELD)),
    "reject": _join(_QID, ": ", st.sampled_from(["reject", "reject_warning", "redirect", "warn",
                                                 "hold", "prepend", "rejectx", "filter"]),
                    ": ", st.sampled_from(["RCPT", "END-OF-MESSAGE", "CONNECT", "x", ""]),
                    " from ", _CLIENT, ": ", _FIELD, _opt(_join("; from=<", _FIELD, "> to=<",
                                                                _FIELD, "> proto=ESMTP helo=<",
                                                                _FIELD, ">"))),
    "tls": _join(_opt(st.sampled_from(["Anonymous ", "Trusted ", "Verified ", "Untrusted ",
                                       "Other "])),
                 "TLS connection established ", st.sampled_from(["from ", "to ", "x "]), _CLIENT,
                 ": ", _FIELD, " with cipher ", _FIELD, _opt(_FIELD)),
    "spf": _join(_opt(st.just(": ")), _opt(st.just("prepend Received-SPF: ")),
                 st.sampled_from(["Pass", "Fail", "Softfail", "SoftFail", "Neutral", "None",
                                  "Temperror", "TempError", "Permerror", "PermError", "Passx"]),
                 _opt(_join(" (", _FIELD, ")")), _opt(st.just(";")), " identity=",
                 st.sampled_from(["mailfrom", "helo", "x y", ""]), "; client-ip=", _FIELD,
                 "; helo=", _FIELD, "; envelope-from=", _FIELD, "; receiver=", _FIELD),
    "dkim": _join(_QID, ": ", _FIELD),
    **{name: _join(f"{words} after ", st.sampled_from(["DATA", "END-OF-MESSAGE", "RCPT", "x", "",
                                                       "EHLO ("]),
                   _opt(_join(" (", _FIELD, ")")), " from ", _CLIENT, _opt(_FIELD))
       for name, words in (("lost_connection", "lost connection"), ("timeout", "timeout"),
                           ("too_many_errors", "too many errors"))},
    "dmarc": _join(_QID, ": ", _FIELD, " ", st.sampled_from(
        ["pass", "fail", "none", "bestguesspass", "quarantine", "reject", "temperror",
         "permerror", "passx"]), _opt(_FIELD)),
}


def test_every_fast_kind_has_a_generated_shape() -> None:
    assert set(FAST_KINDS) <= set(SHAPES)


@pytest.mark.parametrize("name", sorted(SHAPES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_pattern_agrees_on_hostile_fields(name: str, data: st.DataObject) -> None:
    lines = data.draw(st.lists(SHAPES[name], min_size=1, max_size=40))
    _compare(lines, name)


def test_explain_names_the_kind_of_a_line_a_fast_pattern_reads() -> None:
    line = ("Nov 28 08:48:53 mx postfix/smtp[7]: AD2BC53056B: to=<carol@example.org>, "
            "relay=virtual, delay=1.4, delays=0.83/0.01/0/0.42, dsn=2.0.0, "
            "status=sent (delivered to maildir (x))")
    assert _compare([line.split(": ", 1)[1]], "delivery") == 1
    got = explain_line(line)
    assert got["kind"] == "delivery" and got["candidate_kinds"] == ["delivery"]
    fields = got["fields"]
    assert isinstance(fields, dict)
    assert fields["response"] == "delivered to maildir (x)"
    assert fields["queue_id"] == "AD2BC53056B" and fields["recipient"] == "carol@example.org"


def _folded_words(messages: list[str]) -> tuple[pl.Series, pl.Series]:
    """(FIRST_WORD_RE's word folded to the kinds' words, the word extract_events uses)."""
    words = extract._KIND_WORD_LIST
    frame = pl.DataFrame({"msg": messages}, schema={"msg": pl.String})
    first = pl.col("msg").str.extract(extract.FIRST_WORD_RE, 1)
    want = frame.select(pl.when(first.is_in(words)).then(first))
    got = (frame.lazy().with_columns(pl.col("msg").str.extract_groups(extract._HEAD_RE)
                                     .alias("word"))
           .with_columns(extract._KIND_WORD).collect())
    return want.to_series(), got["word"]


def test_first_word_is_first_word_re_folded(corpus: list[str], generated: list[str]) -> None:
    heads = ["", ":", ": ", ": connect", "::", "ABCDE: to", "ABCDE:  to", "ABCDE: ", "ABCDE:to",
             "NOQUEUE: reject", "NOQUEUE: : reject", "abcde: to", "bcdfghjklm: to",
             "warning: to", "to: warning", "connect", "connect from", "ABCDEF1234: warning:",
             "ABCDE; to", "ABCDE=x: to", "ABCD: to", "ABCDEx: to", "[1.2.3.4]: to"]
    rnd = random.Random(11)
    messages = (heads + corpus + _variants(corpus, 6, seed=12) + generated
                + _variants(rnd.sample(generated, 5000), 4, seed=13))
    want, got = _folded_words(messages)
    bad = [(m, a, b) for m, a, b in zip(messages, want, got, strict=True) if a != b]
    assert not bad, bad[:5]
    assert got.is_not_null().sum() > 10_000


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_QID, st.sampled_from([": ", ":", "", ":  ", "; ", " "]),
                          st.sampled_from([*sorted(extract._KIND_WORDS), "x", "", "ABCDE"]),
                          _opt(_FIELD)).map("".join), min_size=1, max_size=40))
def test_first_word_is_first_word_re_folded_on_generated_heads(messages: list[str]) -> None:
    want, got = _folded_words(messages)
    assert want.eq_missing(got).all()


def test_reason_class_batches_are_the_class_chain(corpus: list[str]) -> None:
    """The batched reason classes give the first class in REASON_CLASSES order that matches."""
    texts = [*corpus, *_variants(corpus, 3, seed=14), "", " ", "SPF", "spf fail; blocked using x",
             "Recipient address rejected: User unknown greylist", "x DMARC y DKIM too large"]
    rc = pl.lit(None, dtype=pl.String)
    for name, pattern in reversed(lk.REASON_CLASSES):
        rc = pl.when(pl.col("_probe").str.contains(pattern)).then(pl.lit(name)).otherwise(rc)
    lf = pl.DataFrame({"_probe": texts}).lazy()
    want = lf.select(rc.alias("_rc")).collect()["_rc"]
    for stage in extract._reason_class_stages():
        lf = lf.with_columns(stage)
    got = lf.collect()["_rc"]
    assert got.eq_missing(want).all()
    assert want.n_unique() > 8
