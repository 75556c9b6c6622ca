"""The catalog in memory: products by stable row, kept current by upserts and deletes.

Rows never move: a delete leaves a tombstone and an upsert of a known id rewrites its
row, so every matrix keyed by row (embeddings, indexes, lexical stats) stays aligned.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zlib
from collections import OrderedDict
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

_DECODED = 4096  # decoded products kept (an LRU): the ones recent responses showed
_MOD = 1 << 64


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _grown(array: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros(size, dtype=array.dtype)
    out[: len(array)] = array
    return out

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


class Rejects:
    """Bad records met while reading: all counted, the first ``max_errors`` kept with reasons."""

    def __init__(self, max_errors: int = 100) -> None:
        self.max_errors = max_errors
        self.errors: list[RecordError] = []
        self.count = 0

    def add(self, error: RecordError) -> None:
        self.count += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(error)

    def report(self, path: Path, loaded: int) -> ReadReport:
        return ReadReport(str(path), loaded, self.count, tuple(self.errors))


def iter_products(path: Path, rejects: Rejects) -> Iterator[Product]:
    """Every good product of a file, one at a time (a million-row export is never held as a
    list); every bad record goes to ``rejects``, naming file, line and field."""
    for line, record in read_records(path):
        if isinstance(record, RecordError):
            rejects.add(record)
            continue
        try:
            yield product_from_record(record)
        except _FieldError as exc:
            rejects.add(field_error(path, line, exc.field, exc))
        except (ValidationError, ValueError, TypeError) as exc:
            problem = exc if not isinstance(exc, TypeError) else ValueError(str(exc))
            rejects.add(validation_error(path, line, problem))


def read_products(path: Path, max_errors: int = 100) -> tuple[list[Product], ReadReport]:
    """Every good product of a file, and a report naming file, line and field of each bad one."""
    rejects = Rejects(max_errors)
    products = list(iter_products(path, rejects))
    return products, rejects.report(path, len(products))


class Catalog:
    """Products by stable row; ``version`` counts changes so derived state knows when to refresh.

    Built to hold millions of products: each row keeps its id, brand id, matching text and
    published flag as plain columns (what ranking reads for every candidate) and the full
    record as compressed JSON, decoded on demand (``product``) for the few rows a response
    shows. A HYPD-like product costs about 0.7 KB instead of ~4 KB as a model object.
    """

    def __init__(self, products: Iterable[Product] = ()) -> None:
        self._records: list[bytes | None] = []
        self._ids: list[str | None] = []
        self._brands: list[str | None] = []
        self._row_of: dict[str, int] = {}
        self._published = np.zeros(0, dtype=bool)
        self._texts: list[str] = []
        self._hashes = np.zeros(0, dtype=np.uint64)  # per row: hash of the product's JSON
        self._digest = 0  # Σ hashes of live products mod 2⁶⁴: the fingerprint, kept current
        self._decoded: OrderedDict[int, Product] = OrderedDict()
        self.version = 0
        self.changed_rows: set[int] = set()  # rows changed since the last take_changes()
        self.upsert_many(products)

    # -- reading -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._row_of)

    @property
    def n_rows(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Product]:
        for row, record in enumerate(self._records):
            if record is not None:
                yield self._decode(row, record, keep=False)

    def __contains__(self, product_id: object) -> bool:
        return product_id in self._row_of

    def row_of(self, product_id: str) -> int | None:
        return self._row_of.get(product_id)

    def is_live(self, row: int) -> bool:
        return self._records[row] is not None

    def product_id(self, row: int) -> str | None:
        return self._ids[row]

    def brand_id(self, row: int) -> str | None:
        return self._brands[row]

    def product(self, row: int) -> Product | None:
        record = self._records[row]
        return None if record is None else self._decode(row, record, keep=True)

    def _decode(self, row: int, record: bytes, keep: bool) -> Product:
        cached = self._decoded.get(row)
        if cached is not None:
            self._decoded.move_to_end(row)
            return cached
        product = Product.model_validate_json(zlib.decompress(record))
        if keep:  # the rows responses show recur (popular products): keep a few decoded
            self._decoded[row] = product
            if len(self._decoded) > _DECODED:
                self._decoded.popitem(last=False)
        return product

    def get(self, product_id: str) -> Product | None:
        row = self._row_of.get(product_id)
        return None if row is None else self.product(row)

    def text(self, row: int) -> str:
        """The product's text for the encoder and BM25 (empty for a deleted row)."""
        return self._texts[row]

    def texts(self) -> list[str]:
        return list(self._texts)

    @property
    def published(self) -> np.ndarray:
        """Boolean mask by row: True where a product exists and may be suggested."""
        return self._published[: len(self._records)]

    def ids(self) -> list[str | None]:
        return list(self._ids)

    # -- changing ----------------------------------------------------------------------
    def upsert(self, product: Product) -> int:
        row = self._row_of.get(product.id)
        data = product.model_dump_json(exclude_defaults=True).encode("utf-8")
        record = zlib.compress(data)
        if row is None:
            row = len(self._records)
            self._records.append(record)
            self._ids.append(product.id)
            self._brands.append(None)
            self._texts.append("")
            self._row_of[product.id] = row
            if row >= len(self._published):  # amortised growth, no per-insert copy
                size = max(16, 2 * len(self._published))
                self._published = _grown(self._published, size)
                self._hashes = _grown(self._hashes, size)
        else:
            self._records[row] = record
            self._decoded.pop(row, None)
            self._digest = (self._digest - int(self._hashes[row])) % _MOD
        self._hashes[row] = _hash(data)
        self._digest = (self._digest + int(self._hashes[row])) % _MOD
        self._brands[row] = sys.intern(product.brand_id) if product.brand_id else None
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
        self._records[row] = None
        self._digest = (self._digest - int(self._hashes[row])) % _MOD
        self._hashes[row] = 0
        self._ids[row] = None
        self._brands[row] = None
        self._decoded.pop(row, None)
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
        """Content hash of the live products, independent of row order and of the file
        format they came from; O(1): kept current by every upsert and delete (a worker stamps
        it on every suggestion, and hashing a million products per change would stall it)."""
        return f"{self._digest:016x}"

    def copy(self) -> Catalog:
        """An independent catalog with the same products: the columns are copied, no record
        is decoded (a model swap loads its engine on a copy while the old one serves)."""
        other = Catalog()
        other._records, other._ids, other._brands = list(self._records), list(self._ids), list(self._brands)
        other._row_of, other._texts = dict(self._row_of), list(self._texts)
        other._published, other._hashes = self._published.copy(), self._hashes.copy()
        other._digest, other.version = self._digest, self.version
        return other

    def names(self) -> Iterator[tuple[str, str | None]]:
        """(name, brand name) of every live product, read from the stored JSON without
        building product objects (a million of those take minutes)."""
        for record in self._records:
            if record is not None:
                data = json.loads(zlib.decompress(record))
                yield data["name"], data.get("brand_name")

    def save(self, path: Path) -> None:
        """A snapshot: products in row order (tombstones kept) plus a manifest."""
        path.mkdir(parents=True, exist_ok=True)
        with (path / "products.jsonl").open("w", encoding="utf-8") as handle:
            for row, record in enumerate(self._records):
                product = None if record is None else self._decode(row, record, keep=False)
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
    def from_file(cls, path: Path, max_errors: int = 100) -> tuple[Catalog, ReadReport]:
        rejects = Rejects(max_errors)
        catalog = cls(iter_products(path, rejects))
        return catalog, rejects.report(path, len(catalog))
