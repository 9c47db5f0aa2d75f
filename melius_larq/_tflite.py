"""TFLite flatbuffers: export, reading and the surgery shared by the CBD and int8 exports.

* :func:`inference_saved_model` exports a Keras model's inference function as a SavedModel, the
  input of both TensorFlow's and Larq Compute Engine's converters (:func:`convert_float`);
* :func:`load_flatbuffer`, :func:`read_model`, :func:`operators` and :func:`op_inventory` read
  a converted file, validated first (:func:`validate_flatbuffer`: a damaged file would crash
  the C++ interpreter);
* :func:`store_int8` stores float32 weight tensors of a converted graph as int8 constants
  followed by a ``DEQUANTIZE`` operator that produces the original float32 tensor for its
  consumers, so the interpreter computes in float what the Keras model computes while the file
  holds 8-bit weights (the CBD export and deploy's int8 weight storage).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from melius_larq._compat import tf

__all__ = [
    "FlatbufferError",
    "builtin_code",
    "builtin_opcode",
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
    "validate_flatbuffer",
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
    """The bytes or file given are not a TFLite flatbuffer, or a damaged one."""


def load_flatbuffer(source: bytes | str | os.PathLike) -> bytes:
    """Returns the bytes of a TFLite flatbuffer given as bytes or a path, validated.

    Every path that hands a flatbuffer to an interpreter goes through here: the C++ runtime
    does not check the file and reads out of bounds (a segmentation fault) on a damaged one.
    The whole model is walked with bounds checks and checked as described in
    :func:`validate_flatbuffer`; a validated content is remembered (by hash), so loading the
    same bytes again is cheap.

    Raises:
        FlatbufferError: when the file does not exist, is not a TFLite flatbuffer, or is
            truncated or damaged.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        buf = bytes(source)
        where = "the given data"
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
    digest = hashlib.blake2b(buf, digest_size=16).digest()
    if digest not in _VALIDATED:
        problem = validate_flatbuffer(buf)
        if problem is not None:
            raise FlatbufferError(f"{where} {problem}")
        _VALIDATED[digest] = None
        while len(_VALIDATED) > _VALIDATED_MAX:
            _VALIDATED.pop(next(iter(_VALIDATED)))
    return buf


_VALIDATED: dict[bytes, None] = {}  # hashes of validated contents, oldest first
_VALIDATED_MAX = 64


class _CheckedBytes(bytes):
    """Bytes whose slices must lie inside: the flatbuffers reader slices strings unchecked.

    Every other read of the Python reader is bounds-checked (``struct.unpack_from`` and
    ``np.frombuffer`` raise past the end, and offsets are checked to be unsigned); a string
    is ``Bytes[start:start + length]``, silently cut at the end. As the C++ reader, a string
    must also end with its NUL terminator.
    """

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop = key.start or 0, len(self) if key.stop is None else key.stop
            if start < 0 or stop < start or stop >= len(self):
                raise _OutOfBounds(f"a string at byte {start} ends past the end of the data")
            if bytes.__getitem__(self, stop) != 0:
                raise ValueError(f"the string at byte {start} is not NUL-terminated")
        return bytes.__getitem__(self, key)


class _OutOfBounds(IndexError):
    pass


# Bytes per element of the tensor types whose constant data has a fixed size.
_ELEMENT_BYTES = {
    "FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "BOOL": 1, "INT16": 2,
    "COMPLEX64": 8, "INT8": 1, "FLOAT64": 8, "COMPLEX128": 16, "UINT64": 8, "UINT32": 4,
    "UINT16": 2, "BFLOAT16": 2,
}  # fmt: skip
_CUSTOM = 32  # BuiltinOperator.CUSTOM


def validate_flatbuffer(buf: bytes) -> str | None:
    """What is wrong with a TFLite flatbuffer (after ``is`` in a message), or None.

    Checks the structure of the whole model (every table, vtable, vector and string lies
    inside the data; read through the schema's object API, with strings bounds-checked) and
    what the C++ runtime relies on without checking: at least one subgraph; operator code
    indices, tensor indices (operator and subgraph inputs, outputs and intermediates;
    signature tensors), buffer indices (tensors, metadata) and signature subgraph indices in
    range; every tensor written by at most one operator, and none that is a subgraph input
    or holds constant data; non-negative shapes and known tensor types; constant data of
    exactly the size of the shape (for types of a fixed element size, dense tensors); buffer
    0 empty; data stored after the flatbuffer (``offset``/``size`` fields) inside the file;
    per-channel quantization consistent with the shape; the FlexBuffers custom options of
    the LCE operators that read them (``LceBconv2d``, ``LceBMaxPool2d``: every offset
    inside, the entries their kernels read present and in range, ``channels_in`` matching
    the input).
    """
    if len(buf) < 8 or buf[4:8] != TFLITE_IDENTIFIER:
        return f"is not a TFLite/LCE flatbuffer (no identifier {TFLITE_IDENTIFIER!r} at bytes 4-8)."
    s = schema()
    data = _CheckedBytes(buf)
    try:
        tree = s.ModelT.InitFromObj(s.Model.GetRootAsModel(data, 0))
    except Exception as err:  # noqa: BLE001 - any failure of the reader is damage
        return _structure_problem(data, err)
    problem = _semantic_problem(tree, len(buf))
    return None if problem is None else f"is not a valid TFLite flatbuffer: {problem}."


def _out_of_bounds(err: Exception) -> bool:
    text = str(err)
    return isinstance(err, _OutOfBounds) or (
        "buffer size" in text or "requires a buffer" in text or "bigger than buffer" in text
    )


def _structure_problem(data: bytes, err: Exception) -> str:
    """The message for a model the reader cannot walk: which part, and why."""
    part = _failing_part(data) or "the model"
    if _out_of_bounds(err):
        return f"is truncated or damaged: {part} reaches past the end of its {len(data):,} bytes."
    reason = " ".join(f"{type(err).__name__}: {err}".split())[:200]
    return f"is not a valid TFLite flatbuffer: {part} cannot be read ({reason})."


def _failing_part(data: bytes) -> str | None:
    """Walks the model again part by part and names the first part that cannot be read."""
    s = schema()
    try:
        model = s.Model.GetRootAsModel(data, 0)
        model.Version(), model.Description(), model.MetadataBufferAsNumpy()
        graphs = model.SubgraphsLength()
    except Exception:  # noqa: BLE001 - any failure of the reader is damage
        return "the root table"
    problem = _first_unreadable(
        "operator code", "", model.OperatorCodesLength, model.OperatorCodes, s.OperatorCodeT
    )
    for g in range(graphs):
        try:
            graph = model.Subgraphs(g)
            graph.Name(), graph.InputsAsNumpy(), graph.OutputsAsNumpy()
        except Exception:  # noqa: BLE001
            return problem or f"subgraph {g}"
        of = f" of subgraph {g}"
        problem = (
            problem
            or _first_unreadable("tensor", of, graph.TensorsLength, graph.Tensors, s.TensorT)
            or _first_unreadable(
                "operator", of, graph.OperatorsLength, graph.Operators, s.OperatorT
            )
        )
    return (
        problem
        or _first_unreadable("buffer", "", model.BuffersLength, model.Buffers, s.BufferT)
        or _first_unreadable(
            "metadata entry", "", model.MetadataLength, model.Metadata, s.MetadataT
        )
        or _first_unreadable(
            "signature", "", model.SignatureDefsLength, model.SignatureDefs, s.SignatureDefT
        )
    )


def _first_unreadable(name: str, of: str, count, get, cls) -> str | None:
    try:
        n = count()
    except Exception:  # noqa: BLE001
        return f"the {name} list{of}"
    for i in range(n):
        try:
            cls.InitFromObj(get(i))
        except Exception:  # noqa: BLE001
            return f"{name} {i}{of}"
    return None


def _semantic_problem(tree, size: int) -> str | None:
    """The first broken cross-reference or size the C++ runtime would read past, or None."""
    s = schema()
    type_names = {v: k for k, v in vars(s.TensorType).items() if isinstance(v, int)}
    codes = tree.operatorCodes or []
    buffers = tree.buffers or []
    graphs = tree.subgraphs or []
    if not graphs:
        return "it has no subgraph"
    for i, code in enumerate(codes):
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if code.builtinCode < 0 or code.deprecatedBuiltinCode < 0:
            return f"operator code {i} has the negative builtin code {min(code.builtinCode, code.deprecatedBuiltinCode)}"
        if builtin == _CUSTOM and not code.customCode:
            return f"operator code {i} is a custom operator without a custom code"
    for b, buffer in enumerate(buffers):
        if buffer.offset > 1 and buffer.offset + buffer.size > size:
            return (
                f"buffer {b} stores {buffer.size:,} bytes at byte {buffer.offset:,}, past the "
                f"end of the file's {size:,} bytes"
            )
    if buffers and _buffer_bytes(buffers[0]):
        return "buffer 0 is not empty (the schema reserves it)"
    for g, graph in enumerate(graphs):
        of = f"of subgraph {g}"
        tensors = graph.tensors or []
        n = len(tensors)

        def bad_index(indices, what, n=n, of=of):
            for t in _indices(indices):
                if t < -1 or t >= n:
                    return f"{what} {of} reads tensor {int(t)}, but the subgraph has {n} tensors"
            return None

        for what, indices in (("the inputs", graph.inputs), ("the outputs", graph.outputs)):
            if (problem := bad_index(indices, what)) is not None:
                return problem
        for k, op in enumerate(graph.operators or []):
            if not 0 <= op.opcodeIndex < len(codes):
                return (
                    f"operator {k} {of} uses operator code {op.opcodeIndex}, but the model has "
                    f"{len(codes)} operator codes"
                )
            for indices in (op.inputs, op.outputs, op.intermediates):
                if (problem := bad_index(indices, f"operator {k}")) is not None:
                    return problem
            if (problem := _builtin_options_problem(op)) is not None:
                return f"operator {k} {of} {problem}"
            custom = (codes[op.opcodeIndex].customCode or b"").decode("utf-8", "replace")
            if (problem := _lce_options_problem(custom, op.customOptions, graph, op)) is not None:
                return f"operator {k} {of} ({custom}) {problem}"
            if op.customOptions is None and op.largeCustomOptionsOffset > 1:
                end = op.largeCustomOptionsOffset + op.largeCustomOptionsSize
                if end > size:
                    return f"operator {k} {of} has custom options past the end of the file"
        for t, tensor in enumerate(tensors):
            if (problem := _tensor_problem(tensor, buffers, type_names)) is not None:
                return f"tensor {t} {of} {problem}"
        if (problem := _dataflow_problem(graph, buffers, of)) is not None:
            return problem
    for i, meta in enumerate(tree.metadata or []):
        if not 0 <= meta.buffer < len(buffers):
            return f"metadata entry {i} uses buffer {meta.buffer}, but the model has {len(buffers)} buffers"
    for b in np.asarray(
        tree.metadataBuffer if tree.metadataBuffer is not None else [], dtype=np.int64
    ):
        if not 0 <= b < len(buffers):
            return f"the metadata buffer list names buffer {int(b)}, but the model has {len(buffers)} buffers"
    for i, sig in enumerate(tree.signatureDefs or []):
        if not 0 <= sig.subgraphIndex < len(graphs):
            return (
                f"signature {i} names subgraph {sig.subgraphIndex}, but the model has {len(graphs)}"
            )
        n = len(graphs[sig.subgraphIndex].tensors or [])
        for entry in (sig.inputs or []) + (sig.outputs or []):
            if not 0 <= entry.tensorIndex < n:
                return f"signature {i} names tensor {entry.tensorIndex}, but its subgraph has {n} tensors"
    return None


# Builtin options (``Conv2DOptions``, ``Pool2DOptions``, ...) that the kernels divide by or
# loop over: a stride, filter size, dilation or depth multiplier below 1 makes an output of
# billions of elements (the process hangs or runs out of memory) or a division by zero.
_POSITIVE_OPTIONS = ("stride", "filter", "dilation", "depthMultiplier")


def _builtin_options_problem(op) -> str | None:
    options = op.builtinOptions
    for name, value in vars(options).items() if options is not None else ():
        if name.startswith(_POSITIVE_OPTIONS) and isinstance(value, int) and value < 1:
            return f"has the option {name}={value}, which its kernel cannot run (at least 1)"
    return None


def _dataflow_problem(graph, buffers, of: str) -> str | None:
    """An operator that writes a tensor defined already or reads one not defined yet, or None.

    A tensor is defined by being a subgraph input, holding constant data or being written by
    one earlier operator. The runtime sizes a tensor by the last operator that writes it: a
    tensor written twice (or an input or constant overwritten) gets the second writer's size
    while its readers and first writer use the first one, and they run past its end. A tensor
    read before any definition (e.g. a kernel that lost its data) holds whatever the arena
    held: a wrong result at best, a crash when its shape is damaged too. Variable tensors and
    tensors of no elements are read without one.
    """
    tensors = graph.tensors or []
    defined = {int(t): "is an input" for t in _indices(graph.inputs) if t >= 0}
    for t, tensor in enumerate(tensors):
        if _buffer_bytes(buffers[tensor.buffer]):
            defined[t] = "holds constant data"
        elif tensor.isVariable:
            defined[t] = "is a variable"
    for k, op in enumerate(graph.operators or []):
        for t in (int(t) for t in _indices(op.inputs) if t >= 0):
            if t not in defined and 0 not in _indices(tensors[t].shape):
                return (
                    f"operator {k} {of} reads tensor {t}, which is no input, holds no data "
                    "and no earlier operator writes"
                )
        for t in (int(t) for t in _indices(op.outputs) if t >= 0):
            if t in defined:
                return f"operator {k} {of} writes tensor {t}, which {defined[t]}"
            defined[t] = f"operator {k} writes already"
    return None


def _indices(indices) -> np.ndarray:
    return np.asarray(indices if indices is not None else [], dtype=np.int64).ravel()


def _buffer_bytes(buffer) -> int:
    if buffer.data is not None and len(buffer.data):
        return len(buffer.data)
    return buffer.size if buffer.offset > 1 else 0


def _tensor_problem(tensor, buffers, type_names) -> str | None:
    shape = np.asarray(tensor.shape if tensor.shape is not None else [], dtype=np.int64)
    if (shape < 0).any():
        return f"has the negative shape {shape.tolist()}"
    if tensor.type not in type_names:
        return f"has the unknown type {tensor.type}"
    if not 0 <= tensor.buffer < len(buffers):
        return f"uses buffer {tensor.buffer}, but the model has {len(buffers)} buffers"
    nbytes = _buffer_bytes(buffers[tensor.buffer])
    element = _ELEMENT_BYTES.get(type_names[tensor.type])
    if nbytes and element and tensor.sparsity is None:
        want = int(np.prod(shape, dtype=np.int64)) * element
        if want != nbytes:
            return (
                f"has the shape {shape.tolist()} of {type_names[tensor.type]} ({want:,} bytes), "
                f"but its buffer {tensor.buffer} holds {nbytes:,} bytes"
            )
    quant = tensor.quantization
    if quant is not None and quant.scale is not None and len(quant.scale) > 1:
        dim = quant.quantizedDimension
        if not 0 <= dim < len(shape) or shape[dim] != len(quant.scale):
            return (
                f"has {len(quant.scale)} quantization scales along dimension {dim}, which does "
                f"not match its shape {shape.tolist()}"
            )
        if quant.zeroPoint is not None and len(quant.zeroPoint) != len(quant.scale):
            return (
                f"has {len(quant.scale)} quantization scales but {len(quant.zeroPoint)} zero points"
            )
    return None


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


def builtin_opcode(tree, name: str, version: int = 1) -> int:
    """The index of the operator code of builtin ``name`` (e.g. ``"QUANTIZE"``), added if missing.

    An existing code is raised to at least ``version``.
    """
    s = schema()
    builtin = getattr(s.BuiltinOperator, name)
    for index in range(len(tree.operatorCodes)):
        if builtin_code(tree, index) == builtin:
            code = tree.operatorCodes[index]
            code.version = max(code.version, version)
            return index
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = builtin
    code.version = version
    tree.operatorCodes.append(code)
    return len(tree.operatorCodes) - 1


def dequantize_opcode(tree) -> int:
    """The index of a ``DEQUANTIZE`` operator code able to read int8, added if missing."""
    return builtin_opcode(tree, "DEQUANTIZE", DEQUANTIZE_INT8_VERSION)


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


# Custom options of the LCE operators whose kernels read them (as a FlexBuffers map, without
# checks: a damaged map or a zero stride or channel count crashes the C++ runtime), and the
# integer entries each kernel reads with the values it can run.
_LCE_OPTIONS = {
    "LceBconv2d": {
        "channels_in": range(1, 2**31), "stride_height": range(1, 2**31),
        "stride_width": range(1, 2**31), "dilation_height_factor": range(1, 2**31),
        "dilation_width_factor": range(1, 2**31), "padding": range(2), "pad_values": range(2),
        "fused_activation_function": range(6),
    },
    "LceBMaxPool2d": {
        "padding": range(2), "stride_height": range(1, 2**31), "stride_width": range(1, 2**31),
        "filter_height": range(1, 2**31), "filter_width": range(1, 2**31),
    },
}  # fmt: skip
_FLEX_INLINE = {0, 1, 2, 3, 26}  # NULL, INT, UINT, FLOAT, BOOL
_FLEX_MAX_DEPTH = 32


class _FlexError(ValueError):
    pass


def _lce_options_problem(code: str, options, graph, op) -> str | None:
    """What is wrong with the custom options of an LCE operator that reads them, or None."""
    wanted = _LCE_OPTIONS.get(code)
    if wanted is None:
        return None
    data = bytes(np.asarray(options if options is not None else [], dtype=np.uint8))
    try:
        values = _flex_root_map(data)
    except _FlexError as err:
        return f"has damaged custom options ({err})"
    for key, allowed in wanted.items():
        value = values.get(key)
        if not isinstance(value, int) or value not in allowed:  # (None in range: a scan)
            return f"has the option {key}={value!r}, which its kernel cannot run"
    return _bconv_problem(values, graph, op) if code == "LceBconv2d" else None


def _bconv_problem(values: dict, graph, op) -> str | None:
    """A binary convolution whose input or filter shape its kernel cannot run, or None.

    The kernel divides by the filter's dimensions (a zero one stops the process with a
    floating point exception) and takes the channel count of its input from ``channels_in``.
    """
    inputs = _indices(op.inputs)
    if len(inputs) > 1 and inputs[1] >= 0:
        shape = _indices(graph.tensors[inputs[1]].shape).tolist()
        if len(shape) != 4 or min(shape) < 1:
            return f"has the filter shape {shape}, not 4 dimensions of at least 1"
    if len(inputs) and inputs[0] >= 0:
        tensor = graph.tensors[inputs[0]]
        channels = values["channels_in"]
        if tensor.type == schema().TensorType.INT32:  # bit-packed: 32 channels per word
            channels = -(-channels // 32)
        if tensor.shape is not None and len(tensor.shape) and tensor.shape[-1] != channels:
            return (
                f"has channels_in={values['channels_in']}, which does not match its input of "
                f"shape {list(tensor.shape)}"
            )
    return None


def _flex_uint(data: bytes, pos: int, width: int) -> int:
    if pos < 0 or pos + width > len(data):
        raise _FlexError(f"a value at byte {pos} lies outside the {len(data)} bytes")
    return int.from_bytes(data[pos : pos + width], "little")


def _flex_target(data: bytes, pos: int, width: int) -> int:
    target = pos - _flex_uint(data, pos, width)
    if target < 0 or target >= len(data):
        raise _FlexError(f"an offset at byte {pos} points outside the data")
    return target


def _flex_key(data: bytes, pos: int) -> str:
    end = data.find(b"\0", pos)
    if pos < 0 or end < 0:
        raise _FlexError(f"the key at byte {pos} is not NUL-terminated")
    return data[pos:end].decode("utf-8", "replace")


def _flex_root_map(data: bytes) -> dict:
    """The scalar entries of a FlexBuffers map, after checking every offset of the buffer.

    Integers are read as the LCE kernels read them (``AsInt32``: truncated to 32 bits).
    """
    if len(data) < 3:
        raise _FlexError(f"{len(data)} bytes are too few for a FlexBuffers root")
    width = data[-1]
    if width not in (1, 2, 4, 8) or len(data) < width + 2:
        raise _FlexError(f"the root byte width {width} is invalid")
    packed = data[-2]
    if packed >> 2 != 9:  # MAP
        raise _FlexError(f"the root is of type {packed >> 2}, not a map")
    values: dict = {}
    _flex_check(data, len(data) - 2 - width, width, packed, 0, values)
    return values


def _flex_check(data: bytes, pos: int, parent: int, packed: int, depth: int, out=None):
    """Checks the value stored at ``pos``; for the root map fills ``out`` with its scalars."""
    kind, width = packed >> 2, 1 << (packed & 3)
    if depth > _FLEX_MAX_DEPTH:
        raise _FlexError("values nest too deeply")
    if kind in _FLEX_INLINE:
        _flex_uint(data, pos, parent)
        return
    target = _flex_target(data, pos, parent)
    if kind in (6, 7, 8):  # INDIRECT_INT, INDIRECT_UINT, INDIRECT_FLOAT
        _flex_uint(data, target, width)
    elif kind == 4:  # KEY
        _flex_key(data, target)
    elif kind in (5, 25):  # STRING, BLOB: a size before the bytes (and a NUL after a string)
        size = _flex_uint(data, target - width, width)
        if target + size + (kind == 5) > len(data) or (kind == 5 and data[target + size] != 0):
            raise _FlexError(f"the string or blob at byte {target} ends outside the data")
    elif 16 <= kind <= 24:  # fixed-length typed vectors of 2, 3 or 4 scalars
        _flex_uint(data, target + ((kind - 16) // 3 + 2) * width - width, width)
    elif kind in (11, 12, 13, 14, 15, 36):  # typed vectors (14: keys)
        size = _flex_uint(data, target - width, width)
        if size:
            _flex_uint(data, target + (size - 1) * width, width)
        if kind == 14:
            for i in range(size):
                _flex_key(data, _flex_target(data, target + i * width, width))
    elif kind in (9, 10):  # MAP, VECTOR: values, then one packed type byte per value
        size = _flex_uint(data, target - width, width)
        if target + size * width + size > len(data):
            raise _FlexError(f"the vector at byte {target} ends outside the data")
        keys = []
        if kind == 9:
            keys_width = _flex_uint(data, target - 2 * width, width)
            if keys_width not in (1, 2, 4, 8):
                raise _FlexError(f"the map at byte {target} has the key width {keys_width}")
            keys_at = _flex_target(data, target - 3 * width, width)
            if _flex_uint(data, keys_at - keys_width, keys_width) != size:
                raise _FlexError(f"the keys of the map at byte {target} do not match its values")
            for i in range(size):
                keys.append(
                    _flex_key(data, _flex_target(data, keys_at + i * keys_width, keys_width))
                )
        for i in range(size):
            child = data[target + size * width + i]
            at = target + i * width
            _flex_check(data, at, width, child, depth + 1)
            if out is not None and keys:
                out[keys[i]] = _flex_scalar(data, at, width, child)
    else:
        raise _FlexError(f"a value has the unknown type {kind}")


def _flex_scalar(data: bytes, pos: int, parent: int, packed: int):
    """An integer entry as ``AsInt32`` reads it (None for other types)."""
    kind, width = packed >> 2, 1 << (packed & 3)
    if kind in (6, 7, 8):
        pos, parent, kind = _flex_target(data, pos, parent), width, kind - 5
    raw = data[pos : pos + parent]
    if kind in (1, 2, 26):  # INT, UINT, BOOL
        value = int.from_bytes(raw, "little", signed=kind == 1)
    elif kind == 3 and parent in (4, 8):
        value = float(np.frombuffer(raw, dtype="<f4" if parent == 4 else "<f8")[0])
        if not np.isfinite(value):
            return None
        value = int(value)
    else:
        return None
    return (value + 2**31) % 2**32 - 2**31
