"""Versioned event schemas shared with the platform and the tagging service."""

from schemas.events import (
    SCHEMA_VERSION,
    Label,
    PebbleUploaded,
    ProductChanged,
    ProductRecord,
    ProductSuggestions,
    Reason,
    RejectedEvent,
    SuggestedProduct,
    Timings,
)

__all__ = [
    "SCHEMA_VERSION",
    "Label",
    "PebbleUploaded",
    "ProductChanged",
    "ProductRecord",
    "ProductSuggestions",
    "Reason",
    "RejectedEvent",
    "SuggestedProduct",
    "Timings",
]
