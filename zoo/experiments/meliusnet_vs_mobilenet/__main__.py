"""``python -m melius_larq.zoo.experiments.meliusnet_vs_mobilenet``."""

import sys

from melius_larq.zoo.experiments.meliusnet_vs_mobilenet.cli import main

sys.exit(main())
