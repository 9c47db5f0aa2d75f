"""Imports Larq Compute Engine lazily, with an error that says how to install it."""

from __future__ import annotations

import importlib


def import_lce():
    """Returns the ``larq_compute_engine`` module.

    Raises:
        ImportError: naming the package to install when LCE is not importable.
    """
    try:
        return importlib.import_module("larq_compute_engine")
    except ImportError as err:
        raise ImportError(
            "Larq Compute Engine is not importable "
            f"({err}). Install it with: pip install 'larq-compute-engine==0.16.0' "
            "(wheels exist for Python 3.10-3.12 on x86_64 Linux, macOS and Windows)."
        ) from err
