"""Imports of the packages that ``pip install melius_larq`` leaves to extras.

The library itself needs neither plots nor dataset downloads; the functions that do import
them here, so that a missing package fails with the ``pip install`` line of its extra
(``melius_larq[plots]``, ``melius_larq[datasets]``, or ``melius_larq[all]`` for both).
"""

from __future__ import annotations

import importlib

# Top-level module -> (distribution to install, extra of melius_larq that installs it).
EXTRAS = {
    "matplotlib": ("matplotlib", "plots"),
    "tensorflow_datasets": ("tensorflow-datasets", "datasets"),
}


def import_optional(module: str, purpose: str):
    """Returns the imported ``module``, a module of one of the optional packages.

    Args:
        module: dotted module name whose top-level package is a key of ``EXTRAS``.
        purpose: what needs it, starting the error message (e.g. ``"Plotting"``).

    Raises:
        ImportError: naming the distribution and the ``pip install 'melius_larq[extra]'``
            line when the package is not importable.
    """
    distribution, extra = EXTRAS[module.split(".")[0]]
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{purpose} needs {distribution}, an optional dependency of melius_larq "
            f"({err}). Install it with: pip install 'melius_larq[{extra}]'"
        ) from err


def pyplot(purpose: str = "Plotting"):
    """``matplotlib.pyplot`` on the non-interactive Agg backend (figures go to files).

    Raises:
        ImportError: naming ``melius_larq[plots]`` when matplotlib is not installed.
    """
    matplotlib = import_optional("matplotlib", purpose)
    matplotlib.use("Agg")
    return import_optional("matplotlib.pyplot", purpose)
