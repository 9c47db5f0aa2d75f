"""Host benchmarks: LCE interpreter latency, beside float TFLite (XNNPACK) references.

Every latency is the median (and p90) of ``runs`` timed single-image inferences after
``warmup`` untimed ones, measured in this process so that ratios compare like with like.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Sequence

import numpy as np

from melius_larq._compat import tf
from melius_larq.deploy.flatbuffer import load_flatbuffer

__all__ = [
    "benchmark_alternating",
    "benchmark_lce",
    "benchmark_tflite_float",
    "float_tflite",
    "format_markdown",
    "machine_info",
    "ratio_over_rounds",
    "timing_stats",
]


def timing_stats(seconds: Sequence[float]) -> dict:
    """Median, p90, mean, min and max in milliseconds of a list of durations in seconds."""
    ms = sorted(s * 1e3 for s in seconds)
    p90 = ms[min(len(ms) - 1, int(np.ceil(0.9 * len(ms))) - 1)]
    return {
        "median_ms": statistics.median(ms),
        "p90_ms": p90,
        "mean_ms": statistics.fmean(ms),
        "min_ms": ms[0],
        "max_ms": ms[-1],
        "runs": len(ms),
    }


def _time_calls(fn, *, runs: int, warmup: int, progress: str | None) -> dict:
    if runs < 1 or warmup < 0:
        raise ValueError(
            f"Expected runs >= 1 and warmup >= 0, but got runs={runs}, warmup={warmup}."
        )
    for _ in range(warmup):
        fn()
    times = []
    iterator = range(runs)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=progress, leave=False)
    for _ in iterator:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return timing_stats(times)


def benchmark_alternating(
    candidates: dict[str, tuple],
    *,
    rounds: int = 5,
    runs: int = 20,
    warmup: int = 3,
    num_threads: int = 1,
    progress: bool = False,
) -> dict[str, dict]:
    """Latencies of several LCE flatbuffers that take turns, one thread count.

    Each round times every candidate for ``runs`` calls, in turn, so that a slow phase of a
    shared machine hits all of them. A candidate's result is the median of its ``rounds``
    round medians with their minimum and maximum (the spread between rounds); the minimum is
    also its best median (interference only ever slows a run down). Compare two candidates
    round by round with :func:`ratio_over_rounds`.

    Args:
        candidates: ``{name: (flatbuffer, use_xnnpack)}``.
        rounds: rounds of turns (>= 1).
        runs, warmup: timed and untimed calls per candidate and round.
        num_threads: interpreter threads.
        progress: print one line per round.

    Returns:
        ``{name: {"median_ms", "min_ms", "max_ms", "best_median_ms", "medians_ms",
        "use_xnnpack"}}``.

    Raises:
        ValueError: for ``rounds`` < 1 (and, from the timing, ``runs`` < 1 or ``warmup`` < 0).
    """
    from melius_larq.deploy.verify import lce_interpreter

    if rounds < 1:
        raise ValueError(f"Expected rounds >= 1, but got {rounds}.")
    calls = {}
    for name, (buf, use_xnnpack) in candidates.items():
        interpreter = lce_interpreter(load_flatbuffer(buf), num_threads=num_threads,
                                      use_xnnpack=use_xnnpack)  # fmt: skip
        x = np.zeros((1, *interpreter.input_shapes[0][1:]), dtype=interpreter.input_types[0])
        calls[name] = lambda interp=interpreter, x=x: interp.predict(x)
    medians = {name: [] for name in candidates}
    for r in range(rounds):
        for name, fn in calls.items():
            medians[name].append(
                _time_calls(fn, runs=runs, warmup=warmup, progress=None)["median_ms"]
            )
        if progress:
            print(f"round {r + 1}/{rounds}: " + ", ".join(
                f"{n} {m[-1]:.2f} ms" for n, m in medians.items()), flush=True)  # fmt: skip
    return {
        name: {
            "median_ms": statistics.median(m),
            "min_ms": min(m),
            "max_ms": max(m),
            "best_median_ms": min(m),
            "medians_ms": m,
            "use_xnnpack": candidates[name][1],
        }
        for name, m in medians.items()
    }


def ratio_over_rounds(timed: dict[str, dict], name: str, reference: str) -> dict:
    """The latency of ``name`` over that of ``reference``, round by round, from one
    :func:`benchmark_alternating` result: both ran in the same rounds, so each round's ratio
    compares them under the same load.

    Returns:
        ``{"median", "min", "max", "per_round"}``.
    """
    per_round = [
        a / b
        for a, b in zip(timed[name]["medians_ms"], timed[reference]["medians_ms"], strict=True)
    ]
    return {
        "median": statistics.median(per_round),
        "min": min(per_round),
        "max": max(per_round),
        "per_round": per_round,
    }


def benchmark_lce(
    buf,
    *,
    threads: Sequence[int] = (1,),
    runs: int = 20,
    warmup: int = 3,
    progress: str | None = None,
    use_xnnpack: bool = False,
) -> dict[int, dict]:
    """Latency of an LCE flatbuffer in the LCE interpreter, per thread count.

    Uses the indirect BGEMM kernel (on x86 about 5x faster than the default kernel, and the only
    fast one for grouped binary convolutions); ``use_xnnpack`` runs the float layers with
    XNNPACK.

    Returns:
        ``{threads: timing_stats}``.
    """
    from melius_larq.deploy.verify import lce_interpreter

    buf = load_flatbuffer(buf)
    results = {}
    for n in threads:
        interpreter = lce_interpreter(buf, num_threads=n, use_xnnpack=use_xnnpack)
        dtype = interpreter.input_types[0]
        x = np.zeros((1, *interpreter.input_shapes[0][1:]), dtype=dtype)
        results[n] = _time_calls(
            lambda interp=interpreter, x=x: interp.predict(x),
            runs=runs,
            warmup=warmup,
            progress=f"{progress} x{n}" if progress else None,
        )
    return results


def float_tflite(model: tf.keras.Model, input_shape: Sequence[int] | None = None) -> bytes:
    """The plain float TFLite flatbuffer of a Keras model (binary layers as float ops)."""
    from melius_larq.deploy.convert import inference_saved_model

    shape = tuple(input_shape) if input_shape else tuple(model.input_shape[1:])
    spec = tf.TensorSpec((1, *shape), tf.float32, name="input")
    with inference_saved_model(model, spec) as saved_model:
        return tf.lite.TFLiteConverter.from_saved_model(saved_model).convert()


def benchmark_tflite_float(
    buf: bytes,
    *,
    threads: Sequence[int] = (1,),
    runs: int = 20,
    warmup: int = 3,
    progress: str | None = None,
) -> dict[int, dict]:
    """Latency of a float TFLite flatbuffer in TensorFlow's interpreter (XNNPACK delegate)."""
    buf = load_flatbuffer(buf)
    results = {}
    for n in threads:
        interpreter = tf.lite.Interpreter(model_content=buf, num_threads=n)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        results[n] = _time_calls(
            interpreter.invoke,
            runs=runs,
            warmup=warmup,
            progress=f"{progress} x{n}" if progress else None,
        )
    return results


def machine_info() -> dict:
    """What the numbers were measured on."""
    import os

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "machine": platform.machine(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
    }


def format_markdown(rows: list[dict], *, reference: str | None = None) -> str:
    """A Markdown table of ``{"model", "runtime", "threads", "median_ms", "p90_ms"}`` rows.

    With ``reference`` (a model name), adds the ratio of each median to the reference's
    median at the same thread count.
    """
    ref = {r["threads"]: r["median_ms"] for r in rows if r["model"] == reference}
    head = "| model | runtime | threads | median ms | p90 ms |"
    sep = "| --- | --- | ---: | ---: | ---: |"
    if reference:
        head += f" x {reference} |"
        sep += " ---: |"
    lines = [head, sep]
    for r in rows:
        line = (
            f"| {r['model']} | {r['runtime']} | {r['threads']} | {r['median_ms']:.2f} | "
            f"{r['p90_ms']:.2f} |"
        )
        if reference:
            base = ref.get(r["threads"])
            line += f" {r['median_ms'] / base:.2f} |" if base else " – |"
        lines.append(line)
    return "\n".join(lines)
