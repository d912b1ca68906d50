"""Emitted maps: golden files, escaping against injection, the matcher's access semantics,
installing with a backup, reload failure and rollback, and the `triage emit` command.

Golden files live in tests/golden/; after a deliberate change, regenerate them with
``TRIAGE_UPDATE_GOLDEN=1 pytest tests/test_emit.py`` and review the diff."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from postmaptool import build, config_dir, query, query_one, require_postmap, warnings
from typer.testing import CliRunner

from triage.cli.app import app
from triage.emit.install import Postfix, check_maps, install_and_reload, render_maps, rollback
from triage.emit.postfix import (
    MapSet,
    matches,
    pcre_literal,
    render_line,
    render_map,
    sender_lookup_keys,
    snippet,
    validate_key,
)
from triage.emit.tables import parse_table
from triage.errors import InstallError, RuleError
from triage.model import Action, Evidence, Rule, RuleKind, RuleState, TableType
from triage.rulebook import save_rules

GOLDEN = Path(__file__).parent / "golden"
A, T = RuleState.ACTIVE, RuleState.TRIAL
HOSTILE = ["a b", "OK", "REJECT", "DUNNO", "x/ OK", "/^/ OK", "$1", "(.*)", "\\", "#comment",
           " leading", "trailing ", "é", "a\rb", "x REJECT y", "a\tb", ".*", "[", "a|b",
           "OK\nREJECT", "a\n/.*/ OK", "/", "//", "${x}", "\\/", "PERMIT_MYNETWORKS"]


def sample_rules() -> list[Rule]:
    t0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    return [
        Rule("R0001", RuleKind.CLIENT_CIDR, "192.0.2.0/24", state=A, created=t0),
        Rule("R0002", RuleKind.CLIENT_CIDR, "192.0.2.66/32", state=T),
        Rule("R0003", RuleKind.CLIENT_CIDR, "2001:db8:1::/48", state=A),
        Rule("R0004", RuleKind.CLIENT_CIDR, "198.51.100.0/24", state=RuleState.PROPOSED),
        Rule("R0005", RuleKind.CLIENT_NAME, r"^(dyn|ppp)-\d+\.example\.net$", state=A),
        Rule("R0006", RuleKind.HELO, pcre_literal("spam bot/ OK"), state=A),
        Rule("R0007", RuleKind.HELO, r"^[a-z]{8}\.example\.com$", state=T),
        Rule("R0008", RuleKind.SENDER_DOMAIN, "spammer.example", state=A,
             action=Action.reject("sender domain blocked")),
        Rule("R0009", RuleKind.SENDER_DOMAIN, "bulk.example.net", state=T),
        Rule("R0010", RuleKind.HEADER, r"^Subject:.*cheap/pills", state=A),
        Rule("R0011", RuleKind.HEADER, r"^From:\s*" + pcre_literal("<x@spam.example>", False),
             state=A),
        Rule("R0012", RuleKind.SENDER_DOMAIN, "retired.example", state=RuleState.RETIRED),
    ]


@pytest.mark.parametrize("table", ["hash", "texthash"])
def test_golden_maps(table: str) -> None:
    files = render_maps(sample_rules(), table)
    files["main.cf-snippet"] = snippet("/etc/postfix/triage", TableType(table))
    for name, text in files.items():
        golden = GOLDEN / table / name
        if os.environ.get("TRIAGE_UPDATE_GOLDEN") == "1":
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(text)
        assert golden.read_text() == text, f"{golden} differs (TRIAGE_UPDATE_GOLDEN=1 to accept)"


def test_every_line_carries_its_rule_id_and_only_emitted_rules_appear() -> None:
    rules = sample_rules()
    files = render_maps(rules)
    lines = [ln for t in files.values() for ln in t.splitlines() if not ln.startswith("#")]
    emitted = [r for r in rules if r.state.emitted]
    assert len(lines) == len(emitted)
    for r in emitted:
        (line,) = [ln for ln in lines if ln.endswith(f"rule {r.id}")]
        assert ("WARN trial" in line) == (r.state is T)
    assert not any("R0004" in ln or "R0012" in ln for ln in lines)
    # cidr: first match wins, and a WARN ends the lookup: the active /24 (REJECT) precedes
    # the trial /32 inside it, so that address is still refused
    cidr = files["client.cidr"].splitlines()
    assert cidr.index("192.0.2.0/24 REJECT 5.7.1 blocked by rule R0001") < \
        cidr.index("192.0.2.66/32 WARN trial rule R0002")


def _helo_rules() -> list[Rule]:
    return [Rule(f"R{i + 1:04d}", RuleKind.HELO, pcre_literal(v), state=A)
            for i, v in enumerate(HOSTILE)]


def test_hostile_helo_values_become_inert_literals() -> None:
    rules = _helo_rules()
    text = render_map(RuleKind.HELO, rules)
    body = [ln for ln in text.split("\n") if ln and not ln.startswith("#")]
    # one physical line per rule: no newline, no white space inside a pattern, no
    # continuation line, and the action is ours, with the right id
    assert len(body) == len(rules)
    table = parse_table(text, TableType.PCRE)
    assert len(table.entries) == len(rules)
    for rule, entry in zip(rules, table.entries, strict=True):
        assert entry.value == f"REJECT 5.7.1 blocked by rule {rule.id}"
        assert " " not in entry.pattern and "\t" not in entry.pattern
    for i, value in enumerate(HOSTILE):
        assert matches(rules, value) == f"REJECT 5.7.1 blocked by rule R{i + 1:04d}"
        for near in (value + "x", "x" + value, value[:-1] + "\x01"):
            got = matches(rules, near)
            if got is not None:  # only a rule whose literal is exactly that key may answer
                rid = got.rsplit(" ", 1)[-1]
                assert HOSTILE[int(rid[1:]) - 1].lower() == near.lower(), (value, near, got)


@pytest.mark.postfix
def test_hostile_helo_values_with_postmap(tmp_path: Path) -> None:
    require_postmap()
    rules = _helo_rules()
    path = tmp_path / "helo.pcre"
    path.write_text(render_map(RuleKind.HELO, rules))
    assert warnings("pcre", path) == []
    keys = [v for v in HOSTILE if "\n" not in v]
    near = [k for v in keys for k in (v + "x", "x" + v, v[:-1], v.upper(), v + " OK")]
    found = query("pcre", path, keys + near)
    table = parse_table(path.read_text(), TableType.PCRE)
    for v in keys:
        assert found[v] == f"REJECT 5.7.1 blocked by rule R{HOSTILE.index(v) + 1:04d}"
    for k in keys + near:
        assert found.get(k) == table.lookup(k), k
    for v in HOSTILE:
        if "\n" in v:  # cannot go through stdin: ask one by one
            assert query_one("pcre", path, v) == table.lookup(v)


@pytest.mark.parametrize("value", [*HOSTILE, "example.com OK", "a@example.com", "-x.example",
                                   "example..com", "exa mple.com", "example.com\n0.0.0.0/0"])
def test_hostile_sender_and_cidr_keys_are_refused(value: str) -> None:
    with pytest.raises(RuleError):
        validate_key(RuleKind.SENDER_DOMAIN, value)
    with pytest.raises(RuleError):
        validate_key(RuleKind.CLIENT_CIDR, value)


@pytest.mark.parametrize("key", ["192.0.2.1 OK", "192.0.2.0/24\n0.0.0.0/0 OK", "fe80::1%eth0",
                                 "::ffff:192.0.2.0/120", "192.0.2.0/33", "0x7f.1.1.1"])
def test_bad_cidr_keys(key: str) -> None:
    with pytest.raises(RuleError):
        validate_key(RuleKind.CLIENT_CIDR, key)


def test_keys_normalised() -> None:
    assert validate_key(RuleKind.CLIENT_CIDR, "192.0.2.77/24") == "192.0.2.0/24"
    assert validate_key(RuleKind.CLIENT_CIDR, "2001:DB8::1") == "2001:db8::1/128"
    assert validate_key(RuleKind.SENDER_DOMAIN, "Spam.Example.") == "spam.example"


@pytest.mark.parametrize("regex", ["a\nb", "a b", r"a\z", r"[[:alpha:]]", "a{,3}", "(?i)x",
                                   "\\", "(", "é", r"\Qx\E", r"\x{41}"])
def test_unsafe_regexes_are_refused(regex: str) -> None:
    with pytest.raises(RuleError):
        validate_key(RuleKind.HELO, regex)


@pytest.mark.parametrize("text", ["blocked\n0.0.0.0/0 OK", "cost $1", "x" * 300, "", "a\tb"])
def test_reject_text_injection_refused(text: str) -> None:
    rule = Rule("R0001", RuleKind.CLIENT_CIDR, "192.0.2.0/24", Action.reject(text), A)
    with pytest.raises(RuleError):
        render_line(rule)


def test_header_key_must_name_a_header_and_delimiter_is_escaped() -> None:
    with pytest.raises(RuleError):
        validate_key(RuleKind.HEADER, "viagra")
    with pytest.raises(RuleError):  # white space is written as \x20 or \s
        validate_key(RuleKind.HEADER, "^Subject: a/ OK")
    line = render_line(Rule("R0001", RuleKind.HEADER, r"^Subject:\x20a/\sOK", state=A))
    assert line == r"/^Subject:\x20a\/\sOK/ REJECT 5.7.1 blocked by rule R0001"
    assert matches([line], "subject: A/ OK", "pcre") == "REJECT 5.7.1 blocked by rule R0001"
    assert matches([line], "Subject: a/ OKAY", "pcre") is not None  # not anchored at the end
    assert matches([line], "X-Subject: a/ OK", "pcre") is None


def test_sender_lookup_order_follows_access5() -> None:
    assert sender_lookup_keys("u@a.b.example.com") == [
        "u@a.b.example.com", "a.b.example.com", "b.example.com", "example.com", "com", "u@"]
    assert sender_lookup_keys("") == ["<>"]


def test_mapset_semantics() -> None:
    maps = MapSet.from_rules(sample_rules())
    # the trial /32 R0002 lies inside the active /24 R0001, whose REJECT line comes first
    v = maps.check(client_ip="192.0.2.66", client_name="mail.example.org", helo="ok.example")
    assert v.rule_id == "R0001" and v.warnings == ()
    assert maps.check(client_ip="192.0.2.67").rule_id == "R0001"
    assert maps.check(client_ip="2001:db8:1::5").rule_id == "R0003"
    assert maps.check(client_ip="198.51.100.1").rule_id is None  # R0004 is only proposed
    assert maps.check(client_ip="203.0.113.9", client_name="DYN-17.example.net").rule_id == "R0005"
    assert maps.check(helo="SPAM bot/ ok").rule_id == "R0006"
    # a sender domain rule covers subdomains (parent_domain_matches_subdomains)
    assert maps.check(sender="x@mx.spammer.example").rule_id == "R0008"
    assert maps.check(sender="x@notspammer.example").rule_id is None
    assert maps.check(sender="x@retired.example").rule_id is None
    v = maps.check(sender="x@bulk.example.net", headers=["Subject: Cheap/Pills now"])
    assert v.rule_id == "R0010" and [w.rule_id for w in v.warnings] == ["R0009"]
    assert maps.check(headers=["From: <x@spam.example>"]).rule_id == "R0011"
    assert maps.check(headers=["Reply-To: <x@spam.example>"]).rule_id is None


@pytest.mark.postfix
def test_check_maps_agrees_with_postmap() -> None:
    require_postmap()
    rules = sample_rules()
    rules[5] = Rule("R0006", RuleKind.HELO, pcre_literal("spam bot/ OK"), state=A,
                    evidence=Evidence(helos=("spam bot/ OK", "SPAM BOT/ ok")))
    pf = Postfix(Path("/nonexistent"), config_dir())
    assert check_maps(render_maps(rules), rules, postfix=pf) == []


def test_check_maps_finds_a_rule_that_does_not_match_its_evidence() -> None:
    rules = [Rule("R0001", RuleKind.HELO, pcre_literal("a"), state=A,
                  evidence=Evidence(helos=("b",)))]
    problems = check_maps(render_maps(rules), rules)
    assert len(problems) == 1 and "R0001" in str(problems[0])


def _postfix(tmp_path: Path, command: str = "true") -> Postfix:
    return Postfix(tmp_path / "maps", config_dir(), command)


@pytest.mark.postfix
def test_install_keeps_previous_set_and_rollback_swaps(tmp_path: Path) -> None:
    require_postmap()
    pf = _postfix(tmp_path)
    first = sample_rules()[:3]
    install_and_reload(pf, render_maps(first), reload=False)
    second = sample_rules()
    install_and_reload(pf, render_maps(second), reload=False)
    cidr = pf.maps_dir / "client.cidr"
    assert "R0003" in cidr.read_text() and (pf.maps_dir / "sender_domain.db").exists()
    assert (pf.maps_dir / ".previous" / "client.cidr").read_text() == \
        render_maps(first)["client.cidr"]
    rollback(pf)
    assert (pf.maps_dir / "sender_domain").read_text() == render_maps(first)["sender_domain"]
    build("hash", pf.maps_dir / "sender_domain")  # the restored .db matches its source
    assert query("hash", pf.maps_dir / "sender_domain", ["spammer.example"]) == {}
    rollback(pf)  # and back again
    assert "R0008" in (pf.maps_dir / "sender_domain").read_text()
    assert query("hash", pf.maps_dir / "sender_domain", ["spammer.example"]) != {}


@pytest.mark.postfix
def test_failed_reload_restores_previous_maps(tmp_path: Path) -> None:
    require_postmap()
    good = sample_rules()[:2]
    install_and_reload(_postfix(tmp_path), render_maps(good), reload=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "maps").iterdir() if p.is_file()}
    with pytest.raises(InstallError, match="reload failed"):
        install_and_reload(_postfix(tmp_path, "false"), render_maps(sample_rules()))
    after = {p.name: p.read_bytes() for p in (tmp_path / "maps").iterdir() if p.is_file()}
    assert after == before


def test_rollback_without_previous_set(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="no previous set"):
        rollback(_postfix(tmp_path))


@pytest.fixture
def cli_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "triage.toml"
    cfg.write_text('state_dir = "state"\npostfix_dir = "maps"\npostfix_command = "true"\n'
                   f'postfix_config_dir = "{config_dir()}"\n')
    save_rules(tmp_path / "state" / "rules", sample_rules())
    return cfg


def test_emit_command_prints_writes_and_snippet(cli_config: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["emit", "--config", str(cli_config)])
    assert res.exit_code == 0, res.output
    assert "==> client.cidr <==" in res.output and "blocked by rule R0001" in res.output
    out = tmp_path / "out"
    res = runner.invoke(app, ["emit", "--out", str(out), "--config", str(cli_config)])
    assert res.exit_code == 0, res.output
    assert (out / "helo.pcre").read_text() == render_maps(sample_rules())["helo.pcre"]
    res = runner.invoke(app, ["emit", "--snippet", "--config", str(cli_config)])
    assert res.exit_code == 0 and "permit_sasl_authenticated" in res.output
    assert f"check_sender_access hash:{tmp_path / 'maps'}/sender_domain" in res.output


def test_readme_carries_the_snippet() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert snippet("/etc/postfix/triage").strip() in readme
