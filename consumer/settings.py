"""One typed settings object, read at the edge (env vars, a .env file or CLI flags) and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DeliveryMode = Literal["exactly-once", "at-least-once"]


class Topics(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEYBLEND_TOPIC_", frozen=True)

    pebbles: str = "pebbles.uploaded"
    suggestions: str = "pebbles.suggestions"
    dead_letters: str = "pebbles.dlq"
    products: str = "products"
    control: str = "keyblend.control"


class Settings(BaseSettings):
    """Everything the worker and the CLI need; env vars are prefixed ``KEYBLEND_``."""

    model_config = SettingsConfigDict(env_prefix="KEYBLEND_", env_file=".env", extra="ignore", frozen=True)

    brokers: str = "127.0.0.1:9092"
    group: str = "keyblend"
    topics: Topics = Field(default_factory=Topics)
    delivery: DeliveryMode = "exactly-once"

    model_dir: Path | None = None  # None: the base model exported to ONNX under models_root
    models_root: Path = Path("models")
    catalog_path: Path | None = None  # None: the demo catalog
    cache_dir: Path = Path(".cache/keyblend")

    top_k: int = Field(default=10, ge=1, le=200)
    batch_size: int = Field(default=64, ge=1, le=4096)
    # After a batch's first pebble, how long to wait for more. 0: a batch is whatever has
    # arrived (it still fills under load, while the previous batch is worked on), so an idle
    # worker answers at once; the benchmark compares it with a 20 ms wait.
    batch_timeout_ms: int = Field(default=0, ge=0)
    max_event_bytes: int = Field(default=64 * 1024, ge=1024)

    retries: int = Field(default=3, ge=0)
    retry_backoff_ms: int = Field(default=200, ge=0)
    max_backoff_ms: int = Field(default=10_000, ge=0)

    metrics_port: int = Field(default=9108, ge=0, le=65535)  # 0: no HTTP server
    threads: int = Field(default=1, ge=1)  # ONNX Runtime intra-op threads per worker process

    index: str = "auto"  # "exact", "hnsw" or "auto" (HNSW past index_threshold rows)
    index_threshold: int = Field(default=200_000, ge=1)
    # True: a pebble with brand_ids is answered only with those brands' products; False: the
    # brand scorer boosts them.
    brand_filter: bool = False
    client_config: dict[str, str | int | float | bool] = Field(default_factory=dict)
