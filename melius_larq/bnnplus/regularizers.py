r"""The BNN+ scale regularizers, which pull latent weights towards ``±α``.

References:
    - [BNN+: Improved Binary Network Training](https://arxiv.org/abs/1812.11800),
      Darabi, Belbahri, Courbariaux and Partovi Nia, 2018.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from melius_larq._compat import tf

__all__ = [
    "DEFAULT_REG_LAMBDA",
    "REGULARIZERS",
    "euclidean_regularization",
    "manhattan_regularization",
    "scale_regularization",
]

# λ is not given in the paper. These defaults are chosen because they make λ·ΣR about 3.4 % of
# the initial cross-entropy (ln 10) of a 10-class MeliusNet22 with the thumbnail stem at 28x28
# (measured: ΣR = 7.7e4 for Manhattan and 1.6e3 for Euclidean at initialisation), a small
# term next to the loss. The regularizer is summed over the weights, so λ must shrink as
# models grow: sweep it in x10 steps.
DEFAULT_REG_LAMBDA = {"manhattan": 1e-6, "euclidean": 5e-5}


def manhattan_regularization(w: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    r"""The BNN+ Manhattan regularizer \( \sum_i |\alpha - |w_i|| \) (without λ).

    Gradients: \( \partial R/\partial w = -\mathrm{sign}(\alpha - |w|)\,\mathrm{sign}(w) \),
    \( \partial R/\partial \alpha = \sum \mathrm{sign}(\alpha - |w|) \); trained through R alone,
    α settles at the median of |w|.

    Args:
        w: latent weights; the last axis is the output channel.
        alpha: scales broadcastable to ``w`` (shape ``()`` or ``(channels,)``).

    Returns:
        The scalar sum.
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

    Returns:
        The scalar sum.
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
    """:func:`manhattan_regularization` or :func:`euclidean_regularization` by name.

    Args:
        w: latent weights; the last axis is the output channel.
        alpha: scales broadcastable to ``w``.
        regularizer: ``"manhattan"`` (or ``"l1"``) or ``"euclidean"`` (or ``"l2"``).

    Returns:
        The scalar sum (without λ).

    Raises:
        ValueError: for an unknown regularizer name.
    """
    return REGULARIZERS[_canonical_regularizer(regularizer)](w, alpha)
