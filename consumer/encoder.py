"""Text → unit vectors. The worker runs an ONNX export; tests use a deterministic fake.

``OnnxEncoder`` needs only onnxruntime and tokenizers (no torch at serving time).
``EmbeddingCache`` keys vectors by the encoder version and a hash of the text, so a
restart or a catalog change encodes only new or changed products.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import mmap
import os
import shutil
import threading
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

ENCODER_CONFIG = "encoder.json"
# Padded tokens per ONNX run (see OnnxEncoder.encode). Measured with all-MiniLM-L6-v2, one
# intra-op thread, 512 HYPD post texts (median 29 tokens) / 512 product texts (median 60),
# texts per CPU-second: fixed batches of 64 gave 149-159 posts, 103-112 products; of 256,
# 67 posts (one long text padded the whole batch to 128 tokens); budgets of 256-768 padded
# tokens gave 215-235 posts, 124-141 products, 128 or 2048+ less (activations of a 512-token
# run fit the 2 MiB L2). int8 (dynamic, per-channel) is not used: top-10 overlap with fp32
# over the HYPD catalog was 0.76 (gate 0.99). Graph fusion beyond ORT_ENABLE_ALL (the
# transformers optimizer, with or without fused Attention) was no faster per CPU-second.
MAX_BATCH_TOKENS = 512


class Encoder(ABC):
    """Maps texts to L2-normalised float32 vectors of a fixed dimension."""

    dim: int
    version: str

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row of unit length."""

    def cache_key(self) -> str:
        """What cached vectors are keyed by: anything that changes the vectors belongs here."""
        return self.version


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: np.ndarray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return unit


class HashingEncoder(Encoder):
    """A deterministic stand-in for tests and dry runs: hashed word and bigram features.

    Texts that share words get similar vectors, so ranking tests mean something, and the
    same text always gives the same vector on every machine (crc32, not hash()).
    """

    def __init__(self, dim: int = 64, seed: int = 0) -> None:
        self.dim = dim
        self.seed = seed
        self.version = f"hashing-{dim}-{seed}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        from consumer.text import lexical_tokens

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            tokens = lexical_tokens(text)
            for feature in tokens + [a + " " + b for a, b in itertools.pairwise(tokens)]:
                h = zlib.crc32(f"{self.seed}:{feature}".encode())
                out[i, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
            if not tokens:
                out[i, zlib.crc32(text.encode()) % self.dim] = 1.0
        return _normalise(out)


class OnnxEncoder(Encoder):
    """A sentence-transformer exported to ONNX: tokenise, run, mean-pool, normalise."""

    def __init__(self, model_dir: Path, threads: int = 1, batch_size: int = 64,
                 max_tokens: int = MAX_BATCH_TOKENS) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        config = json.loads((model_dir / ENCODER_CONFIG).read_text(encoding="utf-8"))
        self.config: dict[str, Any] = config
        self.dim = int(config["dim"])
        self.version = str(config["version"])
        self.max_length = int(config.get("max_length", 128))
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.no_padding()
        options = ort.SessionOptions()
        # One worker process per core is the deployment unit: threads are set, not guessed.
        # On 2 cores (keyblend bench, trained HYPD engine, batch 64), 2 processes × 1 thread
        # ran Engine.suggest_batch at 161 pebbles/s, 1 process × 2 threads at 111, 1 × 1 at
        # 111 (on a loaded machine 39 / 20 / 22: a second intra-op thread spins while it
        # waits). A lone bulk job on an idle machine does gain from 2 threads: cold catalog
        # encoding ran at 269 products/s vs 169 with 1 thread.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Levels measured equal within noise (91-98 posts per CPU-second from DISABLE_ALL to
        # ENABLE_ALL; an offline-optimised model file no faster), so the default stays.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        model_file = model_dir / str(config.get("model_file", "model.onnx"))
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}

    def cache_key(self) -> str:
        return f"{self.version}-len{self.max_length}"  # truncation changes the vectors

    def _run(self, encodings: Sequence[Any]) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for i, enc in enumerate(encodings):
            ids[i, : len(enc.ids)] = enc.ids
            mask[i, : len(enc.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        (hidden,) = self.session.run(["last_hidden_state"], feeds)[:1]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return _normalise(pooled)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(list(texts))
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))
        # Shortest first, so each run pads little; a run ends at batch_size texts or when
        # its padded size (texts × longest) would pass max_tokens: one long text no longer
        # pads a whole batch to max_length.
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        start = 0
        while start < len(order):
            end = start + 1
            while (end < len(order) and end - start < self.batch_size
                   and (end - start + 1) * int(lengths[order[end]]) <= self.max_tokens):
                end += 1
            chunk = order[start:end]
            out[chunk] = self._run([encodings[i] for i in chunk])
            start = end
        return out


def load_encoder(model_dir: Path, threads: int = 1) -> Encoder:
    """An encoder folder by path: ONNX when it has one, else the hashing fake it names."""
    config = json.loads((model_dir / ENCODER_CONFIG).read_text(encoding="utf-8"))
    if config.get("kind") == "hashing":
        return HashingEncoder(dim=int(config["dim"]), seed=int(config.get("seed", 0)))
    return OnnxEncoder(model_dir, threads=threads)


def save_hashing_encoder(encoder: HashingEncoder, model_dir: Path) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    config = {"kind": "hashing", "dim": encoder.dim, "seed": encoder.seed, "version": encoder.version}
    (model_dir / ENCODER_CONFIG).write_text(json.dumps(config), encoding="utf-8")


def text_key(text: str) -> int:
    """A 64-bit content hash: a million cached texts collide with odds of about 3 in 10⁸."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


class EmbeddingCache:
    """Vectors by (encoder version, text hash), persisted as one folder per encoder version.

    Saved vectors are read through a memory map made for each call on the file this cache
    opened (not its path: another process may have saved a newer file since), so a million
    cached products cost 8 MB of sorted keys in RAM and no more than the rows a call reads.
    Vectors encoded since the last save are held in RAM until ``save``.
    """

    def __init__(self, encoder: Encoder, directory: Path | None = None) -> None:
        self.encoder = encoder
        self.path = None if directory is None else directory / safe_name(encoder.cache_key())
        self._keys = np.zeros(0, dtype=np.uint64)  # saved keys, ascending
        self._file: BinaryIO | None = None  # the saved vectors (.npy), rows in key order
        self._offset = 0
        self._ram: np.ndarray | None = None  # or the saved vectors in RAM (a copy of another cache)
        self._new: dict[int, np.ndarray] = {}
        self.hits = 0
        self.misses = 0
        if self.path is not None and (self.path / "meta.json").exists():
            self._load(self.path)

    def __len__(self) -> int:
        return len(self._keys) + len(self._new)

    def _read(self, positions: np.ndarray) -> np.ndarray:
        """Saved vectors at ``positions`` (ascending reads the file front to back)."""
        rows: np.ndarray
        if self._ram is not None:
            rows = self._ram[positions]
            return rows
        assert self._file is not None
        with mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            matrix = np.frombuffer(mapped, dtype="<f4", count=len(self._keys) * self.encoder.dim,
                                   offset=self._offset).reshape(len(self._keys), self.encoder.dim)
            rows = matrix[positions]  # a copy: the map closes below
            del matrix
        return rows.astype(np.float32, copy=False)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.encoder.dim), dtype=np.float32)
        if not texts:
            return out
        keys = np.fromiter((text_key(t) for t in texts), dtype=np.uint64, count=len(texts))
        found = np.zeros(len(texts), dtype=bool)
        if len(self._keys):
            at = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
            found = self._keys[at] == keys
            if found.any():
                hit = at[found]
                order = np.argsort(hit)  # read the map in file order
                rows = np.empty((len(hit), self.encoder.dim), dtype=np.float32)
                rows[order] = self._read(hit[order])
                out[found] = rows
        missing: dict[int, str] = {}
        for i in np.flatnonzero(~found).tolist():
            vector = self._new.get(int(keys[i]))
            if vector is None:
                missing.setdefault(int(keys[i]), texts[i])
            else:
                out[i] = vector
        self.hits += len(texts) - sum(1 for k in keys.tolist() if k in missing)
        if missing:
            self.misses += len(missing)
            fresh = self.encoder.encode(list(missing.values()))
            for key, vector in zip(missing, fresh, strict=True):
                self._new[key] = vector
            for i in np.flatnonzero(~found).tolist():
                if int(keys[i]) in missing:
                    out[i] = self._new[int(keys[i])]
        return out

    def add(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Vectors made elsewhere (a batch job, a benchmark's synthetic catalog) for ``texts``,
        held until ``save`` like freshly encoded ones."""
        if vectors.shape != (len(texts), self.encoder.dim):
            raise ValueError(f"{vectors.shape} vectors for {len(texts)} texts of dim {self.encoder.dim}")
        for text, vector in zip(texts, np.asarray(vectors, dtype=np.float32), strict=True):
            self._new[text_key(text)] = vector

    @classmethod
    def copy_of(cls, other: EmbeddingCache, directory: Path) -> EmbeddingCache:
        """The same vectors, to be saved elsewhere (e.g. into a model folder)."""
        copy = cls(other.encoder)
        copy.path = directory / safe_name(other.encoder.cache_key())
        copy._keys = other._keys
        copy._ram = other._read(np.arange(len(other._keys))) if len(other._keys) else None
        copy._new = dict(other._new)
        return copy

    def save(self) -> None:
        """Write saved and new vectors as one sorted folder; readers of the old one keep it."""
        if self.path is None or (not self._new and (self.path / "meta.json").exists()):
            return
        new_keys = np.fromiter(self._new.keys(), dtype=np.uint64, count=len(self._new))
        keys = np.concatenate([self._keys, new_keys])
        order = np.argsort(keys, kind="stable")
        vectors = np.empty((len(keys), self.encoder.dim), dtype=np.float32)
        if len(self._keys):
            vectors[: len(self._keys)] = self._read(np.arange(len(self._keys)))
        if len(new_keys):
            vectors[len(self._keys):] = np.stack(list(self._new.values()))
        # A private temp folder, then renames: two workers starting on one folder never write
        # the same files, and a crash leaves the old cache or the new one, never half of one.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        np.save(tmp / "keys.npy", keys[order])
        np.save(tmp / "vectors.npy", vectors[order])
        meta = {"version": self.encoder.cache_key(), "dim": self.encoder.dim, "count": len(keys)}
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        old = self.path.with_name(f"{tmp.name}.old")
        if self.path.exists():
            self.path.rename(old)
        tmp.rename(self.path)
        shutil.rmtree(old, ignore_errors=True)
        self._new = {}
        self._load(self.path)

    def _load(self, path: Path) -> None:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        if meta.get("version") != self.encoder.cache_key() or int(meta.get("dim", -1)) != self.encoder.dim:
            return
        keys = np.load(path / "keys.npy")
        handle = (path / "vectors.npy").open("rb")
        version = np.lib.format.read_magic(handle)
        shape, _, dtype = (np.lib.format.read_array_header_1_0(handle) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(handle))
        if shape != (len(keys), self.encoder.dim) or dtype != np.dtype("<f4"):
            handle.close()
            return
        if self._file is not None:
            self._file.close()
        self._keys, self._file, self._offset, self._ram = keys, handle, handle.tell(), None


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
