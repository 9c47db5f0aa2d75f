"""int8 fake-quantization of a prepared Keras model, with ranges calibrated on real inputs.

* **Weights**: float conv kernels are fake-quantized per output channel, depthwise and dense
  kernels per tensor; symmetric, 8 bit, ``narrow_range`` (TFLite's int8 weight scheme).
* **Activations**: every tensor (the input and each layer's output) gets a
  ``FakeQuantWithMinMaxVars`` with the min/max observed on calibration data
  (:func:`calibrate_ranges`), merged where int8 ops need one scale (:func:`share_scales`).
"""

from __future__ import annotations

import larq as lq
import numpy as np

from melius_larq._compat import tf
from melius_larq.deploy.int8_rewrite import (
    ChannelScale,
    _clone,
    _inbound,
    _is_float_layer,
    _is_relu,
)
from melius_larq.layers import ChannelShuffle

__all__ = [
    "FakeQuant",
    "FakeQuantConv2D",
    "FakeQuantDense",
    "FakeQuantDepthwiseConv2D",
    "SplitChannels",
    "calibrate_ranges",
    "fake_quant_model",
    "share_scales",
]


class FakeQuant(tf.keras.layers.Layer):
    """Fake-quantizes activations to int8 with a fixed, calibrated range."""

    def __init__(self, lo: float, hi: float, **kwargs):
        super().__init__(**kwargs)
        self.lo, self.hi = float(lo), float(hi)

    def call(self, inputs):
        return tf.quantization.fake_quant_with_min_max_vars(inputs, self.lo, self.hi, num_bits=8)


class FakeQuantConv2D(tf.keras.layers.Conv2D):
    """Conv2D whose kernel is fake-quantized per output channel (symmetric int8)."""

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, _fake_quant_kernel(kernel))


class FakeQuantDepthwiseConv2D(tf.keras.layers.DepthwiseConv2D):
    """DepthwiseConv2D whose kernel is fake-quantized per tensor (symmetric int8)."""

    def call(self, inputs):
        bound = tf.maximum(tf.reduce_max(tf.abs(self.depthwise_kernel)), 1e-8)
        kernel = tf.quantization.fake_quant_with_min_max_vars(
            self.depthwise_kernel, -bound, bound, num_bits=8, narrow_range=True
        )
        y = tf.nn.depthwise_conv2d(inputs, kernel, (1, *self.strides, 1), self.padding.upper())
        if self.use_bias:
            y = tf.nn.bias_add(y, self.bias)
        return self.activation(y)


class FakeQuantDense(tf.keras.layers.Dense):
    """Dense whose kernel is fake-quantized per tensor (symmetric int8)."""

    def call(self, inputs):
        # per-tensor: the converter transposes FC kernels and rejects a per-channel axis
        bound = tf.maximum(tf.reduce_max(tf.abs(self.kernel)), 1e-8)
        kernel = tf.quantization.fake_quant_with_min_max_vars(
            self.kernel, -bound, bound, num_bits=8, narrow_range=True
        )
        y = tf.matmul(inputs, kernel)
        if self.use_bias:
            y = y + self.bias
        return self.activation(y)


def _fake_quant_kernel(kernel):
    axes = list(range(len(kernel.shape) - 1))
    bound = tf.maximum(tf.reduce_max(tf.abs(kernel), axis=axes), 1e-8)
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(
        kernel, -bound, bound, num_bits=8, narrow_range=True
    )


def calibrate_ranges(model: tf.keras.Model, x: np.ndarray, *, batch_size: int = 64) -> dict:
    """Min/max of the input and of every layer output over the calibration inputs.

    Args:
        model: a functional Keras model, usually from
            :func:`~melius_larq.deploy.int8.prepare_for_int8`.
        x: preprocessed calibration inputs.
        batch_size: inputs per forward pass.

    Returns:
        ``{layer name: (min, max)}`` for the input layer and every other layer; each range
        contains 0.
    """
    layers = [layer for layer in model.layers if not isinstance(layer, tf.keras.layers.InputLayer)]
    probe = tf.keras.Model(model.inputs, [model.inputs[0], *[layer.output for layer in layers]])
    names = [model.layers[0].name, *[layer.name for layer in layers]]
    lo = {n: np.inf for n in names}
    hi = {n: -np.inf for n in names}
    for start in range(0, len(x), batch_size):
        outs = probe(x[start : start + batch_size], training=False)
        for name, out in zip(names, outs):
            out = out.numpy()
            lo[name] = min(lo[name], float(out.min()))
            hi[name] = max(hi[name], float(out.max()))
    # the range must contain 0 so that zero (padding, ReLU) is exactly representable
    return {n: (min(lo[n], 0.0), max(hi[n], 0.0, lo[n] + 1e-6)) for n in names}


# TFLite's int8 SOFTMAX always writes scale 1/256 and zero point -128; a softmax output
# fake-quantized to exactly that range needs no requantizing QUANTIZE after it.
SOFTMAX_RANGE = (0.0, 255.0 / 256.0)


def _is_softmax(layer) -> bool:
    if isinstance(layer, tf.keras.layers.Softmax):
        return True
    return isinstance(layer, tf.keras.layers.Activation) and layer.get_config()["activation"] in (
        "softmax",
        tf.keras.activations.softmax,
    )


# TFLite's int8 kernels of these ops need the same scale on their inputs and output.
_SAME_SCALE = (
    tf.keras.layers.Concatenate,
    tf.keras.layers.MaxPool2D,
    tf.keras.layers.AveragePooling2D,
    tf.keras.layers.Flatten,
    tf.keras.layers.Reshape,
    tf.keras.layers.ZeroPadding2D,
    ChannelShuffle,
)


def share_scales(model: tf.keras.Model, ranges: dict) -> dict:
    """Merges the ranges of tensors that int8 ops require to share one scale.

    Concatenations chain whole MeliusNet stages together (every block concatenates the
    previous block's output), so each stage's feature maps end up on one scale.

    Args:
        model: the model ``ranges`` was calibrated on.
        ranges: ``{layer name: (min, max)}`` from :func:`calibrate_ranges`.

    Returns:
        The ranges, each replaced by the union of the ranges it must share a scale with.
    """
    parent = {name: name for name in ranges}

    def find(n):
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for layer in model.layers:
        if not layer._inbound_nodes:
            continue
        inbound = _inbound(layer)
        # The converter fuses ReLU into a preceding max-pool (they commute), so such a ReLU
        # must share the pool's scale too.
        relu_after_pool = _is_relu(layer) and any(
            isinstance(other, tf.keras.layers.MaxPool2D) for other in inbound
        )
        if isinstance(layer, _SAME_SCALE) or relu_after_pool:
            for other in inbound:
                parent[find(other.name)] = find(layer.name)
    merged: dict[str, tuple[float, float]] = {}
    for name, (lo, hi) in ranges.items():
        root = find(name)
        old = merged.get(root, (lo, hi))
        merged[root] = (min(old[0], lo), max(old[1], hi))
    return {name: merged[find(name)] for name in ranges}


class SplitChannels(tf.keras.layers.Layer):
    """Splits the channels into ``groups`` equal parts (one TFLite ``SPLIT``)."""

    def __init__(self, groups: int, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def call(self, inputs):
        return tf.split(inputs, self.groups, axis=-1)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


def _grouped_conv_as_split(layer, x, out_range, activation=None):
    """``SPLIT``, one fake-quantized conv per group, ``CONCATENATION``: the int8 counterpart of
    :class:`~melius_larq.layers.GroupConv2D`. TFLite's ``CONV_2D`` runs a grouped filter in
    its reference kernel (int8 and float alike), each per-group conv in the optimized one.
    Every group's output gets the layer's range, so the concatenation only copies; a ReLU
    that follows (``activation``) moves into every group's conv, where TFLite fuses it."""
    groups, config = layer.groups, layer.get_config()
    if activation is not None:
        config["activation"] = activation
    kernel, *bias = layer.get_weights()
    per = config["filters"] // groups
    parts = SplitChannels(groups, name=f"{layer.name}_split")(x)
    outs = []
    for g, part in enumerate(parts):
        conv = FakeQuantConv2D.from_config(
            {**config, "name": f"{layer.name}_g{g}", "filters": per, "groups": 1}
        )
        y = conv(part)
        conv.set_weights([kernel[..., g * per : (g + 1) * per],
                          *(b[g * per : (g + 1) * per] for b in bias)])  # fmt: skip
        outs.append(FakeQuant(*out_range, name=f"{layer.name}_g{g}_fq")(y))
    return tf.keras.layers.Concatenate(name=f"{layer.name}_groups")(outs)


def _fusable_relu(layer):
    """The ReLU that is ``layer``'s only consumer, if ``layer`` itself is linear; else None."""
    users = [node.outbound_layer for node in layer._outbound_nodes]
    if len(users) == 1 and _is_relu(users[0]) and layer.get_config()["activation"] == "linear":
        return users[0]
    return None


def _scaled_binary_output(layer) -> bool:
    """A binary layer whose only consumer is the :class:`ChannelScale` of its output."""
    users = [node.outbound_layer for node in layer._outbound_nodes]
    return (
        isinstance(layer, lq.layers_base.QuantizerBase)
        and len(users) == 1
        and isinstance(users[0], ChannelScale)
    )


def fake_quant_model(
    model: tf.keras.Model, ranges: dict, *, split_grouped_convs: bool = True
) -> tf.keras.Model:
    """A new model with int8 fake-quantization of every tensor and every float kernel.

    Args:
        model: a model from :func:`~melius_larq.deploy.int8.prepare_for_int8` (not modified).
        ranges: maps each layer name (and the input layer's) to the (min, max) of its output.
        split_grouped_convs: export each grouped float conv as ``SPLIT``, one conv per group
            and ``CONCATENATION`` (as :class:`~melius_larq.layers.GroupConv2D` does in
            float), instead of one grouped ``CONV_2D``, which TFLite runs in its reference
            kernel.

    Returns:
        The fake-quantized functional model, named ``<model name>_int8``.
    """
    inp = tf.keras.Input(model.input_shape[1:], name="input")
    first = model.layers[0].name
    tensors = {first: FakeQuant(*ranges[first], name=f"{first}_fq")(inp)}
    fused = set()  # ReLUs moved into the per-group convs before them
    for layer in model.layers[1:]:
        if layer.name in fused:
            continue
        args = [tensors[p.name] for p in _inbound(layer)]
        arg = args if len(args) > 1 else args[0]
        cls = None
        if _is_float_layer(layer, tf.keras.layers.DepthwiseConv2D):
            cls = FakeQuantDepthwiseConv2D
        elif _is_float_layer(layer, tf.keras.layers.Conv2D):
            cls = FakeQuantConv2D
        elif _is_float_layer(layer, tf.keras.layers.Dense):
            cls = FakeQuantDense
        name = layer.name  # the layer whose output `out` is
        if cls is FakeQuantConv2D and layer.groups > 1 and split_grouped_convs:
            relu = _fusable_relu(layer)
            if relu is not None:  # the groups compute the ReLU's output (its only consumer)
                fused.add(relu.name)
                name = relu.name
            out = _grouped_conv_as_split(layer, arg, ranges[name], relu and "relu")
        else:
            clone, weights = _clone(layer, cls=cls)
            out = clone(arg)
            if weights:
                clone.set_weights(weights)
        if _scaled_binary_output(layer):  # LCE fuses the ChannelScale into the conv
            tensors[name] = out
        else:
            out_range = SOFTMAX_RANGE if _is_softmax(layer) else ranges[name]
            tensors[name] = FakeQuant(*out_range, name=f"{name}_fq")(out)
    return tf.keras.Model(inp, tensors[model.layers[-1].name], name=f"{model.name}_int8")
