"""The trend charts as one self-contained HTML page, for people who do not use Jupyter.

Every chart of ``triage.plots.CHARTS`` is inlined as SVG (matplotlib draws text as paths, so
no font, script, style sheet or image is fetched: the page reads the same offline, attached
to a mail or opened from a share). The page is a pure function of the history and the rules;
writing it to a file is the caller's job.

    html = render_html(frames.trends(load_history(state_dir), rules))
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Sequence
from datetime import datetime
from types import ModuleType
from typing import TYPE_CHECKING

import pandas as pd

from triage import __version__
from triage.config import Config
from triage.errors import TriageError
from triage.frames import Trends, trends
from triage.rulebook import load_rulebook
from triage.store import TABLES, Store, load_history

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["render_html", "report_html", "svg"]

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 62rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.5rem; }
nav a { margin-right: 1rem; }
table { border-collapse: collapse; font-size: .9rem; }
th, td { padding: .2rem .6rem; text-align: right; border-bottom: 1px solid #ddd; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1rem 0; } figure svg { max-width: 100%; height: auto; }
.caption { color: #444; }
"""


def _plots() -> ModuleType:
    """``triage.plots``, or a one-line error when matplotlib is not installed."""
    try:
        from triage import plots
    except ImportError as exc:
        raise TriageError(f"the charts need matplotlib ({exc}): "
                          "pip install 'triage[notebook]'") from exc
    return plots


def svg(fig: Figure) -> str:
    """A figure as an inline ``<svg>`` element (no XML prolog, no external reference)."""
    import matplotlib as mpl

    buf = io.StringIO()
    # A fixed salt makes the ids inside the SVG depend only on the drawing, so the same
    # history gives the same page; no date either, for the same reason.
    with mpl.rc_context({"svg.hashsalt": "triage", "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    # The RDF metadata block only names matplotlib and the format: drop it from the page.
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.DOTALL)
    return text[text.index("<svg"):].strip()


def _summary_table(tr: Trends) -> str:
    """The weekly figures behind the charts, as numbers."""
    if tr.leak.empty:
        return "<p>The history is empty.</p>"
    per = tr.weekly.groupby(["week", "measure"])["count"].sum().unstack("measure")
    cols = [("connections", "connections"), ("received", "received"),
            ("refused", "refused"), ("leaked", "leaked spam"), ("ham", "ham")]
    head = "".join(f"<th>{label}</th>" for _, label in cols)
    rows = []
    for week, rate in zip(tr.leak["week"], tr.leak["leak_rate"], strict=True):
        cells = "".join(f"<td>{int(per.loc[week].get(c, 0)):,}</td>" for c, _ in cols)
        leak = "–" if rate is None or math.isnan(rate) else f"{rate:.1%}"
        rows.append(f"<tr><td>{html.escape(str(week))}</td>{cells}<td>{leak}</td></tr>")
    return (f"<table><thead><tr><th>ISO week</th>{head}<th>leak rate</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def render_html(tr: Trends, title: str = "triage: spam trends",
                generated: datetime | None = None, sources: Sequence[str] = ()) -> str:
    """The whole page: a header with the weeks covered, the weekly figures as a table, then
    one section per chart (``id="chart-<name>"``) with its caption and inline SVG."""
    plots = _plots()
    charts = plots.CHARTS
    figures = plots.figures(tr)
    weeks = f"{tr.weeks[0]} to {tr.weeks[-1]}" if tr.weeks else "no weeks yet"
    meta = [f"ISO weeks {weeks}", f"triage {__version__}"]
    if generated is not None:
        meta.append(f"written {pd.Timestamp(generated).strftime('%Y-%m-%d %H:%M %Z')}")
    meta += [html.escape(s) for s in sources]
    nav = "".join(f'<a href="#chart-{c.name}">{html.escape(c.title)}</a>' for c in charts)
    sections = []
    for chart in charts:
        fig = figures[chart.name]
        sections.append(
            f'<section id="chart-{chart.name}"><h2>{html.escape(chart.title)}</h2>'
            f'<p class="caption">{html.escape(chart.caption)}</p>'
            f"<figure>{svg(fig)}</figure></section>")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{' · '.join(meta)}</p>",
        f"<nav>{nav}</nav>",
        '<section id="figures"><h2>Weekly figures</h2>',
        _summary_table(tr), "</section>",
        *sections,
        "</body></html>",
    ]) + "\n"


def report_html(cfg: Config, weeks: int | None = None) -> str:
    """The report of the history under ``cfg.state_dir`` (its last ``weeks`` ISO weeks, or
    all) with the rules of the rulebook: what ``triage report --html`` writes."""
    store = Store(cfg.state_dir)
    available = sorted({w for table in TABLES for w in store.weeks(table)})
    if not available:
        raise TriageError("the history is empty: run `triage scan` first", file=cfg.state_dir)
    chosen = available[-weeks:] if weeks else available
    history = load_history(cfg.state_dir, chosen)
    rules = list(load_rulebook(cfg.rulebook_dir()))
    tr = trends(history, rules, my_hostnames=cfg.my_hostnames,
                allowlist_files=cfg.allowlist_files())
    title = f"triage: spam trends, {len(chosen)} week{'s' if len(chosen) != 1 else ''}"
    return render_html(tr, title=title)
