"""The BNN+ options of the registry builders (``binarization="bnn+"``).

References:
    - [BNN+: Improved Binary Network Training](https://arxiv.org/abs/1812.11800),
      Darabi, Belbahri, Courbariaux and Partovi Nia, 2018.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import larq as lq

from melius_larq.bnnplus.layers import _ALPHA_SHARING, ALPHA_MIN, BNNPlusConv2D, BNNPlusDense
from melius_larq.bnnplus.quantizers import BETA_RANGE, SignSwish, _check_beta
from melius_larq.bnnplus.regularizers import (
    _canonical_regularizer,
    _check_reduction,
    _resolve_lambda,
)

__all__ = [
    "BINARIZATIONS",
    "BNNPLUS_BETA",
    "ESTIMATORS",
    "BNNPlusConfig",
    "resolve_binarization",
]

# SignSwish β of BNN+ models. On BinaryNetSmall (Fashion-MNIST, 3 epochs, validation top-1
# against BNN's clipped STE at 87.73 %) β = 2 / 5 / 10 gave 87.78 / 85.58 / 79.98 %: the
# larger β, the fewer units get a useful pseudo-gradient (docs/bnnplus.md).
BNNPLUS_BETA = 2.0

BINARIZATIONS = ("ste", "bnn+")


ESTIMATORS = ("sign_swish", "ste")


def _check_clip(value, name: str, minimum: float = 0.0) -> float | None:
    """None, or ``value`` as a float if it is finite and > ``minimum``."""
    if value is None:
        return None
    if isinstance(value, bool) or not (
        isinstance(value, numbers.Real) and minimum < value < math.inf
    ):
        raise ValueError(
            f"Expected `{name}` to be a finite float > {minimum} or None, but got {value!r}."
        )
    return float(value)


@dataclasses.dataclass(frozen=True)
class BNNPlusConfig:
    """The BNN+ options of the builders (``binarization="bnn+"``), one per ingredient.

    Every binary layer of the model becomes a :class:`BNNPlusConv2D` (or
    :class:`BNNPlusDense`); the full-precision first and last layers stay as they are (BNN+
    also keeps them in full precision). Each ingredient of BNN+ is its own option, so a
    configuration can change one thing against the plain STE network: the activation
    estimator (``activation_estimator``, ``beta``, ``train_beta``, ``beta_end``), the weight
    estimator and clip (``weight_estimator``, ``weight_clip``), α in the forward pass
    (``alpha_in_forward``) and the regularizer (``regularizer``, ``reg_lambda``,
    ``reduction``). With ``activation_estimator="ste"``, ``regularizer="none"`` and
    ``alpha_in_forward=False`` the model computes and trains exactly like the STE network.

    Where the paper leaves a detail uncertain, the option's default and the reason for it are
    given below.

    Attributes:
        regularizer: ``"manhattan"`` (l1, |α − |w||), ``"euclidean"`` (l2, (α − |w|)²) or
            ``"none"``; the paper compares the first two. Defaults to ``"manhattan"``.
        reg_lambda: λ, a finite float >= 0. Not given in the paper; None (default) takes
            ``DEFAULT_REG_LAMBDA[regularizer]``: 0.003 (Manhattan) or 0.1 (Euclidean) with
            ``reduction="mean"``. The Manhattan default is the only λ of the BNN+ experiment
            (docs/bnnplus.md) that did not cost accuracy against BNN: 0.3 / 3 / 30 cost 3.6 /
            11.2 / 15.3 points of validation top-1 on BinaryNetSmall, pinning most latent
            weights at ±α; at 0.003 the regularizer barely acts. With ``reduction="sum"`` the
            defaults are ``SUM_REG_LAMBDA``: 1e-6 or 5e-5. ``BNNPlusConfig(...).reg_lambda``
            is the resolved value. A λ > 0 with ``regularizer="none"`` is an error.
        alpha_sharing: ``"channel"`` or ``"layer"``. The paper leaves this uncertain;
            ``"channel"`` (default) is chosen because it is the more likely reading.
        alpha_in_forward: use ``α · sign(w)`` in the forward pass. The paper leaves this
            uncertain; defaults to True, the more likely reading (in the BNN+ experiment it
            was the best single change, +0.5 points with one seed, and level with the STE
            network over three: +0.08 on BinaryNetSmall, -0.01 on MeliusNetTiny).
        beta: initial β of SignSwish, a finite float > 0 within ``beta_range``. Defaults to
            ``BNNPLUS_BETA`` = 2.0, the best of 2 / 5 / 10 in the BNN+ experiment (larq's
            default and the paper's apparent choice, 5, cost 2.2 points there).
        train_beta: train β (one per quantizer). Defaults to False (the paper's ImageNet
            runs used a fixed β).
        beta_range: range that β is clipped to. Defaults to ``(1.0, 20.0)``.
        weight_estimator: pseudo-gradient of the weights' sign: ``"ste"`` (the network's
            STE) or ``"sign_swish"`` (SignSwish with the same β options). The paper leaves
            this uncertain; ``"ste"`` (default) is chosen because it is the more likely
            reading.
        weight_clip: ``WeightClip`` on the latent weights and upper bound of α. None
            (default) keeps the network's own constraint (none for the MeliusNet presets
            ``"lce"`` and ``"reference"``, 1.0 for ``BinaryNetSmall``), as in every arm of the
            BNN+ experiment; 1.0 is BNN's clip. A clip above the clip of the network's weight
            STE is an error.
        activation_estimator: pseudo-gradient of the activations' sign: ``"sign_swish"``
            (default: BNN+'s SignSwish) or ``"ste"`` (the clipped straight-through
            estimator, as in BNN).
        activation_clip: clip value of the activations' STE with
            ``activation_estimator="ste"`` (gradient 1 for |x| <= clip, else 0). None
            (default) takes the network's own: 1.3 for the MeliusNet presets, 1.0 for
            ``BinaryNetSmall``. Giving it with SignSwish activations is an error.
        beta_end: schedule β: a linear ramp of every fixed β from ``beta`` to ``beta_end``
            (applied by the :class:`BetaScheduler` of :meth:`callbacks`, at every batch).
            Not from the paper. None (default) keeps β fixed (or trained, with
            ``train_beta``, which cannot be combined with a schedule).
        beta_ramp_epochs: length of the β ramp in epochs (> 0); None (default) ramps over the
            whole run. Only with ``beta_end``.
        reduction: ``"mean"`` (default) or ``"sum"`` of R over each layer's weights. The
            paper sums, which makes λ's effect grow with the network (the former summed
            default was 3.2 % of MeliusNet22's initial cross-entropy but 0.39 % of
            MeliusNetTiny's); the mean makes λ a penalty per weight.

    Raises:
        ValueError: for an unknown estimator, regularizer or reduction, a λ that is
            negative or not finite, a β <= 0 or outside ``beta_range``, or options that
            conflict with each other (the message names the value).
    """

    regularizer: str = "manhattan"
    reg_lambda: float | None = None
    alpha_sharing: str = "channel"
    alpha_in_forward: bool = True
    beta: float = BNNPLUS_BETA
    train_beta: bool = False
    beta_range: tuple[float, float] = BETA_RANGE
    weight_estimator: str = "ste"
    weight_clip: float | None = None
    activation_estimator: str = "sign_swish"
    activation_clip: float | None = None
    beta_end: float | None = None
    beta_ramp_epochs: float | None = None
    reduction: str = "mean"

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        for name in ("activation_estimator", "weight_estimator"):
            if getattr(self, name) not in ESTIMATORS:
                raise ValueError(
                    f"Expected `{name}` to be 'sign_swish' or 'ste', but got "
                    f"{getattr(self, name)!r}."
                )
        put("regularizer", _canonical_regularizer(self.regularizer))
        put("reduction", _check_reduction(self.reduction))
        put("reg_lambda", _resolve_lambda(self.reg_lambda, self.regularizer, self.reduction))
        put("beta", _check_beta(self.beta))
        put("beta_range", tuple(float(v) for v in self.beta_range))
        if self.alpha_sharing not in _ALPHA_SHARING:
            raise ValueError(
                f"Expected `alpha_sharing` to be one of {_ALPHA_SHARING}, but got "
                f"{self.alpha_sharing!r}."
            )
        put("weight_clip", _check_clip(self.weight_clip, "weight_clip", ALPHA_MIN))
        put("activation_clip", _check_clip(self.activation_clip, "activation_clip"))
        if self.activation_clip is not None and self.activation_estimator != "ste":
            raise ValueError(
                f"activation_clip={self.activation_clip!r} conflicts with "
                f"activation_estimator={self.activation_estimator!r}: the clip belongs to the STE."
            )
        if self.beta_end is not None:
            put("beta_end", _check_beta(self.beta_end, "beta_end"))
        put("beta_ramp_epochs", _check_clip(self.beta_ramp_epochs, "beta_ramp_epochs"))
        self._check_beta_options()
        self.sign_swish()  # validates beta and beta_range
        if self.beta_end is not None:
            SignSwish(self.beta_end, beta_range=self.beta_range)  # beta_end within beta_range

    def _check_beta_options(self):
        if not self.uses_sign_swish:
            given = {"beta": self.beta != BNNPLUS_BETA, "train_beta": self.train_beta,
                     "beta_end": self.beta_end is not None}  # fmt: skip
            for name, is_given in given.items():
                if is_given:
                    raise ValueError(
                        f"{name}={getattr(self, name)!r} conflicts with activation_estimator="
                        f"'ste' and weight_estimator='ste': β belongs to SignSwish."
                    )
        if self.beta_end is not None and self.train_beta:
            raise ValueError(
                f"beta_end={self.beta_end!r} conflicts with train_beta=True: a trained β is "
                "not scheduled."
            )
        if self.beta_ramp_epochs is not None and self.beta_end is None:
            raise ValueError(
                f"beta_ramp_epochs={self.beta_ramp_epochs!r} needs beta_end (the β to ramp to)."
            )

    @property
    def uses_sign_swish(self) -> bool:
        """Whether the activations or the weights use SignSwish (so β matters)."""
        return "sign_swish" in (self.activation_estimator, self.weight_estimator)

    def sign_swish(self) -> SignSwish:
        """A new :class:`SignSwish` with this configuration's β options."""
        return SignSwish(self.beta, train_beta=self.train_beta, beta_range=self.beta_range)

    def check_network(self, network: str, *, kernel_clip: float | None) -> None:
        """Raises ValueError when ``weight_clip`` conflicts with the network's weight STE.

        Args:
            network: how the message names the network or preset, e.g. ``"preset='larq_zoo'"``.
            kernel_clip: ``clip_value`` of the network's weight STE (None: identity STE).
        """
        if self.weight_estimator != "ste" or kernel_clip is None or self.weight_clip is None:
            return
        if self.weight_clip > kernel_clip:
            raise ValueError(
                f"weight_clip={self.weight_clip!r} conflicts with {network}: its weight STE "
                f"passes no gradient beyond |w| = {kernel_clip}, so latent weights between the "
                f"two would stop learning; use weight_clip <= {kernel_clip} or None."
            )

    def callbacks(self, epochs: int) -> list:
        """The training callbacks these options need: a :class:`BetaScheduler` for
        ``beta_end`` (a per-batch linear ramp over ``beta_ramp_epochs``, else over
        ``epochs``), otherwise none."""
        if self.beta_end is None:
            return []
        from melius_larq.bnnplus.callbacks import BetaScheduler, linear_schedule

        ramp = self.beta_ramp_epochs or max(1, epochs)
        return [BetaScheduler(linear_schedule(self.beta, self.beta_end, ramp), per_batch=True)]

    def _quantizers(self, activation_clip, kernel_clip, weight_clip) -> dict:
        """The quantizer and constraint keywords of a BNN+ layer on a given network."""
        if self.activation_estimator == "ste":
            clip = self.activation_clip if self.activation_clip is not None else activation_clip
            input_quantizer = lq.quantizers.SteSign(clip_value=clip)
        else:
            input_quantizer = self.sign_swish()
        if self.weight_estimator == "ste":
            kernel_quantizer = lq.quantizers.SteSign(clip_value=kernel_clip)
        else:
            kernel_quantizer = self.sign_swish()
        clip = self.weight_clip if self.weight_clip is not None else weight_clip
        return {
            "regularizer": self.regularizer,
            "reg_lambda": self.reg_lambda,
            "reduction": self.reduction,
            "alpha_sharing": self.alpha_sharing,
            "alpha_in_forward": self.alpha_in_forward,
            "input_quantizer": input_quantizer,
            "kernel_quantizer": kernel_quantizer,
            "kernel_constraint": lq.constraints.WeightClip(clip) if clip is not None else None,
        }

    def conv2d(self, filters, kernel_size, *, activation_clip=1.0, kernel_clip=1.0,
               weight_clip=None, **kwargs):  # fmt: skip
        """A :class:`BNNPlusConv2D` with these options on a network with the given STE.

        Args:
            filters: output channels.
            kernel_size: kernel size.
            activation_clip: the network's activation STE clip, used with
                ``activation_estimator="ste"`` when ``self.activation_clip`` is None.
            kernel_clip: ``clip_value`` of the weights' ``SteSign`` (None: identity STE),
                used with ``weight_estimator="ste"``.
            weight_clip: ``WeightClip`` value used when ``self.weight_clip`` is None.
            **kwargs: forwarded to :class:`BNNPlusConv2D`.

        Returns:
            The new, unbuilt layer.
        """
        options = self._quantizers(activation_clip, kernel_clip, weight_clip)
        return BNNPlusConv2D(filters, kernel_size, **options, **kwargs)

    def dense(self, units, *, activation_clip=1.0, kernel_clip=1.0, weight_clip=None, **kwargs):
        """A :class:`BNNPlusDense` with these options; the arguments are those of
        :meth:`conv2d`, with ``units`` output units."""
        options = self._quantizers(activation_clip, kernel_clip, weight_clip)
        return BNNPlusDense(units, **options, **kwargs)


def resolve_binarization(
    binarization: str, bnn_plus: BNNPlusConfig | dict | None
) -> BNNPlusConfig | None:
    """Checks the builders' ``binarization``/``bnn_plus`` pair.

    Args:
        binarization: ``"ste"`` or ``"bnn+"``.
        bnn_plus: a :class:`BNNPlusConfig`, a dict of its fields, or None (the defaults).

    Returns:
        The BNN+ configuration, or None for ``binarization="ste"``.

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
