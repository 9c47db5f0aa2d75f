"""Inference-time graph transform: BatchNorms that only feed signs become per-channel shifts.

MeliusNet and BinaryDenseNet normalise the whole concatenated feature tensor in front of every
binary convolution. With BatchNorm's inference form ``a * x + b`` (``a = gamma / sqrt(var +
eps)``, ``b = beta - a * mean``) and a positive ``a``, ``sign(a * x + b) == sign(x + b / a)``,
so the scale is not needed where the only consumers are signs. LCE 0.16 fuses no BatchNorm
into ``LceQuantize``; the multiplication it saves runs over the whole concatenated tensor once
per binary convolution. :func:`batchnorm_affine` computes ``(a, b)``.

The result differs from the original only where ``a * x + b`` is within float rounding of 0
(a tie that flips the sign); channels with ``a <= 0`` keep their BatchNorm.

References:
    - [MeliusNet: Can Binary Neural Networks Achieve MobileNet-level Accuracy?](https://arxiv.org/abs/2001.05936),
      Bethge et al., 2020.
"""

from __future__ import annotations

import larq as lq
import numpy as np

from melius_larq._compat import tf
from melius_larq._keras_utils import replace_layers
from melius_larq.layers import ChannelShift

__all__ = ["batchnorm_affine", "feeds_only_signs", "fold_presign_batchnorm"]


def feeds_only_signs(layer) -> bool:
    """True when every consumer of ``layer``'s output binarizes it (a 1-bit input quantizer
    of a QuantConv2D or QuantDense), so only the signs of the output matter."""
    consumers = [node.outbound_layer for node in layer._outbound_nodes]
    return bool(consumers) and all(
        isinstance(c, (lq.layers.QuantConv2D, lq.layers.QuantDense))
        and getattr(c.input_quantizer, "precision", None) == 1
        for c in consumers
    )


def batchnorm_affine(layer, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """The inference form ``x * scale + shift`` of a BatchNormalization, per channel.

    ``scale = gamma / sqrt(moving_variance + epsilon)`` and
    ``shift = beta - moving_mean * scale``; a BatchNorm without ``scale`` (``center``) has
    gamma = 1 (beta = 0).

    Args:
        layer: a built ``tf.keras.layers.BatchNormalization``.
        dtype: the NumPy dtype the statistics are cast to and the result is computed in.
            Defaults to float64, which keeps the rounding of further arithmetic on the
            result (such as ``shift / scale``) far below float32 precision.

    Returns:
        ``(scale, shift)``, two arrays of one value per channel.
    """
    mean = layer.moving_mean.numpy().astype(dtype)
    variance = layer.moving_variance.numpy().astype(dtype)
    gamma = layer.gamma.numpy().astype(dtype) if layer.scale else np.ones_like(variance)
    beta = layer.beta.numpy().astype(dtype) if layer.center else np.zeros_like(variance)
    scale = gamma / np.sqrt(variance + layer.epsilon)
    return scale, beta - mean * scale


def fold_presign_batchnorm(model: tf.keras.Model) -> tuple[tf.keras.Model, list[str]]:
    """A copy of ``model`` where BatchNorms that only feed binary quantizers are shifts.

    Args:
        model: a functional Keras model (the input is not modified).

    Returns:
        ``(new_model, folded)``: the copy (same weights elsewhere) and the names of the
        BatchNorms that became :class:`~melius_larq.layers.ChannelShift` layers. A BatchNorm
        with any scale ``<= 0`` stays as it is. When nothing folds (or the model is not a
        functional model), ``new_model`` is ``model`` itself and ``folded`` is empty.

    Example:
        >>> import melius_larq
        >>> model = melius_larq.MeliusNetTiny(input_shape=(28, 28, 1), stem="small")
        >>> folded, names = melius_larq.fold_presign_batchnorm(model)
        >>> len(names), names[0]
        (14, 'section_0_block_0_dense_bn')
    """
    if not getattr(model, "_is_graph_network", False):
        return model, []
    shifts: dict[str, np.ndarray] = {}
    for layer in model.layers:
        if (isinstance(layer, tf.keras.layers.BatchNormalization) and layer.axis in ([-1], [3])
                and feeds_only_signs(layer)):  # fmt: skip
            a, b = batchnorm_affine(layer)
            if np.all(a > 0):
                shifts[layer.name] = (b / a).astype(np.float32)

    if not shifts:
        return model, []

    copy = replace_layers(
        model,
        {name: (lambda layer: ChannelShift(layer.moving_mean.shape[0], name=layer.name,
                                           dtype=layer.dtype)) for name in shifts},
        weights=lambda name, _: [shifts[name]],
    )  # fmt: skip
    return copy, sorted(shifts)
