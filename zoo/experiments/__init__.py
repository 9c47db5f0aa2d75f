"""Experiments: each trains (or reads back) its runs, measures them and writes a results
directory of JSON, Markdown and plots. They may use everything in the package (``zoo`` and
``deploy``, which never import each other); nothing in the package imports them.

Each runs from the command line as ``python -m melius_larq.zoo.experiments.<name>``:

- ``meliusnet_vs_mobilenet``: binary MeliusNets against float and int8 MobileNet-v1 by size,
  operations and latency.
- ``bnnplus``: BNN+ against BNN, one ingredient at a time.
- ``cbd``: CBD against plain rounding on trained networks, without retraining.
- ``cbd_compression_time``: how long CBD takes to compress an ImageNet ResNet-18.
- ``int8_ablation``: which rule of the int8 rewrite buys how much accuracy.
- ``fine_tuning``: a network fine-tuned from trained weights against one trained from scratch.
"""

import sys
from collections.abc import Callable


def run_and_print(run: Callable[[], dict], markdown: Callable[[dict], str]) -> int:
    """An experiment's command line around ``run()``: prints its Markdown tables and
    returns 0, or for bad input (a ``ValueError``) prints one ``error:`` line and returns 2."""
    try:
        result = run()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown(result))
    return 0
