r"""BNN+ layers: larq quantized layers with trainable scales α and the scale regularizer.

References:
    - [BNN+: Improved Binary Network Training](https://arxiv.org/abs/1812.11800),
      Darabi, Belbahri, Courbariaux and Partovi Nia, 2018.
"""

from __future__ import annotations

import math

import larq as lq

from melius_larq._compat import tf
from melius_larq.bnnplus.quantizers import ClipByValue, SignSwish
from melius_larq.bnnplus.regularizers import (
    _canonical_regularizer,
    _check_reduction,
    _resolve_lambda,
    scale_regularization,
)

__all__ = ["ALPHA_MIN", "BNNPlusConv2D", "BNNPlusDense"]

# Keeps α strictly positive (the regularizer's target and the forward scale) without binding
# in practice: mean |W| of a He-initialised 3x3 conv with 1024 inputs is still about 0.012.
ALPHA_MIN = 1e-4
_ALPHA_SHARING = ("channel", "layer")


class _BNNPlusMixin:
    """α, λ and the regularization loss, shared by the BNN+ conv and dense layers."""

    def _init_bnn_plus(self, regularizer, reg_lambda, alpha_sharing, alpha_in_forward,
                       alpha_max, reduction):  # fmt: skip
        if alpha_sharing not in _ALPHA_SHARING:
            raise ValueError(
                f"Expected `alpha_sharing` to be one of {_ALPHA_SHARING}, but got "
                f"{alpha_sharing!r}."
            )
        if alpha_max is not None and not ALPHA_MIN < alpha_max < math.inf:
            raise ValueError(f"Expected `alpha_max` > {ALPHA_MIN} or None, but got {alpha_max!r}.")
        self.regularizer = _canonical_regularizer(regularizer)
        self.reduction = _check_reduction(reduction)
        self.reg_lambda = _resolve_lambda(reg_lambda, self.regularizer, self.reduction)
        self.alpha_sharing = alpha_sharing
        self.alpha_in_forward = bool(alpha_in_forward)
        self.alpha_max = None if alpha_max is None else float(alpha_max)

    def _alpha_upper_bound(self) -> float | None:
        """``alpha_max``, else the clip value of a ``WeightClip`` kernel constraint."""
        if self.alpha_max is not None:
            return self.alpha_max
        return getattr(self.kernel_constraint, "clip_value", None)

    @property
    def alpha_is_used(self) -> bool:
        """Whether α enters the forward pass or the regularizer (otherwise it is not trained)."""
        return self.alpha_in_forward or self.regularizer != "none"

    def _build_bnn_plus(self):
        latent = self.kernel.latent_variable
        reduce_axes = (
            list(range(latent.shape.rank - 1)) if self.alpha_sharing == "channel" else None
        )
        shape = (latent.shape[-1],) if self.alpha_sharing == "channel" else ()
        constraint = ClipByValue(ALPHA_MIN, self._alpha_upper_bound())

        def mean_abs_kernel(shape, dtype=None):
            # The α initialisation is not given in the paper; XNOR-Net's scale, mean |W| per
            # output channel (or over the layer), is chosen because it is where the Euclidean
            # regularizer alone would put α.
            return constraint(tf.cast(tf.reduce_mean(tf.abs(latent), axis=reduce_axes), dtype))

        # An α used nowhere would get no gradient; it is kept (non-trainable, at mean |W|) so
        # that every BNN+ layer has the same variables and the diagnostics can read it.
        self.alpha = self.add_weight(
            "alpha", shape=shape, initializer=mean_abs_kernel, constraint=constraint,
            trainable=self.alpha_is_used,
        )  # fmt: skip
        self.reg_lambda_variable = self.add_weight(
            "reg_lambda",
            shape=(),
            initializer=tf.keras.initializers.Constant(self.reg_lambda),
            trainable=False,
        )
        if self.regularizer != "none":
            self.add_loss(self.regularization_loss)

    def regularization_loss(self) -> tf.Tensor:
        """``λ · mean R(w; α)`` (or ``λ · Σ R``) on the latent weights; λ is the current
        ``reg_lambda_variable``. Zero for ``regularizer="none"``."""
        latent = self.kernel.latent_variable
        r = scale_regularization(latent, self.alpha, self.regularizer, self.reduction)
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
            "reduction": self.reduction,
        }

    @classmethod
    def from_config(cls, config):
        # Layers saved before `reduction` existed summed the regularizer over their weights.
        return super().from_config({"reduction": "sum", **config})


def _bnn_plus_defaults(kwargs):
    kwargs.setdefault("input_quantizer", SignSwish())
    kwargs.setdefault("kernel_quantizer", lq.quantizers.SteSign(clip_value=1.0))
    kwargs.setdefault("kernel_constraint", lq.constraints.WeightClip(1.0))
    return kwargs


_LAYER_ARGS_DOC = """regularizer: ``"manhattan"`` (``"l1"``, |α − |w||), ``"euclidean"``
            (``"l2"``, (α − |w|)²) or ``"none"`` (no regularization loss). Defaults to
            ``"manhattan"``.
        reg_lambda: float >= 0 or None. Strength λ of the regularizer; its current value is
            the non-trainable variable ``reg_lambda_variable``. λ is not given in the paper;
            None (default) takes ``DEFAULT_REG_LAMBDA[regularizer]`` (``SUM_REG_LAMBDA`` with
            ``reduction="sum"``), chosen to make the regularization loss a few percent of
            the initial cross-entropy of a small MeliusNet.
        alpha_sharing: ``"channel"`` (one α per output channel) or ``"layer"`` (one α for
            the layer). The paper leaves this uncertain; the default ``"channel"`` is chosen
            because it is the more likely reading of the paper (and XNOR-Net's choice).
        alpha_in_forward: bool. Whether the forward pass uses ``α · sign(w)``; if False, α
            only sets the regularizer's target (and with ``regularizer="none"`` as well it is
            not trained). The paper leaves this uncertain; defaults to True, the more likely
            reading, and with BatchNorm after the layer it barely changes the function.
        alpha_max: float or None. Upper bound of α; None uses the clip value of a
            ``WeightClip`` kernel constraint (else α is only bounded below by ``ALPHA_MIN``).
        reduction: ``"mean"`` (default) or ``"sum"`` of R over the layer's weights. The paper
            sums (Σ_i R), so its λ must shrink as layers grow; with the mean, λ is a penalty
            per weight and one λ suits small and large models. Layers saved without this
            option load with ``"sum"``, the reduction they were trained with."""


@tf.keras.utils.register_keras_serializable(package="melius_larq")
class BNNPlusConv2D(_BNNPlusMixin, lq.layers.QuantConv2D):
    """A ``larq.layers.QuantConv2D`` with BNN+'s trainable scales α and scale regularizer.

    The layer owns α (trainable, initialised to mean |W| of the initial latent kernel and
    clipped to ``[ALPHA_MIN, alpha_max]``) and λ, and adds ``λ · mean R(w; α)`` on the latent
    weights to ``layer.losses``. With ``alpha_in_forward`` it computes
    ``conv(q(x), α · sign(w)) (+ bias)`` as ``conv(q(x), sign(w)) · α``, a per-channel multiply
    that LCE folds into ``LceBconv2d``'s output multiplier.

    Quantizer defaults (each overridable by its keyword): ``input_quantizer=SignSwish()``,
    ``kernel_quantizer=SteSign(clip_value=1.0)``, ``kernel_constraint=WeightClip(1.0)``.
    Whether the paper uses SignSwish or the STE for the weights is not clear from its text;
    the STE is the default because it is the more likely reading. The clips are BNN's (the
    paper's baseline), since a layer on its own has no network whose estimator it could
    match. The registry builders differ on purpose: they give each BNN+ layer the clips of
    the binary layer it replaces (the MeliusNet presets ``"lce"``/``"reference"``: unclipped
    weight STE and no ``WeightClip``; ``"larq_zoo"``: 1.3; ``BinaryNetSmall``: 1.0) and
    SignSwish β = ``BNNPLUS_BETA``, so that ``binarization="bnn+"`` changes only the BNN+
    ingredients; :meth:`BNNPlusConfig.conv2d` builds a layer that way from given clips.

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
        reduction: str = "mean",
        **kwargs,
    ):
        super().__init__(filters, kernel_size, **_bnn_plus_defaults(kwargs))
        self._init_bnn_plus(regularizer, reg_lambda, alpha_sharing, alpha_in_forward, alpha_max,
                            reduction)  # fmt: skip

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
    unit (or per layer), and the forward pass is ``(q(x) · sign(W)) · α (+ bias)``. The
    quantizer defaults, and why the builders' differ, are those of :class:`BNNPlusConv2D`.

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
        reduction: str = "mean",
        **kwargs,
    ):
        super().__init__(units, **_bnn_plus_defaults(kwargs))
        self._init_bnn_plus(regularizer, reg_lambda, alpha_sharing, alpha_in_forward, alpha_max,
                            reduction)  # fmt: skip

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
