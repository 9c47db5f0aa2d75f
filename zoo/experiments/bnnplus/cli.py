"""The command line: ``python -m melius_larq.zoo.experiments.bnnplus``."""

from __future__ import annotations

import argparse

from melius_larq.zoo.experiments import bnnplus, run_and_print
from melius_larq.zoo.experiments.bnnplus import recipes
from melius_larq.zoo.experiments.bnnplus.experiment import run
from melius_larq.zoo.experiments.bnnplus.report import markdown


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m melius_larq.zoo.experiments.bnnplus", description=bnnplus.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument(
        "--runs",
        help="directory of the training runs (default runs/bnnplus; "
        "runs/bnnplus_quick with --quick)",
    )
    parser.add_argument(
        "--results",
        help="results directory (default docs/bnnplus_results; "
        "runs/bnnplus_quick/results with --quick)",
    )
    parser.add_argument("--until", type=int, default=3, choices=(1, 2, 3),
                        help="run steps 1 to N (default 3)")  # fmt: skip
    for step, epochs in recipes.DEFAULT_EPOCHS.items():
        parser.add_argument(f"--step{step}-epochs", type=int, default=epochs,
                            help=f"epochs of step {step} (default {epochs})")  # fmt: skip
    parser.add_argument("--step1-seed", type=int, default=recipes.DEFAULT_STEP1_SEED)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(recipes.DEFAULT_SEEDS),
                        help="seeds of steps 2 and 3 (default 1 2 3)")  # fmt: skip
    parser.add_argument("--betas", type=float, nargs="+", default=list(recipes.DEFAULT_BETAS))
    parser.add_argument("--lambdas", type=float, nargs="+", default=list(recipes.DEFAULT_LAMBDAS))
    parser.add_argument("--train-limit", type=int, help="train on the first N images only")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="recipe overrides for every run")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="1 epoch per step, seeds 1 2, 1,024 images, one β and one λ")  # fmt: skip
    parser.add_argument("--data-dir")
    parser.add_argument("--verbose", type=int, default=2)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = {
        "epochs": {s: getattr(args, f"step{s}_epochs") for s in (1, 2, 3)},
        "seeds": args.seeds, "betas": args.betas, "lambdas": args.lambdas,
        "train_limit": args.train_limit, "overrides": args.set,
    }  # fmt: skip
    runs, results = "runs/bnnplus", "docs/bnnplus_results"
    if args.quick:  # its numbers measure nothing: kept out of the real runs and the docs
        options.update(recipes.QUICK)
        runs, results = "runs/bnnplus_quick", "runs/bnnplus_quick/results"
    return run_and_print(
        lambda: run(
            args.runs or runs,
            args.results or results,
            until=args.until,
            step1_seed=args.step1_seed,
            data_dir=args.data_dir,
            verbose=args.verbose,
            **options,
        ),
        markdown,
    )
