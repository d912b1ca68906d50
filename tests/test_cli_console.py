"""The scan's console output prints data as written, and a closed stdin is no terminal."""

from __future__ import annotations

import io
import sys

import pytest

from triage.cli import prompts, scan_cmd

HOSTILE = "[bold]x[/] [/] :smile: [link=http://a]y"


def _capture(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    # the module's own console (its markup setting is what is tested), writing to a buffer
    out = io.StringIO()
    monkeypatch.setattr(scan_cmd.console, "file", out)
    monkeypatch.setattr(scan_cmd.console, "width", 400)
    return out


def _summary(tie: str, reason: str) -> dict:
    return {
        "week": "2026-W48",
        "received": {"connections": 3, "messages": 2, "authenticated": 0},
        "refused": {"total": 1, "by_reason": {reason: 1}},
        "leaked_spam": 1, "ham": 1,
        "auth": {r: {"spf": {}, "dkim": {}, "dmarc": {}} for r in ("spam", "ham")},
        "rule_hits": {},
        "new_campaigns": [{"campaign": "c1", "messages": 2, "days": 1, "ties": [tie],
                           "proposals": []}],
        "ham_hits": {"R0007": 2},
    }


def test_scan_summary_prints_spam_features_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _capture(monkeypatch)
    scan_cmd._render_summary(_summary(f"helo={HOSTILE}", f"rbl{HOSTILE}"))
    text = out.getvalue()
    assert f"helo={HOSTILE}" in text
    assert f"rbl{HOSTILE} 1" in text
    assert "RULE R0007 HIT HAM 2 TIME(S)" in text


def test_map_changes_print_lines_as_written(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    out = _capture(monkeypatch)
    line = "/^[a-z0-9]+\\.pool\\.example$/ REJECT [/] rule R0001"
    scan_cmd._render_changes({"helo.pcre": f"# rules\n{line}\n"}, tmp_path)
    text = out.getvalue()
    assert "helo.pcre" in text
    assert f"  + {line}" in text


def test_closed_stdin_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", None)
    assert prompts.stdin_is_terminal() is False


def test_scan_shows_the_files_it_could_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(scan_cmd.err_console, "file", err)
    monkeypatch.setattr(scan_cmd.err_console, "width", 400)
    problem = "/var/log/mail.log.2.gz: damaged or truncated compressed data [/]"
    scan_cmd._render_scan(scan_cmd.ScanResult(generation=1, committed=False,
                                              problems=[problem]))
    assert f"triage: {problem}" in err.getvalue()
    assert scan_cmd._scan_json(scan_cmd.ScanResult(generation=1, committed=False,
                                                   problems=[problem]))["problems"] == [problem]


def test_stats_weeks_must_be_positive(tmp_path) -> None:
    from typer.testing import CliRunner

    from triage.cli.app import app

    cfg = tmp_path / "triage.toml"
    cfg.write_text(f'state_dir = "{tmp_path}/state"\n')
    res = CliRunner().invoke(app, ["stats", "--weeks", "0", "--config", str(cfg)])
    assert res.exit_code == 2 and "--weeks" in res.output


def test_init_never_replaces_a_config_that_appears_meanwhile(tmp_path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """Without --force, a config created between init's check and its write is kept."""
    from typer.testing import CliRunner

    import triage.initconf as initconf
    from triage.cli.app import app

    target = tmp_path / "triage.toml"
    real_render = initconf.render

    def render_then_race(found: object) -> str:
        target.write_text("# written by the operator meanwhile\n")
        return real_render(found)  # type: ignore[arg-type]

    monkeypatch.setattr(initconf, "render", render_then_race)
    res = CliRunner().invoke(app, ["init", "--config", str(target)])
    assert res.exit_code == 1 and "exists already" in str(res.exception)
    assert target.read_text() == "# written by the operator meanwhile\n"
    assert [p.name for p in tmp_path.iterdir()] == ["triage.toml"]  # no temp file left
    res = CliRunner().invoke(app, ["init", "--config", str(target), "--force"])
    assert res.exit_code == 0 and target.read_text().startswith("#")
    assert "meanwhile" not in target.read_text()
