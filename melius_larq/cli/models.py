"""``list`` and ``summary``: the model registry and the authors' size/OPS accounting."""

from __future__ import annotations

import json

from melius_larq.cli._args import positive_int

__all__ = ["add_subcommands"]


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


def add_subcommands(sub) -> None:
    """Adds ``list`` and ``summary`` to an argparse sub-parser collection."""
    from melius_larq.models import PRESETS, STEMS

    p = sub.add_parser("list", help="list the registered models")
    p.add_argument("filter", nargs="?", help="glob, e.g. 'Melius*'")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("summary", help="the authors' size/OPS accounting of a model")
    p.add_argument("model", help="registry name, e.g. MeliusNet22")
    p.add_argument("--stem", default="grouped", choices=list(STEMS))
    p.add_argument("--preset", default="lce", choices=list(PRESETS))
    p.add_argument("--input-size", type=positive_int, default=224, help="input height/width (224)")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(func=_cmd_summary)
