"""The HTML evaluation report: every section a reader needs, escaped, with the numbers given."""

from __future__ import annotations

from pathlib import Path

from model_export.report import write_report

METRICS = {"recall@1": 0.2, "recall@5": 0.4, "recall@10": 0.55, "recall@50": 0.7, "ndcg@10": 0.45,
           "mrr@10": 0.44, "coverage@10": 0.27}


def test_report_shows_comparison_slices_ablation_and_examples(tmp_path: Path) -> None:
    report = {
        **METRICS,
        "baselines": {"bm25 (name+keywords)": {**METRICS, "recall@10": 0.31, "ndcg@10": 0.22}},
        "slices": {"tags=1": {"recall@10": 0.7, "ndcg@10": 0.5, "mrr@10": 0.5, "posts": 500.0}},
        "ablation": {"engine's signals": {"recall@1": 0.2, "recall@10": 0.55, "recall@50": 0.7,
                                          "ndcg@10": 0.45, "mrr@10": 0.44},
                     "without brand": {"recall@1": 0.19, "recall@10": 0.54, "recall@50": 0.69,
                                       "ndcg@10": 0.43, "mrr@10": 0.42}},
        "info": {"validation posts": 824},
    }
    examples = [{"text": "<script>alert(1)</script> glow #summer",
                 "suggestions": [
                     {"name": "Glow Serum", "score": 1.5, "hit": True, "reasons": ["shares glow"]},
                     {"name": "Tote", "score": 0.5, "hit": False, "reasons": []}],
                 "missed": ["Sunscreen"]}]
    path = write_report(tmp_path / "out" / "report.html", report, examples)
    page = path.read_text(encoding="utf-8")
    assert '<div class="kpi"><small>recall@10</small><b>0.550</b></div>' in page
    assert "<title>bm25 (name+keywords): 0.310</title>" in page  # a bar per method and metric
    assert "What each signal adds" in page and "without brand" in page
    assert '<li class="hit"><b>Glow Serum</b>' in page and "Sunscreen" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<th>validation posts</th><td>824</td>" in page


def test_report_without_ablation_or_baselines_has_no_empty_sections(tmp_path: Path) -> None:
    page = write_report(tmp_path / "r.html", dict(METRICS), []).read_text(encoding="utf-8")
    assert "What each signal adds" not in page
    assert "<b>0.450</b>" in page
