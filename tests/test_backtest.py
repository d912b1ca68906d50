"""Backtest: the vectorised replay agrees with the Postfix matcher, row by row."""

from __future__ import annotations

import pandas as pd
from helpers_campaign import frame, row

from triage.backtest import log_rows, match, refused, summarise, to_rule
from triage.features import add_features
from triage.model import RuleKind


def _table() -> pd.DataFrame:
    return add_features(frame([
        row("spam", 1, "198.51.100.7", "7.dsl.example.net", "pc7.example.net", "a@spam.example"),
        row("spam", 2, "198.51.100.200", None, "[198.51.100.200]", "b@sub.spam.example"),
        row("spam", 3, "2001:db8::5", "x.example.com", "WORKSTATION", "c@other.example"),
        row("ham", 4, "192.0.2.1", "mail.example.org", "mail.example.org", "d@example.org",
            x_mailer="Mailer 1.0"),
    ]))


CANDS = pd.DataFrame([
    {"kind": RuleKind.CLIENT_CIDR.value, "key": "198.51.100.0/25", "anchor": None},
    {"kind": RuleKind.CLIENT_CIDR.value, "key": "2001:db8::/64", "anchor": None},
    {"kind": RuleKind.CLIENT_NAME.value, "key": r"^\d+\.dsl\.example\.net$",
     "anchor": "example.net"},
    {"kind": RuleKind.HELO.value, "key": "^workstation$", "anchor": "workstation"},
    {"kind": RuleKind.SENDER_DOMAIN.value, "key": "spam.example", "anchor": "spam.example"},
    {"kind": RuleKind.HEADER.value, "key": r"^X-Mailer:\s*Mailer\x201\.0\s*$",
     "anchor": "x-mailer:mailer 1.0"},
])


def test_match_finds_exactly_the_expected_rows() -> None:
    hits = match(CANDS.assign(cand=range(len(CANDS))), _table())
    got = {(int(c), int(r)) for c, r in zip(hits["cand"], hits["row"], strict=True)}
    assert got == {(0, 0), (1, 2), (2, 0), (3, 2), (4, 0), (4, 1), (5, 3)}


def test_match_agrees_with_mapset_per_rule() -> None:
    table = _table()
    hits = match(CANDS.assign(cand=range(len(CANDS))), table)
    for c, (kind, key) in enumerate(zip(CANDS["kind"], CANDS["key"], strict=True)):
        by_matcher = refused([to_rule(kind, key, "R0001")], table).notna()
        expected = set(by_matcher[by_matcher].index)
        assert set(hits.loc[hits["cand"] == c, "row"]) == expected, key


def test_summarise_counts_ham_and_log() -> None:
    table = _table()
    spam, ham = table.iloc[:3].reset_index(drop=True), table.iloc[3:].reset_index(drop=True)
    logs = type("Logs", (), {
        "messages": pd.DataFrame({
            "client_ip": ["198.51.100.9"], "client_name": ["unknown"], "helo": ["x"],
            "sender": ["z@spam.example"], "first_seen": [pd.Timestamp("2025-09-02", tz="UTC")],
            "queue_id": ["ABC123"], "origin": ["smtpd"], "sasl_username": [None]}),
        "rejects": pd.DataFrame(), "sessions": pd.DataFrame()})()
    out, _ = summarise(CANDS, spam, ham, log_rows(logs))
    by_key = out.set_index("key")
    assert by_key.loc["spam.example", "spam_hits"] == 2
    assert by_key.loc["spam.example", "log_delivered_unknown"] == 1
    assert by_key.loc["198.51.100.0/25", "log_delivered_unknown"] == 1
    assert by_key.loc[r"^X-Mailer:\s*Mailer\x201\.0\s*$", "ham_hits"] == 1
    assert by_key["ham_hits"].sum() == 1


def test_loopback_and_authenticated_are_permitted_first() -> None:
    # permit_mynetworks / permit_sasl_authenticated come before the triage maps
    table = add_features(frame([
        row("ham", 1, "127.0.0.1", "localhost", "mx.example.org", "a@example.org"),
        row("ham", 1, "192.0.2.8", None, "mx.example.org", "b@example.org"),
    ]))
    table["authenticated"] = [None, "PLAIN"]
    rule = to_rule(RuleKind.HELO.value, r"^mx\.example\.org$", "R0007")
    assert refused([rule], table).isna().all()
    table["authenticated"] = [None, None]
    assert refused([rule], table).tolist() == [None, "R0007"]


def test_own_networks_pass_the_smtpd_maps_but_not_header_checks() -> None:
    # Our relay (a trusted_relays address) is in mynetworks: the HELO, client and sender
    # maps come after permit_mynetworks; header_checks run in cleanup for its mail too.
    import ipaddress

    table = add_features(frame([
        row("ham", 1, "192.0.2.25", None, "relay.example.org", "a@example.org",
            x_mailer="Bulk 9"),
        row("spam", 1, "203.0.113.9", None, "relay.example.org", "b@example.org",
            x_mailer="Bulk 9"),
    ]))
    helo = to_rule(RuleKind.HELO.value, r"^relay\.example\.org$", "R0007")
    header = to_rule(RuleKind.HEADER.value, r"^X-Mailer:\s*Bulk\x209\s*$", "R0008")
    nets = (ipaddress.ip_network("192.0.2.25/32"),)
    assert refused([helo], table).tolist() == ["R0007", "R0007"]
    assert refused([helo], table, mynetworks=nets).tolist() == [None, "R0007"]
    assert refused([helo, header], table, mynetworks=nets).tolist() == ["R0008", "R0007"]
    cands = pd.DataFrame([
        {"kind": RuleKind.HELO.value, "key": helo.key, "anchor": "relay.example.org"},
        {"kind": RuleKind.HEADER.value, "key": header.key, "anchor": "x-mailer:bulk 9"}])
    ham, spam = table.iloc[:1].reset_index(drop=True), table.iloc[1:].reset_index(drop=True)
    out, _ = summarise(cands, spam, ham, mynetworks=nets)
    assert out["ham_hits"].tolist() == [0, 1]


def _log_like_table(n: int, seed: int = 3) -> pd.DataFrame:
    """Many rows with repeated values: several rows per value, several values per domain."""
    import random

    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        d = rnd.choice(["spam.example", "sub.spam.example", "example.net", "other.example"])
        rows.append(row("spam", i % 7, f"198.51.100.{rnd.randrange(1, 40)}",
                        rnd.choice([None, f"{rnd.randrange(5)}.dsl.example.net",
                                    "x.example.com"]),
                        rnd.choice(["WORKSTATION", "pc7.example.net", "[198.51.100.3]"]),
                        f"u{rnd.randrange(4)}@{d}"))
    return add_features(frame(rows))


def test_match_on_many_rows_agrees_with_mapset_per_rule() -> None:
    table = _log_like_table(400)
    cands = pd.concat([CANDS, pd.DataFrame([
        # two candidates on one anchor, and one on a parent domain of another's
        {"kind": RuleKind.SENDER_DOMAIN.value, "key": "sub.spam.example",
         "anchor": "sub.spam.example"},
        {"kind": RuleKind.CLIENT_NAME.value, "key": r"(^|\.)example\.net$",
         "anchor": "example.net"},
        {"kind": RuleKind.HELO.value, "key": r"^pc\d+\.example\.net$", "anchor": "example.net"},
    ])], ignore_index=True)
    hits = match(cands.assign(cand=range(len(cands))), table)
    assert not hits.duplicated().any()
    for c, (kind, key) in enumerate(zip(cands["kind"], cands["key"], strict=True)):
        by_matcher = refused([to_rule(kind, key, "R0001")], table).notna()
        got = hits.loc[hits["cand"] == c, "row"].tolist()
        assert got == sorted(by_matcher[by_matcher].index), key


def test_log_rows_for_some_kinds_have_their_lookup_columns_only() -> None:
    logs = type("Logs", (), {
        "messages": pd.DataFrame({
            "client_ip": ["198.51.100.9", "192.0.2.1"], "client_name": ["unknown", "A.B."],
            "helo": ["x", "Y"], "sender": ["z@spam.example", None],
            "first_seen": pd.to_datetime(["2025-09-02", "2025-09-03"], utc=True),
            "queue_id": ["ABC123", "DEF456"], "origin": ["smtpd", None],
            "sasl_username": [None, None]}),
        "rejects": pd.DataFrame({
            "client_ip": ["203.0.113.5"], "client_name": [None], "helo": ["Bad.Example"],
            "sender": ["q@spam.example"], "time": pd.to_datetime(["2025-09-04"], utc=True),
            "queue_id": [None]}),
        "sessions": pd.DataFrame()})()
    full = log_rows(logs, ["DEF456"])
    assert full["known"].tolist() == [False, True, False]
    assert full["outcome"].tolist() == ["delivered", "delivered", "rejected"]
    assert full["client_name"].tolist() == [None, "a.b", None]
    some = log_rows(logs, ["DEF456"], kinds=[RuleKind.HELO.value, RuleKind.CLIENT_CIDR])
    assert "client_name" not in some and "envelope_sender" not in some
    pd.testing.assert_frame_equal(some, full[some.columns])


def test_a_message_without_x_mailer_is_not_x_mailer_nan() -> None:
    # pandas may hand a missing value back from map() as NaN, which is truthy; the replay
    # must not build "X-Mailer: nan" for it (the Postfix matcher sees no such header)
    table = _table()
    cands = pd.DataFrame([{"kind": RuleKind.HEADER.value, "key": r"^X-Mailer:\s*nan\s*$",
                           "anchor": "x-mailer:nan"}])
    hits = match(cands.assign(cand=range(len(cands))), table)
    assert hits.empty
    assert refused([to_rule(RuleKind.HEADER.value, r"^X-Mailer:\s*nan\s*$")], table).isna().all()


def test_ipv4_mapped_ham_is_hit_by_an_ipv4_network_rule() -> None:
    # Postfix logs and matches an IPv4-mapped client as IPv4: a ham recorded as
    # ::ffff:192.0.2.7 (either spelling) is refused by 192.0.2.0/24
    import ipaddress

    from triage.backtest import confirm_no_ham, in_networks, permitted

    ham = add_features(frame([
        row("ham", 0, "::ffff:c000:207", None, "mail.good.example", "a@good.example"),
        row("ham", 1, "::ffff:192.0.2.8", None, "mail.good.example", "a@good.example"),
        row("ham", 2, "2001:db8::7", None, "mail.good.example", "a@good.example"),
    ]))
    rule = to_rule(RuleKind.CLIENT_CIDR.value, "192.0.2.0/24", "R0001")
    assert confirm_no_ham([rule], ham) == {"R0001"}
    assert refused([rule], ham).tolist() == ["R0001", "R0001", None]
    cands = pd.DataFrame([{"kind": RuleKind.CLIENT_CIDR.value, "key": "192.0.2.0/24",
                           "anchor": None},
                          {"kind": RuleKind.CLIENT_CIDR.value, "key": "192.0.2.8/32",
                           "anchor": None},
                          {"kind": RuleKind.CLIENT_CIDR.value, "key": "2001:db8::/64",
                           "anchor": None}])
    hits = match(cands.assign(cand=range(len(cands))), ham)
    assert sorted(zip(hits["cand"].tolist(), hits["row"].tolist(), strict=True)) == \
        [(0, 0), (0, 1), (1, 1), (2, 2)]
    out, _ = summarise(cands, ham.iloc[:0], ham)
    assert out["ham_hits"].tolist() == [2, 1, 1]
    nets = (ipaddress.ip_network("192.0.2.0/28"),)
    assert in_networks(ham["client_ip"], nets).tolist() == [True, True, False]
    assert refused([rule], ham, mynetworks=nets).isna().all()
    loop = add_features(frame([row("ham", 0, "::ffff:127.0.0.1", None, "localhost",
                                   "a@good.example")]))
    assert permitted(loop).tolist() == [True]


def test_a_candidate_key_the_emitter_refuses_matches_nothing() -> None:
    # a U-label sender domain (history from before domains were made ASCII) and an
    # IPv4-mapped network: the emitter could never write either, so neither refuses
    # anything, and the backtest does not stop
    table = add_features(frame([
        row("spam", 1, "::ffff:192.0.2.9", None, "x.example.net", "a@bücher.example"),
        row("spam", 2, "192.0.2.10", None, "x.example.net", "b@xn--bcher-kva.example"),
    ]))
    cands = pd.DataFrame([
        {"kind": RuleKind.SENDER_DOMAIN.value, "key": "bücher.example",
         "anchor": "bücher.example"},
        {"kind": RuleKind.CLIENT_CIDR.value, "key": "::ffff:192.0.2.0/120", "anchor": None},
        {"kind": RuleKind.SENDER_DOMAIN.value, "key": "xn--bcher-kva.example",
         "anchor": "xn--bcher-kva.example"},
    ])
    out, hits = summarise(cands, table, table.iloc[:0])
    # the U-label sender (stored before domains were made ASCII) is looked up as its
    # A-label, the form of every sender domain key
    assert out["spam_hits"].tolist() == [0, 0, 2]
    assert set(hits["cand"].tolist()) == {2}
    assert refused([to_rule(RuleKind.SENDER_DOMAIN.value, "xn--bcher-kva.example")],
                   table).tolist() == ["R0000", "R0000"]
