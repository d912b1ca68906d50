"""`triage report --html`: one self-contained page with every chart, written atomically;
and the charts of triage.plots drawn from the samples' history."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")  # before anything imports matplotlib

from matplotlib.figure import Figure
from typer.testing import CliRunner

import triage
from triage import frames, plots
from triage.cli.app import app
from triage.config import load_config
from triage.model import Rule, RuleKind, RuleState
from triage.scan import scan

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
runner = CliRunner()


def _config(directory: Path, state: Path) -> Path:
    """A triage.toml for the samples whose history goes to ``state`` (the samples' own
    .state is left alone)."""
    path = directory / "triage.toml"
    path.write_text(
        f'logs = ["{SAMPLES}/mail.log*"]\n'
        f'spam = ["{SAMPLES}/maildir/alice/.Spam", "{SAMPLES}/maildir/bob/.Spam"]\n'
        f'ham = ["{SAMPLES}/maildir/alice", "{SAMPLES}/maildir/bob"]\n'
        'my_hostnames = ["mx.example.org"]\nlog_timezone = "UTC"\nlog_year = 2025\n'
        f'state_dir = "{state}"\n', encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sample_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("report")
    path = _config(directory, directory / "state")
    scan(load_config(path))
    return path


class _Tags(HTMLParser):
    """Every start tag with its attributes, to look for external resources."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _sections(page: str) -> dict[str, str]:
    parts = re.split(r'(?=<section id=")', page)
    return {m.group(1): p for p in parts if (m := re.match(r'<section id="([^"]+)"', p))}


def test_report_holds_every_chart_and_nothing_external(sample_config: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "trends.html"
    res = runner.invoke(app, ["report", "--html", str(out), "--config", str(sample_config)])
    assert res.exit_code == 0, res.output
    page = out.read_text(encoding="utf-8")
    sections = _sections(page)
    for chart in plots.CHARTS:
        body = sections.get(f"chart-{chart.name}")
        assert body is not None, f"chart {chart.name} missing"
        assert chart.title in body and body.count("<svg") == 1, chart.name
        assert re.search(r"<path\b", body), f"chart {chart.name} draws nothing"
    parser = _Tags()
    parser.feed(page)
    for tag, attrs in parser.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
        for name in ("src", "href", "xlink:href"):
            value = attrs.get(name)
            assert value is None or value.startswith(("#", "data:")), (tag, name, value)
    assert "url(http" not in page and "@import" not in page
    # The weekly table says what the frames say.
    h = triage.load_history(load_config(sample_config).state_dir)
    leak = frames.leak_rate(h)
    rows = re.findall(r"<tr><td>(\d{4}-W\d\d)</td>(.*?)</tr>", sections["figures"])
    assert [w for w, _ in rows] == leak["week"].tolist()
    first = re.findall(r"<td>([^<]*)</td>", rows[0][1])
    assert first[3] == str(leak["leaked"].iloc[0]) and first[2] == str(leak["refused"].iloc[0])


def test_report_of_the_last_weeks_only_is_reproducible(sample_config: Path,
                                                        tmp_path: Path) -> None:
    pages = []
    for name in ("a.html", "b.html"):
        res = runner.invoke(app, ["report", "--html", str(tmp_path / name), "--config",
                                  str(sample_config), "--weeks", "2"])
        assert res.exit_code == 0, res.output
        pages.append((tmp_path / name).read_text(encoding="utf-8"))
    assert "ISO weeks 2025-W40 to 2025-W41" in pages[0]
    assert re.findall(r"<tr><td>(\d{4}-W\d\d)</td>", pages[0]) == ["2025-W40", "2025-W41"]
    # the same history gives the same page, byte for byte (no random ids, no dates)
    assert pages[0] == pages[1]


def test_empty_history_is_an_error_and_keeps_the_old_file(tmp_path: Path) -> None:
    cfg = _config(tmp_path, tmp_path / "empty-state")
    out = tmp_path / "old.html"
    out.write_text("previous report", encoding="utf-8")
    res = runner.invoke(app, ["report", "--html", str(out), "--config", str(cfg)])
    assert res.exit_code == 1
    assert "history is empty" in str(res.exception)
    assert out.read_text(encoding="utf-8") == "previous report"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".old.html")] == []


def _texts(fig: Figure) -> str:
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_durability_chart_with_and_without_rules(sample_config: Path) -> None:
    cfg = load_config(sample_config)
    h = triage.load_history(cfg.state_dir)
    empty = plots.rule_durability(frames.rule_durability(h, []))
    assert "No approved rule" in _texts(empty)
    # The samples' blacklist (manifest.json) was in force from before the first week.
    approved = datetime(2025, 8, 25, tzinfo=UTC)
    rules = [Rule(f"R{i:04d}", RuleKind.CLIENT_CIDR, f"192.0.2.{i}/32",
                  state=RuleState.ACTIVE, approved=approved) for i in range(1, 14)]
    fig = plots.rule_durability(frames.rule_durability(h, rules))
    heights = [round(p.get_height()) for p in fig.axes[0].patches]
    assert len(heights) == 3 and heights[0] > 0  # 1, 4 and 12 weeks
    assert "no rule\nthat old yet" in _texts(fig)  # six weeks of history: not 12


def test_every_chart_has_a_title_and_axis_labels(sample_config: Path) -> None:
    h = triage.load_history(load_config(sample_config).state_dir)
    figs = plots.figures(frames.trends(h, my_hostnames=["mx.example.org"]))
    assert list(figs) == [c.name for c in plots.CHARTS]
    for name, fig in figs.items():
        axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        titled = fig.get_suptitle() or any(ax.get_title() for ax in axes)
        assert titled, name
        if name != "durability":  # no rules in the samples' rulebook: a note instead
            assert any(ax.get_xlabel() for ax in axes), name
            assert any(ax.get_ylabel() for ax in axes), name


def test_readme_describes_triage_report() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"triage report --html", readme)
