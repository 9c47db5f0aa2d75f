"""TFLite export of a CBD-compressed model with int8 kernels that hold the CBD integers.

Every compressed weight is ``m Delta k S`` with an integer ``|k| <= 2^J - 1``, so for J <= 7
the signed codes fit int8 and one float32 scale ``m Delta`` per tensor reproduces the weights
exactly. The export converts the compressed Keras model's inference function with
``tf.lite.TFLiteConverter`` (float weights) and then rewrites the flatbuffer: each compressed
kernel becomes an int8 constant holding ``S k`` with its scale, followed by a ``DEQUANTIZE``
operator that feeds the original float32 tensor to the convolution or fully connected
operator. Inference stays in float, so the interpreter computes what the Keras model computes;
only storage is int8.

Where the converter folded a following BatchNormalization into the kernel, each output channel
is the CBD kernel times a per-channel factor; those tensors are stored per-channel
(``quantized_dimension`` 0) with the same integer codes and one scale per channel.

References:
    - [Composite Binary Decomposition Networks](https://arxiv.org/abs/1811.06668),
      Qiaoben et al., AAAI 2019, for the integer codes exported here; the int8 TFLite
      export is this package's own.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import numpy as np

from melius_larq import _tflite
from melius_larq._compat import tf
from melius_larq._io import write_atomic
from melius_larq.cbd.compress import CompressionReport
from melius_larq.cbd.decompose import LayerCBD, unmatricize

__all__ = [
    "EXACT_INT8_MAX_BITS",
    "TFLiteExport",
    "export_tflite",
    "int8_kernels",
    "tflite_layout",
    "verify_tflite",
]

EXACT_INT8_MAX_BITS = 7  # |S k| <= 2^J - 1 <= 127 fits int8
# A folded kernel is float32(W_hat * g_c) for a per-channel factor g_c; recovering g_c from the
# codes leaves float32 rounding (about 1e-7 relative). 1e-5 accepts that with margin and
# still rejects any tensor that is not a per-channel multiple of the codes.
FOLD_MATCH_RTOL = 1e-5
# The interpreter runs the same float32 graph with another summation order; 1e-4 relative to
# the output's magnitude covers that for the small models checked (observed: about 1e-6).
OUTPUT_RTOL = 1e-4
# Absolute floor for outputs that are all near zero, where a relative bound means nothing.
OUTPUT_ATOL = 1e-6
INT8_TENSOR_PREFIX = "cbd_int8/"


def tflite_layout(kernel: np.ndarray) -> np.ndarray:
    """A Keras kernel in TFLite's layout: Conv2D ``(cout, kh, kw, cin)``, Dense ``(out, in)``."""
    kernel = np.asarray(kernel)
    return kernel.transpose(3, 0, 1, 2) if kernel.ndim == 4 else kernel.T


def _signed_codes_tflite(layer: LayerCBD) -> np.ndarray:
    codes = unmatricize(layer.signed_codes(), layer.kernel_shape)
    return np.ascontiguousarray(tflite_layout(codes))


@dataclasses.dataclass(frozen=True)
class TFLiteExport:
    """The exported flatbuffer and how each compressed kernel was stored.

    Attributes:
        flatbuffer: the ``.tflite`` bytes.
        layers: ``{layer path: "per-tensor" | "per-channel"}``.
        float_bytes: size of the float-weight flatbuffer before the rewrite.
    """

    flatbuffer: bytes
    layers: dict[str, str]
    float_bytes: int


def _match(weights: np.ndarray, codes: np.ndarray, step: np.float32) -> np.ndarray | None:
    """Scales making ``codes * scale`` equal ``weights``: one (exact) or per channel; else None."""
    if weights.shape != codes.shape:
        return None
    if np.array_equal(codes.astype(np.float32) * step, weights):
        return np.array([step], dtype=np.float32)
    flat_w = weights.reshape(weights.shape[0], -1).astype(np.float64)
    flat_k = codes.reshape(codes.shape[0], -1).astype(np.float64)
    scales = np.empty(weights.shape[0], dtype=np.float32)
    for c, (w, k) in enumerate(zip(flat_w, flat_k)):
        norm = float(k @ k)
        if norm == 0:
            if np.any(w):
                return None
            scales[c] = step if step > 0 else np.float32(1)
            continue
        scale = np.float32((w @ k) / norm)
        if scale <= 0 or np.max(np.abs(w - float(scale) * k)) > FOLD_MATCH_RTOL * float(
            scale
        ) * np.max(np.abs(k)):
            return None
        scales[c] = scale
    return scales


def export_tflite(
    model: tf.keras.Model,
    report: CompressionReport,
    path: str | os.PathLike | None = None,
) -> TFLiteExport:
    """Converts a compressed model to TFLite with its CBD kernels stored as int8.

    Args:
        model: the model returned by ``compress_model`` (float weights ``W_hat``).
        report: its :class:`~melius_larq.cbd.compress.CompressionReport`.
        path: where to write the ``.tflite`` (atomically), or None.

    Returns:
        The :class:`TFLiteExport`.

    Raises:
        ValueError: for a report that is not CBD's, J > 7 (codes beyond int8) or when a
            compressed kernel cannot be found in the converted graph.
    """
    if report.method != "cbd":
        raise ValueError(
            f"export_tflite writes CBD codes, but got a report of method={report.method!r}."
        )
    if report.bits > EXACT_INT8_MAX_BITS:
        raise ValueError(
            f"int8 export is exact only for J <= {EXACT_INT8_MAX_BITS} (codes up to 127), "
            f"but the model was compressed with J={report.bits} (codes up to {2**report.bits - 1})."
        )
    schema = _tflite.schema()
    float_buf = _tflite.convert_float(model)
    tree = _tflite.read_model(float_buf)
    graph = tree.subgraphs[0]
    dequantize = _tflite.dequantize_opcode(tree)

    candidates = [
        t
        for t, tensor in enumerate(graph.tensors)
        if tensor.type == schema.TensorType.FLOAT32
        and tree.buffers[tensor.buffer].data is not None
        and len(tree.buffers[tensor.buffer].data) > 0
    ]
    used: set[int] = set()
    stored: dict[str, str] = {}
    new_ops = []
    for name, layer in report.decompositions.items():
        codes = _signed_codes_tflite(layer)
        found = None
        for t in candidates:
            if t in used or tuple(graph.tensors[t].shape) != codes.shape:
                continue
            data = np.asarray(tree.buffers[graph.tensors[t].buffer].data, dtype=np.uint8)
            weights = data.view("<f4").reshape(codes.shape)
            scales = _match(weights, codes, layer.step)
            if scales is not None:
                found = (t, scales)
                break
        if found is None:
            raise ValueError(
                f"Could not find the kernel of layer {name!r} (TFLite shape {codes.shape}) in "
                "the converted graph; the converter may have fused it with another operation."
            )
        t, scales = found
        used.add(t)
        new_ops.append(
            _tflite.store_int8(
                tree, t, codes, scales, name=f"{INT8_TENSOR_PREFIX}{name}", dequantize=dequantize
            )  # fmt: skip
        )
        stored[name] = "per-tensor" if scales.size == 1 else "per-channel"
    graph.operators = new_ops + list(graph.operators)
    result = TFLiteExport(_tflite.pack(tree), stored, len(float_buf))
    if path is not None:
        write_atomic(result.flatbuffer, path)
    return result


def int8_kernels(flatbuffer: bytes) -> dict[str, dict]:
    """The int8 CBD kernels of an exported flatbuffer, read through the TFLite interpreter.

    Returns:
        ``{layer path: {"codes": int8 array (TFLite layout), "scales": float32 array,
        "dequantized": float32 array}}``, dequantized as the DEQUANTIZE kernel does
        (``code * scale`` rounded once to float32).
    """
    interpreter = tf.lite.Interpreter(model_content=_tflite.load_flatbuffer(flatbuffer))
    out = {}
    for detail in interpreter.get_tensor_details():
        if not detail["name"].startswith(INT8_TENSOR_PREFIX):
            continue
        codes = interpreter.get_tensor(detail["index"])
        scales = np.asarray(detail["quantization_parameters"]["scales"], dtype=np.float32)
        shape = (-1,) + (1,) * (codes.ndim - 1)
        dequantized = codes.astype(np.float32) * (
            scales.reshape(shape) if scales.size > 1 else scales[0]
        )
        out[detail["name"][len(INT8_TENSOR_PREFIX) :]] = {
            "codes": codes,
            "scales": scales,
            "dequantized": dequantized,
        }
    return out


def verify_tflite(
    flatbuffer: bytes,
    model: tf.keras.Model,
    decompositions: Mapping[str, LayerCBD],
    *,
    samples: int = 4,
    seed: int = 0,
) -> dict:
    """Checks an export against the compressed Keras model.

    * every compressed kernel is present as int8 with codes equal to the CBD integers ``S k``;
    * a per-tensor kernel dequantizes bit for bit to the Keras kernel (in TFLite layout);
    * the interpreter's outputs on ``samples`` random inputs match Keras within
      ``OUTPUT_RTOL`` of the output's largest magnitude plus ``OUTPUT_ATOL``.

    Returns:
        ``{"layers": {path: {"codes_equal", "storage", "weights_bit_exact"}},
        "max_abs_diff": float, "output_scale": float, "ok": bool}``.
    """
    kernels = int8_kernels(flatbuffer)
    layers = {}
    for name, layer in decompositions.items():
        entry = kernels.get(name)
        if entry is None:
            layers[name] = {"codes_equal": False, "storage": None, "weights_bit_exact": False}
            continue
        codes_equal = bool(np.array_equal(entry["codes"], _signed_codes_tflite(layer)))
        keras_kernel = tflite_layout(_get_kernel(model, name))
        per_tensor = entry["scales"].size == 1
        exact = per_tensor and np.array_equal(
            entry["dequantized"].view(np.uint32), keras_kernel.view(np.uint32)
        )
        layers[name] = {
            "codes_equal": codes_equal,
            "storage": "per-tensor" if per_tensor else "per-channel",
            "weights_bit_exact": bool(exact),
        }
    interpreter = tf.lite.Interpreter(model_content=_tflite.load_flatbuffer(flatbuffer))
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    rng = np.random.default_rng(seed)
    max_diff = 0.0
    scale = 0.0
    for _ in range(samples):
        x = rng.standard_normal(inp["shape"]).astype(np.float32)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        got = interpreter.get_tensor(out["index"])
        want = model(x, training=False).numpy()
        max_diff = max(max_diff, float(np.max(np.abs(got - want))))
        scale = max(scale, float(np.max(np.abs(want))))
    ok = (
        all(v["codes_equal"] for v in layers.values())
        and all(v["weights_bit_exact"] for v in layers.values() if v["storage"] == "per-tensor")
        and max_diff <= OUTPUT_RTOL * scale + OUTPUT_ATOL
    )
    return {"layers": layers, "max_abs_diff": max_diff, "output_scale": scale, "ok": bool(ok)}


def _get_kernel(model: tf.keras.Model, path: str) -> np.ndarray:
    layer = model
    for part in path.split("/"):
        layer = layer.get_layer(part)
    return layer.kernel.numpy()
