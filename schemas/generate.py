"""Write one JSON Schema file per event into ``schemas/json/``: ``python -m schemas.generate``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.events import PebbleUploaded, ProductChanged, ProductSuggestions, RejectedEvent

EVENTS: dict[str, type[BaseModel]] = {
    "pebble_uploaded": PebbleUploaded,
    "product_suggestions": ProductSuggestions,
    "product_changed": ProductChanged,
    "rejected_event": RejectedEvent,
}
SCHEMA_DIR = Path(__file__).parent / "json"


def render(model: type[BaseModel]) -> str:
    return json.dumps(model.model_json_schema(mode="serialization"), indent=2, sort_keys=True) + "\n"


def main(out_dir: Path = SCHEMA_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in EVENTS.items():
        path = out_dir / f"{name}.v1.json"
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in main(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(p)
