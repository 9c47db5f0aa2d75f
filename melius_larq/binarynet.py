"""The BNN baseline of BNN+: a small BinaryNet (VGG-small style) for 28x28 images.

BNN+ (Darabi et al.) measures its gains against BNN, the binarized network of Courbariaux,
Hubara et al.: sign activations and sign weights, both with the clipped straight-through
estimator at 1 (gradient 1 for |x| <= 1, else 0), latent weights clipped to [-1, 1]
(``WeightClip(1)``) and no scaling factors. :func:`BinaryNetSmall` is that network at a size
that trains on a 2-core CPU: the VGG-small layout of BinaryNet's CIFAR-10 network (two 3x3
convolutions per stage, a 2x2 max-pool after each stage, BatchNorm after every layer, a
hidden fully-connected layer), narrowed to 16-32-64 channels, with a full-precision first
convolution and classifier (as in BNN+ and most later binary networks). With
``binarization="bnn+"`` every binary layer becomes a BNN+ layer with the options of a
:class:`~melius_larq.bnnplus.BNNPlusConfig`, so that BNN and BNN+ arms of an experiment
differ only in the options chosen.

These networks live in their own table, :data:`BASELINES`, rather than in the MeliusNet
variant table (:data:`melius_larq.models.VARIANTS`): they have no stages of dense blocks,
stems, presets or published weights, which the variant rows and every registry-wide test
describe. The table is registered as the ``"baseline"`` family:
:func:`melius_larq.create_model` and :func:`melius_larq.get_builder` find them by name;
``melius_larq.list_models(baselines=True)`` lists them.

Example:
    >>> import melius_larq
    >>> model = melius_larq.create_model("BinaryNetSmall", input_shape=(28, 28, 1),
    ...                                  num_classes=10)
    >>> [layer.name for layer in model.layers if "bin" in layer.name]
    ['binconv1', 'binconv2', 'binconv3', 'binconv4', 'binconv5', 'bindense6']

References:
    - [Binarized Neural Networks](https://arxiv.org/abs/1602.02830), Courbariaux, Hubara,
      Soudry, El-Yaniv and Bengio, 2016.
    - [BNN+: Improved Binary Network Training](https://arxiv.org/abs/1812.11800),
      Darabi, Belbahri, Courbariaux and Partovi Nia, 2018.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import larq as lq

from melius_larq._compat import tf
from melius_larq.bnnplus import BNNPlusConfig, resolve_binarization
from melius_larq.registry import register_models

__all__ = ["BASELINES", "BNN_CLIP", "BinaryNetSmall"]

# BNN's clip: the STE of activations and weights passes gradient for |x| <= 1, and the latent
# weights are clipped to [-1, 1].
BNN_CLIP = 1.0
_BN = {"momentum": 0.9, "epsilon": 1e-5}


def _check_positive_ints(value, name, length=None):
    items = tuple(value) if isinstance(value, Sequence) else (value,)
    if (length is not None and len(items) != length) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in items
    ):
        what = f"{length} positive ints" if length else "a positive int"
        raise ValueError(f"Expected `{name}` to be {what}, but got {value!r}.")
    return items


def BinaryNetSmall(
    *,
    input_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    filters: Sequence[int] = (16, 32, 64),
    hidden_units: int = 256,
    classifier_activation: str | Callable | None = "softmax",
    name: str | None = None,
    binarization: str = "ste",
    bnn_plus: BNNPlusConfig | dict | None = None,
) -> tf.keras.Model:
    """Instantiates BinaryNetSmall, the BNN (BinaryNet) baseline of BNN+ for small images.

    Layers: a full-precision 3x3 conv (``filters[0]`` channels) and BatchNorm; five binary
    3x3 convs (``filters[0]``, then two of ``filters[1]``, then two of ``filters[2]``), each
    followed by BatchNorm, with a 2x2 max-pool between conv and BatchNorm at the end of each
    stage; a binary dense layer of ``hidden_units`` and BatchNorm; a full-precision dense
    classifier. Binary layers binarize their input and their weights with ``SteSign(1.0)``,
    clip the latent weights with ``WeightClip(1.0)`` and pad with +1 (which Larq Compute
    Engine accelerates); they have no bias and no scaling factor. Weights start from Keras'
    Glorot-uniform initialiser, as in BNN.

    Args:
        input_shape: ``(height, width, channels)``, at least 8x8. Defaults to
            ``(28, 28, 1)`` (Fashion-MNIST).
        num_classes: number of classes of the classifier. Defaults to 10.
        filters: channels of the three stages. Defaults to ``(16, 32, 64)``, an eighth of
            BinaryNet's CIFAR-10 widths, so that an epoch of Fashion-MNIST takes well under a
            minute on 2 CPU cores.
        hidden_units: units of the binary hidden dense layer. Defaults to 256.
        classifier_activation: activation of the classifier, computed in float32; None
            returns logits. Defaults to ``"softmax"``.
        name: model name. Defaults to ``"binarynetsmall"``.
        binarization: ``"ste"`` (default: BNN) or ``"bnn+"`` (every binary layer becomes a
            :class:`~melius_larq.bnnplus.BNNPlusConv2D` or
            :class:`~melius_larq.bnnplus.BNNPlusDense` with the ``bnn_plus`` options; the
            network's own STE clip, 1.0, is used where they leave it open).
        bnn_plus: options of ``binarization="bnn+"``: a
            :class:`~melius_larq.bnnplus.BNNPlusConfig` or a dict of its fields. Defaults to
            ``BNNPlusConfig()``.

    Returns:
        A ``tf.keras.Model``.

    Raises:
        ValueError: for a bad shape, class count, width or binarization, or BNN+ options
            that conflict with the network (e.g. a ``weight_clip`` above 1.0).

    References:
        - [Binarized Neural Networks](https://arxiv.org/abs/1602.02830)
        - [BNN+: Improved Binary Network Training](https://arxiv.org/abs/1812.11800)
    """
    shape = _check_positive_ints(input_shape, "input_shape", 3)
    if min(shape[:2]) < 8:
        raise ValueError(
            f"Input {shape[0]}x{shape[1]} is too small for BinaryNetSmall: it max-pools three "
            "times and needs at least 8x8 pixels."
        )
    (classes,) = _check_positive_ints(num_classes, "num_classes")
    stages = _check_positive_ints(filters, "filters", 3)
    (hidden,) = _check_positive_ints(hidden_units, "hidden_units")
    config = resolve_binarization(binarization, bnn_plus)
    if config is not None:
        config.check_network("BinaryNetSmall", kernel_clip=BNN_CLIP)
    clips = {"activation_clip": BNN_CLIP, "kernel_clip": BNN_CLIP, "weight_clip": BNN_CLIP}

    def bn(x, layer_name):
        return tf.keras.layers.BatchNormalization(**_BN, name=f"{layer_name}_bn")(x)

    def binary_conv(x, channels, layer_name, pool):
        kwargs = {"padding": "same", "pad_values": 1.0, "use_bias": False, "name": layer_name}
        if config is not None:
            layer = config.conv2d(channels, 3, **clips, **kwargs)
        else:
            layer = lq.layers.QuantConv2D(channels, 3, **_bnn_quantizers(), **kwargs)
        x = layer(x)
        if pool:
            x = tf.keras.layers.MaxPool2D(2, 2, name=f"{layer_name}_pool")(x)
        return bn(x, layer_name)

    inputs = tf.keras.layers.Input(shape=shape)
    x = tf.keras.layers.Conv2D(stages[0], 3, padding="same", use_bias=False, name="conv0")(inputs)
    x = bn(x, "conv0")
    layout = ((stages[0], True), (stages[1], False), (stages[1], True), (stages[2], False),
              (stages[2], True))  # fmt: skip
    for i, (channels, pool) in enumerate(layout, start=1):
        x = binary_conv(x, channels, f"binconv{i}", pool)
    x = tf.keras.layers.Flatten(name="flatten")(x)
    if config is not None:
        dense = config.dense(hidden, **clips, use_bias=False, name="bindense6")
    else:
        dense = lq.layers.QuantDense(hidden, use_bias=False, name="bindense6", **_bnn_quantizers())
    x = bn(dense(x), "bindense6")
    x = tf.keras.layers.Dense(classes, name="dense_out")(x)
    if classifier_activation is not None:
        x = tf.keras.layers.Activation(classifier_activation, dtype="float32", name="softmax")(x)
    return tf.keras.Model(inputs, x, name=name or "binarynetsmall")


def _bnn_quantizers() -> dict:
    """BNN's binarization: ``SteSign(1)`` on inputs and weights, ``WeightClip(1)``."""
    return {
        "input_quantizer": lq.quantizers.SteSign(clip_value=BNN_CLIP),
        "kernel_quantizer": lq.quantizers.SteSign(clip_value=BNN_CLIP),
        "kernel_constraint": lq.constraints.WeightClip(BNN_CLIP),
    }


# The baseline networks, by name: built by melius_larq.create_model like the registry's.
BASELINES: dict[str, Callable[..., tf.keras.Model]] = {"BinaryNetSmall": BinaryNetSmall}
register_models(BASELINES, family="baseline")
