"""melius_larq: MeliusNet, BNN+ and CBD binary networks for Keras/Larq, deployed with LCE.

Importing this package selects Keras 2 (tf_keras) for TensorFlow, which larq needs: import it
before TensorFlow, then ``import tensorflow as tf`` as usual. Sub-packages: ``melius_larq.bnnplus``
(BNN+ training), ``melius_larq.cbd`` (composite binary decomposition), ``melius_larq.deploy``
(LCE conversion, verification, benchmarks), ``melius_larq.zoo`` (datasets, recipes, training;
``melius_larq.zoo.experiments``: the experiments),
``melius_larq.float_models`` (float ResNet-18 and MobileNet-v1: teachers and baselines),
``melius_larq.binarynet`` (BinaryNetSmall, the BNN baseline of BNN+);
the command line is ``melius-larq`` (``python -m melius_larq``).
"""

from melius_larq import (
    _compat,  # noqa: F401  (must run before anything imports TensorFlow)
    float_models,
)
from melius_larq.accounting import summary
from melius_larq.binarynet import BinaryNetSmall
from melius_larq.bnnplus import (
    BetaScheduler,
    BNNPlusConfig,
    BNNPlusConv2D,
    BNNPlusDense,
    BNNPlusDiagnostics,
    RegularizationScheduler,
    SignSwish,
    linear_schedule,
)
from melius_larq.distillation import DistillationLoss, Distiller
from melius_larq.fold import fold_presign_batchnorm
from melius_larq.layers import ChannelShift, ChannelShuffle, GroupConv2D
from melius_larq.models import PRESETS, STEMS, VARIANTS, min_input_size
from melius_larq.registry import create_model, get_builder, get_model_spec, list_models
from melius_larq.weights import list_pretrained

MeliusNet22 = get_builder("MeliusNet22")
MeliusNet29 = get_builder("MeliusNet29")
MeliusNet42 = get_builder("MeliusNet42")
MeliusNet59 = get_builder("MeliusNet59")
MeliusNetA = get_builder("MeliusNetA")
MeliusNetB = get_builder("MeliusNetB")
MeliusNetC = get_builder("MeliusNetC")
MeliusNet23 = get_builder("MeliusNet23")
BinaryDenseNet28 = get_builder("BinaryDenseNet28")
BinaryDenseNet37 = get_builder("BinaryDenseNet37")
BinaryDenseNet45 = get_builder("BinaryDenseNet45")
MeliusNetTiny = get_builder("MeliusNetTiny")

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "STEMS",
    "VARIANTS",
    "BNNPlusConfig",
    "BNNPlusConv2D",
    "BNNPlusDense",
    "BNNPlusDiagnostics",
    "BetaScheduler",
    "BinaryDenseNet28",
    "BinaryDenseNet37",
    "BinaryDenseNet45",
    "BinaryNetSmall",
    "ChannelShift",
    "DistillationLoss",
    "float_models",
    "Distiller",
    "ChannelShuffle",
    "GroupConv2D",
    "MeliusNet22",
    "MeliusNet23",
    "MeliusNet29",
    "MeliusNet42",
    "MeliusNet59",
    "MeliusNetA",
    "MeliusNetB",
    "MeliusNetC",
    "MeliusNetTiny",
    "RegularizationScheduler",
    "SignSwish",
    "create_model",
    "fold_presign_batchnorm",
    "get_builder",
    "get_model_spec",
    "linear_schedule",
    "list_models",
    "list_pretrained",
    "min_input_size",
    "summary",
]
