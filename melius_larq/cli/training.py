"""``recipes``, ``train``, ``eval`` and ``demo``: training recipes and the Fashion-MNIST job."""

from __future__ import annotations

import json

from melius_larq.cli._args import non_negative_int

__all__ = ["add_subcommands"]


def _cmd_recipes(args) -> int:
    from melius_larq.zoo.recipes import RECIPES

    for name, r in RECIPES.items():
        print(f"{name:32s} {r.model:18s} {r.dataset:14s} {r.epochs:4d} ep  batch {r.batch_size}")
    return 0


def _cmd_train(args) -> int:
    from melius_larq.zoo.recipes import apply_overrides, get_recipe
    from melius_larq.zoo.train import resume_recipe, train

    recipe = apply_overrides(get_recipe(args.recipe), args.set or [])
    if args.resume:
        recipe = resume_recipe(args.out, args.recipe, args.set or [])
    result = train(recipe, args.out, resume=args.resume, strategy=args.strategy,
                   data_dir=args.data_dir, verbose=args.verbose)  # fmt: skip
    print(json.dumps({k: v for k, v in result.items() if k != "model"}, indent=2))
    return 0


def _cmd_eval(args) -> int:
    from melius_larq.zoo.train import evaluate

    result = evaluate(args.model, args.dataset, data_dir=args.data_dir, split=args.split)
    print(json.dumps(result, indent=2))
    return 0


def _cmd_demo(args) -> int:
    from melius_larq.cli.demo import run_demo

    run_demo(args.out, overrides=args.set and dict(kv.split("=", 1) for kv in args.set),
             data_dir=args.data_dir, verbose=args.verbose, results=args.results)  # fmt: skip
    return 0


def add_subcommands(sub) -> None:
    """Adds the training sub-commands to an argparse sub-parser collection."""
    from melius_larq.zoo.pipeline import DATASETS, SPLITS
    from melius_larq.zoo.recipes import RECIPES
    from melius_larq.zoo.train import STRATEGIES

    p = sub.add_parser("demo", help="train a MeliusNet on Fashion-MNIST and deploy it with LCE")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--results", help="also write report.json, report.md and deploy.png here "
                   "(make demo: docs/demo, the numbers the docs quote)")  # fmt: skip
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    p.add_argument("--data-dir")
    p.add_argument("--verbose", type=non_negative_int, default=1)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("recipes", help="list the training recipes")
    p.set_defaults(func=_cmd_recipes)

    p = sub.add_parser("train", help="train a recipe (checkpoints, resume, TensorBoard)")
    p.add_argument(
        "recipe", choices=list(RECIPES), metavar="RECIPE", help="recipe name (see `recipes`)"
    )
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. epochs=3; "
                   "start from weights with init=FILE.keras|RUN_DIR|imagenet freeze_epochs=N")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--strategy", default="default", choices=list(STRATEGIES))
    p.add_argument(
        "--data-dir",
        help="dataset directory (Fashion-MNIST IDX files, TFDS data) or a folder of your own "
        "images with one sub-folder per class",
    )
    p.add_argument(
        "--verbose", type=non_negative_int, default=1, help="Keras progress bar (1) or none (0)"
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="top-1 accuracy of a saved .keras model")
    p.add_argument("model")
    p.add_argument("--dataset", default="fashion_mnist", choices=list(DATASETS))
    p.add_argument("--data-dir", help="dataset directory or a folder of images (one sub-folder "
                   "per class)")  # fmt: skip
    p.add_argument("--split", default="test", choices=list(SPLITS))
    p.set_defaults(func=_cmd_eval)
