r"""The BNN+ scale regularizers, which pull latent weights towards ``±α``.

References:
    - [BNN+: Improved Binary Network Training](https://arxiv.org/abs/1812.11800),
      Darabi, Belbahri, Courbariaux and Partovi Nia, 2018.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

from melius_larq._compat import tf

__all__ = [
    "DEFAULT_REG_LAMBDA",
    "REDUCTIONS",
    "REGULARIZERS",
    "REGULARIZER_NAMES",
    "SUM_REG_LAMBDA",
    "euclidean_regularization",
    "manhattan_regularization",
    "scale_regularization",
]

# The reductions of the regularizer over a layer's weights. "mean" (the default of the layers
# and of BNNPlusConfig) makes λ a per-weight penalty whose size does not grow with the layer or
# the network; "sum" is the paper's Σ (and the reduction of layers saved before "mean" existed).
REDUCTIONS = ("mean", "sum")

# λ is not given in the paper. With reduction="mean" a model's regularization loss is
# λ · Σ_layers mean_i R(w_i; α): it grows with the number of binary layers and the weights'
# scale, not with their count. The Manhattan default follows the BNN+ experiment on
# Fashion-MNIST (docs/bnnplus.md): on BinaryNetSmall (3 epochs, validation top-1 against BNN's
# 87.73 %) λ = 0.3 / 3 / 30 cost 3.6 / 11.2 / 15.3 points as they pinned 71 % / 99 % / 100 % of
# the latent weights within ±25 % of α, λ = 0.03 cost 0.3 points, and λ = 0.003 (+0.55, one
# seed; the share near α stays at its initial 23 %) was the only one not below BNN. The
# Euclidean default is a hundredth of 10.0, the λ that (like Manhattan 0.3) makes the loss
# term about 5 % of the initial cross-entropy; it was not part of the experiment.
DEFAULT_REG_LAMBDA = {"none": 0.0, "manhattan": 0.003, "euclidean": 0.1}
# The defaults for reduction="sum" (λ · Σ_i R), which models saved without the reduction
# option use. Measured the same way they are 3.2 % (Manhattan) and 3.3 % (Euclidean) of
# MeliusNet22's initial cross-entropy but 0.39 % and 0.69 % of MeliusNetTiny's, because a sum
# grows with the number of weights.
SUM_REG_LAMBDA = {"none": 0.0, "manhattan": 1e-6, "euclidean": 5e-5}


def _reduce(r: tf.Tensor, reduction: str) -> tf.Tensor:
    if reduction == "sum":
        return tf.reduce_sum(r)
    if reduction == "mean":
        return tf.reduce_mean(r)
    raise ValueError(f"Expected `reduction` to be one of {REDUCTIONS}, but got {reduction!r}.")


def manhattan_regularization(w: tf.Tensor, alpha: tf.Tensor, reduction: str = "sum") -> tf.Tensor:
    r"""The BNN+ Manhattan regularizer \( \sum_i |\alpha - |w_i|| \) (without λ).

    Gradients: \( \partial R/\partial w = -\mathrm{sign}(\alpha - |w|)\,\mathrm{sign}(w) \),
    \( \partial R/\partial \alpha = \sum \mathrm{sign}(\alpha - |w|) \); trained through R alone,
    α settles at the median of |w|.

    Args:
        w: latent weights; the last axis is the output channel.
        alpha: scales broadcastable to ``w`` (shape ``()`` or ``(channels,)``).
        reduction: ``"sum"`` (default: the paper's Σ) or ``"mean"`` (the sum divided by the
            number of weights, which also divides every gradient by it).

    Returns:
        The scalar sum (or mean).
    """
    return _reduce(tf.abs(alpha - tf.abs(w)), reduction)


def euclidean_regularization(w: tf.Tensor, alpha: tf.Tensor, reduction: str = "sum") -> tf.Tensor:
    r"""The BNN+ Euclidean regularizer \( \sum_i (\alpha - |w_i|)^2 \) (without λ).

    Gradients: \( \partial R/\partial w = -2(\alpha - |w|)\,\mathrm{sign}(w) \),
    \( \partial R/\partial \alpha = 2 \sum (\alpha - |w|) \); trained through R alone, α
    settles at mean |w|, which is also its initial value (XNOR-Net's scale).

    Args:
        w: latent weights; the last axis is the output channel.
        alpha: scales broadcastable to ``w`` (shape ``()`` or ``(channels,)``).
        reduction: ``"sum"`` (default: the paper's Σ) or ``"mean"`` (the sum divided by the
            number of weights, which also divides every gradient by it).

    Returns:
        The scalar sum (or mean).
    """
    return _reduce(tf.square(alpha - tf.abs(w)), reduction)


REGULARIZERS: dict[str, Callable[..., tf.Tensor]] = {
    "manhattan": manhattan_regularization,
    "euclidean": euclidean_regularization,
}
# Names the layers and BNNPlusConfig accept: "none" turns the regularizer off.
REGULARIZER_NAMES = ("none", *REGULARIZERS)
_REGULARIZER_ALIASES = {"l1": "manhattan", "l2": "euclidean"}


def _canonical_regularizer(name: str) -> str:
    key = _REGULARIZER_ALIASES.get(name, name) if isinstance(name, str) else name
    if key not in REGULARIZER_NAMES:
        raise ValueError(
            "Expected `regularizer` to be 'none', 'manhattan' ('l1') or 'euclidean' ('l2'), "
            f"but got {name!r}."
        )
    return key


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"Expected `reduction` to be one of {REDUCTIONS}, but got {reduction!r}.")
    return reduction


def _resolve_lambda(reg_lambda, regularizer: str, reduction: str = "mean") -> float:
    """``reg_lambda`` checked, or the default of the (canonical) regularizer for None."""
    table = DEFAULT_REG_LAMBDA if _check_reduction(reduction) == "mean" else SUM_REG_LAMBDA
    if reg_lambda is None:
        return table[regularizer]
    if isinstance(reg_lambda, bool) or not (
        isinstance(reg_lambda, numbers.Real) and 0 <= reg_lambda < math.inf
    ):
        raise ValueError(
            f"Expected `reg_lambda` to be a finite float >= 0 or None, but got {reg_lambda!r}."
        )
    if regularizer == "none" and reg_lambda > 0:
        raise ValueError(
            f"reg_lambda={reg_lambda!r} conflicts with regularizer='none' (no regularizer to "
            "scale); choose 'manhattan' or 'euclidean', or leave reg_lambda at None."
        )
    return float(reg_lambda)


def scale_regularization(
    w: tf.Tensor, alpha: tf.Tensor, regularizer: str = "manhattan", reduction: str = "sum"
) -> tf.Tensor:
    """:func:`manhattan_regularization` or :func:`euclidean_regularization` by name.

    Args:
        w: latent weights; the last axis is the output channel.
        alpha: scales broadcastable to ``w``.
        regularizer: ``"manhattan"`` (or ``"l1"``), ``"euclidean"`` (or ``"l2"``) or
            ``"none"`` (a zero).
        reduction: ``"sum"`` (default) or ``"mean"`` over the weights.

    Returns:
        The scalar sum or mean (without λ).

    Raises:
        ValueError: for an unknown regularizer or reduction.
    """
    key = _canonical_regularizer(regularizer)
    if key == "none":
        _check_reduction(reduction)
        return tf.zeros((), w.dtype)
    return REGULARIZERS[key](w, alpha, reduction)
