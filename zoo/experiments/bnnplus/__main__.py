"""``python -m melius_larq.zoo.experiments.bnnplus``."""

import sys

from melius_larq.zoo.experiments.bnnplus.cli import main

sys.exit(main())
