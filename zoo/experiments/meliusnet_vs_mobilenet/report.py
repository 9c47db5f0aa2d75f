"""The results as Markdown and plots."""

from __future__ import annotations

from pathlib import Path

from melius_larq._optional import pyplot
from melius_larq.zoo.experiments.meliusnet_vs_mobilenet.networks import FAMILIES
from melius_larq.zoo.stats import percent

RESULTS_STEM = "meliusnet_vs_mobilenet"


# Reports ------------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    """The results as Markdown: the main table, the learning-rate grid and the matched rows."""
    lines = [*_main_table(result), "", *_learning_rate_table(result), "", *_matched_table(result)]
    return "\n".join(lines) + "\n"


def _main_table(result: dict) -> list[str]:
    recipe = next(iter(result["recipes"].values()))
    m = result["machine"]
    lines = [
        f"Fashion-MNIST, {result['epochs']} epochs, batch {recipe['batch_size']}, "
        f"{recipe['optimizer']} with {recipe['schedule']} decay, augmentation "
        f"`{recipe['augment']}`"
        + (f", first {result['train_limit']:,} training images" if result["train_limit"] else "")
        + f"; learning rate chosen per network on validation top-1 among "
        f"{', '.join(f'{v:g}' for v in result['learning_rates'])} (seeds "
        f"{', '.join(map(str, result['seeds']))})"
        + (
            f", then seeds {', '.join(map(str, result['final_seeds']))} trained at the chosen "
            "rate (validation and test top-1: mean ± std over all seeds of that rate)"
            if result.get("final_seeds")
            else ""
        )
        + ". Test top-1 is evaluated once per run at the chosen rate; flatbuffers (sizes, "
        "latency, int8 top-1) are made from the first seed's model; int8 rows give their "
        f"flatbuffer's top-1 on {result['eval_images']:,} test "
        f"images. Latency: median of {result['latency']['runs']} single-image runs, best of "
        f"{result['latency']['rounds']} alternating rounds, 1 thread, on {m['cpu']} "
        f"({m['cores']} cores).",
        "",
        "| network | runtime | lr | val top-1 (%) | test top-1 (%) | size MiB (paper) | "
        "flatbuffer MiB | OPS | BOPs | FLOPs | latency ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        runtime = {"binary": "LCE (indirect BGEMM)", "float": "TFLite float, XNNPACK",
                   "int8": "TFLite int8, XNNPACK"}[r["kind"]]  # fmt: skip
        lines.append(
            f"| {r['name']} | {runtime} | {r['learning_rate']:g} | "
            f"{percent(r['val_accuracy'], r['val_std'] or None)} | "
            f"{percent(r['test_accuracy'], r['test_std'] or None)} "
            f"| {r['size_mib_paper']:.3f} | {r['flatbuffer_mib']:.3f} | {r['ops']:.3g} | "
            f"{r['bops']:.3g} | {r['flops']:.3g} | {r['latency_ms']:.3f} |"
        )
    return [
        *lines,
        "",
        "Size (paper): binary weights 1 bit, other parameters 32 bit (int8 rows: 8 bit), "
        "BatchNorm 2 parameters per channel. OPS = BOPs/64 + FLOPs, with convolution MACs and "
        "the fully connected layer not counted. Flatbuffer MiB: the deployed file's bytes.",
    ]


def _learning_rate_table(result: dict) -> list[str]:
    lines = [
        "Validation top-1 (%) by learning rate (mean over seeds):",
        "",
        "| network | " + " | ".join(f"lr {v:g}" for v in result["learning_rates"]) + " |",
        "| --- |" + " ---: |" * len(result["learning_rates"]),
    ]
    for r in result["rows"]:
        if r["kind"] != "int8":
            cells = [percent(r["val_by_lr"].get(f"{v:g}")) for v in result["learning_rates"]]
            lines.append(f"| {r['network']} | " + " | ".join(cells) + " |")
    return lines


def _matched_table(result: dict) -> list[str]:
    lines = [
        "Float MobileNet-v1 test top-1 interpolated (linearly in log x between its widths; '-' "
        "outside their range) at each MeliusNet's size, OPS and latency, and the MeliusNet's "
        "difference (points):",
        "",
        "| network | test top-1 (%) | MobileNet at its MiB | difference | MobileNet at its OPS "
        "| difference | MobileNet at its latency | difference |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in result["matched"]:
        cells = []
        for key in ("size_mib_paper", "ops", "latency_ms"):
            at, diff = e.get(f"mobilenet_at_{key}"), e.get(f"difference_at_{key}")
            cells += [percent(at), "-" if diff is None else f"{100 * diff:+.2f}"]
        lines.append(f"| {e['name']} | {percent(e['test_accuracy'])} | " + " | ".join(cells) + " |")
    return lines


PLOTS = {
    "accuracy_vs_size.png": (("size_mib_paper", "size (MiB, paper accounting)"),
                             ("flatbuffer_mib", "flatbuffer size (MiB)")),
    "accuracy_vs_ops.png": (("ops", "OPS = BOPs/64 + FLOPs"),),
    "accuracy_vs_latency.png": (("latency_ms", "latency (ms, 1 thread)"),),
}  # fmt: skip


def plot(result: dict, directory: Path) -> None:
    """Writes the three plots of :data:`PLOTS` (test top-1 against x, one line per family)."""
    plt = pyplot("The MeliusNet vs MobileNet plots")

    from melius_larq._io import save_figure

    for filename, panels in PLOTS.items():
        fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
        for ax, (key, label) in zip(axes[0], panels):
            for i, (kind, family) in enumerate(FAMILIES.items()):
                rows = sorted(
                    (r for r in result["rows"] if r["kind"] == kind), key=lambda r: r[key]
                )
                if not rows:
                    continue
                ax.plot([r[key] for r in rows], [100 * r["test_accuracy"] for r in rows],
                        marker="os^"[i], color=f"C{i}", label=family)  # fmt: skip
                for r in rows:
                    ax.annotate(r["name"].replace("MeliusNet", "M").replace("MobileNetV1", "MN"),
                                (r[key], 100 * r["test_accuracy"]), fontsize=7,
                                textcoords="offset points", xytext=(3, 3))  # fmt: skip
            ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel("test top-1 (%)")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        fig.suptitle("Fashion-MNIST: binary MeliusNets vs MobileNet-v1")
        fig.tight_layout()
        save_figure(fig, directory / filename)
