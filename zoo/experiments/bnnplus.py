"""Does BNN+ beat BNN where the paper says it does, and what does each ingredient do?

Three steps on Fashion-MNIST. Every choice is made on the validation split (the last 10 % of
the training images); each run's test accuracy is measured once, at its end, and is never
used to choose.

1. **Attribution** on the BNN network (``BinaryNetSmall``, recipe ``binarynet_fashion_mnist``):
   the BNN baseline (clipped STE at 1 on activations and weights, ``WeightClip(1)``, no α)
   and one change at a time: SignSwish activations at each β of ``--betas``; the Manhattan
   regularizer (with a trainable α as its target, α not in the forward pass) at each λ of
   ``--lambdas``; α in the forward pass; and the full BNN+ (SignSwish β = 5, Manhattan with
   the default λ, α in the forward pass). One seed, a short budget. The changed
   configuration with the best final validation accuracy is the **pick**; it is written to
   ``RUNS/pick.json`` before step 2 starts.
2. **The claim**: BNN against the pick on the same network, with new seeds and a longer
   budget: mean ± sample std of validation and test top-1, and Welch's t-test on test top-1.
3. **MeliusNet**: the same two arms on ``MeliusNetTiny`` (recipe
   ``meliusnettiny_fashion_mnist``): its own STE baseline (clip 1.3) against the pick's
   options, with the same seeds.

Every BNN+ arm is the STE network with ``binarization="bnn+"`` and only the named options
switched on; options it does not name take the network's own values (activation and weight
clips), so an arm differs from its baseline in exactly what its name says.

Finished runs under ``--runs`` are read back instead of retrained (an unfinished one resumes),
so re-running the command redoes only the analysis. Results go to ``--results``:
``bnnplus_experiment.json``, ``bnnplus_experiment.md``, ``step1_pick.json``,
``accuracy_by_configuration.png`` and ``alpha_over_epochs.png`` (mean α and the share of
latent weights within ±25 % of α, per epoch, from :class:`melius_larq.BNNPlusDiagnostics`).

Usage (about 1.5-2 hours on 2 CPU cores with the default budgets)::

    nice python -m melius_larq.zoo.experiments.bnnplus --runs runs/bnnplus \\
        --results docs/bnnplus_results

``--quick`` runs the whole pipeline on a tiny budget (to check it, not to measure anything).

References:
    - [BNN+: Improved Binary Network Training](https://arxiv.org/abs/1812.11800),
      Darabi, Belbahri, Courbariaux and Partovi Nia, 2018.
    - [Binarized Neural Networks](https://arxiv.org/abs/1602.02830), Courbariaux et al.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from melius_larq._io import save_figure, write_text_atomic
from melius_larq.zoo.recipes import apply_overrides, check_recipe, get_recipe
from melius_larq.zoo.stats import mean_std, welch_t_test

__all__ = [
    "BNN_RECIPE",
    "MELIUSNET_RECIPE",
    "attribution_arms",
    "main",
    "run",
]

BNN_RECIPE = "binarynet_fashion_mnist"
MELIUSNET_RECIPE = "meliusnettiny_fashion_mnist"
BASELINE = "BNN"
# The BNN+ layers with every ingredient off: the STE network, computed the same way.
_ALL_OFF = {
    "binarization": "bnn+",
    "bnn_activation": "ste",
    "bnn_regularizer": "none",
    "bnn_alpha_in_forward": False,
    "bnn_weight_clip": None,  # the network's own clip (BNN: 1.0; MeliusNet "lce": none)
}
DEFAULT_BETAS = (2.0, 5.0, 10.0)
# The experiment's settings are its own, not the package defaults (which it decides): the
# full BNN+ arm uses larq's SignSwish β = 5 and Manhattan λ = 0.3 (per weight, mean), the
# package defaults when the experiment was designed, and λ is swept by factors of 10 above.
FULL_BNNPLUS_BETA = 5.0
FULL_BNNPLUS_LAMBDA = 0.3
DEFAULT_LAMBDAS = (0.3, 3.0, 30.0)
# Budgets (epochs) and seeds. Step 1 is short; step 2 gives the cosine schedule time to
# settle (validation accuracy flattens in its last epochs); step 3 keeps MeliusNetTiny's
# recipe budget. Steps 2 and 3 use seeds that step 1 did not.
DEFAULT_EPOCHS = {1: 3, 2: 15, 3: 4}
DEFAULT_STEP1_SEED = 0
DEFAULT_SEEDS = (1, 2, 3)
# --quick: the whole pipeline in minutes, on the first images only.
QUICK = {"epochs": {1: 1, 2: 1, 3: 1}, "seeds": (1, 2), "train_limit": 1024,
         "betas": (FULL_BNNPLUS_BETA,), "lambdas": (FULL_BNNPLUS_LAMBDA,)}  # fmt: skip
# A change of validation accuracy over the last epochs of step 2 below this many points counts
# as "flattened": about the standard error of the accuracy on 6,000 validation images at 90 %.
FLAT_POINTS = 0.4
FLAT_EPOCHS = 3
RESULTS_STEM = "bnnplus_experiment"


def attribution_arms(betas=DEFAULT_BETAS, lambdas=DEFAULT_LAMBDAS) -> dict[str, dict]:
    """Step 1's configurations: name -> recipe overrides of the BNN recipe."""
    arms: dict[str, dict] = {BASELINE: {}}
    for beta in betas:
        arms[f"SignSwish β={beta:g}"] = {**_ALL_OFF, "bnn_activation": "sign_swish",
                                         "bnn_beta": float(beta)}  # fmt: skip
    for lam in lambdas:
        arms[f"Manhattan λ={lam:g}"] = {**_ALL_OFF, "bnn_regularizer": "manhattan",
                                        "bnn_lambda": float(lam)}  # fmt: skip
    arms["α in forward"] = {**_ALL_OFF, "bnn_alpha_in_forward": True}
    arms["BNN+ (all)"] = {**_ALL_OFF, "bnn_activation": "sign_swish", "bnn_beta": FULL_BNNPLUS_BETA,
                          "bnn_regularizer": "manhattan", "bnn_lambda": FULL_BNNPLUS_LAMBDA,
                          "bnn_alpha_in_forward": True}  # fmt: skip
    return arms


def _slug(name: str) -> str:
    table = str.maketrans({"β": "beta", "λ": "lambda", "α": "alpha", "+": "plus", " ": "_",
                           "=": "", "(": "", ")": "", ".": "p"})  # fmt: skip
    return name.lower().translate(table)


# Runs ---------------------------------------------------------------------------------------
def _history(run_dir: Path) -> dict[str, list[float]]:
    """history.csv as columns (validation accuracy, mean α, near-α fraction, ...)."""
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    keys = ("val_accuracy", "alpha_mean", "near_alpha_fraction", "beta")
    return {
        k: [float(r[k]) for r in rows]
        for k in keys
        if rows and all(r.get(k) not in (None, "") for r in rows)
    }


def _train_or_read(recipe, run_dir: Path, data_dir, verbose) -> dict:
    """One run's record: trained into ``run_dir``, or read back when it has finished there."""
    from melius_larq._compat import tf
    from melius_larq.zoo.train import check_run_settings, train

    config = run_dir / "config.json"
    check_run_settings(recipe, run_dir)
    record_file = run_dir / "experiment.json"
    if not (run_dir / "metrics.json").exists():
        print(f"\n== {run_dir} ==", flush=True)
        start = time.perf_counter()
        train(recipe, run_dir, resume=config.exists(), data_dir=data_dir, verbose=verbose)
        seconds = round(time.perf_counter() - start, 1)
        write_text_atomic(json.dumps({"train_seconds": seconds}) + "\n", record_file)
        tf.keras.backend.clear_session()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    extra = json.loads(record_file.read_text()) if record_file.exists() else {}
    return {
        "seed": recipe.seed,
        "run_dir": str(run_dir),
        "val_accuracy": metrics["val_accuracy"],
        "test_accuracy": metrics["test_accuracy"],
        "train_seconds": extra.get("train_seconds"),
        "history": _history(run_dir),
    }


def _arm_summary(runs: list[dict]) -> dict:
    val, test = (mean_std([r[k] for r in runs]) for k in ("val_accuracy", "test_accuracy"))
    return {"runs": runs, "val_mean": val[0], "val_std": val[1], "test_mean": test[0],
            "test_std": test[1]}  # fmt: skip


def _pick(step1: dict, path: Path) -> dict:
    """The changed configuration with the best final validation accuracy (the first listed on
    a tie), written to ``path``; an existing pick is kept if step 1 still picks the same."""
    changed = {n: a for n, a in step1["arms"].items() if n != BASELINE}
    name = max(changed, key=lambda n: changed[n]["val_mean"])  # max keeps the first on ties
    pick = {
        "pick": name,
        "overrides": changed[name]["overrides"],
        "val_accuracy": changed[name]["val_mean"],
        "baseline_val_accuracy": step1["arms"][BASELINE]["val_mean"],
        "rule": "best final validation top-1 of step 1 among the changed configurations",
        "step1_val_accuracy": {n: a["val_mean"] for n, a in step1["arms"].items()},
    }
    if path.exists():
        old = json.loads(path.read_text())
        if old["pick"] != name:
            raise ValueError(
                f"{str(path)!r} records the pick {old['pick']!r}, but step 1 now picks "
                f"{name!r}; pass another --runs directory."
            )
        return old
    pick["written"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_text_atomic(json.dumps(pick, indent=2, ensure_ascii=False) + "\n", path)
    return pick


def _step(runs_dir: Path, base, arms: dict[str, dict], seeds, data_dir, verbose) -> dict:
    out = {"recipe": base.name, "model": base.model, "epochs": base.epochs,
           "seeds": list(seeds), "arms": {}}  # fmt: skip
    recipes = {n: apply_overrides(base, o) for n, o in arms.items()}
    for recipe in recipes.values():  # every arm is checked before any training starts
        check_recipe(recipe)
    for name, recipe in recipes.items():
        runs = [
            _train_or_read(apply_overrides(recipe, {"seed": s}),
                           runs_dir / _slug(name) / f"seed_{s}", data_dir, verbose)
            for s in seeds
        ]  # fmt: skip
        out["arms"][name] = {"overrides": arms[name], **_arm_summary(runs)}
    return out


def _claim(step: dict, baseline: str, other: str) -> dict:
    """Welch's test on test top-1 of ``other`` against ``baseline``, and whether ``other`` is
    ahead by more than one standard deviation of either arm (the paper's direction, beyond
    the seed noise)."""
    a, b = step["arms"][other], step["arms"][baseline]
    test = welch_t_test([r["test_accuracy"] for r in a["runs"]],
                        [r["test_accuracy"] for r in b["runs"]])  # fmt: skip
    val = welch_t_test([r["val_accuracy"] for r in a["runs"]],
                       [r["val_accuracy"] for r in b["runs"]])  # fmt: skip
    ahead = test["difference"] > max(a["test_std"], b["test_std"])
    return {"arm": other, "baseline": baseline, "test": test, "validation": val,
            "ahead_by_more_than_one_std": ahead}  # fmt: skip


def _flattening(step: dict) -> dict[str, float]:
    """Per arm: the mean (over seeds) change of validation top-1, in points, over the last
    ``FLAT_EPOCHS`` epochs."""
    out = {}
    for name, arm in step["arms"].items():
        gains = [
            100 * (c[-1] - c[-1 - FLAT_EPOCHS])
            for c in (r["history"].get("val_accuracy", []) for r in arm["runs"])
            if len(c) > FLAT_EPOCHS
        ]
        if gains:
            out[name] = statistics.fmean(gains)
    return out


def run(
    runs: str | Path = "runs/bnnplus",
    results: str | Path = "docs/bnnplus_results",
    *,
    until: int = 3,
    epochs: dict[int, int] | None = None,
    step1_seed: int = DEFAULT_STEP1_SEED,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    betas: Sequence[float] = DEFAULT_BETAS,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    train_limit: int | None = None,
    overrides: dict | Sequence[str] = (),
    data_dir: str | None = None,
    verbose: int = 2,
) -> dict:
    """Runs the experiment's steps 1 to ``until`` (reading finished runs back) and writes the
    results.

    Args:
        runs: directory of the training runs (``step1/``, ``step2/``, ``step3/``) and of
            ``pick.json``.
        results: directory of the JSON, Markdown and PNG results.
        until: the last step to run: 1, 2 or 3.
        epochs: budget of each step, ``{1: ..., 2: ..., 3: ...}``; missing steps take
            ``DEFAULT_EPOCHS``.
        step1_seed: the seed of step 1.
        seeds: the seeds of steps 2 and 3 (at least 2 for the t-test; 3 or more to claim
            anything).
        betas: SignSwish β values of step 1.
        lambdas: Manhattan λ values of step 1 (``reduction="mean"``).
        train_limit: train on the first N images only (quick checks); None uses all.
        overrides: recipe overrides for every run of every step (a dict, or ``key=value``
            strings), e.g. ``{"batch_size": 16}``; arms override them where they differ.
        data_dir: Fashion-MNIST directory (default: the package's search order).
        verbose: Keras progress output of each run.

    Returns:
        The results dictionary written to ``bnnplus_experiment.json``.

    Raises:
        ValueError: for bad arguments or arms (before any training), or a runs directory
            that holds runs with other settings.
    """
    if until not in (1, 2, 3):
        raise ValueError(f"Expected `until` to be 1, 2 or 3, but got {until!r}.")
    budgets = {**DEFAULT_EPOCHS, **(epochs or {})}
    for step, value in budgets.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(
                f"Expected a positive number of epochs for step {step}, got {value!r}."
            )
    if until > 1 and len(seeds) < 2:
        raise ValueError(f"Expected at least 2 seeds for steps 2 and 3, but got {list(seeds)}.")
    if until > 1 and step1_seed in seeds:
        raise ValueError(f"Steps 2 and 3 need new seeds; {step1_seed} is step 1's seed.")
    runs, results = Path(runs), Path(results)

    def base(name, epochs):
        recipe = apply_overrides(get_recipe(name), overrides)
        return dataclasses.replace(recipe, epochs=epochs, train_limit=train_limit)

    bnn = base(BNN_RECIPE, budgets[1])
    result: dict = {"budgets": budgets, "train_limit": train_limit}
    arms = attribution_arms(betas, lambdas)
    result["step1"] = _step(runs / "step1", bnn, arms, [step1_seed], data_dir, verbose)
    results.mkdir(parents=True, exist_ok=True)
    if until >= 2:
        pick = _pick(result["step1"], runs / "pick.json")
        result["pick"] = pick
        write_text_atomic(json.dumps(pick, indent=2, ensure_ascii=False) + "\n",
                          results / "step1_pick.json")  # fmt: skip
        long = dataclasses.replace(bnn, epochs=budgets[2])
        two = {BASELINE: {}, pick["pick"]: pick["overrides"]}
        result["step2"] = _step(runs / "step2", long, two, seeds, data_dir, verbose)
        result["step2"]["claim"] = _claim(result["step2"], BASELINE, pick["pick"])
        result["step2"]["val_gain_last_epochs"] = _flattening(result["step2"])
    if until >= 3:
        tiny = base(MELIUSNET_RECIPE, budgets[3])
        three = {"STE": {}, pick["pick"]: pick["overrides"]}
        result["step3"] = _step(runs / "step3", tiny, three, seeds, data_dir, verbose)
        result["step3"]["claim"] = _claim(result["step3"], "STE", pick["pick"])
    write_text_atomic(json.dumps(result, indent=2, ensure_ascii=False) + "\n",
                      results / f"{RESULTS_STEM}.json")  # fmt: skip
    write_text_atomic(markdown(result), results / f"{RESULTS_STEM}.md")
    _plot_accuracy(result, results / "accuracy_by_configuration.png")
    _plot_alpha(result, results / "alpha_over_epochs.png")
    return result


# Reports ------------------------------------------------------------------------------------
def _pct(mean: float, std: float | None = None) -> str:
    return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def _claim_lines(claim: dict) -> list[str]:
    test = claim["test"]
    p = "undefined" if test["p"] is None else f"{test['p']:.3g}"
    t = "–" if test["t"] is None else f"{test['t']:.2f} (ν = {test['df']:.1f})"
    verdict = "ahead of" if claim["ahead_by_more_than_one_std"] else "not ahead of"
    return [
        f"{claim['arm']} − {claim['baseline']}: {100 * test['difference']:+.2f} points of test "
        f"top-1; Welch's t = {t}, two-sided p = {p}. {claim['arm']} is {verdict} "
        f"{claim['baseline']} by more than one standard deviation of either arm.",
    ]


def markdown(result: dict) -> str:
    """The results as Markdown: one table per step, the pick and the tests."""
    s1 = result["step1"]
    lines = [
        "# BNN+ experiment (Fashion-MNIST)",
        "",
        f"## Step 1: attribution on {s1['model']}, {s1['epochs']} epochs, seed {s1['seeds'][0]}",
        "",
        "| configuration | validation top-1 (%) | vs BNN (points) | test top-1 (%) |",
        "| --- | --- | --- | --- |",
    ]
    base = s1["arms"][BASELINE]["val_mean"]
    pick = result.get("pick", {}).get("pick")
    for name, arm in s1["arms"].items():
        mark = " (pick)" if name == pick else ""
        lines.append(f"| {name}{mark} | {_pct(arm['val_mean'])} | "
                     f"{100 * (arm['val_mean'] - base):+.2f} | {_pct(arm['test_mean'])} |")  # fmt: skip
    if pick:
        lines += ["", f"Pick (best validation top-1 among the changes, written before step 2 "
                  f"at {result['pick'].get('written', '?')}): **{pick}**."]  # fmt: skip
    for key, title in (("step2", "Step 2: the claim"), ("step3", "Step 3: MeliusNet")):
        if key not in result:
            continue
        step = result[key]
        lines += [
            "",
            f"## {title}: {step['model']}, {step['epochs']} epochs, seeds "
            f"{', '.join(map(str, step['seeds']))}",
            "",
            "| configuration | validation top-1 (%) | test top-1 (%) | test per seed |",
            "| --- | --- | --- | --- |",
        ]
        for name, arm in step["arms"].items():
            seeds = ", ".join(_pct(r["test_accuracy"]) for r in arm["runs"])
            lines.append(f"| {name} | {_pct(arm['val_mean'], arm['val_std'])} | "
                         f"{_pct(arm['test_mean'], arm['test_std'])} | {seeds} |")  # fmt: skip
        lines += [""] + _claim_lines(step["claim"])
        for name, gain in step.get("val_gain_last_epochs", {}).items():
            flat = "flattened" if abs(gain) < FLAT_POINTS else "still changing"
            lines.append(f"Validation top-1 of {name} over the last {FLAT_EPOCHS} epochs: "
                         f"{gain:+.2f} points ({flat}).")  # fmt: skip
    return "\n".join(lines) + "\n"


def _plot_accuracy(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [k for k in ("step1", "step2", "step3") if k in result]
    fig, axes = plt.subplots(1, len(steps), figsize=(5.5 * len(steps), 4.2), squeeze=False)
    for ax, key in zip(axes[0], steps):
        step = result[key]
        names = list(step["arms"])
        for i, name in enumerate(names):
            arm = step["arms"][name]
            for offset, metric, color in ((-0.12, "val", "#1f4e8c"), (0.12, "test", "#c05020")):
                ax.errorbar(i + offset, 100 * arm[f"{metric}_mean"], yerr=100 * arm[f"{metric}_std"],
                            fmt="o", color=color, capsize=4,
                            label=("validation" if metric == "val" else "test (not used to choose)")
                            if i == 0 else None)  # fmt: skip
                ax.scatter([i + offset] * len(arm["runs"]),
                           [100 * r[f"{metric}_accuracy"] for r in arm["runs"]],
                           color="#999999", s=10, zorder=3)  # fmt: skip
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("top-1 (%)")
        ax.set_title(f"{key.replace('step', 'step ')}: {step['model']}, {step['epochs']} epochs, "
                     f"{len(step['seeds'])} seed(s)", fontsize=9)  # fmt: skip
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def _plot_alpha(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    drawn = 0
    for key in ("step1", "step2", "step3"):
        for name, arm in result.get(key, {}).get("arms", {}).items():
            for j, run_ in enumerate(arm["runs"]):
                history = run_["history"]
                if "alpha_mean" not in history:
                    continue
                label = f"{key.replace('step', 'step ')}: {name}" if j == 0 else None
                epochs = range(1, len(history["alpha_mean"]) + 1)
                style = {"color": f"C{drawn % 10}", "marker": "o", "markersize": 3}
                axes[0].plot(epochs, history["alpha_mean"], label=label, **style)
                axes[1].plot(epochs, history["near_alpha_fraction"], label=label, **style)
            drawn += 1
    for ax, title in zip(axes, ("mean α", "share of latent weights with |w| within ±25 % of α")):
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    if drawn:
        axes[1].legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m melius_larq.zoo.experiments.bnnplus", description=__doc__,
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
    for step in (1, 2, 3):
        parser.add_argument(f"--step{step}-epochs", type=int, default=DEFAULT_EPOCHS[step],
                            help=f"epochs of step {step} (default {DEFAULT_EPOCHS[step]})")  # fmt: skip
    parser.add_argument("--step1-seed", type=int, default=DEFAULT_STEP1_SEED)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
                        help="seeds of steps 2 and 3 (default 1 2 3)")  # fmt: skip
    parser.add_argument("--betas", type=float, nargs="+", default=list(DEFAULT_BETAS))
    parser.add_argument("--lambdas", type=float, nargs="+", default=list(DEFAULT_LAMBDAS))
    parser.add_argument("--train-limit", type=int, help="train on the first N images only")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="recipe overrides for every run")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="1 epoch per step, seeds 1 2, 1,024 images, one β and one λ")  # fmt: skip
    parser.add_argument("--data-dir")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)
    options = {
        "epochs": {s: getattr(args, f"step{s}_epochs") for s in (1, 2, 3)},
        "seeds": args.seeds, "betas": args.betas, "lambdas": args.lambdas,
        "train_limit": args.train_limit, "overrides": args.set,
    }  # fmt: skip
    runs, results = "runs/bnnplus", "docs/bnnplus_results"
    if args.quick:  # its numbers measure nothing: kept out of the real runs and the docs
        options.update(QUICK)
        runs, results = "runs/bnnplus_quick", "runs/bnnplus_quick/results"
    try:
        result = run(args.runs or runs, args.results or results, until=args.until,
                     step1_seed=args.step1_seed,
                     data_dir=args.data_dir, verbose=args.verbose, **options)  # fmt: skip
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
