"""Event schemas (pydantic v2). Field limits here are the worker's input limits.

Every event carries ``schema_version``; a consumer rejects versions it does not know
rather than guessing. ``python -m schemas.generate`` writes the JSON Schema files in
``schemas/json/`` for other teams.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION: Final = 1

ShortText = Annotated[str, Field(max_length=256)]
Id = Annotated[str, Field(min_length=1, max_length=128)]
Term = Annotated[str, Field(max_length=128)]

PUBLISHED_STATUSES = frozenset({"publish", "published", "active", "live"})


class _Event(BaseModel):
    # Unknown fields are ignored (producers may add fields), wrong types are not coerced
    # from arbitrary objects, and parsed events are immutable.
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    schema_version: Literal[1] = SCHEMA_VERSION


class Label(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    interests: list[ShortText] = Field(default_factory=list, max_length=64)
    age_groups: list[ShortText] = Field(default_factory=list, max_length=16)
    genders: list[ShortText] = Field(default_factory=list, max_length=8)


class PebbleUploaded(_Event):
    """A creator uploaded a video post ("pebble"). Only ``id`` and some text are required."""

    id: Id
    type: ShortText | None = None
    media_type: ShortText | None = None
    influencer_ids: list[Id] = Field(default_factory=list, max_length=32)
    brand_ids: list[Id] = Field(default_factory=list, max_length=32)
    label: Label = Field(default_factory=Label)
    caption: str = Field(default="", max_length=8192)
    hashtags: list[Term] = Field(default_factory=list, max_length=64)
    catalog_ids: list[Id] = Field(default_factory=list, max_length=256)
    created_at: datetime | None = None

    @field_validator("hashtags", mode="before")
    @classmethod
    def _split_hashtag_string(cls, value: object) -> object:
        # The platform's exports store hashtags as one space-separated string.
        if isinstance(value, str):
            return [h.lstrip("#") for h in value.split() if h.strip("#")]
        return value

    @model_validator(mode="after")
    def _has_text(self) -> PebbleUploaded:
        if not (self.caption.strip() or self.hashtags or self.label.interests):
            raise ValueError("caption, hashtags and label.interests are all empty: nothing to match")
        return self


class ProductRecord(BaseModel):
    """A catalog product as the platform describes it."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    id: Id
    name: Annotated[str, Field(min_length=1, max_length=512)]
    brand_id: Id | None = None
    brand_name: ShortText | None = None
    keywords: list[Term] = Field(default_factory=list, max_length=512)
    retail_price: float | None = Field(default=None, ge=0)
    base_price: float | None = Field(default=None, ge=0)
    cat_one: ShortText | None = None
    cat_two: ShortText | None = None
    cat_three: ShortText | None = None
    status: ShortText = "published"

    @property
    def is_published(self) -> bool:
        return self.status.lower() in PUBLISHED_STATUSES


class ProductChanged(_Event):
    """A catalog upsert (``product`` set) or delete, keyed by product id on a compacted topic."""

    op: Literal["upsert", "delete"]
    product_id: Id
    product: ProductRecord | None = None
    changed_at: datetime | None = None

    @model_validator(mode="after")
    def _product_matches_op(self) -> ProductChanged:
        if self.op == "upsert" and self.product is None:
            raise ValueError("op 'upsert' needs a product")
        if self.product is not None and self.product.id != self.product_id:
            raise ValueError("product.id differs from product_id")
        return self


ReasonKind = Literal["words", "brand", "similar_posts", "semantic", "co_tagged", "popular"]


class Reason(BaseModel):
    """Why a product was suggested, in words a person can check."""

    model_config = ConfigDict(frozen=True)

    kind: ReasonKind
    text: str
    post_terms: list[str] = Field(default_factory=list)
    product_terms: list[str] = Field(default_factory=list)


class SuggestedProduct(BaseModel):
    model_config = ConfigDict(frozen=True)

    product_id: str
    name: str
    rank: int = Field(ge=1)
    score: float
    reasons: list[Reason] = Field(default_factory=list)


class Timings(BaseModel):
    model_config = ConfigDict(frozen=True)

    encode_ms: float = Field(ge=0)
    match_ms: float = Field(ge=0)
    total_ms: float = Field(ge=0)


class ProductSuggestions(_Event):
    """KeyBlend's answer for one pebble, best first. Keyed by pebble id on the topic."""

    pebble_id: Id
    idempotency_key: str  # pebble id + model version: the same answer twice has one key
    suggestions: list[SuggestedProduct]
    model_version: str
    catalog_version: str
    timings: Timings
    produced_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @staticmethod
    def key_for(pebble_id: str, model_version: str) -> str:
        return f"{pebble_id}:{model_version}"


class RejectedEvent(_Event):
    """A dead letter: the original bytes, where they came from, and why they were refused."""

    source_topic: str
    partition: int
    offset: int
    key: str | None = None  # the original key, decoded with errors replaced
    original_b64: str  # the exact bytes, base64: they may not be valid UTF-8
    reason: str
    field: str | None = None  # the field at fault, dotted ("label.interests.3")
    error_type: Literal[
        "too_large", "not_utf8", "not_json", "invalid", "unknown_version", "processing_failed"
    ]
    attempts: int = 1
    rejected_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    worker: str | None = None
