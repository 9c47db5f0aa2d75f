"""The ``melius-larq`` command line (also ``python -m melius_larq``).

One parser and one error handler for every sub-command: the model registry (``list``,
``summary``), deployment with Larq Compute Engine (``convert``, ``report``, ``verify``,
``bench``, ``device-bench``), training (``recipes``, ``train``, ``eval``, ``demo``) and CBD
compression (``compress``). Bad input ends with a one-line ``error: ...`` and exit code 2,
an interrupt with exit code 130.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``melius-larq`` with all its sub-commands."""
    from melius_larq.cli import compress, deployment, models, training

    parser = argparse.ArgumentParser(
        prog="melius-larq",
        description="MeliusNet/BNN+/CBD binary networks for Keras/Larq, deployed with LCE.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (models, deployment, training, compress):
        module.add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns its exit code (0 ok, 1 a failed check, 2 bad input, 130 interrupt).

    A usage error (an unknown option, a value out of range) prints argparse's message and
    returns 2; ``--help`` returns 0.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits for --help and usage errors
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, ImportError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
