"""Real-valued reference networks: teachers for distillation and baselines for comparisons.

- ``ResNet18`` (He et al. 2016, "Deep Residual Learning for Image Recognition"): basic blocks
  2-2-2-2 with ``64 * width`` channels doubling per stage; the CIFAR-style stem (one 3x3
  stride-1 conv, no max pooling) used for small images. ``width=1`` has 11.2M parameters.
- ``MobileNetV1`` (Howard et al. 2017, "MobileNets"): depthwise-separable convolutions with
  width multiplier ``alpha``; ``small_input=True`` (default for inputs below 64 px) makes
  the stem and the first stride-2 block stride 1, so 28x28 images end at 4x4 instead of 1x1.

Example:
    ```python
    import melius_larq

    model = melius_larq.float_models.create_float_model(
        "ResNet18", input_shape=(28, 28, 1), num_classes=10, width=0.25
    )
    print(model.output_shape, model.count_params())
    ```
    ```text
    (None, 10) 703578
    ```
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from melius_larq._compat import tf
from melius_larq.registry import register_models

__all__ = ["FLOAT_MODELS", "MobileNetV1", "ResNet18", "create_float_model"]

_BN = {"momentum": 0.9, "epsilon": 1e-5}
# MobileNet-v1's 13 depthwise-separable blocks as (output channels at alpha=1, stride).
_MOBILENET_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip


def _check(input_shape, num_classes, width, what="width"):
    if len(input_shape) != 3 or any(not isinstance(d, int) or d < 1 for d in input_shape):
        raise ValueError(
            f"input_shape={input_shape!r} must be (height, width, channels) of positive ints."
        )
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} must be an integer >= 2.")
    if not isinstance(width, (int, float)) or not 0 < width <= 4:
        raise ValueError(f"{what}={width!r} must be in (0, 4].")


def _head(x, num_classes, classifier_activation):
    x = tf.keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = tf.keras.layers.Dense(num_classes, name="head_dense")(x)
    if classifier_activation is not None:
        x = tf.keras.layers.Activation(classifier_activation, dtype="float32",
                                       name="head_softmax")(x)  # fmt: skip
    return x


def ResNet18(
    *,
    input_shape=(32, 32, 3),
    num_classes: int = 10,
    width: float = 1.0,
    classifier_activation: str | None = "softmax",
    name: str = "resnet18",
) -> tf.keras.Model:
    """A CIFAR-style ResNet-18 (He et al. 2016) with a width multiplier.

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: classifier outputs.
        width: channel multiplier of 64-128-256-512 (0.25 gives 16-32-64-128).
        classifier_activation: ``"softmax"`` or None (logits).
        name: model name.

    Raises:
        ValueError: for a bad shape, class count or width.
    """
    _check(input_shape, num_classes, width)
    layers = tf.keras.layers
    conv = {"use_bias": False, "padding": "same", "kernel_initializer": "he_normal"}
    inputs = layers.Input(input_shape)
    channels = max(1, round(64 * width))
    x = layers.Conv2D(channels, 3, name="stem_conv", **conv)(inputs)
    x = layers.ReLU(name="stem_relu")(layers.BatchNormalization(name="stem_bn", **_BN)(x))
    for stage in range(4):
        filters = max(1, round(64 * width * 2**stage))
        for block in range(2):
            prefix = f"stage{stage + 1}_block{block + 1}"
            strides = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            y = layers.Conv2D(filters, 3, strides=strides, name=f"{prefix}_conv1", **conv)(x)
            y = layers.BatchNormalization(name=f"{prefix}_bn1", **_BN)(y)
            y = layers.ReLU(name=f"{prefix}_relu1")(y)
            y = layers.Conv2D(filters, 3, name=f"{prefix}_conv2", **conv)(y)
            y = layers.BatchNormalization(name=f"{prefix}_bn2", **_BN)(y)
            if strides != 1 or shortcut.shape[-1] != filters:
                shortcut = layers.Conv2D(filters, 1, strides=strides, name=f"{prefix}_proj",
                                         **conv)(shortcut)  # fmt: skip
                shortcut = layers.BatchNormalization(name=f"{prefix}_proj_bn", **_BN)(shortcut)
            x = layers.ReLU(name=f"{prefix}_relu2")(layers.Add(name=f"{prefix}_add")([y, shortcut]))
    return tf.keras.Model(inputs, _head(x, num_classes, classifier_activation), name=name)


def MobileNetV1(
    *,
    input_shape=(224, 224, 3),
    num_classes: int = 1000,
    alpha: float = 1.0,
    small_input: bool | None = None,
    classifier_activation: str | None = "softmax",
    name: str | None = None,
) -> tf.keras.Model:
    """MobileNet-v1 (Howard et al. 2017) with width multiplier ``alpha``.

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: classifier outputs.
        alpha: width multiplier (the paper's 0.25, 0.5, 0.75, 1.0).
        small_input: stride 1 in the stem and the first stride-2 block (for inputs below
            64 px); None decides by the input size.
        classifier_activation: ``"softmax"`` or None (logits).
        name: model name; defaults to ``mobilenet_v1_<alpha>``.

    Raises:
        ValueError: for a bad shape, class count or alpha.
    """
    _check(input_shape, num_classes, alpha, "alpha")
    layers = tf.keras.layers
    if small_input is None:
        small_input = min(input_shape[:2]) < 64
    inputs = layers.Input(input_shape)
    x = layers.Conv2D(max(1, round(32 * alpha)), 3, strides=1 if small_input else 2,
                      padding="same", use_bias=False, name="stem_conv")(inputs)  # fmt: skip
    x = layers.ReLU(6.0, name="stem_relu")(layers.BatchNormalization(name="stem_bn", **_BN)(x))
    first_stride2 = True
    for i, (filters, stride) in enumerate(_MOBILENET_BLOCKS, start=1):
        if stride == 2 and small_input and first_stride2:
            stride, first_stride2 = 1, False
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                   name=f"block{i}_dw")(x)  # fmt: skip
        x = layers.ReLU(6.0, name=f"block{i}_dw_relu")(
            layers.BatchNormalization(name=f"block{i}_dw_bn", **_BN)(x)
        )
        x = layers.Conv2D(max(1, round(filters * alpha)), 1, use_bias=False,
                          name=f"block{i}_pw")(x)  # fmt: skip
        x = layers.ReLU(6.0, name=f"block{i}_pw_relu")(
            layers.BatchNormalization(name=f"block{i}_pw_bn", **_BN)(x)
        )
    name = name or f"mobilenet_v1_{alpha:g}"
    return tf.keras.Model(inputs, _head(x, num_classes, classifier_activation), name=name)


FLOAT_MODELS: dict[str, Callable[..., tf.keras.Model]] = {
    "ResNet18": ResNet18,
    "MobileNetV1": MobileNetV1,
}


def create_float_model(name: str, *, width: float = 1.0, **kwargs) -> tf.keras.Model:
    """A float model by name with a width multiplier (ResNet18 ``width``, MobileNetV1
    ``alpha``); other keyword arguments go to the builder.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in FLOAT_MODELS:
        raise ValueError(
            f"Unknown float model {name!r}; expected one of: {', '.join(FLOAT_MODELS)}."
        )
    key = "alpha" if name == "MobileNetV1" else "width"
    return FLOAT_MODELS[name](**{key: width}, **kwargs)


# As the "float" family, every float model takes its width multiplier as ``width``.
register_models({name: functools.partial(create_float_model, name) for name in FLOAT_MODELS},
                family="float")  # fmt: skip
