"""TFLite flatbuffers: export, reading and the surgery shared by the CBD and int8 exports.

* :func:`inference_saved_model` exports a Keras model's inference function as a SavedModel, the
  input of both TensorFlow's and Larq Compute Engine's converters (:func:`convert_float`);
* :func:`load_flatbuffer`, :func:`read_model`, :func:`operators` and :func:`op_inventory` read
  a converted file;
* :func:`store_int8` stores float32 weight tensors of a converted graph as int8 constants
  followed by a ``DEQUANTIZE`` operator that produces the original float32 tensor for its
  consumers, so the interpreter computes in float what the Keras model computes while the file
  holds 8-bit weights (the CBD export and deploy's int8 weight storage).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from melius_larq._compat import tf

__all__ = [
    "FlatbufferError",
    "builtin_code",
    "convert_float",
    "dequantize_opcode",
    "inference_saved_model",
    "load_flatbuffer",
    "op_inventory",
    "operators",
    "pack",
    "read_model",
    "schema",
    "store_int8",
    "tensor_nbytes",
]

# DEQUANTIZE with an int8 input and per-channel parameters needs operator version >= 5 in
# TensorFlow 2.16's op resolver (the version is only a lower bound for the runtime).
DEQUANTIZE_INT8_VERSION = 5
TFLITE_IDENTIFIER = b"TFL3"  # file identifier at bytes 4..8 of every TFLite flatbuffer


@contextlib.contextmanager
def inference_saved_model(
    model: tf.keras.Model, spec: tf.TensorSpec | Sequence[tf.TensorSpec] | None = None
) -> Iterator[str]:
    """A temporary SavedModel directory holding only ``model``'s inference function.

    The function is traced once, with ``training=False`` and without autograph (Keras and
    larq layers need none at inference; autograph makes the trace several times slower),
    for inputs of ``spec`` (one per model input; by default the model's own input shapes with
    an unknown batch size). The SavedModel keeps the model's variables and one
    ``serving_default`` signature with the output ``"output"`` (``"output_0"``, ... for
    several). Converting it computes the same graph as converting the full Keras SavedModel
    (``TFLiteConverter.from_keras_model``) or a concrete function, and is several times quicker.
    """
    if spec is None:
        specs = [
            tf.TensorSpec(x.shape, x.dtype, name=name)
            for x, name in zip(model.inputs, model.input_names, strict=True)
        ]
    elif isinstance(spec, tf.TensorSpec):
        specs = [spec]
    else:
        specs = list(spec)

    @tf.function(input_signature=specs, autograph=False)
    def serve(*inputs):
        outputs = model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
        if isinstance(outputs, (list, tuple)):
            return {f"output_{i}": y for i, y in enumerate(outputs)}
        return {"output": outputs}

    holder = tf.Module()
    holder.variables_to_save = list(model.variables)
    with tempfile.TemporaryDirectory(prefix="melius_larq_export_") as tmp:
        tf.saved_model.save(
            holder, tmp, signatures={"serving_default": serve.get_concrete_function()}
        )
        yield tmp


def convert_float(
    model: tf.keras.Model, spec: tf.TensorSpec | Sequence[tf.TensorSpec] | None = None
) -> bytes:
    """The plain float TFLite flatbuffer of ``model`` (through :func:`inference_saved_model`)."""
    with inference_saved_model(model, spec) as saved_model:
        return tf.lite.TFLiteConverter.from_saved_model(saved_model).convert()


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
    if len(buf) < 8 or buf[4:8] != TFLITE_IDENTIFIER:
        raise FlatbufferError(
            f"{where} is not a TFLite/LCE flatbuffer (expected the identifier "
            f"{TFLITE_IDENTIFIER!r} at bytes 4-8, got {buf[4:8]!r})."
        )
    return buf


def schema():
    """TensorFlow's generated TFLite flatbuffer schema (object API)."""
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def read_model(source: bytes | str | os.PathLike):
    """A mutable ``ModelT`` (object API) of a flatbuffer given as bytes or a path, checked.

    Raises:
        FlatbufferError: when it is not a TFLite flatbuffer.
    """
    s = schema()
    return s.ModelT.InitFromObj(s.Model.GetRootAsModel(load_flatbuffer(source), 0))


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


@functools.cache
def _builtin_names() -> dict[int, str]:
    ops = schema().BuiltinOperator
    return {v: k for k, v in vars(ops).items() if isinstance(v, int)}


def operators(tree) -> list[dict]:
    """One dict per operator of the main subgraph: ``op``, ``inputs``, ``outputs``.

    ``op`` is the custom code (e.g. ``"LceBconv2d"``) or the builtin name (``"CONV_2D"``).
    """
    result = []
    for op in tree.subgraphs[0].operators:
        custom = (tree.operatorCodes[op.opcodeIndex].customCode or b"").decode()
        code = builtin_code(tree, op.opcodeIndex)
        result.append(
            {
                "op": custom or _builtin_names().get(code, f"BUILTIN_{code}"),
                "inputs": [int(i) for i in (op.inputs if op.inputs is not None else [])],
                "outputs": [int(i) for i in (op.outputs if op.outputs is not None else [])],
            }
        )
    return result


def op_inventory(source: bytes | str | os.PathLike) -> dict[str, int]:
    """Counts of each operator type in the main subgraph, e.g. ``{"LceBconv2d": 34, ...}``."""
    return dict(collections.Counter(op["op"] for op in operators(read_model(source))))


def tensor_nbytes(tree, index: int) -> int:
    """Bytes of a constant tensor's buffer (0 for activations)."""
    tensor = tree.subgraphs[0].tensors[index]
    data = tree.buffers[tensor.buffer].data
    return 0 if data is None else int(np.asarray(data).size)


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
