"""Follow-ups to the scan audit: mail.warn / mail.err in ``logs``, an mbox deleted when it
was emptied, a script calling scan() without a main guard, temp files left by kill -9."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from triage.atomicfile import remove_stale_temps
from triage.config import Config, load_config
from triage.errors import ConfigError
from triage.logcursor import _SECONDARY_NAME, is_secondary, plan_reads, unchanged
from triage.model import RuleKind
from triage.rulebook import STALE_TEMP_SECONDS, load_rulebook
from triage.scan import _main_hidden, log_paths, mail_folders, scan
from triage.store import Store

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
# a subprocess imports this checkout's triage, whatever the installed one is
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
ENV.pop("TRIAGE_SCAN_SEQUENTIAL", None)


def _copy_samples(dst: Path, logs: str | None = None) -> Path:
    shutil.copytree(SAMPLES, dst, ignore=shutil.ignore_patterns(".state", "*.py"))
    cfg = dst / "triage.toml"
    text = cfg.read_text().replace('state_dir = ".state"', 'state_dir = "state"')
    text = text.replace('postfix_dir = ".state/maps"', 'postfix_dir = "state/maps"')
    if logs is not None:
        text = text.replace('logs = ["mail.log*"]', f"logs = {logs}")
    cfg.write_text(text)
    return cfg


# -- 1. mail.warn / mail.err named by `logs` ------------------------------------------------

_WARN_ONLY = (b"Aug 30 10:00:00 mx postfix/smtpd[999]: warning: hostname unknown.example.net "
              b"does not resolve to address 192.0.2.7\n")


def _with_mail_warn(tmp: Path) -> Config:
    cfg = _copy_samples(tmp / "s", logs='["mail.log*", "mail.warn*"]')
    # a line older than all of mail.log, and a copy of one of its lines
    copy = (tmp / "s" / "mail.log").read_bytes().splitlines(keepends=True)[5]
    (tmp / "s" / "mail.warn").write_bytes(_WARN_ONLY + copy)
    (tmp / "s" / "mail.warn.1.gz").write_bytes(gzip.compress(copy))
    return load_config(cfg)


def test_mail_warn_in_logs_keeps_a_rescan_a_no_op_and_says_it_is_not_read(
        tmp_path: Path) -> None:
    cfg = _with_mail_warn(tmp_path)
    first = scan(cfg, rules=False)
    assert first.committed and first.lines > 0
    assert not any(is_secondary(f) for f in first.files) and len(first.files) == 6
    # one note for both files, first in the problems
    notes = [p for p in first.problems if "mail.warn" in p]
    assert len(notes) == 1 and first.problems[0] == notes[0]
    assert "mail.warn.1.gz" in notes[0] and "not read" in notes[0]
    # the cursors cover what the scan reads: nothing new means no plan by content time
    cursors = Store(cfg.state_dir).state().cursors
    assert not any(is_secondary(c.path) for c in cursors)
    assert unchanged(log_paths(cfg), cursors)
    again = scan(cfg, rules=False)
    assert again.nothing_new and not again.committed and again.problems == notes


def test_mail_warn_in_logs_rescan_imports_no_log_reader(tmp_path: Path) -> None:
    cfg = _with_mail_warn(tmp_path)
    scan(cfg, rules=False)
    code = ("import sys; from triage.config import load_config; from triage.scan import scan; "
            "r = scan(load_config(sys.argv[1]), rules=False); "
            "print(r.lines, 'polars' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(cfg.source)], env=ENV,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "False"]


def test_plan_reads_and_unchanged_leave_secondary_files_out(tmp_path: Path) -> None:
    log, warn = tmp_path / "mail.log", tmp_path / "mail.warn"
    shutil.copy(SAMPLES / "mail.log", log)
    warn.write_bytes(_WARN_ONLY)
    inputs = plan_reads([log, warn], [])
    assert [i.path for i in inputs] == [log]
    for i in inputs:
        i.done_offset, i.done_lines = i.size, 1
    cursors = [i.cursor() for i in inputs]
    assert unchanged([log, warn], cursors)
    assert not unchanged([log], [])


def test_only_secondary_logs_is_a_config_error(tmp_path: Path) -> None:
    cfg = _with_mail_warn(tmp_path)
    with pytest.raises(ConfigError, match=r"only mail\.warn / mail\.err style files"):
        scan(replace(cfg, logs=("mail.warn*",)), rules=False)


def test_secondary_name_pattern_is_the_log_readers() -> None:
    from triage.ingest.maillog import _SECONDARY

    assert _SECONDARY_NAME.pattern == _SECONDARY.pattern


# -- 2. an mbox deleted when it was emptied --------------------------------------------------

def _mbox_message(n: int) -> bytes:
    return (b"From spammer@example.com Mon Mar  3 10:00:00 2025\n"
            b"From: x@example.com\nSubject: spam %d\nMessage-ID: <%d@example.com>\n\n"
            b"body %d\n\n" % (n, n, n))


def _mbox_config(tmp: Path, spam: str = "Mail/spam") -> Config:
    shutil.copy(SAMPLES / "mail.log", tmp / "mail.log")
    (tmp / "Mail").mkdir()
    (tmp / "triage.toml").write_text(textwrap.dedent(f"""\
        logs = ["mail.log"]
        spam = ["{spam}"]
        ham = []
        my_hostnames = ["mx.example.org"]
        log_timezone = "UTC"
        log_year = 2025
        state_dir = "state"
        """))
    return load_config(tmp / "triage.toml")


def test_deleted_mbox_reads_as_empty_and_the_logs_are_read(tmp_path: Path) -> None:
    cfg = _mbox_config(tmp_path)
    spam = tmp_path / "Mail" / "spam"
    spam.write_bytes(_mbox_message(1))
    assert scan(cfg, rules=False).mail == {str(spam): 1}
    spam.unlink()  # mutt deletes the mbox it emptied
    with (tmp_path / "mail.log").open("ab") as f:
        f.write((SAMPLES / "mail.log.1").read_bytes().splitlines(keepends=True)[0])
    result = scan(cfg, rules=False)
    assert result.committed and result.lines == 1
    assert result.mail == {str(spam): 0}
    assert result.problems == [f"{spam}: no such mail folder now (an mbox deleted when it "
                               "was emptied?): read as empty"]
    # Procmail creates it again with the next message: only that one is new
    spam.write_bytes(_mbox_message(2))
    result = scan(cfg, rules=False)
    assert result.mail == {str(spam): 1} and result.problems == []
    assert sorted(Store(cfg.state_dir).read("mail").get_column("subject")) == ["spam 1",
                                                                              "spam 2"]


def test_missing_folder_read_before_is_not_a_config_error(tmp_path: Path) -> None:
    cfg = _mbox_config(tmp_path, spam="Mail/spam/")  # a Maildir: no mbox guess for it
    folder = tmp_path / "Mail" / "spam"
    with pytest.raises(ConfigError, match="setting 'spam': no such mail folder"):
        mail_folders(cfg)
    assert mail_folders(cfg, read_before={str(folder.resolve())}) == [("spam", folder)]


def test_missing_folder_typos_stay_config_errors(tmp_path: Path) -> None:
    cfg = _mbox_config(tmp_path, spam="Mial/spam")  # its directory does not exist either
    with pytest.raises(ConfigError, match="setting 'spam': no such mail folder"):
        scan(cfg, rules=False)
    # an mbox path in a directory that exists, never read: empty, with a note
    result = scan(replace(cfg, spam=("Mail/spam",)), rules=False)
    assert result.mail == {str(tmp_path / "Mail" / "spam"): 0}
    assert "no such mail folder now" in result.problems[0]


# -- 3. scan() from a script without `if __name__ == "__main__":` --------------------------

def test_script_without_main_guard_runs_once(tmp_path: Path) -> None:
    cfg = _copy_samples(tmp_path / "s")
    marker = tmp_path / "ran"
    script = tmp_path / "weekly.py"
    script.write_text(textwrap.dedent(f"""\
        import sys
        from triage.config import load_config
        from triage.scan import scan

        with open({str(marker)!r}, "a") as f:
            f.write("ran\\n")
        result = scan(load_config({str(cfg)!r}), rules=False)
        assert sys.modules["__main__"].__dict__ is globals()
        print(result.lines, sum(result.mail.values()))
        """))
    proc = subprocess.run([sys.executable, str(script)], env=ENV, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "RuntimeError" not in proc.stderr
    assert marker.read_text() == "ran\n"  # the folder reader did not run it again
    lines, messages = map(int, proc.stdout.split())
    assert lines > 0 and messages > 0


def test_main_hidden_restores_the_main_module() -> None:
    main = sys.modules["__main__"]
    with _main_hidden():
        stand_in = sys.modules["__main__"]
        assert stand_in is not main
        assert getattr(stand_in, "__file__", None) is None and stand_in.__spec__ is None
    assert sys.modules["__main__"] is main
    with pytest.raises(KeyError), _main_hidden():
        raise KeyError("x")
    assert sys.modules["__main__"] is main


# -- 4. temp files left by kill -9 -----------------------------------------------------------

# Runs a scan that is killed (SIGKILL) when it is about to rename its temp file over
# argv[2], as a kill -9 at that moment would.
_KILLED = """
import os, signal, sys
from pathlib import Path
real = os.replace
def replace(src, dst, *args, **kwargs):
    if Path(dst).name == sys.argv[2]:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *args, **kwargs)
os.replace = replace
from triage.config import load_config
from triage.scan import scan
scan(load_config(sys.argv[1]))
"""


def _killed_at(cfg: Path, name: str) -> None:
    proc = subprocess.run([sys.executable, "-c", _KILLED, str(cfg), name], env=ENV,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == -9, proc.stderr


def _temps(state: Path) -> list[str]:
    """The temp files in the state directory, by the name of the file they were for."""
    return sorted(re.sub(r"\.\w{8}\.tmp$", "", p.name) for p in state.glob(".*.tmp"))


def test_store_sweeps_temp_files_of_killed_scans(tmp_path: Path) -> None:
    cfg = _copy_samples(tmp_path / "s")
    state = tmp_path / "s" / "state"
    other = state / ".maps.abcdefgh.tmp"  # not one of the store's files: left alone
    # killed after its commit, writing the proposals' marker
    _killed_at(cfg, "proposed-generation")
    assert _temps(state) == [".proposed-generation"]
    other.write_text("x")
    result = scan(load_config(cfg))
    assert not result.committed and result.proposals is not None
    assert _temps(state) == [".maps"]
    # killed writing the commit itself
    with (tmp_path / "s" / "mail.log").open("ab") as f:
        f.write((SAMPLES / "mail.log").read_bytes().splitlines(keepends=True)[0])
    _killed_at(cfg, "state.json")
    assert _temps(state) == [".maps", ".state.json"]
    result = scan(load_config(cfg), rules=False)
    assert result.committed and result.lines == 1 and result.generation == 2
    assert _temps(state) == [".maps"]


def test_rulebook_sweeps_its_stale_temp_files(tmp_path: Path) -> None:
    cfg = _copy_samples(tmp_path / "s")
    rules = tmp_path / "s" / "state" / "rules"
    _killed_at(cfg, "next-id")
    (left,) = rules.glob(".next-id.*.tmp")
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(left, (old, old))
    (rules / ".backup").mkdir(exist_ok=True)
    stale_backup = rules / ".backup" / ".R0007.toml.abcd_123.tmp"
    young = rules / ".R0008.toml.zyxw9876.tmp"        # maybe being written right now
    foreign = rules / ".notes.txt.abcdefgh.tmp"       # not a rule file's
    for p in (stale_backup, young, foreign):
        p.write_text("x")
    os.utime(stale_backup, (old, old))
    os.utime(foreign, (old, old))
    book = load_rulebook(rules)
    assert left.exists()  # loading a book does not write
    book.propose(RuleKind.CLIENT_CIDR, "192.0.2.0/24")
    assert not left.exists() and not stale_backup.exists()
    assert young.exists() and foreign.exists()


def test_remove_stale_temps_matches_atomic_target_names(tmp_path: Path) -> None:
    from triage.atomicfile import atomic_target

    names = []
    for target in ("state.json", "other.json"):
        with pytest.raises(RuntimeError), atomic_target(tmp_path / target) as tmp:
            names.append(tmp.name)
            raise RuntimeError
    for name in names:  # the temp files as a process killed at that point leaves them
        (tmp_path / name).write_text("")
    (tmp_path / "state.json.tmp").write_text("not atomic_target's")
    removed = remove_stale_temps(tmp_path, lambda name: name == "state.json")
    assert [p.name for p in removed] == names[:1]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names[1], "state.json.tmp"])
    # one being written now is younger than an hour
    assert remove_stale_temps(tmp_path, older_than=3600) == []
    assert remove_stale_temps(tmp_path) == [tmp_path / names[1]]
