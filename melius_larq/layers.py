"""Keras layers used by the MeliusNet family that plain Keras does not provide.

Every layer here is registered under the package name ``melius_larq`` so that models save to
``.keras`` and load back with ``safe_mode=True`` without ``Lambda`` layers.
"""

from __future__ import annotations

from melius_larq._compat import tf

__all__ = ["ChannelShift", "ChannelShuffle", "GroupConv2D"]


@tf.keras.utils.register_keras_serializable(package="melius_larq")
class ChannelShuffle(tf.keras.layers.Layer):
    """ShuffleNet channel shuffle for NHWC tensors.

    The channels are viewed as a ``(groups, C // groups)`` matrix, transposed and flattened
    again, so that a following grouped convolution mixes information across groups. MeliusNet
    A/B/C/23 put it before the grouped 1x1 convolution of each transition.

    Args:
        groups: int. Number of channel groups; must divide the channel count.
        **kwargs: forwarded to ``tf.keras.layers.Layer``.

    References:
        - [ShuffleNet](https://arxiv.org/abs/1707.01083)
        - [MeliusNet](https://arxiv.org/abs/2001.05936), transitions of MeliusNet A/B/C.
    """

    def __init__(self, groups: int, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"Expected `groups` to be a positive int, but got {groups!r}.")
        self.groups = groups

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(
                f"ChannelShuffle(groups={self.groups}) needs a channel count divisible by "
                f"{self.groups}, but got input shape {tuple(input_shape)}."
            )
        super().build(input_shape)

    def call(self, inputs):
        shape = tf.shape(inputs)
        channels = inputs.shape[-1]
        x = tf.reshape(inputs, [shape[0], shape[1], shape[2], self.groups, channels // self.groups])
        x = tf.transpose(x, [0, 1, 2, 4, 3])
        return tf.reshape(x, [shape[0], shape[1], shape[2], channels])

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@tf.keras.utils.register_keras_serializable(package="melius_larq")
class GroupConv2D(tf.keras.layers.Conv2D):
    """A grouped ``Conv2D`` computed as split -> one convolution per group -> concat.

    Same weights, arguments and outputs as ``tf.keras.layers.Conv2D(groups=g)``, but the
    graph it exports is ``SPLIT``, ``g`` plain ``CONV_2D`` and ``CONCATENATION``: TFLite's
    ``CONV_2D`` kernel runs a grouped filter through a slow generic path (about 5x slower in
    the LCE interpreter; ``docs/benchmarks.md``), while each per-group conv gets the optimized
    kernel.
    """

    def convolution_op(self, inputs, kernel):
        if self.groups == 1:
            return super().convolution_op(inputs, kernel)
        padding = self.padding.upper()
        outputs = [
            tf.nn.conv2d(x, k, strides=self.strides, padding=padding, dilations=self.dilation_rate)
            for x, k in zip(
                tf.split(inputs, self.groups, axis=-1),
                tf.split(kernel, self.groups, axis=-1),
                strict=True,
            )
        ]
        return tf.concat(outputs, axis=-1)

    def call(self, inputs):
        if self.groups == 1:
            return super().call(inputs)
        outputs = self.convolution_op(inputs, self.kernel)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return self.activation(outputs) if self.activation is not None else outputs


@tf.keras.utils.register_keras_serializable(package="melius_larq")
class ChannelShift(tf.keras.layers.Layer):
    """Adds a per-channel constant: ``x + shift``.

    :func:`melius_larq.fold_presign_batchnorm` puts it where a BatchNormalization fed only
    signs: with a positive scale ``a`` per channel, ``sign(a * x + b) == sign(x + b / a)``, so
    the multiplication over the whole tensor disappears from the deployed graph.

    Args:
        channels: number of channels (the last axis).
    """

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)

    def build(self, input_shape):
        if input_shape[-1] != self.channels:
            raise ValueError(
                f"ChannelShift({self.channels}) got an input with {input_shape[-1]} channels."
            )
        self.shift = self.add_weight("shift", shape=(self.channels,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        return inputs + tf.cast(self.shift, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}
