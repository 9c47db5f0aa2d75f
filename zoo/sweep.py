"""Recipe sweeps that choose on the validation split and touch the test set once per run.

    python -m melius_larq.zoo.sweep meliusnettiny_fashion_mnist --out runs/demo_sweep \\
        --grid learning_rate=0.004,0.008,0.012 --set epochs=4 --seeds 0 --results docs/demo_sweep

trains every combination of the ``--grid`` values (on top of the ``--set`` overrides) for
every seed into ``OUT/<tag>/seed_<n>`` (a finished run is reused, so a re-run of the analysis
does not retrain), then ranks the configurations by their mean final validation accuracy and
writes ``sweep.json``, ``sweep.md`` and ``sweep.png`` (validation accuracy by epoch) into
``--results``. Test accuracy is recorded per run (every run's model is evaluated once at its
end) and shown next to the choice, never used to make it.

``--arm KEY=VALUE ...`` (repeated) replaces the grid by a list of arms, each compared with the
first one and nothing chosen: for arms that each differ from a reference in one thing, e.g.
leaving one ingredient out at a time::

    python -m melius_larq.zoo.sweep binarynet_fashion_mnist --out runs/bnnplus_default_claim \
        --set epochs=15 --seeds 4 5 6 --arm binarization=bnn+ \
        --arm binarization=bnn+ bnn_activation=ste --arm binarization=ste
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

from melius_larq._io import save_figure, write_text_atomic
from melius_larq._optional import pyplot
from melius_larq.zoo.recipes import apply_overrides, get_recipe
from melius_larq.zoo.stats import mean_std, percent, welch_t_test

__all__ = ["main", "run_sweep"]


def _parse_grid(items: list[str]) -> dict[str, list[str]]:
    grid = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[1]:
            raise ValueError(f"Expected --grid key=v1,v2,..., but got {item!r}.")
        key, values = item.split("=", 1)
        grid[key] = values.split(",")
    return grid


def _parse_arm(items: list[str]) -> dict[str, str]:
    arm = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"Expected --arm KEY=VALUE [KEY=VALUE ...], but got {item!r}.")
        arm[key] = value
    return arm


def _tag(config: dict[str, str]) -> str:
    """A configuration's name, also its run directory's (path separators become ``_``)."""
    tag = "_".join(f"{k}={v}" for k, v in config.items()) or "recipe"
    return tag.replace("/", "_").replace("\\", "_")


def run_sweep(recipe_name, out, *, grid=None, overrides=(), seeds=(0,), data_dir=None,
              verbose=2, arms=None) -> dict:  # fmt: skip
    """Trains every grid configuration for every seed and ranks them on validation.

    Args:
        recipe_name: a recipe of :mod:`melius_larq.zoo.recipes`.
        out: directory of the runs, ``OUT/<tag>/seed_<n>``.
        grid: ``{key: [values]}``; every combination is a configuration.
        overrides: ``"key=value"`` settings shared by every configuration.
        seeds: the seeds of every configuration.
        data_dir: dataset location.
        verbose: Keras ``fit`` verbosity.
        arms: instead of a grid, a list of configurations (``{key: value}``) to compare with
            the first one, the reference; nothing is chosen. For comparisons of arms that
            differ in one thing each, such as leaving one ingredient out at a time.

    Returns:
        ``{"recipe", "overrides", "grid", "seeds", "configs": [...], "chosen", "reference"}``
        where each config has its runs (validation accuracy by epoch, final validation and
        test accuracy) and their means and standard deviations. With a grid, ``chosen`` is
        the tag with the best mean final validation accuracy and ``reference`` is None; with
        ``arms``, ``reference`` is the first arm's tag and ``chosen`` is None.

    Raises:
        ValueError: for an unknown recipe or key, a value of the wrong type, or a run
            directory that holds a run with other settings (all before any training starts).
    """
    from melius_larq.zoo.train import check_run_settings, train_or_load

    grid = grid or {}
    if arms is not None and grid:
        raise ValueError("Expected either a grid or arms to compare, not both.")
    base = apply_overrides(get_recipe(recipe_name), list(overrides))
    if arms is not None:
        combos = [dict(arm) for arm in arms]
        tags = [_tag(c) for c in combos]
        if not combos or len(set(tags)) != len(tags):
            raise ValueError(f"Expected at least one arm and no arm twice, but got {tags}.")
    else:
        combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    recipes = {_tag(c): apply_overrides(base, c) for c in combos}  # type checks up front
    # A run directory is named after its configuration and seed only: before anything trains,
    # refuse one that holds a run with other settings (another --set or recipe).
    for tag, recipe in recipes.items():
        for seed in seeds:
            check_run_settings(apply_overrides(recipe, {"seed": seed}),
                               Path(out) / tag / f"seed_{seed}")  # fmt: skip
    configs = []
    for tag, recipe in recipes.items():
        runs = []
        for seed in seeds:
            record = train_or_load(apply_overrides(recipe, {"seed": seed}),
                                   Path(out) / tag / f"seed_{seed}", data_dir=data_dir,
                                   verbose=verbose)  # fmt: skip
            runs.append({"seed": seed, "run_dir": record["run_dir"],
                         "val_curve": record["history"]["val_accuracy"],
                         "val_accuracy": record["metrics"]["val_accuracy"],
                         "test_accuracy": record["metrics"]["test_accuracy"]})  # fmt: skip
            print(json.dumps({"tag": tag, **runs[-1]}), flush=True)
        val = mean_std([r["val_accuracy"] for r in runs])
        test = mean_std([r["test_accuracy"] for r in runs])
        configs.append({"tag": tag, "config": combos[len(configs)], "runs": runs,
                        "val_mean": val[0], "val_std": val[1],
                        "test_mean": test[0], "test_std": test[1]})  # fmt: skip
    if arms is not None:
        chosen, reference = None, configs[0]["tag"]
    else:
        chosen, reference = max(configs, key=lambda c: c["val_mean"])["tag"], None
    return {"recipe": recipe_name, "overrides": list(overrides), "grid": grid,
            "seeds": list(seeds), "configs": configs, "chosen": chosen,
            "reference": reference}  # fmt: skip


def _mean_curve(runs: list[dict]) -> list[float]:
    """The per-epoch mean of the runs' validation curves (over the epochs all of them have)."""
    return [statistics.fmean(values) for values in zip(*(r["val_curve"] for r in runs))]


def _markdown(result: dict) -> str:
    reference = result.get("reference")
    if reference is not None:
        decision = (f"Arms compared with the first, **{reference}**; nothing is chosen. Test "
                    "top-1 is evaluated once per run.")  # fmt: skip
    else:
        decision = (f"Chosen on mean final validation top-1: **{result['chosen']}**. Test "
                    "top-1 is evaluated once per run and not used to choose.")  # fmt: skip
    lines = [
        f"Recipe `{result['recipe']}` with `{' '.join(result['overrides']) or '-'}`; seeds "
        f"{', '.join(map(str, result['seeds']))}. {decision}",
        "",
        "| configuration | validation top-1 (%) | test top-1 (%) | validation by epoch, mean over "
        "seeds (%) |",
        "| --- | --- | --- | --- |",
    ]
    for c in result["configs"]:
        curve = " / ".join(f"{100 * v:.2f}" for v in _mean_curve(c["runs"]))
        mark = {result["chosen"]: " (chosen)", reference: " (reference)"}.get(c["tag"], "")
        lines.append(
            f"| {c['tag']}{mark} | {percent(c['val_mean'], c['val_std'])} | "
            f"{percent(c['test_mean'], c['test_std'])} | {curve} |"
        )
    anchor = next(c for c in result["configs"] if c["tag"] in (result["chosen"], reference))
    tests = []
    for c in result["configs"]:
        if c is anchor or min(len(c["runs"]), len(anchor["runs"])) < 2:
            continue
        # chosen - other for a grid; arm - reference for arms (what the arm's change does)
        first, second = (c, anchor) if reference is not None else (anchor, c)
        test = welch_t_test([100 * r["test_accuracy"] for r in first["runs"]],
                            [100 * r["test_accuracy"] for r in second["runs"]])  # fmt: skip
        stats = (f"Welch's t = {test['t']:.2f} (ν = {test['df']:.1f}), two-sided p = "
                 f"{test['p']:.3f}" if test["t"] is not None else "no variance to test")  # fmt: skip
        tests.append(f"- {first['tag']} − {second['tag']}: {test['difference']:+.2f} points of "
                     f"test top-1; {stats}.")  # fmt: skip
    if tests:
        what = ("each arm against the reference" if reference is not None
                else "the chosen configuration against each other one")  # fmt: skip
        lines += ["", f"Test top-1 of {what}:", "", *tests]
    return "\n".join(lines) + "\n"


def _plot(result: dict, path: Path) -> None:
    plt = pyplot("The sweep's plot")

    fig, ax = plt.subplots(figsize=(7, 4))
    for c in result["configs"]:
        for i, run in enumerate(c["runs"]):
            epochs = range(1, len(run["val_curve"]) + 1)
            ax.plot(epochs, [100 * v for v in run["val_curve"]], marker="o",
                    color=f"C{result['configs'].index(c)}", alpha=0.8,
                    label=c["tag"] if i == 0 else None)  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(f"{result['recipe']}: validation accuracy by configuration")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m melius_larq.zoo.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("recipe")
    parser.add_argument("--out", required=True, help="directory of the runs")
    parser.add_argument("--grid", nargs="*", default=[], metavar="KEY=V1,V2")
    parser.add_argument(
        "--arm", action="append", nargs="*", metavar="KEY=VALUE",
        help="instead of --grid: one configuration per --arm (an empty --arm is the recipe "
        "itself), each compared with the first; nothing is chosen",
    )  # fmt: skip
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--results", help="directory for sweep.json/.md/.png")
    parser.add_argument("--name", default="sweep", help="file stem of the results")
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    try:
        arms = None if args.arm is None else [_parse_arm(items) for items in args.arm]
        result = run_sweep(args.recipe, args.out, grid=_parse_grid(args.grid), arms=arms,
                           overrides=args.set, seeds=args.seeds, data_dir=args.data_dir)  # fmt: skip
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = _markdown(result)
    print(text)
    if args.results:
        results = Path(args.results)
        results.mkdir(parents=True, exist_ok=True)
        write_text_atomic(json.dumps(result, indent=2) + "\n", results / f"{args.name}.json")
        write_text_atomic(text, results / f"{args.name}.md")
        _plot(result, results / f"{args.name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
