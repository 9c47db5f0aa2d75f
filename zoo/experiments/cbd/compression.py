"""The compression methods compared, their bit counts, and their Pareto fronts."""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Sequence

import numpy as np

from melius_larq._compat import tf
from melius_larq._keras_utils import walk_layers
from melius_larq.cbd import (
    compress_model,
    compressible_layers,
    decompose_matrix,
    matricize,
    replace_kernels,
    unmatricize,
)
from melius_larq.zoo.experiments.cbd.training import top1_accuracy

FLOAT_BITS = 32


def count_kernel_weights(model: tf.keras.Model) -> int:
    layers = dict(walk_layers(model))
    return sum(int(np.prod(layers[path].kernel.shape)) for path, _ in compressible_layers(model))


def compress_cbd_per_channel(
    model: tf.keras.Model, bits: int, bottleneck: float, exclude: Sequence[str] = ()
) -> tuple[tf.keras.Model, dict]:
    """CBD with one scale per output channel: CBD given plain rounding's per-channel scales.

    Every output channel of a kernel's CBD matrix (its ``kh`` rows ``(o, y)`` for a Conv2D,
    its row for a Dense layer) is divided by its own largest ``|w|`` before CBD's composition.
    The scale search, the planes, the GF(2) factoring and the dense-layer fallback then run
    unchanged on the normalised matrix (``decompose_matrix`` with ``fallback="layer"``, as
    ``compress_model`` does), and the reconstruction is multiplied back by the channel scales.
    The float32 constants are the channel scales and ``a``; ``m`` is 1 after the
    normalisation and is not stored.

    This is an ablation of the experiment, not a storage format: it answers whether CBD
    catches up with plain per-channel rounding once it has the same scales. Each channel's
    largest weight is then at ``R = 1``, above any scale ``a < 1``, so the plane of the
    weights above ``a`` holds at least one weight in every output channel.

    Args:
        model: a functional or Sequential float model.
        bits: J in 1..8.
        bottleneck: the rank budget ratio in (0, 1].
        exclude: glob patterns of layers kept in float32.

    Returns:
        ``(compressed model, summary)``. The summary has the totals (``total_weights``,
        ``total_bits``, ``total_scale_bits``, ``saved_bits``) and, under ``layers``, per layer
        what the experiment records for CBD: the bit counts, ``a`` and ``a_s``, the plane
        ranks and their budget, the storage, the factor bits and savings, and the rms error.
    """
    selected = [
        path
        for path, _ in compressible_layers(model)
        if not any(fnmatch.fnmatchcase(path, pattern) for pattern in exclude)
    ]
    layers = dict(walk_layers(model))
    kernels, records = {}, []
    for path in selected:
        kernel = layers[path].kernel.numpy()
        matrix = matricize(kernel).astype(np.float64)
        rows_per_channel = kernel.shape[0] if kernel.ndim == 4 else 1
        channels = matrix.shape[0] // rows_per_channel
        peak = np.abs(matrix).reshape(channels, -1).max(axis=1)
        scales = np.where(peak > 0, peak, 1.0).astype(np.float32)
        row_scales = np.repeat(scales, rows_per_channel)[:, None]
        cbd = decompose_matrix(matrix / row_scales, bits, bottleneck=bottleneck, name=path)
        restored = cbd.matrix() * row_scales.astype(np.float32)
        kernels[path] = np.ascontiguousarray(unmatricize(restored, kernel.shape))
        records.append(_cbd_record(cbd, bottleneck, scale_bits=FLOAT_BITS * (channels + 1)))
    compressed = replace_kernels(model, kernels)
    return compressed, _totals(records)


def _cbd_record(cbd, bottleneck: float, scale_bits: int) -> dict:
    h, w = cbd.shape
    factored = [p.exponent for p in cbd.planes if p.factored]
    stored = {p.factored for p in cbd.planes if p.exponent >= 0}
    payload = cbd.payload_bits()
    dense = cbd.size * (cbd.bits + 1)
    ranks = cbd.ranks()
    return {
        "name": cbd.name,
        "weights": cbd.size,
        "payload_bits": payload,
        "scale_bits": scale_bits,
        "matrix_shape": [h, w],
        "bits_per_weight": payload / cbd.size,
        "a": cbd.a,
        "a_s": cbd.grid["a_s"],
        "ranks": {str(i): n for i, n in ranks.items()},
        "rank_bound": int(np.floor(bottleneck * min(h, w))),
        "storage": "mixed" if len(stored) == 2 else "factored" if True in stored else "dense",
        "factored_planes": factored,
        "factor_bits": sum(p.rank * (h + w) for p in cbd.planes if p.factored),
        "saved_bits": dense - payload,
        "saved_bits_per_weight": (dense - payload) / cbd.size,
        "factoring_engaged": any(ranks.get(i, 0) > 0 for i in factored),
        "rms_error": cbd.error["rms"],
    }


def _totals(records: Sequence[dict]) -> dict:
    return {
        "total_weights": sum(r["weights"] for r in records),
        "total_bits": sum(r["payload_bits"] for r in records),
        "total_scale_bits": sum(r["scale_bits"] for r in records),
        "saved_bits": sum(r.get("saved_bits", 0) for r in records),
        "layers": {r.pop("name"): r for r in records},
    }


def _summary(report) -> dict:
    """The totals and the per-layer records of a ``compress_model`` report."""
    if report.method == "plain":
        records = [
            {
                "name": r.name,
                "weights": r.weights,
                "payload_bits": r.payload_bits,
                "scale_bits": r.scale_bits,
                "bits_per_weight_with_scales": r.bits_per_weight_with_scales,
                "rms_error": r.rms_error,
            }
            for r in report.layers
        ]
    else:
        records = [
            _cbd_record(report.decompositions[r.name], report.bottleneck, r.scale_bits)
            for r in report.layers
        ]
    return _totals(records)


# The sweeps' methods: CBD, plain rounding with one scale per output channel (the baseline),
# and two ablations that separate what CBD's grid and factoring add from what per-channel
# scales add: plain rounding with one scale per layer (CBD's granularity) and CBD with one
# scale per output channel (the baseline's granularity).
METHODS = ("cbd", "plain", "plain_layer", "cbd_channel")
METHOD_NAMES = {"cbd": "CBD", "plain": "plain per-channel", "plain_layer": "plain per-layer",
                "cbd_channel": "CBD per-channel"}  # fmt: skip
CBD_METHODS = ("cbd", "cbd_channel")


def compress_with(model, method: str, bits: int, bottleneck: float | None, exclude):
    """``(compressed model, summary)`` of one sweep point."""
    if method == "cbd_channel":
        return compress_cbd_per_channel(model, bits, bottleneck, exclude)
    if method == "cbd":
        compressed, report = compress_model(
            model, bits=bits, bottleneck=bottleneck, exclude=exclude
        )
    else:
        granularity = "layer" if method == "plain_layer" else "channel"
        compressed, report = compress_model(model, bits=bits, method="plain",
                                            granularity=granularity, exclude=exclude)  # fmt: skip
    return compressed, _summary(report)


def _label(method: str, bits: int, bottleneck: float | None) -> str:
    if method in CBD_METHODS:
        return f"{METHOD_NAMES[method]} J={bits}, btn {bottleneck:g}"
    return f"{METHOD_NAMES[method]} b={bits}"


def sweep_point(model, kernel_weights, method, bits, bottleneck, exclude, validation) -> dict:
    start = time.perf_counter()
    compressed, summary = compress_with(model, method, bits, bottleneck, exclude)
    seconds = time.perf_counter() - start
    weights, layers = summary["total_weights"], summary["layers"]
    float_kernels = kernel_weights - weights
    stored = summary["total_bits"] + summary["total_scale_bits"] + FLOAT_BITS * float_kernels
    return {
        "method": method,
        "bits": bits,
        "bottleneck": bottleneck,
        "label": _label(method, bits, bottleneck),
        "bits_per_weight": summary["total_bits"] / weights,
        "bits_per_weight_with_scales": (summary["total_bits"] + summary["total_scale_bits"])
        / weights,
        "bits_per_weight_all": stored / kernel_weights,
        "val_accuracy": top1_accuracy(compressed, validation),
        "saved_bits_per_weight": summary["saved_bits"] / weights,
        "layers_a_s_above_0": sum(r.get("a_s", 0) > 0 for r in layers.values()),
        "layers_factoring_engaged": sum(r.get("factoring_engaged", False) for r in layers.values()),
        "layers_compressed": len(layers),
        "compress_seconds": seconds,
        "layers": layers,
    }


def pareto_front(points: Sequence[dict], x: str = "bits_per_weight_all") -> list[dict]:
    """The points no other point beats: fewer or equal bits and higher validation accuracy.

    Sorted by bits; a point is kept when its validation accuracy exceeds that of every point
    with fewer bits (at equal bits only the most accurate one is kept).
    """
    ordered = sorted(points, key=lambda p: (p[x], -p["val_accuracy"]))
    front, best = [], -1.0
    for p in ordered:
        if p["val_accuracy"] > best:
            front.append(p)
            best = p["val_accuracy"]
    return front


def _plain_at(
    points: Sequence[dict], bits: float, key: str, baseline: str = "plain"
) -> dict | None:
    """The most accurate ``baseline`` point (by ``key``) with at most ``bits`` bits/weight."""
    fits = [p for p in points if p["method"] == baseline and p["bits_per_weight_all"] <= bits]
    return max(fits, key=lambda p: p[key]) if fits else None


def method_comparison(
    points: Sequence[dict], baseline: str = "plain", method: str = "cbd"
) -> list[dict]:
    """Each point of the validation front of ``method`` (``"cbd"`` or ``"cbd_channel"``)
    against the best ``baseline`` point (``"plain"`` or ``"plain_layer"``) with at most as
    many bits/weight."""
    rows = []
    for cbd in pareto_front([p for p in points if p["method"] == method]):
        plain = _plain_at(points, cbd["bits_per_weight_all"], "val_accuracy", baseline)
        rows.append(
            {
                "cbd": cbd["label"],
                "cbd_bits_per_weight_all": cbd["bits_per_weight_all"],
                "cbd_val_accuracy": cbd["val_accuracy"],
                "plain": plain and plain["label"],
                "plain_bits_per_weight_all": plain and plain["bits_per_weight_all"],
                "plain_val_accuracy": plain and plain["val_accuracy"],
                "val_difference_pp": plain and (cbd["val_accuracy"] - plain["val_accuracy"]) * 100,
            }
        )
    return rows
