"""Tagged history: past posts and the products creators tagged on them.

The matcher's memory signals (similar past posts, product profiles, co-tagging,
popularity) are all built from a ``History``; training splits one into folds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from consumer.records import ReadReport, RecordError, field_error, parse_list, read_records, validation_error
from consumer.versions import versions
from schemas.events import PebbleUploaded


def pebble_from_record(record: dict[str, Any]) -> PebbleUploaded:
    """A post from a platform export row (HYPD CSV: id, interests, hashtags, caption)."""
    data = dict(record)
    if "id" not in data and "_id" in data:
        data["id"] = data.pop("_id")
    interests = data.pop("interests", None)
    if interests is not None:
        label = dict(data.get("label") or {})
        items = interests if isinstance(interests, list) else [interests]
        label["interests"] = [str(i).strip() for i in items if str(i).strip()]
        data["label"] = label
    return PebbleUploaded.model_validate(data)


def read_posts(path: Path, max_errors: int = 100) -> tuple[list[PebbleUploaded], ReadReport]:
    posts: list[PebbleUploaded] = []
    errors: list[RecordError] = []
    rejected = 0
    for line, record in read_records(path):
        error: RecordError | None = record if isinstance(record, RecordError) else None
        if error is None and isinstance(record, dict):
            try:
                posts.append(pebble_from_record(record))
            except (ValidationError, ValueError) as exc:
                error = validation_error(path, line, exc)
        if error is not None:
            rejected += 1
            if len(errors) < max_errors:
                errors.append(error)
    return posts, ReadReport(str(path), len(posts), rejected, tuple(errors))


def read_tags(path: Path, max_errors: int = 100) -> tuple[dict[str, list[str]], ReadReport]:
    """post id → tagged product ids (HYPD: content_id, product_ids list literal)."""
    tags: dict[str, list[str]] = {}
    errors: list[RecordError] = []
    rejected = 0
    for line, record in read_records(path):
        error: RecordError | None = record if isinstance(record, RecordError) else None
        if error is None and isinstance(record, dict):
            post_id = str(record.get("content_id") or record.get("post_id") or record.get("id") or "").strip()
            try:
                products = [str(p).strip() for p in parse_list(record.get("product_ids"))]
            except ValueError as exc:
                error = field_error(path, line, "product_ids", exc)
            else:
                if not post_id:
                    error = field_error(path, line, "content_id", ValueError("missing"))
                elif not products:
                    error = field_error(path, line, "product_ids", ValueError("no products"))
                else:
                    tags.setdefault(post_id, []).extend(p for p in products if p not in tags.get(post_id, []))
        if error is not None:
            rejected += 1
            if len(errors) < max_errors:
                errors.append(error)
    return tags, ReadReport(str(path), len(tags), rejected, tuple(errors))


@dataclass(frozen=True)
class TaggedPost:
    post: PebbleUploaded
    tags: tuple[str, ...]


class History:
    """Labelled posts in a fixed order (the row order of every memory matrix)."""

    def __init__(self, items: Iterable[TaggedPost] = ()) -> None:
        self.items: list[TaggedPost] = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[TaggedPost]:
        return iter(self.items)

    def __getitem__(self, i: int) -> TaggedPost:
        return self.items[i]

    @property
    def posts(self) -> list[PebbleUploaded]:
        return [item.post for item in self.items]

    @classmethod
    def join(cls, posts: Sequence[PebbleUploaded], tags: dict[str, list[str]]) -> History:
        """Labelled posts only. An id used by several posts is ambiguous, so it is dropped."""
        counts: dict[str, int] = {}
        for post in posts:
            counts[post.id] = counts.get(post.id, 0) + 1
        return cls(
            TaggedPost(post, tuple(tags[post.id]))
            for post in posts
            if post.id in tags and counts[post.id] == 1
        )

    @classmethod
    def from_files(cls, posts_path: Path, tags_path: Path) -> tuple[History, list[ReadReport]]:
        posts, post_report = read_posts(posts_path)
        tags, tag_report = read_tags(tags_path)
        return cls.join(posts, tags), [post_report, tag_report]

    def split(self, fraction: float, seed: int) -> tuple[History, History]:
        """A seeded split into (rest, held-out ``fraction``); the same seed gives the same split."""
        order = np.random.default_rng(seed).permutation(len(self.items))
        n_held = round(len(self.items) * fraction)
        held = sorted(order[:n_held].tolist())
        rest = sorted(order[n_held:].tolist())
        return History(self.items[i] for i in rest), History(self.items[i] for i in held)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:
            for item in self.items:
                handle.write(
                    json.dumps({"post": item.post.model_dump(mode="json"), "tags": item.tags}) + "\n"
                )

    @classmethod
    def load(cls, path: Path) -> History:
        with path.open(encoding="utf-8") as handle:
            return cls(
                TaggedPost(PebbleUploaded.model_validate(d["post"]), tuple(d["tags"]))
                for d in map(json.loads, handle)
            )


def history_manifest(history: History) -> dict[str, Any]:
    return {"posts": len(history), "tags": sum(len(i.tags) for i in history), "versions": versions()}
