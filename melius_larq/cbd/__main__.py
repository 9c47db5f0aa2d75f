"""``python -m melius_larq.cbd compress model.keras --bits J --bottleneck R -o out.keras``."""

import sys

from melius_larq.cbd.cli import main

if __name__ == "__main__":
    sys.exit(main())
