"""Bytes on a topic ↔ events: decoding with a precise reason for every refusal.

The worker never guesses: an event is either a valid, known-version event or a
``Rejection`` naming the error type and, where there is one, the dotted field at fault.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from schemas.events import SCHEMA_VERSION, RejectedEvent

E = TypeVar("E", bound=BaseModel)

KNOWN_VERSIONS = frozenset({SCHEMA_VERSION})

ErrorType = Literal[
    "too_large", "not_utf8", "not_json", "invalid", "unknown_version", "processing_failed"
]


@dataclass(frozen=True)
class Rejection:
    """Why one message could not become an event (``RejectedEvent.error_type`` values)."""

    error_type: ErrorType
    reason: str
    field: str | None = None


def dotted(loc: tuple[int | str, ...]) -> str | None:
    return ".".join(str(part) for part in loc) or None


def decode(value: bytes | None, model: type[E], max_bytes: int) -> E | Rejection:
    """One message value → an event of ``model``, or the first thing wrong with it."""
    if value is None:
        return Rejection("not_json", "empty message value (a tombstone?)")
    if len(value) > max_bytes:
        return Rejection("too_large", f"{len(value)} bytes, the limit is {max_bytes}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("not_utf8", f"invalid UTF-8 at byte {exc.start}: {exc.reason}")
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        return Rejection("not_json", f"{exc.msg} at line {exc.lineno} column {exc.colno}")
    except RecursionError:  # valid JSON nested deeper than the parser goes: refuse, don't crash
        return Rejection("not_json", "nested too deeply to parse")
    if not isinstance(data, dict):
        return Rejection("invalid", f"expected a JSON object, got {type(data).__name__}")
    # A missing version means v1 (the schema's default); anything else must be known exactly:
    # a bool or "1" is not a version, and a newer one is not ours to guess at.
    version = data.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version not in KNOWN_VERSIONS:
        return Rejection("unknown_version", f"schema_version {version!r} is not one of "
                         f"{sorted(KNOWN_VERSIONS)}", "schema_version")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        reason = "; ".join(f"{dotted(e['loc']) or '(event)'}: {e['msg']}" for e in errors[:5])
        if len(errors) > 5:
            reason += f"; and {len(errors) - 5} more"
        return Rejection("invalid", reason, dotted(first["loc"]))


def rejected_event(
    rejection: Rejection,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    attempts: int = 1,
    worker: str | None = None,
) -> RejectedEvent:
    return RejectedEvent(
        source_topic=topic,
        partition=partition,
        offset=offset,
        key=None if key is None else key.decode("utf-8", errors="replace"),
        original_b64=base64.b64encode(value or b"").decode("ascii"),
        reason=rejection.reason[:2000],
        field=rejection.field,
        error_type=rejection.error_type,
        attempts=attempts,
        worker=worker,
    )


def original_bytes(event: RejectedEvent) -> bytes:
    return base64.b64decode(event.original_b64)
