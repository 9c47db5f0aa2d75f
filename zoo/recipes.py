"""Training recipes as plain data: one per model x dataset.

The ImageNet recipes are the authors' (Bethge et al. 2020 and their BMXNet-v2 code): RAdam (beta_1 0.95,
epsilon 1e-5), learning rate 0.002 with a per-step cosine decay to 0 and no warm-up, 120
epochs, total batch 64, no weight decay, He-normal initialisation (the ``lce`` preset), plain
cross-entropy. MeliusNet59: lr 0.003, 150 epochs, batch 96; 42: batch 64; C: batch 128;
BinaryDenseNet37: batch 32.
"""

from __future__ import annotations

import dataclasses
import math
import typing

__all__ = [
    "BNN_PLUS_FIELDS",
    "RECIPES",
    "Recipe",
    "apply_overrides",
    "bnn_plus_options",
    "effective_settings",
    "check_recipe",
    "get_recipe",
]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything a training run needs besides the data location.

    Attributes:
        name: recipe name.
        model: registry model name.
        dataset: ``fashion_mnist``, ``cifar10`` or ``imagenet2012``.
        epochs: training epochs.
        batch_size: total batch size (split across replicas).
        learning_rate: peak learning rate.
        optimizer: ``radam`` or ``adam``.
        beta_1, beta_2, epsilon: optimizer moments.
        schedule: ``cosine`` (per step, to 0) or ``constant``.
        warmup_epochs: linear warm-up epochs before the schedule.
        weight_decay: decoupled weight decay (0 = none).
        stem, preset: model options (see the builders).
        width: width multiplier of the float models of ``melius_larq.float_models``
            (ResNet18 ``width``, MobileNetV1 ``alpha``); binary models take no width.
        input_size: input height/width.
        augment: ``none``, ``flip_crop`` (pad 2 + random crop + flip) or ``imagenet``.
        train_limit: use only the first N training images (quick runs); None = all.
        validation_fraction: share of the training images held out (the last ones) to
            monitor training and make choices on; the test set is evaluated once, after
            training. 0 = no validation.
        binarization: ``ste`` or ``bnn+``. The ``bnn_*`` fields are the options of
            ``melius_larq.BNNPlusConfig`` (named in brackets; see its documentation for the
            defaults and the reasons for them) and apply only with ``bnn+``: with ``ste``,
            a value other than the default is an error.
        bnn_regularizer: ``manhattan`` (L1), ``euclidean`` (L2) or ``none``
            (``regularizer``).
        bnn_lambda: regularization strength λ; None takes the package default
            (``reg_lambda``).
        bnn_beta: initial β of SignSwish (``beta``).
        bnn_train_beta: train β (True) or keep it fixed (False) (``train_beta``).
        bnn_activation: estimator of the activations' sign, ``sign_swish`` or ``ste``
            (``activation_estimator``).
        bnn_activation_clip: clip of the activations' STE; None takes the network's
            (``activation_clip``).
        bnn_beta_end: schedule β linearly from ``bnn_beta`` to this value; None keeps β
            fixed (``beta_end``).
        bnn_beta_ramp_epochs: length of that ramp; None ramps over the whole run
            (``beta_ramp_epochs``).
        bnn_weight_estimator: estimator of the weights' sign, ``ste`` or ``sign_swish``
            (``weight_estimator``).
        bnn_weight_clip: ``WeightClip`` of the latent weights; None keeps the network's
            (``weight_clip``).
        bnn_alpha_in_forward: α scales the binary weights in the forward pass
            (``alpha_in_forward``).
        bnn_alpha_sharing: ``channel`` or ``layer`` (``alpha_sharing``).
        bnn_reduction: ``mean`` or ``sum`` of the regularizer over a layer's weights
            (``reduction``).
        teacher: knowledge distillation from a float teacher: a ``.keras`` file, or the name
            of a recipe that is trained first into ``RUN_DIR/teacher`` (and reused from
            there); None = no distillation (``melius_larq.Distiller``).
        kd_weight: weight of the label cross-entropy in the distillation loss, in [0, 1]
            (the soft-target term gets ``1 - kd_weight``).
        kd_temperature: distillation temperature, > 0.
        precision: ``float32``, ``mixed_bfloat16`` (about 2x faster training on CPUs with
            AVX512-BF16; the saved model is float32) or ``mixed_float16`` (GPUs).
        init: start from trained weights instead of a random initialisation: a ``.keras``
            model file, a run directory (its ``model.keras``) or ``imagenet`` (the published
            weights of the model, see ``melius_larq.list_pretrained``). Every layer but the
            classifier takes the source's weights by layer name; the classifier too when the
            class counts match, otherwise it starts fresh (``melius_larq.zoo.finetune``).
            None = random initialisation.
        freeze_epochs: with ``init``, train only the classifier for this many epochs (at
            ``learning_rate``, its own cosine decay), then every layer for the remaining
            ``epochs - freeze_epochs`` at ``fine_tune_learning_rate``. 0 = all layers from
            the start.
        fine_tune_learning_rate: peak learning rate of the all-layer epochs after
            ``freeze_epochs``; None = ``learning_rate``.
        jit_compile: compile the training step with XLA. Off by default: on the 2-core CPU
            it made MeliusNet22 training slower (README, "Training throughput").
        seed: random seed.
    """

    name: str
    model: str
    dataset: str
    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str = "radam"
    beta_1: float = 0.95
    beta_2: float = 0.999
    epsilon: float = 1e-5
    schedule: str = "cosine"
    warmup_epochs: int = 0
    weight_decay: float = 0.0
    stem: str = "grouped"
    preset: str = "lce"
    width: float = 1.0
    input_size: int = 224
    augment: str = "imagenet"
    train_limit: int | None = None
    validation_fraction: float = 0.1
    binarization: str = "ste"
    bnn_regularizer: str = "manhattan"
    bnn_lambda: float | None = None
    bnn_beta: float = 2.0
    bnn_train_beta: bool = False
    bnn_activation: str = "sign_swish"
    bnn_activation_clip: float | None = None
    bnn_beta_end: float | None = None
    bnn_beta_ramp_epochs: float | None = None
    bnn_weight_estimator: str = "ste"
    bnn_weight_clip: float | None = None
    bnn_alpha_in_forward: bool = True
    bnn_alpha_sharing: str = "channel"
    bnn_reduction: str = "mean"
    teacher: str | None = None
    kd_weight: float = 0.5
    kd_temperature: float = 4.0
    precision: str = "float32"
    init: str | None = None
    freeze_epochs: int = 0
    fine_tune_learning_rate: float | None = None
    jit_compile: bool = False
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _imagenet(model: str, *, lr=0.002, epochs=120, batch=64, stem="grouped") -> Recipe:
    # validation: the last 1 % of the training images (12,812); test: ImageNet's validation set
    return Recipe(f"{model.lower()}_imagenet", model, "imagenet2012", epochs, batch, lr, stem=stem,
                  validation_fraction=0.01)  # fmt: skip


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        _imagenet("MeliusNet22"),
        _imagenet("MeliusNet29"),
        _imagenet("MeliusNet42"),
        _imagenet("MeliusNet59", lr=0.003, epochs=150, batch=96),
        _imagenet("MeliusNetA"),
        _imagenet("MeliusNetB"),
        _imagenet("MeliusNetC", batch=128),
        _imagenet("MeliusNet23"),
        _imagenet("BinaryDenseNet28"),
        _imagenet("BinaryDenseNet37", batch=32),
        _imagenet("BinaryDenseNet45"),
        # The `make demo` recipe: a MeliusNet sized for 28x28 images on a 2-core CPU, 4 epochs
        # to fit the 10-minute demo. lr 0.016 was chosen on validation accuracy among 0.004,
        # 0.008, 0.012 and 0.016 (docs/demo_sweep/lr_sweep.md).
        Recipe("meliusnettiny_fashion_mnist", "MeliusNetTiny", "fashion_mnist", 4, 128, 0.016,
               stem="small", input_size=28, augment="none"),
        # CPU-sized: the thumbnail stem keeps 28x28 Fashion-MNIST images at full resolution.
        Recipe("meliusnet22_fashion_mnist", "MeliusNet22", "fashion_mnist", 10, 128, 0.002,
               stem="thumbnail", input_size=28, augment="flip_crop"),
        # A float ResNet-18 at a quarter width (0.70M parameters): the distillation teacher
        # of the Fashion-MNIST recipes (teacher=resnet18_fashion_mnist).
        Recipe("resnet18_fashion_mnist", "ResNet18", "fashion_mnist", 15, 128, 0.002,
               optimizer="adam", beta_1=0.9, epsilon=1e-7, width=0.25, input_size=28,
               augment="flip_crop"),
        Recipe("meliusnet22_cifar10", "MeliusNet22", "cifar10", 100, 128, 0.002,
               stem="thumbnail", input_size=32, augment="flip_crop"),
        # The BNN baseline of BNN+ (melius_larq.BinaryNetSmall): BNN's optimizer (Adam) at a
        # learning rate in the range BNN used, not tuned. The stem and preset fields do not
        # apply to this network.
        Recipe("binarynet_fashion_mnist", "BinaryNetSmall", "fashion_mnist", 10, 128, 0.003,
               optimizer="adam", beta_1=0.9, epsilon=1e-7, input_size=28, augment="none"),
    )
}  # fmt: skip


# Recipe field -> melius_larq.BNNPlusConfig field.
BNN_PLUS_FIELDS = {
    "bnn_regularizer": "regularizer",
    "bnn_lambda": "reg_lambda",
    "bnn_beta": "beta",
    "bnn_train_beta": "train_beta",
    "bnn_activation": "activation_estimator",
    "bnn_activation_clip": "activation_clip",
    "bnn_beta_end": "beta_end",
    "bnn_beta_ramp_epochs": "beta_ramp_epochs",
    "bnn_weight_estimator": "weight_estimator",
    "bnn_weight_clip": "weight_clip",
    "bnn_alpha_in_forward": "alpha_in_forward",
    "bnn_alpha_sharing": "alpha_sharing",
    "bnn_reduction": "reduction",
}


_BETA_FIELDS = ("bnn_beta", "bnn_train_beta", "bnn_beta_end", "bnn_beta_ramp_epochs")


def effective_settings(settings: dict) -> dict:
    """A recipe's fields (``Recipe.to_dict()`` or a run's ``config.json``) without those that
    cannot change its run: every ``bnn_*`` field of an STE run, the β fields of a BNN+ run
    without SignSwish, and λ and the reduction of a BNN+ run without a regularizer. Two runs
    with equal effective settings trained the same way, whatever the package defaults of
    the ignored fields were when each was written."""
    out = dict(settings)
    if out.get("binarization", "ste") == "ste":
        return {k: v for k, v in out.items() if not k.startswith("bnn_")}
    if "sign_swish" not in (out.get("bnn_activation"), out.get("bnn_weight_estimator")):
        out = {k: v for k, v in out.items() if k not in _BETA_FIELDS}
    if out.get("bnn_regularizer") == "none":
        out = {k: v for k, v in out.items() if k not in ("bnn_lambda", "bnn_reduction")}
    return out


def bnn_plus_options(recipe: Recipe) -> dict:
    """The recipe's ``bnn_*`` fields as ``melius_larq.BNNPlusConfig`` keyword arguments."""
    return {option: getattr(recipe, key) for key, option in BNN_PLUS_FIELDS.items()}


def get_recipe(name: str) -> Recipe:
    """A recipe by name; ValueError lists the valid names."""
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; expected one of: {', '.join(RECIPES)}.")
    return RECIPES[name]


def _convert(field: dataclasses.Field, raw: str):
    hint = typing.get_type_hints(Recipe)[field.name]
    if raw.lower() in ("none", "null") and type(None) in typing.get_args(hint):
        return None
    base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
    if base is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"Recipe key {field.name!r} expects true or false, but got {raw!r}.")
    try:
        return base(raw)
    except ValueError as err:
        raise ValueError(
            f"Recipe key {field.name!r} expects {base.__name__}, but got {raw!r}."
        ) from err


def apply_overrides(recipe: Recipe, overrides: list[str] | dict) -> Recipe:
    """A copy of ``recipe`` with ``key=value`` overrides (strings are converted by type).

    Raises:
        ValueError: naming an unknown key or a value of the wrong type.
    """
    fields = {f.name: f for f in dataclasses.fields(Recipe)}
    items = overrides.items() if isinstance(overrides, dict) else []
    if not isinstance(overrides, dict):
        parsed = []
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"Expected an override of the form key=value, but got {item!r}.")
            parsed.append(item.split("=", 1))
        items = parsed
    changes = {}
    for key, value in items:
        if key not in fields:
            raise ValueError(f"Unknown recipe key {key!r}; expected one of: {', '.join(fields)}.")
        changes[key] = _convert(fields[key], value) if isinstance(value, str) else value
    return dataclasses.replace(recipe, **changes)


def _check_fine_tuning(recipe: Recipe) -> None:
    if not 0 <= recipe.freeze_epochs < recipe.epochs:
        raise ValueError(
            f"freeze_epochs={recipe.freeze_epochs!r} must be in [0, epochs={recipe.epochs}): "
            "the head-only epochs come before at least one epoch of all layers."
        )
    if recipe.freeze_epochs and not recipe.init:
        raise ValueError(
            f"freeze_epochs={recipe.freeze_epochs} needs init= (the weights to start from)."
        )
    rate = recipe.fine_tune_learning_rate
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"fine_tune_learning_rate={rate!r} must be a finite number > 0.")


def check_recipe(recipe: Recipe) -> None:
    """Range checks of the numeric recipe fields that training would only trip over later.

    Raises:
        ValueError: naming the field and its value.
    """
    positive = ("epochs", "batch_size", "input_size")
    for key in positive:
        if getattr(recipe, key) < 1:
            raise ValueError(f"{key}={getattr(recipe, key)!r} must be a positive integer.")
    for key in ("learning_rate", "kd_temperature"):
        value = getattr(recipe, key)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{key}={value!r} must be a finite number > 0.")
    _check_fine_tuning(recipe)
    if not 0.0 <= recipe.kd_weight <= 1.0:
        raise ValueError(f"kd_weight={recipe.kd_weight!r} is outside [0, 1].")
    if not 0.0 <= recipe.validation_fraction <= 0.5:
        raise ValueError(f"validation_fraction={recipe.validation_fraction!r} is outside [0, 0.5].")
    if not (math.isfinite(recipe.width) and recipe.width > 0):
        raise ValueError(f"width={recipe.width!r} must be a finite number > 0.")
    from melius_larq.registry import list_models, model_family

    family = model_family(recipe.model) if recipe.model in list_models(family=None) else None
    if family == "float" and recipe.binarization != "ste":
        raise ValueError(
            f"binarization={recipe.binarization!r} does not apply to the float model "
            f"{recipe.model!r}."
        )
    if family != "float" and recipe.width != 1.0:
        floats = ", ".join(list_models(family="float"))
        raise ValueError(
            f"width={recipe.width} applies to the float models ({floats}), not to {recipe.model!r}."
        )
    if recipe.train_limit is not None and recipe.train_limit < 1:
        raise ValueError(f"train_limit={recipe.train_limit!r} must be a positive integer.")
    if recipe.binarization == "bnn+":
        from melius_larq.bnnplus import BNNPlusConfig

        BNNPlusConfig(**bnn_plus_options(recipe))  # checks the options and their conflicts
    if recipe.binarization == "ste":
        defaults = Recipe("", "", "", 1, 1, 1.0)
        for key in BNN_PLUS_FIELDS:
            if getattr(recipe, key) != getattr(defaults, key):
                raise ValueError(
                    f"{key}={getattr(recipe, key)!r} conflicts with binarization='ste': the "
                    "bnn_* options apply to binarization=bnn+."
                )
    if family == "baseline":
        for key, default in (("stem", "grouped"), ("preset", "lce")):
            if getattr(recipe, key) != default:
                raise ValueError(
                    f"{key}={getattr(recipe, key)!r} does not apply to {recipe.model!r}, "
                    "which has no stem or preset options."
                )
