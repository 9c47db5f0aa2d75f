"""The experiment's steps: train (or read back) every arm over its seeds, pick, compare."""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from melius_larq._io import write_text_atomic
from melius_larq.zoo.experiments.bnnplus.recipes import (
    BASELINE,
    BNN_RECIPE,
    DEFAULT_BETAS,
    DEFAULT_EPOCHS,
    DEFAULT_LAMBDAS,
    DEFAULT_SEEDS,
    DEFAULT_STEP1_SEED,
    FLAT_EPOCHS,
    MELIUSNET_RECIPE,
    attribution_arms,
)
from melius_larq.zoo.experiments.bnnplus.report import (
    RESULTS_STEM,
    markdown,
    plot_accuracy,
    plot_alpha,
)
from melius_larq.zoo.recipes import apply_overrides, check_recipe, get_recipe
from melius_larq.zoo.stats import mean_std, welch_t_test


def _slug(name: str) -> str:
    table = str.maketrans({"β": "beta", "λ": "lambda", "α": "alpha", "+": "plus", " ": "_",
                           "=": "", "(": "", ")": "", ".": "p"})  # fmt: skip
    return name.lower().translate(table)


# Runs ---------------------------------------------------------------------------------------
# history.csv columns kept in the results: validation accuracy, mean α, near-α share, β.
HISTORY_KEYS = ("val_accuracy", "alpha_mean", "near_alpha_fraction", "beta")


def _train_or_read(recipe, run_dir: Path, data_dir, verbose) -> dict:
    """One run's record: trained into ``run_dir``, or read back when it has finished there."""
    from melius_larq.zoo.train import train_or_load

    record = train_or_load(recipe, run_dir, data_dir=data_dir, verbose=verbose)
    return {
        "seed": recipe.seed,
        "run_dir": record["run_dir"],
        "val_accuracy": record["metrics"]["val_accuracy"],
        "test_accuracy": record["metrics"]["test_accuracy"],
        "train_seconds": record["train_seconds"],
        "history": {k: v for k, v in record["history"].items() if k in HISTORY_KEYS},
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
    budgets = {**DEFAULT_EPOCHS, **(epochs or {})}
    check_options(until, budgets, step1_seed, seeds)
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
    _write(result, results)
    return result


def check_options(until: int, budgets: dict, step1_seed: int, seeds: Sequence[int]) -> None:
    """Checks the last step, the budgets and the seeds before anything trains.

    Raises:
        ValueError: naming the bad value.
    """
    if until not in (1, 2, 3):
        raise ValueError(f"Expected `until` to be 1, 2 or 3, but got {until!r}.")
    for step, value in budgets.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(
                f"Expected a positive number of epochs for step {step}, got {value!r}."
            )
    if until > 1 and len(seeds) < 2:
        raise ValueError(f"Expected at least 2 seeds for steps 2 and 3, but got {list(seeds)}.")
    if until > 1 and step1_seed in seeds:
        raise ValueError(f"Steps 2 and 3 need new seeds; {step1_seed} is step 1's seed.")


def _write(result: dict, results: Path) -> None:
    write_text_atomic(json.dumps(result, indent=2, ensure_ascii=False) + "\n",
                      results / f"{RESULTS_STEM}.json")  # fmt: skip
    write_text_atomic(markdown(result), results / f"{RESULTS_STEM}.md")
    plot_accuracy(result, results / "accuracy_by_configuration.png")
    plot_alpha(result, results / "alpha_over_epochs.png")
