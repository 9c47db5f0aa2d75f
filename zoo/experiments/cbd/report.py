"""The results as Markdown tables and a plot."""

from __future__ import annotations

from pathlib import Path

from melius_larq._io import save_figure
from melius_larq._optional import pyplot
from melius_larq.zoo.experiments.cbd.compression import CBD_METHODS, METHOD_NAMES, pareto_front
from melius_larq.zoo.stats import percent

# A reference point for the plot and the table, not a claim: at most 4 bits/weight with at
# most 0.5 percentage points of test accuracy lost against the float model.
REFERENCE_BITS = 4.0
REFERENCE_DROP_PP = 0.5
RESULTS_JSON, RESULTS_MD, PLOT_NAME = "results.json", "results.md", "accuracy_vs_bits.png"


def plot_results(networks: list[dict], path: Path) -> None:
    plt = pyplot("The CBD experiment's plot")

    fig, axes = plt.subplots(len(networks), 2, figsize=(11, 4.2 * len(networks)), squeeze=False)
    style = {"cbd": ("tab:blue", "o"), "plain": ("tab:orange", "s"),
             "plain_layer": ("tab:green", "^"), "cbd_channel": ("tab:purple", "D")}  # fmt: skip
    for row, net in zip(axes, networks):
        for ax, split in zip(row, ("val", "test")):
            for method, (color, marker) in style.items():
                name = METHOD_NAMES[method] + ("" if method in CBD_METHODS else " rounding")
                if not any(p["method"] == method for p in net["points"]):
                    continue
                if split == "val":
                    pts = [p for p in net["points"] if p["method"] == method]
                    ax.scatter([p["bits_per_weight_all"] for p in pts],
                               [100 * p["val_accuracy"] for p in pts], color=color,
                               marker=marker, alpha=0.35, s=18)  # fmt: skip
                    front = pareto_front(pts)
                else:
                    front = [p for p in net["final"] if p["method"] == method]
                key = f"{split}_accuracy"
                ax.plot([p["bits_per_weight_all"] for p in front],
                        [100 * p[key] for p in front], color=color, marker=marker,
                        label=f"{name} (validation front)" if split == "val" else name)  # fmt: skip
            ref = 100 * net["float"][f"{split}_accuracy"]
            ax.axhline(ref, color="grey", linewidth=0.8, label="float32")
            if split == "test":
                ax.axhline(ref - REFERENCE_DROP_PP, color="grey", linestyle=":", linewidth=0.8,
                           label=f"reference: {REFERENCE_DROP_PP:g} pp below float32, "
                           f"{REFERENCE_BITS:g} bits")  # fmt: skip
                ax.axvline(REFERENCE_BITS, color="grey", linestyle=":", linewidth=0.8)
            ax.set_xlabel("bits/weight (all Conv2D/Dense kernels, float32 constants counted)")
            ax.set_ylabel(f"{'validation' if split == 'val' else 'test'} accuracy (%)")
            what = "every point" if split == "val" else "final points"
            ax.set_title(f"{net['network']} ({net['params']:,} params): {what}", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle("CBD against plain rounding, Fashion-MNIST, no retraining")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _comparison_table(rows: list[dict], baseline: str, name: str = "CBD") -> list[str]:
    wins = [c for c in rows if c["plain"] is not None]
    ahead = sum(c["val_difference_pp"] >= 0 for c in wins)
    lines = [
        "",
        f"### {name} against the best point of {baseline} with at most as many bits (validation)",
        "",
        f"{name} is at or above it at {ahead} of the {len(wins)} {name} front points that have "
        "such a point at or below their bits/weight.",
        "",
        f"| {name} | bits/weight | validation % | baseline | bits/weight | validation % "
        f"| {name} - baseline (pp) |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for c in rows:
        plain = (
            f"{c['plain']} | {c['plain_bits_per_weight_all']:.3f} "
            f"| {percent(c['plain_val_accuracy'], missing='')} | {c['val_difference_pp']:+.2f}"
            if c["plain"]
            else "none at these bits | | |"
        )
        lines.append(
            f"| {c['cbd']} | {c['cbd_bits_per_weight_all']:.3f} "
            f"| {percent(c['cbd_val_accuracy'], missing='')} | {plain} |"
        )
    return lines


def _engagement(net: dict, method: str) -> list[str]:
    """Where the factoring of ``method`` engages: sweep totals and, per layer, the final
    points."""
    points = [p for p in net["points"] if p["method"] == method]
    if not points:
        return []
    name = METHOD_NAMES[method]
    layers = sum(p["layers_compressed"] for p in points)
    raised = sum(p["layers_a_s_above_0"] for p in points)
    engaged = sum(p["layers_factoring_engaged"] for p in points)
    lines = [
        "",
        f"### Where the factoring of {name} engages",
        "",
        f"Over the whole {name} sweep, {raised} of {layers} compressed layers have a_s > 0 "
        f"(more than the top plane factored) and {engaged} have a factored plane of rank above "
        "0. Per layer of each final point (ranks of the planes i >= 0 with the budget; saved = "
        "bits/weight saved against storing all J+1 planes densely; an empty top plane saves a "
        "whole plane but carries no information):",
        "",
        "| point | layer | matrix | a | a_s | ranks (budget) | storage | saved bits/w |",
        "| --- | --- | --- | ---: | ---: | --- | --- | ---: |",
    ]
    labels = {p["label"] for p in net["final"] if p["method"] == method}
    for p in points:
        if p["label"] not in labels:
            continue
        for layer, r in p["layers"].items():
            ranks = " ".join(f"{i}:{n}" for i, n in r["ranks"].items())
            lines.append(
                f"| {p['label']} | {layer} | {r['matrix_shape'][0]}x{r['matrix_shape'][1]} "
                f"| {r['a']:.4g} | {r['a_s']} | {ranks} ({r['rank_bound']}) "
                f"| {r['storage']} | {r['saved_bits_per_weight']:.3f} |"
            )
    return lines


# The ablations' comparison tables: result key, the sweep that must have run, the baseline
# as the table names it, and the compared method's name.
ABLATION_TABLES = (
    ("comparison_per_layer_scale", "plain_layer",
     "plain rounding with one scale per layer (CBD's granularity: the difference is what "
     "CBD's grid and factored planes add)", "CBD"),
    ("comparison_per_channel_cbd", "cbd_channel",
     "plain rounding (one scale per output channel; both with the same scales: the difference "
     "is what CBD's grid and factored planes add at that granularity)", "CBD per-channel"),
)  # fmt: skip


def markdown(result: dict) -> str:
    """The results as Markdown: per network the final points, the CBD-against-plain table,
    where factoring engages, and every sweep point."""
    lines = [
        "# CBD against plain rounding on Fashion-MNIST",
        "",
        "bits/weight counts every Conv2D/Dense kernel weight: codes, float32 constants (CBD: m "
        "and a per layer; CBD per-channel: one scale per output channel and a; plain "
        "per-channel: one scale per output channel; plain per-layer: one scale per layer) and "
        "kernels kept in float32 at 32 bits. Choices are made on the validation split (the "
        "last 10 % of the training images); the test set is evaluated once per final point.",
    ]
    for net in result["networks"]:
        t = net["training"]
        source = "reused from" if t["reused"] else "trained into"
        lines += [
            "",
            f"## {net['network']}: {net['model']}",
            "",
            f"{net['params']:,} parameters, {net['kernel_weights']:,} Conv2D/Dense kernel "
            f"weights, kept in float32: {', '.join(net['exclude']) or 'none'}. Training: "
            f"{t['budget']['epochs']} epoch(s) on {t['train_images']:,} images, {source} "
            f"`{t['run_dir']}`. Float32: validation {percent(net['float']['val_accuracy'], missing='')} %, "
            f"test {percent(net['float']['test_accuracy'], missing='')} %.",
            "",
            "### Final points (validation Pareto front of each method)",
            "",
            "| method | setting | bits/weight | validation % | test % | test drop (pp) "
            f"| <= {REFERENCE_BITS:g} bits and <= {REFERENCE_DROP_PP:g} pp |",
            "| --- | --- | ---: | ---: | ---: | ---: | :---: |",
        ]
        for p in net["final"]:
            lines.append(
                f"| {p['method']} | {p['label']} | {p['bits_per_weight_all']:.3f} "
                f"| {percent(p['val_accuracy'], missing='')} | {percent(p['test_accuracy'], missing='')} "
                f"| {p['test_drop_pp']:+.2f} | {'yes' if p['meets_reference'] else ''} |"
            )
        lines += _comparison_table(
            net["comparison"], "plain rounding (one scale per output channel)"
        )
        for key, method, baseline, name in ABLATION_TABLES:
            if net.get(key) and any(p["method"] == method for p in net["points"]):
                lines += _comparison_table(net[key], baseline, name)
        for method in CBD_METHODS:
            lines += _engagement(net, method)
        lines += [
            "",
            "### Every point",
            "",
            "| method | setting | bits/w (codes) | bits/w (all) | validation % | layers a_s > 0 "
            "| layers factoring |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for p in net["points"]:
            lines.append(
                f"| {p['method']} | {p['label']} | {p['bits_per_weight']:.3f} "
                f"| {p['bits_per_weight_all']:.3f} | {percent(p['val_accuracy'], missing='')} "
                f"| {p['layers_a_s_above_0']} | {p['layers_factoring_engaged']} |"
            )
    return "\n".join(lines) + "\n"
