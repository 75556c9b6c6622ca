"""The benchmark's own pieces that need no model or broker: synthetic data, verdicts, report."""

from __future__ import annotations

import numpy as np

from model_export.benchmark import Plan, render_markdown, synthetic_catalog, synthetic_vectors, verdicts


def test_synthetic_vectors_are_unit_length_and_clustered_like_their_base() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 32))
    base = centres[rng.integers(0, 20, 300)] + 0.3 * rng.normal(size=(300, 32))
    base = (base / np.linalg.norm(base, axis=1, keepdims=True)).astype(np.float32)
    out = synthetic_vectors(base, 1000, seed=1, chunk=256)
    assert out.shape == (1000, 32) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # Every synthetic vector sits close to some real one (mixes of neighbours, small noise).
    assert float(np.median((out @ base.T).max(axis=1))) > 0.8
    np.testing.assert_array_equal(out, synthetic_vectors(base, 1000, seed=1, chunk=256))


def test_quick_plan_is_small() -> None:
    plan = Plan.make(quick=True, sizes=None)
    assert plan.sizes == [10_000] and plan.pebbles <= 500
    assert Plan.make(quick=False, sizes=[5000]).sizes == [5000]


def test_verdicts_and_markdown_from_a_partial_report() -> None:
    report = {
        "quick": True,
        "broker": {"max_pebbles_per_s": 160.0, "latency_batch": 64, "runs": [
            {"batch": 64, "pebbles_per_s": 160.0, "received": 10, "pebbles": 10, "duplicates": 0,
             "workers": [{"peak_rss_mb": 400.0}],
             "latency": {"idle_p50_ms": 30.0, "idle_p99_ms": 40.0, "idle_samples": 5,
                         "half_load_rate_sent": 80.0, "half_load_p50_ms": 50.0,
                         "half_load_p99_ms": 120.0, "half_load_max_ms": 130.0,
                         "half_load_answered": 9, "half_load_pebbles": 9}}]},
        "recipe": {"per_request_s": 30.0, "catalog_names": 100, "note": "measured"},
        "encoding": {"error": "RuntimeError('boom')"},
    }
    rows = {r["target"]: r for r in verdicts(report)}
    assert rows["pebbles/s through the broker (2 cores)"]["met"] is True
    assert rows["single pebble p50, idle (default, batch 64)"]["met"] is False
    assert rows["× faster than the original recipe (per request)"]["value"] == 4800.0
    text = render_markdown(report)
    assert "**no**" in text and "boom" in text and "| default | 64 | 160.0 |" in text


def test_synthetic_catalog_keeps_the_base_and_adds_distinct_variants() -> None:
    from consumer.demo import demo_catalog

    base = demo_catalog()
    grown = synthetic_catalog(base, len(base) + 50)
    assert len(grown) == len(base) + 50
    assert [p.id for p in list(grown)[: len(base)]] == [p.id for p in base]
    texts = grown.texts()
    assert len(set(texts)) == len(texts)  # every variant gets a vector of its own in the cache
    variant = grown.get("syn-0")
    original = next(iter(base))
    assert variant is not None and variant.name.startswith(original.name)
    assert variant.keywords == original.keywords and variant.status == original.status
    assert synthetic_catalog(base, 3).n_rows == len(base)  # never smaller than the base


def test_million_section_in_the_report() -> None:
    run = {"catalog_s": 1.0, "engine_load_s": 2.0, "index": "hnsw", "index_memory_mb": 900.0,
           "ms_per_pebble_batch64": 9.5, "single_pebble_p50_ms": 30.0, "rss_loaded_mb": 1500.0,
           "rss_mb": 1600.0, "peak_rss_mb": 2100.0}
    report = {"million": {"products": 1_000_000, "first_start": run, "restart": run}}
    rows = {r["target"]: r for r in verdicts(report)}
    assert rows["whole engine over 1,000,000 products, restarted, peak RSS"]["met"] is False
    text = render_markdown(report)
    assert "| first start (index built) | 1.0 | 2.0 | hnsw (900.0 MB) | 9.5 | 30.0 | 1500.0 |" in text
    report["million"]["restart"] = {**run, "index_from_snapshot": True}
    assert "| restart (index snapshot) | 1.0 |" in render_markdown(report)
