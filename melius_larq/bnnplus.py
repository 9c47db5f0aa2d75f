r"""BNN+: the SignSwish quantizer, the scale regularizers with trainable α, BNN+ layers, schedules.

BNN+ trains a binary network with three additions to the plain straight-through estimator:

1. **SignSwish** (:func:`sign_swish`, :class:`SignSwish`): the forward pass is ``sign(x)``;
   the backward pass uses the derivative of the smooth SignSwish function ``SS_β``, with a
   fixed or trainable β.
2. **Scale regularizers** (:func:`manhattan_regularization`,
   :func:`euclidean_regularization`): ``λ Σ |α − |w||`` or ``λ Σ (α − |w|)²`` on the latent
   (full-precision) weights, which pulls them towards ``±α``, with trainable scales α.
3. **Scaled binary weights**: α multiplies the binary kernel in the forward pass,
   ``kernel = α · sign(w)`` (:class:`BNNPlusConv2D`, :class:`BNNPlusDense`).

λ and β are ``tf.Variable``s, so :class:`RegularizationScheduler` and :class:`BetaScheduler`
change them during ``fit`` without recompiling. :class:`BNNPlusConfig` holds the options the
registry builders take with ``binarization="bnn+"``.

Several details of the paper could not be checked against its text (spec ``bnnplus.md``,
items [RECALL]); each is an option here, and its default is documented where it is defined:
SignSwish or the STE for the weights (:attr:`BNNPlusConfig.weight_estimator`), α per output
channel or per layer (``alpha_sharing``), α in the forward pass or only in the regularizer
(``alpha_in_forward``), the α initialisation (mean ``|W|``), λ, and β fixed or trainable.

Example:
    >>> import melius_larq
    >>> from melius_larq import bnnplus
    >>> model = melius_larq.MeliusNet22(
    ...     input_shape=(32, 32, 3), num_classes=10, stem="thumbnail", binarization="bnn+",
    ...     bnn_plus=bnnplus.BNNPlusConfig(regularizer="euclidean", train_beta=True))
    >>> len(model.losses)  # one regularization term per binary convolution
    34

References:
    - [BNN+: Improved Binary Network Training](https://arxiv.org/abs/1812.11800),
      Darabi, Belbahri, Courbariaux and Partovi Nia, 2018 (v3: "Regularized Binary Network
      Training", NeurIPS 2019 EMC2 workshop).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator

import larq as lq

from melius_larq._compat import tf

__all__ = [
    "ALPHA_MIN",
    "BETA_RANGE",
    "BINARIZATIONS",
    "DEFAULT_BETA",
    "DEFAULT_REG_LAMBDA",
    "REGULARIZERS",
    "BNNPlusConfig",
    "BNNPlusConv2D",
    "BNNPlusDense",
    "BetaScheduler",
    "ClipByValue",
    "RegularizationScheduler",
    "SignSwish",
    "bnn_plus_layers",
    "euclidean_regularization",
    "linear_schedule",
    "manhattan_regularization",
    "resolve_binarization",
    "scale_regularization",
    "sign_swish",
    "sign_swish_quantizers",
]

BINARIZATIONS = ("ste", "bnn+")
DEFAULT_BETA = 5.0  # larq SwishSign, bitorch and QuantizedNetworks.jl all default to β = 5
# Trainable β has nothing that stops it drifting (spec section 4); [1, 20] keeps the peak
# pseudo-gradient (= β) between the STE's 1 and 4x the paper's largest β = 10 [RECALL].
BETA_RANGE = (1.0, 20.0)
# Keeps α strictly positive (the regularizer's target and the forward scale) without binding
# in practice: mean |W| of a He-initialised 3x3 conv with 1024 inputs is still about 0.012.
ALPHA_MIN = 1e-4
# The paper's λ is unknown [RECALL]. These defaults make λ·ΣR about 3.4 % of the initial
# cross-entropy (ln 10) of a 10-class MeliusNet22 with the thumbnail stem at 28x28 (measured:
# ΣR = 7.7e4 for Manhattan and 1.6e3 for Euclidean at initialisation). The regularizer is
# summed over the weights, so λ must shrink as models grow: sweep it in x10 steps.
DEFAULT_REG_LAMBDA = {"manhattan": 1e-6, "euclidean": 5e-5}


# SignSwish -------------------------------------------------------------------------------
def _sign_swish_derivative(x, beta):
    """``(2 − βx·tanh(βx/2)) / (1 + cosh(βx))``: dSS_β/dx without its factor β.

    For |βx| above ~89 (float32) ``cosh`` overflows to inf and this is -0.0, not NaN, which is
    the correct limit.
    """
    bx = beta * x
    return (2.0 - bx * tf.tanh(0.5 * bx)) / (1.0 + tf.cosh(bx))


@tf.custom_gradient
def sign_swish(x: tf.Tensor, beta: tf.Tensor) -> tf.Tensor:
    r"""Sign binarization with the SignSwish pseudo-gradient, for x and for β.

    Forward pass (larq's ``math.sign``, +1 at 0, which LCE lowers to ``LceQuantize``):

    \[ q(x) = \begin{cases} -1 & x < 0 \\ +1 & x \geq 0 \end{cases} \]

    Backward pass: the derivatives of
    \( SS_\beta(x) = 2\sigma(\beta x)\,[1 + \beta x (1 - \sigma(\beta x))] - 1 \),

    \[ \frac{\partial q}{\partial x} := \frac{\beta\,[2 - \beta x \tanh(\beta x / 2)]}
       {1 + \cosh(\beta x)}, \qquad
       \frac{\partial q}{\partial \beta} := \frac{x\,[2 - \beta x \tanh(\beta x / 2)]}
       {1 + \cosh(\beta x)}. \]

    The β pseudo-gradient is summed over all elements, since β is a scalar. SS_β is not
    monotone: both pseudo-gradients are slightly negative for \(|x| > 2.3994/\beta\).

    Args:
        x: the tensor to binarize.
        beta: scalar tensor (or float) of x's dtype; the peak pseudo-gradient, at x = 0.

    Returns:
        ``sign(x)`` in {-1, +1}, of x's dtype.

    References:
        - [BNN+: Improved Binary Network Training](https://arxiv.org/abs/1812.11800)
    """

    def grad(dy):
        d = _sign_swish_derivative(x, beta)
        return dy * beta * d, tf.reduce_sum(dy * x * d)

    return lq.math.sign(x), grad


@tf.keras.utils.register_keras_serializable(package="melius_larq")
class ClipByValue(tf.keras.constraints.Constraint):
    """Clips a variable element-wise to ``[min_value, max_value]`` after each update.

    Args:
        min_value: float. Lower bound.
        max_value: float or None. Upper bound; None leaves the variable unbounded above.
    """

    def __init__(self, min_value: float, max_value: float | None = None):
        if max_value is not None and not min_value <= max_value:
            raise ValueError(
                f"Expected min_value <= max_value, but got min_value={min_value!r}, "
                f"max_value={max_value!r}."
            )
        self.min_value = float(min_value)
        self.max_value = None if max_value is None else float(max_value)

    def __call__(self, w):
        if self.max_value is None:
            return tf.maximum(w, tf.cast(self.min_value, w.dtype))
        return tf.clip_by_value(w, self.min_value, self.max_value)

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value}


@tf.keras.utils.register_keras_serializable(package="melius_larq")
class SignSwish(lq.quantizers.Quantizer):
    r"""SignSwish quantizer of BNN+: ``sign`` forward, the SS_β derivative backward.

    The forward pass equals ``larq.quantizers.SteSign`` (and LCE converts it the same way); see
    :func:`sign_swish` for the pseudo-gradients. β lives in a scalar ``tf.Variable``
    (``beta_variable``), created when the quantizer is built:

    * ``train_beta=False``: non-trainable; :class:`BetaScheduler` may change it during ``fit``.
    * ``train_beta=True``: trained with the pseudo-gradient ∂SS_β/∂β and clipped to
      ``beta_range`` after each optimizer step. (larq's ``SwishSign`` cannot train β: its
      forward pass does not depend on β, so autodiff gives β no gradient.)

    Use it as ``input_quantizer`` or ``kernel_quantizer`` of a larq layer. Unlike larq's
    quantizers it takes no ``metrics`` argument.

    Args:
        beta: float > 0. Initial β; larger values approximate the derivative of sign more
            closely. Defaults to 5.0 (larq's default; the paper used 5 and 10 [RECALL]).
        train_beta: bool. Whether β is trainable. Defaults to False (the paper's ImageNet
            runs used a fixed β, per larq PR #172).
        beta_range: ``(min, max)`` that β is clipped to after each update of a trainable β and
            that :class:`BetaScheduler` values must respect. Defaults to ``(1.0, 20.0)``.
        **kwargs: forwarded to ``tf.keras.layers.Layer``.

    References:
        - [BNN+: Improved Binary Network Training](https://arxiv.org/abs/1812.11800)
    """

    precision = 1

    def __init__(
        self,
        beta: float = DEFAULT_BETA,
        *,
        train_beta: bool = False,
        beta_range: tuple[float, float] = BETA_RANGE,
        **kwargs,
    ):
        low, high = (float(v) for v in beta_range)
        if not 0 < low <= high:
            raise ValueError(
                f"Expected `beta_range` to be (min, max) with 0 < min <= max, but got {beta_range!r}."
            )
        if not low <= beta <= high:
            raise ValueError(
                f"Expected `beta` within beta_range={(low, high)}, but got beta={beta!r}."
            )
        super().__init__(**kwargs)
        self.beta = float(beta)
        self.train_beta = bool(train_beta)
        self.beta_range = (low, high)

    def build(self, input_shape):
        self.beta_variable = self.add_weight(
            "beta",
            shape=(),
            initializer=tf.keras.initializers.Constant(self.beta),
            trainable=self.train_beta,
            constraint=ClipByValue(*self.beta_range),
        )
        super().build(input_shape)

    def call(self, inputs):
        # The variable is read (and cast) outside the custom gradient, so the β gradient
        # reaches it through the ordinary read op.
        return sign_swish(inputs, tf.cast(self.beta_variable, inputs.dtype))

    def get_config(self):
        return {
            **super().get_config(),
            "beta": self.beta,
            "train_beta": self.train_beta,
            "beta_range": list(self.beta_range),
        }


# Regularizers -----------------------------------------------------------------------------
def manhattan_regularization(w: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    r"""The BNN+ Manhattan regularizer \( \sum_i |\alpha - |w_i|| \) (without λ).

    Gradients: \( \partial R/\partial w = -\mathrm{sign}(\alpha - |w|)\,\mathrm{sign}(w) \),
    \( \partial R/\partial \alpha = \sum \mathrm{sign}(\alpha - |w|) \); trained through R alone,
    α settles at the median of |w|.

    Args:
        w: latent weights; the last axis is the output channel.
        alpha: scales broadcastable to ``w`` (shape ``()`` or ``(channels,)``).
    """
    return tf.reduce_sum(tf.abs(alpha - tf.abs(w)))


def euclidean_regularization(w: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    r"""The BNN+ Euclidean regularizer \( \sum_i (\alpha - |w_i|)^2 \) (without λ).

    Gradients: \( \partial R/\partial w = -2(\alpha - |w|)\,\mathrm{sign}(w) \),
    \( \partial R/\partial \alpha = 2 \sum (\alpha - |w|) \); trained through R alone, α
    settles at mean |w|, which is also its initial value (XNOR-Net's scale).

    Args:
        w: latent weights; the last axis is the output channel.
        alpha: scales broadcastable to ``w`` (shape ``()`` or ``(channels,)``).
    """
    return tf.reduce_sum(tf.square(alpha - tf.abs(w)))


REGULARIZERS: dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {
    "manhattan": manhattan_regularization,
    "euclidean": euclidean_regularization,
}
_REGULARIZER_ALIASES = {"l1": "manhattan", "l2": "euclidean"}


def _canonical_regularizer(name: str) -> str:
    key = _REGULARIZER_ALIASES.get(name, name) if isinstance(name, str) else name
    if key not in REGULARIZERS:
        raise ValueError(
            "Expected `regularizer` to be 'manhattan' ('l1') or 'euclidean' ('l2'), but got "
            f"{name!r}."
        )
    return key


def _resolve_lambda(reg_lambda, regularizer: str) -> float:
    """``reg_lambda`` checked, or the default of the (canonical) regularizer for None."""
    if reg_lambda is None:
        return DEFAULT_REG_LAMBDA[regularizer]
    if isinstance(reg_lambda, bool) or not (
        isinstance(reg_lambda, int | float) and 0 <= reg_lambda < math.inf
    ):
        raise ValueError(
            f"Expected `reg_lambda` to be a float >= 0 or None, but got {reg_lambda!r}."
        )
    return float(reg_lambda)


def scale_regularization(w: tf.Tensor, alpha: tf.Tensor, regularizer: str = "manhattan"):
    """``manhattan_regularization`` or ``euclidean_regularization`` by name (or l1/l2)."""
    return REGULARIZERS[_canonical_regularizer(regularizer)](w, alpha)


# Layers -----------------------------------------------------------------------------------
_ALPHA_SHARING = ("channel", "layer")


class _BNNPlusMixin:
    """α, λ and the regularization loss, shared by the BNN+ conv and dense layers."""

    def _init_bnn_plus(self, regularizer, reg_lambda, alpha_sharing, alpha_in_forward,
                       alpha_max):  # fmt: skip
        if alpha_sharing not in _ALPHA_SHARING:
            raise ValueError(
                f"Expected `alpha_sharing` to be one of {_ALPHA_SHARING}, but got "
                f"{alpha_sharing!r}."
            )
        if alpha_max is not None and not alpha_max > ALPHA_MIN:
            raise ValueError(f"Expected `alpha_max` > {ALPHA_MIN} or None, but got {alpha_max!r}.")
        self.regularizer = _canonical_regularizer(regularizer)
        self.reg_lambda = _resolve_lambda(reg_lambda, self.regularizer)
        self.alpha_sharing = alpha_sharing
        self.alpha_in_forward = bool(alpha_in_forward)
        self.alpha_max = None if alpha_max is None else float(alpha_max)

    def _alpha_upper_bound(self) -> float | None:
        """``alpha_max``, else the clip value of a ``WeightClip`` kernel constraint."""
        if self.alpha_max is not None:
            return self.alpha_max
        return getattr(self.kernel_constraint, "clip_value", None)

    def _build_bnn_plus(self):
        latent = self.kernel.latent_variable
        reduce_axes = (
            list(range(latent.shape.rank - 1)) if self.alpha_sharing == "channel" else None
        )
        shape = (latent.shape[-1],) if self.alpha_sharing == "channel" else ()
        constraint = ClipByValue(ALPHA_MIN, self._alpha_upper_bound())

        def mean_abs_kernel(shape, dtype=None):
            # XNOR-Net's scale, mean |W| per output channel (or over the layer) [RECALL]
            return constraint(tf.cast(tf.reduce_mean(tf.abs(latent), axis=reduce_axes), dtype))

        self.alpha = self.add_weight(
            "alpha", shape=shape, initializer=mean_abs_kernel, constraint=constraint,
            trainable=True,
        )  # fmt: skip
        self.reg_lambda_variable = self.add_weight(
            "reg_lambda",
            shape=(),
            initializer=tf.keras.initializers.Constant(self.reg_lambda),
            trainable=False,
        )
        self.add_loss(self.regularization_loss)

    def regularization_loss(self) -> tf.Tensor:
        """``λ · Σ R(w; α)`` on the latent weights (λ is the current ``reg_lambda_variable``)."""
        r = REGULARIZERS[self.regularizer](self.kernel.latent_variable, self.alpha)
        return self.reg_lambda_variable * r

    def _scale(self, outputs, channels_first=False):
        """``outputs · α``: the same as using the kernel ``α · sign(w)``."""
        alpha = tf.cast(self.alpha, outputs.dtype)
        if self.alpha_sharing == "channel" and channels_first:
            alpha = tf.reshape(alpha, [-1] + [1] * (outputs.shape.rank - 2))
        return outputs * alpha

    def _bnn_plus_config(self):
        return {
            "regularizer": self.regularizer,
            "reg_lambda": self.reg_lambda,
            "alpha_sharing": self.alpha_sharing,
            "alpha_in_forward": self.alpha_in_forward,
            "alpha_max": self.alpha_max,
        }


def _bnn_plus_defaults(kwargs):
    kwargs.setdefault("input_quantizer", SignSwish())
    kwargs.setdefault("kernel_quantizer", lq.quantizers.SteSign(clip_value=1.0))
    kwargs.setdefault("kernel_constraint", lq.constraints.WeightClip(1.0))
    return kwargs


_LAYER_ARGS_DOC = """regularizer: ``"manhattan"`` (``"l1"``, |α − |w||) or ``"euclidean"``
            (``"l2"``, (α − |w|)²). Defaults to ``"manhattan"``.
        reg_lambda: float >= 0 or None. Strength λ of the summed regularizer; its current
            value is the non-trainable variable ``reg_lambda_variable``. None (default)
            takes ``DEFAULT_REG_LAMBDA[regularizer]``: 1e-6 (Manhattan), 5e-5 (Euclidean).
        alpha_sharing: ``"channel"`` (one α per output channel, default [RECALL]) or
            ``"layer"`` (one α for the layer).
        alpha_in_forward: bool. Whether the forward pass uses ``α · sign(w)``; if False, α
            only sets the regularizer's target. Defaults to True [RECALL].
        alpha_max: float or None. Upper bound of α; None uses the clip value of a
            ``WeightClip`` kernel constraint (else α is only bounded below by ``ALPHA_MIN``)."""


@tf.keras.utils.register_keras_serializable(package="melius_larq")
class BNNPlusConv2D(_BNNPlusMixin, lq.layers.QuantConv2D):
    """A ``larq.layers.QuantConv2D`` with BNN+'s trainable scales α and scale regularizer.

    The layer owns α (trainable, initialised to mean |W| of the initial latent kernel and
    clipped to ``[ALPHA_MIN, alpha_max]``) and λ, and adds ``λ Σ R(w; α)`` on the latent
    weights to ``layer.losses``. With ``alpha_in_forward`` it computes
    ``conv(q(x), α · sign(w)) (+ bias)`` as ``conv(q(x), sign(w)) · α``, a per-channel multiply
    that LCE folds into ``LceBconv2d``'s output multiplier.

    Quantizer defaults (each overridable by its keyword): ``input_quantizer=SignSwish()``,
    ``kernel_quantizer=SteSign(clip_value=1.0)`` (STE for the weights [RECALL]),
    ``kernel_constraint=WeightClip(1.0)``.

    Args:
        filters: int. Output channels.
        kernel_size: int or tuple. Kernel height and width.
        {args}
        **kwargs: forwarded to ``larq.layers.QuantConv2D`` (``padding``, ``pad_values``,
            ``use_bias``, quantizers, ...).

    References:
        - [BNN+: Improved Binary Network Training](https://arxiv.org/abs/1812.11800)
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        *,
        regularizer: str = "manhattan",
        reg_lambda: float | None = None,
        alpha_sharing: str = "channel",
        alpha_in_forward: bool = True,
        alpha_max: float | None = None,
        **kwargs,
    ):
        super().__init__(filters, kernel_size, **_bnn_plus_defaults(kwargs))
        self._init_bnn_plus(regularizer, reg_lambda, alpha_sharing, alpha_in_forward, alpha_max)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_bnn_plus()

    def convolution_op(self, inputs, kernel):
        outputs = super().convolution_op(inputs, kernel)
        if not self.alpha_in_forward:
            return outputs
        return self._scale(outputs, channels_first=self.data_format == "channels_first")

    def get_config(self):
        return {**super().get_config(), **self._bnn_plus_config()}


@tf.keras.utils.register_keras_serializable(package="melius_larq")
class BNNPlusDense(_BNNPlusMixin, lq.layers.QuantDense):
    """A ``larq.layers.QuantDense`` with BNN+'s trainable scales α and scale regularizer.

    The same as :class:`BNNPlusConv2D` for a dense kernel ``(inputs, units)``: α is per output
    unit (or per layer), and the forward pass is ``(q(x) · sign(W)) · α (+ bias)``.

    Args:
        units: int. Output units.
        {args}
        **kwargs: forwarded to ``larq.layers.QuantDense``.

    References:
        - [BNN+: Improved Binary Network Training](https://arxiv.org/abs/1812.11800)
    """

    def __init__(
        self,
        units: int,
        *,
        regularizer: str = "manhattan",
        reg_lambda: float | None = None,
        alpha_sharing: str = "channel",
        alpha_in_forward: bool = True,
        alpha_max: float | None = None,
        **kwargs,
    ):
        super().__init__(units, **_bnn_plus_defaults(kwargs))
        self._init_bnn_plus(regularizer, reg_lambda, alpha_sharing, alpha_in_forward, alpha_max)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_bnn_plus()

    def call(self, inputs):
        if not self.alpha_in_forward:
            return super().call(inputs)
        inputs = tf.convert_to_tensor(inputs)
        if inputs.dtype != self.compute_dtype:
            inputs = tf.cast(inputs, self.compute_dtype)
        if self.input_quantizer is not None:
            inputs = self.input_quantizer(inputs)
        with lq.context.quantized_scope(True):
            kernel = tf.convert_to_tensor(self.kernel)  # sign(w), read as the quantizer's output
        if inputs.shape.rank == 2:
            outputs = tf.matmul(inputs, kernel)
        else:
            outputs = tf.tensordot(inputs, kernel, [[inputs.shape.rank - 1], [0]])
        outputs = self._scale(outputs)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        return {**super().get_config(), **self._bnn_plus_config()}


BNNPlusConv2D.__doc__ = BNNPlusConv2D.__doc__.replace("{args}", _LAYER_ARGS_DOC)
BNNPlusDense.__doc__ = BNNPlusDense.__doc__.replace("{args}", _LAYER_ARGS_DOC)


# Builder configuration --------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BNNPlusConfig:
    """The BNN+ options of the registry builders (``binarization="bnn+"``).

    Every binary convolution of the model becomes a :class:`BNNPlusConv2D`; the full-precision
    stem, transitions and classifier stay as they are (BNN+ also keeps the first and last
    layers in full precision). The preset still sets padding, initializer and the STE clip of
    the weights.

    Attributes:
        regularizer: ``"manhattan"`` (l1) or ``"euclidean"`` (l2); the paper compares both
            [RECALL]. Defaults to ``"manhattan"``.
        reg_lambda: λ of the summed regularizer. The paper's values are unknown [RECALL];
            None (default) takes ``DEFAULT_REG_LAMBDA[regularizer]``: 1e-6 (Manhattan) or
            5e-5 (Euclidean), which make λ·ΣR about 3.4 % of the initial cross-entropy of a
            10-class MeliusNet22 (thumbnail stem, 28x28); scale λ with the model size.
            ``BNNPlusConfig(...).reg_lambda`` is the resolved value.
        alpha_sharing: ``"channel"`` (default [RECALL]) or ``"layer"``.
        alpha_in_forward: use ``α · sign(w)`` in the forward pass. Defaults to True
            [RECALL, ~70 %]; with BatchNorm after the conv it barely changes the function.
        beta: initial β of the activations' SignSwish. Defaults to 5.0.
        train_beta: train β (one per binary layer). Defaults to False (the paper's
            ImageNet runs used a fixed β).
        beta_range: range that β is clipped to. Defaults to ``(1.0, 20.0)``.
        weight_estimator: pseudo-gradient of the weights' sign: ``"ste"`` (the preset's
            STE, default [RECALL]) or ``"sign_swish"`` (SignSwish with the same β options).
        weight_clip: ``WeightClip`` on the latent weights and upper bound of α. Defaults to
            1.0 (BNN's clip, which keeps the regularizer from pushing weights past the
            STE's range); None keeps the preset's constraint.
    """

    regularizer: str = "manhattan"
    reg_lambda: float | None = None
    alpha_sharing: str = "channel"
    alpha_in_forward: bool = True
    beta: float = DEFAULT_BETA
    train_beta: bool = False
    beta_range: tuple[float, float] = BETA_RANGE
    weight_estimator: str = "ste"
    weight_clip: float | None = 1.0

    def __post_init__(self):
        object.__setattr__(self, "regularizer", _canonical_regularizer(self.regularizer))
        object.__setattr__(self, "reg_lambda", _resolve_lambda(self.reg_lambda, self.regularizer))
        object.__setattr__(self, "beta_range", tuple(float(v) for v in self.beta_range))
        if self.alpha_sharing not in _ALPHA_SHARING:
            raise ValueError(
                f"Expected `alpha_sharing` to be one of {_ALPHA_SHARING}, but got "
                f"{self.alpha_sharing!r}."
            )
        if self.weight_estimator not in ("ste", "sign_swish"):
            raise ValueError(
                "Expected `weight_estimator` to be 'ste' or 'sign_swish', but got "
                f"{self.weight_estimator!r}."
            )
        if self.weight_clip is not None and not self.weight_clip > ALPHA_MIN:
            raise ValueError(
                f"Expected `weight_clip` > {ALPHA_MIN} or None, but got {self.weight_clip!r}."
            )
        self.sign_swish()  # validates beta and beta_range

    def sign_swish(self) -> SignSwish:
        """A new :class:`SignSwish` with this configuration's β options."""
        return SignSwish(self.beta, train_beta=self.train_beta, beta_range=self.beta_range)

    def conv2d(self, filters, kernel_size, *, kernel_clip=1.0, weight_clip=None, **kwargs):
        """A :class:`BNNPlusConv2D` with these options.

        Args:
            filters: output channels.
            kernel_size: kernel size.
            kernel_clip: ``clip_value`` of the weights' ``SteSign`` (None: identity STE),
                used with ``weight_estimator="ste"``.
            weight_clip: ``WeightClip`` value used when ``self.weight_clip`` is None.
            **kwargs: forwarded to :class:`BNNPlusConv2D`.
        """
        clip = self.weight_clip if self.weight_clip is not None else weight_clip
        if self.weight_estimator == "ste":
            kernel_quantizer = lq.quantizers.SteSign(clip_value=kernel_clip)
        else:
            kernel_quantizer = self.sign_swish()
        return BNNPlusConv2D(
            filters,
            kernel_size,
            regularizer=self.regularizer,
            reg_lambda=self.reg_lambda,
            alpha_sharing=self.alpha_sharing,
            alpha_in_forward=self.alpha_in_forward,
            input_quantizer=self.sign_swish(),
            kernel_quantizer=kernel_quantizer,
            kernel_constraint=lq.constraints.WeightClip(clip) if clip is not None else None,
            **kwargs,
        )


def resolve_binarization(
    binarization: str, bnn_plus: BNNPlusConfig | dict | None
) -> BNNPlusConfig | None:
    """Checks the builders' ``binarization``/``bnn_plus`` pair; the BNN+ config or None (STE).

    Raises:
        ValueError: for an unknown binarization, ``bnn_plus`` options with
            ``binarization="ste"``, or unknown or invalid options.
    """
    if binarization not in BINARIZATIONS:
        raise ValueError(
            f"Expected `binarization` to be one of {BINARIZATIONS}, but got {binarization!r}."
        )
    if binarization == "ste":
        if bnn_plus is not None:
            raise ValueError(
                "`bnn_plus` options were given with binarization='ste'; pass "
                "binarization='bnn+' to use them."
            )
        return None
    if bnn_plus is None:
        return BNNPlusConfig()
    if isinstance(bnn_plus, BNNPlusConfig):
        return bnn_plus
    if isinstance(bnn_plus, dict):
        fields = {f.name for f in dataclasses.fields(BNNPlusConfig)}
        unknown = sorted(set(bnn_plus) - fields)
        if unknown:
            raise ValueError(
                f"Unknown `bnn_plus` option(s) {', '.join(unknown)}; expected some of "
                f"{', '.join(sorted(fields))}."
            )
        return BNNPlusConfig(**bnn_plus)
    raise ValueError(
        f"Expected `bnn_plus` to be a BNNPlusConfig, a dict or None, but got {bnn_plus!r}."
    )


# Schedules --------------------------------------------------------------------------------
def bnn_plus_layers(model: tf.keras.Model) -> list[_BNNPlusMixin]:
    """Every :class:`BNNPlusConv2D`/:class:`BNNPlusDense` in ``model`` (nested ones too)."""
    return [m for m in _unique(model.submodules) if isinstance(m, _BNNPlusMixin)]


def sign_swish_quantizers(model: tf.keras.Model, *, trainable: bool | None = None) -> list:
    """Every built :class:`SignSwish` in ``model``; ``trainable`` filters on ``train_beta``."""
    return [
        m
        for m in _unique(model.submodules)
        if isinstance(m, SignSwish)
        and hasattr(m, "beta_variable")
        and (trainable is None or m.train_beta == trainable)
    ]


def _unique(modules) -> Iterator:
    seen = set()
    for m in modules:
        if id(m) not in seen:
            seen.add(id(m))
            yield m


def linear_schedule(start: float, end: float, epochs: float) -> Callable[[float], float]:
    """``t -> start + (end − start) · min(t / epochs, 1)``: a linear ramp, then constant.

    Args:
        start: value at epoch 0.
        end: value from ``epochs`` on.
        epochs: length of the ramp in epochs (> 0; fractional epochs with ``per_batch``).
    """
    if not epochs > 0:
        raise ValueError(f"Expected `epochs` > 0, but got {epochs!r}.")

    def schedule(t: float) -> float:
        return start + (end - start) * min(t / epochs, 1.0)

    return schedule


class _VariableScheduler(tf.keras.callbacks.Callback):
    """Assigns ``schedule(t)`` at each epoch (or batch) start; t in epochs.

    Subclasses define ``_targets()`` (what the model has to schedule) and ``_apply(value)``.
    """

    log_name = ""

    def __init__(self, schedule: Callable[[float], float], *, per_batch: bool = False):
        super().__init__()
        if not callable(schedule):
            raise ValueError(f"Expected `schedule` to be callable, but got {schedule!r}.")
        self.schedule = schedule
        self.per_batch = per_batch
        self._epoch = 0
        self.value = None

    def on_train_begin(self, logs=None):
        if not self._targets():
            raise ValueError(f"{type(self).__name__}: {self.model.name} has nothing to schedule.")

    def _set(self, t: float):
        value = float(self.schedule(t))
        if not math.isfinite(value):
            raise ValueError(f"{type(self).__name__}: schedule({t}) = {value} is not finite.")
        self._apply(value)
        self.value = value

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._set(float(epoch))

    def on_train_batch_begin(self, batch, logs=None):
        steps = (self.params or {}).get("steps")
        if self.per_batch and steps:
            self._set(self._epoch + batch / steps)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.value is not None:
            logs[self.log_name] = self.value


class RegularizationScheduler(_VariableScheduler):
    """Scales λ of every BNN+ layer during training: λ = ``schedule(t)`` × its ``reg_lambda``.

    ``t`` is the epoch (plus the fraction of the epoch done, with ``per_batch=True``). λ is a
    variable, so the compiled train step sees each new value without recompiling. The scale
    is logged as ``reg_lambda_scale``.

    Example:
        Ramp λ linearly from 0 to each layer's ``reg_lambda`` over the first 5 epochs (a
        warm-up that is not from the paper):

        >>> ramp = RegularizationScheduler(linear_schedule(0.0, 1.0, epochs=5), per_batch=True)

    Args:
        schedule: ``t -> scale`` (a float >= 0).
        per_batch: update at every batch instead of every epoch.

    Raises:
        ValueError: at the start of ``fit`` if the model has no BNN+ layer, or for a negative
            or non-finite scale.
    """

    log_name = "reg_lambda_scale"

    def _targets(self):
        return bnn_plus_layers(self.model)

    def _apply(self, value):
        if value < 0:
            raise ValueError(f"RegularizationScheduler: negative λ scale {value}.")
        for layer in self._targets():
            layer.reg_lambda_variable.assign(value * layer.reg_lambda)


class BetaScheduler(_VariableScheduler):
    """Sets β of every fixed-β :class:`SignSwish` to ``schedule(t)`` during training.

    Trainable β (``train_beta=True``) are left to the optimizer. β is a variable, so the
    compiled train step sees each new value without recompiling. β is logged as ``beta``.

    Example:
        Sharpen the pseudo-gradient from β = 1 to β = 10 over 20 epochs:

        >>> anneal = BetaScheduler(linear_schedule(1.0, 10.0, epochs=20))

    Args:
        schedule: ``t -> β``, within each quantizer's ``beta_range``.
        per_batch: update at every batch instead of every epoch.

    Raises:
        ValueError: at the start of ``fit`` if the model has no fixed-β SignSwish, or for a β
            outside a quantizer's ``beta_range``.
    """

    log_name = "beta"

    def _targets(self):
        return sign_swish_quantizers(self.model, trainable=False)

    def _apply(self, value):
        for q in self._targets():
            low, high = q.beta_range
            if not low <= value <= high:
                raise ValueError(
                    f"BetaScheduler: β = {value} is outside beta_range={q.beta_range} of {q.name}."
                )
            q.beta_variable.assign(value)
