"""The digest chart: stance shares this period vs the previous one (grouped bars) and their trend (lines).

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, safe in a worker thread). matplotlib is
imported when the first chart is drawn, not when the bot starts: it costs start-up time and memory, and it writes a
font cache on first import.
"""

from __future__ import annotations

import io
import math

from bot.core.digest import Digest
from bot.core.prompts import UNCLEAR

#: Colour-blind-safe colours (Okabe-Ito) for stances in the prompt's order; ``unclear`` is always grey.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
UNCLEAR_COLOUR = "#9A9A9A"


def label_colours(labels: tuple[str, ...]) -> dict[str, str]:
    """A fixed colour per label, so the same stance looks the same in every digest."""
    colours: dict[str, str] = {}
    index = 0
    for label in labels:
        if label == UNCLEAR:
            colours[label] = UNCLEAR_COLOUR
        else:
            colours[label] = PALETTE[index % len(PALETTE)]
            index += 1
    return colours


def render_chart(digest: Digest, *, dpi: int = 110) -> bytes:
    """PNG bytes of the digest chart (about 1100 x 480 pixels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import PercentFormatter

    fig = Figure(figsize=(10, 4.4), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    colours = label_colours(digest.labels)
    noun = digest.period.noun
    bars, trend = fig.subplots(1, 2, width_ratios=(1, 1.25))
    fig.suptitle(digest.heading if len(digest.heading) <= 90 else digest.heading[:89] + "…", fontsize=13)

    # Left: this period vs the previous one.
    cur, prev = digest.current, digest.previous
    if prev is not None and not prev.counted:
        prev = None  # nothing to compare with: draw this period alone
    x = list(range(len(digest.labels)))
    width = 0.38
    if prev is not None:
        prev_shares = [prev.share(label) for label in digest.labels]
        bars.bar(
            [i - width / 2 for i in x],
            prev_shares,
            width,
            color=[colours[label] for label in digest.labels],
            alpha=0.35,
            edgecolor="#555555",
            linewidth=0.6,
            label=digest.period.last,
        )
    cur_shares = [cur.share(label) for label in digest.labels]
    offset = width / 2 if prev is not None else 0.0
    drawn = bars.bar(
        [i + offset for i in x],
        cur_shares,
        width,
        color=[colours[label] for label in digest.labels],
        edgecolor="#333333",
        linewidth=0.6,
        label=digest.period.this,
    )
    bars.bar_label(drawn, labels=[f"{s:.0%}" for s in cur_shares], padding=2, fontsize=9)
    bars.set_xticks(x, [label.replace("_", "\n") for label in digest.labels], fontsize=10)
    bars.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    bars.set_ylim(0, max([*cur_shares, *(prev.share(lb) for lb in digest.labels)] if prev else cur_shares) * 1.2 or 1)
    title = f"{digest.period.this.capitalize()} vs {digest.period.last} ({cur.counted} counted)"
    if prev is None:
        title = f"{digest.period.this.capitalize()} ({cur.counted} counted; none {digest.period.last})"
    bars.set_title(title, fontsize=11)
    if prev is not None:
        legend = bars.legend(fontsize=9, frameon=False, loc="upper right")
        for handle in legend.legend_handles:
            if handle is not None:
                handle.set_facecolor("#BBBBBB")
    bars.spines[["top", "right"]].set_visible(False)
    bars.grid(axis="y", alpha=0.3)

    # Right: trend of shares over the history.
    trend_figures = digest.trend()
    ticks = list(range(len(trend_figures)))
    for label in digest.labels:
        shares = [fig_.share(label) if fig_.counted else math.nan for fig_ in trend_figures]
        style = "--" if label == UNCLEAR else "-"
        trend.plot(ticks, shares, style, marker="o", markersize=4, linewidth=2, color=colours[label], label=label)
    trend.set_xticks(ticks, [f.period.short_label() for f in trend_figures], fontsize=9)
    if len(ticks) > 8:
        for i, tick in enumerate(trend.get_xticklabels()):
            tick.set_visible(i % 2 == (len(ticks) - 1) % 2)
    trend.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    top = max([f.share(label) for f in trend_figures for label in digest.labels] + [0.1])
    trend.set_ylim(0, min(1.0, top * 1.45 + 0.08))
    trend.set_xlim(-0.3, max(len(ticks) - 0.7, 0.3))
    trend.set_title(f"Trend over the last {len(ticks)} {noun}s", fontsize=11)
    handles, names = trend.get_legend_handles_labels()
    handles.append(Patch(facecolor="#777777", alpha=0.25, label=f"replies per {noun}"))
    names.append(f"replies per {noun}")
    trend.legend(handles, names, fontsize=9, frameon=False, loc="upper left", ncols=min(len(names), 3))
    trend.spines[["top", "right"]].set_visible(False)
    trend.grid(alpha=0.3)
    replies = trend.twinx()
    replies.bar(ticks, [f.replies for f in trend_figures], 0.5, color="#777777", alpha=0.25, zorder=0)
    replies.set_ylim(0, max([f.replies for f in trend_figures] + [1]) * 3)
    replies.set_yticks([])
    replies.spines[["top", "right"]].set_visible(False)
    trend.set_zorder(replies.get_zorder() + 1)
    trend.patch.set_visible(False)

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()
