"""The main job (`make demo`): train a MeliusNet on Fashion-MNIST, then deploy it with LCE.

1. trains ``MeliusNetTiny`` (the registry's 28x28 MeliusNet: growth 32, stem 32, blocks
   2/2/2/1, the ``small`` stem, "same"-padded transition pools) on the first 54,000 training
   images (the last 6,000 validate)
   with the ``meliusnettiny_fashion_mnist`` recipe: RAdam lr 0.016 with a per-step cosine
   decay, batch 128, 4 epochs, no augmentation;
2. evaluates it on the 10,000 test images;
3. converts it with LCE (float, and int8 non-binary layers calibrated on 500 training
   images), verifies LCE against Keras on all 10,000 test images, and benchmarks LCE against
   the float TFLite (XNNPACK) of the same network;
4. prints a summary table and writes the run directory: ``model.keras``, the ``.tflite`` files,
   ``report.json``, ``report.md`` and PNG plots.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import melius_larq
from melius_larq._io import save_figure, write_atomic
from melius_larq._optional import pyplot
from melius_larq.zoo.data import load_fashion_mnist, preprocess_fashion_mnist
from melius_larq.zoo.recipes import apply_overrides, get_recipe
from melius_larq.zoo.train import train_or_load

__all__ = ["prepare_training_dir", "run_demo"]

DEMO_RECIPE = "meliusnettiny_fashion_mnist"
LATENCY_ROUNDS = 3
# int8 calibration images (the first training images). Quantization-aware fine-tuning is
# off: on this model it lowered int8 validation top-1 (see melius_larq.deploy.int8).
CALIBRATION_SAMPLES = 500
LATENCY_RUNS = 200


def _plot_bars(report: dict, path: Path) -> None:
    plt = pyplot("The demo's plot")

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    names = ["float TFLite", "LCE", "LCE int8"]
    lat = [report["float_tflite_ms"], report["lce_ms"], report["lce_int8_ms"]]
    size = [report["float_tflite_mib"], report["lce_mib"], report["lce_int8_mib"]]
    for ax, values, label in (
        (axes[0], lat, "latency (ms, 1 thread)"),
        (axes[1], size, "size (MiB)"),
    ):
        ax.bar(names, values, color=["#999999", "#3b7dd8", "#1f4e8c"])
        ax.set_title(label)
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.2f}", ha="center", va="bottom")
    fig.suptitle(f"{report['model']} on Fashion-MNIST: top-1 {100 * report['test_accuracy']:.2f} %")
    fig.tight_layout()
    save_figure(fig, path)


def prepare_training_dir(train_dir: Path, recipe) -> bool:
    """Whether the demo resumes the training run in ``train_dir``.

    An interrupted run of the same recipe resumes where it stopped. A finished run, or one of
    another recipe, is the output of an earlier demo: it is deleted and training starts over
    (``make demo`` always trains, evaluates and deploys anew).
    """
    train_dir = Path(train_dir)
    config = train_dir / "config.json"
    if not config.exists():
        return False
    finished = (train_dir / "metrics.json").exists()
    if not finished and json.loads(config.read_text()) == recipe.to_dict():
        print(f"Resuming the interrupted demo training in {train_dir}.")
        return True
    why = "finished" if finished else "of another recipe"
    print(f"Replacing the earlier demo training run ({why}) in {train_dir}.")
    shutil.rmtree(train_dir)
    return False


# Latency candidates: {name: (flatbuffer key, use_xnnpack)}. The LCE flatbuffers run with and
# without XNNPACK for their float/int8 parts; each reports the faster, as deployed.
RUNTIMES = {
    "LCE": ("lce", False),
    "LCE + XNNPACK": ("lce", True),
    "LCE int8": ("int8", False),
    "LCE int8 + XNNPACK": ("int8", True),
    "float": ("float", True),
}


def _train(out: Path, recipe, data_dir, verbose: int):
    """The trained Keras model and its run's metrics (``out/train``)."""
    from melius_larq._compat import tf

    record = train_or_load(recipe, out / "train", data_dir=data_dir, verbose=verbose)
    model = tf.keras.models.load_model(out / "train" / "model.keras", compile=False)
    return model, record["metrics"]


def _convert(model, out: Path, data_dir) -> dict[str, bytes]:
    """The LCE, LCE int8 and float TFLite flatbuffers (the LCE ones written into ``out``)."""
    from melius_larq._io import write_atomic
    from melius_larq.deploy.bench import float_tflite
    from melius_larq.deploy.convert import convert_model
    from melius_larq.deploy.int8 import convert_int8

    bufs = {"lce": convert_model(model)}
    write_atomic(bufs["lce"], out / "model.tflite")
    train_images, _ = load_fashion_mnist("train", data_dir)
    calibration = preprocess_fashion_mnist(train_images[:CALIBRATION_SAMPLES])
    bufs["int8"] = convert_int8(model, calibration)
    write_atomic(bufs["int8"], out / "model_int8.tflite")
    bufs["float"] = float_tflite(model)
    return bufs


def _verify(model, bufs: dict, data_dir, verbose: int) -> dict[str, dict]:
    """LCE and LCE int8 against Keras on every test image."""
    from melius_larq.deploy.verify import verify_flatbuffer

    images, labels = load_fashion_mnist("test", data_dir)
    x_test = preprocess_fashion_mnist(images)
    keras_out = model.predict(x_test, batch_size=256, verbose=0)
    common = {"progress": verbose > 0, "labels": labels, "reference": keras_out}
    return {"lce": verify_flatbuffer(bufs["lce"], model, x_test, **common),
            "int8": verify_flatbuffer(bufs["int8"], model, x_test, min_agreement=0.99,
                                      **common)}  # fmt: skip


def _latency(bufs: dict) -> dict:
    """Every runtime's latency and the deployed (faster) LCE configurations.

    Sub-millisecond latencies on a shared machine: the runtimes take turns over
    ``LATENCY_ROUNDS`` rounds; each latency is the median of its round medians (with their
    range), and the speed-up over float TFLite the median of the per-round ratios.
    """
    from melius_larq.deploy.bench import benchmark_alternating, ratio_over_rounds

    timings = benchmark_alternating(
        {name: (bufs[key], xnnpack) for name, (key, xnnpack) in RUNTIMES.items()},
        rounds=LATENCY_ROUNDS, runs=LATENCY_RUNS, warmup=20, num_threads=1,
    )  # fmt: skip
    median = {name: t["median_ms"] for name, t in timings.items()}
    lce = "LCE + XNNPACK" if median["LCE + XNNPACK"] < median["LCE"] else "LCE"
    lce8 = "LCE int8 + XNNPACK" if median["LCE int8 + XNNPACK"] < median["LCE int8"] else "LCE int8"
    speedup = ratio_over_rounds(timings, "float", lce)
    return {
        "median": median,
        "latency_medians_ms": {name: t["medians_ms"] for name, t in timings.items()},
        "lce_ms": median[lce],
        "lce_int8_ms": median[lce8],
        "lce_xnnpack": lce == "LCE + XNNPACK",
        "lce_int8_xnnpack": lce8 == "LCE int8 + XNNPACK",
        "float_tflite_ms": median["float"],
        "speedup_vs_float": speedup["median"],
        "speedup_vs_float_range": [speedup["min"], speedup["max"]],
    }


def _report(recipe, model, metrics: dict, bufs: dict, checks: dict, latency: dict) -> dict:
    from melius_larq.deploy.report import conversion_report

    counts = melius_larq.summary(model, print_fn=None)
    check, check8 = checks["lce"], checks["int8"]
    return {
        "model": recipe.model,
        "recipe": recipe.to_dict(),
        "val_accuracy": metrics.get("val_accuracy"),
        "test_accuracy": metrics["test_accuracy"],
        "lce_test_accuracy": check["accuracy"],
        "lce_int8_test_accuracy": check8["accuracy"],
        "lce_top1_agreement": check["top1_agreement"],
        "lce_max_abs_diff": check["max_abs_diff"],
        "lce_int8_top1_agreement": check8["top1_agreement"],
        **{k: v for k, v in latency.items() if k != "median"},
        "lce_mib": len(bufs["lce"]) / 2**20,
        "lce_int8_mib": len(bufs["int8"]) / 2**20,
        "float_tflite_mib": len(bufs["float"]) / 2**20,
        "ops_at_28": counts["ops"],
        "bops_at_28": counts["bops"],
        "flops_at_28": counts["flops"],
        "conversion": conversion_report(bufs["lce"], keras_model=model)["ops"],
    }


def _table(report: dict, median: dict) -> str:
    """The summary table printed and written to ``report.md``."""
    r, phases = report, report["phase_seconds"]
    low, high = r["speedup_vs_float_range"]
    rows = [
        ("validation top-1 (Keras; held-out training images)",
         f"{100 * r['val_accuracy']:.2f} %" if r.get("val_accuracy") else "-"),
        ("test top-1 (Keras)", f"{100 * r['test_accuracy']:.2f} %"),
        ("test top-1 (LCE)", f"{100 * r['lce_test_accuracy']:.2f} %"),
        ("test top-1 (LCE int8)", f"{100 * r['lce_int8_test_accuracy']:.2f} %"),
        ("LCE / Keras top-1 agreement (10,000 images)", f"{100 * r['lce_top1_agreement']:.3f} %"),
        ("LCE int8 / Keras top-1 agreement", f"{100 * r['lce_int8_top1_agreement']:.3f} %"),
        ("size: float TFLite / LCE / LCE int8", f"{r['float_tflite_mib']:.3f} / "
         f"{r['lce_mib']:.3f} / {r['lce_int8_mib']:.3f} MiB"),
        (f"latency, median of {LATENCY_ROUNDS} round medians: float TFLite (XNNPACK) / LCE / "
         "LCE int8", f"{r['float_tflite_ms']:.3f} / {r['lce_ms']:.3f} / {r['lce_int8_ms']:.3f} ms"),
        ("LCE latency without / with XNNPACK: float / int8",
         f"{median['LCE']:.3f} / {median['LCE + XNNPACK']:.3f} ms, "
         f"{median['LCE int8']:.3f} / {median['LCE int8 + XNNPACK']:.3f} ms"),
        ("LCE speed-up over float TFLite (median of per-round ratios, min–max)",
         f"{r['speedup_vs_float']:.2f}x ({low:.2f}–{high:.2f})"),
        ("OPS at 28x28 (BOPs/64 + FLOPs)", f"{r['ops_at_28']:.3g}"),
        ("training time", f"{r['train_seconds'] / 60:.1f} min"),
        ("time: conversions / verification / latency runs",
         f"{phases['convert']:.0f} / {phases['verify']:.0f} / {phases['benchmark']:.0f} s"),
        ("total time (training to report, without Python start-up)",
         f"{r['total_seconds'] / 60:.1f} min"),
    ]  # fmt: skip
    table = "| quantity | value |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    if r["lce_int8_top1_agreement"] < 0.99:
        table += (
            "\n\nint8 is below 99 % agreement on this network: a binary network turns int8 "
            "rounding of its float layers into flipped signs, which moves near-tie predictions "
            "(compare the int8 test top-1 instead). See docs/deployment.md, 'int8 non-binary layers'."
        )
    return table


def run_demo(out: str = "runs/demo", *, overrides=None, data_dir=None, verbose: int = 1,
             results: str | None = None) -> dict:  # fmt: skip
    """Runs the whole job and returns the summary report, written to ``out`` (and with
    ``results`` also as ``report.json``, ``report.md`` and ``deploy.png`` into that
    directory, e.g. ``docs/demo``, whose numbers the documentation quotes)."""

    out = Path(out)
    recipe = apply_overrides(get_recipe(DEMO_RECIPE), overrides or {})
    start = time.perf_counter()
    phases = {}

    def timed(name, step, *args):
        t0 = time.perf_counter()
        value = step(*args)
        phases[name] = time.perf_counter() - t0
        return value

    prepare_training_dir(out / "train", recipe)
    model, metrics = timed("train", _train, out, recipe, data_dir, verbose)
    print("\n== LCE conversion and verification on the 10,000 test images ==")
    bufs = timed("convert", _convert, model, out, data_dir)
    checks = timed("verify", _verify, model, bufs, data_dir, verbose)
    print("\n== latency (1 thread) ==")
    latency = timed("benchmark", _latency, bufs)
    report = _report(recipe, model, metrics, bufs, checks, latency)
    report.update(train_seconds=round(phases["train"], 1),
                  phase_seconds={k: round(v, 1) for k, v in phases.items()},
                  total_seconds=round(time.perf_counter() - start, 1))  # fmt: skip
    table = _table(report, latency["median"])
    print("\n" + table)
    for directory in (out, *([Path(results)] if results else [])):
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic((table + "\n").encode(), directory / "report.md")
        write_atomic((json.dumps(report, indent=2) + "\n").encode(), directory / "report.json")
        _plot_bars(report, directory / "deploy.png")
    return report
