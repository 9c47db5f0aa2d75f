"""``python -m melius_larq.zoo.experiments.cbd``."""

from melius_larq.zoo.experiments.cbd.cli import main

raise SystemExit(main())
