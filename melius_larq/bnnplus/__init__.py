r"""BNN+: the SignSwish quantizer, the scale regularizers with trainable α, BNN+ layers, schedules.

BNN+ trains a binary network with three additions to the plain straight-through estimator:

1. **SignSwish** (:func:`sign_swish`, :class:`SignSwish`): the forward pass is ``sign(x)``;
   the backward pass uses the derivative of the smooth SignSwish function ``SS_β``, with a
   fixed or trainable β.
2. **Scale regularizers** (:func:`manhattan_regularization`,
   :func:`euclidean_regularization`): ``|α − |w||`` or ``(α − |w|)²`` on the latent
   (full-precision) weights, averaged over each layer's weights and scaled by λ, which pulls
   them towards ``±α``, with trainable scales α.
3. **Scaled binary weights**: α multiplies the binary kernel in the forward pass,
   ``kernel = α · sign(w)`` (:class:`BNNPlusConv2D`, :class:`BNNPlusDense`).

λ and β are ``tf.Variable``s, so :class:`RegularizationScheduler` and :class:`BetaScheduler`
change them during ``fit`` without recompiling; :class:`BNNPlusDiagnostics` logs per epoch
the share of latent weights near ±α and the mean α. :class:`BNNPlusConfig` holds the
options the builders take with ``binarization="bnn+"``, one per ingredient, so that each can
be switched on alone.

Several details are not given clearly in the paper. Each is an option here, and its default,
with the reason it was chosen, is documented where it is defined: SignSwish or the STE for
the weights (:attr:`BNNPlusConfig.weight_estimator`), α per output channel or per layer
(``alpha_sharing``), α in the forward pass or only in the regularizer
(``alpha_in_forward``), the α initialisation (mean ``|W|``), λ and its reduction over the
weights, and β fixed, trainable or scheduled.

The modules: :mod:`~melius_larq.bnnplus.quantizers` (SignSwish),
:mod:`~melius_larq.bnnplus.regularizers`, :mod:`~melius_larq.bnnplus.layers`,
:mod:`~melius_larq.bnnplus.config` (the builders' options) and
:mod:`~melius_larq.bnnplus.callbacks` (schedules, diagnostics); every public name is importable from
``melius_larq.bnnplus``.

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

from melius_larq.bnnplus.callbacks import (
    NEAR_ALPHA_TOLERANCE,
    BetaScheduler,
    BNNPlusDiagnostics,
    RegularizationScheduler,
    bnn_plus_layers,
    linear_schedule,
    sign_swish_quantizers,
)
from melius_larq.bnnplus.config import (
    BINARIZATIONS,
    ESTIMATORS,
    BNNPlusConfig,
    resolve_binarization,
)
from melius_larq.bnnplus.layers import ALPHA_MIN, BNNPlusConv2D, BNNPlusDense
from melius_larq.bnnplus.quantizers import (
    BETA_RANGE,
    DEFAULT_BETA,
    ClipByValue,
    SignSwish,
    sign_swish,
)
from melius_larq.bnnplus.regularizers import (
    DEFAULT_REG_LAMBDA,
    REDUCTIONS,
    REGULARIZER_NAMES,
    REGULARIZERS,
    SUM_REG_LAMBDA,
    euclidean_regularization,
    manhattan_regularization,
    scale_regularization,
)

__all__ = [
    "ALPHA_MIN",
    "BETA_RANGE",
    "BINARIZATIONS",
    "DEFAULT_BETA",
    "DEFAULT_REG_LAMBDA",
    "ESTIMATORS",
    "NEAR_ALPHA_TOLERANCE",
    "REDUCTIONS",
    "REGULARIZERS",
    "REGULARIZER_NAMES",
    "SUM_REG_LAMBDA",
    "BNNPlusConfig",
    "BNNPlusConv2D",
    "BNNPlusDense",
    "BNNPlusDiagnostics",
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
