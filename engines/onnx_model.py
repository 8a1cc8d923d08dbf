"""Facts about an exported ONNX model that backends check before running it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx

INPUT_NAME = "landmarks"
OUTPUT_NAME = "frame"
QUANTISE_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv",
                          "ConvInteger", "MatMulInteger"})
CHUNK_BYTES = 1 << 20


def model_precision(path: Path) -> str:
    """``"int8"`` for a quantised model, ``"fp16"`` for one with half-precision weights,
    ``"fp32"`` otherwise."""
    model = onnx.load(str(path), load_external_data=False)
    if any(node.op_type in QUANTISE_OPS for node in model.graph.node):
        return "int8"
    if any(tensor.data_type == onnx.TensorProto.FLOAT16 for tensor in model.graph.initializer):
        return "fp16"
    return "fp32"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
