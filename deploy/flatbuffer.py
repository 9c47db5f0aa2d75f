"""Reading TFLite/LCE flatbuffers: validation, operator inventory and tensor sizes."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np

__all__ = [
    "LCE_OPS",
    "FlatbufferError",
    "load_flatbuffer",
    "op_inventory",
    "operators",
    "read_model",
]

LCE_OPS = ("LceQuantize", "LceDequantize", "LceBconv2d", "LceBMaxPool2d")
_TFLITE_IDENTIFIER = b"TFL3"  # file identifier at bytes 4..8 of every TFLite flatbuffer


class FlatbufferError(ValueError):
    """The bytes or file given are not a TFLite flatbuffer."""


def load_flatbuffer(source: bytes | str | os.PathLike) -> bytes:
    """Returns the bytes of a TFLite flatbuffer given as bytes or a path, checked.

    Raises:
        FlatbufferError: when the file does not exist or is not a TFLite flatbuffer.
    """
    if isinstance(source, (bytes, bytearray)):
        buf = bytes(source)
        where = "the given bytes"
    else:
        path = Path(source)
        if not path.is_file():
            raise FlatbufferError(f"{str(path)!r} does not exist or is not a file.")
        buf = path.read_bytes()
        where = repr(str(path))
    if len(buf) < 8 or buf[4:8] != _TFLITE_IDENTIFIER:
        raise FlatbufferError(
            f"{where} is not a TFLite/LCE flatbuffer (expected the identifier "
            f"{_TFLITE_IDENTIFIER!r} at bytes 4-8, got {buf[4:8]!r})."
        )
    return buf


def read_model(buf: bytes):
    """Parses a flatbuffer into LCE's object API (``tflite_schema.ModelT``)."""
    from larq_compute_engine.mlir.python import tflite_schema as schema

    buf = load_flatbuffer(buf)
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(buf, 0))


_BUILTIN_NAMES: dict[int, str] | None = None


def _builtin_name(code: int) -> str:
    global _BUILTIN_NAMES
    if _BUILTIN_NAMES is None:
        from larq_compute_engine.mlir.python import tflite_schema as schema

        ops = schema.BuiltinOperator
        _BUILTIN_NAMES = {v: k for k, v in vars(ops).items() if isinstance(v, int)}
    return _BUILTIN_NAMES.get(code, f"BUILTIN_{code}")


def operators(model) -> list[dict]:
    """One dict per operator of the main subgraph: ``op``, ``inputs``, ``outputs``."""
    result = []
    subgraph = model.subgraphs[0]
    for op in subgraph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        custom = (code.customCode or b"").decode()
        name = custom or _builtin_name(max(code.builtinCode, code.deprecatedBuiltinCode))
        result.append(
            {
                "op": name,
                "inputs": [int(i) for i in (op.inputs if op.inputs is not None else [])],
                "outputs": [int(i) for i in (op.outputs if op.outputs is not None else [])],
            }
        )
    return result


def op_inventory(buf: bytes | str | os.PathLike) -> dict[str, int]:
    """Counts of each operator type in the main subgraph, e.g. ``{"LceBconv2d": 34, ...}``."""
    model = read_model(load_flatbuffer(buf))
    return dict(collections.Counter(op["op"] for op in operators(model)))


def tensor_nbytes(model, index: int) -> int:
    """Bytes of a constant tensor's buffer (0 for activations)."""
    tensor = model.subgraphs[0].tensors[index]
    data = model.buffers[tensor.buffer].data
    return 0 if data is None else int(np.asarray(data).size)
