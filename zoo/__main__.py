"""``python -m zoo ...`` is the same command line as ``melius-larq``."""

import sys

from melius_larq.cli import main

sys.exit(main())
