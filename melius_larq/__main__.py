"""``python -m melius_larq COMMAND`` is the ``melius-larq`` command line."""

import sys

from melius_larq.cli import main

sys.exit(main())
