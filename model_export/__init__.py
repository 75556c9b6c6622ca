"""Training, ONNX export and evaluation (needs the ``train`` extra for torch)."""
