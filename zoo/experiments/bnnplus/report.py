"""The results as Markdown and plots."""

from __future__ import annotations

from pathlib import Path

from melius_larq._io import save_figure
from melius_larq._optional import pyplot
from melius_larq.zoo.experiments.bnnplus.recipes import (
    BASELINE,
    FLAT_EPOCHS,
    FLAT_POINTS,
)
from melius_larq.zoo.stats import percent

RESULTS_STEM = "bnnplus_experiment"


# Reports ------------------------------------------------------------------------------------
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
        lines.append(f"| {name}{mark} | {percent(arm['val_mean'])} | "
                     f"{100 * (arm['val_mean'] - base):+.2f} | {percent(arm['test_mean'])} |")  # fmt: skip
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
            seeds = ", ".join(percent(r["test_accuracy"]) for r in arm["runs"])
            lines.append(f"| {name} | {percent(arm['val_mean'], arm['val_std'])} | "
                         f"{percent(arm['test_mean'], arm['test_std'])} | {seeds} |")  # fmt: skip
        lines += [""] + _claim_lines(step["claim"])
        for name, gain in step.get("val_gain_last_epochs", {}).items():
            flat = "flattened" if abs(gain) < FLAT_POINTS else "still changing"
            lines.append(f"Validation top-1 of {name} over the last {FLAT_EPOCHS} epochs: "
                         f"{gain:+.2f} points ({flat}).")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_accuracy(result: dict, path: Path) -> None:
    plt = pyplot("The BNN+ experiment's accuracy plot")

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


def plot_alpha(result: dict, path: Path) -> None:
    plt = pyplot("The BNN+ experiment's alpha plot")

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
