"""Fine-tune the sentence-transformer on (post text, tagged product text) pairs.

MultipleNegativesRankingLoss over in-batch negatives plus one mined hard negative per
pair: a product that reads like the tagged one (same brand, same category, or
lexically closest) but was not tagged on the post. Evaluated on a held-out fold every
``eval_steps``; the best checkpoint is kept and training stops early when it stalls.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from consumer.catalog import Catalog
from consumer.history import History
from consumer.scorers.bm25 import Bm25
from consumer.text import lexical_tokens, post_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FineTuneOptions:
    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 5e-5
    max_seq_length: int = 64
    eval_steps: int = 50
    patience: int = 3
    seed: int = 42
    hard_negatives: bool = True
    max_minutes: float = 18.0
    resume: bool = False
    eval_corpus: int = 3000  # products the early-stopping evaluator ranks (all tagged + random)


@dataclass(frozen=True)
class Pair:
    anchor: str  # the post's text
    positive: str  # the tagged product's text
    row: int  # the tagged product's catalog row
    tagged: frozenset[int]  # every row the post tagged: never a negative for it


def training_pairs(history: History, catalog: Catalog, segment: Any) -> list[Pair]:
    """One pair per tag whose product is in the catalog."""
    pairs: list[Pair] = []
    for item in history:
        text = post_text(item.post.caption, item.post.hashtags, item.post.label.interests, segment)
        rows = [
            r
            for r in (catalog.row_of(pid) for pid in item.tags)
            if r is not None and catalog.product(r) is not None
        ]
        pairs.extend(Pair(text, catalog.text(r), r, frozenset(rows)) for r in rows)
    return pairs


def mine_hard_negatives(pairs: Sequence[Pair], catalog: Catalog, seed: int) -> list[str]:
    """For each pair, a published product close to the positive that the post did not tag.

    Closeness: the same brand or category when the catalog has them, else BM25 between
    product texts. Picking among the top 10 (not always the first) avoids near-duplicates
    of the positive (same product in another colour) dominating as false negatives.
    """
    rng = np.random.default_rng(seed)
    published = catalog.published
    tokens = [lexical_tokens(catalog.text(r)) for r in range(catalog.n_rows)]
    index = Bm25.build(tokens, k1=0.9, b=0.4)
    cache: dict[int, np.ndarray] = {}
    by_group: dict[str, list[int]] = {}
    for row in range(catalog.n_rows):
        p = catalog.product(row)
        if p is not None and p.is_published:
            for key in (p.brand_id, p.cat_three or p.cat_two):
                if key:
                    by_group.setdefault(key, []).append(row)
    negatives = []
    for pair in pairs:
        row, tagged = pair.row, pair.tagged
        product = catalog.product(row)
        group = [
            r
            for key in (
                product.brand_id if product else None,
                (product.cat_three or product.cat_two) if product else None,
            )
            if key
            for r in by_group.get(key, [])
            if r not in tagged
        ]
        if group and rng.random() < 0.5:
            choice = int(rng.choice(group))
        else:
            if row not in cache:
                top = index.top([tokens[row]], 30, published)
                cache[row] = top.rows[0][top.rows[0] >= 0]
            options = [int(r) for r in cache[row] if int(r) not in tagged and int(r) != row][:10]
            choice = int(rng.choice(options)) if options else int(rng.integers(catalog.n_rows))
        negatives.append(catalog.text(choice))
    return negatives


def fine_tune(
    model: Any,
    train: History,
    tune: History,
    catalog: Catalog,
    segment: Any,
    out_dir: Path,
    options: FineTuneOptions,
) -> dict[str, Any]:
    """Train in place; returns what happened (steps, best score, minutes)."""
    import time

    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    from transformers import EarlyStoppingCallback, TrainerCallback

    model.max_seq_length = options.max_seq_length
    pairs = training_pairs(train, catalog, segment)
    columns = {"anchor": [p.anchor for p in pairs], "positive": [p.positive for p in pairs]}
    if options.hard_negatives:
        columns["negative"] = mine_hard_negatives(pairs, catalog, options.seed)
    dataset = Dataset.from_dict(columns).shuffle(seed=options.seed)

    # The evaluator ranks every product tagged in train or tune plus random others.
    rng = np.random.default_rng(options.seed)
    tune_rows = {r for item in tune for r in (catalog.row_of(p) for p in item.tags) if r is not None}
    train_rows = {p.row for p in pairs}
    corpus_rows = sorted(tune_rows | train_rows)
    others = np.setdiff1d(np.flatnonzero(catalog.published), corpus_rows)
    extra = max(0, options.eval_corpus - len(corpus_rows))
    corpus_rows += rng.choice(others, size=min(extra, len(others)), replace=False).tolist()
    corpus: dict[str, Any] = {str(r): catalog.text(r) for r in corpus_rows}
    queries: dict[str, Any] = {}
    relevant: dict[str, set[str]] = {}
    for item in tune:
        rows = {str(catalog.row_of(p)) for p in item.tags if catalog.row_of(p) is not None}
        if rows:
            queries[item.post.id] = post_text(
                item.post.caption, item.post.hashtags, item.post.label.interests, segment
            )
            relevant[item.post.id] = rows
    evaluator = InformationRetrievalEvaluator(
        queries, corpus, relevant, name="tune", batch_size=64, write_csv=False, show_progress_bar=False
    )
    steps_per_epoch = math.ceil(len(dataset) / options.batch_size)
    started = time.monotonic()

    class TimeBudget(TrainerCallback):  # type: ignore[misc]
        """Stops training when the wall-clock budget is spent; the best checkpoint stays."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if (time.monotonic() - started) / 60 > options.max_minutes:
                log.warning(
                    "fine-tuning time budget (%.0f min) spent at step %d",
                    options.max_minutes,
                    state.global_step,
                )
                control.should_training_stop = True
            return control

    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir),
        num_train_epochs=options.epochs,
        per_device_train_batch_size=options.batch_size,
        learning_rate=options.learning_rate,
        warmup_steps=0.1,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        eval_strategy="steps",
        eval_steps=options.eval_steps,
        save_strategy="steps",
        save_steps=options.eval_steps,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="eval_tune_cosine_ndcg@10",
        greater_is_better=True,
        logging_steps=options.eval_steps,
        report_to=[],
        seed=options.seed,
        dataloader_num_workers=0,
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        loss=MultipleNegativesRankingLoss(model),
        evaluator=evaluator,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=options.patience), TimeBudget()],
    )
    before = evaluator(model)["tune_cosine_ndcg@10"]
    log.info(
        "fine-tuning: %d pairs, %d steps/epoch, tune nDCG@10 before %.3f",
        len(dataset),
        steps_per_epoch,
        before,
    )
    resume = options.resume and any(p.name.startswith("checkpoint-") for p in out_dir.glob("*"))
    trainer.train(resume_from_checkpoint=True if resume else None)
    after = evaluator(model)["tune_cosine_ndcg@10"]
    return {
        "pairs": len(dataset),
        "steps": trainer.state.global_step,
        "steps_per_epoch": steps_per_epoch,
        "tune_ndcg@10_before": round(float(before), 4),
        "tune_ndcg@10_after": round(float(after), 4),
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "minutes": round((time.monotonic() - started) / 60, 1),
        "threads": torch.get_num_threads(),
    }
