"""``make bench``: one reproducible benchmark run, every comparison in one process.

At 224x224, batch 1, with random weights and trained-like BatchNorm statistics (the same for
every model), the suite

* converts melius_larq MeliusNet22, 29, A, B, C and BinaryDenseNet28 (``convert_model``,
  ``preset="lce"``), MeliusNet22 also without the BatchNorm fold and with int8 non-binary
  layers (``convert_int8``), larq_zoo's MeliusNet22 and QuickNet with LCE's own
  ``convert_keras_model`` (as larq_zoo users deploy them) and the float MobileNet-v1 1.0;
* times all of them in alternating rounds (:func:`~melius_larq.deploy.bench.benchmark_alternating`,
  LCE interpreter with indirect BGEMM) at 1 and 2 threads, and reports each latency as the
  median of its round medians with their range, and each ratio round by round
  (:func:`~melius_larq.deploy.bench.ratio_over_rounds`): against larq_zoo MeliusNet22 run
  with the same runtime flags, and against MobileNet-v1 with XNNPACK. The like-for-like rows
  run without XNNPACK (LCE's default); the deployed configurations (XNNPACK for the float
  layers; int8 non-binary layers) are further rows, each against larq_zoo with XNNPACK;
* records flatbuffer sizes against the size floors and conversion times, where the LCE time
  of MeliusNet22 goes (per part, with the rate of an isolated binary convolution), and the
  training throughput (batch 16) of both MeliusNet22s in float32, mixed bfloat16 and XLA,
  the configurations again taking turns.

It writes ``bench.json``, ``bench.md`` (every table of ``docs/benchmarks.md``) and
``bench.png`` into ``out`` and the flatbuffers into ``flatbuffers``. ``--head-to-head-only``
runs the MeliusNet22 rows alone at 1 thread and adds a numbered run to ``out``
(``head_to_head_<n>.json``); ``head_to_head.md`` then summarizes every stored run, with the
range of each ratio over the runs.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np

import melius_larq
from melius_larq._compat import tf
from melius_larq._io import save_figure
from melius_larq._optional import pyplot
from melius_larq.deploy.bench import (
    benchmark_alternating,
    float_tflite,
    machine_info,
    ratio_over_rounds,
)
from melius_larq.deploy.convert import convert_model, write_atomic

__all__ = [
    "format_head_to_head_runs",
    "format_suite",
    "randomize_batchnorm",
    "run_head_to_head",
    "run_suite",
    "summarize_head_to_head",
    "update_page",
]

OURS = ("MeliusNet22", "MeliusNet29", "MeliusNetA", "MeliusNetB", "MeliusNetC", "BinaryDenseNet28")
SHAPE = (224, 224, 3)
MELIUSNET22 = "melius_larq MeliusNet22"
PEER = "larq_zoo MeliusNet22"
MOBILENET = "MobileNet-v1 1.0 (float)"
UNFOLDED = "melius_larq MeliusNet22, BatchNorm not folded"
INT8 = "melius_larq MeliusNet22, int8 non-binary layers"
XNNPACK = " + XNNPACK"


def _peers():
    try:
        import larq_zoo as lqz
    except ImportError:
        return {}
    return {
        PEER: lambda: lqz.literature.MeliusNet22(weights=None, input_shape=SHAPE),
        "larq_zoo QuickNet": lambda: lqz.sota.QuickNet(weights=None, input_shape=SHAPE),
    }


# (label, builder key, precision, jit_compile) of the training-throughput rows
TRAINING = (
    (MELIUSNET22, MELIUSNET22, "float32", False),
    (MELIUSNET22, MELIUSNET22, "mixed_bfloat16", False),
    (MELIUSNET22, MELIUSNET22, "float32", True),
    (PEER, PEER, "float32", False),
    (PEER, PEER, "mixed_bfloat16", False),
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


def _builders(models=OURS) -> dict:
    """``{label: builder}``: ours, the larq_zoo peers (when installed), MobileNet-v1."""
    ours = {f"melius_larq {n}": (lambda n=n: melius_larq.create_model(n, input_shape=SHAPE))
            for n in models}  # fmt: skip
    mobilenet = {MOBILENET: lambda: tf.keras.applications.MobileNet(weights=None,
                                                                    input_shape=SHAPE)}  # fmt: skip
    return {**ours, **_peers(), **mobilenet}


def _sizes(name: str, model, buf: bytes, convert_s: float, buf8: bytes | None) -> dict:
    row = {"model": name, "tflite_mib": len(buf) / 2**20, "convert_s": convert_s,
           "int8_tflite_mib": len(buf8) / 2**20 if buf8 else None,
           "floor_mib": None, "floor8_mib": None}  # fmt: skip
    if name.startswith("melius_larq"):
        counts = melius_larq.summary(model, print_fn=None)
        row["floor_mib"] = counts["size_mib"]
        floats = counts["total_params"] - counts["binary_params"]
        row["floor8_mib"] = (floats + counts["binary_params"] / 8) / 2**20
    return row


def _int8(model) -> bytes:
    """MeliusNet22 with int8 non-binary layers: latency and size only (random weights,
    calibrated on random inputs)."""
    from melius_larq.deploy.int8 import convert_int8

    shape = model.input_shape[1:]
    calib = np.random.RandomState(0).uniform(-2, 2, (16, *shape)).astype(np.float32)
    return convert_int8(model, calib)


def convert_all(builders: dict, flatbuffers: Path, *, head_to_head_only: bool = False):
    """Converts every model of the suite once: ours with :func:`convert_model` (MeliusNet22
    also unfolded and int8), larq_zoo's with LCE's ``convert_keras_model``, MobileNet-v1 to a
    float TFLite flatbuffer; each written to ``flatbuffers``.

    Returns:
        ``(candidates, sizes)``: ``{label: (flatbuffer, use_xnnpack)}`` in table order, and
        the size rows.
    """
    from larq_compute_engine import convert_keras_model

    flatbuffers.mkdir(parents=True, exist_ok=True)
    candidates, sizes = {}, []
    for name, build in builders.items():
        if head_to_head_only and name not in (MELIUSNET22, PEER):
            continue
        print(f"converting {name}", flush=True)
        model = randomize_batchnorm(build())
        start = time.perf_counter()
        if name == MOBILENET:
            buf = float_tflite(model)
        elif name.startswith("larq_zoo"):
            buf = convert_keras_model(model)
        else:
            buf = convert_model(model)
        convert_s = time.perf_counter() - start
        write_atomic(buf, flatbuffers / (name.replace(" ", "_") + ".tflite"))
        buf8 = None
        if name == MOBILENET:
            candidates[name + XNNPACK] = (buf, True)  # float TFLite runs with XNNPACK
        else:
            candidates[name] = (buf, False)
        if name in (MELIUSNET22, PEER):
            candidates[name + XNNPACK] = (buf, True)
        if name == MELIUSNET22:
            buf8 = _int8(model)
            write_atomic(buf8, flatbuffers / "melius_larq_MeliusNet22_int8.tflite")
            candidates[INT8 + XNNPACK] = (buf8, True)
            if not head_to_head_only:
                candidates[UNFOLDED] = (convert_model(model, fold_batchnorm=False), False)
        sizes.append(_sizes(name, model, buf, convert_s, buf8))
        del model
        tf.keras.backend.clear_session()
    return candidates, sizes


def latency_rows(candidates: dict, *, threads: int, rounds: int, runs: int, warmup: int):
    """Times every candidate in alternating rounds at ``threads`` threads; each row has the
    median and range of its round medians and its ratios, round by round, to larq_zoo
    MeliusNet22 with the same XNNPACK setting and to MobileNet-v1 (when they ran)."""
    timed = benchmark_alternating(candidates, rounds=rounds, runs=runs, warmup=warmup,
                                  num_threads=threads, progress=True)  # fmt: skip
    rows = []
    for name, t in timed.items():
        reference = PEER + XNNPACK if t["use_xnnpack"] else PEER
        row = {"model": name, "threads": threads, **t}
        if reference in timed:
            row["x_larq_zoo"] = ratio_over_rounds(timed, name, reference)
        if MOBILENET + XNNPACK in timed:
            row["x_mobilenet"] = ratio_over_rounds(timed, name, MOBILENET + XNNPACK)
        rows.append(row)
    return rows


def run_suite(
    out: str | Path,
    *,
    flatbuffers: str | Path | None = None,
    threads=(1, 2),
    runs: int = 20,
    warmup: int = 3,
    rounds: int = 5,
    training: bool = True,
    breakdown: bool = True,
    train_steps: int = 5,
    training_rounds: int = 3,
    builders: dict | None = None,
    page: str | Path | None = None,
) -> dict:
    """Runs the suite and writes ``bench.json``, ``bench.md`` and ``bench.png`` into ``out``
    and the flatbuffers into ``flatbuffers`` (default ``out/flatbuffers``).

    ``builders`` (``{label: build function}``, default: the registry models, the larq_zoo
    peers and MobileNet-v1 at 224x224) replaces the models, e.g. by small ones in tests.
    ``page`` (e.g. ``docs/benchmarks.md``) receives ``bench.md`` between its
    ``<!-- begin bench.md -->`` and ``<!-- end bench.md -->`` lines.

    Raises:
        ValueError: without larq_zoo, the peer of every ratio.
    """
    if page is not None:
        _page_with_markers(page, "bench.md")  # before anything runs
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    builders = builders or _builders()
    if PEER not in builders:
        raise ValueError("The suite compares against larq_zoo: pip install larq-zoo==2.4.0.")
    candidates, sizes = convert_all(builders, Path(flatbuffers or out / "flatbuffers"))
    rows = []
    for n in threads:
        rows += latency_rows(candidates, threads=n, rounds=rounds, runs=runs, warmup=warmup)
    result = {"machine": machine_info(), "rounds": rounds, "runs": runs, "warmup": warmup,
              "rows": rows, "sizes": sizes}  # fmt: skip
    if breakdown:
        from melius_larq.deploy.breakdown import binary_conv_rate, latency_breakdown

        model = randomize_batchnorm(builders[MELIUSNET22]())
        result["breakdown"] = latency_breakdown(model, runs=runs, warmup=warmup)
        result["breakdown_unfolded"] = latency_breakdown(model, runs=runs, warmup=warmup,
                                                         fold_batchnorm=False)  # fmt: skip
        result["binary_conv_rate"] = binary_conv_rate(runs=max(runs, 50))
        del model
        tf.keras.backend.clear_session()
    if training:
        result["training"] = training_rows(builders, rounds=training_rounds, steps=train_steps)
    _write(out, "bench", result, format_suite(result))
    if page is not None:
        update_page(page, "bench.md", format_suite(result))
    _plot(result, out / "bench.png")
    print(format_suite(result))
    return result


def training_rows(builders: dict, *, rounds: int, steps: int, **kwargs) -> list[dict]:
    """The training throughput of :data:`TRAINING`'s configurations, taking turns over
    ``rounds`` rounds; each row's ``x_larq_zoo`` is the per-round ratio to larq_zoo
    MeliusNet22 in float32 without XLA (median, min, max)."""
    from melius_larq.deploy.train_bench import training_throughput_alternating

    def key(label, precision, jit):
        return f"{label}, {precision}{', XLA' if jit else ''}"

    configs = {key(label, precision, jit): (builders[build], precision, jit)
               for label, build, precision, jit in TRAINING}  # fmt: skip
    print(f"training throughput: {len(configs)} configurations, {rounds} rounds", flush=True)
    timed = training_throughput_alternating(configs, rounds=rounds, steps=steps, **kwargs)
    base = timed[key(PEER, "float32", False)]["per_round"]
    rows = []
    for label, _, precision, jit in TRAINING:
        t = timed[key(label, precision, jit)]
        ratios = [a / b for a, b in zip(t["per_round"], base, strict=True)]
        rows.append({"model": label, **t, "x_larq_zoo": {
            "median": float(np.median(ratios)), "min": min(ratios), "max": max(ratios)}})  # fmt: skip
    return rows


def _page_with_markers(page: str | Path, name: str) -> str:
    """The text of ``page``, checked to hold the markers of ``name`` once each."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    try:
        content = Path(page).read_text()
    except OSError as err:
        raise ValueError(f"Cannot read the page {str(page)!r}: {err.strerror}.") from err
    if (
        content.count(begin) != 1
        or content.count(end) != 1
        or content.find(end) < content.find(begin)
    ):
        raise ValueError(f"{str(page)!r} needs one {begin!r} line and, after it, one {end!r} line.")
    return content


def update_page(page: str | Path, name: str, text: str) -> None:
    """Replaces the part of a Markdown page between ``<!-- begin NAME -->`` and
    ``<!-- end NAME -->`` by ``text`` (atomically).

    Raises:
        ValueError: when the page lacks either marker.
    """
    content = _page_with_markers(page, name)
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    head, rest = content.split(begin)
    write_atomic(f"{head}{begin}\n{text}\n{end}{rest.split(end)[1]}".encode(), page)


def _write(out: Path, stem: str, result: dict, md: str) -> None:
    write_atomic((json.dumps(result, indent=2) + "\n").encode(), out / f"{stem}.json")
    write_atomic((md + "\n").encode(), out / f"{stem}.md")


def run_head_to_head(
    out: str | Path,
    *,
    flatbuffers: str | Path | None = None,
    rounds: int = 5,
    runs: int = 20,
    warmup: int = 3,
    builders: dict | None = None,
    page: str | Path | None = None,
) -> dict:
    """MeliusNet22 as melius_larq deploys it against larq_zoo's MeliusNet22 as LCE's own
    converter builds it, 1 thread, in alternating rounds; stored as the next
    ``head_to_head_<n>.json`` in ``out``, and ``head_to_head.md`` rewritten over all runs
    (also into ``page`` between its ``head_to_head.md`` markers, see :func:`update_page`)."""
    if page is not None:
        _page_with_markers(page, "head_to_head.md")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    builders = builders or _builders(("MeliusNet22",))
    if PEER not in builders:
        raise ValueError("The head-to-head needs larq_zoo: pip install larq-zoo==2.4.0.")
    candidates, sizes = convert_all(builders, Path(flatbuffers or out / "flatbuffers"),
                                    head_to_head_only=True)  # fmt: skip
    rows = latency_rows(candidates, threads=1, rounds=rounds, runs=runs, warmup=warmup)
    result = {"machine": machine_info(), "rounds": rounds, "runs": runs, "warmup": warmup,
              "rows": rows, "sizes": sizes}  # fmt: skip
    taken = [int(m.group(1)) for p in out.glob("head_to_head_*.json")
             if (m := re.fullmatch(r"head_to_head_(\d+)\.json", p.name))]  # fmt: skip
    stem = f"head_to_head_{max(taken, default=0) + 1}"
    _write(out, stem, result, format_suite(result))
    summary = summarize_head_to_head(out)
    write_atomic((format_head_to_head_runs(summary) + "\n").encode(), out / "head_to_head.md")
    if page is not None:
        update_page(page, "head_to_head.md", format_head_to_head_runs(summary))
    print(format_suite(result))
    return result


def summarize_head_to_head(directory: str | Path) -> dict:
    """Every stored ``head_to_head_<n>.json`` of ``directory``: per row, the median ratio to
    larq_zoo of each run and their range over the runs.

    Returns:
        ``{"runs": [file names], "rows": {label: {"medians": [...], "min", "max"}}}``.

    Raises:
        ValueError: when the directory holds no run.
    """
    paths = sorted(Path(directory).glob("head_to_head_*.json"),
                   key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))  # fmt: skip
    if not paths:
        raise ValueError(f"{str(directory)!r} holds no head_to_head_<n>.json run.")
    rows: dict[str, dict] = {}
    for path in paths:
        for row in json.loads(path.read_text())["rows"]:
            if "x_larq_zoo" in row:
                rows.setdefault(row["model"], {"medians": []})["medians"].append(
                    row["x_larq_zoo"]["median"]
                )
    for row in rows.values():
        row["min"], row["max"] = min(row["medians"]), max(row["medians"])
    return {"runs": [p.name for p in paths], "rows": rows}


def format_head_to_head_runs(summary: dict) -> str:
    """The Markdown table of :func:`summarize_head_to_head`."""
    runs = summary["runs"]
    lines = [
        f"MeliusNet22 against larq_zoo's, 1 thread: the median over rounds of each run's "
        f"latency ratio, for {len(runs)} runs of the command ({', '.join(runs)}).",
        "",
        "| model | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " | range |",
        "| --- |" + " ---: |" * (len(runs) + 1),
    ]
    for name, row in summary["rows"].items():
        cells = " | ".join(f"{m:.2f}" for m in row["medians"])
        lines.append(f"| {name} | {cells} | {row['min']:.2f}–{row['max']:.2f} |")
    return "\n".join(lines)


def _spread(value: float, low: float, high: float, digits: int) -> str:
    return f"{value:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def _ratio(row: dict, key: str) -> str:
    r = row.get(key)
    return _spread(r["median"], r["min"], r["max"], 2) if r else "–"


def format_suite(result: dict) -> str:
    """Every table of a suite (or head-to-head) result as Markdown."""
    m = result["machine"]
    lines = [
        f"Machine: {m['cpu']} ({m['cores']} cores, {m['machine']}), TensorFlow "
        f"{m['tensorflow']}; 224x224, batch 1; LCE interpreter with indirect BGEMM. Each model "
        f"ran {result['runs']} times per round, in turn with the others, for {result['rounds']} "
        "rounds: latency is the median of its round medians (min–max over rounds), a ratio "
        "the median of the per-round ratios (min–max). x larq_zoo compares with larq_zoo "
        "MeliusNet22 under the same XNNPACK setting.",
        "",
        "| model | XNNPACK | threads | median ms (min–max) | x larq_zoo MeliusNet22 "
        "| x MobileNet-v1 |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        name = r["model"].removesuffix(XNNPACK)
        latency = _spread(r["median_ms"], r["min_ms"], r["max_ms"], 1)
        lines.append(f"| {name} | {'on' if r['use_xnnpack'] else 'off'} | {r['threads']} | "
                     f"{latency} | {_ratio(r, 'x_larq_zoo')} | {_ratio(r, 'x_mobilenet')} |")  # fmt: skip
    lines += ["", "| model | flatbuffer MiB | int8 flatbuffer MiB | floor MiB (1-bit binary + "
              "8-bit rest) | paper size MiB (1-bit + 32-bit) | conversion s |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip

    def fmt(v):
        return f"{v:.3f}" if v else "–"

    for s in result["sizes"]:
        lines.append(f"| {s['model']} | {s['tflite_mib']:.3f} | {fmt(s['int8_tflite_mib'])} | "
                     f"{fmt(s['floor8_mib'])} | {fmt(s['floor_mib'])} | {s['convert_s']:.1f} |")  # fmt: skip
    if "breakdown" in result:
        from melius_larq.deploy.breakdown import format_breakdown

        lines += ["", format_breakdown(result["breakdown"], result.get("binary_conv_rate"))]
    if "breakdown_unfolded" in result:
        lines += ["", "Without folding the pre-sign BatchNorms:", "",
                  format_breakdown(result["breakdown_unfolded"])]  # fmt: skip
    if result.get("training"):
        t0 = result["training"][0]
        lines += ["", f"Training throughput (CPU, batch {t0['batch_size']}, 224x224, RAdam, "
                  f"synthetic batch): the configurations took turns, {t0['steps']} steps each "
                  f"per round for {len(t0['per_round'])} rounds; images/s is the median over "
                  "rounds (min–max), the ratio the median of the per-round ratios (min–max).",
                  "", "| model | precision | XLA | images/s (min–max) | x larq_zoo float32 |",
                  "| --- | --- | --- | ---: | ---: |"]  # fmt: skip
        for t in result["training"]:
            rate = _spread(t["images_per_s"], t["min"], t["max"], 2)
            lines.append(f"| {t['model']} | {t['precision']} | {'yes' if t['jit_compile'] else 'no'} "
                         f"| {rate} | {_ratio(t, 'x_larq_zoo')} |")  # fmt: skip
    return "\n".join(lines)


def _plot(result: dict, path: Path) -> None:
    plt = pyplot("The benchmark suite's plot")

    one = [r for r in result["rows"] if r["threads"] == 1]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    medians = [r["median_ms"] for r in one]
    spread = [[m - r["min_ms"] for m, r in zip(medians, one)],
              [r["max_ms"] - m for m, r in zip(medians, one)]]  # fmt: skip
    labels = [r["model"].replace(XNNPACK, " (XNNPACK)") for r in one]
    ax.barh(labels, medians, xerr=spread, color="#3b7dd8", ecolor="#333333", capsize=3)
    ax.set_xlabel("latency, 1 thread (ms): median of round medians, bars min–max")
    ax.invert_yaxis()
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m melius_larq.deploy.suite",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--out", default="bench_results", help="results directory")
    parser.add_argument("--flatbuffers", help="flatbuffer directory (default OUT/flatbuffers)")
    parser.add_argument("--page", help="a Markdown page whose bench.md (or head_to_head.md) "
                        "section, between its begin/end markers, receives the tables")  # fmt: skip
    parser.add_argument("--runs", type=int, default=20, help="timed runs per model and round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--train-steps", type=int, default=5,
                        help="timed training steps per configuration and round")  # fmt: skip
    parser.add_argument("--train-rounds", type=int, default=3, help="training rounds")
    parser.add_argument("--no-training", action="store_true", help="skip training throughput")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the per-part breakdown")
    parser.add_argument("--head-to-head-only", action="store_true",
                        help="only MeliusNet22 against larq_zoo's, 1 thread, as a numbered run")  # fmt: skip
    args = parser.parse_args(argv)
    for key in ("runs", "rounds", "train_steps", "train_rounds"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    try:
        if args.head_to_head_only:
            run_head_to_head(args.out, flatbuffers=args.flatbuffers, rounds=args.rounds,
                             runs=args.runs, page=args.page)  # fmt: skip
        else:
            run_suite(args.out, flatbuffers=args.flatbuffers, runs=args.runs, rounds=args.rounds,
                      training=not args.no_training, breakdown=not args.no_breakdown,
                      train_steps=args.train_steps, training_rounds=args.train_rounds,
                      page=args.page)  # fmt: skip
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
