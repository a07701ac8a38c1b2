"""Evaluation report: a bar chart of accuracy per category and a small self-contained HTML page.

The HTML embeds its images as ``data:image/png;base64`` URIs: MLflow's artifact preview serves one
file at a time, so relative links would show nothing there. The PNG files stay on disk too (they are
logged as artifacts of their own). Every text from a model or a record is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path

from sifthinker.evaluation.metrics import ItemScore

__all__ = ["category_accuracy_chart", "png_data_uri", "write_html_report"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}.bad{color:#b00}.ok{color:#070}pre{white-space:pre-wrap;margin:0;font-size:12px}
img{max-width:100%;border:1px solid #ddd;margin:6px 0}
"""


def category_accuracy_chart(metrics: Mapping[str, float], path: str | Path, title: str = "") -> Path:
    """Bar chart of ``accuracy/<category>`` (plus overall ``accuracy``) as a PNG; returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cats = sorted(k.split("/", 1)[1] for k in metrics if k.startswith("accuracy/"))
    names = [*cats, "overall"]
    values = [float(metrics[f"accuracy/{c}"]) for c in cats] + [float(metrics.get("accuracy", 0.0))]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 1.5), 3.2), dpi=100)
    try:
        colors = ["#4c72b0"] * len(cats) + ["#dd8452"]
        bars = ax.bar(names, values, color=colors)
        for bar, v in zip(bars, values, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, v + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, 1.1)
        ax.set_ylabel("accuracy")
        ax.set_title(title or "accuracy per category")
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


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def write_html_report(
    path: str | Path,
    metrics: Mapping[str, float],
    items: Sequence[ItemScore],
    predictions: Sequence[str],
    *,
    title: str = "SIFThinker evaluation",
    chart: str | Path | None = None,
    renders: Sequence[str | Path] = (),
    context: Mapping[str, str] | None = None,
    max_rows: int = 50,
) -> Path:
    """Write the HTML report: context, metrics table, chart, rendered traces, first ``max_rows`` items."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    esc = html.escape


    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
           f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>"]
    if context:
        out.append("<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>"
                                       for k, v in context.items()) + "</table>")
    out.append("<h2>Metrics</h2><table><tr><th>metric</th><th>value</th></tr>")
    for k in sorted(metrics):
        v = metrics[k]
        shown = f"{int(v)}" if k == "n" or k.startswith("n_") else f"{float(v):.4f}"
        out.append(f"<tr><td>{esc(k)}</td><td>{shown}</td></tr>")
    out.append("</table>")
    if chart:
        out.append(f"<img src='{png_data_uri(chart)}' alt='accuracy per category'>")
    if renders:
        out.append("<h2>Rendered traces</h2>")
        out.extend(f"<div><img src='{png_data_uri(r)}' alt='{esc(Path(r).name)}'></div>" for r in renders)
    out.append(f"<h2>Items (first {min(max_rows, len(items))} of {len(items)})</h2><table><tr>"
               "<th>id</th><th>category</th><th>format</th><th>answer</th><th>correct</th>"
               "<th>IoU</th><th>depth cons.</th><th>prediction</th></tr>")
    for it, pred in list(zip(items, predictions, strict=False))[:max_rows]:
        fmt_cls = "ok" if it.format_valid else "bad"
        fmt_txt = "valid" if it.format_valid else esc(it.format_problems[0] if it.format_problems else "invalid")
        out.append(
            f"<tr><td>{esc(it.id)}</td><td>{esc(it.category)}</td><td class='{fmt_cls}'>{fmt_txt}</td>"
            f"<td>{esc(_fmt(it.answer))}</td><td class='{'ok' if it.correct else 'bad'}'>{_fmt(it.correct)}</td>"
            f"<td>{_fmt(it.grounding_iou)}</td><td>{_fmt(it.depth_consistency)}</td>"
            f"<td><pre>{esc(pred[:1500])}</pre></td></tr>"
        )
    out.append("</table></body></html>")
    p.write_text("\n".join(out), encoding="utf-8")
    return p
