"""Evaluation reports: a chart of accuracy per category with 95% Wilson intervals, and self-contained
HTML pages (one per benchmark, and an index for the evaluate stage).

The HTML embeds its images as ``data:image/png;base64`` URIs: MLflow's artifact preview and KFP's HTML
artifact show one file at a time, so relative links would show nothing there. The PNG files stay on
disk too (they are logged as artifacts of their own). Every text from a model or an item is HTML-escaped.

A benchmark page states the scoring mode, the format-failure count, skipped items and the adapter's
notes; shows the chart, the metrics with their intervals, a gallery of traces drawn on their images
(:func:`sifthinker.method.visualize.save_trace_png`) and the first items with their responses.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sifthinker.evaluation.benchmarks.base import BenchmarkScore, Item, wilson

__all__ = ["ReportData", "category_chart", "intervals", "png_data_uri", "write_benchmark_report",
           "write_index_report"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}.bad{color:#b00}.ok{color:#070}.skip{color:#888}pre{white-space:pre-wrap;margin:0;font-size:12px}
img{max-width:100%;border:1px solid #ddd;margin:6px 0}figure{margin:1em 0}.facts b{font-size:1.1em}
"""


@dataclass
class ReportData:
    """What one benchmark's report shows."""

    benchmark: str
    score: BenchmarkScore
    items: Sequence[Item]
    responses: Mapping[str, str]
    chart: Path | None = None
    renders: Sequence[tuple[Path, str]] = ()  # (PNG, caption)
    context: Mapping[str, str] = field(default_factory=dict)
    link: str | None = None  # the benchmark's own page, from the index


def intervals(score: BenchmarkScore) -> dict[str, tuple[float, float]]:
    """95% intervals of ``overall`` and each ``category/<name>``: the adapter's own when it gives them,
    else Wilson over the scored items, but only where the metric is that proportion (a pair-scored
    category or an AP is not, and gets no interval rather than a wrong one)."""
    out = dict(score.intervals)
    scored = [r for r in score.items if r.correct is not None]
    groups = {"overall": scored}
    for key in score.metrics:
        if key.startswith("category/"):
            cat = key.split("/", 1)[1]
            groups[key] = [r for r in scored if r.category == cat]
    for key, rows in groups.items():
        if key in out or key not in score.metrics or not rows:
            continue
        hits = sum(bool(r.correct) for r in rows)
        if abs(hits / len(rows) - float(score.metrics[key])) < 1e-9:
            out[key] = wilson(hits, len(rows))
    return out


def category_chart(score: BenchmarkScore, path: str | Path, title: str = "") -> Path:
    """Bars of each ``category/<name>`` and ``overall``, with 95% intervals as error bars; returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    m, ci = score.metrics, intervals(score)
    keys = [*sorted(k for k in m if k.startswith("category/")), *(["overall"] if "overall" in m else [])]
    names = [k.split("/", 1)[-1] for k in keys]
    values = [float(m[k]) for k in keys]
    # clamped: at p = 1 the Wilson bound can round to just below the value itself
    lows = [max(0.0, v - ci[k][0]) if k in ci else 0.0 for k, v in zip(keys, values, strict=True)]
    highs = [max(0.0, ci[k][1] - v) if k in ci else 0.0 for k, v in zip(keys, values, strict=True)]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 1.5), 3.4), dpi=100)
    try:
        colors = ["#4c72b0"] * (len(keys) - 1) + ["#dd8452"] if keys and keys[-1] == "overall" else ["#4c72b0"] * len(keys)
        bars = ax.bar(names, values, color=colors, yerr=[lows, highs], capsize=4, ecolor="#333")
        for bar, v, hi in zip(bars, values, highs, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, v + hi + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, max([1.1, *(v * 1.15 for v in values)]))
        ax.set_ylabel(f"score ({score.scoring} scoring)")
        ax.set_title(title or f"{score.benchmark}: per category, 95% Wilson intervals")
        ax.tick_params(axis="x", labelrotation=30)
        fig.tight_layout()
        fig.savefig(p, format="png")
    finally:
        plt.close(fig)
    return p


def png_data_uri(path: str | Path) -> str:
    """The PNG file as a ``data:image/png;base64,...`` URI (base64 needs no HTML escaping)."""
    data = Path(path).read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):  # a mislabelled image would show as a broken icon
        raise ValueError(f"{path} is not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _num(key: str, v: float) -> str:
    return f"{int(v)}" if key in ("n", "format_failures", "skipped") or key.startswith("n_") else f"{float(v):.4f}"


def _section(d: ReportData, *, items_table: bool, max_rows: int = 50, level: int = 2) -> list[str]:
    esc, s, h = html.escape, d.score, f"h{level}"
    m, ci = s.metrics, intervals(s)
    bench = esc(d.benchmark)
    title = f"<a href='{esc(d.link)}'>{bench}</a>" if d.link else bench
    out = [f"<section class='benchmark' data-benchmark='{bench}'><{h}>{title}</{h}>"]
    if d.context:
        out.append("<table class='context'>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>"
                                                       for k, v in d.context.items()) + "</table>")
    skipped = [r for r in s.items if r.correct is None]
    n_scored = len(s.items) - len(skipped)
    out.append(
        f"<p class='facts'>Scoring mode: <b class='scoring'>{esc(str(s.scoring))}</b> &middot; "
        f"format failures: <b class='format-failures'>{int(m.get('format_failures', 0))}</b> of {n_scored} scored"
        f" &middot; skipped: <b class='skipped'>{int(m.get('skipped', len(skipped)))}</b></p>")
    notes = list(s.notes)
    if notes:
        out.append("<ul class='notes'>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    if d.chart:
        out.append(f"<img class='chart' src='{png_data_uri(d.chart)}' "
                   f"alt='{bench}: score per category with 95% Wilson intervals'>")
    out.append("<table class='metrics'><tr><th>metric</th><th>value</th><th>95% interval</th></tr>")
    for k in sorted(m):
        lo_hi = f"{ci[k][0]:.3f} to {ci[k][1]:.3f}" if k in ci else ""
        out.append(f"<tr><td>{esc(k)}</td><td>{_num(k, m[k])}</td><td>{lo_hi}</td></tr>")
    out.append("</table>")
    if d.renders:
        out.append(f"<{h}>Traces drawn on their images</{h}><div class='gallery'>")
        out.extend(f"<figure><img class='trace' src='{png_data_uri(p)}' alt='{esc(cap)}'>"
                   f"<figcaption>{esc(cap)}</figcaption></figure>" for p, cap in d.renders)
        out.append("</div>")
    if items_table:
        results = {r.id: r for r in s.items}
        shown = list(d.items)[:max_rows]
        out.append(f"<{h}>Items (first {len(shown)} of {len(d.items)})</{h}><table class='items'><tr><th>id</th>"
                   "<th>category</th><th>result</th><th>format</th><th>parsed</th><th>note</th><th>response</th></tr>")
        for it in shown:
            r = results.get(it.id)
            if r is None or r.correct is None:
                cls, res = "skip", "skipped"
            else:
                cls, res = ("ok", "correct") if r.correct else ("bad", "wrong")
            fmt = "-" if r is None else ("failure" if r.format_failure else "ok")
            out.append(f"<tr><td>{esc(it.id)}</td><td>{esc(it.category)}</td><td class='{cls}'>{res}</td>"
                       f"<td>{fmt}</td><td>{esc(str(r.parsed) if r and r.parsed is not None else '-')}</td>"
                       f"<td>{esc(r.note if r else '')}</td><td><pre>{esc((d.responses.get(it.id) or '')[:1500])}"
                       "</pre></td></tr>")
        out.append("</table>")
    out.append("</section>")
    return out


def _page(path: str | Path, title: str, body: list[str], context: Mapping[str, str] | None = None) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    esc = html.escape
    head = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
            f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>"]
    if context:
        head.append("<table class='context'>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>"
                                                        for k, v in context.items()) + "</table>")
    p.write_text("\n".join([*head, *body, "</body></html>"]), encoding="utf-8")
    return p


def write_benchmark_report(path: str | Path, data: ReportData, *, title: str = "", max_rows: int = 50) -> Path:
    """One benchmark's self-contained page (module docstring)."""
    return _page(path, title or f"SIFThinker evaluation: {data.benchmark}",
                 _section(data, items_table=True, max_rows=max_rows))


def write_index_report(path: str | Path, sections: Sequence[ReportData], *, title: str = "SIFThinker evaluation",
                       context: Mapping[str, str] | None = None) -> Path:
    """The evaluate stage's page: every benchmark's facts, chart, metrics and gallery embedded (it must
    stand alone as a KFP HTML artifact), each linking to its own page with the items."""
    body: list[str] = []
    for d in sections:
        body += _section(d, items_table=False)
    return _page(path, title, body, context)
