"""The engine: posts in, ranked products with reasons out, over an in-memory catalog.

``Engine`` owns the shared state (catalog vectors in an index, history vectors), asks
every configured scorer for candidates, fuses them, and explains the winners. Catalog
changes are applied in place and encoded incrementally (through the embedding cache).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from consumer.candidates import Candidates
from consumer.catalog import Catalog
from consumer.encoder import ENCODER_CONFIG, EmbeddingCache, Encoder, load_encoder, safe_name, text_key
from consumer.fusion import Fusion, Pool, make_fusion, pool
from consumer.history import History
from consumer.index import INDEXES, VectorIndex, make_index
from consumer.scorers import MatchState, QueryBatch, Scorer, make_scorer
from consumer.text import HashtagSegmenter, handles, lexical_tokens, post_text, words
from consumer.versions import versions
from schemas.events import PebbleUploaded, ProductChanged, Reason, SuggestedProduct

log = logging.getLogger(__name__)

# Brand and shared words are checkable at a glance; "similar posts" and the rest support them.
REASON_ORDER = ("brand", "words", "similar_posts", "semantic", "co_tagged", "popular")
INDEX_CHUNK = 65_536  # products encoded (or read from the cache) and indexed at a time
ROW_KEYS = "row_text_keys.npy"  # in an index snapshot: what each row's vector encodes


def name_words(names: Iterable[tuple[str, str | None]]) -> set[str]:
    """The words of (product name, brand name) pairs: what hashtag segmentation should know."""
    return {w for name, brand in names for w in (*words(name), *words(brand or ""))}


def catalog_segmenter(catalog: Catalog) -> HashtagSegmenter:
    """Hashtag segmentation that knows the catalog's product and brand names (training and
    serving must segment alike, so both build it here)."""
    return HashtagSegmenter(name_words(catalog.names()))


class ScorerSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str  # the registered scorer
    key: str | None = None  # distinguishes two uses of one scorer (defaults to name)
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.key or self.name


class EngineConfig(BaseModel):
    """How the engine ranks; saved as ``engine.json`` in a model folder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = "base"
    scorers: list[ScorerSpec] = Field(
        default_factory=lambda: [ScorerSpec(name="dense"), ScorerSpec(name="bm25")]
    )
    fusion: dict[str, Any] = Field(default_factory=lambda: {"name": "rrf", "k": 60.0})
    candidates: int = Field(default=100, ge=1)  # per scorer, before fusion
    index: str = "auto"
    index_threshold: int = 200_000  # rows past which "auto" picks HNSW
    brand_filter: bool = False  # True: a post with brand_ids gets only those brands' products


@dataclass(frozen=True)
class Recommendation:
    """One suggested product for a post, with the evidence for it."""

    product_id: str
    name: str
    rank: int
    score: float
    reasons: tuple[Reason, ...] = ()

    def to_event(self) -> SuggestedProduct:
        return SuggestedProduct(
            product_id=self.product_id,
            name=self.name,
            rank=self.rank,
            score=round(self.score, 6),
            reasons=list(self.reasons),
        )

    def __str__(self) -> str:
        why = "; ".join(r.text for r in self.reasons)
        return f"{self.rank}. {self.name} [{self.product_id}] {self.score:.3f}" + (f" — {why}" if why else "")


@dataclass(frozen=True)
class Suggestions:
    """The engine's answer for one post."""

    pebble_id: str
    recommendations: tuple[Recommendation, ...]
    encode_ms: float
    match_ms: float
    timings: dict[str, float] = field(default_factory=dict)


def _save_snapshot(index: VectorIndex, row_keys: np.ndarray, path: Path) -> None:
    """A private folder, then renames: a reader never sees half a snapshot (readers hold the
    index in memory, so replacing it under them is safe)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    old = path.with_name(f"{tmp.name}.old")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        index.save(tmp)
        np.save(tmp / ROW_KEYS, row_keys)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
    except OSError as exc:  # e.g. a read-only model volume: the snapshot is an optimisation
        log.info("index snapshot not saved: %s", exc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _as_pebble(post: PebbleUploaded | str, i: int) -> PebbleUploaded:
    return post if isinstance(post, PebbleUploaded) else PebbleUploaded(id=f"text-{i}", caption=post)


class Engine:
    """Ranks the catalog for posts. Build with ``Engine.build`` or ``Engine.load``."""

    def __init__(
        self,
        catalog: Catalog,
        encoder: Encoder,
        history: History | None = None,
        config: EngineConfig | None = None,
        cache: EmbeddingCache | None = None,
        index_dir: Path | None = None,
    ) -> None:
        """``index_dir``: where slow-to-build indexes keep their snapshot (default: beside
        the embedding cache; none without either)."""
        self.config = config or EngineConfig()
        self.index_dir = index_dir
        self.catalog = catalog
        self.encoder = encoder
        self.history = history or History()
        self.cache = cache if cache is not None else EmbeddingCache(encoder)
        self.segmenter = catalog_segmenter(catalog)
        self.index = self._open_index()
        catalog.take_changes()
        texts = [self.post_text(item.post) for item in self.history]
        self.state = MatchState(
            catalog=catalog,
            index=self.index,
            history=self.history,
            history_texts=texts,
            history_tokens=[lexical_tokens(t) for t in texts],
            history_handles=[frozenset(handles(i.post.hashtags, i.post.caption)) for i in self.history],
            history_vectors=self.cache.encode(texts) if texts else np.zeros((0, encoder.dim), np.float32),
            encode=self.cache.encode,
            segment=self.segmenter.segment,
        )
        self.state.map_history_rows()
        self._priors: np.ndarray | None = None
        self._priors_version = -1
        self.scorers: dict[str, Scorer] = {}
        for spec in self.config.scorers:
            if spec.label in self.scorers:
                raise ValueError(f"two scorers named {spec.label!r}: give one a key")
            scorer = make_scorer(spec.name, **spec.params)
            scorer.fit(self.state)
            self.scorers[spec.label] = scorer
        fusion_params = dict(self.config.fusion)
        self.fusion: Fusion = make_fusion(
            fusion_params.pop("name"),
            list(self.scorers),
            **{k: v for k, v in fusion_params.items() if k != "scorers"},
        )

    # -- building blocks -----------------------------------------------------------------
    @property
    def version(self) -> str:
        return self.config.version

    def _index_kind(self) -> str:
        kind = self.config.index
        if kind == "auto":
            kind = "hnsw" if self.catalog.n_rows >= self.config.index_threshold else "exact"
        return kind

    def _open_index(self) -> VectorIndex:
        """The catalog's vectors, indexed. Kinds that are slow to build (an HNSW graph of a
        million rows takes minutes) keep a snapshot beside the embedding cache: a restart
        loads it and applies only the rows whose text changed since, then saves it again."""
        kind = self._index_kind()
        index_type = INDEXES.get(kind)
        path = self._snapshot_path(kind) if index_type.snapshot else None
        keys = self._row_keys() if path is not None else np.zeros(0, np.uint64)
        index: VectorIndex | None = None
        changed = np.arange(self.catalog.n_rows)
        if path is not None and (path / ROW_KEYS).exists():
            try:
                index = index_type.load(path)
                saved = np.load(path / ROW_KEYS)
                padded = np.pad(saved, (0, max(0, len(keys) - len(saved))))[: len(keys)]
                changed = np.flatnonzero(keys != padded)
                gone = np.arange(len(keys), len(saved))  # rows the snapshot has, the catalog not
                if len(gone):
                    index.remove(gone)
                log.info("index: %s snapshot, %d of %d rows changed since", kind, len(changed), len(keys))
            except (OSError, ValueError, RuntimeError) as exc:  # damaged: rebuild
                log.warning("index snapshot %s unusable (%s); rebuilding", path, exc)
                index, changed = None, np.arange(self.catalog.n_rows)
        if index is None:
            index = make_index(kind, self.encoder.dim)
            index.reserve(self.catalog.n_rows)
        self.index = index
        self._index_rows(changed)
        if path is not None and (len(changed) or not (path / ROW_KEYS).exists()):
            _save_snapshot(index, keys, path)
        return index

    def _snapshot_path(self, kind: str) -> Path | None:
        """``<cache key of the encoder>.index-<kind>``: one per encoder and index kind."""
        name = f"{safe_name(self.encoder.cache_key())}.index-{kind}"
        if self.index_dir is not None:
            return self.index_dir / name
        return None if self.cache.path is None else self.cache.path.parent / name

    def _row_keys(self) -> np.ndarray:
        """Per catalog row, the hash of the text its vector encodes (0: no live product)."""
        return np.fromiter((text_key(self.catalog.text(r)) if self.catalog.is_live(r) else 0
                            for r in range(self.catalog.n_rows)), dtype=np.uint64, count=self.catalog.n_rows)

    def _index_rows(self, rows: np.ndarray) -> None:
        live = [int(r) for r in rows if self.catalog.is_live(int(r))]
        gone = [int(r) for r in rows if not self.catalog.is_live(int(r))]
        # In chunks: a million products never sit in RAM twice (as one float32 matrix and in
        # the index).
        for start in range(0, len(live), INDEX_CHUNK):
            chunk = live[start : start + INDEX_CHUNK]
            vectors = self.cache.encode([self.catalog.text(r) for r in chunk])
            self.index.upsert(np.array(chunk, dtype=np.int64), vectors)
        if gone:
            self.index.remove(np.array(gone, dtype=np.int64))

    def post_text(self, pebble: PebbleUploaded) -> str:
        return post_text(pebble.caption, pebble.hashtags, pebble.label.interests, self.segmenter.segment)

    def prepare(self, pebbles: Sequence[PebbleUploaded]) -> QueryBatch:
        texts = [self.post_text(p) for p in pebbles]
        return QueryBatch(
            pebbles=list(pebbles),
            texts=texts,
            tokens=[lexical_tokens(t) for t in texts],
            handles=[frozenset(handles(p.hashtags, p.caption)) for p in pebbles],
            vectors=self.encoder.encode(texts),
        )

    # -- catalog changes -----------------------------------------------------------------
    def apply(self, changes: Sequence[ProductChanged]) -> None:
        """Upserts and deletes, visible to the next ``suggest`` call."""
        for change in changes:
            if change.op == "delete":
                self.catalog.delete(change.product_id)
            elif change.product is not None:
                self.catalog.upsert(change.product)
        self.sync()

    def sync(self) -> None:
        """Encode and index rows changed since the last sync; refresh the scorers."""
        changed = self.catalog.take_changes()
        if not changed:
            return
        self._index_rows(np.array(sorted(changed), dtype=np.int64))
        products = [p for r in changed if (p := self.catalog.product(r)) is not None]
        self.segmenter.add(name_words((p.name, p.brand_name) for p in products))
        self.state.sync_products(changed)
        self.state.map_history_rows()
        for scorer in self.scorers.values():
            scorer.refresh(self.state, changed)

    # -- ranking -------------------------------------------------------------------------
    def allowed(self) -> np.ndarray:
        return self.catalog.published.copy()

    def priors(self) -> np.ndarray:
        """Per catalog row: log(1 + times tagged), tagged before (0/1). Cached per catalog version."""
        if self._priors_version != self.catalog.version or self._priors is None:
            counts = self.state.product_frequency()
            self._priors = np.stack([np.log1p(counts), (counts > 0).astype(np.float32)], axis=1)
            self._priors_version = self.catalog.version
        return self._priors

    def rank(self, batch: QueryBatch, k: int) -> tuple[Candidates, dict[str, Candidates]]:
        """Fused top-k per post, without products the post already tags, plus each scorer's run."""
        allowed, runs = self._runs(batch)
        fused = self.fusion.fuse(runs, self.config.candidates, self.priors())
        out = Candidates.empty(len(batch), k)
        for q, pebble in enumerate(batch.pebbles):
            excluded = {self.catalog.row_of(pid) for pid in pebble.catalog_ids}
            brands = set(pebble.brand_ids) if self.config.brand_filter else set()
            kept = 0
            for row, score in fused.query(q):
                if row in excluded or not allowed[row]:
                    continue
                if brands and self.catalog.brand_id(row) not in brands:
                    continue
                out.rows[q, kept], out.scores[q, kept] = row, score
                kept += 1
                if kept == k:
                    break
        return out, runs

    def candidate_pools(self, posts: Sequence[PebbleUploaded]) -> list[Pool]:
        """Every scorer's candidates per post as feature tables: what fusion weights learn from."""
        self.sync()  # first: a new product's name may change how a hashtag is segmented
        _, runs = self._runs(self.prepare(posts))
        return [pool(runs, q, self.priors()) for q in range(len(posts))]

    def _runs(self, batch: QueryBatch) -> tuple[np.ndarray, dict[str, Candidates]]:
        """After syncing catalog changes: the rows that may be suggested, and every scorer's
        candidates for the batch."""
        self.sync()
        allowed = self.allowed()
        return allowed, {name: s.score(batch, self.config.candidates, allowed)
                         for name, s in self.scorers.items()}

    def explain(self, batch: QueryBatch, found: dict[str, dict[int, float]], q: int,
                row: int) -> tuple[Reason, ...]:
        """One reason per kind (the first scorer's of that kind), most telling kinds first.

        ``found``: per scorer, the rows it put forward for post ``q`` with their scores."""
        by_kind: dict[str, Reason] = {}
        for name, scores in found.items():
            scorer = self.scorers[name]
            if scorer.reason_kind in by_kind or row not in scores:
                continue
            reason = scorer.explain(batch, q, row, scores[row])
            if reason is not None:
                by_kind[reason.kind] = reason
        return tuple(by_kind[k] for k in REASON_ORDER if k in by_kind)

    def suggest_batch(self, posts: Sequence[PebbleUploaded | str], k: int = 10) -> list[Suggestions]:
        pebbles = [_as_pebble(p, i) for i, p in enumerate(posts)]
        if not pebbles:
            return []
        start = time.perf_counter()
        batch = self.prepare(pebbles)
        encoded = time.perf_counter()
        ranked, runs = self.rank(batch, k)
        out = []
        for q, pebble in enumerate(pebbles):
            found = {name: dict(run.query(q)) for name, run in runs.items()}
            recs = []
            for rank, (row, score) in enumerate(ranked.query(q), start=1):
                product = self.catalog.product(row)
                assert product is not None  # ranked rows are published, hence live
                recs.append(
                    Recommendation(
                        product.id, product.name, rank, float(score), self.explain(batch, found, q, row)
                    )
                )
            out.append((pebble.id, tuple(recs)))
        done = time.perf_counter()
        share = 1000.0 / len(pebbles)
        return [
            Suggestions(pid, recs, (encoded - start) * share, (done - encoded) * share) for pid, recs in out
        ]

    def rank_ids(self, posts: Sequence[PebbleUploaded], k: int) -> list[list[str]]:
        """Product ids best first, without explanations: the evaluation's fast path."""
        if not posts:
            return []
        ranked, _ = self.rank(self.prepare(posts), k)
        return [[str(self.catalog.product_id(r)) for r, _ in ranked.query(q)] for q in range(len(posts))]

    def suggest(self, post: PebbleUploaded | str, k: int = 10) -> list[Recommendation]:
        """Best products for one post (an event or plain text), best first."""
        return list(self.suggest_batch([post], k)[0].recommendations)

    # -- construction and persistence ------------------------------------------------------
    @classmethod
    def build(
        cls,
        catalog: Catalog,
        encoder: Encoder | None = None,
        history: History | None = None,
        config: EngineConfig | None = None,
        cache_dir: Path | None = None,
    ) -> Engine:
        if encoder is None:
            from consumer.models import ensure_base_model

            encoder = load_encoder(ensure_base_model(Path("models")) / "encoder")
        cache = EmbeddingCache(encoder, cache_dir)
        engine = cls(catalog, encoder, history, config, cache)
        cache.save()
        return engine

    def save(
        self, path: Path, manifest: dict[str, Any] | None = None, encoder_dir: Path | None = None
    ) -> None:
        """A model folder the worker loads by path: config, encoder, history, vector cache."""
        path.mkdir(parents=True, exist_ok=True)
        config = self.config.model_copy(update={"fusion": self.fusion.config()})
        (path / "engine.json").write_text(config.model_dump_json(indent=2), encoding="utf-8")
        self.history.save(path / "history.jsonl")
        if encoder_dir is not None and encoder_dir.resolve() != (path / "encoder").resolve():
            shutil.copytree(encoder_dir, path / "encoder", dirs_exist_ok=True)
        elif not (path / "encoder" / ENCODER_CONFIG).exists():
            from consumer.encoder import HashingEncoder, save_hashing_encoder

            if not isinstance(self.encoder, HashingEncoder):
                raise ValueError("an ONNX encoder is saved by copying its folder: pass encoder_dir")
            save_hashing_encoder(self.encoder, path / "encoder")
        EmbeddingCache.copy_of(self.cache, path / "cache").save()
        info = {
            "kind": "keyblend-model",
            "version": self.version,
            "encoder": self.encoder.version,
            "created_at": datetime.now(UTC).isoformat(),
            "catalog_fingerprint": self.catalog.fingerprint(),
            "history_posts": len(self.history),
            "versions": versions(),
            **(manifest or {}),
        }
        (path / "manifest.json").write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")

    @classmethod
    def load(
        cls,
        path: Path,
        catalog: Catalog,
        threads: int = 1,
        cache_dir: Path | None = None,
        overrides: dict[str, Any] | None = None,
        index_dir: Path | None = None,
    ) -> Engine:
        """Load a model folder against a catalog (from a file, a snapshot or the topic).

        ``overrides`` replaces fields of the saved config that belong to the deployment,
        not the model (e.g. ``index``, ``index_threshold``, ``brand_filter``); ``index_dir``
        is a writable place for index snapshots when the model folder is read-only."""
        config = EngineConfig.model_validate_json((path / "engine.json").read_text(encoding="utf-8"))
        if overrides:
            config = config.model_copy(update=overrides)
        encoder = load_encoder(path / "encoder", threads=threads)
        cache = EmbeddingCache(encoder, cache_dir or path / "cache")
        history_path = path / "history.jsonl"
        history = History.load(history_path) if history_path.exists() else History()
        return cls(catalog, encoder, history, config, cache, index_dir)
