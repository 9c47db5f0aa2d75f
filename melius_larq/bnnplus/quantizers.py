r"""The SignSwish quantizer of BNN+: ``sign`` forward, the derivative of SS_β backward.

References:
    - [BNN+: Improved Binary Network Training](https://arxiv.org/abs/1812.11800),
      Darabi, Belbahri, Courbariaux and Partovi Nia, 2018.
"""

from __future__ import annotations

import math
import numbers

import larq as lq

from melius_larq._compat import tf

__all__ = ["BETA_RANGE", "DEFAULT_BETA", "ClipByValue", "SignSwish", "sign_swish"]

# larq's SwishSign, bitorch and QuantizedNetworks.jl all default to β = 5.
DEFAULT_BETA = 5.0
# Nothing in the paper stops a trainable β from drifting, and the paper gives no bounds for
# it; [1, 20] keeps the peak pseudo-gradient (= β) between the STE's 1 and twice the largest
# β the paper uses (10).
BETA_RANGE = (1.0, 20.0)


def _check_beta(beta, name: str = "beta") -> float:
    """``beta`` as a float, if it is a finite number > 0."""
    if isinstance(beta, bool) or not (isinstance(beta, numbers.Real) and 0 < beta < math.inf):
        raise ValueError(f"Expected `{name}` to be a finite float > 0, but got {beta!r}.")
    return float(beta)


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

    * ``train_beta=False``: non-trainable; :class:`~melius_larq.bnnplus.BetaScheduler` may
      change it during ``fit``.
    * ``train_beta=True``: trained with the pseudo-gradient ∂SS_β/∂β and clipped to
      ``beta_range`` after each optimizer step. (larq's ``SwishSign`` cannot train β: its
      forward pass does not depend on β, so autodiff gives β no gradient.)

    Use it as ``input_quantizer`` or ``kernel_quantizer`` of a larq layer. Unlike larq's
    quantizers it takes no ``metrics`` argument.

    Args:
        beta: float > 0. Initial β; larger values approximate the derivative of sign more
            closely. Defaults to 5.0: larq's default, and one of the two values (5 and 10)
            that the paper appears to use; the text leaves this uncertain.
        train_beta: bool. Whether β is trainable. Defaults to False, since the paper's
            ImageNet runs used a fixed β (per larq PR #172).
        beta_range: ``(min, max)`` that β is clipped to after each update of a trainable β and
            that :class:`~melius_larq.bnnplus.BetaScheduler` values must respect. Not given in
            the paper; defaults to ``(1.0, 20.0)`` because it keeps the peak pseudo-gradient
            between the STE's 1 and twice the paper's largest β.
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
        _check_beta(beta)
        low, high = (float(v) for v in beta_range)
        if not 0 < low <= high < math.inf:
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
