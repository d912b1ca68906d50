"""samples/ is what the bench wrote: six ISO weeks of every line kind, ham and spam folders,
and a triage.toml that points at them."""

from __future__ import annotations

import gzip
import json
import re
from datetime import date
from pathlib import Path

from triage.config import load_config

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
STAMP = re.compile(r"^(\w{3}) ([ \d]\d) \d\d:\d\d:\d\d mx (\S+?)\[\d+\]: ")
MONTHS = {m: i for i, m in enumerate(
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1)}


def _read(path: Path) -> str:
    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).decode()


def _logs() -> list[Path]:
    return [SAMPLES / "mail.log", SAMPLES / "mail.log.1",
            *sorted(SAMPLES.glob("mail.log.*.gz"), key=lambda p: int(p.name.split(".")[2]))]


def test_rotated_logs_cover_six_iso_weeks_one_each() -> None:
    year = json.loads((SAMPLES / "manifest.json").read_text())["year"]
    weeks = []
    for path in _logs():
        days = set()
        for line in _read(path).splitlines():
            m = STAMP.match(line)
            assert m, f"{path.name}: not a traditional syslog line: {line!r}"
            days.add(date(year, MONTHS[m.group(1)], int(m.group(2))))
        file_weeks = {d.isocalendar()[:2] for d in days}
        assert len(file_weeks) == 1, (path.name, file_weeks)
        weeks.append(file_weeks.pop())
    # mail.log is the newest week, each older file the week before.
    assert len(weeks) >= 6
    assert weeks == sorted(weeks, reverse=True) and len(set(weeks)) == len(weeks)


def test_every_program_of_the_stack_logs() -> None:
    programs: dict[str, int] = {}
    for path in _logs():
        for line in _read(path).splitlines():
            m = STAMP.match(line)
            if m:
                programs[m.group(3)] = programs.get(m.group(3), 0) + 1
    for prog in ("postfix/smtpd", "postfix/cleanup", "postfix/qmgr", "postfix/local",
                 "policyd-spf", "opendkim", "opendmarc"):
        assert programs.get(prog, 0) > 0, (prog, programs)


def test_refused_traffic_of_each_kind_with_rule_ids() -> None:
    text = "\n".join(_read(p) for p in _logs())
    rejects = re.findall(r"NOQUEUE: reject: RCPT from .*", text)
    assert len(rejects) >= 100
    for reason in ("User unknown in local recipient table", "Relay access denied",
                   "Helo command rejected", "Client host rejected", "SPF fail"):
        assert any(reason in r for r in rejects), reason
    assert re.search(r"postfix/cleanup\[\d+\]: \w+: (reject: header|milter-reject)", text)
    assert re.search(r"NOQUEUE: reject: .* rule R\d{4}", text)


def test_maildirs_hold_enough_ham_and_spam_with_our_headers() -> None:
    cfg = load_config(SAMPLES / "triage.toml")
    assert cfg.my_hostnames == ("mx.example.org",)
    ham = [f for d in cfg.ham for sub in ("new", "cur")
           for f in Path(cfg.resolve(d), sub).glob("*")]
    spam = [f for d in cfg.spam for sub in ("new", "cur")
            for f in Path(cfg.resolve(d), sub).glob("*")]
    assert len(ham) >= 300 and len(spam) >= 100
    for f in ham[:20] + spam[:20]:
        head = f.read_text(errors="replace").split("\n\n", 1)[0]
        assert re.search(r"^Received: from .*\n\s+by mx\.example\.org \(Postfix\)", head, re.M)
        assert "\nReceived-SPF: " in head and "\nAuthentication-Results: mx.example.org;" in head
    assert all("X-Bench-Label: spam" in f.read_text(errors="replace") for f in spam[:20])
    for pattern in cfg.logs:
        assert list(Path(cfg.resolve(pattern)).parent.glob(Path(pattern).name))


# strict: the marker must go once the reader knows the shutdown line.
def test_samples_parse_without_unparsed_postfix_lines() -> None:
    import triage

    parsed = triage.read_maillog(_logs(), year=2025)
    assert len(parsed.rejects) >= 100
    # no line of Postfix, policyd-spf, opendkim or opendmarc is left unread
    assert parsed.unparsed.empty, parsed.unparsed["line"].tolist()[:5]
    # policyd-spf's result reaches every message that came in over SMTP
    smtp = parsed.messages[parsed.messages["origin"] == "smtpd"]
    assert smtp["spf_result"].notna().all()
    assert set(smtp["spf_result"]) <= {"pass", "fail", "softfail", "neutral", "none",
                                       "temperror", "permerror"}
