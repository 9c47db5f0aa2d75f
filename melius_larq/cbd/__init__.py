"""CBD: composite binary decomposition of real-valued Keras networks.

Each Conv2D and Dense kernel becomes a sign plane plus J magnitude bit-planes on a per-layer
grid; the sparse high-order planes are stored exactly as GF(2) products ``U V mod 2`` at their
true rank. ``compress_model`` returns a new model with the reconstructed weights and a report;
``save_cbd``/``load_cbd`` store the planes and factors in one file; ``export_tflite`` writes a
TFLite model whose kernels are the CBD integers in int8. ``compress_model(...,
method="plain")`` is the baseline: per-output-channel symmetric b-bit rounding with the same
report and bit accounting.

Example:
    >>> from melius_larq.cbd import compress_model, save_cbd  # doctest: +SKIP
    >>> small, report = compress_model(model, bits=6, bottleneck=0.2)  # doctest: +SKIP
    >>> print(report)  # doctest: +SKIP
    >>> base, plain = compress_model(model, bits=7, method="plain")  # doctest: +SKIP
    >>> save_cbd("model.cbd", report)  # doctest: +SKIP

References:
    - [Composite Binary Decomposition Networks](https://arxiv.org/abs/1811.06668),
      Qiaoben et al., AAAI 2019.
"""

from melius_larq.cbd.compress import (
    METHODS,
    CompressionReport,
    Exclusion,
    LayerReport,
    compress_model,
    compressible_layers,
    replace_kernels,
)
from melius_larq.cbd.decompose import (
    FALLBACKS,
    LayerCBD,
    Plane,
    decompose_kernel,
    decompose_matrix,
    find_scale,
    greedy_planes,
    grid,
    matricize,
    quantize,
    unmatricize,
)
from melius_larq.cbd.exactness import integer_exact, layer_integer_exactness, two_conv_kernels
from melius_larq.cbd.gf2 import gf2_factor, gf2_matmul, gf2_rank, pack_rows, unpack_rows
from melius_larq.cbd.plain import PLAIN_BITS, PlainLayer, quantize_kernel_plain
from melius_larq.cbd.storage import CBDFile, apply_cbd, load_cbd, save_cbd
from melius_larq.cbd.tflite import TFLiteExport, export_tflite, int8_kernels, verify_tflite

__all__ = [
    "FALLBACKS",
    "METHODS",
    "PLAIN_BITS",
    "CBDFile",
    "CompressionReport",
    "Exclusion",
    "LayerCBD",
    "LayerReport",
    "PlainLayer",
    "Plane",
    "TFLiteExport",
    "apply_cbd",
    "compress_model",
    "compressible_layers",
    "decompose_kernel",
    "decompose_matrix",
    "export_tflite",
    "find_scale",
    "gf2_factor",
    "gf2_matmul",
    "gf2_rank",
    "greedy_planes",
    "grid",
    "int8_kernels",
    "integer_exact",
    "layer_integer_exactness",
    "load_cbd",
    "matricize",
    "pack_rows",
    "quantize",
    "quantize_kernel_plain",
    "replace_kernels",
    "save_cbd",
    "two_conv_kernels",
    "unmatricize",
    "unpack_rows",
    "verify_tflite",
]
