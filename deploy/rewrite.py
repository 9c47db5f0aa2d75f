"""Keras-level rewrites that let LCE 0.16 accelerate, and compute right, more binary layers.

LCE converts binary convolutions only: a binary ``QuantDense`` stays a float
``FULLY_CONNECTED``. :func:`binary_dense_as_conv` computes each binary dense layer on a 2D
input as the 1x1 binary convolution of a 1x1 map (:class:`BinaryDenseAsConv`), which LCE
converts to ``LceBconv2d``.

LCE 0.16's optimized binary convolution kernels (indirect BGEMM and the default BGEMM, the
ones phones and ARM64 boards run) compute a zero-padded (``padding="same"``,
``pad_values=0``) binary convolution wrongly when the input map is smaller than the kernel
in height or width, e.g. a 3x3 convolution on a 2x2 or 1x1 map: measured outputs off by
50-300 % of their scale, at every channel count, stride 1 and 2, while LCE's reference
kernel and one-padding (``pad_values=1``) are exact. MeliusNet's ``larq_zoo`` preset pads
with zeros, so at small inputs its last sections meet this (32x32 input: 1x1 maps; 64x64:
2x2).

:func:`rewrite_small_map_convs` replaces each such convolution by one that computes the same
outside the faulty case:

* a map of height (or width) 1 only ever meets the kernel's centre row (column): "same"
  padding of a 1-pixel map puts it at the centre tap for every stride, and the other taps see
  zeros. The layer becomes the same convolution with the centre row/column of its kernel;
* otherwise, since a binary convolution is linear in its (padded) input signs and padding
  with -1 is the negation of padding the negated input with +1,
  ``conv_pad0(x) = (conv_pad1(x) - conv_pad1(-x)) / 2``: :class:`ZeroPaddingFromOnePadding`
  computes that with two one-padded convolutions sharing one kernel (twice the cost on maps
  that are tiny anyway). The identity needs ``sign(-x) = -sign(x)``, true for every input
  but an exact 0.0, which larq's sign maps to +1.

:func:`zero_padding_hazards` lists the layers that are in the faulty case, for the conversion
report and a warning.
"""

from __future__ import annotations

import larq as lq
import numpy as np

from melius_larq._compat import tf
from melius_larq._keras_utils import replace_layers, walk_layers
from melius_larq.accounting import quantizer_precision

__all__ = [
    "BinaryDenseAsConv",
    "ZeroPaddingFromOnePadding",
    "binary_dense_as_conv",
    "rewrite_small_map_convs",
    "zero_padding_hazards",
]


def _is_zero_padded_binary_conv(layer) -> bool:
    return (
        isinstance(layer, lq.layers.QuantConv2D)
        and quantizer_precision(layer.input_quantizer) == 1
        and quantizer_precision(layer.kernel_quantizer) == 1
        and layer.padding == "same"
        and float(getattr(layer, "pad_values", 0.0)) == 0.0
        and layer.data_format == "channels_last"
    )


def _map_and_kernel(layer):
    height, width = layer.input_shape[1:3]
    return height, width, tuple(layer.kernel_size)


def zero_padding_hazards(model: tf.keras.Model) -> dict[str, str]:
    """Zero-padded binary convolutions on maps smaller than their kernel.

    Returns:
        ``{layer name: reason}``; LCE 0.16's optimized kernels compute these layers wrongly.
    """
    hazards = {}
    for _, layer in walk_layers(model):
        if not _is_zero_padded_binary_conv(layer):
            continue
        height, width, (kh, kw) = _map_and_kernel(layer)
        if height is None or width is None or (height >= kh and width >= kw):
            continue
        hazards[layer.name] = (
            f"zero-padded binary {kh}x{kw} conv on a {height}x{width} map (smaller than the "
            "kernel): LCE 0.16's optimized kernels compute it wrongly (its reference kernel is "
            "right)"
        )
    return hazards


@tf.keras.utils.register_keras_serializable(package="melius_larq")
class ZeroPaddingFromOnePadding(tf.keras.layers.Layer):
    """A zero-padded binary conv computed as ``(conv(x) - conv(-x)) / 2`` with one-padding.

    Args:
        conv: the serialized zero-padded binary convolution (``tf.keras.layers.serialize``);
            the layer holds one copy of it with ``pad_values=1.0`` and the same weights.
    """

    def __init__(self, conv: dict, **kwargs):
        super().__init__(**kwargs)
        self.conv_spec = conv
        config = {**conv["config"], "pad_values": 1.0, "name": "one_padded"}
        self.conv = tf.keras.layers.deserialize({**conv, "config": config})

    def build(self, input_shape):
        self.conv.build(input_shape)
        super().build(input_shape)

    def call(self, inputs):
        return (self.conv(inputs) - self.conv(-inputs)) * 0.5

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "conv": self.conv_spec}


def rewrite_small_map_convs(model: tf.keras.Model) -> tuple[tf.keras.Model, dict[str, str]]:
    """A copy of ``model`` without zero-padded binary convs on maps smaller than the kernel.

    Args:
        model: a functional Keras model (not modified).

    Returns:
        ``(new_model, rewritten)``: the copy (the same function, the same weights) and
        ``{layer name: "cropped" | "paired"}``; ``model`` itself and ``{}`` when there is
        nothing to rewrite or the model is not functional.
    """
    if not getattr(model, "_is_graph_network", False):
        return model, {}
    plans = {}
    for layer in model.layers:
        if not _is_zero_padded_binary_conv(layer) or layer.dilation_rate != (1, 1):
            continue
        height, width, (kh, kw) = _map_and_kernel(layer)
        if height is None or width is None or (height >= kh and width >= kw):
            continue
        rows = slice(kh // 2, kh // 2 + 1) if height == 1 else slice(None)
        cols = slice(kw // 2, kw // 2 + 1) if width == 1 else slice(None)
        left_h = 1 if height == 1 else kh
        left_w = 1 if width == 1 else kw
        if height >= left_h and width >= left_w:
            plans[layer.name] = ("cropped", rows, cols)
        else:
            plans[layer.name] = ("paired", None, None)
    if not plans:
        return model, {}

    def replace(layer):
        kind, rows, cols = plans[layer.name]
        if kind == "paired":
            return ZeroPaddingFromOnePadding(tf.keras.layers.serialize(layer), name=layer.name)
        kh, kw = layer.kernel_size
        kernel_size = (1 if rows.start is not None else kh, 1 if cols.start is not None else kw)
        return layer.__class__.from_config({**layer.get_config(), "kernel_size": kernel_size})

    def weights(name, old):
        kind, rows, cols = plans[name]
        if kind == "cropped":
            # the latent kernel is the first weight: the centre taps keep their signs
            old[0] = np.ascontiguousarray(old[0][rows, cols])
        return old

    copy = replace_layers(model, dict.fromkeys(plans, replace), weights)
    return copy, {name: plan[0] for name, plan in sorted(plans.items())}


def _is_binary_dense(layer) -> bool:
    return (
        isinstance(layer, lq.layers.QuantDense)
        and quantizer_precision(layer.input_quantizer) == 1
        and quantizer_precision(layer.kernel_quantizer) == 1
        and len(layer.input_shape) == 2
    )


@tf.keras.utils.register_keras_serializable(package="melius_larq")
class BinaryDenseAsConv(tf.keras.layers.Layer):
    """A binary dense layer computed as a 1x1 binary convolution on a 1x1 map.

    Args:
        dense: the serialized ``larq.layers.QuantDense`` or
            :class:`~melius_larq.bnnplus.BNNPlusDense` (``tf.keras.layers.serialize``); the
            layer holds the matching ``QuantConv2D`` / ``BNNPlusConv2D`` with a 1x1 kernel.
    """

    def __init__(self, dense: dict, **kwargs):
        super().__init__(**kwargs)
        from melius_larq.bnnplus import BNNPlusConv2D, BNNPlusDense

        self.dense_spec = dense
        config = dict(dense["config"])
        units = config.pop("units")
        config.update(filters=units, kernel_size=1, padding="valid", name="conv")
        is_bnn_plus = tf.keras.layers.deserialize(dense).__class__ is BNNPlusDense
        self.conv = (BNNPlusConv2D if is_bnn_plus else lq.layers.QuantConv2D)(**config)

    def build(self, input_shape):
        self.conv.build((input_shape[0], 1, 1, input_shape[-1]))
        super().build(input_shape)

    def call(self, inputs):
        outputs = self.conv(inputs[:, tf.newaxis, tf.newaxis, :])
        return outputs[:, 0, 0, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.conv.filters)

    def get_config(self):
        return {**super().get_config(), "dense": self.dense_spec}


def binary_dense_as_conv(model: tf.keras.Model) -> tuple[tf.keras.Model, list[str]]:
    """A copy of ``model`` whose binary dense layers are :class:`BinaryDenseAsConv` layers.

    A dense layer is rewritten when its input and kernel quantizers are binary and its input
    is 2D (batch, features); the copy computes the same function with the same weights.

    Args:
        model: a functional Keras model (not modified).

    Returns:
        ``(new_model, rewritten)``; ``model`` itself and ``[]`` when there is nothing to
        rewrite or the model is not functional.
    """
    if not getattr(model, "_is_graph_network", False):
        return model, []
    names = sorted(layer.name for layer in model.layers if _is_binary_dense(layer))
    if not names:
        return model, []

    def replace(layer):
        return BinaryDenseAsConv(tf.keras.layers.serialize(layer), name=layer.name)

    def weights(name, old):
        return [old[0][np.newaxis, np.newaxis], *old[1:]]  # (in, units) -> (1, 1, in, units)

    copy = replace_layers(model, dict.fromkeys(names, replace), weights)
    return copy, names
