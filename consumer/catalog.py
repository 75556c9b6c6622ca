"""The catalog in memory: products by stable row, kept current by upserts and deletes.

Rows never move: a delete leaves a tombstone and an upsert of a known id rewrites its
row, so every matrix keyed by row (embeddings, indexes, lexical stats) stays aligned.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from consumer.records import (
    ReadReport,
    RecordError,
    field_error,
    parse_list,
    read_records,
    validation_error,
)
from consumer.text import product_text
from consumer.versions import versions
from schemas.events import ProductRecord

Product = ProductRecord

# Column names seen in platform exports, mapped to ProductRecord's.
_ALIASES = {"_id": "id", "product_id": "id", "brand": "brand_id", "title": "name"}


def product_from_record(record: dict[str, Any]) -> Product:
    """Build a product from a reader record; raises ValueError/ValidationError naming the field."""
    data = {_ALIASES.get(k, k): v for k, v in record.items() if k is not None}
    if "id" not in data and "_id" in record:
        data["id"] = record["_id"]
    for name in ("keywords",):
        if name in data:
            try:
                data[name] = [str(k) for k in parse_list(data[name])]
            except ValueError as exc:
                raise _FieldError(name, exc) from exc
    for name in ("retail_price", "base_price"):
        value = data.get(name)
        if isinstance(value, dict):  # {"value": 999, "currency": "INR"} in the platform's DB
            data[name] = value.get("value")
        if data.get(name) == "":
            data[name] = None
    for name in ("brand_id", "cat_one", "cat_two", "cat_three", "brand_name"):
        if data.get(name) == "":
            data[name] = None
    if "status" in data and isinstance(data["status"], bool):
        data["status"] = "published" if data["status"] else "unpublished"
    if data.get("status") in (None, ""):
        data.pop("status", None)
    return Product.model_validate(data)


class _FieldError(ValueError):
    def __init__(self, name: str, exc: Exception) -> None:
        super().__init__(str(exc))
        self.field = name


def read_products(path: Path, max_errors: int = 100) -> tuple[list[Product], ReadReport]:
    """Every good product of a file, and a report naming file, line and field of each bad one."""
    products: list[Product] = []
    errors: list[RecordError] = []
    rejected = 0
    for line, record in read_records(path):
        if isinstance(record, RecordError):
            error: RecordError | None = record
        else:
            try:
                products.append(product_from_record(record))
                error = None
            except _FieldError as exc:
                error = field_error(path, line, exc.field, exc)
            except (ValidationError, ValueError, TypeError) as exc:
                error = validation_error(
                    path, line, exc if not isinstance(exc, TypeError) else ValueError(str(exc))
                )
        if error is not None:
            rejected += 1
            if len(errors) < max_errors:
                errors.append(error)
    return products, ReadReport(str(path), len(products), rejected, tuple(errors))


class Catalog:
    """Products by stable row; ``version`` counts changes so derived state knows when to refresh."""

    def __init__(self, products: Iterable[Product] = ()) -> None:
        self._rows: list[Product | None] = []
        self._row_of: dict[str, int] = {}
        self._published = np.zeros(0, dtype=bool)
        self._texts: list[str] = []
        self.version = 0
        self.changed_rows: set[int] = set()  # rows changed since the last take_changes()
        self.upsert_many(products)

    # -- reading -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._row_of)

    @property
    def n_rows(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[Product]:
        return (p for p in self._rows if p is not None)

    def __contains__(self, product_id: object) -> bool:
        return product_id in self._row_of

    def row_of(self, product_id: str) -> int | None:
        return self._row_of.get(product_id)

    def product(self, row: int) -> Product | None:
        return self._rows[row]

    def get(self, product_id: str) -> Product | None:
        row = self._row_of.get(product_id)
        return None if row is None else self._rows[row]

    def text(self, row: int) -> str:
        """The product's text for the encoder and BM25 (empty for a deleted row)."""
        return self._texts[row]

    def texts(self) -> list[str]:
        return list(self._texts)

    @property
    def published(self) -> np.ndarray:
        """Boolean mask by row: True where a product exists and may be suggested."""
        return self._published[: len(self._rows)]

    def ids(self) -> list[str | None]:
        return [p.id if p is not None else None for p in self._rows]

    # -- changing ----------------------------------------------------------------------
    def upsert(self, product: Product) -> int:
        row = self._row_of.get(product.id)
        if row is None:
            row = len(self._rows)
            self._rows.append(product)
            self._texts.append("")
            self._row_of[product.id] = row
            if row >= len(self._published):  # amortised growth, no per-insert copy
                grown = np.zeros(max(16, 2 * len(self._published)), dtype=bool)
                grown[: len(self._published)] = self._published
                self._published = grown
        else:
            self._rows[row] = product
        self._texts[row] = product_text(
            product.name,
            product.keywords,
            brand=product.brand_name,
            categories=[c for c in (product.cat_one, product.cat_two, product.cat_three) if c],
        )
        self._published[row] = product.is_published
        self.changed_rows.add(row)
        self.version += 1
        return row

    def upsert_many(self, products: Iterable[Product]) -> None:
        for product in products:
            self.upsert(product)

    def delete(self, product_id: str) -> int | None:
        row = self._row_of.pop(product_id, None)
        if row is None:
            return None
        self._rows[row] = None
        self._texts[row] = ""
        self._published[row] = False
        self.changed_rows.add(row)
        self.version += 1
        return row

    def take_changes(self) -> set[int]:
        changed, self.changed_rows = self.changed_rows, set()
        return changed

    # -- identity and persistence --------------------------------------------------------
    def fingerprint(self) -> str:
        """Content hash of the live products, independent of row order."""
        digest = hashlib.sha256()
        for product in sorted(self, key=lambda p: p.id):
            digest.update(product.model_dump_json().encode())
        return digest.hexdigest()[:16]

    def save(self, path: Path) -> None:
        """A snapshot: products in row order (tombstones kept) plus a manifest."""
        path.mkdir(parents=True, exist_ok=True)
        with (path / "products.jsonl").open("w", encoding="utf-8") as handle:
            for product in self._rows:
                handle.write((product.model_dump_json() if product else "null") + "\n")
        manifest = {
            "kind": "catalog",
            "rows": self.n_rows,
            "products": len(self),
            "fingerprint": self.fingerprint(),
            "versions": versions(),
        }
        (path / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Catalog:
        catalog = cls()
        tombstones: list[int] = []
        with (path / "products.jsonl").open(encoding="utf-8") as handle:
            for row, line in enumerate(handle):
                data = json.loads(line)
                if data is None:  # keep rows aligned with matrices saved beside the snapshot
                    placeholder = Product(id=f"\x00deleted-{row}", name="deleted")
                    catalog.upsert(placeholder)
                    tombstones.append(row)
                else:
                    catalog.upsert(Product.model_validate(data))
        for row in tombstones:
            catalog.delete(f"\x00deleted-{row}")
        catalog.take_changes()
        return catalog

    @classmethod
    def from_file(cls, path: Path) -> tuple[Catalog, ReadReport]:
        products, report = read_products(path)
        return cls(products), report
