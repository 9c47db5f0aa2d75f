"""Fine-tuning against training from scratch on a few hundred images of new classes.

A MeliusNetTiny is trained on 6 Fashion-MNIST classes (:data:`PRETRAIN_CLASSES`). The other
4 classes (:data:`TARGET_CLASSES`) make a small folder of PNG images, the kind a user brings:
:data:`PER_CLASS` training images per class (the first ones of each class in the Fashion-MNIST
training file; the folder reader holds the last 10 % of them out for validation) and every
Fashion-MNIST test image of the 4 classes as its ``test/`` split. On that folder the same
network is trained twice, with the same recipe, epochs and augmentation:

- **fine-tuned**: ``init=`` the 6-class run, :data:`FREEZE_EPOCHS` head-only epochs at
  :data:`HEAD_LEARNING_RATE`, then all layers at ``fine_tune_learning_rate``;
- **from scratch**: a random initialisation at ``learning_rate``.

The pick rule, fixed before the final seeds ran: each arm's learning rate (the all-layer rate
``fine_tune_learning_rate`` of the fine-tuned arm, ``learning_rate`` of the other) is the one
of :data:`LEARNING_RATES` with the best mean final validation top-1 over
:data:`CHOICE_SEEDS`. The chosen configuration of each arm is then trained with
:data:`FINAL_SEEDS` (not used in the choice); the reported validation and test top-1 are
their mean ± std, and the gain of starting from weights is the difference of the test means
with Welch's t-test. Each run's test set is evaluated once, at its end.

Finished runs under ``--runs`` are read back instead of retrained, so a re-run only reports
again. ``--results`` receives ``results.json``, ``results.md`` (the table of the guide,
docs/fine_tuning.md) and ``validation.png`` (validation top-1 by epoch, final seeds).

Reproduce (about an hour on 2 busy CPU cores; the pretraining takes a third of it)::

    nice python -m melius_larq.zoo.experiments.fine_tuning --runs runs/fine_tuning \\
        --results docs/fine_tuning
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from melius_larq._io import save_figure, write_text_atomic
from melius_larq._optional import pyplot
from melius_larq.zoo.experiments import run_and_print

__all__ = ["main", "markdown", "prepare_folders", "run"]

RECIPE = "meliusnettiny_fashion_mnist"
CLASS_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
               "bag", "ankle-boot")  # fmt: skip
PRETRAIN_CLASSES = (0, 1, 2, 3, 4, 5)
TARGET_CLASSES = (6, 7, 8, 9)
PER_CLASS = 120  # training images per new class; 10 % of them are held out for validation
PRETRAIN = {"epochs": 4, "augment": "flip_crop"}  # the recipe's learning rate and batch
# Both arms on the small folder: the same epochs, batch, schedule and augmentation.
SMALL = {"epochs": 20, "batch_size": 16, "augment": "flip_crop"}
FREEZE_EPOCHS = 2
HEAD_LEARNING_RATE = 0.016
LEARNING_RATES = (0.001, 0.004, 0.016)
CHOICE_SEEDS = (0,)
FINAL_SEEDS = (1, 2, 3)
QUICK = {"per_class": 12, "pretrain_limit": 600, "epochs": 2, "lrs": (0.004,),
         "choice_seeds": (0,), "final_seeds": (1,)}  # fmt: skip


def _write_pngs(images, labels, classes, root: Path, limit: int | None) -> None:
    from PIL import Image

    for c in classes:
        folder = root / CLASS_NAMES[c]
        folder.mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(labels == c)[:limit]):
            Image.fromarray(images[index], "L").save(folder / f"{i:05d}.png")


def prepare_folders(out, *, per_class: int = PER_CLASS, pretrain_limit: int | None = None,
                    fashion_mnist_dir=None) -> tuple[Path, Path]:  # fmt: skip
    """Writes the two image folders (once; an existing one is reused).

    Returns:
        ``(pretrain, target)``: ``pretrain/{train,test}/<class>/`` with the 6 pretraining
        classes (at most ``pretrain_limit`` training images per class) and
        ``target/{train,test}/<class>/`` with ``per_class`` training images of each new class.
    """
    from melius_larq.zoo.data import load_fashion_mnist

    out = Path(out)
    folders = {
        "pretrain": (PRETRAIN_CLASSES, pretrain_limit),
        "target": (TARGET_CLASSES, per_class),
    }
    for name, (classes, limit) in folders.items():
        if (out / name).is_dir():
            continue
        tmp = out / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for split, split_limit in (("train", limit), ("test", None)):
            images, labels = load_fashion_mnist(split, fashion_mnist_dir)
            _write_pngs(images, labels, classes, tmp / split, split_limit)
        tmp.rename(out / name)
    return out / "pretrain", out / "target"


def _read_run(recipe, run_dir: Path, data_dir: Path, verbose: int) -> dict:
    """The run's ``metrics.json``, training it first unless it has finished."""
    from melius_larq.zoo.train import train_or_load

    return train_or_load(recipe, run_dir, data_dir=str(data_dir), verbose=verbose)["metrics"]


def _arm(key: str, overrides: list[str], out: Path, data: Path, options: dict) -> dict:
    """One arm: the learning-rate choice over the choice seeds, then the final seeds."""
    from melius_larq.zoo.sweep import run_sweep

    common = {"data_dir": str(data), "verbose": options["verbose"]}
    grid = run_sweep(RECIPE, out, grid={key: [f"{lr:g}" for lr in options["lrs"]]},
                     overrides=overrides, seeds=options["choice_seeds"], **common)  # fmt: skip
    chosen = next(c for c in grid["configs"] if c["tag"] == grid["chosen"])
    final = run_sweep(RECIPE, out, arms=[chosen["config"]], overrides=overrides,
                      seeds=options["final_seeds"], **common)["configs"][0]  # fmt: skip
    return {
        "key": key,
        "chosen": float(chosen["config"][key]),
        "val_by_lr": {c["config"][key]: c["val_mean"] for c in grid["configs"]},
        **{k: final[k] for k in ("runs", "val_mean", "val_std", "test_mean", "test_std")},
    }


def run(runs, results, *, per_class=PER_CLASS, pretrain_limit=None, epochs=SMALL["epochs"],
        lrs=LEARNING_RATES, choice_seeds=CHOICE_SEEDS, final_seeds=FINAL_SEEDS,
        fashion_mnist_dir=None, verbose: int = 2) -> dict:  # fmt: skip
    """Prepares the folders, pretrains, trains both arms, writes and returns the results."""
    from melius_larq.zoo.recipes import apply_overrides, get_recipe
    from melius_larq.zoo.stats import welch_t_test

    if set(choice_seeds) & set(final_seeds):
        raise ValueError(f"Final seeds {list(final_seeds)} must differ from the choice seeds.")
    runs = Path(runs)
    pretrain_data, target = prepare_folders(runs / "data", per_class=per_class,
                                            pretrain_limit=pretrain_limit,
                                            fashion_mnist_dir=fashion_mnist_dir)  # fmt: skip
    pretrain_recipe = apply_overrides(get_recipe(RECIPE), PRETRAIN)
    pretrain_dir = runs / "pretrain"
    pretrained = _read_run(pretrain_recipe, pretrain_dir, pretrain_data, verbose)
    small = [f"{k}={v}" for k, v in {**SMALL, "epochs": epochs}.items()]
    options = {"lrs": lrs, "choice_seeds": list(choice_seeds),
               "final_seeds": list(final_seeds), "verbose": verbose}  # fmt: skip
    fine = [*small, f"init={pretrain_dir}", f"freeze_epochs={min(FREEZE_EPOCHS, epochs - 1)}",
            f"learning_rate={HEAD_LEARNING_RATE}"]  # fmt: skip
    arms = {
        "fine_tuned": _arm("fine_tune_learning_rate", fine, runs / "fine_tuned", target, options),
        "from_scratch": _arm("learning_rate", small, runs / "from_scratch", target, options),
    }
    tests = [[r["test_accuracy"] for r in arms[a]["runs"]] for a in arms]
    result = {
        "recipe": RECIPE,
        "pretrain": {
            "classes": [CLASS_NAMES[c] for c in PRETRAIN_CLASSES],
            "overrides": PRETRAIN,
            "val_accuracy": pretrained["val_accuracy"],
            "test_accuracy": pretrained["test_accuracy"],
        },  # fmt: skip
        "target": _target_sizes(arms["fine_tuned"]["runs"][0]["run_dir"]),
        "settings": {
            "small": {**SMALL, "epochs": epochs},
            "freeze_epochs": FREEZE_EPOCHS,
            "head_learning_rate": HEAD_LEARNING_RATE,
            **options,
        },  # fmt: skip
        "arms": arms,
        "gain": welch_t_test(*tests),
    }
    write_results(result, Path(results))
    return result


def _target_sizes(run_dir) -> dict:
    sizes = json.loads((Path(run_dir) / "metrics.json").read_text())
    return {"classes": [CLASS_NAMES[c] for c in TARGET_CLASSES],
            "train_images": sizes["train_images"],
            "validation_images": sizes["validation_images"],
            "test_images": sizes["test_images"]}  # fmt: skip


def _pct(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def markdown(result: dict) -> str:
    """The results table (Markdown) of :func:`run`'s result."""
    t = result["target"]
    lines = [
        f"MeliusNetTiny on {len(t['classes'])} new Fashion-MNIST classes "
        f"({', '.join(t['classes'])}) from a folder of PNGs: {t['train_images']} training, "
        f"{t['validation_images']} validation, {t['test_images']} test images. Mean ± std over "
        f"seeds {', '.join(map(str, result['settings']['final_seeds']))}.",
        "",
        "| start | chosen learning rate | validation top-1 (%) | test top-1 (%) |",
        "| --- | --- | --- | --- |",
    ]
    names = {"fine_tuned": "6-class MeliusNetTiny (fine-tuned)", "from_scratch": "from scratch"}
    for key, arm in result["arms"].items():
        lines.append(f"| {names[key]} | {arm['key']}={arm['chosen']:g} | "
                     f"{_pct(arm['val_mean'], arm['val_std'])} | "
                     f"{_pct(arm['test_mean'], arm['test_std'])} |")  # fmt: skip
    gain = result["gain"]
    stats = (f"Welch's t = {gain['t']:.2f}, two-sided p = {gain['p']:.3g}"
             if gain["t"] is not None else "one seed per arm: no test")  # fmt: skip
    lines += ["", f"Gain of starting from weights: {100 * gain['difference']:+.2f} points of "
              f"test top-1 ({stats})."]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Validation top-1 by epoch of every final run of both arms."""
    plt = pyplot("The fine-tuning experiment's plot")

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (key, arm) in enumerate(result["arms"].items()):
        for j, r in enumerate(arm["runs"]):
            ax.plot(range(1, len(r["val_curve"]) + 1), [100 * v for v in r["val_curve"]],
                    color=f"C{i}", alpha=0.8, label=key.replace("_", " ") if j == 0 else None)  # fmt: skip
    ax.axvline(result["settings"]["freeze_epochs"] + 0.5, color="gray", ls=":",
               label="end of the head-only epochs")  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def write_results(result: dict, directory: Path) -> None:
    """``results.json``, ``results.md`` and ``validation.png``, each written atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json.dumps(result, indent=2) + "\n", directory / "results.json")
    write_text_atomic(markdown(result), directory / "results.md")
    plot(result, directory / "validation.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m melius_larq.zoo.experiments.fine_tuning",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--runs", help="runs and image folders (default runs/fine_tuning)")
    parser.add_argument("--results", help="results directory (default docs/fine_tuning)")
    parser.add_argument("--data-dir", help="Fashion-MNIST IDX files (default: found as in "
                        "melius_larq.zoo.data)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="the whole pipeline at a tiny "
                        "scale into runs/fine_tuning_quick (checks it, measures nothing)")  # fmt: skip
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)
    runs, results, options = "runs/fine_tuning", "docs/fine_tuning", {}
    if args.quick:
        runs, results, options = "runs/fine_tuning_quick", "runs/fine_tuning_quick/results", QUICK
    return run_and_print(
        lambda: run(
            args.runs or runs,
            args.results or results,
            verbose=args.verbose,
            fashion_mnist_dir=args.data_dir,
            **options,
        ),
        markdown,
    )


if __name__ == "__main__":
    sys.exit(main())
