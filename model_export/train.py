"""``keyblend train``: learn from tagged history and write a model folder the worker loads.

Stages (each logged with elapsed time and an ETA):
1. read and split: labelled posts → train / validation (seeded; validation is never
   touched until the final report), train → fit / tune (seeded);
2. fine-tune the encoder on the fit posts, early-stopping on the tune posts; export to
   ONNX and check parity with PyTorch on the catalog;
3. learn the blend: the engine with memory of the fit posts ranks the tune posts, and
   logistic regression learns how much each scorer's evidence is worth;
4. the final engine: memory of all train posts, the learned weights; evaluated once on
   validation; saved with a manifest (data fingerprints, settings, metrics, versions).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consumer.encoder import EmbeddingCache, Encoder, OnnxEncoder, load_encoder
from consumer.fusion import Pool
from consumer.fusion.linear import LinearFusion
from consumer.history import History
from consumer.matcher import Engine, EngineConfig, ScorerSpec
from consumer.models import ensure_base_model
from model_export.ablation import ablation, restrict
from model_export.evaluation import EvalSet, evaluate_ranker
from model_export.pipeline import DEFAULT_CACHE, Dataset, load_dataset
from schemas.events import PebbleUploaded

log = logging.getLogger("keyblend.train")

# The trained engine's signals. Profiles (each product described by the posts that tagged
# it) carry the memory of past posts; brand and BM25 match brands and words the encoder has
# never seen.
TRAINED_SCORERS = [
    ScorerSpec(name="dense"),
    ScorerSpec(name="bm25", params={"k1": 0.9, "b": 0.4}),
    ScorerSpec(name="profile", key="profile_bm25", params={"similarity": "bm25", "product_weight": 4}),
    ScorerSpec(name="profile", key="profile_dense", params={"similarity": "dense", "product_weight": 0.5}),
    ScorerSpec(name="brand"),
]
# Signals measured in every training run's ablation but left out of the engine: on 5-fold
# cross-fitted train posts of the HYPD data each changed Recall@10 and nDCG@10 of the blend
# above by less than ±0.002 (the blend's own fold-to-fold noise is larger), while each costs
# about 0.6-0.9 ms per pebble.
MEASURED_SCORERS = [
    ScorerSpec(name="neighbors", key="knn_bm25", params={"similarity": "bm25", "neighbors": 20, "power": 4}),
    ScorerSpec(
        name="neighbors", key="knn_dense", params={"similarity": "dense", "neighbors": 50, "power": 8}
    ),
    ScorerSpec(
        name="neighbors", key="knn_handles", params={"similarity": "handles", "neighbors": 50, "power": 2}
    ),
    ScorerSpec(name="cotag"),
    ScorerSpec(name="popularity"),
]


@dataclass(frozen=True)
class TrainOptions:
    epochs: float = 1.0
    seed: int = 42
    validation: float = 0.2  # of labelled posts, held out for the final report
    tune: float = 0.2  # of the train posts, for early stopping and blend weights
    max_minutes: float = 18.0  # fine-tuning budget; export, blend and report take ~10 min more
    fine_tune: bool = True
    resume: bool = False
    batch_size: int = 32
    max_seq_length: int = 64
    candidates: int = 100
    l2: float = 1.0
    ablation: bool = True  # refit the blend without / with / with only each signal (reuses the pools)
    encoder_dir: Path | None = None  # without fine-tuning: this encoder (default: the base model)
    threads: int | None = None  # torch threads while fine-tuning (default: every core)


class Progress:
    """Stage lines with elapsed time and a rough ETA from the stage weights."""

    def __init__(self, weights: dict[str, float]) -> None:
        self.weights = weights
        self.started = time.monotonic()
        self.done = 0.0

    def stage(self, name: str) -> None:
        elapsed = time.monotonic() - self.started
        total = sum(self.weights.values())
        eta = elapsed / self.done * (total - self.done) if self.done else float("nan")
        eta_text = f", ETA {eta / 60:.1f} min" if self.done else ""
        print(f"[{elapsed / 60:5.1f} min] {name}{eta_text}", file=sys.stderr, flush=True)
        self.done += self.weights.get(name, 0.0)


def default_version(dataset: Dataset) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"keyblend-{stamp}-{dataset.fingerprints.get('product_content_list.csv', 'data')[:6]}"


def train(products: Path, posts: Path, tags: Path, out: Path | None, options: TrainOptions) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    progress = Progress(
        {
            "read": 0.5,
            "fine-tune": 12.0 if options.fine_tune else 0.0,
            "export": 1.0,
            "blend": 2.0,
            "final": 1.5,
            "save": 0.2,
        }
    )
    progress.stage("read")
    dataset = load_dataset(products, posts, tags, options.seed, options.validation)
    fit, tune = dataset.train.split(options.tune, options.seed + 1)
    version = out.name if out is not None and out.name != "hypd" else default_version(dataset)
    out = out or Path("models") / version
    out.mkdir(parents=True, exist_ok=True)
    staging = out / "work"
    info: dict[str, Any] = {}

    progress.stage("fine-tune")
    if options.fine_tune:
        encoder_dir, info["fine_tune"], info["parity"] = _fine_tune(
            dataset, fit, tune, staging, version, options
        )
        encoder: Encoder = OnnxEncoder(encoder_dir)
    else:
        encoder_dir = options.encoder_dir or ensure_base_model(Path("models")) / "encoder"
        encoder = load_encoder(encoder_dir)

    progress.stage("blend")
    kept = [s.label for s in TRAINED_SCORERS]
    # Every signal, the measured ones too, puts candidates forward on the tune posts; the
    # blend learns from the engine's own signals, the ablation from all of them.
    config = EngineConfig(
        version=version,
        scorers=TRAINED_SCORERS + (MEASURED_SCORERS if options.ablation else []),
        fusion={"name": "linear"},
        candidates=options.candidates,
    )
    cache = EmbeddingCache(encoder, DEFAULT_CACHE)
    fit_engine = Engine(dataset.catalog, encoder, fit, config, cache)
    labels = list(fit_engine.scorers)
    tune_set = dataset.eval_set(tune)
    all_pools = _pools(fit_engine, tune_set.posts)
    relevant = _relevant_rows(dataset, tune_set)
    pools = [restrict(p, [labels.index(k) for k in kept]) for p in all_pools]
    fusion = LinearFusion.fit(kept, pools, relevant, l2=options.l2)
    recall_in_pool = sum(len(set(p.rows.tolist()) & r) for p, r in zip(pools, relevant, strict=True)) / max(
        1, sum(len(r) for r in relevant)
    )
    info["blend"] = {
        "tune_posts": len(pools),
        "recall_of_candidate_pool": round(recall_in_pool, 4),
        "weights": fusion.params["weights"],
        "bias": fusion.params["bias"],
    }
    tune_metrics, _ = evaluate_ranker(
        _with_fusion(fit_engine, fusion), tune_set, int(dataset.catalog.published.sum())
    )
    info["tune_metrics"] = tune_metrics

    progress.stage("final")
    final_config = config.model_copy(update={"scorers": TRAINED_SCORERS, "fusion": fusion.config()})
    engine = Engine(dataset.catalog, encoder, dataset.train, final_config, cache)
    cache.save()
    if len(dataset.validation):
        val_set = dataset.eval_set()
        metrics, _ = evaluate_ranker(engine, val_set, int(dataset.catalog.published.sum()))
        info["validation_metrics"] = metrics
        log.info("validation: %s", json.dumps({k: round(v, 4) for k, v in metrics.items()}))
        if options.ablation:
            measuring = Engine(dataset.catalog, encoder, dataset.train, config, cache)
            info["ablation"] = ablation(
                labels, all_pools, relevant, _pools(measuring, val_set.posts),
                _relevant_rows(dataset, val_set), kept=kept, l2=options.l2,
            )

    progress.stage("save")
    manifest = {
        "trained": True,
        "data": {
            "products": str(products),
            "posts": str(posts),
            "tags": str(tags),
            "fingerprints": dataset.fingerprints,
            "reports": [r.summary() for r in dataset.reports],
        },
        "split": {
            "seed": options.seed,
            "fraction": options.validation,
            "tune_fraction": options.tune,
            "train_posts": len(dataset.train),
            "validation_posts": len(dataset.validation),
            "fit_posts": len(fit),
            "tune_posts": len(tune),
        },
        "options": asdict(options),
        **info,
    }
    engine.save(out, manifest=manifest, encoder_dir=encoder_dir)
    shutil.rmtree(staging, ignore_errors=True)
    progress.stage(f"done: {out}")
    return out


def _pools(engine: Engine, posts: list[PebbleUploaded]) -> list[Pool]:
    out: list[Pool] = []
    for start in range(0, len(posts), 64):
        out.extend(engine.candidate_pools(posts[start : start + 64]))
    return out


def _relevant_rows(dataset: Dataset, data: EvalSet) -> list[set[int]]:
    return [{r for r in (dataset.catalog.row_of(p) for p in rel) if r is not None} for rel in data.relevant]


def _with_fusion(engine: Engine, fusion: LinearFusion) -> Engine:
    engine.fusion = fusion
    return engine


def _fine_tune(
    dataset: Dataset, fit: History, tune: History, staging: Path, version: str, options: TrainOptions
) -> tuple[Path, dict[str, Any], dict[str, float]]:
    import os

    import torch

    from consumer.matcher import catalog_segmenter
    from model_export.export import base_model_path, export_onnx, load_sentence_transformer, parity
    from model_export.finetune import FineTuneOptions, fine_tune

    # make exports OMP_NUM_THREADS=1 for serving; training has the machine to itself.
    torch.set_num_threads(options.threads or os.cpu_count() or 1)
    model = load_sentence_transformer(base_model_path())
    segmenter = catalog_segmenter(dataset.catalog)
    ft_options = FineTuneOptions(
        epochs=options.epochs,
        batch_size=options.batch_size,
        max_seq_length=options.max_seq_length,
        seed=options.seed,
        max_minutes=options.max_minutes,
        resume=options.resume,
    )
    report = fine_tune(
        model, fit, tune, dataset.catalog, segmenter.segment, staging / "checkpoints", ft_options
    )
    encoder_dir = export_onnx(
        model, staging / "encoder", version=f"{version}-encoder", max_length=options.max_seq_length * 2
    )
    encoder = OnnxEncoder(encoder_dir)
    texts = [dataset.catalog.text(r) for r in range(dataset.catalog.n_rows) if dataset.catalog.published[r]]
    queries = [item.post.caption or " ".join(item.post.hashtags) for item in tune][:300]
    check = parity(model, encoder, queries, texts)
    log.info("ONNX parity: %s", check)
    if check["top10_overlap"] < 0.99:
        raise RuntimeError(f"ONNX export disagrees with PyTorch: {check}")
    return encoder_dir, report, check
