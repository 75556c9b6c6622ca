"""Model folders under ``models/``: the base engine is exported once, on first use."""

from __future__ import annotations

import tempfile
from pathlib import Path

from consumer.encoder import ENCODER_CONFIG

BASE_MODEL = "base"


def ensure_base_model(models_root: Path) -> Path:
    """``models/base``: all-MiniLM-L6-v2 (shipped in site-packages) exported to ONNX, untrained
    engine config. Built once; needs the ``train`` extra (torch) only that first time."""
    target = models_root / BASE_MODEL
    if (target / "encoder" / ENCODER_CONFIG).exists() and (target / "engine.json").exists():
        return target
    from consumer.matcher import EngineConfig
    from model_export.export import export_base

    models_root.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: two workers starting at once never see half a model.
    staging = Path(tempfile.mkdtemp(prefix=".base-", dir=models_root))
    encoder_dir = export_base(staging / "encoder")
    version = _read_version(encoder_dir)
    config = EngineConfig(version=version)
    (staging / "engine.json").write_text(config.model_dump_json(indent=2), encoding="utf-8")
    (staging / "manifest.json").write_text(
        f'{{"kind": "keyblend-model", "version": "{version}", "trained": false}}\n', encoding="utf-8"
    )
    try:
        staging.replace(target)
    except OSError:  # another process won the race; use theirs
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return target


def _read_version(encoder_dir: Path) -> str:
    import json

    return str(json.loads((encoder_dir / ENCODER_CONFIG).read_text(encoding="utf-8"))["version"])
