"""Conversion reports: what LCE made of a Keras model.

The report lists the operator inventory, the flatbuffer's bytes by weight type, and the
layers that look binary in Keras but run in float in the flatbuffer, each with the likely
reason (the conversion rules of Larq Compute Engine 0.16, in
``larq_compute_engine/mlir/transforms``).
"""

from __future__ import annotations

import re

import larq as lq

from melius_larq._compat import tf
from melius_larq._keras_utils import walk_layers
from melius_larq.accounting import quantizer_precision
from melius_larq.deploy.flatbuffer import LCE_OPS, load_flatbuffer, operators, read_model

__all__ = ["binary_layer_issues", "conversion_report", "format_report"]

_TYPE_NAMES = {
    0: "float32",
    1: "float16",
    2: "int32",
    3: "uint8",
    4: "int64",
    9: "int8",
    7: "int16",
}
_FLOAT_COMPUTE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _looks_binary(layer) -> bool:
    return isinstance(layer, lq.layers_base.QuantizerBase) and (
        quantizer_precision(getattr(layer, "kernel_quantizer", None)) == 1
        or quantizer_precision(getattr(layer, "depthwise_quantizer", None)) == 1
        or quantizer_precision(getattr(layer, "input_quantizer", None)) == 1
    )


def binary_layer_issues(model: tf.keras.Model, *, target: str = "arm") -> dict[str, str]:
    """Layers that look binary in Keras but that LCE will not run as ``LceBconv2d``.

    Returns:
        ``{layer name: likely reason}`` from LCE 0.16's conversion rules.
    """
    issues = {}
    for _, layer in walk_layers(model):
        if not _looks_binary(layer):
            continue
        reason = None
        if isinstance(layer, lq.layers.QuantDense):
            if len(layer.input_shape) != 2:
                reason = (
                    "QuantDense on an input of rank > 2: LCE has no binary fully-connected op, "
                    "and only dense layers on 2D inputs are computed as 1x1 binary convs"
                )
            elif quantizer_precision(layer.input_quantizer) != 1:
                reason = "QuantDense with a float input: LCE has no binary fully-connected op"
            elif quantizer_precision(layer.kernel_quantizer) != 1:
                reason = "the kernel is not binarized (no precision-1 kernel_quantizer)"
        elif isinstance(layer, (lq.layers.QuantDepthwiseConv2D, lq.layers.QuantSeparableConv2D)):
            reason = "LCE has no binary depthwise/separable convolution"
        elif not isinstance(layer, lq.layers.QuantConv2D):
            reason = f"{type(layer).__name__} has no binary LCE op"
        elif quantizer_precision(layer.kernel_quantizer) != 1:
            reason = "the kernel is not binarized (no precision-1 kernel_quantizer)"
        elif quantizer_precision(layer.input_quantizer) != 1:
            reason = "the input is not binarized (no precision-1 input_quantizer)"
        else:
            cin = layer.input_shape[-1]
            groups = getattr(layer, "groups", 1)
            pad = getattr(layer, "pad_values", 0.0)
            if groups > 1 and (cin // groups) % 32:
                reason = (
                    f"grouped binary conv with {cin // groups} input channels per group "
                    "(LCE needs a multiple of 32)"
                )
            elif layer.padding == "same" and pad not in (0.0, 1.0):
                reason = f"pad_values={pad}: LCE only matches padding with 1.0 (or 0.0 on arm)"
            elif layer.padding == "same" and pad == 0.0 and target == "xcore":
                reason = "pad_values=0.0 (same-zero padding) is only converted for target='arm'"
        if reason:
            issues[layer.name] = reason
    return issues


def _layer_in_name(tensor_name: str, layer_names) -> str | None:
    for part in re.split(r"[/;]", tensor_name):
        if part in layer_names:
            return part
    return None


def conversion_report(
    buf, *, keras_model: tf.keras.Model | None = None, target: str = "arm"
) -> dict:
    """A JSON-serializable report of a converted flatbuffer.

    Args:
        buf: flatbuffer bytes or path.
        keras_model: the Keras model it was converted from, to list the binary layers that
            stayed float with their likely reasons.
        target: the conversion target the flatbuffer was made for.

    Returns:
        dict with ``ops`` (count per op type), ``lce_ops``, ``float_compute_ops``,
        ``size_bytes``, ``bytes_by_weight_type``, and with a Keras model ``binary_layers``,
        ``accelerated_binary_layers``, ``stayed_float`` (list of ``{layer, reason}``) and
        ``small_map_layers`` (zero-padded binary convs on maps smaller than the kernel, which
        LCE's optimized kernels compute wrongly and ``convert_model`` therefore rewrites,
        :func:`melius_larq.deploy.rewrite.zero_padding_hazards`).
    """
    buf = load_flatbuffer(buf)
    model = read_model(buf)
    ops = operators(model)
    sub = model.subgraphs[0]
    counts: dict[str, int] = {}
    for op in ops:
        counts[op["op"]] = counts.get(op["op"], 0) + 1

    bconv_filters = {op["inputs"][1] for op in ops if op["op"] == "LceBconv2d"}
    by_type: dict[str, int] = {}
    for index, tensor in enumerate(sub.tensors):
        data = model.buffers[tensor.buffer].data
        if data is None or len(data) == 0:
            continue
        kind = (
            "binary (bit-packed)"
            if index in bconv_filters
            else _TYPE_NAMES.get(tensor.type, f"type{tensor.type}")
        )
        by_type[kind] = by_type.get(kind, 0) + len(data)

    report = {
        "ops": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "lce_ops": {k: counts.get(k, 0) for k in LCE_OPS},
        "float_compute_ops": {k: counts[k] for k in _FLOAT_COMPUTE_OPS if k in counts},
        "size_bytes": len(buf),
        "bytes_by_weight_type": by_type,
    }
    if keras_model is not None:
        layers = [layer for _, layer in walk_layers(keras_model) if _looks_binary(layer)]
        names = {layer.name for layer in layers}
        issues = binary_layer_issues(keras_model, target=target)
        # LCE names a dequantize after the layer whose binarized input it turned back into
        # floats: that layer consumed floats, whatever the static rules predicted.
        for op in ops:
            if op["op"] == "LceDequantize":
                for out in op["outputs"]:
                    name = _layer_in_name(sub.tensors[out].name.decode(), names)
                    if name and name not in issues:
                        issues[name] = (
                            "its binarized input is dequantized to float: the quantizer's "
                            "forward pass is not matched as a sign, or an op sits between "
                            "the sign and the conv"
                        )
        from melius_larq.deploy.rewrite import zero_padding_hazards

        hazards = zero_padding_hazards(keras_model)
        report["small_map_layers"] = [{"layer": k, "reason": v} for k, v in hazards.items()]
        report["binary_layers"] = len(layers)
        report["accelerated_binary_layers"] = counts.get("LceBconv2d", 0)
        report["stayed_float"] = [{"layer": k, "reason": v} for k, v in issues.items()]
        unexplained = len(layers) - len(issues) - counts.get("LceBconv2d", 0)
        if unexplained > 0:
            report["stayed_float"].append(
                {"layer": f"({unexplained} more, not attributable by name)", "reason": "unknown"}
            )
        if not layers:
            report["warning"] = "the model has no binary layers: nothing for LCE to accelerate"
    return report


def format_report(report: dict) -> str:
    """The report as human-readable text (Markdown tables)."""
    lines = ["| op | count |", "| --- | ---: |"]
    lines += [f"| {op} | {n} |" for op, n in report["ops"].items()]
    lines += ["", f"Flatbuffer size: {report['size_bytes'] / 2**20:.3f} MiB", "",
              "| weights | bytes |", "| --- | ---: |"]  # fmt: skip
    lines += [f"| {k} | {v:,} |" for k, v in report["bytes_by_weight_type"].items()]
    if "binary_layers" in report:
        lines += [
            "",
            f"Binary layers in Keras: {report['binary_layers']}; run as LceBconv2d: "
            f"{report['accelerated_binary_layers']}",
        ]
        for item in report["stayed_float"]:
            lines.append(f"  stayed float: {item['layer']}: {item['reason']}")
        for item in report.get("small_map_layers", []):
            lines.append(f"  rewritten for LCE: {item['layer']}: {item['reason']}")
    if "warning" in report:
        lines.append(f"warning: {report['warning']}")
    return "\n".join(lines)
