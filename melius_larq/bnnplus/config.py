"""The BNN+ options of the registry builders (``binarization="bnn+"``).

References:
    - [BNN+: Improved Binary Network Training](https://arxiv.org/abs/1812.11800),
      Darabi, Belbahri, Courbariaux and Partovi Nia, 2018.
"""

from __future__ import annotations

import dataclasses

import larq as lq

from melius_larq.bnnplus.layers import _ALPHA_SHARING, ALPHA_MIN, BNNPlusConv2D
from melius_larq.bnnplus.quantizers import BETA_RANGE, DEFAULT_BETA, SignSwish
from melius_larq.bnnplus.regularizers import _canonical_regularizer, _resolve_lambda

__all__ = ["BINARIZATIONS", "BNNPlusConfig", "resolve_binarization"]

BINARIZATIONS = ("ste", "bnn+")


@dataclasses.dataclass(frozen=True)
class BNNPlusConfig:
    """The BNN+ options of the registry builders (``binarization="bnn+"``).

    Every binary convolution of the model becomes a :class:`BNNPlusConv2D`; the full-precision
    stem, transitions and classifier stay as they are (BNN+ also keeps the first and last
    layers in full precision). The preset still sets padding, initializer and the STE clip of
    the weights.

    Attributes:
        regularizer: ``"manhattan"`` (l1) or ``"euclidean"`` (l2); the paper compares both.
            Defaults to ``"manhattan"``.
        reg_lambda: λ of the summed regularizer. Not given in the paper; None (default)
            takes ``DEFAULT_REG_LAMBDA[regularizer]``: 1e-6 (Manhattan) or 5e-5
            (Euclidean), chosen because they make λ·ΣR about 3.4 % of the initial
            cross-entropy of a 10-class MeliusNet22 (thumbnail stem, 28x28); scale λ with the
            model size. ``BNNPlusConfig(...).reg_lambda`` is the resolved value.
        alpha_sharing: ``"channel"`` or ``"layer"``. The paper leaves this uncertain;
            ``"channel"`` (default) is chosen because it is the more likely reading.
        alpha_in_forward: use ``α · sign(w)`` in the forward pass. The paper leaves this
            uncertain; defaults to True, the more likely reading, and with BatchNorm after
            the conv it barely changes the function.
        beta: initial β of the activations' SignSwish. Defaults to 5.0.
        train_beta: train β (one per binary layer). Defaults to False (the paper's
            ImageNet runs used a fixed β).
        beta_range: range that β is clipped to. Defaults to ``(1.0, 20.0)``.
        weight_estimator: pseudo-gradient of the weights' sign: ``"ste"`` (the preset's
            STE) or ``"sign_swish"`` (SignSwish with the same β options). The paper leaves
            this uncertain; ``"ste"`` (default) is chosen because it is the more likely
            reading.
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

        Returns:
            The new, unbuilt layer.
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
