"""The command line: ``python -m melius_larq.zoo.experiments.meliusnet_vs_mobilenet``."""

from __future__ import annotations

import argparse

from melius_larq.zoo.experiments import meliusnet_vs_mobilenet, run_and_print
from melius_larq.zoo.experiments.meliusnet_vs_mobilenet import experiment, networks
from melius_larq.zoo.experiments.meliusnet_vs_mobilenet.experiment import run
from melius_larq.zoo.experiments.meliusnet_vs_mobilenet.report import markdown


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m melius_larq.zoo.experiments.meliusnet_vs_mobilenet",
        description=meliusnet_vs_mobilenet.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument(
        "--runs", help="training runs (default runs/mvm; runs/mvm_quick with --quick)"
    )
    parser.add_argument("--results", help="results directory (default docs/meliusnet_vs_mobilenet; "
                        "runs/mvm_quick/results with --quick)")  # fmt: skip
    parser.add_argument("--networks", nargs="+", help="binary networks (default: "
                        f"{' '.join(networks.DEFAULT_NETWORKS)})")  # fmt: skip
    parser.add_argument("--widths", type=float, nargs="+", help="MobileNet-v1 widths (default: "
                        f"{' '.join(map(str, networks.DEFAULT_WIDTHS))})")  # fmt: skip
    parser.add_argument("--lrs", type=float, nargs="+", help="learning-rate grid (default: "
                        f"{' '.join(map(str, experiment.DEFAULT_LRS))})")  # fmt: skip
    parser.add_argument(
        "--epochs", type=int, help=f"epochs of every run (default {experiment.DEFAULT_EPOCHS})"
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds of the learning-rate "
                        "choice (default 0)")  # fmt: skip
    final_seeds = " ".join(map(str, experiment.DEFAULT_FINAL_SEEDS))
    parser.add_argument("--final-seeds", type=int, nargs="*", help="further seeds trained at "
                        f"each network's chosen learning rate only (default {final_seeds}; none "
                        "to skip)")  # fmt: skip
    parser.add_argument("--train-limit", type=int, help="train on the first N images only")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="recipe overrides of every run")  # fmt: skip
    parser.add_argument("--eval-images", type=int, help="test images per flatbuffer (default all)")
    parser.add_argument(
        "--rounds", type=int, help=f"latency rounds (default {experiment.LATENCY['rounds']})"
    )
    parser.add_argument("--quick", action="store_true", help="check the pipeline in a minute: "
                        "one network of each family, one epoch, 1,024 images")  # fmt: skip
    parser.add_argument("--data-dir")
    parser.add_argument("--verbose", type=int, default=2)
    return parser


def _options(args) -> tuple[str, str, dict]:
    """The runs and results directories and the options of :func:`run` that ``args`` ask for."""
    options = {
        "networks": networks.DEFAULT_NETWORKS, "widths": networks.DEFAULT_WIDTHS,
        "lrs": experiment.DEFAULT_LRS, "epochs": experiment.DEFAULT_EPOCHS,
        "seeds": experiment.DEFAULT_SEEDS, "final_seeds": experiment.DEFAULT_FINAL_SEEDS,
        "train_limit": None, "calibration_images": experiment.CALIBRATION_IMAGES,
        "eval_images": None, "latency": dict(experiment.LATENCY),
    }  # fmt: skip
    runs, results = "runs/mvm", "docs/meliusnet_vs_mobilenet"
    if args.quick:  # its numbers measure nothing: kept out of the real runs and the docs
        options.update(experiment.QUICK)
        runs, results = "runs/mvm_quick", "runs/mvm_quick/results"
    given = ("networks", "widths", "lrs", "epochs", "seeds", "final_seeds", "train_limit",
             "eval_images")  # fmt: skip
    for key in given:
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.rounds is not None:
        options["latency"] = {**options["latency"], "rounds": args.rounds}
    return args.runs or runs, args.results or results, options


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    runs, results, options = _options(args)
    return run_and_print(
        lambda: run(
            runs,
            results,
            overrides=args.set,
            data_dir=args.data_dir,
            verbose=args.verbose,
            **options,
        ),
        markdown,
    )
