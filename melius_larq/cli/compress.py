"""``compress``: CBD-compress the Conv2D/Dense kernels of a ``.keras`` model.

``--method plain`` runs the baseline instead: per-output-channel symmetric b-bit rounding
with the same report and bit accounting.

References:
    - [Composite Binary Decomposition Networks](https://arxiv.org/abs/1811.06668),
      Qiaoben et al., AAAI 2019.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from melius_larq.cli._args import positive_float

__all__ = ["add_subcommands"]


def _bottleneck(text: str) -> float:
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def add_subcommands(subparsers) -> None:
    """Adds ``compress`` to an argparse sub-parser collection."""
    parser = subparsers.add_parser(
        "compress",
        help="CBD-compress the Conv2D/Dense kernels of a .keras model",
        description=(
            "Composite binary decomposition (Qiaoben et al. 2019): J magnitude bit-planes per "
            "weight, the sparse high planes stored as exact GF(2) factors. With --method plain, "
            "per-output-channel symmetric b-bit rounding instead (the baseline). Prints the "
            "report."
        ),
    )
    parser.add_argument("model", help="input .keras model")
    parser.add_argument("-j", "--bits", type=int, required=True, choices=range(1, 9), metavar="J",
                        help="cbd: J, magnitude planes (1..8); plain: b, bits per weight "
                        "including the sign (2..8)")  # fmt: skip
    parser.add_argument("--bottleneck", type=_bottleneck,
                        help="rank budget as a fraction of min(h, w), (0, 1]; required for "
                        "cbd")  # fmt: skip
    parser.add_argument("--method", choices=("cbd", "plain"), default="cbd",
                        help="cbd (default) or plain per-channel rounding")  # fmt: skip
    parser.add_argument("--granularity", choices=("channel", "layer"),
                        help="plain only: one scale per output channel (default) or per "
                        "layer")  # fmt: skip
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
    parser.add_argument("--fallback", choices=("layer", "plane"),
                        help="dense fallback per layer (paper, the default) or per plane")  # fmt: skip
    parser.add_argument("--check-two-conv", action="store_true",
                        help="run the integer-exactness check of every decomposed plane")  # fmt: skip
    parser.set_defaults(func=_cmd_compress)


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


def _cmd_compress(args: argparse.Namespace) -> int:
    from melius_larq._compat import tf
    from melius_larq.cbd.compress import compress_model
    from melius_larq.cbd.storage import save_cbd, write_atomic

    if args.method == "plain":
        given = [opt for opt, on in (("--store", args.store), ("--tflite", args.tflite),
                                     ("--check-two-conv", args.check_two_conv)) if on]  # fmt: skip
        if given:
            raise ValueError(f"{', '.join(given)} applies to --method cbd only, not plain.")
    elif args.bottleneck is None:
        raise ValueError("--method cbd needs --bottleneck, a number in (0, 1].")
    elif args.granularity is not None:
        raise ValueError("--granularity applies to --method plain only, not cbd.")
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
        method=args.method,
        layers=args.layers,
        exclude=args.exclude,
        fallback=args.fallback,
        check_two_conv=args.check_two_conv,
        granularity=args.granularity,
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
    return 0
