"""Byte-level int8 edits and summaries of LCE/TFLite flatbuffers.

:func:`store_weights_int8` stores float weights as per-channel int8 codes plus a
``DEQUANTIZE`` operator (weight-only int8); :func:`float_bconv_outputs` lets binary convs
write float32 followed by a ``QUANTIZE`` (faster than LCE's int8 output path on x86);
:func:`int8_flatbuffer_summary` counts which compute ops run in int8.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "INT8_WEIGHT_PREFIX",
    "float_bconv_outputs",
    "int8_flatbuffer_summary",
    "quantize_per_channel",
    "store_weights_int8",
]

# (builtin operator, input index of the weights, quantized dimension of that tensor)
_WEIGHT_INPUTS = {
    "CONV_2D": (1, 0),  # (cout, kh, kw, cin): per output channel
    "DEPTHWISE_CONV_2D": (1, 3),  # (1, kh, kw, channels): per channel
    "FULLY_CONNECTED": (1, 0),  # (out, in): per output unit
}
INT8_WEIGHT_PREFIX = "int8_weights/"


def int8_flatbuffer_summary(buf) -> dict:
    """Which compute ops run in int8, by the type of each operator's first output.

    Args:
        buf: an LCE or TFLite flatbuffer (bytes or a path).

    Returns:
        ``{op: {"int8": n, "float32": m, ...}}``; types other than int8, float32 and int32
        count as ``"other"``.
    """
    from melius_larq.deploy.flatbuffer import operators, read_model

    fb = read_model(buf)
    sub = fb.subgraphs[0]
    summary: dict[str, dict[str, int]] = {}
    for op in operators(fb):
        kind = {0: "float32", 9: "int8", 2: "int32"}.get(
            sub.tensors[op["outputs"][0]].type, "other"
        )
        summary.setdefault(op["op"], {}).setdefault(kind, 0)
        summary[op["op"]][kind] += 1
    return summary


def quantize_per_channel(weights: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 codes in [-127, 127] and one scale per slice along ``axis``.

    ``codes * scales`` (broadcast along ``axis``) is within half a scale step of ``weights``;
    an all-zero slice gets scale 1 and zero codes.

    Args:
        weights: float weights.
        axis: the quantized dimension (one scale per index along it).

    Returns:
        ``(codes, scales)``: int8 codes of the shape of ``weights`` and float32 scales.
    """
    w = np.asarray(weights, dtype=np.float32)
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    scales = np.max(np.abs(moved), axis=1) / 127.0
    scales = np.where(scales > 0, scales, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    codes = np.clip(np.round(w / scales.reshape(shape)), -127, 127).astype(np.int8)
    return codes, scales


def store_weights_int8(buf: bytes, *, min_elements: int = 256, skip=()) -> bytes:
    """A flatbuffer whose float conv / depthwise / fully-connected weights are stored as int8.

    Weight-only int8 ("W8A32"): each float32 weight tensor of at least ``min_elements``
    values becomes per-channel symmetric int8 codes followed by a ``DEQUANTIZE`` operator, so
    the file shrinks to about 1 byte per non-binary weight while every layer still computes
    in float32 on the dequantized weights (which differ from the originals by at most half a
    quantization step). No calibration data is needed. Binary convolutions keep their
    bit-packed weights. Compare :func:`~melius_larq.deploy.int8.convert_int8`, which also runs
    the non-binary layers in int8 but quantizes their activations.

    Args:
        buf: an LCE or TFLite flatbuffer (float non-binary layers).
        min_elements: leave smaller weight tensors (biases, tiny kernels) in float32.
        skip: weights stay float32 where one of these substrings is in the name of the
            weight tensor or of its operator's output (usually the Keras layer's name, e.g.
            ``("stem",)``; the converter names a model's final output tensor
            ``StatefulPartitionedCall`` instead).

    Returns:
        The rewritten flatbuffer (the input is not modified).
    """
    from melius_larq import _tflite

    schema = _tflite.schema()
    tree = _tflite.read_model(buf)
    names = {getattr(schema.BuiltinOperator, k): v for k, v in _WEIGHT_INPUTS.items()}
    dequantize = _tflite.dequantize_opcode(tree)
    graph = tree.subgraphs[0]
    done: set[int] = set()
    new_ops = []
    for op in graph.operators:
        code = _tflite.builtin_code(tree, op.opcodeIndex)
        if code not in names or op.inputs is None or len(op.inputs) <= names[code][0]:
            continue
        index, axis = names[code]
        t = int(op.inputs[index])
        if t < 0 or t in done:  # -1: an optional input that is absent
            continue
        tensor = graph.tensors[t]
        data = tree.buffers[tensor.buffer].data
        if tensor.type != schema.TensorType.FLOAT32 or data is None:
            continue
        shape = tuple(int(d) for d in tensor.shape)
        if len(data) != 4 * int(np.prod(shape)) or np.prod(shape) < min_elements:
            continue
        weights = np.asarray(data, dtype=np.uint8).view("<f4").reshape(shape)
        codes, scales = quantize_per_channel(weights, axis)
        original = (tensor.name or b"").decode(errors="replace")
        consumer = (graph.tensors[int(op.outputs[0])].name or b"").decode(errors="replace")
        if any(part in original or part in consumer for part in skip):
            continue
        name = INT8_WEIGHT_PREFIX + original
        new_ops.append(_tflite.store_int8(tree, t, codes, scales, quantized_dimension=axis,
                                          name=name, dequantize=dequantize))  # fmt: skip
        done.add(t)
    graph.operators = new_ops + list(graph.operators)
    return _tflite.pack(tree)


def float_bconv_outputs(buf: bytes) -> bytes:
    """A flatbuffer whose int8-writing ``LceBconv2d`` ops write float32 plus a ``QUANTIZE``.

    ``LceBconv2d`` computes ``accumulator * multiplier + bias`` in float for every output
    type; with an int8 output LCE rounds that to the output tensor's scale itself. Here each
    such op writes a new float32 tensor instead and a TFLite ``QUANTIZE`` (which XNNPACK
    runs vectorised) produces the original int8 tensor, so every consumer is unchanged and
    the int8 values differ from LCE's own rounding by at most one step at ties. On x86
    (LCE 0.16's portable kernels) this is faster with and without XNNPACK, measured in
    ``docs/deployment.md`` (int8 section); aarch64 builds have their own int8 output
    kernels, so time both there (``convert_int8(..., bconv_float_outputs=False)``).

    Args:
        buf: an LCE flatbuffer (bytes or a path).

    Returns:
        The rewritten flatbuffer (the input is not modified); existing tensors keep their
        indices, so signatures stay valid.
    """
    from melius_larq import _tflite

    schema = _tflite.schema()
    tree = _tflite.read_model(buf)
    graph = tree.subgraphs[0]
    quantize = None
    operators = []
    for op in graph.operators:
        operators.append(op)
        code = tree.operatorCodes[op.opcodeIndex]
        if (code.customCode or b"") != b"LceBconv2d":
            continue
        target = int(op.outputs[0])
        int8 = graph.tensors[target]
        if int8.type != schema.TensorType.INT8:
            continue
        if quantize is None:
            quantize = _tflite.builtin_opcode(tree, "QUANTIZE")
        tree.buffers.append(schema.BufferT())
        wide = schema.TensorT()
        wide.shape = np.array(int8.shape, dtype=np.int32)
        wide.shapeSignature = int8.shapeSignature
        wide.type = schema.TensorType.FLOAT32
        wide.buffer = len(tree.buffers) - 1
        wide.name = (int8.name or b"") + b"/float"
        graph.tensors.append(wide)
        op.outputs = np.array([len(graph.tensors) - 1], dtype=np.int32)
        requantize = schema.OperatorT()
        requantize.opcodeIndex = quantize
        requantize.inputs = np.array([len(graph.tensors) - 1], dtype=np.int32)
        requantize.outputs = np.array([target], dtype=np.int32)
        requantize.builtinOptionsType = schema.BuiltinOptions.QuantizeOptions
        requantize.builtinOptions = schema.QuantizeOptionsT()
        operators.append(requantize)
    graph.operators = operators
    return _tflite.pack(tree)
