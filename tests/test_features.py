"""Features: shapes, networks and registered domains per message."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triage.features import (
    _mine_matcher,
    add_features,
    helo_shape,
    is_random_label,
    network_of,
    network_set,
    rdns_shape,
    to_text,
)
from triage.ingest.received import host_matches


def test_network_of_ipv4_and_ipv6() -> None:
    assert network_of("192.0.2.77") == "192.0.2.0/24"
    assert network_of("2001:db8:1:2:3::9") == "2001:db8:1:2::/64"
    assert network_of("not an ip") is None
    assert network_of(None) is None


@pytest.mark.parametrize(("name", "ip", "shape"), [
    ("198-51-100-7.pool.example.net", "198.51.100.7", "ip_embedded"),
    ("7.100.51.198.example.net", "198.51.100.7", "ip_embedded"),
    ("dyn-12.example.net", "192.0.2.1", "dynamic"),
    ("adsl42.example.net", "192.0.2.1", "residential"),
    ("mail.example.com", "192.0.2.1", "named"),
    ("xk7qpz3w9.example.com", "192.0.2.1", "random"),
    (None, "192.0.2.1", "none"),
])
def test_rdns_shape(name: str | None, ip: str, shape: str) -> None:
    assert rdns_shape(name, ip) == shape


@pytest.mark.parametrize(("helo", "shape"), [
    ("mx.example.org", "ours"),
    ("[192.0.2.1]", "address_literal"),
    ("192.0.2.1", "bare_ip"),
    ("workstation", "not_fqdn"),
    ("mail.example.com", "fqdn"),
    ("qwrtzp9x8.example.com", "random"),
    (None, "none"),
])
def test_helo_shape(helo: str | None, shape: str) -> None:
    def mine(h: str) -> bool:
        return h == "mx.example.org"
    assert helo_shape(helo, "192.0.2.1", mine) == shape


def test_random_label_leaves_words_alone() -> None:
    assert not is_random_label("mailserver")
    assert not is_random_label("smtp01")
    assert is_random_label("a8f3c9d2e1")


def test_add_features_columns() -> None:
    df = pd.DataFrame({
        "client_ip": ["192.0.2.7", None], "client_name": ["unknown", "Mail.Example.COM"],
        "helo": ["[192.0.2.7]", "mx.example.org"],
        "envelope_sender": ["a@mail.example.co.uk", None],
        "received_time": [pd.Timestamp("2025-09-03", tz="UTC"), pd.NaT]})
    out = add_features(df, my_hostnames=["mx.example.org"])
    assert out["client_name"].tolist() == [None, "mail.example.com"]
    assert out["rdns_domain"].tolist() == [None, "example.com"]
    assert out["helo_shape"].tolist() == ["address_literal", "ours"]
    assert out["sender_domain"].tolist() == ["example.co.uk", None]
    assert out["week"].iloc[0] == "2025-W36"
    assert out["net"].tolist() == ["192.0.2.0/24", None]


def test_network_set_equals_network_of() -> None:
    ips = ["192.0.2.7", "0.0.0.0", "255.255.255.255", "256.1.1.1", "01.2.3.4", "1.2.3.4\n",
           " 1.2.3.4", "1.2.3", "1.2.3.4.5", "2001:db8::1", "::ffff:192.0.2.1", "junk", "",
           None, "\u0661.2.3.4", "10.0.0.1", "10.0.0.2"]
    assert network_set(ips) == {n for n in map(network_of, ips) if n}


def test_to_text_same_in_python_and_pandas() -> None:
    # Python's str methods handle plain ASCII; other text (non-ASCII case mappings, control
    # characters) must come out exactly as pandas' string methods make it
    odd = ["\x1c", "\x85", "\xa0", "\u2028", "İ", "ß", "Σ", "\u3000", "K", "\x00"]
    base = [" Mail.Example.NET. ", "UNKNOWN", "unknown.", "", "  ", "a\tb", ".", "x..",
            "Host-7.Example.org"]
    values = [*base, *(f"{c}Ab.{c}" for c in odd), *(f"x{c}UNKNOWN{c}" for c in odd),
              *odd, None, float("nan")]
    want = (pd.Series(values, dtype=object).astype("string").str.strip().str.lower()
            .str.rstrip("."))
    want = want.mask(want.isin(["", "unknown"]))
    want_list = want.astype(object).where(want.notna(), None).tolist()
    for dtype in (object, "str", "string"):
        got = to_text(pd.Series(values, dtype=dtype, index=range(5, 5 + len(values))))
        assert got.tolist() == want_list
        assert got.dtype == object and got.index[0] == 5
    # above the distinct values done in Python, pandas does them all
    many = [f"Host{i}.Example.NET." for i in range(3000)] + values
    assert to_text(pd.Series(many, dtype=object)).tolist()[3000:] == want_list


# --- IPv4-mapped IPv6 client addresses --------------------------------------------------

def test_ipv4_mapped_address_is_treated_as_ipv4() -> None:
    """Postfix matches a client at ::ffff:192.0.2.7 as 192.0.2.7: a mapped address that
    reaches the features (from the log, an older history, another parser) gets the IPv4
    network, not the "::/64" that holds every mapped address."""
    for ip in ("::ffff:192.0.2.7", "::ffff:c000:207", "0:0:0:0:0:ffff:c000:207"):
        assert network_of(ip) == "192.0.2.0/24", ip
    assert network_set(["::ffff:192.0.2.7", "::ffff:198.51.100.1", "192.0.2.9"]) == {
        "192.0.2.0/24", "198.51.100.0/24"}
    assert network_of("::192.0.2.7") == "::/64"  # IPv4-compatible is not mapped
    assert rdns_shape("7-2-0-192.dsl.example.net", "::ffff:192.0.2.7") == "ip_embedded"
    df = pd.DataFrame({"client_ip": ["::FFFF:192.0.2.7", "::ffff:c633:6409", "192.0.2.8",
                                     "2001:db8::1", None, "junk"],
                       "client_name": ["7-2-0-192.dsl.example.net", None, None, None, None,
                                       None]})
    out = add_features(df)
    assert out["client_ip"].tolist() == ["192.0.2.7", "198.51.100.9", "192.0.2.8",
                                         "2001:db8::1", None, "junk"]
    assert out["net"].tolist() == ["192.0.2.0/24", "198.51.100.0/24", "192.0.2.0/24",
                                   "2001:db8::/64", None, None]
    assert out["rdns_shape"].iloc[0] == "ip_embedded"


# --- HELOs that claim our names: the same globs as received.host_matches --------------------

@pytest.mark.parametrize(("patterns", "helo", "ours"), [
    (["mx?.example.net"], "mx1.example.net", True),
    (["*.example.net"], "a.mx.example.net", True),  # "*" spans dots, as in fnmatch
    (["mx[12].example.net"], "mx2.example.net", True),
    (["mx[12].example.net"], "mx3.example.net", False),
    (["MX.Example.NET."], "mx.example.net", True),
    (["mx?.example.net"], "mx1.example.net.evil.example", False),
    (["mx.example.net"], "mx.example.net.evil.example", False),
    (["mx.example.net"], "mxxexample.net", False),  # "." is not a wildcard
])
def test_helo_claiming_our_name_uses_host_matches(patterns: list[str], helo: str,
                                                  ours: bool) -> None:
    assert host_matches(helo, patterns) is ours
    assert _mine_matcher(patterns, [])(helo) is ours
    out = add_features(pd.DataFrame({"helo": [helo]}), my_hostnames=patterns)
    assert (out["helo_shape"].iloc[0] == "ours") is ours


_label = st.text("abmx12.-", min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.one_of(_label, st.sampled_from(["*", "?", "[12]", "[!a]", "."])),
                         min_size=1, max_size=5).map("".join), min_size=1, max_size=3),
       st.lists(_label, min_size=1, max_size=4).map(".".join))
def test_mine_matcher_agrees_with_host_matches(patterns: list[str], helo: str) -> None:
    assert _mine_matcher(patterns, [])(helo) == host_matches(helo, patterns)


def test_helo_claiming_our_address() -> None:
    mine = _mine_matcher([], ["192.0.2.1", "[2001:db8::25]"])
    for helo in ("192.0.2.1", "[192.0.2.1]", "[ipv6:::ffff:192.0.2.1]", "[ipv6:2001:db8::25]",
                 "2001:db8:0::25"):
        assert mine(helo), helo
    for helo in ("192.0.2.10", "[192.0.2.2]", "mx.example.net", "[ipv6:2001:db8::26]"):
        assert not mine(helo), helo
