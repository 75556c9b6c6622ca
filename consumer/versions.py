"""The versions that made an artifact, recorded in every manifest."""

from __future__ import annotations

import platform
from importlib import metadata

_PACKAGES = (
    "keyblend",
    "numpy",
    "onnxruntime",
    "tokenizers",
    "bm25s",
    "faiss-cpu",
    "torch",
    "sentence-transformers",
    "transformers",
)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
