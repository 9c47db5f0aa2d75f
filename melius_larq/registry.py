"""The model registry and the public, keyword-only builders.

Every model that :func:`create_model` builds by name is registered here, with its family:

- ``"binary"``: the MeliusNet and BinaryDenseNet variants, one builder per row of
  :data:`melius_larq.models.VARIANTS`, so the numbers live in one table and every builder has
  the same signature. :func:`list_models` lists these by default.
- ``"baseline"``: the paper-baseline networks of :data:`melius_larq.binarynet.BASELINES`
  (``BinaryNetSmall``; no stems, presets, variant numbers or weights).
- ``"float"``: the real-valued networks of :data:`melius_larq.float_models.FLOAT_MODELS`
  (``width`` is their width multiplier).
- ``"experiment"``: networks an experiment defines for itself, registered when its module
  is imported (e.g. the 28x28 siblings of ``MeliusNetTiny``).

Each module registers its own table once, with :func:`register_models`.

Example:
    >>> import melius_larq
    >>> "MeliusNet22" in melius_larq.list_models()
    True
    >>> melius_larq.list_models(family="float")
    ['ResNet18', 'MobileNetV1']
    >>> model = melius_larq.create_model("MeliusNet22", input_shape=(64, 64, 3), num_classes=10)
    >>> model.output_shape
    (None, 10)
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence

from melius_larq._compat import tf
from melius_larq.bnnplus import BNNPlusConfig
from melius_larq.models import VARIANTS, VariantSpec, build_model

__all__ = [
    "FAMILIES", "create_model", "get_builder", "get_model_spec", "list_models", "model_family",
    "register_model", "register_models",
]  # fmt: skip

FAMILIES = ("binary", "baseline", "float", "experiment")

_DOC = """Instantiates the {name} architecture ({kind}).

    {blocks} blocks per stage; transitions to {transitions} channels{grouping}.
{metrics}
    Args:
        input_shape: tuple ``(height, width, channels)``. Defaults to ``(224, 224, 3)``
            (``(32, 32, 3)`` for the thumbnail and small stems) with ``include_top=True`` and to
            ``(None, None, 3)`` without it.
        input_tensor: optional Keras tensor to use as the model input.
        weights: ``None`` (random initialization), ``"imagenet"`` (published weights, where
            they exist; see :func:`melius_larq.list_pretrained`), or the path of an ``.h5``
            weights file (also one saved from ``larq_zoo.literature.MeliusNet22``).
        include_top: whether to include the classifier head. Without it the model returns
            the feature map after the head's BN and ReLU.
        num_classes: number of classes of the classifier.
        stem: ``"grouped"`` (the authors' grouped 3x3 stem, used for all headline results),
            ``"imagenet"`` (7x7/2 conv), ``"thumbnail"`` (a single 3x3 conv with no
            downsampling, for inputs below 50 px such as CIFAR or Fashion-MNIST) or
            ``"small"`` (a 3x3 conv, BN, ReLU and a 2x2 max-pool: one downsampling, for
            28-32 px inputs such as MeliusNetTiny on Fashion-MNIST).
        preset: ``"pick"`` (default: ``"lce"``, or with ``weights="imagenet"`` the preset
            the published file was trained with, said in one log line), ``"lce"`` (the
            authors' training semantics with binary convs padded with +1, so that LCE
            accelerates every one), ``"reference"`` (the authors' code as written, with -1
            padding, which LCE does not accelerate) or ``"larq_zoo"`` (larq_zoo's
            MeliusNet22 semantics, for its weights). With ``weights="imagenet"`` a preset
            other than the published file's is an error.
        classifier_activation: activation of the classifier, computed in float32;
            ``None`` returns logits.
        name: model name. Defaults to ``"{lname}"``.
        binarization: ``"ste"`` (default: sign with the straight-through estimator, as the
            preset sets it) or ``"bnn+"`` (BNN+: every binary conv becomes a
            :class:`melius_larq.bnnplus.BNNPlusConv2D` with SignSwish activations, trainable
            scales α and the scale regularizer in ``model.losses``).
        bnn_plus: options of ``binarization="bnn+"``: a
            :class:`melius_larq.bnnplus.BNNPlusConfig` or a dict of its fields
            (``activation_estimator``, ``activation_clip``, ``beta``, ``train_beta``,
            ``beta_end``, ``beta_ramp_epochs``, ``beta_range``, ``weight_estimator``,
            ``weight_clip``, ``alpha_sharing``, ``alpha_in_forward``, ``regularizer``,
            ``reg_lambda``, ``reduction``). Defaults to ``BNNPlusConfig()``; the preset's
            activation STE clip is used where the options leave it open.

    Returns:
        A ``tf.keras.Model``.

    Raises:
        ValueError: for an unknown stem, preset or binarization, invalid ``bnn_plus``
            options, an input too small for the network's downsampling, or weights that do
            not fit the model.

    References:
        - [MeliusNet: Can Binary Neural Networks Achieve MobileNet-level Accuracy?](
          https://arxiv.org/abs/2001.05936)
        - [BNN+: Improved Binary Network Training](https://arxiv.org/abs/1812.11800)
"""

_METRICS = """
    Authors' ImageNet results (grouped stem, BMXNet-v2 wiki):

    | Top-1 | Top-5 | Size | OPS |
    | ----- | ----- | ---- | --- |
    | {0:.1f} % | {1:.1f} % | {2:.2f} MiB | {3:.3g} |
"""


def _make_builder(spec: VariantSpec) -> Callable[..., tf.keras.Model]:
    def builder(
        *,
        input_shape: Sequence[int | None] | None = None,
        input_tensor=None,
        weights: str | None = None,
        include_top: bool = True,
        num_classes: int = 1000,
        stem: str = "grouped",
        preset: str = "pick",
        classifier_activation: str | Callable | None = "softmax",
        name: str | None = None,
        binarization: str = "ste",
        bnn_plus: BNNPlusConfig | dict | None = None,
    ) -> tf.keras.Model:
        return build_model(
            spec,
            input_shape=input_shape,
            input_tensor=input_tensor,
            weights=weights,
            include_top=include_top,
            num_classes=num_classes,
            stem=stem,
            preset=preset,
            classifier_activation=classifier_activation,
            name=name,
            binarization=binarization,
            bnn_plus=bnn_plus,
        )

    builder.__name__ = builder.__qualname__ = spec.name
    builder.__module__ = "melius_larq"
    grouping = (
        f", ChannelShuffle(16) and {spec.transition_groups}-group 1x1 convs"
        if spec.channel_shuffle
        else ""
    )
    builder.__doc__ = _DOC.format(
        name=spec.name,
        lname=spec.name.lower(),
        kind="DenseBlock + ImprovementBlock" if spec.family == "meliusnet" else "DenseBlocks only",
        blocks=", ".join(map(str, spec.blocks)),
        transitions=", ".join(map(str, spec.transition_features)),
        grouping=grouping,
        metrics=_METRICS.format(*spec.imagenet) if spec.imagenet else "",
    )
    return builder


# name -> (builder, family), in the order of registration.
_MODELS: dict[str, tuple[Callable[..., tf.keras.Model], str]] = {}


def register_model(name: str, builder: Callable[..., tf.keras.Model], *, family: str) -> None:
    """Makes ``builder`` buildable by name with :func:`create_model`.

    Args:
        name: the model's name (matched case-insensitively).
        builder: called with :func:`create_model`'s keyword arguments; returns a Keras model.
        family: one of :data:`FAMILIES`.

    Raises:
        ValueError: for an unknown family, or a name that is already registered.
    """
    if family not in FAMILIES:
        raise ValueError(
            f"Unknown model family {family!r}; expected one of: {', '.join(FAMILIES)}."
        )
    taken = {n.lower(): n for n in _MODELS}
    if not isinstance(name, str) or not name or name.lower() in taken:
        raise ValueError(f"{name!r} is already a model name; pick another.")
    _MODELS[name] = (builder, family)


def register_models(table: Mapping[str, Callable[..., tf.keras.Model]], *, family: str) -> None:
    """Registers every ``name: builder`` of a module's table (see :func:`register_model`)."""
    for name, builder in table.items():
        register_model(name, builder, family=family)


def list_models(
    filter: str = "",  # noqa: A002
    *,
    family: str | Sequence[str] | None = "binary",
    baselines: bool = False,
) -> list[str]:
    """Names of the registered models, optionally filtered by a glob such as ``"Melius*"``.

    Args:
        filter: a case-insensitive glob (timm's name for it); empty lists every model.
        family: the family to list (:data:`FAMILIES`), several of them, or None for all.
        baselines: also list the ``"baseline"`` family (after the others).
    """
    families = FAMILIES if family is None else (family,) if isinstance(family, str) else family
    for f in families:
        if f not in FAMILIES:
            raise ValueError(f"Unknown model family {f!r}; expected one of: {', '.join(FAMILIES)}.")
    families = [*families, *(["baseline"] if baselines and "baseline" not in families else [])]
    names = [n for f in families for n, (_, fam) in _MODELS.items() if fam == f]
    if filter:
        names = [n for n in names if fnmatch.fnmatch(n.lower(), filter.lower())]
    return names


def _canonical(name: str) -> str:
    lookup = {n.lower(): n for n in _MODELS}
    if not isinstance(name, str) or name.lower() not in lookup:
        raise ValueError(f"Unknown model {name!r}; expected one of: {', '.join(_MODELS)}.")
    return lookup[name.lower()]


def model_family(name: str) -> str:
    """The family (:data:`FAMILIES`) of a registered model (case-insensitive name).

    Raises:
        ValueError: for an unknown name.
    """
    return _MODELS[_canonical(name)][1]


def get_model_spec(name: str) -> VariantSpec:
    """The :class:`VariantSpec` row of a registered model (case-insensitive name).

    Raises:
        ValueError: for an unknown name, or a model of another family than ``"binary"``
            (which has no variant row).
    """
    canonical = _canonical(name)
    family = _MODELS[canonical][1]
    if family != "binary":
        raise ValueError(f"{canonical} is a {family} network, not a MeliusNet variant.")
    return VARIANTS[canonical]


def create_model(name: str, **kwargs) -> tf.keras.Model:
    """Builds a registered model of any family by name; ``kwargs`` go to its builder.

    Arguments whose value is ``None`` are dropped, so one command line can drive every model.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    builder = get_builder(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None or k == "classifier_activation"}
    return builder(**kwargs)


def get_builder(name: str) -> Callable[..., tf.keras.Model]:
    """The builder function of a registered model."""
    return _MODELS[_canonical(name)][0]


register_models({name: _make_builder(spec) for name, spec in VARIANTS.items()}, family="binary")
