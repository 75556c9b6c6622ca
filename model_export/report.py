"""A self-contained HTML evaluation report: comparison plots first, then example posts.

Plots are inline SVG written here (no plotting dependency); the page has no scripts and
no external assets, so it opens anywhere, including as a CI artifact.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PALETTE = [
    "#2b6cb0",
    "#dd6b20",
    "#38a169",
    "#805ad5",
    "#d53f8c",
    "#718096",
    "#b7791f",
    "#319795",
    "#e53e3e",
    "#4a5568",
]
MAIN_METRICS = ("recall@10", "ndcg@10", "mrr@10")


def _esc(value: object) -> str:
    return html.escape(str(value))


def grouped_bars(
    methods: Sequence[tuple[str, dict[str, float]]],
    metrics: Sequence[str],
    width: int = 760,
    bar_height: int = 14,
) -> str:
    """Horizontal bars, one group per metric, one bar per method, values printed."""
    label_w, pad = 250, 6
    group_h = len(methods) * (bar_height + 3) + 18
    height = len(metrics) * group_h + 10
    top = max([m.get(metric, 0.0) for _, m in methods for metric in metrics] + [1e-9])
    scale = (width - label_w - 60) / top
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'role="img" xmlns="http://www.w3.org/2000/svg">'
    ]
    y = 4
    for metric in metrics:
        parts.append(f'<text x="0" y="{y + 11}" class="metric">{_esc(metric)}</text>')
        y += 16
        for i, (name, values) in enumerate(methods):
            value = values.get(metric, 0.0)
            colour = PALETTE[i % len(PALETTE)]
            bold = ' font-weight="bold"' if i == 0 else ""
            parts.append(
                f'<text x="{label_w - pad}" y="{y + bar_height - 3}" text-anchor="end"'
                f"{bold}>{_esc(name)}</text>"
            )
            parts.append(
                f'<rect x="{label_w}" y="{y}" width="{max(value * scale, 1):.1f}" '
                f'height="{bar_height}" fill="{colour}"><title>{_esc(name)}: {value:.3f}</title></rect>'
            )
            parts.append(
                f'<text x="{label_w + value * scale + 4:.1f}" y="{y + bar_height - 3}">{value:.3f}</text>'
            )
            y += bar_height + 3
        y += 2
    parts.append("</svg>")
    return "".join(parts)


def recall_curve(
    methods: Sequence[tuple[str, dict[str, float]]],
    cutoffs: Sequence[int] = (1, 5, 10, 50),
    width: int = 760,
    height: int = 300,
) -> str:
    """Recall@k against k (evenly spaced cutoffs), one line per method."""
    left, bottom, right, top_pad = 50, 40, 300, 10
    plot_w, plot_h = width - left - right, height - bottom - top_pad
    xs = {k: left + plot_w * i / (len(cutoffs) - 1) for i, k in enumerate(cutoffs)}
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top_pad + plot_h * (1 - tick)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:.2f}</text>')
    for k, x in xs.items():
        parts.append(f'<text x="{x:.1f}" y="{height - bottom + 18}" text-anchor="middle">@{k}</text>')
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">recall at k</text>'
    )
    for i, (name, values) in enumerate(methods):
        colour = PALETTE[i % len(PALETTE)]
        points = [(xs[k], top_pad + plot_h * (1 - values.get(f"recall@{k}", 0.0))) for k in cutoffs]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        stroke = 3 if i == 0 else 1.5
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="{stroke}"/>')
        for x, y in points:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>')
        ly = top_pad + 14 * i + 8
        parts.append(f'<rect x="{left + plot_w + 12}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{left + plot_w + 26}" y="{ly + 1}">{_esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(rows: Sequence[tuple[str, dict[str, float]]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = []
    best = {c: max((m.get(c, float("-inf")) for _, m in rows), default=0.0) for c in columns}
    for name, metrics in rows:
        cells = []
        for c in columns:
            v = metrics.get(c)
            text = "" if v is None else (f"{int(v)}" if c in ("posts", "pairs") else f"{v:.3f}")
            cls = ' class="best"' if v is not None and v == best[c] and c not in ("posts", "pairs") else ""
            cells.append(f"<td{cls}>{text}</td>")
        body.append(f"<tr><th>{_esc(name)}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>"


def _examples(examples: Sequence[dict[str, Any]]) -> str:
    out = []
    for ex in examples:
        items = []
        for s in ex["suggestions"]:
            mark = "hit" if s["hit"] else "miss"
            why = "; ".join(_esc(r) for r in s.get("reasons", []))
            items.append(
                f'<li class="{mark}"><b>{_esc(s["name"])}</b> <span class="score">'
                f"{s['score']:.3f}</span><br><small>{why}</small></li>"
            )
        missed = "".join(f"<li>{_esc(n)}</li>" for n in ex.get("missed", []))
        out.append(
            f'<div class="example"><p class="caption">{_esc(ex["text"][:400])}</p>'
            f"<ol>{''.join(items)}</ol>"
            + (
                f'<p class="missed-head">tagged but not in the top {len(ex["suggestions"])}:</p>'
                f'<ul class="missed">{missed}</ul>'
                if missed
                else ""
            )
            + "</div>"
        )
    return "".join(out)


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#1a202c;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #e2e8f0}
.headline{display:flex;gap:1.2em;flex-wrap:wrap}.kpi{background:#f7fafc;border:1px solid #e2e8f0;
border-radius:8px;padding:.8em 1.2em}.kpi b{display:block;font-size:1.8em}.kpi small{color:#4a5568}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:3px 10px;border-bottom:1px solid #edf2f7;
text-align:right}th:first-child{text-align:left}td.best{font-weight:bold;color:#276749}
svg text{font-size:11px;fill:#2d3748}svg .metric{font-weight:bold}svg .grid{stroke:#edf2f7}
.example{border:1px solid #e2e8f0;border-radius:8px;padding:.6em 1em;margin:.8em 0}
.caption{color:#2d3748;font-style:italic}li.hit{color:#276749}li.hit::marker{content:"✔ "}
li.miss::marker{content:"· "}.score{color:#718096}.missed{color:#9b2c2c}.missed-head{margin:.2em 0}
"""


def render_report(report: dict[str, Any], examples: Sequence[dict[str, Any]], title: str) -> str:
    engine = {k: v for k, v in report.items() if isinstance(v, float)}
    baselines = sorted(report.get("baselines", {}).items(), key=lambda kv: -kv[1].get("ndcg@10", 0.0))
    methods = [("KeyBlend engine", engine), *baselines]
    kpis = "".join(
        f'<div class="kpi"><small>{_esc(m)}</small><b>{engine.get(m, 0.0):.3f}</b></div>'
        for m in ("recall@10", "ndcg@10", "mrr@10", "recall@50", "coverage@10")
    )
    columns = ["recall@1", "recall@5", "recall@10", "recall@50", "ndcg@10", "mrr@10", "coverage@10"]
    slice_rows = sorted(report.get("slices", {}).items())
    slice_cols = ["recall@10", "ndcg@10", "mrr@10", "posts", "pairs"]
    ablation = list((report.get("ablation") or {}).items())
    ablation_html = "" if not ablation else f"""<h2>What each signal adds</h2>
<p>From the model's training run, on the same validation posts: the blend refit on the
engine's signals, without each of them, with each measured signal added, and each alone.</p>
{grouped_bars(ablation, ["ndcg@10"])}
{_table(ablation, ["recall@1", "recall@10", "recall@50", "ndcg@10", "mrr@10"])}"""
    info = report.get("info", {})
    info_rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in info.items())
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{_esc(title)}</h1>
<div class="headline">{kpis}</div>
<h2>Engine against the baselines</h2>
{grouped_bars(methods, MAIN_METRICS)}
<h2>Recall as the list grows</h2>
{recall_curve(methods)}
<h2>All metrics</h2>
{_table(methods, columns)}
<h2>Slices</h2>
<p>Posts by number of tagged products and by whether their tags were seen in training; tagged
products (post, product pairs) by cold/warm and brand.</p>
{_table(slice_rows, slice_cols)}
{ablation_html}
<h2>Example posts</h2>
{_examples(examples)}
<h2>Run</h2><table>{info_rows}</table>
</body></html>"""


def write_report(
    path: Path, report: dict[str, Any], examples: Sequence[dict[str, Any]], title: str = "KeyBlend evaluation"
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(report, examples, title), encoding="utf-8")
    return path
