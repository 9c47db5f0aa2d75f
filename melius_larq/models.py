"""MeliusNet and BinaryDenseNet: the variant table, the presets and the Keras builders.

The architecture follows the authors' BMXNet-v2 code (``binary_models/meliusnet.py``,
``basenet_dense.py``, ``densenet.py``, ``common_layers.py``):

* stem (grouped 3x3 stem, 7x7 ImageNet stem, or a single 3x3 conv for thumbnails);
* four stages of blocks; a MeliusNet block is a DenseBlock (``BN -> sign -> binary 3x3 conv``,
  whose 64 output channels are concatenated) followed by an ImprovementBlock (the same
  ``BN -> sign -> binary 3x3 conv`` on all channels, whose 64 outputs are *added* to the last 64
  channels); a BinaryDenseNet block is the DenseBlock alone;
* transitions ``BN -> MaxPool 2x2/2 -> ReLU -> [ChannelShuffle(16)] -> full-precision 1x1 conv``
  (grouped for MeliusNet A/B/C/23);
* head ``BN -> ReLU -> global average pool -> Dense``.

References:
    - [MeliusNet: Can Binary Neural Networks Achieve MobileNet-level Accuracy?](
      https://arxiv.org/abs/2001.05936), Bethge et al. 2020.
    - [BinaryDenseNet / Back to Simplicity](https://arxiv.org/abs/1906.08637), Bethge et al.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Callable, Sequence

import larq as lq

from melius_larq._compat import tf
from melius_larq.bnnplus import BNNPlusConfig, resolve_binarization
from melius_larq.layers import ChannelShuffle, GroupConv2D

__all__ = [
    "PRESETS",
    "STEMS",
    "VARIANTS",
    "Preset",
    "VariantSpec",
    "build_model",
    "min_input_size",
]

GROWTH_RATE = 64  # binary convs output k = 64 channels (basenet_dense.py defaults)
STEM_FEATURES = 64  # channels leaving the stem (basenet_dense.py default_init_features)
BN_MOMENTUM = 0.9  # MXNet BatchNorm defaults
BN_EPSILON = 1e-5
SHUFFLE_GROUPS = 16  # "cs" token of the authors' downsample structure
STEMS = ("grouped", "imagenet", "thumbnail", "small")


@dataclasses.dataclass(frozen=True)
class VariantSpec:
    """The numbers of one network variant (Bethge et al. 2020, Table 1 and the authors' BMXNet-v2 code).

    Attributes:
        name: public name, also the builder's name.
        family: ``"meliusnet"`` (Dense + Improvement blocks) or ``"densenet"`` (Dense only).
        blocks: blocks per stage.
        transition_features: output channels of the three transitions.
        transition_groups: groups of the transitions' 1x1 convs.
        channel_shuffle: whether a ChannelShuffle(16) precedes the transition conv.
        imagenet: the authors' ImageNet results for the grouped stem
            (top-1 %, top-5 %, size MiB, OPS), or None where none was published.
        growth_rate: output channels of every binary conv (k).
        stem_features: channels leaving the stem.
        pool_padding: padding of the transitions' 2x2 max-pool, or None for the preset's
            (the authors' ``"valid"``). ``"same"`` keeps the last row and column of an
            odd-sized map, which a ``"valid"`` pool drops.
    """

    name: str
    family: str
    blocks: tuple[int, int, int, int]
    transition_features: tuple[int, int, int]
    transition_groups: int = 1
    channel_shuffle: bool = False
    imagenet: tuple[float, float, float, float] | None = None
    growth_rate: int = GROWTH_RATE
    stem_features: int = STEM_FEATURES
    pool_padding: str | None = None


# The one table of variant numbers (BMXNet-v2 meliusnet.py / densenet.py, resolved to channels).
VARIANTS: dict[str, VariantSpec] = {
    v.name: v
    for v in (
        VariantSpec("MeliusNet22", "meliusnet", (4, 5, 4, 4), (160, 224, 256),
                    imagenet=(63.6, 84.7, 3.88, 2.08e8)),
        VariantSpec("MeliusNet29", "meliusnet", (4, 6, 8, 6), (128, 192, 256),
                    imagenet=(65.8, 86.2, 5.07, 2.14e8)),
        VariantSpec("MeliusNet42", "meliusnet", (5, 8, 14, 10), (160, 256, 416),
                    imagenet=(69.2, 88.3, 10.10, 3.25e8)),
        VariantSpec("MeliusNet59", "meliusnet", (6, 12, 24, 12), (192, 320, 544),
                    imagenet=(71.0, 89.6, 17.39, 5.32e8)),
        VariantSpec("MeliusNetA", "meliusnet", (4, 5, 5, 6), (160, 256, 288), 4, True,
                    imagenet=(63.4, 84.2, 4.05, 1.63e8)),
        VariantSpec("MeliusNetB", "meliusnet", (4, 6, 8, 6), (160, 224, 320), 2, True,
                    imagenet=(65.7, 85.9, 5.00, 1.96e8)),
        VariantSpec("MeliusNetC", "meliusnet", (3, 5, 10, 6), (128, 192, 288), 4, True,
                    imagenet=(64.1, 85.0, 4.46, 1.50e8)),
        VariantSpec("MeliusNet23", "meliusnet", (2, 4, 6, 6), (128, 192, 288), 8, True),
        VariantSpec("BinaryDenseNet28", "densenet", (6, 6, 6, 5), (160, 192, 256),
                    imagenet=(62.6, 84.0, 4.03, 2.09e8)),
        VariantSpec("BinaryDenseNet37", "densenet", (6, 8, 12, 6), (128, 192, 256),
                    imagenet=(64.2, 85.1, 5.12, 2.20e8)),
        VariantSpec("BinaryDenseNet45", "densenet", (6, 12, 14, 8), (160, 288, 288)),
        # Not from the paper: a MeliusNet sized for 28x28 CPU training (Fashion-MNIST demo),
        # with half the growth rate and stem width and fewer blocks. Its maps are 14, 7 and 3
        # wide at 28x28 (small stem), so the transitions pool with "same" padding: "valid"
        # would drop a row and a column at 7 -> 3 and five of nine positions at 3 -> 1 (it
        # cost 0.5 points of test top-1 in the demo recipe, README "make demo").
        VariantSpec("MeliusNetTiny", "meliusnet", (2, 2, 2, 1), (64, 96, 128),
                    growth_rate=32, stem_features=32, pool_padding="same"),
    )
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Preset:
    """Training and padding semantics of the binary layers.

    Attributes:
        name: preset name.
        activation_clip: gradient-cancellation threshold of the activation sign (STE).
        kernel_clip: gradient-cancellation threshold of the weight sign; None is the
            identity straight-through estimator.
        weight_clip: ``larq.constraints.WeightClip`` value on the latent weights, or None.
        pad_values: value the binarized input of a 3x3 binary conv is padded with.
        initializer: ``"he_normal"`` (MXNet Xavier gaussian, fan-in, magnitude 2) or
            ``"glorot_normal"``.
        symmetric_stem: MXNet-style symmetric padding in the stride-2 stem layers and a
            3x3/2 max-pool after the stem; False is larq_zoo's ``"same"`` padding and 2x2 pool.
        pool_padding: padding of the transitions' 2x2 max-pool.
    """

    name: str
    activation_clip: float
    kernel_clip: float | None
    weight_clip: float | None
    pad_values: float
    initializer: str
    symmetric_stem: bool
    pool_padding: str


PRESETS: dict[str, Preset] = {
    # The authors' training semantics with +1 padding: LCE runs every binary conv with
    # SAME-one padding (no correction pass, fusable activations, bit-packable outputs).
    "lce": Preset("lce", 1.3, None, None, 1.0, "he_normal", True, "valid"),
    # The authors' code as written: -1 padding of the binarized input.
    "reference": Preset("reference", 1.3, None, None, -1.0, "he_normal", True, "valid"),
    # larq_zoo's MeliusNet22 semantics, for its published weights.
    "larq_zoo": Preset("larq_zoo", 1.3, 1.3, 1.3, 0.0, "glorot_normal", False, "same"),
}


def _initializer(preset: Preset):
    if preset.initializer == "he_normal":
        # mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2): N(0, 2/fan_in).
        return tf.keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")
    return tf.keras.initializers.get(preset.initializer)


class _StarvedWeightFilter(logging.Filter):
    """Drops larq's warning about binary kernels without a constraint.

    The authors train the latent weights with a plain identity STE and no clip (BMXNet-v2), so
    the presets ``"lce"`` and ``"reference"`` make that choice deliberately and larq would
    warn once per binary layer, at every build and every ``load_model``. The filter is
    installed once, on larq's ``larq.layers_base`` logger, and drops only that message.
    """

    def filter(self, record):
        return "may result in starved weights" not in record.getMessage()


_STARVED_FILTER = _StarvedWeightFilter()
logging.getLogger("larq.layers_base").addFilter(_STARVED_FILTER)


class _Builder:
    """Builds one functional model; holds the per-call settings shared by the blocks."""

    def __init__(
        self, spec: VariantSpec, preset: Preset, stem: str, bnn_plus: BNNPlusConfig | None = None
    ):
        self.spec = spec
        self.preset = preset
        self.stem = stem
        self.bnn_plus = bnn_plus

    # Layers --------------------------------------------------------------------------
    def norm(self, x, name):
        return tf.keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name
        )(x)

    def relu(self, x, name):
        return tf.keras.layers.Activation("relu", name=name)(x)

    def conv(self, x, filters, kernel, *, strides=1, groups=1, padding="same", name):
        layer = GroupConv2D if groups > 1 else tf.keras.layers.Conv2D
        return layer(
            filters,
            kernel,
            strides=strides,
            padding=padding,
            groups=groups,
            use_bias=False,
            kernel_initializer=_initializer(self.preset),
            name=name,
        )(x)

    def binary_conv(self, x, name):
        p = self.preset
        if self.bnn_plus is not None:
            return self.bnn_plus.conv2d(
                self.spec.growth_rate,
                3,
                activation_clip=p.activation_clip,
                kernel_clip=p.kernel_clip,
                weight_clip=p.weight_clip,
                padding="same",
                pad_values=p.pad_values,
                use_bias=False,
                kernel_initializer=_initializer(self.preset),
                name=name,
            )(x)
        return lq.layers.QuantConv2D(
            self.spec.growth_rate,
            3,
            padding="same",
            pad_values=p.pad_values,
            use_bias=False,
            input_quantizer=lq.quantizers.SteSign(clip_value=p.activation_clip),
            kernel_quantizer=lq.quantizers.SteSign(clip_value=p.kernel_clip),
            kernel_constraint=(lq.constraints.WeightClip(p.weight_clip) if p.weight_clip else None),
            kernel_initializer=_initializer(self.preset),
            name=name,
        )(x)

    def strided(self, x, layer_fn, kernel, pad, name):
        """A stride-2 layer with MXNet's symmetric padding (or Keras "same").

        MXNet pads ``pad`` pixels on both sides. Where the last window never reaches the
        bottom/right padding (e.g. a 3x3/2 conv on an even size), those unused rows are not
        padded at all: the result is identical, and it keeps LCE's pad-fusion pass (which
        would rewrite a symmetric PAD + stride-2 VALID conv into TFLite "SAME", i.e.
        asymmetric, padding and change the output) from matching.
        """
        if not self.preset.symmetric_stem:
            return layer_fn(x, "same")
        pads = tuple((pad, _used_after_padding(size, kernel, 2, pad)) for size in x.shape[1:3])
        x = tf.keras.layers.ZeroPadding2D(pads, name=f"{name}_pad")(x)
        return layer_fn(x, "valid")

    # Network parts ---------------------------------------------------------------------
    def build_stem(self, x):
        width = self.spec.stem_features
        if self.stem == "thumbnail":
            return self.conv(x, width, 3, name="stem_s0_conv")
        if self.stem == "small":  # thumbnail conv, then BN, ReLU and a 2x2 max-pool
            x = self.conv(x, width, 3, name="stem_s0_conv")
            x = self.relu(self.norm(x, "stem_s0_bn"), "stem_s0_relu")
            return tf.keras.layers.MaxPool2D(2, 2, name="stem_pool")(x)
        if self.stem == "imagenet":
            x = self.strided(
                x,
                lambda t, pad: self.conv(t, width, 7, strides=2, padding=pad,
                                         name="stem_s0_conv"),
                7,
                3,
                "stem_s0",
            )  # fmt: skip
            x = self.relu(self.norm(x, "stem_s0_bn"), "stem_s0_relu")
        else:  # grouped stem (common_layers.py), headline results
            half = width // 2
            x = self.strided(
                x,
                lambda t, pad: self.conv(t, half, 3, strides=2, padding=pad,
                                         name="stem_s0_conv"),
                3,
                1,
                "stem_s0",
            )  # fmt: skip
            x = self.relu(self.norm(x, "stem_s0_bn"), "stem_s0_relu")
            x = self.conv(x, half, 3, groups=4, name="stem_s1_groupconv")
            x = self.relu(self.norm(x, "stem_s1_bn"), "stem_s1_relu")
            x = self.conv(x, width, 3, groups=8, name="stem_s2_groupconv")
            x = self.relu(self.norm(x, "stem_s2_bn"), "stem_s2_relu")
        if self.preset.symmetric_stem:
            # MaxPool 3x3/2 pad 1; zero padding equals -inf padding after a ReLU.
            return self.strided(
                x,
                lambda t, pad: tf.keras.layers.MaxPool2D(3, 2, padding=pad,
                                                         name="stem_pool")(t),
                3,
                1,
                "stem_pool",
            )  # fmt: skip
        return tf.keras.layers.MaxPool2D(2, 2, padding="same", name="stem_pool")(x)

    def block(self, x, name):
        y = self.binary_conv(self.norm(x, f"{name}_dense_bn"), f"{name}_dense_binconv")
        dense = tf.keras.layers.Concatenate(name=f"{name}_dense_concat")([x, y])
        if self.spec.family == "densenet":
            return dense
        # ImprovementBlock: its output is added to the last 64 channels, i.e. to y. Adding
        # to y before re-concatenating computes the same tensor as the authors' sliced add
        # without padding or slicing the whole feature map.
        z = self.binary_conv(self.norm(dense, f"{name}_improve_bn"),
                             f"{name}_improve_binconv")  # fmt: skip
        improved = tf.keras.layers.Add(name=f"{name}_improve_add")([y, z])
        return tf.keras.layers.Concatenate(name=f"{name}_improve_concat")([x, improved])

    def transition(self, x, filters, name):
        x = self.norm(x, f"{name}_bn")
        padding = self.spec.pool_padding or self.preset.pool_padding
        x = tf.keras.layers.MaxPool2D(2, 2, padding=padding, name=f"{name}_maxpool")(x)
        x = self.relu(x, f"{name}_relu")
        if self.spec.channel_shuffle:
            x = ChannelShuffle(SHUFFLE_GROUPS, name=f"{name}_shuffle")(x)
        return self.conv(x, filters, 1, groups=self.spec.transition_groups,
                         name=f"{name}_pw")  # fmt: skip

    def features(self, x):
        x = self.build_stem(x)
        transitions = (*self.spec.transition_features, None)
        for i, (n, filters) in enumerate(zip(self.spec.blocks, transitions, strict=True)):
            for j in range(n):
                x = self.block(x, f"section_{i}_block_{j}")
            if filters:
                x = self.transition(x, filters, f"section_{i}_transition")
        return self.relu(self.norm(x, "head_bn"), "head_relu")

    def head(self, x, num_classes, classifier_activation):
        h, w = x.shape[1], x.shape[2]
        if h is not None and w is not None:
            # A static AveragePooling2D runs faster than GlobalAveragePooling2D in LCE.
            x = tf.keras.layers.AveragePooling2D((h, w), name="head_globalpool_pool")(x)
            x = tf.keras.layers.Flatten(name="head_globalpool_flatten")(x)
        else:
            x = tf.keras.layers.GlobalAveragePooling2D(name="head_globalpool")(x)
        x = tf.keras.layers.Dense(num_classes, kernel_initializer=_initializer(self.preset),
                                  name="head_dense")(x)  # fmt: skip
        if classifier_activation is not None:
            x = tf.keras.layers.Activation(
                classifier_activation, dtype="float32", name="head_softmax"
            )(x)
        return x


def _used_after_padding(size: int | None, kernel: int, stride: int, pad: int) -> int:
    """Bottom/right padding rows that a symmetric ``pad`` actually feeds into a window."""
    if size is None:
        return pad
    out = (size + 2 * pad - kernel) // stride + 1
    return max(0, min(pad, (out - 1) * stride + kernel - (size + pad)))


def _downsample(size: int, preset: Preset, stem: str, pool_padding: str | None = None) -> list[int]:
    """Spatial sizes after each downsampling step, for an input of ``size`` pixels."""
    pool_padding = pool_padding or preset.pool_padding
    sizes = []
    if stem == "small":
        sizes.append(size // 2)
        size //= 2
    elif stem != "thumbnail":
        for kernel, pad in ((7, 3) if stem == "imagenet" else (3, 1), (3, 1)):
            if preset.symmetric_stem:
                size = (size + 2 * pad - kernel) // 2 + 1
            else:
                size = math.ceil(size / 2)
            sizes.append(size)
    for _ in range(3):
        size = math.ceil(size / 2) if pool_padding == "same" else size // 2
        sizes.append(size)
    return sizes


def min_input_size(
    *, stem: str = "grouped", preset: str = "lce", pool_padding: str | None = None
) -> int:
    """Smallest input height/width (pixels) whose feature map survives every downsampling.

    ``pool_padding`` is a variant's own transition pooling (``VariantSpec.pool_padding``,
    e.g. ``"same"`` for MeliusNetTiny); None takes the preset's.
    """
    p = _get_preset(preset)
    _check_stem(stem)
    return next(s for s in range(1, 4096) if min(_downsample(s, p, stem, pool_padding)) >= 1)


def _check_stem(stem):
    if stem not in STEMS:
        raise ValueError(f"Unknown stem {stem!r}; expected one of {', '.join(STEMS)}.")


def _get_preset(preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; expected one of {', '.join(PRESETS)}.")
    return PRESETS[preset]


def _resolve_input_shape(input_shape, include_top, stem):
    if input_shape is None:
        default = 32 if stem in ("thumbnail", "small") else 224
        return (default, default, 3) if include_top else (None, None, 3)
    shape = tuple(input_shape)
    if (
        len(shape) != 3
        or shape[-1] is None
        or any(d is not None and (not isinstance(d, int) or d < 1) for d in shape)
    ):
        raise ValueError(
            "Expected `input_shape` to be (height, width, channels) with positive ints "
            f"(height/width may be None) and a known channel count, but got {input_shape!r}."
        )
    return shape


def build_model(
    spec: VariantSpec,
    *,
    input_shape: Sequence[int | None] | None = None,
    input_tensor=None,
    weights: str | None = None,
    include_top: bool = True,
    num_classes: int = 1000,
    stem: str = "grouped",
    preset: str | Preset = "pick",
    classifier_activation: str | Callable | None = "softmax",
    name: str | None = None,
    binarization: str = "ste",
    bnn_plus: BNNPlusConfig | dict | None = None,
) -> tf.keras.Model:
    """Builds a network of the MeliusNet family from its :class:`VariantSpec`.

    See the public builders (e.g. :func:`melius_larq.MeliusNet22`) for the arguments.
    """
    _check_stem(stem)
    from melius_larq import weights as weights_lib  # local: avoids an import cycle

    p = _get_preset(weights_lib.pick_preset(spec.name, preset, weights, include_top))
    bnn_plus_config = resolve_binarization(binarization, bnn_plus)
    if bnn_plus_config is not None and weights == "imagenet":
        raise ValueError(
            "weights='imagenet' holds STE weights, which do not fit a binarization='bnn+' "
            "model (it has extra alpha, lambda and beta variables); build it with "
            "binarization='ste', or pass a weights file saved from a BNN+ model."
        )
    if bnn_plus_config is not None:
        bnn_plus_config.check_network(f"preset={p.name!r}", kernel_clip=p.kernel_clip)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"Expected `num_classes` to be a positive int, but got {num_classes!r}.")
    weights_lib.check_weights_argument(weights, model=spec.name, preset=p.name,
                                       include_top=include_top, num_classes=num_classes)  # fmt: skip
    if input_tensor is not None and input_shape is None:
        input_shape = tuple(input_tensor.shape[1:])
    shape = _resolve_input_shape(input_shape, include_top, stem)
    for dim in shape[:2]:
        if dim is not None and min(_downsample(dim, p, stem, spec.pool_padding)) < 1:
            minimum = min_input_size(stem=stem, preset=p, pool_padding=spec.pool_padding)
            raise ValueError(
                f"Input {shape[0]}x{shape[1]} is too small for {spec.name} with "
                f"stem={stem!r}: the network downsamples it {2 ** len(_downsample(dim, p, stem))}x "
                f"and needs at least {minimum}x{minimum} pixels."
            )
    if p.pad_values not in (0.0, 1.0):
        warnings.warn(
            f"preset={p.name!r} pads binary convolutions with {p.pad_values}; Larq Compute "
            "Engine only accelerates pad values 1.0 (and 0.0 on arm), so this model's binary "
            "convolutions will run as float convolutions after conversion. Use preset='lce' "
            "for deployment.",
            stacklevel=3,
        )

    if input_tensor is None:
        inputs = tf.keras.layers.Input(shape=shape)
    elif tf.keras.backend.is_keras_tensor(input_tensor):
        inputs = input_tensor
    else:
        inputs = tf.keras.layers.Input(tensor=input_tensor, shape=shape)

    builder = _Builder(spec, p, stem, bnn_plus_config)
    x = builder.features(inputs)
    if include_top:
        x = builder.head(x, num_classes, classifier_activation)
    model_inputs = (
        tf.keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else inputs
    )
    model = tf.keras.Model(model_inputs, x, name=name or spec.name.lower())

    if weights is not None:
        weights_lib.load_weights_into(model, weights, spec=spec, preset=p, include_top=include_top)
    return model
