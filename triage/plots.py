"""The trend charts, drawn with matplotlib from the frames of ``triage.frames``.

One function per chart, each taking its frame and returning a ``matplotlib.figure.Figure``
built without pyplot: no global figure state, nothing shown or printed, the same figure
displayed in a notebook or saved into the HTML report (``triage.report``). ``CHARTS`` lists
the charts in reading order with a title and a caption saying how to read each.

    >>> from triage import frames, plots
    >>> fig = plots.leak_rate(frames.leak_rate(history))            # doctest: +SKIP
    >>> figs = plots.figures(frames.trends(history, rules))          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from triage.frames import Trends

__all__ = ["CHARTS", "Chart", "auth_mix", "campaigns", "figures", "leak_rate", "refused",
           "rule_durability", "rule_hits", "traffic"]

# Names a reader understands without knowing the column names.
_MEASURE_LABELS = {
    "connections": "connections (SMTP sessions)",
    "received": "received (inbound messages accepted)",
    "refused": "refused during the SMTP session",
    "leaked": "leaked spam (found in spam folders)",
    "ham": "ham (legitimate mail in inboxes)",
}
# One colour per authentication result in every panel, so "pass" is always green.
_RESULT_COLOURS = {"pass": "#2e7d32", "fail": "#c62828", "softfail": "#ef6c00",
                   "neutral": "#9e9d24", "none": "#9e9e9e", "(none)": "#e0e0e0",
                   "temperror": "#6a1b9a", "permerror": "#283593", "policy": "#00838f"}
_RECURRING, _ONCE = "#c62828", "#90a4ae"
_WIDE, _TALL = (9.0, 4.5), (11.0, 6.0)


def _figure(size: tuple[float, float] = _WIDE) -> Figure:
    return Figure(figsize=size, layout="constrained")


def _weeks(*frames: pd.DataFrame) -> list[str]:
    found: set[str] = set()
    for f in frames:
        if "week" in f:
            found |= set(f["week"].dropna().astype(str))
    return sorted(found)


def _week_axis(ax: Axes, weeks: Sequence[str], room: int = 6) -> None:
    """ISO week labels on the x axis, thinned so that at most about 16 are written, slanted
    when more than ``room`` of them would not fit side by side."""
    step = max(1, int(np.ceil(len(weeks) / 16)))
    slant = len(weeks) / step > room
    ax.set_xticks(range(0, len(weeks), step))
    ax.set_xticklabels([_label(w) for w in list(weeks)[::step]], rotation=45 if slant else 0,
                       ha="right" if slant else "center")
    ax.set_xlim(-0.6, max(len(weeks), 1) - 0.4)
    ax.set_xlabel("ISO week (Monday to Sunday, UTC)")


def _label(value: object) -> str:
    """A data value as chart text, drawn as written: matplotlib reads ``$...$`` as math
    (a lone or unbalanced ``$`` makes it raise), so the dollar signs are escaped."""
    return str(value).replace("$", r"\$")


def _nothing(ax: Axes, text: str) -> None:
    """Say why a chart is empty instead of drawing empty axes."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes,
            fontsize=12, color="#555555")
    ax.set_xticks([])
    ax.set_yticks([])


# -- the charts --------------------------------------------------------------------------------
def traffic(weekly: pd.DataFrame) -> Figure:
    """Lines of connections, received, refused, leaked and ham per week
    (``frames.weekly_counts``)."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.set_title("Mail per week: received, refused, leaked spam and ham")
    weeks = _weeks(weekly)
    if not weeks:
        _nothing(ax, "The history is empty: run `triage scan` first.")
        return fig
    per = weekly.groupby(["week", "measure"])["count"].sum().unstack("measure")
    per = per.reindex(index=weeks, columns=list(_MEASURE_LABELS), fill_value=0).fillna(0)
    x = np.arange(len(weeks))
    for measure, label in _MEASURE_LABELS.items():
        style = "--" if measure == "connections" else "-"
        ax.plot(x, per[measure].to_numpy(), style, marker="o", label=label)
    ax.set_ylabel("count per week")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _week_axis(ax, weeks)
    return fig


def refused(weekly: pd.DataFrame) -> Figure:
    """Stacked bars of the refusals per week by reason class (``frames.weekly_counts``)."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.set_title("Refused during the SMTP session, per week and reason")
    weeks = _weeks(weekly)
    rows = weekly[weekly["measure"] == "refused"] if len(weekly) else weekly
    if not weeks or rows.empty or rows["count"].sum() == 0:
        _nothing(ax, "No refusals in the history.")
        return fig
    per = rows.pivot_table(index="week", columns="reason_class", values="count",
                           aggfunc="sum").reindex(weeks).fillna(0)
    # Largest class at the bottom, where its changes are easiest to read.
    per = per[per.sum().sort_values(ascending=False).index]
    x, bottom = np.arange(len(weeks)), np.zeros(len(weeks))
    for reason in per.columns:
        values = per[reason].to_numpy()
        ax.bar(x, values, bottom=bottom, label=_label(reason), width=0.7)
        bottom += values
    ax.set_ylabel("refused attempts per week")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="reason class", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _week_axis(ax, weeks)
    return fig


def leak_rate(leak: pd.DataFrame) -> Figure:
    """The weekly leak rate in percent (``frames.leak_rate``)."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.set_title("Leak rate: share of the spam that reached a mailbox")
    if leak.empty:
        _nothing(ax, "The history is empty: run `triage scan` first.")
        return fig
    weeks = leak["week"].astype(str).tolist()
    x = np.arange(len(weeks))
    pct = (leak["leak_rate"] * 100).to_numpy(dtype=float)
    ax.plot(x, pct, marker="o", color="#c62828")
    for xi, p, n, total in zip(x, pct, leak["leaked"], leak["leaked"] + leak["refused"],
                               strict=True):
        if not np.isnan(p):
            ax.annotate(f"{p:.0f}% ({n}/{total})", (xi, p), textcoords="offset points",
                        xytext=(0, 7), ha="center", fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("% leaked = leaked ÷ (leaked + refused)")
    ax.grid(axis="y", alpha=0.3)
    _week_axis(ax, weeks)
    return fig


def auth_mix(auth: pd.DataFrame) -> Figure:
    """SPF, DKIM and DMARC results of leaked spam and ham per week, as 100 % stacked bars
    (``frames.auth_mix``)."""
    fig = _figure(_TALL)
    fig.suptitle("SPF, DKIM and DMARC results per week (our own headers)")
    if auth.empty:
        _nothing(fig.add_subplot(), "No messages from the mail folders in the history.")
        return fig
    weeks = _weeks(auth)
    x = np.arange(len(weeks))
    axes = fig.subplots(2, 3, sharex=True, sharey=True)
    seen: dict[str, Patch] = {}
    for row, (role, role_label) in enumerate((("spam", "leaked spam"), ("ham", "ham"))):
        for col, check in enumerate(("spf", "dkim", "dmarc")):
            ax = axes[row][col]
            part = auth[(auth["role"] == role) & (auth["check"] == check)]
            per = part.pivot_table(index="week", columns="result", values="share",
                                   aggfunc="sum").reindex(weeks).fillna(0) * 100
            bottom = np.zeros(len(weeks))
            for result in sorted(per.columns, key=_result_order):
                bars = ax.bar(x, per[result].to_numpy(), bottom=bottom, width=0.75,
                              color=_RESULT_COLOURS.get(result), label=_label(result))
                seen.setdefault(result, Patch(color=bars.patches[0].get_facecolor()))
                bottom += per[result].to_numpy()
            ax.set_title(f"{check.upper()} of {role_label}", fontsize=10)
            ax.set_ylim(0, 100)
            if col == 0:
                ax.set_ylabel("% of the week's messages")
            _week_axis(ax, weeks, room=3)
            if row == 0 or col != 1:
                ax.set_xlabel("")
    labels = ["not recorded" if r == "(none)" else _label(r) for r in seen]
    fig.legend(list(seen.values()), labels, title="result", loc="outside right upper",
               fontsize=8)
    return fig


def _result_order(result: str) -> tuple[int, str]:
    order = ["pass", "neutral", "softfail", "fail", "temperror", "permerror", "none", "(none)"]
    return (order.index(result) if result in order else len(order), result)


def campaigns(table: pd.DataFrame, weeks: Sequence[str] | None = None, top: int = 15
              ) -> Figure:
    """The ``top`` largest campaigns as bars from their first to their last week
    (``frames.campaigns``)."""
    fig = _figure((9.0, 5.5))
    ax = fig.add_subplot()
    ax.set_title(f"The {top} largest spam campaigns: from first to last week seen")
    if table.empty:
        _nothing(ax, "No leaked spam in the history.")
        return fig
    rows = table.sort_values(["messages", "campaign"], ascending=[False, True]).head(top)
    axis = list(weeks) if weeks else sorted(set(table["first_week"].dropna())
                                            | set(table["last_week"].dropna()))
    pos = {w: i for i, w in enumerate(axis)}
    y = np.arange(len(rows))[::-1]  # largest on top
    for yi, first, last, size, active in zip(
            y, rows["first_week"], rows["last_week"], rows["messages"].astype(int),
            rows["weeks_active"].astype(int), strict=True):
        if first not in pos or last not in pos:
            continue
        start, end = pos[first], pos[last]
        colour = _RECURRING if active > 1 else _ONCE
        ax.barh(yi, end - start + 0.8, left=start - 0.4, height=0.6, color=colour)
        ax.text(end + 0.5, yi, f"{size} msgs, {active} wk", va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels([f"{_label(c)} ({m})" for c, m in zip(rows["campaign"], rows["messages"],
                                                      strict=True)], fontsize=8)
    ax.set_ylabel("campaign (messages)")
    ax.grid(axis="x", alpha=0.3)
    _week_axis(ax, axis)
    ax.set_xlim(-0.6, len(axis) + 1.5)  # room for the labels right of the last week
    ax.legend(handles=[Patch(color=_RECURRING, label="seen in several weeks"),
                       Patch(color=_ONCE, label="seen in one week")], fontsize=8,
              loc="lower right")
    return fig


def rule_hits(hits: pd.DataFrame, weeks: Sequence[str] | None = None) -> Figure:
    """A heat map of hits per rule and week (``frames.rule_hits``)."""
    fig = _figure((9.0, 5.0))
    ax = fig.add_subplot()
    ax.set_title("Hits per rule and week (rejects + trial warnings)")
    if hits.empty:
        _nothing(ax, "No rule named in mail.log fired in the history.")
        return fig
    axis = list(weeks) if weeks else _weeks(hits)
    grid = hits.pivot_table(index="rule_id", columns="week", values="hits",
                            aggfunc="sum").reindex(columns=axis).fillna(0).sort_index()
    values = grid.to_numpy(dtype=float)
    image = ax.imshow(values, aspect="auto", cmap="Reds", vmin=0,
                      vmax=max(values.max(), 1))
    for (i, j), v in np.ndenumerate(values):
        if v:
            ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=7,
                    color="white" if v > values.max() * 0.6 else "black")
    ax.set_yticks(range(len(grid.index)))
    ax.set_yticklabels([_label(r) for r in grid.index], fontsize=8)
    ax.set_ylabel("rule id")
    _week_axis(ax, axis)
    fig.colorbar(image, ax=ax, label="hits per week")
    return fig


def rule_durability(durability: pd.DataFrame) -> Figure:
    """Bars of the share of approved rules still firing 1, 4 and 12 weeks after approval
    (``frames.rule_durability``)."""
    fig = _figure((7.0, 4.5))
    ax = fig.add_subplot()
    ax.set_title("Rule durability: approved rules still firing after N weeks")
    if durability.empty:
        _nothing(ax, "No approved rule in the rulebook yet.")
        return fig
    x = np.arange(len(durability))
    pct = (durability["share"] * 100).fillna(0).to_numpy(dtype=float)
    ax.bar(x, pct, width=0.6, color="#1565c0")
    for xi, p, firing, n in zip(x, pct, durability["firing"], durability["rules"],
                                strict=True):
        text = f"{firing} of {n}" if n else "no rule\nthat old yet"
        ax.annotate(text, (xi, p), textcoords="offset points", xytext=(0, 4), ha="center",
                    fontsize=9)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{w} week{'s' if w != 1 else ''}" for w in durability["weeks_after"]])
    ax.set_xlabel("time since approval")
    ax.set_ylabel("% of the rules approved that long ago")
    ax.set_ylim(0, 110)
    ax.grid(axis="y", alpha=0.3)
    return fig


# -- all of them -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Chart:
    """One chart of the report and the notebook: its name (an HTML id, a notebook cell tag
    ``chart:<name>``), title, how to read it, and how to draw it from the trends."""

    name: str
    title: str
    caption: str
    draw: Callable[[Trends], Figure]


CHARTS: tuple[Chart, ...] = (
    Chart("traffic", "Mail per week",
          "Each line counts one kind of mail per ISO week. Received and ham should move "
          "together; a rise in leaked spam with flat refusals means spam is finding a way "
          "around the rules.",
          lambda t: traffic(t.weekly)),
    Chart("refused", "Refusals by reason",
          "What Postfix refused during the SMTP session, stacked by reason class (client "
          "and HELO checks, sender domain, SPF, DMARC, unknown users, relay attempts, "
          "header checks). The height of a bar is all refusals of the week.",
          lambda t: refused(t.weekly)),
    Chart("leak_rate", "Leak rate",
          "Of the spam seen in a week (refused plus leaked), the percentage that was "
          "delivered to a mailbox. Lower is better; the labels give leaked of total.",
          lambda t: leak_rate(t.leak)),
    Chart("auth_mix", "SPF, DKIM and DMARC",
          "For leaked spam (top) and ham (bottom): the share of each week's messages per "
          "result, as our own server recorded it. A result common in spam but rare in ham "
          "is a lead for a policy change.",
          lambda t: auth_mix(t.auth)),
    Chart("campaigns", "Campaigns",
          "Leaked spam grouped into campaigns (messages sharing an address, network, rDNS, "
          "HELO or domain). Each bar runs from the first to the last week the campaign was "
          "seen; red ones came back in more than one week.",
          lambda t: campaigns(t.campaigns, t.weeks)),
    Chart("rule_hits", "Rule hits",
          "How often each rule named in mail.log fired, per week. A row that fades out is "
          "a rule the spammers have moved away from.",
          lambda t: rule_hits(t.rule_hits, t.weeks)),
    Chart("durability", "Rule durability",
          "Of the rules approved at least 1, 4 or 12 weeks ago, the share that fired at "
          "least once that long after approval or later. Rules that stop firing early are "
          "candidates for retirement.",
          lambda t: rule_durability(t.durability)),
)


def figures(trends: Trends) -> dict[str, Figure]:
    """Every chart of ``CHARTS`` for one set of trends, by name, in reading order."""
    return {chart.name: chart.draw(trends) for chart in CHARTS}
