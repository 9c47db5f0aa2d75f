"""Inference-time graph transform: BatchNorms that only feed signs become per-channel shifts.

MeliusNet and BinaryDenseNet normalise the whole concatenated feature tensor in front of every
binary convolution. With BatchNorm's inference form ``a * x + b`` (``a = gamma / sqrt(var +
eps)``, ``b = beta - a * mean``) and a positive ``a``, ``sign(a * x + b) == sign(x + b / a)``,
so the scale is not needed where the only consumers are signs. LCE 0.16 fuses no BatchNorm
into ``LceQuantize``; the multiplication it saves runs over the whole concatenated tensor once
per binary convolution (README, "Where the LCE time goes").

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
from melius_larq.layers import ChannelShift

__all__ = ["fold_presign_batchnorm"]


def _feeds_only_signs(layer) -> bool:
    consumers = [node.outbound_layer for node in layer._outbound_nodes]
    return bool(consumers) and all(
        isinstance(c, (lq.layers.QuantConv2D, lq.layers.QuantDense))
        and getattr(c.input_quantizer, "precision", None) == 1
        for c in consumers
    )


def _affine(bn) -> tuple[np.ndarray, np.ndarray]:
    variance = bn.moving_variance.numpy().astype(np.float64)
    gamma = bn.gamma.numpy() if bn.scale else np.ones_like(variance)
    beta = bn.beta.numpy() if bn.center else np.zeros_like(variance)
    a = gamma / np.sqrt(variance + bn.epsilon)
    return a, beta - a * bn.moving_mean.numpy()


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
                and _feeds_only_signs(layer)):  # fmt: skip
            a, b = _affine(layer)
            if np.all(a > 0):
                shifts[layer.name] = (b / a).astype(np.float32)

    if not shifts:
        return model, []

    def clone(layer):
        if layer.name in shifts:
            return ChannelShift(shifts[layer.name].size, name=layer.name, dtype=layer.dtype)
        return layer.__class__.from_config(layer.get_config())

    copy = tf.keras.models.clone_model(model, clone_function=clone)
    for layer in copy.layers:
        if layer.name in shifts:
            layer.set_weights([shifts[layer.name]])
        elif layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return copy, sorted(shifts)
