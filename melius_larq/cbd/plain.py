"""Plain per-output-channel symmetric rounding: the baseline CBD is measured against.

Each output channel ``c`` of a Conv2D kernel ``(kh, kw, cin, cout)`` or a Dense kernel
``(in, out)`` (the last axis in both) gets one float32 scale and b-bit integer codes:

.. math::

    s_c = \\frac{\\max |W_{:,c}|}{2^{b-1} - 1}, \\qquad
    q = \\operatorname{clip}(\\operatorname{round}(W / s_c), -(2^{b-1} - 1), 2^{b-1} - 1),
    \\qquad \\hat W = q \\, s_c .

**Levels.** ``q`` takes the ``2^b - 1`` values ``-(2^(b-1) - 1) .. 2^(b-1) - 1``: the grid is
symmetric, zero is exact and the largest weight of each channel is exact up to float32
rounding. The two's-complement code ``-2^(b-1)`` is left unused on purpose, so that b-bit plain
rounding has exactly the levels of CBD's sign-magnitude codes with ``J = b - 1`` magnitude
planes (sign plane + J planes, ``2^(J+1) - 1`` levels). The two methods then differ only in
what the comparison is about: CBD's per-layer grid, shifted by its scale ``a``, and the GF(2)
factoring of its high planes, against one plain scale per output channel.

**Bit accounting.** A weight costs ``b`` bits (a sign and ``b - 1`` magnitude bits, the same
as CBD's dense storage at ``J = b - 1``) and every output channel one float32 scale, 32 bits.
The scales are reported separately (``scale_bits``) so that both the payload alone and the
payload with the scales can be compared; CBD's two floats per layer (``m`` and ``a``) are
counted the same way, as 64 bits. Biases and normalisation layers stay float32 and are counted
by neither.

Rounding is round-half-to-even (``np.rint``); the scale is ``max|W_c| / (2^(b-1) - 1)``
rounded once to float32, and ``W_hat = float32(q) * s_c`` in float32, so every weight is
within ``s_c / 2`` of the original (plus float32 rounding). An all-zero channel gets scale 0
and codes 0.

References:
    - [Composite Binary Decomposition Networks](https://arxiv.org/abs/1811.06668),
      Qiaoben et al., AAAI 2019 (the method this baseline is compared with).
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["GRANULARITIES", "PLAIN_BITS", "PlainLayer", "quantize_kernel_plain"]

PLAIN_BITS = (2, 8)  # b: at least one magnitude bit; codes up to 127 fit int8
SCALE_BITS = 32  # one float32 scale per output channel (or per layer)
# "channel": one scale per output channel (the baseline); "layer": one scale for the whole
# kernel, CBD's own granularity (its m = max|W|), which isolates what CBD's factoring adds.
GRANULARITIES = ("channel", "layer")


def _check_plain_bits(bits) -> int:
    low, high = PLAIN_BITS
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not low <= bits <= high:
        raise ValueError(
            f"Expected `bits` (b, the bits per weight including the sign) to be an integer in "
            f"{low}..{high} for method='plain', but got {bits!r}."
        )
    return int(bits)


@dataclasses.dataclass(frozen=True, eq=False)
class PlainLayer:
    """Plain per-output-channel rounding of one kernel.

    Attributes:
        name: layer name (path for nested models).
        kernel_shape: Keras kernel shape; output channels are the last axis.
        bits: b, bits per weight including the sign.
        scales: ``(channels,)`` float32 scales ``s_c``, or ``(1,)`` for one scale per layer.
        codes: int8 codes ``q`` in the kernel's shape, ``|q| <= 2^(b-1) - 1``.
        error: ``{"max": .., "rms": ..}`` of ``W - W_hat``.
    """

    name: str
    kernel_shape: tuple[int, ...]
    bits: int
    scales: np.ndarray
    codes: np.ndarray
    error: dict | None = None

    @property
    def levels(self) -> int:
        """``2^(b-1) - 1``, the largest code."""
        return 2 ** (self.bits - 1) - 1

    @property
    def size(self) -> int:
        return int(self.codes.size)

    @property
    def channels(self) -> int:
        """Number of scales: the output channels, or 1 for one scale per layer."""
        return int(self.scales.size)

    @property
    def bound(self) -> float:
        """``max_c s_c / 2``, the bound on ``|W - W_hat|`` (up to float32 rounding)."""
        return float(np.max(self.scales)) / 2

    def kernel(self) -> np.ndarray:
        """``W_hat = float32(q) * s_c`` in the Keras kernel layout (float32)."""
        return self.codes.astype(np.float32) * self.scales

    def payload_bits(self) -> int:
        """``b`` bits per weight (sign and ``b - 1`` magnitude bits)."""
        return self.size * self.bits

    def scale_bits(self) -> int:
        """32 bits per scale (per output channel, or one per layer)."""
        return SCALE_BITS * self.channels

    def bits_per_weight(self) -> float:
        return self.payload_bits() / self.size


def _check_granularity(granularity) -> str:
    if granularity not in GRANULARITIES:
        raise ValueError(
            f"Expected `granularity` to be one of {GRANULARITIES} for method='plain', but got "
            f"{granularity!r}."
        )
    return granularity


def quantize_kernel_plain(
    kernel: np.ndarray, bits: int, *, name: str = "", granularity: str = "channel"
) -> PlainLayer:
    """Plain symmetric b-bit rounding of a kernel with one scale per output channel.

    Args:
        kernel: Conv2D ``(kh, kw, cin, cout)`` or Dense ``(in, out)`` finite weights.
        bits: b in 2..8, bits per weight including the sign.
        name: layer name for the record.
        granularity: ``"channel"`` (one scale per output channel) or ``"layer"`` (one scale
            ``max|W| / (2^(b-1) - 1)`` for the whole kernel, like CBD's per-layer ``m``;
            ``scales`` then has one element).

    Returns:
        The :class:`PlainLayer`.

    Raises:
        ValueError: for ``bits`` outside 2..8, an unknown ``granularity``, an empty or
            non-finite kernel, or a kernel that is neither 2-D nor 4-D.
    """
    bits = _check_plain_bits(bits)
    granularity = _check_granularity(granularity)
    kernel = np.asarray(kernel)
    if kernel.ndim not in (2, 4) or kernel.size == 0:
        raise ValueError(
            f"Expected a Conv2D kernel (kh, kw, cin, cout) or a Dense kernel (in, out), but got "
            f"a kernel of shape {kernel.shape}."
        )
    if not np.all(np.isfinite(kernel)):
        where = f"layer {name!r}" if name else "the kernel"
        bad = int(np.count_nonzero(~np.isfinite(kernel)))
        raise ValueError(f"{where} has {bad} non-finite weight(s) (NaN or inf); expected finite.")
    levels = 2 ** (bits - 1) - 1
    values = kernel.astype(np.float64)
    peak = np.max(np.abs(values.reshape(-1, values.shape[-1])), axis=0)
    if granularity == "layer":
        peak = np.max(peak, keepdims=True)
    scales = (peak / levels).astype(np.float32)
    safe = np.where(scales > 0, scales, 1).astype(np.float64)
    codes = np.clip(np.rint(values / safe), -levels, levels).astype(np.int8)
    layer = PlainLayer(
        name=name,
        kernel_shape=tuple(int(d) for d in kernel.shape),
        bits=bits,
        scales=scales,
        codes=codes,
    )
    diff = values - layer.kernel().astype(np.float64)
    error = {"max": float(np.max(np.abs(diff))), "rms": float(np.sqrt(np.mean(diff**2)))}
    return dataclasses.replace(layer, error=error)
