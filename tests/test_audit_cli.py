"""Audit of the CLI contracts: bad config values, bad arguments and odd histories give a
one-line error (a TriageError, which main() prints as one line with exit 1) or a usage
error (exit 2), never a traceback; the frames and charts survive edge cases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")  # before anything imports matplotlib

from typer.testing import CliRunner

from triage import frames
from triage.cli.app import app
from triage.config import load_config
from triage.errors import ConfigError, InputError, TriageError
from triage.initconf import Detected, procmail_folders, render

runner = CliRunner()
EMPTY = pd.DataFrame()


def _config(tmp_path: Path, text: str | bytes) -> Path:
    p = tmp_path / "triage.toml"
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


# -- config values -----------------------------------------------------------------------------
@pytest.mark.parametrize("text, words", [
    ("triage = 5\n", "must be a table"),
    ("trial_days = 1.5e400\n", "trial_days"),
    ("trial_days = nan\n", "trial_days"),
    ("lock_wait = nan\n", "lock_wait"),
    ('log_timezone = "Not/AZone"\n', "log_timezone"),
    ('log_timezone = "../../etc/passwd"\n', "log_timezone"),
    ('rule_id_pattern = "("\n', "rule_id_pattern"),
    ('rule_id_pattern = "rule R[0-9]+"\n', "group"),
    ('rule_id_pattern = "(?<=rule )(R[0-9]+)"\n', "log reader"),
    ('sender_table = "btree"\n', "sender_table"),
    ('logs = "a"\n[triage]\nham = "b"\n', "outside the [triage] table"),
])
def test_bad_config_values_are_one_line_config_errors(tmp_path: Path, text: str,
                                                      words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, text))
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_config_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(_config(tmp_path, b'logs = "\xff\xfe"\n'))


def test_config_that_is_a_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_good_string_settings_still_load(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, 'log_timezone = "Europe/Berlin"\n'
                                        'rule_id_pattern = "rule (R\\\\d+)"\n'
                                        'sender_table = "texthash"\n'))
    assert (cfg.log_timezone, cfg.rule_id_pattern, cfg.sender_table) == (
        "Europe/Berlin", r"rule (R\d+)", "texthash")
    section = load_config(_config(tmp_path, '[triage]\nlogs = "x.log"\n'))
    assert section.logs == ("x.log",)


# -- init --------------------------------------------------------------------------------------
def test_init_config_with_control_characters_loads(tmp_path: Path) -> None:
    d = Detected(logs=["/var/log/mail.log*"], spam=["/h/a\nb", '/h/\x01x\\"q'], ham=["/h/M"],
                 my_hostnames=["mx"], notes={"spam": "from /h/odd\nname"})
    path = _config(tmp_path, render(d))
    cfg = load_config(path)
    assert cfg.spam == ("/h/a\nb", '/h/\x01x\\"q')


def test_procmail_folders_expand_home_and_strip_quotes() -> None:
    text = (':0\n* ^X-Spam: yes\n"$HOME/Maildir/.Spam/"\n'
            ":0\n* ^Subject: junk\n${MAILDIR}/.Junk/\n")
    assert procmail_folders(text, Path("/h")) == (["/h/Maildir/.Spam", "/h/.Junk"], None)


# -- output targets and arguments -------------------------------------------------------------
def test_parse_out_a_directory_is_a_one_line_error(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("Oct  6 02:00:03 mx postfix/smtpd[1]: connect from a[192.0.2.1]\n")
    res = runner.invoke(app, ["parse", str(log), "--year", "2025", "--out", str(tmp_path)])
    assert isinstance(res.exception, InputError), res.exception
    assert "is a directory" in str(res.exception)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_mail_out_a_directory_fails_before_reading(tmp_path: Path) -> None:
    folder = tmp_path / "md"
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True)
    res = runner.invoke(app, ["mail", str(folder), "--out", str(tmp_path)])
    assert isinstance(res.exception, InputError), res.exception


def test_report_html_a_directory_is_a_one_line_error(tmp_path: Path) -> None:
    cfg = _config(tmp_path, f'state_dir = "{tmp_path / "state"}"\n')
    res = subprocess.run([sys.executable, "-m", "triage.cli", "report", "--html",
                          str(tmp_path), "--config", str(cfg)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0 and "is a directory" in res.stderr


@pytest.mark.parametrize("year", ["0", "99999"])
def test_parse_year_out_of_range_is_a_usage_error(tmp_path: Path, year: str) -> None:
    log = tmp_path / "mail.log"
    log.write_text("Oct  6 02:00:03 mx postfix/smtpd[1]: connect from a[192.0.2.1]\n")
    res = runner.invoke(app, ["parse", str(log), "--year", year])
    assert res.exit_code == 2, res.output


# -- report: the config's allowlist reaches the campaigns ----------------------------------------
def test_report_passes_the_allowlist_to_the_campaigns(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from triage import report

    (tmp_path / "mine.toml").write_text("")
    cfg = load_config(_config(tmp_path, f'state_dir = "{tmp_path / "state"}"\n'
                                        'allowlist = ["mine.toml"]\n'))
    seen: dict[str, object] = {}

    class Stop(Exception):
        pass

    def fake_trends(history: object, rules: object, **kw: object) -> object:
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(report, "trends", fake_trends)
    monkeypatch.setattr(report.Store, "weeks", lambda self, table: ["2025-W40"])
    monkeypatch.setattr(report, "load_history", lambda *a, **k: SimpleNamespace())
    with pytest.raises(Stop):
        report.report_html(cfg)
    assert seen["allowlist_files"] == (str(tmp_path / "mine.toml"),)


# -- frames and charts on edge cases -------------------------------------------------------------
def _t(*days: str | None) -> pd.Series:
    return pd.Series(pd.to_datetime(list(days), utc=True, format="ISO8601"))


def test_rule_hits_skip_rows_without_a_time() -> None:
    h = SimpleNamespace(sessions=EMPTY, messages=EMPTY, deliveries=EMPTY, mail=EMPTY,
                        rejects=pd.DataFrame({"time": _t(None, "2025-12-30 10:00"),
                                              "action": ["reject", "reject"],
                                              "reason_class": ["client", "client"],
                                              "rule_id": ["R0001", "R0001"]}))
    hits = frames.rule_hits(h)
    assert hits[["week", "rule_id", "hits"]].to_dict("records") == [
        {"week": "2026-W01", "rule_id": "R0001", "hits": 1}]


def test_rule_hits_weeks_are_utc_weeks_like_the_other_frames() -> None:
    # 00:30 on Monday 2025-12-29 in Berlin is Sunday 23:30 UTC: ISO week 2025-W52 in UTC
    t = pd.Series(pd.to_datetime(["2025-12-29 00:30"]).tz_localize("Europe/Berlin"))
    h = SimpleNamespace(sessions=EMPTY, messages=EMPTY, deliveries=EMPTY, mail=EMPTY,
                        rejects=pd.DataFrame({"time": t, "action": ["reject"],
                                              "reason_class": ["client"],
                                              "rule_id": ["R0001"]}))
    refused = frames.weekly_counts(h).query("measure == 'refused' and count > 0")
    assert refused["week"].tolist() == ["2025-W52"]
    assert frames.rule_hits(h)["week"].tolist() == ["2025-W52"]


def test_report_draws_dollar_signs_in_data_as_text() -> None:
    from triage.report import render_html

    h = SimpleNamespace(
        sessions=EMPTY, messages=EMPTY, deliveries=EMPTY,
        rejects=pd.DataFrame({"time": _t("2025-12-29 00:00", "2025-12-31 12:00"),
                              "action": ["reject", "reject"],
                              "reason_class": ["$\\frac{$", "a_b^c"],
                              "rule_id": ["R0001", "R$0"]}),
        mail=pd.DataFrame({"role": ["spam", "ham"],
                           "received_time": _t("2025-12-30 00:00", "2026-01-04 23:59"),
                           "spf_result": ["$x^{$", "pass"]}))
    page = render_html(frames.trends(h))
    assert "<script" not in page and page.count("<svg") == 7


def test_triage_error_is_the_base_of_the_cli_errors() -> None:
    # main() turns exactly these into one line with exit 1
    assert issubclass(ConfigError, TriageError) and issubclass(InputError, TriageError)


def test_explain_a_long_log_line_without_slashes() -> None:
    # one path component longer than NAME_MAX: Path.is_file() raises ENAMETOOLONG
    line = "Oct  6 05:02:30 mx opendkim[25]: " + "a" * 300
    res = runner.invoke(app, ["explain", line, "--json"])
    assert res.exit_code == 0, res.exception
