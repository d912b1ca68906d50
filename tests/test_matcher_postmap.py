"""Differential test: triage's matcher and the real ``postmap -q`` agree, table type by table
type, on thousands of generated keys (hostile ones included) against generated maps.

Seeded generators (not hypothesis): one postmap run answers a whole batch of keys, which keeps
the test fast, and a failure names the seed, table and key."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest
from postmaptool import build, query, query_one, require_postmap

from triage.emit.postfix import pcre_literal, render_map
from triage.emit.tables import parse_table
from triage.model import Rule, RuleKind, RuleState, TableType

pytestmark = pytest.mark.postfix

N_KEYS = 3000
HOSTILE = ["", " ", "\t", "#", "# comment", "OK", "REJECT", "DUNNO", "REJECT 5.7.1 x", "/", "//",
           "\\", "\\\\", "$1", "${1}", "a b", " leading", "trailing ", "\r", "a\rb", "\x00",
           "\x0b", "é", "É", "ß", "SS", "\u212a", "k", "\ufeff", "%", "*", "[", "]", "(", ")",
           "^", "$", ".", "..", "a.", ".a", "@", "user@", "<>", "\udcff", "x" * 300]


def _sample_ip(rng: random.Random, v6: bool) -> str:
    if v6:
        return str(ipaddress.IPv6Address(rng.getrandbits(128)))
    return str(ipaddress.IPv4Address(rng.getrandbits(32)))


def _cidr_table(rng: random.Random) -> tuple[str, list[str]]:
    lines, keys = [], []
    for i in range(150):
        v6 = rng.random() < 0.35
        base = ipaddress.ip_address(_sample_ip(rng, v6))
        plen = rng.choice([8, 12, 16, 20, 24, 28, 32] if not v6 else [16, 32, 48, 64, 96, 128])
        net = ipaddress.ip_network(f"{base}/{plen}", strict=False)
        # a few patterns with host bits set: Postfix skips them, and so must we
        pattern = f"{base}/{plen}" if rng.random() < 0.05 else net.with_prefixlen
        lines.append(f"{pattern} V{i}")
        if i % 10 == 0:  # an overlapping, narrower entry after a wider one: first match wins
            sub = ipaddress.ip_network(f"{net.network_address}/{min(plen + 4, net.max_prefixlen)}")
            lines.append(f"{sub.with_prefixlen} S{i}")
        for _ in range(12):
            off = rng.getrandbits(net.max_prefixlen - net.prefixlen) if net.prefixlen < \
                net.max_prefixlen else 0
            addr = ipaddress.ip_address(int(net.network_address) + off)
            keys.append(str(addr))
            keys.append(str(addr).upper())
            keys.append(addr.exploded)
    for _ in range(300):
        keys.append(_sample_ip(rng, rng.random() < 0.5))
    # spellings inet_pton accepts or refuses: leading zeros, mapped, zone ids, junk
    keys += ["010.1.2.3", "1.2.3", "1.2.3.4.5", "256.0.0.1", "::ffff:10.1.2.3", "::10.1.2.3",
             "fe80::1%eth0", "[2001:db8::1]", "2001:db8::1/64", "1.2.3.4 ", " 1.2.3.4", "::",
             "0.0.0.0", "255.255.255.255", "1::2::3", "12345::", "::1.2.3", "١.٢.٣.٤", "0x1.2.3.4"]
    lines.append("0.0.0.0/0 ALL4")
    return "\n".join(lines) + "\n", keys + HOSTILE


_ALPHA = "abcxyzABCXYZ0123456789-._ /\\$^*+?()[]{}|#@:\t\r\x0bé\u212a"


def _rand_text(rng: random.Random, n: int = 12) -> str:
    return "".join(rng.choice(_ALPHA) for _ in range(rng.randint(1, n)))


def _pcre_table(rng: random.Random) -> tuple[str, list[str]]:
    rules: list[Rule] = []
    keys: list[str] = []
    for i in range(120):
        kind = rng.random()
        if kind < 0.5:
            text = _rand_text(rng)
            key = pcre_literal(text, anchored=rng.random() < 0.8)
            keys += [text, text.upper(), text.lower(), text + "x", "x" + text, text[:-1]]
        else:
            # regexes of the shapes the proposer generalises to
            dom = rng.choice(["example.net", "example.com", "mail.example.org"])
            esc = dom.replace(".", "\\.")
            key = rng.choice([
                rf"^[a-z]{{{rng.randint(2, 5)}}}\d{{2,4}}\.{dom.replace('.', '[.]')}$",
                rf"^(dyn|dsl|ppp)-\d+(-\d+){{0,3}}\.{esc}$",
                rf"\.{esc}$",
                r"^[0-9a-f]{8,16}$",
                r"^\[\d+\.\d+\.\d+\.\d+\]$",
                r"^(?:[a-z0-9]+\.)?host\d*\b",
            ])
            for _ in range(8):
                keys.append(rng.choice([f"dyn-{rng.randint(0, 999)}.{dom}",
                                        f"ab{rng.randint(0, 99999)}.{dom}", _rand_text(rng, 20),
                                        f"[{_sample_ip(rng, False)}]", f"{rng.getrandbits(48):x}",
                                        f"HOST{rng.randint(0, 9)}.x", f"a.{dom}\n".rstrip()]))
        if any(r.key == key for r in rules):
            continue
        state = RuleState.ACTIVE if rng.random() < 0.7 else RuleState.TRIAL
        rules.append(Rule(f"R{i + 1:04d}", RuleKind.HELO, key, state=state))
    return render_map(RuleKind.HELO, rules), keys + HOSTILE


def _hash_table(rng: random.Random) -> tuple[str, list[str]]:
    rules: list[Rule] = []
    keys: list[str] = []
    for i in range(300):
        labels = [rng.choice(["a", "b", "xn--bcher-kva", "mail", "m1", "x-y"]) +
                  str(rng.randint(0, 50)) for _ in range(rng.randint(1, 3))]
        dom = ".".join([*labels, rng.choice(["example", "test"]), rng.choice(["com", "net"])])
        if any(r.key == dom for r in rules):
            continue
        rules.append(Rule(f"R{i + 1:04d}", RuleKind.SENDER_DOMAIN, dom, state=RuleState.ACTIVE))
        keys += [dom, dom.upper(), dom.title(), "x." + dom, dom + ".", f"user@{dom}",
                 dom.replace("k", "\u212a"), dom[1:], " " + dom, dom + " "]
    for _ in range(500):
        keys.append(_rand_text(rng, 20))
    return render_map(RuleKind.SENDER_DOMAIN, rules), keys + HOSTILE


GENERATORS = {"cidr": _cidr_table, "pcre": _pcre_table, "hash": _hash_table,
              "texthash": _hash_table}


@pytest.mark.parametrize("table", list(GENERATORS))
@pytest.mark.parametrize("seed", [1, 2])
def test_matcher_agrees_with_postmap(table: str, seed: int, tmp_path: Path) -> None:
    require_postmap()
    rng = random.Random(f"{table}-{seed}")
    text, keys = GENERATORS[table](rng)
    # one key per line, and C strings: no newline, no NUL (test_emit covers those one by one)
    keys = [k for k in dict.fromkeys(keys) if "\n" not in k and "\0" not in k]
    while len(keys) < N_KEYS:  # top up with mutations of the keys we have
        k = rng.choice(keys)
        pos = rng.randint(0, len(k))
        keys = list(dict.fromkeys([*keys, k[:pos] + rng.choice(_ALPHA) + k[pos:]]))
    path = tmp_path / f"map.{table}"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    build(table, path)
    expected = query(table, path, keys)
    ours = parse_table(text, TableType(table))
    got = {k: v for k in keys if (v := ours.lookup(k)) is not None}
    wrong = {k: (got.get(k), expected.get(k)) for k in set(got) | set(expected)
             if got.get(k) != expected.get(k)}
    assert not wrong, f"{len(wrong)} of {len(keys)} keys differ (ours, postmap): " + \
        repr(sorted(wrong.items())[:10])
    # the comparison means something: many keys hit, many miss
    assert len(keys) >= N_KEYS and len(expected) > 100 and len(keys) - len(expected) > 100


# header_checks see a folded header as one string with its newlines: pcre_table(5)'s dotall
# default (flag s on) lets '.' cross them. Keys with a newline go to postmap one by one.
_HEADER_KEYS = [r"^Subject:.*cheap\x20pills", r"^Subject:\s*win\b", r"^From:.*@spam\.example",
                r"^Subject:[^\n]*zz", r"^X-Mailer:.*bulk.*mailer$", r"^Subject:.*a.b\b",
                r"^Subject:\x20foo$", r"^Subject:.+\n\s+tail", r"^Subject:.*\bend$",
                r"^Received:\s+from\s+\S+\s+\(.*\)"]
_HEADER_WORDS = ["cheap", "pills", "win", "zz", "a", "b", "foo", "tail", "end", "bulk", "mailer",
                 "<x@spam.example>", "(host", "[192.0.2.1])", "by", "mx.example.org", "\u00e9"]


def _folded_header(rng: random.Random) -> str:
    name = rng.choice(["Subject", "From", "X-Mailer", "Received", "subject"])
    out = f"{name}:"
    for _ in range(rng.randint(1, 6)):
        sep = rng.choice([" ", " ", "\n ", "\n\t", "\n  ", "\r\n ", ""])
        out += sep + rng.choice(_HEADER_WORDS)
    return out + rng.choice(["", "", "\n", " "])


@pytest.mark.parametrize("seed", [1, 2])
def test_folded_headers_agree_with_postmap(seed: int, tmp_path: Path) -> None:
    require_postmap()
    rng = random.Random(f"headers-{seed}")
    rules = [Rule(f"R{i + 1:04d}", RuleKind.HEADER, key,
                  state=RuleState.ACTIVE if rng.random() < 0.7 else RuleState.TRIAL)
             for i, key in enumerate(_HEADER_KEYS)]
    text = render_map(RuleKind.HEADER, rules)
    path = tmp_path / "header_checks.pcre"
    path.write_text(text)
    ours = parse_table(text, TableType.PCRE)
    keys = list(dict.fromkeys(_folded_header(rng) for _ in range(150)))
    keys += ["Subject: Hello friend,\n cheap pills inside", "Subject: foo\n", "Subject: foo\r\n"]
    folded = [k for k in keys if "\n" in k]
    wrong = {k: (ours.lookup(k), theirs) for k in keys
             if ours.lookup(k) != (theirs := query_one("pcre", path, k))}
    assert not wrong, f"{len(wrong)} of {len(keys)} headers differ (ours, postmap): " + \
        repr(sorted(wrong.items())[:5])
    # the comparison means something: folded headers that hit and that miss
    hits = [k for k in folded if ours.lookup(k) is not None]
    assert len(folded) > 50 and 10 < len(hits) < len(folded) - 10
    assert ours.lookup("Subject: Hello friend,\n cheap pills inside") is not None
