"""Schedules for BNN+ training: λ and β change during ``fit`` without recompiling.

λ and β are ``tf.Variable``s, so :class:`RegularizationScheduler` and :class:`BetaScheduler`
assign new values to them at each epoch (or batch) and the compiled train step sees them.

References:
    - [BNN+: Improved Binary Network Training](https://arxiv.org/abs/1812.11800),
      Darabi, Belbahri, Courbariaux and Partovi Nia, 2018.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from melius_larq._compat import tf
from melius_larq.bnnplus.layers import _BNNPlusMixin
from melius_larq.bnnplus.quantizers import SignSwish

__all__ = [
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
