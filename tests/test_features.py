"""Features: shapes, networks and registered domains per message."""

from __future__ import annotations

import pandas as pd
import pytest

from triage.features import (
    add_features,
    helo_shape,
    is_random_label,
    network_of,
    network_set,
    rdns_shape,
    to_text,
)


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
