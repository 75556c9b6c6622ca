"""Decoding pebble events: every malformed kind gets its own error type and field."""

from __future__ import annotations

import base64

import pytest

from consumer.codec import Rejection, decode, original_bytes, rejected_event
from consumer.demo import demo_pebbles, malformed_events
from schemas.events import PebbleUploaded

LIMIT = 64 * 1024


@pytest.mark.parametrize(("raw", "error_type"), malformed_events())
def test_malformed_events_are_rejected_with_their_type(raw: bytes, error_type: str) -> None:
    result = decode(raw, PebbleUploaded, LIMIT)
    assert isinstance(result, Rejection), result
    assert result.error_type == error_type, result
    assert result.reason


def test_fields_are_named_dotted() -> None:
    def field(raw: bytes) -> str | None:
        result = decode(raw, PebbleUploaded, LIMIT)
        assert isinstance(result, Rejection)
        return result.field

    assert field(b'{"caption": "x"}') == "id"
    assert field(b'{"id": "a", "caption": "x", "hashtags": [{"t": 1}]}') == "hashtags.0"
    assert field(b'{"id": "a", "caption": "x", "label": {"interests": [1]}}') == "label.interests.0"
    assert field(b'{"schema_version": 2, "id": "a", "caption": "x"}') == "schema_version"
    assert field(b'{"schema_version": true, "id": "a", "caption": "x"}') == "schema_version"
    assert field(b'{"id": "a"}') is None  # a whole-event rule (nothing to match on)


def test_valid_events_decode_and_a_missing_version_means_v1() -> None:
    for pebble in demo_pebbles():
        assert decode(pebble.model_dump_json().encode(), PebbleUploaded, LIMIT) == pebble
    decoded = decode(b'{"id": "a", "caption": "lip balm"}', PebbleUploaded, LIMIT)
    assert isinstance(decoded, PebbleUploaded) and decoded.schema_version == 1
    assert isinstance(decode(None, PebbleUploaded, LIMIT), Rejection)


def test_dead_letter_keeps_the_exact_bytes() -> None:
    raw = b"\xff\x00not utf8"
    event = rejected_event(Rejection("not_utf8", "bad byte"), topic="t", partition=2, offset=7,
                           key=b"\xffk", value=raw, worker="w")
    assert original_bytes(event) == raw and base64.b64decode(event.original_b64) == raw
    assert (event.key, event.partition, event.offset, event.worker) == ("\ufffdk", 2, 7, "w")
