"""The ``melius-larq`` command line: models, deployment (LCE), training and compression.

Run ``melius-larq --help`` (or ``python -m melius_larq.cli --help``) for the sub-commands.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["build_parser", "main"]


def _cmd_list(args) -> int:
    import melius_larq

    for name in melius_larq.list_models(args.filter or ""):
        print(name)
    return 0


def _cmd_summary(args) -> int:
    import melius_larq

    size = args.input_size
    model = melius_larq.create_model(
        args.model, stem=args.stem, input_shape=(size, size, 3), preset=args.preset
    )
    counts = melius_larq.summary(model, print_fn=None if args.json else print)
    if args.json:
        print(json.dumps(counts, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="melius-larq",
        description="MeliusNet/BNN+/CBD binary networks for Keras/Larq, deployed with LCE.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list the registered models")
    p.add_argument("filter", nargs="?", help="glob, e.g. 'Melius*'")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("summary", help="the authors' size/OPS accounting of a model")
    p.add_argument("model", help="registry name, e.g. MeliusNet22")
    p.add_argument("--stem", default="grouped", choices=["grouped", "imagenet", "thumbnail"])
    p.add_argument("--preset", default="lce", choices=["lce", "reference", "larq_zoo"])
    p.add_argument("--input-size", type=int, default=224, help="input height/width (224)")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(func=_cmd_summary)

    from melius_larq.cbd import cli as cbd_cli
    from melius_larq.deploy import cli as deploy_cli
    from melius_larq.zoo import cli as zoo_cli

    deploy_cli.add_subcommands(sub)
    zoo_cli.add_subcommands(sub)
    cbd_cli.add_compress_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, ImportError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
