"""The command line: ``python -m melius_larq.zoo.experiments.cbd``."""

from __future__ import annotations

import argparse

from melius_larq.zoo.experiments import cbd
from melius_larq.zoo.experiments.cbd.experiment import BOTTLENECKS, CBD_BITS, PLAIN_BITS, run
from melius_larq.zoo.experiments.cbd.report import PLOT_NAME, RESULTS_JSON, RESULTS_MD
from melius_larq.zoo.experiments.cbd.training import LEARNING_RATES, NETWORKS, Budget

# --smoke: a few steps per network and two points per method, to check the pipeline.
SMOKE = {
    "vgg_epochs": 1, "resnet_epochs": 1, "resnet_width": 0.125, "batch_size": 32,
    "train_limit": 256, "eval_limit": 200, "cbd_bits": [4], "plain_bits": [4, 5],
    "bottlenecks": [0.1], "plain_layer_bits": [4], "cbd_channel_bits": [4],
}  # fmt: skip
DEFAULTS = {
    "vgg_epochs": 15, "resnet_epochs": 15, "resnet_width": 1.0, "batch_size": 128,
    "train_limit": None, "eval_limit": None, "cbd_bits": list(CBD_BITS),
    "plain_bits": list(PLAIN_BITS), "bottlenecks": list(BOTTLENECKS),
    "plain_layer_bits": list(PLAIN_BITS), "cbd_channel_bits": list(CBD_BITS),
}  # fmt: skip


def _numbers(values) -> str:
    return " ".join(map(str, values))


# The sweep's options: flag -> (type, nargs, metavar, help).
SWEEP_OPTIONS = {
    "--cbd-bits": (int, "*", "J", f"J of the CBD sweep (default {_numbers(CBD_BITS)})"),
    "--plain-bits": (int, "*", "B", f"b of the plain sweep (default {_numbers(PLAIN_BITS)})"),
    "--plain-layer-bits": (int, "*", "B", "b of the plain sweep with one scale per layer, CBD's "
                           f"granularity (default {_numbers(PLAIN_BITS)}; none to skip)"),
    "--cbd-channel-bits": (int, "*", "J", "J of CBD with one scale per output channel, the "
                           f"baseline's granularity (default {_numbers(CBD_BITS)}; none to skip)"),
    "--bottlenecks": (float, "+", None, f"CBD bottlenecks (default {_numbers(BOTTLENECKS)})"),
}  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=cbd.__doc__.splitlines()[0])
    parser.add_argument("--results", default="docs/cbd_results", help="results directory")
    parser.add_argument("--runs", default="runs/cbd", help="training runs (reused when present)")
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    for flag, (kind, nargs, metavar, text) in SWEEP_OPTIONS.items():
        parser.add_argument(flag, type=kind, nargs=nargs, metavar=metavar, help=text)
    parser.add_argument("--exclude", nargs="+", default=[], help="glob patterns of layers kept "
                        "in float32 by both methods (each applies to the networks that have such "
                        "a layer)")  # fmt: skip
    parser.add_argument("--vgg-epochs", type=int, help="default 15")
    parser.add_argument("--resnet-epochs", type=int, help="default 15")
    parser.add_argument("--resnet-width", type=float, help="ResNet-18 width (default 1.0)")
    parser.add_argument("--vgg-lr", type=float, help=f"default {LEARNING_RATES['vgg']}")
    parser.add_argument("--resnet-lr", type=float, help=f"default {LEARNING_RATES['resnet18']}")
    parser.add_argument("--batch-size", type=int, help="default 128")
    parser.add_argument("--train-limit", type=int, help="train on the first N images only")
    parser.add_argument("--eval-limit", type=int,
                        help="evaluate on the first N validation and test images only")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", help="directory with the Fashion-MNIST IDX files")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny budget and sweep: checks the pipeline end to end")  # fmt: skip
    parser.add_argument("--verbose", type=int, default=2, help="Keras fit verbosity")
    return parser


def _budgets(args, opt: dict) -> dict[str, Budget]:
    common = {"batch_size": opt["batch_size"], "train_limit": opt["train_limit"],
              "seed": args.seed}  # fmt: skip
    return {
        "vgg": Budget(epochs=opt["vgg_epochs"], learning_rate=args.vgg_lr, **common),
        "resnet18": Budget(epochs=opt["resnet_epochs"], learning_rate=args.resnet_lr,
                           width=opt["resnet_width"], **common),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    base = SMOKE if args.smoke else DEFAULTS
    opt = {k: v if (v := getattr(args, k)) is not None else base[k] for k in DEFAULTS}
    budgets = _budgets(args, opt)
    try:
        result = run(
            args.results, args.runs, networks=args.networks, budgets=budgets,
            cbd_bits=opt["cbd_bits"], plain_bits=opt["plain_bits"],
            plain_layer_bits=opt["plain_layer_bits"],
            cbd_channel_bits=opt["cbd_channel_bits"],
            bottlenecks=opt["bottlenecks"], exclude=args.exclude, data_dir=args.data_dir,
            eval_limit=opt["eval_limit"], verbose=args.verbose,
        )  # fmt: skip
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    for net in result["networks"]:
        for p in net["final"]:
            print(f"{net['network']}: final {p['label']}: {p['bits_per_weight_all']:.3f} "
                  f"bits/weight, test {p['test_accuracy']:.2%} ({p['test_drop_pp']:+.2f} pp)")  # fmt: skip
    print(f"wrote {RESULTS_JSON}, {RESULTS_MD} and {PLOT_NAME} in {args.results}")
    return 0
