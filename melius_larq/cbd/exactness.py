"""Whether a decomposed plane can run as two binary convolutions (integer exactness).

CBD stores a high plane exactly as ``B = U V (mod 2)``. That is a storage identity: parity is
not linear over the integers, so ``B x = U (V x)`` holds for real ``x`` only when the integer
product ``U V`` itself equals ``B`` (no entry 2 or more). Only then does the plane run as a
``1 x kw`` convolution with kernel ``V`` (``cin -> r`` channels, stride ``(1, s)``) followed by
a ``kh x 1`` convolution with kernel ``U`` (``r -> cout``, stride ``(s, 1)``), at ``r (h + w)``
instead of ``h w`` multiply-accumulates per output position. The sign also multiplies after
the product, so a layer's signed plane ``S . B = B+ - B-`` needs ``B+ = B & (S > 0)`` and
``B- = B & (S < 0)`` each factored exactly over the integers; this module checks both.

References:
    - [Composite Binary Decomposition Networks](https://arxiv.org/abs/1811.06668),
      Qiaoben et al., AAAI 2019 (the two-convolution reading of a rank-r plane).
"""

from __future__ import annotations

import numpy as np

from melius_larq.cbd.decompose import LayerCBD
from melius_larq.cbd.gf2 import gf2_factor

__all__ = ["integer_exact", "layer_integer_exactness", "two_conv_kernels"]


def integer_exact(left: np.ndarray, right: np.ndarray, plane: np.ndarray) -> bool:
    """True when the integer product ``left @ right`` equals the {0,1} ``plane``."""
    if left.shape[1] == 0:
        return not np.any(plane)
    product = left.astype(np.float32) @ right.astype(np.float32)  # exact: sums < 2**24
    return bool(np.array_equal(product, plane.astype(np.float32)))


def _factor_check(plane: np.ndarray) -> dict:
    rank, left, right = gf2_factor(plane)
    return {"rank": rank, "exact": integer_exact(left, right, plane)}


def layer_integer_exactness(layer: LayerCBD) -> dict:
    """The integer-exactness check of every plane ``i >= 0`` of a layer.

    Returns:
        ``{"planes": {i: {"rank", "unsigned", "positive", "negative"}}, "unsigned": bool,
        "signed": bool, "two_conv_macs": int, "dense_macs": int}``. ``unsigned`` is whether
        ``U V == B`` over the integers for the plane's own factors; ``positive`` and
        ``negative`` give the rank and exactness of ``B+`` and ``B-``. The layer passes
        (``signed``) when every high plane's ``B+`` and ``B-`` are integer-exact;
        ``two_conv_macs`` counts ``(r+ + r-) (h + w)`` over those planes against
        ``dense_macs = h w`` per plane.
    """
    h, w = layer.shape
    planes = {}
    two_conv = 0
    dense = 0
    for p in layer.planes:
        if p.exponent < 0:
            continue
        plane = layer.plane(p.exponent)
        _, left, right = gf2_factor(plane) if p.factors is None else (p.rank, *p.factors)
        positive = _factor_check(plane & ~layer.negative)
        negative = _factor_check(plane & layer.negative)
        planes[p.exponent] = {
            "rank": p.rank,
            "unsigned": integer_exact(left, right, plane),
            "positive": positive,
            "negative": negative,
        }
        two_conv += (positive["rank"] + negative["rank"]) * (h + w)
        dense += h * w
    return {
        "planes": planes,
        "unsigned": all(v["unsigned"] for v in planes.values()),
        "signed": all(v["positive"]["exact"] and v["negative"]["exact"] for v in planes.values()),
        "two_conv_macs": two_conv,
        "dense_macs": dense,
    }


def two_conv_kernels(
    left: np.ndarray, right: np.ndarray, kernel_shape: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Keras kernels of the two convolutions that apply a factored conv plane.

    With the CBD matrix indexed as rows ``(o, y)`` and columns ``(i, x)``,
    ``V[t, (i, x)]`` becomes a ``1 x kw`` kernel ``(1, kw, cin, r)`` and ``U[(o, y), t]`` a
    ``kh x 1`` kernel ``(kh, 1, r, cout)``. Run the first with strides ``(1, s)`` and the
    second with ``(s, 1)`` (same padding mode as the layer); the pair equals the convolution
    with kernel ``B`` exactly when ``U V == B`` over the integers.

    Returns:
        ``(first_kernel, second_kernel)`` as float32.
    """
    kh, kw, cin, cout = kernel_shape
    rank = left.shape[1]
    first = right.reshape(rank, cin, kw).transpose(2, 1, 0)[np.newaxis]  # (1, kw, cin, r)
    second = left.reshape(cout, kh, rank).transpose(1, 2, 0)[:, np.newaxis]  # (kh, 1, r, cout)
    return first.astype(np.float32), second.astype(np.float32)
