"""The ``compress`` command: CBD-compress a ``.keras`` model from the command line.

``add_compress_parser(subparsers)`` adds the sub-command to any argparse CLI and
``run_compress(args)`` runs it; ``python -m melius_larq.cbd compress ...`` uses both.

References:
    - [Composite Binary Decomposition Networks](https://arxiv.org/abs/1811.06668),
      Qiaoben et al., AAAI 2019.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["add_compress_parser", "main", "run_compress"]


def add_compress_parser(subparsers) -> argparse.ArgumentParser:
    """Adds the ``compress`` sub-command to an ``argparse`` sub-parser collection.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        The new sub-parser; its ``func`` default is :func:`run_compress`.
    """
    parser = subparsers.add_parser(
        "compress",
        help="CBD-compress the Conv2D/Dense kernels of a .keras model",
        description=(
            "Composite binary decomposition (Qiaoben et al. 2019): J magnitude bit-planes per "
            "weight, the sparse high planes stored as exact GF(2) factors. Prints the report."
        ),
    )
    parser.add_argument("model", help="input .keras model")
    parser.add_argument("-j", "--bits", type=int, required=True, help="J, magnitude planes (1..8)")
    parser.add_argument(
        "--bottleneck",
        type=float,
        required=True,
        help="rank budget as a fraction of min(h, w), (0, 1]",
    )
    parser.add_argument(
        "-o", "--output", required=True, help="output .keras model (reconstructed weights)"
    )
    parser.add_argument(
        "--store", help="also write the packed planes and factors to this .cbd file"
    )
    parser.add_argument("--tflite", help="also write a TFLite model with int8 CBD kernels (J <= 7)")
    parser.add_argument("--json", help="also write the report as JSON")
    parser.add_argument("--layers", nargs="+", help="glob patterns of the layers to compress")
    parser.add_argument("--exclude", nargs="+", default=[], help="glob patterns of layers to skip")
    parser.add_argument("--fallback", choices=("layer", "plane"), default="layer",
                        help="dense fallback per layer (paper) or per plane")  # fmt: skip
    parser.add_argument("--check-two-conv", action="store_true",
                        help="run the integer-exactness check of every decomposed plane")  # fmt: skip
    parser.set_defaults(func=run_compress)
    return parser


def _save_model_atomic(model, path: Path) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise OSError(f"Cannot write {str(path)!r}: directory {str(directory)!r} does not exist.")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".keras")
    os.close(fd)
    try:
        model.save(tmp, overwrite=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def run_compress(args: argparse.Namespace) -> int:
    """Runs ``compress``: load, compress, print the report and write the requested files.

    Returns:
        0 on success, 2 for bad input (the message goes to stderr).
    """
    from melius_larq._compat import tf
    from melius_larq.cbd.compress import compress_model
    from melius_larq.cbd.storage import save_cbd, write_atomic

    try:
        source = Path(args.model)
        if not source.is_file():
            raise ValueError(f"Model file {str(source)!r} does not exist.")
        output = Path(args.output)
        if output.suffix != ".keras":
            raise ValueError(f"Expected the output path to end in .keras, but got {str(output)!r}.")
        model = tf.keras.models.load_model(source, compile=False)
        compressed, report = compress_model(
            model,
            bits=args.bits,
            bottleneck=args.bottleneck,
            layers=args.layers,
            exclude=args.exclude,
            fallback=args.fallback,
            check_two_conv=args.check_two_conv,
        )
        print(report)
        _save_model_atomic(compressed, output)
        print(f"wrote {output}")
        if args.store:
            save_cbd(args.store, report)
            print(f"wrote {args.store} ({Path(args.store).stat().st_size:,} bytes)")
        if args.tflite:
            from melius_larq.cbd.tflite import export_tflite

            export = export_tflite(compressed, report, args.tflite)
            print(f"wrote {args.tflite} ({len(export.flatbuffer):,} bytes, int8 kernels)")
        if args.json:
            write_atomic((report.to_json() + "\n").encode(), args.json)
            print(f"wrote {args.json}")
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m melius_larq.cbd``: a CLI with the ``compress`` sub-command."""
    parser = argparse.ArgumentParser(prog="python -m melius_larq.cbd", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_compress_parser(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)
