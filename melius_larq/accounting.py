"""Size and operation accounting in the MeliusNet authors' convention.

This reproduces ``print_summary`` of BMXNet-v2 (``python/mxnet/visualization.py``):

* parameters: conv ``Cin*Cout*k*k/groups`` (+bias), BatchNorm **2 per channel** (gamma, beta;
  running statistics are not counted), fully connected ``(Cin+1)*Cout``;
* size: binary weights 1 bit, every other parameter 32 bit, in MiB (base 1024);
* FLOPs: conv multiply-accumulates ``Hout*Wout*Cin*k*k*Cout/groups`` of the full-precision
  convolutions (BN, pooling, ReLU and the fully connected layer are not counted);
* BOPs: the same count for the binary convolutions;
* OPS = BOPs / 64 + FLOPs, the "OPS" column of the MeliusNet paper.

References:
    - [MeliusNet](https://arxiv.org/abs/2001.05936), Bethge et al. 2020, Table 1 and 2.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import larq as lq
import numpy as np

from melius_larq._compat import tf
from melius_larq._keras_utils import walk_layers

__all__ = ["summary", "layer_accounting"]

BITS_FP = 32
BITS_BINARY = 1
BOPS_PER_OP = 64  # a 64-bit CPU does 64 binary operations per instruction (paper, sec. 5)


def quantizer_precision(quantizer) -> int | None:
    """The ``precision`` of a larq quantizer (1 for binary), None without one."""
    return getattr(quantizer, "precision", None) if quantizer is not None else None


def _is_binary_kernel(layer) -> bool:
    return (
        isinstance(layer, lq.layers.QuantConv2D)
        and quantizer_precision(layer.kernel_quantizer) == 1
    )


def _is_binary_conv(layer) -> bool:
    return _is_binary_kernel(layer) and quantizer_precision(layer.input_quantizer) == 1


def _part(name: str) -> str:
    match = re.match(r"(stem|section_\d+_block|section_\d+_transition|head)", name)
    return match.group(1).replace("_block", " blocks").replace("_", " ") if match else "other"


def layer_accounting(layer) -> dict:
    """Counts of one layer: ``params``, ``binary_params``, ``macs``, ``binary``."""
    out = {"params": 0, "binary_params": 0, "macs": 0, "binary": False}
    # Conv2D includes QuantConv2D; DepthwiseConv2D (MobileNet) is not a Conv2D subclass in
    # Keras 2, so it is named here: its kernel has Cin*k*k weights and as many MACs per pixel.
    if isinstance(layer, (tf.keras.layers.Conv2D, tf.keras.layers.DepthwiseConv2D)):
        kernel = getattr(layer, "depthwise_kernel", None)
        if kernel is None:
            kernel = layer.kernel
        weights = int(np.prod(kernel.shape))
        bias = int(layer.bias.shape[0]) if getattr(layer, "bias", None) is not None else 0
        _, h, w, _ = layer.output_shape
        out["macs"] = int(h) * int(w) * weights
        if _is_binary_kernel(layer):
            out["binary_params"] = weights
        out["params"] = weights + bias
        out["binary"] = _is_binary_conv(layer)
    elif isinstance(layer, tf.keras.layers.BatchNormalization):
        out["params"] = 2 * int(layer.moving_mean.shape[0])  # gamma and beta
    elif isinstance(layer, tf.keras.Model):
        for _, sub in walk_layers(layer):
            counts = layer_accounting(sub)
            for key in ("params", "binary_params", "macs"):
                out[key] += counts[key]
    else:  # Dense (kernel + bias) and any other layer with weights: full precision
        out["params"] = int(layer.count_params()) if layer.built else 0
    return out


def summary(model: tf.keras.Model, *, print_fn: Callable[[str], None] | None = print) -> dict:
    """The authors' accounting of a model, printed as a table and returned as a mapping.

    Args:
        model: a built Keras model (the counts use its static output shapes, so build it at
            the resolution you want to account for, e.g. 224x224).
        print_fn: called with each line of the table; ``None`` prints nothing.

    Returns:
        A dict with ``total_params`` (BN counted as 2 per channel), ``binary_params``,
        ``size_mib`` (binary 1 bit, others 32 bit), ``bops``, ``flops`` (full-precision conv
        MACs, FC excluded), ``ops`` (= bops / 64 + flops) and, for comparison,
        ``keras_params`` (``model.count_params()``, BN counted as 4 per channel).

    Example:
        >>> import melius_larq
        >>> counts = melius_larq.summary(melius_larq.MeliusNet22(), print_fn=None)
        >>> counts["total_params"], round(counts["size_mib"], 2)
        (6944584, 3.88)
    """
    parts: dict[str, dict] = {}
    for layer in model.layers:
        counts = layer_accounting(layer)
        part = parts.setdefault(
            _part(layer.name), {"params": 0, "binary_params": 0, "bops": 0, "flops": 0}
        )
        part["params"] += counts["params"]
        part["binary_params"] += counts["binary_params"]
        part["bops" if counts["binary"] else "flops"] += counts["macs"]

    total = sum(p["params"] for p in parts.values())
    binary = sum(p["binary_params"] for p in parts.values())
    bops = sum(p["bops"] for p in parts.values())
    flops = sum(p["flops"] for p in parts.values())
    result = {
        "total_params": total,
        "binary_params": binary,
        "size_mib": ((total - binary) * BITS_FP + binary * BITS_BINARY) / 8 / 2**20,
        "bops": bops,
        "flops": flops,
        "ops": bops / BOPS_PER_OP + flops,
        "keras_params": int(model.count_params()),
    }
    if print_fn is not None:
        print_fn(format_table(model.name, parts, result))
    return result


def format_table(name: str, parts: dict[str, dict], result: dict) -> str:
    """Markdown table of the per-part counts and the totals."""
    lines = [
        f"{name}: MeliusNet accounting (BN = 2 params/channel; binary 1 bit, other 32 bit)",
        "",
        "| part | params | binary params | BOPs | FLOPs |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for part, c in parts.items():
        if c["params"] or c["bops"] or c["flops"]:
            lines.append(
                f"| {part} | {c['params']:,} | {c['binary_params']:,} | "
                f"{c['bops']:.4g} | {c['flops']:.4g} |"
            )
    lines += [
        f"| **total** | **{result['total_params']:,}** | **{result['binary_params']:,}** | "
        f"**{result['bops']:.4g}** | **{result['flops']:.4g}** |",
        "",
        f"Size: {result['size_mib']:.2f} MiB    OPS = BOPs/64 + FLOPs = {result['ops']:.4g}    "
        f"(Keras count_params: {result['keras_params']:,})",
    ]
    return "\n".join(lines)
