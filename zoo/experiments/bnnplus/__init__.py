"""Does BNN+ beat BNN where the paper says it does, and what does each ingredient do?

Three steps on Fashion-MNIST. Every choice is made on the validation split (the last 10 % of
the training images); each run's test accuracy is measured once, at its end, and is never
used to choose.

1. **Attribution** on the BNN network (``BinaryNetSmall``, recipe ``binarynet_fashion_mnist``):
   the BNN baseline (clipped STE at 1 on activations and weights, ``WeightClip(1)``, no α)
   and one change at a time: SignSwish activations at each β of ``--betas``; the Manhattan
   regularizer (with a trainable α as its target, α not in the forward pass) at each λ of
   ``--lambdas``; α in the forward pass; and the full BNN+ (SignSwish β = 5, Manhattan with
   the default λ, α in the forward pass). One seed, a short budget. The changed
   configuration with the best final validation accuracy is the **pick**; it is written to
   ``RUNS/pick.json`` before step 2 starts.
2. **The claim**: BNN against the pick on the same network, with new seeds and a longer
   budget: mean ± sample std of validation and test top-1, and Welch's t-test on test top-1.
3. **MeliusNet**: the same two arms on ``MeliusNetTiny`` (recipe
   ``meliusnettiny_fashion_mnist``): its own STE baseline (clip 1.3) against the pick's
   options, with the same seeds.

Every BNN+ arm is the STE network with ``binarization="bnn+"`` and only the named options
switched on; options it does not name take the network's own values (activation and weight
clips), so an arm differs from its baseline in exactly what its name says.

Finished runs under ``--runs`` are read back instead of retrained (an unfinished one resumes),
so re-running the command redoes only the analysis. Results go to ``--results``:
``bnnplus_experiment.json``, ``bnnplus_experiment.md``, ``step1_pick.json``,
``accuracy_by_configuration.png`` and ``alpha_over_epochs.png`` (mean α and the share of
latent weights within ±25 % of α, per epoch, from :class:`melius_larq.BNNPlusDiagnostics`).

Usage (about 1.5-2 hours on 2 CPU cores with the default budgets)::

    nice python -m melius_larq.zoo.experiments.bnnplus --runs runs/bnnplus \\
        --results docs/bnnplus_results

``--quick`` runs the whole pipeline on a tiny budget (to check it, not to measure anything).

References:
    - [BNN+: Improved Binary Network Training](https://arxiv.org/abs/1812.11800),
      Darabi, Belbahri, Courbariaux and Partovi Nia, 2018.
    - [Binarized Neural Networks](https://arxiv.org/abs/1602.02830), Courbariaux et al.

The package: :mod:`.recipes` (recipes, arms, budgets, seeds and reading rules),
:mod:`.experiment` (the steps: :func:`run`), :mod:`.report` (Markdown and plots) and
:mod:`.cli` (the command line).
"""

from melius_larq.zoo.experiments.bnnplus.cli import main
from melius_larq.zoo.experiments.bnnplus.experiment import run
from melius_larq.zoo.experiments.bnnplus.recipes import (
    BNN_RECIPE,
    DEFAULT_BETAS,
    DEFAULT_LAMBDAS,
    FULL_BNNPLUS_BETA,
    FULL_BNNPLUS_LAMBDA,
    MELIUSNET_RECIPE,
    attribution_arms,
)
from melius_larq.zoo.experiments.bnnplus.report import RESULTS_STEM, markdown

__all__ = [
    "BNN_RECIPE",
    "DEFAULT_BETAS",
    "DEFAULT_LAMBDAS",
    "FULL_BNNPLUS_BETA",
    "FULL_BNNPLUS_LAMBDA",
    "MELIUSNET_RECIPE",
    "RESULTS_STEM",
    "attribution_arms",
    "main",
    "markdown",
    "run",
]
