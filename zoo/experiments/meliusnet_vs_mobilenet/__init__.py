"""Binary MeliusNets against float and int8 MobileNet-v1 on Fashion-MNIST: accuracy by size,
operations and latency.

MeliusNet's title claim (Bethge et al. 2020, "MeliusNet: Can Binary Neural Networks Achieve
MobileNet-level Accuracy?") is that binary networks reach MobileNet-v1 accuracy (Howard et al.
2017, "MobileNets") at the same model size and the same number of operations. This experiment
measures that claim at small scale, on 28x28 Fashion-MNIST images and a 2-core CPU:

1. **Training.** Three MeliusNet-family binary networks (``MeliusNetTinyNarrow``,
   ``MeliusNetTiny``, ``MeliusNetTinyWide``; see :data:`SIBLINGS`) and the float MobileNet-v1 at
   three widths (0.125, 0.25, 0.5: their sizes bracket the binary networks') are trained
   under one recipe family (:mod:`.recipes`: RAdam, per-step cosine decay, batch 128, the
   same epochs and augmentation). Each network is trained at every learning rate
   of ``--lrs`` (and every seed of ``--seeds``); the learning rate with the best mean final
   validation top-1 (the last 10 % of the training images) is chosen. Test top-1 is reported
   once, for the chosen run of each network; the test accuracies of the other runs are never
   read. ``--final-seeds`` then trains further seeds at the chosen rate only, and the reported
   validation and test top-1 are their mean ± std.
2. **Deployment.** Every chosen binary network is converted to an LCE flatbuffer; every chosen
   MobileNet to a float TFLite flatbuffer and to an int8 one (TFLite full-integer post-training
   quantization, calibrated on the first training images). Each flatbuffer's test top-1 is
   measured too (for int8 it is that network's accuracy).
3. **Measurements** for every network, in one process on one machine: test top-1; size in MiB
   by the paper's accounting (binary weights 1 bit, others 32 bit; int8 rows 8 bit) and the
   flatbuffer's bytes; OPS = BOPs/64 + FLOPs (:func:`melius_larq.summary`); latency with one
   thread, the networks taking turns over ``--rounds`` rounds (each keeps its best median): LCE
   with the indirect BGEMM kernel for the binary networks, XNNPACK for both MobileNets.

Finished runs under ``--runs`` are read back instead of retrained (an unfinished one resumes),
and their flatbuffers are reused, so a re-run only measures and reports again. ``--results``
receives ``meliusnet_vs_mobilenet.json``, ``meliusnet_vs_mobilenet.md`` and the plots
``accuracy_vs_size.png``, ``accuracy_vs_ops.png`` and ``accuracy_vs_latency.png``.

Reproduce (one command; several CPU hours on 2 cores with the defaults, see the docs)::

    nice python -m melius_larq.zoo.experiments.meliusnet_vs_mobilenet --runs runs/mvm \\
        --results docs/meliusnet_vs_mobilenet

``--quick`` runs the whole pipeline on one binary network and one MobileNet width with one
epoch over at most 1,024 images, into ``runs/mvm_quick`` (to check it, not to measure anything).

References:
    - [MeliusNet: Can Binary Neural Networks Achieve MobileNet-level Accuracy?](
      https://arxiv.org/abs/2001.05936), Bethge et al. 2020.
    - [MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications](
      https://arxiv.org/abs/1704.04861), Howard et al. 2017.

The package: :mod:`.networks` (the siblings, names and accounting), :mod:`.recipes`,
:mod:`.experiment` (training, choice, deployment, measurement: :func:`run`), :mod:`.report`
(Markdown and plots) and :mod:`.cli` (the command line).
"""

from melius_larq.zoo.experiments.meliusnet_vs_mobilenet.cli import main
from melius_larq.zoo.experiments.meliusnet_vs_mobilenet.experiment import (
    CALIBRATION_IMAGES,
    DEFAULT_EPOCHS,
    DEFAULT_FINAL_SEEDS,
    DEFAULT_LRS,
    DEFAULT_SEEDS,
    LATENCY,
    QUICK,
    check_seeds,
    choose_learning_rate,
    int8_tflite,
    interpolate_log,
    run,
    train_and_choose,
)
from melius_larq.zoo.experiments.meliusnet_vs_mobilenet.networks import (
    DEFAULT_NETWORKS,
    DEFAULT_WIDTHS,
    SIBLINGS,
    check_networks,
    create_sibling,
    network_accounting,
)
from melius_larq.zoo.experiments.meliusnet_vs_mobilenet.recipes import (
    BINARY_RECIPE,
    FLOAT_RECIPE,
    RECIPES,
)
from melius_larq.zoo.experiments.meliusnet_vs_mobilenet.report import (
    PLOTS,
    RESULTS_STEM,
    markdown,
    plot,
)

__all__ = [
    "BINARY_RECIPE",
    "CALIBRATION_IMAGES",
    "DEFAULT_EPOCHS",
    "DEFAULT_FINAL_SEEDS",
    "DEFAULT_LRS",
    "DEFAULT_NETWORKS",
    "DEFAULT_SEEDS",
    "DEFAULT_WIDTHS",
    "FLOAT_RECIPE",
    "LATENCY",
    "PLOTS",
    "QUICK",
    "RECIPES",
    "RESULTS_STEM",
    "SIBLINGS",
    "check_networks",
    "check_seeds",
    "choose_learning_rate",
    "create_sibling",
    "int8_tflite",
    "interpolate_log",
    "main",
    "markdown",
    "network_accounting",
    "plot",
    "run",
    "train_and_choose",
]
