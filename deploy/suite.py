"""``make bench``: one reproducible benchmark run, compared in one process.

Measures, at 224x224 with the LCE interpreter (indirect BGEMM, the fastest correct kernel on
x86) and medians of ``runs`` timed runs after warm-up, at 1 and 2 threads:

* melius_larq MeliusNet22, 29, A, B, C and BinaryDenseNet28 (``preset="lce"``);
* larq_zoo's MeliusNet22 and QuickNet (the peers; random weights, same architecture);
* float MobileNet-v1 1.0 in TensorFlow's TFLite interpreter (XNNPACK);

plus flatbuffer sizes against the floor (1-bit binary + 8-bit other weights, and the
authors' 1-bit + 32-bit accounting), LCE conversion times, ratios against larq_zoo MeliusNet22
and MobileNet-v1, where the LCE time of melius_larq MeliusNet22 goes (per part, with the
binary-MAC rate of an isolated binary convolution), a head-to-head of MeliusNet22 as
melius_larq deploys it (with and without XNNPACK) against larq_zoo's MeliusNet22 as LCE's own
converter builds it, timed in alternating rounds, and training throughput (batch 16, 224x224)
of melius_larq and larq_zoo MeliusNet22 in float32, mixed bfloat16 and with XLA. Writes
``bench.json``, ``bench.md`` and ``bench.png``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

import melius_larq
from melius_larq._compat import tf
from melius_larq._io import save_figure
from melius_larq._optional import pyplot
from melius_larq.deploy.bench import (
    benchmark_alternating,
    benchmark_lce,
    benchmark_tflite_float,
    float_tflite,
    machine_info,
)
from melius_larq.deploy.convert import convert_model, write_atomic

__all__ = ["run_suite"]

OURS = ("MeliusNet22", "MeliusNet29", "MeliusNetA", "MeliusNetB", "MeliusNetC", "BinaryDenseNet28")
SHAPE = (224, 224, 3)


def _peers():
    try:
        import larq_zoo as lqz
    except ImportError:
        return {}
    return {
        "larq_zoo MeliusNet22": lambda: lqz.literature.MeliusNet22(weights=None, input_shape=SHAPE),
        "larq_zoo QuickNet": lambda: lqz.sota.QuickNet(weights=None, input_shape=SHAPE),
    }


# (label, builder key, precision, jit_compile) of the training-throughput rows
TRAINING = (
    ("melius_larq MeliusNet22", "melius_larq MeliusNet22", "float32", False),
    ("melius_larq MeliusNet22", "melius_larq MeliusNet22", "mixed_bfloat16", False),
    ("melius_larq MeliusNet22", "melius_larq MeliusNet22", "float32", True),
    ("larq_zoo MeliusNet22", "larq_zoo MeliusNet22", "float32", False),
    ("larq_zoo MeliusNet22", "larq_zoo MeliusNet22", "mixed_bfloat16", False),
)


def randomize_batchnorm(model: tf.keras.Model, seed: int = 0) -> tf.keras.Model:
    """Gives every BatchNorm statistics like a trained network's (positive scales, non-zero
    shifts), in place. Freshly initialised BatchNorms (mean 0, variance 1, beta 0) let the
    converter drop their additions, which a trained network does not allow; every model of
    the suite gets the same treatment."""
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            values = {"gamma": rng.uniform(0.5, 1.5, n), "beta": rng.normal(0, 0.3, n),
                      "moving_mean": rng.normal(0, 0.3, n),
                      "moving_variance": rng.uniform(0.5, 2.0, n)}  # fmt: skip
            for w in layer.weights:
                w.assign(values[w.name.split("/")[-1].split(":")[0]])
    return model


def run_suite(
    out: str | Path,
    *,
    threads=(1, 2),
    runs: int = 20,
    warmup: int = 3,
    training: bool = True,
    breakdown: bool = True,
    train_steps: int = 5,
    head_to_head: bool = True,
    rounds: int = 5,
) -> dict:
    """Runs the suite and writes its JSON, Markdown and PNG into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, sizes = [], []
    builders = {f"melius_larq {n}": (lambda n=n: melius_larq.create_model(n, input_shape=SHAPE))
                for n in OURS}  # fmt: skip
    builders.update(_peers())
    for name, build in builders.items():
        model = randomize_batchnorm(build())
        start = time.perf_counter()
        buf = convert_model(model)
        convert_s = time.perf_counter() - start
        write_atomic(buf, out / (name.replace(" ", "_") + ".tflite"))
        if name == "melius_larq MeliusNet22":  # the effect of folding the pre-sign BatchNorms
            unfolded = convert_model(model, fold_batchnorm=False)
            for n, stats in benchmark_lce(unfolded, threads=threads, runs=runs, warmup=warmup,
                                          progress=name + " unfolded").items():  # fmt: skip
                rows.append({"model": name + " (BatchNorm not folded)",
                             "runtime": "LCE (indirect BGEMM)", "threads": n, **stats})  # fmt: skip
        floor = floor8 = int8_mib = None
        if name.startswith("melius_larq"):
            counts = melius_larq.summary(model, print_fn=None)
            floor = counts["size_mib"]
            fp = counts["total_params"] - counts["binary_params"]
            floor8 = (fp + counts["binary_params"] / 8) / 2**20
        if name == "melius_larq MeliusNet22":
            # size only: random weights, calibrated on random inputs
            from melius_larq.deploy.int8 import convert_int8

            calib = np.random.RandomState(0).uniform(-2, 2, (16, *SHAPE)).astype(np.float32)
            buf8 = convert_int8(model, calib)
            write_atomic(buf8, out / "melius_larq_MeliusNet22_int8.tflite")
            int8_mib = len(buf8) / 2**20
        sizes.append({"model": name, "tflite_mib": len(buf) / 2**20, "int8_tflite_mib": int8_mib,
                      "floor_mib": floor, "floor8_mib": floor8, "convert_s": convert_s})  # fmt: skip
        for n, stats in benchmark_lce(buf, threads=threads, runs=runs, warmup=warmup,
                                      progress=name).items():  # fmt: skip
            rows.append({"model": name, "runtime": "LCE (indirect BGEMM)", "threads": n, **stats})
        del model
        tf.keras.backend.clear_session()
    mobilenet = tf.keras.applications.MobileNet(weights=None, input_shape=SHAPE)
    for n, stats in benchmark_tflite_float(float_tflite(mobilenet), threads=threads, runs=runs,
                                           warmup=warmup, progress="MobileNet").items():  # fmt: skip
        rows.append(
            {
                "model": "MobileNet-v1 1.0 (float)",
                "runtime": "TFLite XNNPACK",
                "threads": n,
                **stats,
            }
        )
    result = {"machine": machine_info(), "runs": runs, "rows": rows, "sizes": sizes}
    if head_to_head and "larq_zoo MeliusNet22" in builders:
        result["head_to_head"] = run_head_to_head(out, builders, rounds=rounds, runs=runs,
                                                  warmup=warmup)  # fmt: skip
    if breakdown:
        from melius_larq.deploy.breakdown import binary_conv_rate, latency_breakdown

        model = randomize_batchnorm(builders["melius_larq MeliusNet22"]())
        result["breakdown"] = latency_breakdown(model, runs=runs, warmup=warmup)
        result["breakdown_unfolded"] = latency_breakdown(model, runs=runs, warmup=warmup,
                                                         fold_batchnorm=False)  # fmt: skip
        result["binary_conv_rate"] = binary_conv_rate(runs=max(runs, 50))
        del model
        tf.keras.backend.clear_session()
    if training:
        from melius_larq.deploy.train_bench import training_throughput

        result["training"] = []
        for label, key, precision, jit in TRAINING:
            if key not in builders:
                continue
            print(f"training throughput: {label}, {precision}{', XLA' if jit else ''}", flush=True)
            stats = training_throughput(builders[key], precision=precision, jit_compile=jit,
                                        steps=train_steps)  # fmt: skip
            result["training"].append({"model": label, **stats})
    write_atomic((json.dumps(result, indent=2) + "\n").encode(), out / "bench.json")
    md = format_suite(result)
    write_atomic((md + "\n").encode(), out / "bench.md")
    _plot(result, out / "bench.png")
    print(md)
    return result


def run_head_to_head(out: Path, builders: dict, *, rounds: int, runs: int, warmup: int) -> dict:
    """MeliusNet22 as melius_larq deploys it against larq_zoo's MeliusNet22 as LCE converts it.

    Both models get the same trained-like BatchNorm statistics (``randomize_batchnorm``, seed
    0). Ours: :func:`convert_model`, run with and without XNNPACK for the float layers, and
    :func:`~melius_larq.deploy.int8.convert_int8` (int8 non-binary layers) with XNNPACK;
    larq_zoo's: ``larq_compute_engine.convert_keras_model`` with its defaults, run without
    XNNPACK (LCE's default). All with indirect BGEMM, one thread, timed in alternating rounds.
    """
    from larq_compute_engine import convert_keras_model

    from melius_larq.deploy.int8 import convert_int8

    model = randomize_batchnorm(builders["melius_larq MeliusNet22"]())
    ours = convert_model(model)
    # int8 non-binary layers: latency only (random weights, calibrated on random inputs)
    shape = model.input_shape[1:]
    calib = np.random.RandomState(0).uniform(-2, 2, (16, *shape)).astype(np.float32)
    ours8 = convert_int8(model, calib)
    del model
    print("converting larq_zoo MeliusNet22 with LCE's convert_keras_model", flush=True)
    peer = convert_keras_model(randomize_batchnorm(builders["larq_zoo MeliusNet22"]()))
    write_atomic(peer, out / "larq_zoo_MeliusNet22_lce_default.tflite")
    tf.keras.backend.clear_session()
    timed = benchmark_alternating(
        {
            "melius_larq MeliusNet22 (XNNPACK)": (ours, True),
            "melius_larq MeliusNet22": (ours, False),
            "melius_larq MeliusNet22 int8 (XNNPACK)": (ours8, True),
            "larq_zoo MeliusNet22 (LCE converter, default runtime)": (peer, False),
        },
        rounds=rounds, runs=runs, warmup=warmup, progress=True,
    )  # fmt: skip
    base = timed["larq_zoo MeliusNet22 (LCE converter, default runtime)"]["best_median_ms"]
    for stats in timed.values():
        stats["x_larq_zoo"] = stats["best_median_ms"] / base
    return {"rounds": rounds, "runs": runs, "threads": 1, "models": timed}


def format_suite(result: dict) -> str:
    ref = {
        r["threads"]: r["median_ms"] for r in result["rows"] if r["model"] == "larq_zoo MeliusNet22"
    }
    mob = {
        r["threads"]: r["median_ms"] for r in result["rows"] if r["model"].startswith("MobileNet")
    }
    m = result["machine"]
    lines = [
        f"Machine: {m['cpu']} ({m['cores']} cores, {m['machine']}), TensorFlow {m['tensorflow']}; "
        f"medians of {result['runs']} runs at 224x224, batch 1.",
        "",
        "| model | runtime | threads | median ms | p90 ms | x larq_zoo MeliusNet22 | x MobileNet-v1 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        t = r["threads"]
        rz = f"{r['median_ms'] / ref[t]:.2f}" if t in ref else "–"
        rm = f"{r['median_ms'] / mob[t]:.2f}" if t in mob else "–"
        lines.append(f"| {r['model']} | {r['runtime']} | {t} | {r['median_ms']:.1f} | "
                     f"{r['p90_ms']:.1f} | {rz} | {rm} |")  # fmt: skip
    lines += ["", "| model | flatbuffer MiB | int8 flatbuffer MiB | floor MiB (1-bit binary + 8-bit rest) "
              "| paper size MiB (1-bit + 32-bit) | conversion s |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip

    def fmt(v):
        return f"{v:.2f}" if v else "–"

    for s in result["sizes"]:
        lines.append(f"| {s['model']} | {s['tflite_mib']:.2f} | {fmt(s['int8_tflite_mib'])} | "
                     f"{fmt(s['floor8_mib'])} | {fmt(s['floor_mib'])} | {s['convert_s']:.1f} |")  # fmt: skip
    if "head_to_head" in result:
        h = result["head_to_head"]
        lines += ["", f"Head to head, 1 thread, {h['rounds']} alternating rounds of {h['runs']} "
                  "runs (best median), same trained-like BatchNorm statistics:", "",
                  "| model | XNNPACK | best median ms | round medians ms | x larq_zoo |",
                  "| --- | --- | ---: | --- | ---: |"]  # fmt: skip
        for name, t in h["models"].items():
            rounds = ", ".join(f"{m:.1f}" for m in t["medians_ms"])
            lines.append(f"| {name} | {'on' if t['use_xnnpack'] else 'off'} | "
                         f"{t['best_median_ms']:.1f} | {rounds} | {t['x_larq_zoo']:.2f} |")  # fmt: skip
    if "breakdown" in result:
        from melius_larq.deploy.breakdown import format_breakdown

        lines += ["", format_breakdown(result["breakdown"], result.get("binary_conv_rate"))]
    if "breakdown_unfolded" in result:
        lines += ["", "Without folding the pre-sign BatchNorms:", "",
                  format_breakdown(result["breakdown_unfolded"])]  # fmt: skip
    if result.get("training"):
        base = next((t["images_per_s"] for t in result["training"]
                     if t["model"] == "larq_zoo MeliusNet22" and t["precision"] == "float32"
                     and not t["jit_compile"]), None)  # fmt: skip
        lines += ["", "Training throughput (CPU, batch 16, 224x224, RAdam, synthetic batch):", "",
                  "| model | precision | XLA | images/s | step ms | x larq_zoo float32 |",
                  "| --- | --- | --- | ---: | ---: | ---: |"]  # fmt: skip
        for t in result["training"]:
            ratio = f"{t['images_per_s'] / base:.2f}" if base else "–"
            lines.append(f"| {t['model']} | {t['precision']} | {'yes' if t['jit_compile'] else 'no'} "
                         f"| {t['images_per_s']:.2f} | {t['step_ms']:.0f} | {ratio} |")  # fmt: skip
    return "\n".join(lines)


def _plot(result: dict, path: Path) -> None:
    plt = pyplot("The benchmark suite's plot")

    one = [r for r in result["rows"] if r["threads"] == 1]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.barh([r["model"] for r in one], [r["median_ms"] for r in one], color="#3b7dd8")
    ax.set_xlabel("median latency, 1 thread (ms)")
    ax.invert_yaxis()
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_results")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--train-steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--no-training", action="store_true", help="skip training throughput")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the per-part breakdown")
    parser.add_argument("--rounds", type=int, default=5, help="alternating head-to-head rounds")
    parser.add_argument("--no-head-to-head", action="store_true",
                        help="skip the alternating MeliusNet22 comparison")  # fmt: skip
    parser.add_argument("--head-to-head-only", action="store_true",
                        help="run only the alternating MeliusNet22 comparison")  # fmt: skip
    args = parser.parse_args()
    if args.head_to_head_only:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        builders = {"melius_larq MeliusNet22": lambda: melius_larq.MeliusNet22(input_shape=SHAPE),
                    **_peers()}  # fmt: skip
        if "larq_zoo MeliusNet22" not in builders:
            raise SystemExit("error: the head-to-head needs larq_zoo (pip install larq-zoo).")
        h2h = run_head_to_head(out, builders, rounds=args.rounds, runs=args.runs, warmup=3)
        result = {"machine": machine_info(), "runs": args.runs, "rows": [], "sizes": [],
                  "head_to_head": h2h}  # fmt: skip
        write_atomic((json.dumps(result, indent=2) + "\n").encode(), out / "head_to_head.json")
        print(format_suite(result))
        raise SystemExit(0)
    run_suite(args.out, runs=args.runs, training=not args.no_training,
              breakdown=not args.no_breakdown, train_steps=args.train_steps,
              head_to_head=not args.no_head_to_head, rounds=args.rounds)  # fmt: skip
