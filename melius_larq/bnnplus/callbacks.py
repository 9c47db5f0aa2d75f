"""Callbacks for BNN+ training: λ and β schedules, and diagnostics of the regularizer.

λ and β are ``tf.Variable``s, so :class:`RegularizationScheduler` and :class:`BetaScheduler`
assign new values to them at each epoch (or batch) and the compiled train step sees them.
:class:`BNNPlusDiagnostics` logs, per epoch, how close the latent weights are to ``±α``.

References:
    - [BNN+: Improved Binary Network Training](https://arxiv.org/abs/1812.11800),
      Darabi, Belbahri, Courbariaux and Partovi Nia, 2018.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

from melius_larq._compat import tf
from melius_larq.bnnplus.layers import _BNNPlusMixin
from melius_larq.bnnplus.quantizers import SignSwish

__all__ = [
    "NEAR_ALPHA_TOLERANCE",
    "BNNPlusDiagnostics",
    "BetaScheduler",
    "RegularizationScheduler",
    "bnn_plus_layers",
    "linear_schedule",
    "sign_swish_quantizers",
]


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

    Returns:
        The schedule, a function of the (fractional) epoch.

    Raises:
        ValueError: for ``epochs <= 0``.
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


# |w| within ±25 % of α counts as "near α". At initialisation, with α = mean |W|, 23 % of
# Gaussian and 25 % of uniform weights already fall in this band; a regularizer that acts
# raises the share well above that.
NEAR_ALPHA_TOLERANCE = 0.25


class BNNPlusDiagnostics(tf.keras.callbacks.Callback):
    """Logs, at the end of every epoch, whether the BNN+ regularizer acts on the weights.

    Two entries go into the epoch's ``logs`` (so ``CSVLogger`` writes them to its CSV and
    ``fit`` returns them in ``history``):

    * ``near_alpha_fraction``: the fraction of all latent weights of the BNN+ layers with
      ``|w|`` within ``[(1 − tolerance)·α, (1 + tolerance)·α]`` of their own α (per output
      channel, or per layer). It rises towards 1 as the regularizer pulls the weights to ±α.
    * ``alpha_mean``: the mean of all α values (one per output channel, or one per layer)
      of every BNN+ layer.

    Place it before ``CSVLogger`` in the callback list, so the entries are there when the row
    is written. :meth:`measure` gives the same numbers at any time.

    Args:
        tolerance: the relative band around α; a float in (0, 1). Defaults to 0.25.
        model: the model whose BNN+ layers are measured; None (default) uses the model
            being fitted (pass the student when fitting a ``Distiller``).

    Raises:
        ValueError: for a tolerance outside (0, 1), or at the start of ``fit`` when the
            model has no BNN+ layer.
    """

    def __init__(self, tolerance: float = NEAR_ALPHA_TOLERANCE, *, model=None):
        super().__init__()
        if not 0.0 < tolerance < 1.0:
            raise ValueError(f"Expected `tolerance` in (0, 1), but got {tolerance!r}.")
        self.tolerance = float(tolerance)
        self._target = model

    def _layers(self):
        return bnn_plus_layers(self._target if self._target is not None else self.model)

    def on_train_begin(self, logs=None):
        if not self._layers():
            raise ValueError("BNNPlusDiagnostics: the model has no BNN+ layer to measure.")

    def measure(self) -> dict[str, float]:
        """``{"near_alpha_fraction": ..., "alpha_mean": ...}`` of the current weights."""
        near = total = 0
        alphas = []
        for layer in self._layers():
            w = np.abs(layer.kernel.latent_variable.numpy())
            alpha = layer.alpha.numpy()  # broadcasts over the last (output) axis
            low, high = (1.0 - self.tolerance) * alpha, (1.0 + self.tolerance) * alpha
            near += int(np.count_nonzero((w >= low) & (w <= high)))
            total += w.size
            alphas.append(alpha.reshape(-1))
        return {
            "near_alpha_fraction": near / total,
            "alpha_mean": float(np.mean(np.concatenate(alphas))),
        }

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.measure())
