"""The hashing encoder and the embedding cache (encodes misses only, persists by version)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from consumer.encoder import (
    EmbeddingCache,
    HashingEncoder,
    load_encoder,
    save_hashing_encoder,
    text_key,
)


class CountingEncoder(HashingEncoder):
    """A real encoder that records every text it is asked to encode."""

    def __init__(self, dim: int = 32, seed: int = 0) -> None:
        super().__init__(dim, seed)
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return super().encode(texts)

    @property
    def encoded(self) -> list[str]:
        return [t for call in self.calls for t in call]


def test_hashing_encoder_shape_norm_and_determinism(fake_encoder: HashingEncoder) -> None:
    texts = ["vitamin c glow serum", "chunky white sneakers", "", "✨🔥"]
    vectors = fake_encoder.encode(texts)
    assert vectors.shape == (4, 64) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(vectors, HashingEncoder(64).encode(texts))
    assert fake_encoder.encode([]).shape == (0, 64)
    assert fake_encoder.version == "hashing-64-0"


def test_hashing_encoder_shared_words_read_alike(fake_encoder: HashingEncoder) -> None:
    query, near, far = fake_encoder.encode(
        ["glow serum with vitamin c", "vitamin c glow serum", "leather kolhapuri chappals"])
    assert float(query @ near) > 0.5
    assert float(query @ near) > float(query @ far) + 0.3


def test_hashing_encoder_seed_changes_vectors_and_version() -> None:
    a, b = HashingEncoder(64, seed=0), HashingEncoder(64, seed=1)
    assert a.version != b.version
    assert not np.allclose(a.encode(["serum"]), b.encode(["serum"]))


def test_save_and_load_hashing_encoder(tmp_path: Path) -> None:
    encoder = HashingEncoder(48, seed=3)
    save_hashing_encoder(encoder, tmp_path / "enc")
    loaded = load_encoder(tmp_path / "enc")
    assert isinstance(loaded, HashingEncoder)
    assert (loaded.dim, loaded.seed, loaded.version) == (48, 3, encoder.version)
    np.testing.assert_array_equal(loaded.encode(["tote"]), encoder.encode(["tote"]))


def test_cache_encodes_only_misses_and_keeps_order() -> None:
    encoder = CountingEncoder()
    cache = EmbeddingCache(encoder)
    first = cache.encode(["a serum", "a tote", "a serum"])
    assert encoder.calls == [["a serum", "a tote"]]  # the repeat is encoded once
    assert cache.misses == 2 and len(cache) == 2
    np.testing.assert_array_equal(first[0], first[2])

    second = cache.encode(["a tote", "new kurta", "a serum"])
    assert encoder.calls[-1] == ["new kurta"]
    assert cache.misses == 3 and cache.hits == 2
    plain = HashingEncoder(32).encode(["a tote", "new kurta", "a serum"])
    np.testing.assert_allclose(second, plain)

    before = len(encoder.calls)
    assert cache.encode([]).shape == (0, 32)
    cache.encode(["a serum"])
    assert len(encoder.calls) == before


def test_cache_persists_and_reloads_without_encoding(tmp_path: Path) -> None:
    encoder = CountingEncoder()
    cache = EmbeddingCache(encoder, tmp_path)
    vectors = cache.encode(["one", "two", "three"])
    cache.save()
    assert cache.path is not None and cache.path.exists()
    assert sorted(f.name for f in tmp_path.iterdir()) == [cache.path.name]  # no temp leftovers

    again = CountingEncoder()
    reloaded = EmbeddingCache(again, tmp_path)
    assert len(reloaded) == 3
    np.testing.assert_array_equal(reloaded.encode(["three", "one", "two"]), vectors[[2, 0, 1]])
    assert again.calls == []
    reloaded.encode(["four"])
    assert again.encoded == ["four"]


def test_cache_add_serves_given_vectors_without_encoding(tmp_path: Path) -> None:
    encoder = CountingEncoder()
    cache = EmbeddingCache(encoder, tmp_path)
    given = np.eye(32, dtype=np.float32)[:2]
    cache.add(["made elsewhere", "also elsewhere"], given)
    cache.save()
    reloaded = EmbeddingCache(encoder, tmp_path)
    np.testing.assert_array_equal(reloaded.encode(["also elsewhere", "made elsewhere"]), given[[1, 0]])
    assert encoder.calls == []
    with pytest.raises(ValueError, match="2 texts"):
        cache.add(["a", "b"], np.zeros((2, 5), np.float32))


def test_cache_of_another_encoder_version_is_not_reused(tmp_path: Path) -> None:
    cache = EmbeddingCache(CountingEncoder(seed=0), tmp_path)
    cache.encode(["shared text"])
    cache.save()
    other = CountingEncoder(seed=1)
    fresh = EmbeddingCache(other, tmp_path)
    assert len(fresh) == 0
    fresh.encode(["shared text"])
    assert other.encoded == ["shared text"]


def test_cache_file_with_a_different_version_inside_is_ignored(tmp_path: Path) -> None:
    cache = EmbeddingCache(CountingEncoder(seed=0), tmp_path)
    cache.encode(["x"])
    cache.save()
    impostor = CountingEncoder(seed=5)
    assert cache.path is not None
    cache.path.rename(tmp_path / impostor.version)  # right name, wrong contents
    assert len(EmbeddingCache(impostor, tmp_path)) == 0


def test_cache_copy_of_saves_elsewhere(tmp_path: Path) -> None:
    cache = EmbeddingCache(CountingEncoder())
    vectors = cache.encode(["p", "q"])
    copy = EmbeddingCache.copy_of(cache, tmp_path / "model" / "cache")
    copy.save()
    encoder = CountingEncoder()
    loaded = EmbeddingCache(encoder, tmp_path / "model" / "cache")
    np.testing.assert_array_equal(loaded.encode(["q", "p"]), vectors[[1, 0]])
    assert encoder.calls == []


def test_text_key_is_content_based() -> None:
    assert text_key("serum") == text_key("serum") != text_key("Serum")
    assert 0 <= text_key("") < 2**64


def test_cache_reads_the_file_it_opened_while_another_process_saves(tmp_path: Path) -> None:
    """A second worker saving a merged cache must not shift the rows the first one reads."""
    first = EmbeddingCache(CountingEncoder(), tmp_path)
    vectors = first.encode(["m", "n"])
    first.save()
    reader = EmbeddingCache(CountingEncoder(), tmp_path)
    writer = EmbeddingCache(CountingEncoder(), tmp_path)
    writer.encode(["a", "b", "c"])  # sorts before and between the saved keys
    writer.save()
    np.testing.assert_array_equal(reader.encode(["n", "m"]), vectors[[1, 0]])
    assert len(EmbeddingCache(CountingEncoder(), tmp_path)) == 5


@pytest.mark.parametrize("dim", [8, 384])
def test_hashing_encoder_any_dimension(dim: int) -> None:
    assert HashingEncoder(dim).encode(["kurta set"]).shape == (1, dim)
