"""Training end to end on the demo data: split determinism, model folder, reload, ranking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumer.catalog import Catalog
from consumer.demo import write_demo_files
from consumer.encoder import HashingEncoder, save_hashing_encoder
from consumer.history import History
from consumer.matcher import Engine
from model_export.pipeline import load_dataset
from model_export.train import TrainOptions, train


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("demo")
    write_demo_files(out)
    encoder_dir = out / "hashing-encoder"
    save_hashing_encoder(HashingEncoder(dim=64), encoder_dir)
    return {
        "products": out / "products.jsonl",
        "posts": out / "posts.csv",
        "tags": out / "tags.csv",
        "encoder": encoder_dir,
    }


@pytest.fixture(scope="module")
def trained(demo_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "demo-model"
    options = TrainOptions(fine_tune=False, encoder_dir=demo_files["encoder"], validation=0.25, tune=0.3)
    return train(demo_files["products"], demo_files["posts"], demo_files["tags"], out, options)


def ids(history: History) -> list[str]:
    return [item.post.id for item in history]


def test_split_is_deterministic_and_disjoint(demo_files: dict[str, Path]) -> None:
    a = load_dataset(demo_files["products"], demo_files["posts"], demo_files["tags"], seed=7, validation=0.25)
    b = load_dataset(demo_files["products"], demo_files["posts"], demo_files["tags"], seed=7, validation=0.25)
    c = load_dataset(demo_files["products"], demo_files["posts"], demo_files["tags"], seed=8, validation=0.25)
    assert ids(a.validation) == ids(b.validation)
    assert ids(a.validation) != ids(c.validation)
    assert not set(ids(a.train)) & set(ids(a.validation))
    assert len(a.train) + len(a.validation) == len(
        History.from_files(demo_files["posts"], demo_files["tags"])[0]
    )


def test_train_writes_a_complete_model_folder(trained: Path) -> None:
    manifest = json.loads((trained / "manifest.json").read_text())
    assert manifest["trained"] is True
    assert set(manifest["data"]["fingerprints"]) == {"products.jsonl", "posts.csv", "tags.csv"}
    assert manifest["split"]["seed"] == 42
    assert "numpy" in manifest["versions"]
    weights = manifest["blend"]["weights"]
    assert "profile_bm25.relative" in weights and weights != {}
    assert 0 <= manifest["validation_metrics"]["recall@10"] <= 1
    assert "engine's signals" in manifest["ablation"] and "without brand" in manifest["ablation"]
    assert "with knn_dense" in manifest["ablation"] and "only cotag" in manifest["ablation"]
    for name in ("engine.json", "history.jsonl", "encoder/encoder.json"):
        assert (trained / name).exists(), name


def test_trained_model_reloads_and_ranks_like_evaluation(trained: Path, demo_files: dict[str, Path]) -> None:
    catalog, _ = Catalog.from_file(demo_files["products"])
    engine = Engine.load(trained, catalog)
    dataset = load_dataset(demo_files["products"], demo_files["posts"], demo_files["tags"], 42, 0.25)
    posts = [item.post for item in dataset.validation]
    batch_ranking = engine.rank_ids(posts, 10)
    # One at a time (as a lightly loaded worker would) gives the same top 10.
    assert [engine.rank_ids([p], 10)[0] for p in posts] == batch_ranking
    suggestions = engine.suggest_batch(posts, k=10)
    assert [[r.product_id for r in s.recommendations] for s in suggestions] == batch_ranking
    assert engine.version == "demo-model"
    # Validation posts are not in the model's memory.
    assert not {i.post.id for i in engine.history} & {p.id for p in posts}


@pytest.mark.slow
def test_fine_tune_on_demo_data_exports_a_matching_onnx_encoder(
    demo_files: dict[str, Path], tmp_path: Path
) -> None:
    """The real path: fine-tune MiniLM a few steps, export to ONNX, parity-check, blend, save."""
    options = TrainOptions(epochs=1, batch_size=8, validation=0.25, tune=0.3, max_minutes=3, ablation=False)
    model = train(demo_files["products"], demo_files["posts"], demo_files["tags"], tmp_path / "ft", options)
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["fine_tune"]["steps"] >= 1
    assert manifest["parity"]["top10_overlap"] >= 0.99
    assert manifest["parity"]["min_cosine"] > 0.999
    config = json.loads((model / "encoder" / "encoder.json").read_text())
    assert config["kind"] == "onnx" and (model / "encoder" / "model.onnx").exists()
    catalog, _ = Catalog.from_file(demo_files["products"])
    engine = Engine.load(model, catalog)
    assert engine.encoder.version == config["version"]
    assert engine.suggest("glow serum for summer", k=3)
