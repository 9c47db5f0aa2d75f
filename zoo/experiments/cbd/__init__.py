"""CBD against plain quantization on Fashion-MNIST: accuracy against bits/weight.

Trains two float networks on Fashion-MNIST, or reuses them from ``--runs``:

* ``vgg``: a small VGG-style CNN (six 3x3 convolutions, two dense layers, 81k kernel weights),
  Adam with a per-step cosine decay, no augmentation;
* ``resnet18``: the CIFAR-style ResNet-18 of :mod:`melius_larq.float_models` (basic blocks
  2-2-2-2, 11.2M parameters at width 1), trained with the ``resnet18_fashion_mnist`` recipe
  (Adam, cosine decay, flip + crop) through :func:`melius_larq.zoo.train.train`, whose run
  directory keeps checkpoints and resumes an interrupted run.

Both are then compressed without retraining, by CBD for every J in ``--cbd-bits`` and
bottleneck in ``--bottlenecks``, and by plain per-output-channel symmetric rounding for every b
in ``--plain-bits`` (``compress_model(..., method="plain")``). b-bit plain rounding has the
levels and the dense storage cost of CBD with ``J = b - 1``; CBD goes below ``J + 1`` bits only
where its GF(2) factoring saves bits. CBD has one scale per layer (``m = max|W|``), plain
rounding one per output channel. Two more sweeps cross the two things CBD changes: plain
rounding with one scale per layer (``--plain-layer-bits``, CBD's granularity) and CBD with one
scale per output channel (``--cbd-channel-bits``, :func:`compress_cbd_per_channel`, the
baseline's granularity). At either granularity, CBD's gap to plain rounding is what CBD's own
grid adds (levels placed by the scale ``a``, the weights above ``a`` in sparse factored
planes); between the granularities, the gap is what per-channel scales add. The x axis counts
every Conv2D/Dense kernel weight: the stored codes, each layer's float32 constants (CBD: ``m``
and ``a``; CBD per-channel: one scale per output channel and ``a``; plain: one scale per
output channel or per layer) and the kernels kept in float32 (``--exclude``) at 32 bits.

Every choice is made on the validation split (the last 10 % of the training images): each
compressed model is evaluated there, and the final points of a method are its validation
Pareto front (no other point of the method has fewer bits and at least as high an accuracy).
The test set is evaluated once per final point and once for the float model. The results
directory receives

* ``results.json``: per network the float accuracies, every sweep point (bits/weight,
  validation accuracy, per-layer scales, ranks and factoring savings), the final points with
  their test accuracy, and CBD against the best plain point at the same or fewer bits;
* ``results.md``: the same as Markdown tables, including where CBD's factoring engages
  (``a_s > 0``, factored planes of rank above 0) per layer of every final CBD point;
* ``accuracy_vs_bits.png``: validation accuracy of every point and test accuracy of the
  final points against bits/weight, both methods, one row per network.

Usage::

    nice -n 10 python -m melius_larq.zoo.experiments.cbd
    nice -n 10 python -m melius_larq.zoo.experiments.cbd --networks vgg --vgg-epochs 4
    nice -n 10 python -m melius_larq.zoo.experiments.cbd --smoke --results runs/cbd_smoke

References:
    - [Composite Binary Decomposition Networks](https://arxiv.org/abs/1811.06668),
      Qiaoben et al., AAAI 2019.

The package: :mod:`.training` (the float networks), :mod:`.compression` (the methods, bit
counts and Pareto fronts), :mod:`.experiment` (:func:`run`), :mod:`.report` (Markdown and the
plot) and :mod:`.cli` (the command line).
"""

from melius_larq.zoo.experiments.cbd.cli import main
from melius_larq.zoo.experiments.cbd.compression import (
    METHODS,
    compress_cbd_per_channel,
    pareto_front,
)
from melius_larq.zoo.experiments.cbd.experiment import BOTTLENECKS, CBD_BITS, PLAIN_BITS, run
from melius_larq.zoo.experiments.cbd.report import markdown
from melius_larq.zoo.experiments.cbd.training import NETWORKS, Budget, build_cnn, train_float

__all__ = [
    "BOTTLENECKS",
    "CBD_BITS",
    "METHODS",
    "NETWORKS",
    "PLAIN_BITS",
    "Budget",
    "build_cnn",
    "compress_cbd_per_channel",
    "main",
    "markdown",
    "pareto_front",
    "run",
    "train_float",
]
