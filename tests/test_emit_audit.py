"""The emitter after the audit of /tmp/audit_emit: pcre flag defaults, line order of REJECT
and WARN, overlapping rules in check_maps, postmap's answers read byte-exactly, postmap found
outside PATH, installs that change nothing, first installs refused by reload, regexes PCRE2
refuses, ``--out`` written all or nothing, and keys that are not UTF-8.

Tests that ask the real postmap use ``require_postmap`` (a skip without Postfix, a failure
under CI=true)."""

from __future__ import annotations

import os
import random
import re
import subprocess
from pathlib import Path

import pytest
from postmaptool import config_dir, query, query_one, require_postmap, warnings
from typer.testing import CliRunner

from triage.cli.app import app
from triage.emit import install as install_mod
from triage.emit import tables as tables_mod
from triage.emit.install import (
    Postfix,
    check_maps,
    check_report,
    install_and_reload,
    install_maps,
    render_maps,
    rollback,
    write_maps,
)
from triage.emit.pcre_subset import compiled_size, non_utf8_escape, pcre2_refusal
from triage.emit.postfix import MapSet, pcre_literal, render_map, validate_key
from triage.emit.tables import parse_table
from triage.errors import InstallError, RuleError
from triage.model import Evidence, Rule, RuleKind, RuleState, TableType
from triage.rulebook import save_rules

A, T = RuleState.ACTIVE, RuleState.TRIAL


def _pf(tmp_path: Path, command: str = "true") -> Postfix:
    return Postfix(tmp_path / "maps", config_dir(), command)


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


# 1. pcre flags: Postfix's defaults (i and s on) and toggles --------------------------------

FLAG_MAP = "\n".join([
    r"/^ab$/E E", r"/^cd$/ NOE", r"/b/A A", r"/^x.y$/ DOT", r"/^p.q$/s NODOT",
    r"/^k$/m M", r"/^u+?$/U U", r"/^r.s$/si SI", r"/^R.t$/i CASE", r"/^w.z$/ii II",
    r"/^v . w$/x X", r"/^f$/mE ME", "",
])
FLAG_KEYS = ["ab\n", "ab", "cd\n", "xb", "bx", "x\ny", "X\nY", "p\nq", "p.q", "j\nk\nl", "uuu",
             "r\ns", "r.s", "R.s", "r.t", "R.t", "W\nZ", "v\nw", "v.w", "f\n", "e\nf\ng"]


def test_pcre_flag_defaults_follow_pcre_table5() -> None:
    t = parse_table(FLAG_MAP, TableType.PCRE)
    assert t.lookup("x\ny") == "DOT"          # s is on by default: '.' crosses a newline
    assert t.lookup("p\nq") is None           # ... and the s flag turns it off
    assert t.lookup("p.q") == "NODOT"
    assert t.lookup("R.s") is None and t.lookup("r.s") == "SI"  # i toggles caseless off
    assert t.lookup("W\nZ") == "II"           # ii: toggled twice
    assert t.lookup("ab\n") is None and t.lookup("cd\n") == "NOE"  # E: $ at the very end
    assert t.lookup("bx") == "A" and t.lookup("xb") is None        # A: anchored
    assert t.lookup("j\nk\nl") == "M" and t.lookup("v.w") == "X"
    assert t.lookup("f\n") == "ME"            # E is ignored with m


@pytest.mark.postfix
def test_pcre_flags_agree_with_postmap(tmp_path: Path) -> None:
    require_postmap()
    path = tmp_path / "flags.pcre"
    path.write_text(FLAG_MAP)
    ours = parse_table(FLAG_MAP, TableType.PCRE)
    for key in FLAG_KEYS:
        assert query_one("pcre", path, key) == ours.lookup(key), key
    assert warnings("pcre", path) == []


def test_header_rule_crosses_a_folded_line() -> None:
    """Reproducer t10.py: '.*' in a header rule matches across the fold."""
    rules = [Rule("R0001", RuleKind.HEADER, r"^Subject:.*cheap\x20pills", state=A)]
    assert MapSet.from_rules(rules).check(
        headers=["Subject: Hello friend,\n cheap pills inside"]).rule_id == "R0001"


# 2. REJECT lines before WARN lines ---------------------------------------------------------

@pytest.mark.postfix
def test_newer_active_rule_is_not_shadowed_by_older_trial(tmp_path: Path) -> None:
    """Reproducer t9.py: the older trial (WARN) pcre line came first and won."""
    require_postmap()
    rules = [Rule("R0003", RuleKind.HELO, r"(^|\.)spam\.example$", state=T),
             Rule("R0004", RuleKind.HELO, r"^x\.spam\.example$", state=A)]
    text = render_map(RuleKind.HELO, rules)
    path = tmp_path / "helo.pcre"
    path.write_text(text)
    got = query("pcre", path, ["x.spam.example", "y.spam.example"])
    assert got == {"x.spam.example": "REJECT 5.7.1 blocked by rule R0004",
                   "y.spam.example": "WARN trial rule R0003"}
    v = MapSet.from_rules(rules).check(helo="x.spam.example")
    assert v.rule_id == "R0004" and v.warnings == ()


@pytest.mark.postfix
def test_cidr_order_reject_first_then_narrowest(tmp_path: Path) -> None:
    require_postmap()
    rules = [Rule("R0001", RuleKind.CLIENT_CIDR, "192.0.2.0/24", state=A),
             Rule("R0002", RuleKind.CLIENT_CIDR, "192.0.2.7/32", state=T),   # inside R0001
             Rule("R0003", RuleKind.CLIENT_CIDR, "198.51.100.0/24", state=T),
             Rule("R0004", RuleKind.CLIENT_CIDR, "198.51.100.9/32", state=A),  # inside R0003
             Rule("R0005", RuleKind.CLIENT_CIDR, "198.51.100.0/28", state=A)]  # inside R0003
    text = render_map(RuleKind.CLIENT_CIDR, rules)
    body = [ln.split()[-1] for ln in text.splitlines() if not ln.startswith("#")]
    assert body == ["R0004", "R0005", "R0001", "R0002", "R0003"]
    path = tmp_path / "client.cidr"
    path.write_text(text)
    keys = ["192.0.2.7", "198.51.100.9", "198.51.100.3", "198.51.100.200"]
    expected = {"192.0.2.7": "REJECT 5.7.1 blocked by rule R0001",
                "198.51.100.9": "REJECT 5.7.1 blocked by rule R0004",
                "198.51.100.3": "REJECT 5.7.1 blocked by rule R0005",
                "198.51.100.200": "WARN trial rule R0003"}
    assert query("cidr", path, keys) == expected
    ours = parse_table(text, TableType.CIDR)
    assert {k: ours.lookup(k) for k in keys} == expected


# 3. check_maps and overlapping rules -------------------------------------------------------

def _overlap_rules() -> list[Rule]:
    """The rules of /tmp/audit_emit/overlap/mk.py."""
    return [
        Rule("R0001", RuleKind.CLIENT_CIDR, "192.0.2.0/24", state=T,
             evidence=Evidence(ips=("192.0.2.7", "192.0.2.9"))),
        Rule("R0002", RuleKind.CLIENT_CIDR, "192.0.2.7/32", state=A,
             evidence=Evidence(ips=("192.0.2.7",))),
        Rule("R0003", RuleKind.HELO, r"(^|\.)spam\.example$", state=A,
             evidence=Evidence(helos=("a.spam.example",))),
        Rule("R0004", RuleKind.HELO, r"^x\.spam\.example$", state=A,
             evidence=Evidence(helos=("x.spam.example", "X.SPAM.EXAMPLE"))),
    ]


@pytest.mark.postfix
def test_overlapping_rules_are_noted_not_refused() -> None:
    require_postmap()
    rules = _overlap_rules()
    pf = Postfix(Path("/nonexistent"), config_dir())
    report = check_report(render_maps(rules), rules, postfix=pf)
    assert report.problems == []
    shadowed = [str(n) for n in report.notes if "shadowed" in n.message]
    assert any("R0001: '192.0.2.7'" in n and "R0002" in n for n in shadowed)
    assert any("R0004: 'x.spam.example'" in n and "R0003" in n for n in shadowed)
    assert len(shadowed) == 3


def _overlap_config(tmp_path: Path) -> Path:
    """A triage.toml whose rulebook holds ``_overlap_rules`` (postmap required)."""
    require_postmap()
    save_rules(tmp_path / "rules", _overlap_rules())
    cfg = tmp_path / "triage.toml"
    cfg.write_text(f'state_dir = "{tmp_path}"\npostfix_dir = "{tmp_path}/maps"\n'
                   f'postfix_command = "true"\npostfix_config_dir = "{config_dir()}"\n')
    return cfg


@pytest.mark.postfix
def test_overlap_cli_writes_the_maps(tmp_path: Path) -> None:
    """Reproducer overlap/: `triage emit --out` refused to write anything."""
    cfg = _overlap_config(tmp_path)
    res = CliRunner().invoke(app, ["emit", "--config", str(cfg), "--out",
                                   str(tmp_path / "out")])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "rule R0004" in (tmp_path / "out" / "helo.pcre").read_text()


def test_a_wrong_line_is_caught_even_when_another_rule_answers() -> None:
    rules = _overlap_rules()
    files = render_maps(rules)
    # a rendering bug that drops the caseless default from R0004's line: the whole map still
    # refuses X.SPAM.EXAMPLE (R0003 answers), but R0004's own line no longer does
    files["helo.pcre"] = files["helo.pcre"].replace(r"/^x\.spam\.example$/",
                                                    r"/^x\.spam\.example$/i")
    problems = [str(p) for p in check_maps(files, rules)]
    assert problems == ["helo.pcre: R0004: its own line answers 'X.SPAM.EXAMPLE' with None, "
                        "not REJECT"]


def test_an_unescaped_delimiter_is_a_problem_not_a_traceback(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.setattr("triage.emit.postfix._escape_delimiter", lambda r: r)
    rules = [Rule("R0001", RuleKind.HEADER, r"^Subject:.*cheap/pills", state=A)]
    problems = check_maps(render_maps(rules), rules)
    assert len(problems) == 1 and "cannot read the rendered map" in problems[0].message


def test_an_active_rule_answered_by_a_warn_is_a_problem() -> None:
    rules = [Rule("R0001", RuleKind.HELO, r"spam", state=T),
             Rule("R0002", RuleKind.HELO, r"^x\.spam$", state=A,
                  evidence=Evidence(helos=("x.spam",)))]
    files = render_maps(rules)
    lines = files["helo.pcre"].splitlines()
    lines[-2], lines[-1] = lines[-1], lines[-2]  # the old order: the WARN line first
    problems = [str(p) for p in check_maps({"helo.pcre": "\n".join(lines) + "\n"}, rules)]
    assert problems == ["helo.pcre: R0002: 'x.spam' gets 'WARN trial rule R0001' from the "
                        "whole map, weaker than its REJECT"]


@pytest.mark.postfix
def test_shadowed_rule_own_line_is_checked_with_postmap(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """A matcher bug on a shadowed rule's own line: the whole map agrees with postmap (the
    other rule answers), only the own-line comparison can see it."""
    require_postmap()
    real = tables_mod.compile_pcre

    def no_dollar(regex: str, flags: str = "", where: str = "") -> tables_mod.PcrePattern:
        return real(regex.removesuffix("$"), flags, where)  # a matcher that ignores '$'

    monkeypatch.setattr(tables_mod, "compile_pcre", no_dollar)
    rules = [Rule("R0001", RuleKind.HELO, r"(^|\.)spam\.example", state=A),
             Rule("R0002", RuleKind.HELO, r"^x\.spam\.example$", state=A,
                  evidence=Evidence(helos=("x.spam.example.net",)))]
    pf = Postfix(Path("/nonexistent"), config_dir())
    problems = [str(p) for p in check_maps(render_maps(rules), rules, postfix=pf)]
    assert problems == ["helo.pcre (R0002's own line): postmap -q 'x.spam.example.net' gives "
                        "None, our matcher 'REJECT 5.7.1 blocked by rule R0002'"]


# 4. postmap's answers split on b"\n" only; newline keys skipped with a reason ---------------

@pytest.mark.postfix
@pytest.mark.parametrize("helo", ["foo\u2028bar.example", "foo\u0085bar.example", "foo\x1cbar",
                                  "a\x0bb", "a\x0cb", "a\x1db\x1ec", "p\u2029q"])
def test_unicode_line_separators_in_keys(helo: str) -> None:
    """Reproducer t3.py."""
    require_postmap()
    pf = Postfix(Path("/nonexistent"), config_dir())
    r = Rule("R0001", RuleKind.HELO, pcre_literal(helo), state=A,
             evidence=Evidence(helos=(helo,)))
    assert check_maps(render_maps([r]), [r], postfix=pf) == []


@pytest.mark.postfix
def test_postmap_query_reads_keys_byte_exactly(tmp_path: Path) -> None:
    require_postmap()
    pf = Postfix(tmp_path, config_dir())
    path = tmp_path / "any.pcre"
    path.write_text("/./ HIT\n")
    keys = ["foo\u2028bar", "x\x1cy", "v\x0bw", "n\u0085m", "plain", "a\nb", "nul\0x"]
    found, warns = pf.postmap_query(TableType.PCRE, path, keys)
    assert warns == []
    assert found == {k: "HIT" for k in keys[:5]}  # the newline and NUL keys are not asked


@pytest.mark.postfix
def test_newline_evidence_is_skipped_with_a_reason() -> None:
    require_postmap()
    pf = Postfix(Path("/nonexistent"), config_dir())
    r = Rule("R0001", RuleKind.HELO, pcre_literal("a\nb"), state=A,
             evidence=Evidence(helos=("a\nb", "c")))
    report = check_report(render_maps([r]), [r], postfix=pf)
    assert [str(p) for p in report.problems] == [
        "helo.pcre: R0001: its own line answers 'c' with None, not REJECT"]
    assert any("'a\\nb' not asked to postmap: it holds a newline" in str(n)
               for n in report.notes)


# 5. postmap found outside PATH; a missing program is an InstallError -----------------------

@pytest.mark.postfix
def test_postmap_is_found_in_sbin_without_path(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    require_postmap()
    if not Path("/usr/sbin/postmap").exists() and not Path("/sbin/postmap").exists():
        pytest.skip("postmap is not in /usr/sbin or /sbin here")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    pf = Postfix(tmp_path / "maps", config_dir())
    assert pf.available()
    rules = [Rule("R0001", RuleKind.SENDER_DOMAIN, "spam.example", state=A)]
    write_maps(pf.maps_dir, render_maps(rules), pf)
    assert query("hash", pf.maps_dir / "sender_domain", ["spam.example"]) == {
        "spam.example": "REJECT 5.7.1 blocked by rule R0001"}


def test_missing_programs_are_install_errors(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    pf = Postfix(tmp_path / "maps", None, "no-such-postfix-program")
    with pytest.raises(InstallError, match="no-such-postfix-program not found"):
        pf.reload()
    monkeypatch.setattr(install_mod, "_SBIN", ())
    pf = Postfix(tmp_path / "maps")
    assert not pf.available()
    with pytest.raises(InstallError, match="postmap not found"):
        pf.build(TableType.HASH, tmp_path / "sender_domain")


def test_a_program_that_cannot_run_is_an_install_error(tmp_path: Path) -> None:
    prog = tmp_path / "postfix-broken"
    prog.write_text("#!/nonexistent/interpreter\n")
    prog.chmod(0o755)  # found (executable), but exec fails
    with pytest.raises(InstallError, match=r"cannot run .*postfix-broken"):
        Postfix(tmp_path / "maps", None, str(prog)).reload()


# 6. an install that changes nothing keeps .previous ---------------------------------------

def _cidr_set(net: str, rid: str) -> dict[str, str]:
    return render_maps([Rule(rid, RuleKind.CLIENT_CIDR, net, state=A)])


@pytest.mark.postfix
def test_reinstalling_the_same_maps_keeps_previous(tmp_path: Path) -> None:
    """Reproducer inst/: after A, B, B, a rollback must give A back."""
    require_postmap()
    pf = _pf(tmp_path)
    first, second = _cidr_set("192.0.2.0/24", "R0001"), _cidr_set("198.51.100.0/24", "R0002")
    assert install_maps(pf, first)
    assert install_maps(pf, second)
    before = _files(pf.maps_dir / ".previous")
    assert install_maps(pf, second) == []  # unchanged: nothing written
    assert install_and_reload(pf, second) == []
    assert _files(pf.maps_dir / ".previous") == before
    rollback(pf)
    assert (pf.maps_dir / "client.cidr").read_text() == first["client.cidr"]


# 7. a first install refused by reload leaves no maps behind -------------------------------

@pytest.mark.postfix
def test_first_install_with_refused_reload_removes_the_new_maps(tmp_path: Path) -> None:
    require_postmap()
    pf = _pf(tmp_path, "false")
    rules = [Rule("R0001", RuleKind.SENDER_DOMAIN, "spam.example", state=A)]
    with pytest.raises(InstallError, match="reload failed"):
        install_and_reload(pf, render_maps(rules))
    assert _files(pf.maps_dir) == {}
    assert not (pf.maps_dir / ".previous").exists()


@pytest.mark.postfix
def test_refused_reload_keeps_the_former_previous_set(tmp_path: Path) -> None:
    require_postmap()
    first, second = _cidr_set("192.0.2.0/24", "R0001"), _cidr_set("198.51.100.0/24", "R0002")
    install_maps(_pf(tmp_path), first)
    install_maps(_pf(tmp_path), second)
    maps, prev = _files(tmp_path / "maps"), _files(tmp_path / "maps" / ".previous")
    with pytest.raises(InstallError, match="reload failed"):
        install_and_reload(_pf(tmp_path, "false"), _cidr_set("203.0.113.0/24", "R0003"))
    assert _files(tmp_path / "maps") == maps
    assert _files(tmp_path / "maps" / ".previous") == prev
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == sorted([*maps, ".previous"])


# 8. regexes PCRE2 refuses ------------------------------------------------------------------

@pytest.mark.parametrize(("regex", "why"), [
    (r"^a{70000}$", "repeat count above 65535"),
    (r"^a{1,65536}$", "repeat count above 65535"),
    (r"^[[.a.]]x$", "POSIX collating"),
    (r"^[[=a=]]x$", "POSIX collating"),
    (r"^[.a.]x$", "POSIX collating"),
    pytest.param("^" + "(" * 251 + "a" + ")" * 251, "nested 251 deep", id="nested-251"),
    (r"^(ab){6000}$", "compiled size"),
    pytest.param("^" + "a" * 33000 + "$", "compiled size", id="33000-literals"),
])
def test_regexes_pcre2_refuses_are_refused(regex: str, why: str) -> None:
    """Reproducer t5.py."""
    with pytest.raises(RuleError, match=re.escape(why)):
        validate_key(RuleKind.HELO, regex)


@pytest.mark.parametrize("regex", [r"^[.]x$", r"^a{65535}$", r"^[.]]$", r"^(ab){100}$",
                                   pytest.param("^" + "(" * 250 + "a" + ")" * 250,
                                                id="nested-250")])
def test_near_the_limits_is_accepted(regex: str) -> None:
    assert validate_key(RuleKind.HELO, regex) == regex


def test_verify_pcre_hook_refuses() -> None:
    seen = []

    def verify(regex: str) -> str | None:
        seen.append(regex)
        return "error in regex" if "nope" in regex else None

    assert validate_key(RuleKind.HELO, r"^a/b$", verify_pcre=verify) == r"^a/b$"
    assert seen == [r"^a\/b$"]  # asked as it is written between the delimiters
    with pytest.raises(RuleError, match="postmap refuses"):
        validate_key(RuleKind.HELO, r"^nope$", verify_pcre=verify)


@pytest.mark.postfix
def test_pcre_error_asks_postmap() -> None:
    require_postmap()
    pf = Postfix(Path("/nonexistent"), config_dir())
    assert pf.pcre_error(r"^ok\.example$") is None
    err = pf.pcre_error(r"^a{70000}$")
    assert err is not None and "number too big" in err
    with pytest.raises(RuleError, match="number too big"):
        # the pure check would refuse it first: skip that layer to see the postmap one
        validate_key(RuleKind.HELO, r"^ok$", verify_pcre=lambda _: pf.pcre_error("a{70000}"))


def _random_regex(rng: random.Random) -> str:
    shape = rng.randrange(6)
    if shape == 0:
        return f"^(ab){{{rng.randint(3000, 7000)}}}$"
    if shape == 1:
        return f"^x{{{rng.randint(1, 2)},{rng.randint(65000, 66000)}}}$"
    if shape == 2:
        d = rng.randint(240, 260)
        return "^" + "(" * d + "a" + ")" * d + "$"
    if shape == 3:
        return "^" + "[ab]" * rng.randint(1700, 2100) + "$"
    if shape == 4:
        return "^" + rng.choice([r"[[.a.]]", r"[.]", r"[.]]", r"[x[=y=]]", r"[=]"]) + "$"
    return "^" + "a" * rng.randint(29000, 34000) + "$"


@pytest.mark.postfix
def test_accepted_regexes_compile_in_postmap(tmp_path: Path) -> None:
    """Soundness of the pure-Python check: whatever validate_key accepts, postmap accepts."""
    require_postmap()
    rng = random.Random(8)
    accepted = refused = 0
    for i in range(60):
        regex = _random_regex(rng)
        path = tmp_path / f"r{i}.pcre"
        path.write_text(f"/{regex}/ X\n")
        try:
            validate_key(RuleKind.HELO, regex)
        except RuleError:
            refused += 1
            continue
        accepted += 1
        assert warnings("pcre", path) == [], (regex[:40], compiled_size(regex))
    assert accepted > 10 and refused > 10


# 9. --out is written all or nothing --------------------------------------------------------

@pytest.mark.postfix
def test_write_maps_is_all_or_nothing(tmp_path: Path) -> None:
    """Reproducer inst/st4: out/sender_domain.db is a directory."""
    require_postmap()
    pf, out = _pf(tmp_path), tmp_path / "out"
    old = [Rule("R0001", RuleKind.SENDER_DOMAIN, "old.example", state=A),
           Rule("R0002", RuleKind.HELO, r"^old$", state=A)]
    write_maps(out, render_maps(old), pf)
    (out / "sender_domain.db").unlink()
    (out / "sender_domain.db").mkdir()
    before = _files(out)
    new = [Rule("R0003", RuleKind.SENDER_DOMAIN, "new.example", state=A),
           Rule("R0004", RuleKind.HELO, r"^new$", state=A)]
    with pytest.raises(InstallError, match=r"sender_domain\.db.*as it was"):
        write_maps(out, render_maps(new), pf)
    assert _files(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted([*before, "sender_domain.db"])


@pytest.mark.postfix
def test_write_maps_puts_back_what_it_replaced(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A rename failing halfway (the third): the two files already moved are put back."""
    require_postmap()
    pf, out = _pf(tmp_path), tmp_path / "out"
    write_maps(out, _cidr_set("192.0.2.0/24", "R0001"), pf)
    before = _files(out)
    real, calls = os.replace, []

    def flaky(src: str | Path, dst: str | Path) -> None:
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(install_mod.os, "replace", flaky)
    with pytest.raises(InstallError, match="No space left on device"):
        write_maps(out, _cidr_set("198.51.100.0/24", "R0002"), pf)
    monkeypatch.setattr(install_mod.os, "replace", real)
    assert _files(out) == before
    assert len(calls) > 3  # the undo ran


def test_emit_out_failure_is_one_clear_error(tmp_path: Path) -> None:
    save_rules(tmp_path / "rules", _overlap_rules())
    cfg = tmp_path / "triage.toml"
    cfg.write_text(f'state_dir = "{tmp_path}"\npostfix_dir = "{tmp_path}/maps"\n'
                   f'postfix_command = "true"\npostfix_config_dir = "{config_dir()}"\n'
                   'sender_table = "texthash"\n')
    out = tmp_path / "out"
    (out / "helo.pcre").mkdir(parents=True)
    res = CliRunner().invoke(app, ["emit", "--config", str(cfg), "--out", str(out)])
    assert isinstance(res.exception, InstallError), res.output
    assert "cannot write helo.pcre" in str(res.exception)
    assert sorted(p.name for p in out.iterdir()) == ["helo.pcre"]


# 10. keys that are not UTF-8 ---------------------------------------------------------------

NON_UTF8_MAPS = [("pcre", "/./ HIT\n"), ("cidr", "0.0.0.0/0 HIT\n"),
                 ("hash", "x\udcff.example HIT\n"), ("texthash", "x\udcff.example HIT\n")]
NON_UTF8_KEYS = ["x\udcff.example", "1.2.3.4\udcff", "\udcc3(", "\ud800"]


@pytest.mark.parametrize(("table", "text"), NON_UTF8_MAPS)
def test_non_utf8_keys_are_never_found(table: str, text: str) -> None:
    ours = parse_table(text, table)
    assert [ours.lookup(k) for k in NON_UTF8_KEYS] == [None] * len(NON_UTF8_KEYS)
    assert ours.lookup("caf\u00e9") == ("HIT" if table == "pcre" else None)
    assert ours.lookup("\udcc3\udca9") == ours.lookup("\u00e9")  # the bytes of "é"
    assert ours.lookup("1.2.3.4") == ("HIT" if table in ("pcre", "cidr") else None)


@pytest.mark.postfix
@pytest.mark.parametrize(("table", "text"), NON_UTF8_MAPS)
def test_non_utf8_keys_with_postmap(table: str, text: str, tmp_path: Path) -> None:
    require_postmap()
    path = tmp_path / "m"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    if table == "hash":  # postmap warns about the non-UTF-8 line, skips it, and builds
        subprocess.run([require_postmap(), "-c", str(config_dir()), f"hash:{path}"],
                       check=True, capture_output=True)
    keys = NON_UTF8_KEYS[:3]  # "\ud800" has no byte form to send
    assert query(table, path, keys) == {}
    assert parse_table(path.read_text(errors="surrogateescape"), table).lookup(keys[0]) is None


@pytest.mark.parametrize("key", ["x\udcff.example", r"^x\xff\.example$", r"^\xc3\.x$",
                                 r"^a\xe2\x82$", pcre_literal("x\udcff.example")])
def test_non_utf8_keys_are_refused(key: str) -> None:
    with pytest.raises(RuleError, match="UTF-8"):
        validate_key(RuleKind.HELO, key)


def test_utf8_escapes_are_accepted() -> None:
    assert validate_key(RuleKind.HELO, pcre_literal("caf\u00e9")) == r"^caf\xc3\xa9$"
    assert validate_key(RuleKind.HELO, r"^[\x80-\xff]+$") == r"^[\x80-\xff]+$"
    assert non_utf8_escape(r"\xf0\x9f\x98\x80") is None
    assert pcre2_refusal(r"^ok$") is None
    with pytest.raises(RuleError, match="not valid UTF-8"):
        validate_key(RuleKind.SENDER_DOMAIN, "x\udcff.example")


def test_non_utf8_evidence_is_a_note() -> None:
    r = Rule("R0001", RuleKind.HELO, r"\.spam\.example$", state=A,
             evidence=Evidence(helos=("x\udcff.spam.example", "y.spam.example")))
    report = check_report(render_maps([r]), [r])
    assert report.problems == []
    assert [n.message for n in report.notes] == [
        "R0001: evidence 'x\\udcff.spam.example' not checked: not UTF-8, Postfix never looks "
        "such keys up"]


@pytest.mark.postfix
def test_emit_install_twice_says_unchanged(tmp_path: Path) -> None:
    """A second `triage emit --install` of the same rules writes nothing and says so."""
    cfg = _overlap_config(tmp_path)
    args = ["emit", "--config", str(cfg), "--install"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, (first.output, first.exception)
    assert "installed" in first.output
    helo = tmp_path / "maps" / "helo.pcre"
    before = helo.stat().st_mtime_ns
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, (second.output, second.exception)
    assert "unchanged" in second.output and "installed" not in second.output
    assert helo.stat().st_mtime_ns == before


@pytest.mark.postfix
def test_trial_subdomain_does_not_shield_it_from_an_active_parent(tmp_path: Path) -> None:
    """check_sender_access looks up sub.spam.example before spam.example and stops at the
    first key found; a trial (WARN) line for the subdomain would end the lookup there."""
    require_postmap()
    rules = [Rule("R0001", RuleKind.SENDER_DOMAIN, "spam.example", state=A),
             Rule("R0002", RuleKind.SENDER_DOMAIN, "Sub.Spam.example", state=T),
             Rule("R0003", RuleKind.SENDER_DOMAIN, "other.example", state=T),
             Rule("R0004", RuleKind.SENDER_DOMAIN, "spam.example.net", state=T)]
    text = render_map(RuleKind.SENDER_DOMAIN, rules, TableType.HASH)
    assert "# R0002 (trial) left out: Sub.Spam.example is under spam.example of active " \
           "R0001" in text
    path = tmp_path / "sender_domain"
    path.write_text(text)
    subprocess.run(["postmap", f"hash:{path}"], check=True)
    got = query("hash", path, ["spam.example", "sub.spam.example", "other.example",
                               "spam.example.net"])
    assert got == {"spam.example": "REJECT 5.7.1 blocked by rule R0001",
                   "other.example": "WARN trial rule R0003",
                   "spam.example.net": "WARN trial rule R0004"}
    maps = MapSet.from_rules(rules, sender_table=TableType.HASH)
    assert maps.check(sender="a@sub.spam.example").rule_id == "R0001"
    assert maps.check(sender="a@other.example").rule_id is None
    assert check_maps(render_maps(rules), rules) == []
