"""Flatbuffer surgery shared by the CBD export and deploy's int8 weight storage.

Both store float32 weight tensors of a converted graph as int8 constants followed by a
``DEQUANTIZE`` operator that produces the original float32 tensor for its consumers, so the
interpreter computes in float what the Keras model computes while the file holds 8-bit weights.
"""

from __future__ import annotations

import numpy as np

__all__ = ["builtin_code", "dequantize_opcode", "pack", "read_model", "schema", "store_int8"]

# DEQUANTIZE with an int8 input and per-channel parameters needs operator version >= 5 in
# TensorFlow 2.16's op resolver (the version is only a lower bound for the runtime).
DEQUANTIZE_INT8_VERSION = 5


def schema():
    """TensorFlow's generated TFLite flatbuffer schema (object API)."""
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def read_model(buf: bytes):
    """A mutable ``ModelT`` of a flatbuffer."""
    s = schema()
    return s.ModelT.InitFromObj(s.Model.GetRootAsModel(buf, 0))


def pack(tree) -> bytes:
    """Serializes a ``ModelT`` back into a TFLite flatbuffer."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def builtin_code(tree, opcode_index: int) -> int:
    """The builtin operator of an operator code (old files use ``deprecatedBuiltinCode``)."""
    code = tree.operatorCodes[opcode_index]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def dequantize_opcode(tree) -> int:
    """The index of a ``DEQUANTIZE`` operator code able to read int8, added if missing."""
    s = schema()
    for index in range(len(tree.operatorCodes)):
        if builtin_code(tree, index) == s.BuiltinOperator.DEQUANTIZE:
            code = tree.operatorCodes[index]
            code.version = max(code.version, DEQUANTIZE_INT8_VERSION)
            return index
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.DEQUANTIZE
    code.version = DEQUANTIZE_INT8_VERSION
    tree.operatorCodes.append(code)
    return len(tree.operatorCodes) - 1


def store_int8(
    tree,
    tensor_index: int,
    codes: np.ndarray,
    scales: np.ndarray,
    *,
    quantized_dimension: int = 0,
    name: str,
    dequantize: int,
):
    """Replaces float32 constant ``tensor_index`` by int8 ``codes`` + a ``DEQUANTIZE``.

    The float tensor keeps its consumers and index but loses its data; a new int8 tensor
    ``name`` holds ``codes`` with ``scales`` (zero points 0) along ``quantized_dimension``.

    Returns:
        The new ``OperatorT``; the caller puts it before the graph's operators.
    """
    s = schema()
    graph = tree.subgraphs[0]
    tensor = graph.tensors[tensor_index]
    old = tensor.buffer
    shared = sum(t.buffer == old for t in graph.tensors) > 1
    buffer = s.BufferT()
    buffer.data = np.ascontiguousarray(codes, dtype=np.int8).reshape(-1).view(np.uint8)
    if shared:
        tree.buffers.append(buffer)
        int8_buffer = len(tree.buffers) - 1
    else:  # reuse the float buffer's slot so that its data is not kept
        tree.buffers[old] = buffer
        int8_buffer = old
    quant = s.QuantizationParametersT()
    quant.scale = np.asarray(scales, dtype=np.float32).reshape(-1)
    quant.zeroPoint = np.zeros(quant.scale.size, dtype=np.int64)
    quant.quantizedDimension = quantized_dimension
    int8 = s.TensorT()
    int8.shape = np.array(codes.shape, dtype=np.int32)
    int8.type = s.TensorType.INT8
    int8.buffer = int8_buffer
    int8.name = name.encode()
    int8.quantization = quant
    graph.tensors.append(int8)
    tree.buffers.append(s.BufferT())  # the float tensor now comes from DEQUANTIZE
    tensor.buffer = len(tree.buffers) - 1
    op = s.OperatorT()
    op.opcodeIndex = dequantize
    op.inputs = np.array([len(graph.tensors) - 1], dtype=np.int32)
    op.outputs = np.array([tensor_index], dtype=np.int32)
    return op
