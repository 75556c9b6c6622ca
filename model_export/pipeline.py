"""Data in, engines and numbers out: the shared steps of ``train`` and ``evaluate``."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumer.catalog import Catalog
from consumer.encoder import EmbeddingCache, Encoder, load_encoder
from consumer.history import History
from consumer.matcher import Engine, EngineConfig
from consumer.models import ensure_base_model
from consumer.records import ReadReport
from model_export.baselines import OriginalRecipe, baseline_configs, finetuned_baselines
from model_export.evaluation import EvalSet, evaluate_ranker, slices

log = logging.getLogger(__name__)
DEFAULT_CACHE = Path(".cache/keyblend/embeddings")


def file_fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Dataset:
    catalog: Catalog
    train: History
    validation: History
    reports: tuple[ReadReport, ...]
    fingerprints: dict[str, str]
    seed: int
    fraction: float

    def eval_set(self, history: History | None = None) -> EvalSet:
        held = history or self.validation
        counts: dict[str, int] = {}
        for item in self.train:
            for pid in item.tags:
                counts[pid] = counts.get(pid, 0) + 1
        brand_of = {p.id: p.brand_id for p in self.catalog if p.brand_id}
        published = {p.id for p in self.catalog if p.is_published}
        posts, relevant = [], []
        for item in held:
            rel = {pid for pid in item.tags if pid in published}
            if rel:  # a post whose tags all left the catalog cannot be ranked for
                posts.append(item.post)
                relevant.append(rel)
        return EvalSet(posts, relevant, counts, brand_of)


def load_dataset(products: Path, posts: Path, tags: Path, seed: int = 42, validation: float = 0.2) -> Dataset:
    catalog, product_report = Catalog.from_file(products)
    history, reports = History.from_files(posts, tags)
    for report in (product_report, *reports):
        log.info(report.summary())
    train, held = history.split(validation, seed) if validation > 0 else (history, History())
    fingerprints = {p.name: file_fingerprint(p) for p in (products, posts, tags)}
    return Dataset(catalog, train, held, (product_report, *reports), fingerprints, seed, validation)


def base_encoder(threads: int = 1, models_root: Path = Path("models")) -> Encoder:
    return load_encoder(ensure_base_model(models_root) / "encoder", threads=threads)


def engine_for(
    config: EngineConfig,
    dataset: Dataset,
    encoder: Encoder,
    history: History | None = None,
    cache_dir: Path | None = DEFAULT_CACHE,
) -> Engine:
    cache = EmbeddingCache(encoder, cache_dir)
    engine = Engine(
        dataset.catalog, encoder, history if history is not None else dataset.train, config, cache
    )
    cache.save()
    return engine


def _examples(engine: Engine, data: EvalSet, rankings: list[list[str]], n: int = 8) -> list[dict[str, Any]]:
    """A few posts, chosen evenly through the set (not cherry-picked), with suggestions."""
    step = max(1, len(data.posts) // n)
    picked = list(range(0, len(data.posts), step))[:n]
    results = engine.suggest_batch([data.posts[i] for i in picked], k=10)
    out = []
    for i, suggestion in zip(picked, results, strict=True):
        rel = data.relevant[i]
        shown = {r.product_id for r in suggestion.recommendations}
        missed = [engine.catalog.get(pid) for pid in rel - shown]
        out.append(
            {
                "text": engine.post_text(data.posts[i]),
                "suggestions": [
                    {
                        "name": r.name,
                        "score": r.score,
                        "hit": r.product_id in rel,
                        "reasons": [x.text for x in r.reasons],
                    }
                    for r in suggestion.recommendations
                ],
                "missed": [p.name for p in missed if p is not None],
            }
        )
    return out


def run_evaluation(
    model: Path | None,
    products: Path,
    posts: Path,
    tags: Path,
    seed: int = 42,
    validation: float = 0.2,
    with_baselines: bool = True,
    html: Path | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """Rank the published catalog for each validation post: engine first, then baselines."""
    if model is not None:
        manifest = json.loads((model / "manifest.json").read_text(encoding="utf-8"))
        split = manifest.get("split", {})
        if split and (split.get("seed"), split.get("fraction")) != (seed, validation):
            log.warning(
                "model was trained with split %s; evaluating with seed=%s fraction=%s",
                split,
                seed,
                validation,
            )
    dataset = load_dataset(products, posts, tags, seed, validation)
    data = dataset.eval_set()
    size = int(dataset.catalog.published.sum())
    started = time.perf_counter()
    if model is not None:
        engine = Engine.load(model, dataset.catalog, threads=threads)
        leaked = {i.post.id for i in engine.history} & {p.id for p in data.posts}
        if leaked:
            raise ValueError(
                f"{len(leaked)} validation posts are in the model's history: "
                "evaluate with the split the model was trained with"
            )
    else:
        engine = engine_for(
            EngineConfig(version="untrained"), dataset, base_encoder(threads), history=History()
        )
    metrics, rankings = evaluate_ranker(engine, data, size)
    report: dict[str, Any] = {
        **metrics,
        "model": engine.version,
        "seconds": round(time.perf_counter() - started, 1),
    }
    report["slices"] = slices(rankings, data)
    if model is not None and manifest.get("ablation") and (seed, validation) == (
        split.get("seed"), split.get("fraction")
    ):  # the training run's ablation was measured on these very posts
        report["ablation"] = manifest["ablation"]
    if with_baselines:
        report["baselines"] = baselines(
            dataset, data, size, threads, finetuned=engine.encoder if model is not None else None
        )
    report["info"] = {
        "validation posts": len(data.posts),
        "catalog (published)": size,
        "train posts": len(dataset.train),
        "seed": seed,
        "validation fraction": validation,
        "model": str(model) if model else "untrained (base model, no history)",
        **{f"fingerprint {k}": v for k, v in dataset.fingerprints.items()},
    }
    if html is not None:
        from model_export.report import write_report

        write_report(html, report, _examples(engine, data, rankings))
    return report


def baselines(
    dataset: Dataset, data: EvalSet, size: int, threads: int, finetuned: Encoder | None = None
) -> dict[str, dict[str, float]]:
    encoder = base_encoder(threads)
    out: dict[str, dict[str, float]] = {}
    for name, config in baseline_configs(has_history=len(dataset.train) > 0).items():
        metrics, _ = evaluate_ranker(engine_for(config, dataset, encoder), data, size)
        out[name] = metrics
        log.info("baseline %s: %s", name, metrics)
    metrics, _ = evaluate_ranker(OriginalRecipe(dataset.catalog, encoder), data, size)
    out["original recipe (names, base model)"] = metrics
    if finetuned is not None and finetuned.version != encoder.version:
        for name, config in finetuned_baselines().items():
            metrics, _ = evaluate_ranker(engine_for(config, dataset, finetuned), data, size)
            out[name] = metrics
    return out
