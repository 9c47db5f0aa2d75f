"""Where the LCE time goes: per-part latency from prefix sub-models, and the binary-MAC rate.

The LCE Python interpreter has no op profiler, so the time of each part of a network (stem,
the dense/improvement blocks of each section, each transition, the head) is measured by
converting the prefix sub-models that end after each part and differencing their median
latencies. Each part's binary MACs (BOPs, the authors' accounting) divided by its time give
the effective binary-MAC rate of that part; :func:`binary_conv_rate` measures the rate of one
isolated binary 3x3 convolution, which is the floor a network of binary convolutions could
reach on this machine (``floor_ms = BOPs / rate``).

On a phone use ``melius-larq device-bench`` instead: ``lce_benchmark_model
--enable_op_profiling=true`` reports the time of every op.
"""

from __future__ import annotations

from collections.abc import Callable

import larq as lq

from melius_larq._compat import tf
from melius_larq.accounting import _part, layer_accounting
from melius_larq.deploy.bench import benchmark_lce
from melius_larq.deploy.convert import convert_model

__all__ = [
    "binary_conv_rate",
    "format_breakdown",
    "latency_breakdown",
    "parts_of",
]


def parts_of(model: tf.keras.Model, part: Callable[[str], str] = _part) -> list[dict]:
    """The parts of a model in graph order, each with its last layer, BOPs and FLOPs.

    Args:
        model: a functional model whose layer names say which part they belong to (the
            registry's names: ``stem_*``, ``section_<i>_block_*``, ``section_<i>_transition_*``,
            ``head_*``).
        part: maps a layer name to its part name.

    Raises:
        ValueError: if the model has fewer than two parts or a part is not contiguous.
    """
    parts: list[dict] = []
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.InputLayer):
            continue
        name = part(layer.name)
        if not parts or parts[-1]["part"] != name:
            if any(p["part"] == name for p in parts):
                raise ValueError(
                    f"Part {name!r} is not contiguous in the layer order (at layer "
                    f"{layer.name!r}); the breakdown needs parts that follow each other."
                )
            parts.append({"part": name, "last_layer": layer.name, "bops": 0, "flops": 0})
        counts = layer_accounting(layer)
        parts[-1]["last_layer"] = layer.name
        parts[-1]["bops" if counts["binary"] else "flops"] += counts["macs"]
    if len(parts) < 2:
        raise ValueError(
            f"{model.name!r} has {len(parts)} part(s) by its layer names; the breakdown needs "
            "a registry model (stem_*, section_<i>_*, head_*)."
        )
    return parts


def latency_breakdown(
    model: tf.keras.Model,
    *,
    runs: int = 20,
    warmup: int = 3,
    threads: int = 1,
    progress: bool = True,
    fold_batchnorm: bool = True,
) -> dict:
    """Per-part LCE latency of a registry model (prefix sub-models, differenced).

    Returns:
        ``{"parts": [...], "total_ms": ...}``; each part has ``cumulative_ms`` (median latency
        of the model up to and including the part), ``ms`` (its difference to the previous
        prefix; timing noise can make a tiny part slightly negative), ``share`` of the total,
        ``bops``, ``flops`` and ``gbops_per_s`` (its BOPs per second, None without BOPs).
    """
    parts = parts_of(model)
    previous = 0.0
    iterator = parts
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(parts, desc="breakdown", leave=False)
    for p in iterator:
        output = model.get_layer(p["last_layer"]).output
        prefix = tf.keras.Model(model.input, output, name=f"prefix_{p['last_layer']}")
        buf = convert_model(prefix, fold_batchnorm=fold_batchnorm)
        stats = benchmark_lce(buf, threads=(threads,), runs=runs, warmup=warmup)[threads]
        p["cumulative_ms"] = stats["median_ms"]
        p["ms"] = stats["median_ms"] - previous
        previous = stats["median_ms"]
    total = parts[-1]["cumulative_ms"]
    for p in parts:
        p["share"] = p["ms"] / total
        p["gbops_per_s"] = p["bops"] / (p["ms"] * 1e6) if p["bops"] and p["ms"] > 0 else None
    return {"model": model.name, "threads": threads, "runs": runs, "total_ms": total,
            "fold_batchnorm": fold_batchnorm, "parts": parts}  # fmt: skip


def binary_conv_rate(
    *,
    size: int = 28,
    channels: int = 256,
    filters: int = 64,
    runs: int = 50,
    warmup: int = 5,
    threads: int = 1,
) -> dict:
    """BOPs per second of one isolated 3x3 binary convolution in the LCE interpreter.

    The default shape is a typical MeliusNet dense-block convolution (section 2: 28x28, a
    256-channel input grown by 64). The quantize op of the input is included, as in a network.
    """
    x = tf.keras.Input((size, size, channels))
    y = lq.layers.QuantConv2D(
        filters, 3, padding="same", pad_values=1.0, use_bias=False,
        input_quantizer="ste_sign", kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
    )(x)  # fmt: skip
    y = tf.keras.layers.BatchNormalization()(y)
    model = tf.keras.Model(x, y)
    bops = size * size * 9 * channels * filters
    stats = benchmark_lce(convert_model(model), threads=(threads,), runs=runs, warmup=warmup)
    ms = stats[threads]["median_ms"]
    return {"shape": [size, size, channels], "filters": filters, "bops": bops, "ms": ms,
            "gbops_per_s": bops / (ms * 1e6)}  # fmt: skip


def format_breakdown(result: dict, rate: dict | None = None) -> str:
    """A Markdown table of a :func:`latency_breakdown` result."""
    folded = "" if result.get("fold_batchnorm", True) else ", pre-sign BatchNorms not folded"
    lines = [
        f"{result['model']}: LCE (indirect BGEMM), {result['threads']} thread(s), medians of "
        f"{result['runs']} runs{folded}, total {result['total_ms']:.1f} ms.",
        "",
        "| part | ms | share | binary MACs (M) | float MACs (M) | GBOPs/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in result["parts"]:
        rate_s = f"{p['gbops_per_s']:.1f}" if p["gbops_per_s"] else "–"
        lines.append(
            f"| {p['part']} | {p['ms']:.1f} | {100 * p['share']:.0f} % | {p['bops'] / 1e6:.0f} "
            f"| {p['flops'] / 1e6:.0f} | {rate_s} |"
        )
    if rate is not None:
        bops = sum(p["bops"] for p in result["parts"])
        lines += [
            "",
            f"Isolated binary 3x3 conv ({'x'.join(map(str, rate['shape']))} -> {rate['filters']}):"
            f" {rate['gbops_per_s']:.1f} GBOPs/s, so the {bops / 1e9:.2f} G binary MACs of "
            f"{result['model']} alone need at least {bops / (rate['gbops_per_s'] * 1e6):.1f} ms.",
        ]
    return "\n".join(lines)
