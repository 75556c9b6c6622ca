"""A trained model folder served by the worker ranks exactly as ``evaluate`` ranks it."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.catalog import Catalog
from consumer.demo import write_demo_files
from consumer.encoder import HashingEncoder, save_hashing_encoder
from consumer.local_broker import LocalBroker
from consumer.matcher import Engine
from consumer.worker import load_engine
from model_export.pipeline import load_dataset
from model_export.train import TrainOptions, train
from tests.broker_fixtures import consume_all
from tests.worker_helpers import produce_events, running, suggestions_of, worker_settings

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def trained_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    data = tmp_path_factory.mktemp("demo-data")
    write_demo_files(data)
    encoder_dir = data / "encoder"
    save_hashing_encoder(HashingEncoder(dim=64), encoder_dir)
    model = tmp_path_factory.mktemp("models") / "demo-served"
    options = TrainOptions(fine_tune=False, encoder_dir=encoder_dir, validation=0.3, ablation=False)
    train(data / "products.csv", data / "posts.csv", data / "tags.csv", model, options)
    return model, data / "products.csv", data / "posts.csv", data / "tags.csv"


def test_worker_publishes_the_top_10_evaluate_ranks(
    broker: LocalBroker, topics: dict[str, str], trained_demo: tuple[Path, Path, Path, Path]
) -> None:
    model, products, posts, tags = trained_demo
    dataset = load_dataset(products, posts, tags, seed=42, validation=0.3)
    held_out = [item.post for item in dataset.validation]
    catalog, _ = Catalog.from_file(products)
    expected = Engine.load(model, catalog).rank_ids(held_out, 10)  # evaluate's path, in one batch

    settings = worker_settings(broker, topics, model_dir=model, catalog_path=products, top_k=10, batch_size=3)
    engine = load_engine(settings)
    assert engine.version == "demo-served"
    with running(settings, engine) as run:
        produce_events(
            broker.bootstrap, settings.topics.pebbles, [p.model_dump(mode="json") for p in held_out]
        )
        records = consume_all(
            broker.bootstrap, settings.topics.suggestions, len(held_out), timeout=30, settle=0.5
        )
        run.stop()
    answers = {
        a.pebble_id: [s.product_id for s in a.suggestions] for a in suggestions_of([r.value for r in records])
    }
    assert len(answers) == len(held_out)
    for post, ranking in zip(held_out, expected, strict=True):
        # Products the post already tags are excluded in both paths.
        assert answers[post.id] == ranking, post.id
