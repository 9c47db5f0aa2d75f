"""CBD against plain quantization on Fashion-MNIST: accuracy against bits/weight.

Trains two float networks on Fashion-MNIST, or reuses them from ``--runs``:

* ``vgg``: a small VGG-style CNN (six 3x3 convolutions, two dense layers, 81k kernel weights),
  Adam with a per-step cosine decay, no augmentation;
* ``resnet18``: the CIFAR-style ResNet-18 of :mod:`melius_larq.float_models` (basic blocks
  2-2-2-2, 11.2M parameters at width 1), trained with the ``resnet18_fashion_mnist`` recipe
  (Adam, cosine decay, flip + crop) through :func:`melius_larq.zoo.train.train`, whose run
  directory keeps checkpoints and resumes an interrupted run.

Both are then compressed without retraining, by CBD for every J in ``--cbd-bits`` and
bottleneck in ``--bottlenecks``, and by plain per-output-channel symmetric rounding for every b
in ``--plain-bits`` (``compress_model(..., method="plain")``). b-bit plain rounding has the
levels and the dense storage cost of CBD with ``J = b - 1``; CBD goes below ``J + 1`` bits only
where its GF(2) factoring saves bits. CBD has one scale per layer (``m = max|W|``), plain
rounding one per output channel. Two more sweeps cross the two things CBD changes: plain
rounding with one scale per layer (``--plain-layer-bits``, CBD's granularity) and CBD with one
scale per output channel (``--cbd-channel-bits``, :func:`compress_cbd_per_channel`, the
baseline's granularity). At either granularity, CBD's gap to plain rounding is what CBD's own
grid adds (levels placed by the scale ``a``, the weights above ``a`` in sparse factored
planes); between the granularities, the gap is what per-channel scales add. The x axis counts
every Conv2D/Dense kernel weight: the stored codes, each layer's float32 constants (CBD: ``m``
and ``a``; CBD per-channel: one scale per output channel and ``a``; plain: one scale per
output channel or per layer) and the kernels kept in float32 (``--exclude``) at 32 bits.

Every choice is made on the validation split (the last 10 % of the training images): each
compressed model is evaluated there, and the final points of a method are its validation
Pareto front (no other point of the method has fewer bits and at least as high an accuracy).
The test set is evaluated once per final point and once for the float model. The results
directory receives

* ``results.json``: per network the float accuracies, every sweep point (bits/weight,
  validation accuracy, per-layer scales, ranks and factoring savings), the final points with
  their test accuracy, and CBD against the best plain point at the same or fewer bits;
* ``results.md``: the same as Markdown tables, including where CBD's factoring engages
  (``a_s > 0``, factored planes of rank above 0) per layer of every final CBD point;
* ``accuracy_vs_bits.png``: validation accuracy of every point and test accuracy of the
  final points against bits/weight, both methods, one row per network.

Usage::

    nice -n 10 python -m melius_larq.zoo.experiments.cbd
    nice -n 10 python -m melius_larq.zoo.experiments.cbd --networks vgg --vgg-epochs 4
    nice -n 10 python -m melius_larq.zoo.experiments.cbd --smoke --results runs/cbd_smoke

References:
    - [Composite Binary Decomposition Networks](https://arxiv.org/abs/1811.06668),
      Qiaoben et al., AAAI 2019.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from melius_larq._compat import tf
from melius_larq._io import atomic_path, save_figure, write_text_atomic
from melius_larq._keras_utils import walk_layers
from melius_larq.cbd import (
    compress_model,
    compressible_layers,
    decompose_matrix,
    matricize,
    replace_kernels,
    unmatricize,
)
from melius_larq.zoo.data import load_fashion_mnist, preprocess_fashion_mnist, split_sizes

__all__ = [
    "BOTTLENECKS",
    "CBD_BITS",
    "METHODS",
    "NETWORKS",
    "PLAIN_BITS",
    "Budget",
    "build_cnn",
    "compress_cbd_per_channel",
    "pareto_front",
    "run",
    "train_float",
]

NETWORKS = ("vgg", "resnet18")
CBD_BITS = (3, 4, 5, 6, 7)  # J: dense storage costs J + 1 bits
PLAIN_BITS = (3, 4, 5, 6, 7, 8)  # b
BOTTLENECKS = (0.02, 0.05, 0.1, 0.2, 0.5)
RESNET_RECIPE = "resnet18_fashion_mnist"
VALIDATION_FRACTION = 0.1
FLOAT_BITS = 32
# A reference point for the plot and the table, not a claim: at most 4 bits/weight with at
# most 0.5 percentage points of test accuracy lost against the float model.
REFERENCE_BITS = 4.0
REFERENCE_DROP_PP = 0.5
RESULTS_JSON, RESULTS_MD, PLOT_NAME = "results.json", "results.md", "accuracy_vs_bits.png"
EVAL_BATCH = 500
# Adam's peak learning rates: the VGG's own, and the resnet18_fashion_mnist recipe's.
LEARNING_RATES = {"vgg": 0.001, "resnet18": 0.002}


@dataclasses.dataclass(frozen=True)
class Budget:
    """Training settings of one float network.

    Attributes:
        epochs: training epochs.
        batch_size: batch size.
        learning_rate: peak learning rate of the cosine schedule; None takes the network's
            default (:data:`LEARNING_RATES`).
        width: ResNet-18 width multiplier (ignored by ``vgg``).
        train_limit: train on the first N training images only; None = all of the training
            part (the validation split is never trained on).
        seed: random seed.
    """

    epochs: int = 15
    batch_size: int = 128
    learning_rate: float | None = None
    width: float = 1.0
    train_limit: int | None = None
    seed: int = 0


def build_cnn(seed: int = 0) -> tf.keras.Model:
    """A small VGG-style CNN for 28x28x1 inputs (6 convs + 2 dense, about 81k kernel weights)."""
    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    inputs = layers.Input((28, 28, 1))
    x = inputs
    for stage, (filters, convs) in enumerate(((16, 2), (32, 2), (64, 2)), start=1):
        for i in range(convs):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                              name=f"conv{stage}_{i + 1}")(x)  # fmt: skip
            x = layers.BatchNormalization(name=f"bn{stage}_{i + 1}")(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(128, activation="relu", name="fc1")(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(10, name="fc2")(x)
    return tf.keras.Model(inputs, outputs, name="vgg_small_fmnist")


def _splits(data_dir, eval_limit: int | None = None) -> dict:
    """Preprocessed ``train``, ``validation`` (the last 10 % of the training images) and
    ``test`` arrays; ``eval_limit`` keeps the first N of validation and test."""
    images, labels = load_fashion_mnist("train", data_dir)
    n_train, _ = split_sizes(len(labels), VALIDATION_FRACTION)
    test_images, test_labels = load_fashion_mnist("test", data_dir)
    x, x_test = preprocess_fashion_mnist(images), preprocess_fashion_mnist(test_images)
    cut = slice(None, eval_limit)
    return {
        "train": (x[:n_train], labels[:n_train]),
        "validation": (x[n_train:][cut], labels[n_train:][cut]),
        "test": (x_test[cut], test_labels[cut]),
    }


def _accuracy(model: tf.keras.Model, data: tuple[np.ndarray, np.ndarray]) -> float:
    x, y = data
    correct = 0
    for start in range(0, len(y), EVAL_BATCH):
        logits = model(x[start : start + EVAL_BATCH], training=False)
        correct += int(np.sum(np.argmax(logits, axis=-1) == y[start : start + EVAL_BATCH]))
    return correct / len(y)


def _run_name(network: str, budget: Budget, train_images: int) -> str:
    width = f"_w{budget.width:g}" if network == "resnet18" else ""
    return (
        f"{network}{width}_e{budget.epochs}_b{budget.batch_size}_lr{budget.learning_rate:g}"
        f"_n{train_images}_s{budget.seed}"
    )


def _resolve(network: str, budget: Budget) -> Budget:
    if budget.learning_rate is None:
        return dataclasses.replace(budget, learning_rate=LEARNING_RATES[network])
    return budget


def _train_vgg(directory: Path, budget: Budget, train, validation, verbose: int) -> dict:
    x, y = train
    model = build_cnn(budget.seed)
    steps = budget.epochs * (len(y) // budget.batch_size)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(
            tf.keras.optimizers.schedules.CosineDecay(budget.learning_rate, max(1, steps))
        ),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    # Whole batches only, as the recipes' pipeline does: one batch shape, one trace.
    batches = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(y), seed=budget.seed, reshuffle_each_iteration=True)
        .batch(budget.batch_size, drop_remainder=True)
    )
    history = model.fit(batches, epochs=budget.epochs, validation_data=validation,
                        validation_batch_size=EVAL_BATCH, verbose=verbose).history  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / "model.keras") as tmp:
        model.save(tmp)
    return {"val_accuracy_by_epoch": [float(v) for v in history["val_accuracy"]]}


def _train_resnet(directory: Path, budget: Budget, data_dir, verbose: int) -> dict:
    from melius_larq.zoo.recipes import get_recipe
    from melius_larq.zoo.train import train

    recipe = dataclasses.replace(
        get_recipe(RESNET_RECIPE),
        epochs=budget.epochs,
        batch_size=budget.batch_size,
        learning_rate=budget.learning_rate,
        width=budget.width,
        train_limit=budget.train_limit,
        validation_fraction=VALIDATION_FRACTION,
        seed=budget.seed,
    )
    resume = (directory / "config.json").exists()
    metrics = train(recipe, directory, resume=resume, data_dir=data_dir, verbose=verbose)
    return {"recipe": recipe.name, "val_accuracy": metrics.get("val_accuracy")}


def train_float(
    network: str,
    runs_dir: str | Path,
    budget: Budget,
    *,
    data_dir: str | None = None,
    splits: dict | None = None,
    verbose: int = 2,
) -> tuple[tf.keras.Model, dict]:
    """The trained float network, from ``runs_dir`` if it is there, else trained into it.

    The run directory is named after the network, the budget and the number of training
    images, so a re-run with the same settings loads ``model.keras`` instead of training,
    and an interrupted ResNet-18 run resumes from its last epoch.

    Args:
        network: ``"vgg"`` or ``"resnet18"``.
        runs_dir: directory of the training runs.
        budget: the training settings.
        data_dir: Fashion-MNIST location (see :func:`melius_larq.zoo.data.load_fashion_mnist`).
        splits: the preprocessed splits, if already loaded.
        verbose: Keras ``fit`` verbosity.

    Returns:
        ``(model, info)`` with ``info`` holding the run directory, whether it was reused and
        the training time.

    Raises:
        ValueError: for an unknown network.
    """
    if network not in NETWORKS:
        raise ValueError(f"Unknown network {network!r}; expected one of {NETWORKS}.")
    budget = _resolve(network, budget)
    splits = splits or _splits(data_dir)
    x, y = splits["train"]
    x, y = x[: budget.train_limit], y[: budget.train_limit]
    directory = Path(runs_dir) / _run_name(network, budget, len(y))
    info = {"run_dir": str(directory), "budget": dataclasses.asdict(budget), "train_images": len(y)}
    path = directory / "model.keras"
    if path.exists():
        record = directory / "experiment.json"
        info = (
            json.loads(record.read_text()) if record.exists() else {**info, "train_seconds": None}
        )
        info.update(reused=True)
        return tf.keras.models.load_model(path, compile=False), info
    start = time.perf_counter()
    if network == "vgg":
        info.update(_train_vgg(directory, budget, (x, y), splits["validation"], verbose))
    else:
        info.update(_train_resnet(directory, budget, data_dir, verbose))
    info.update(reused=False, train_seconds=time.perf_counter() - start)
    write_text_atomic(json.dumps(info, indent=2) + "\n", directory / "experiment.json")
    return tf.keras.models.load_model(path, compile=False), info


def _kernel_weights(model: tf.keras.Model) -> int:
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


def _compress(model, method: str, bits: int, bottleneck: float | None, exclude):
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


def _point(model, kernel_weights, method, bits, bottleneck, exclude, validation) -> dict:
    start = time.perf_counter()
    compressed, summary = _compress(model, method, bits, bottleneck, exclude)
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
        "val_accuracy": _accuracy(compressed, validation),
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


def _comparison(points: Sequence[dict], baseline: str = "plain", method: str = "cbd") -> list[dict]:
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


def _network(
    network: str,
    budget: Budget,
    *,
    splits: dict,
    runs_dir,
    data_dir,
    cbd_bits,
    plain_bits,
    bottlenecks,
    exclude,
    verbose: int,
    plain_layer_bits=(),
    cbd_channel_bits=(),
) -> dict:
    model, training = train_float(
        network, runs_dir, budget, data_dir=data_dir, splits=splits, verbose=verbose
    )
    kernel_weights = _kernel_weights(model)
    paths = [path for path, _ in walk_layers(model)]
    exclude = [pattern for pattern in exclude if fnmatch.filter(paths, pattern)]
    validation, test = splits["validation"], splits["test"]
    float_val = _accuracy(model, validation)
    float_test = _accuracy(model, test)  # the float model is a final point too
    print(f"{network}: float validation {float_val:.2%}, test {float_test:.2%}", flush=True)
    settings = [("cbd", j, btn) for j in cbd_bits for btn in bottlenecks]
    settings += [("plain", b, None) for b in plain_bits]
    settings += [("plain_layer", b, None) for b in plain_layer_bits]
    settings += [("cbd_channel", j, btn) for j in cbd_channel_bits for btn in bottlenecks]
    points = []
    for method, bits, btn in settings:
        p = _point(model, kernel_weights, method, bits, btn, exclude, validation)
        points.append(p)
        print(
            f"{network}: {p['label']}: {p['bits_per_weight_all']:.3f} bits/weight, validation "
            f"{p['val_accuracy']:.2%}",
            flush=True,
        )
    final = []
    for method in METHODS:
        for p in pareto_front([p for p in points if p["method"] == method]):
            compressed, _ = _compress(model, method, p["bits"], p["bottleneck"], exclude)
            acc = _accuracy(compressed, test)
            drop = (float_test - acc) * 100
            final.append(
                {
                    **{k: v for k, v in p.items() if k != "layers"},
                    "test_accuracy": acc,
                    "test_drop_pp": drop,
                    "meets_reference": p["bits_per_weight_all"] <= REFERENCE_BITS
                    and drop <= REFERENCE_DROP_PP,
                }
            )
    return {
        "network": network,
        "model": model.name,
        "params": int(model.count_params()),
        "kernel_weights": kernel_weights,
        "exclude": exclude,
        "training": training,
        "float": {"val_accuracy": float_val, "test_accuracy": float_test},
        "points": points,
        "final": final,
        "comparison": _comparison(points),
        "comparison_per_layer_scale": _comparison(points, "plain_layer"),
        "comparison_per_channel_cbd": _comparison(points, "plain", "cbd_channel"),
    }


def _plot(networks: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:.2f}"


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
            f"| {_pct(c['plain_val_accuracy'])} | {c['val_difference_pp']:+.2f}"
            if c["plain"]
            else "none at these bits | | |"
        )
        lines.append(
            f"| {c['cbd']} | {c['cbd_bits_per_weight_all']:.3f} "
            f"| {_pct(c['cbd_val_accuracy'])} | {plain} |"
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
            f"`{t['run_dir']}`. Float32: validation {_pct(net['float']['val_accuracy'])} %, "
            f"test {_pct(net['float']['test_accuracy'])} %.",
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
                f"| {_pct(p['val_accuracy'])} | {_pct(p['test_accuracy'])} "
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
                f"| {p['bits_per_weight_all']:.3f} | {_pct(p['val_accuracy'])} "
                f"| {p['layers_a_s_above_0']} | {p['layers_factoring_engaged']} |"
            )
    return "\n".join(lines) + "\n"


def run(
    results_dir: str | Path = "docs/cbd_results",
    runs_dir: str | Path = "runs/cbd",
    *,
    networks: Sequence[str] = NETWORKS,
    budgets: dict[str, Budget] | None = None,
    cbd_bits: Sequence[int] = CBD_BITS,
    plain_bits: Sequence[int] = PLAIN_BITS,
    bottlenecks: Sequence[float] = BOTTLENECKS,
    plain_layer_bits: Sequence[int] = PLAIN_BITS,
    cbd_channel_bits: Sequence[int] = CBD_BITS,
    exclude: Sequence[str] = (),
    data_dir: str | None = None,
    eval_limit: int | None = None,
    verbose: int = 2,
) -> dict:
    """Trains or reuses the float networks, runs both sweeps, writes and returns the results.

    Args:
        results_dir: where ``results.json``, ``results.md`` and ``accuracy_vs_bits.png`` go.
        runs_dir: training runs (reused when present).
        networks: a subset of ``("vgg", "resnet18")``.
        budgets: training settings per network; missing networks get :class:`Budget`
            defaults.
        cbd_bits: the J of the CBD sweep (1..8).
        plain_bits: the b of the plain sweep with one scale per output channel (2..8).
        bottlenecks: the CBD bottlenecks, in (0, 1].
        plain_layer_bits: the b of the plain sweep with one scale per layer (2..8), CBD's
            granularity; empty to skip that ablation.
        cbd_channel_bits: the J of CBD with one scale per output channel
            (:func:`compress_cbd_per_channel`, the plain baseline's granularity) at every
            bottleneck; empty to skip that ablation.
        exclude: glob patterns of layers kept in float32 by both methods (counted at 32
            bits); a pattern applies to the networks that have a matching layer (for example
            ``conv1_1`` for ``vgg``, ``stem_conv`` for ``resnet18``).
        data_dir: Fashion-MNIST location.
        eval_limit: evaluate on the first N validation and test images only (quick runs).
        verbose: Keras ``fit`` verbosity.

    Raises:
        ValueError: for an unknown network or an empty sweep; ``compress_model`` raises for
            bits or bottlenecks out of range before any training starts.
    """
    unknown = [n for n in networks if n not in NETWORKS]
    if unknown or not networks:
        raise ValueError(f"Expected networks from {NETWORKS}, but got {list(networks)!r}.")
    cbd_sweep = bool((cbd_bits or cbd_channel_bits) and bottlenecks)
    if not cbd_sweep and not plain_bits and not plain_layer_bits:
        raise ValueError("Nothing to sweep: give CBD bits and bottlenecks or plain bits.")
    probe = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(2)])
    for j in (*cbd_bits, *cbd_channel_bits):  # bad settings fail here, not after training
        for btn in bottlenecks:
            compress_model(probe, bits=j, bottleneck=btn)
    for b in (*plain_bits, *plain_layer_bits):
        compress_model(probe, bits=b, method="plain")
    budgets = budgets or {}
    splits = _splits(data_dir, eval_limit)
    results = []
    for network in networks:
        results.append(
            _network(
                network,
                budgets.get(network, Budget()),
                splits=splits,
                runs_dir=runs_dir,
                data_dir=data_dir,
                cbd_bits=cbd_bits,
                plain_bits=plain_bits,
                bottlenecks=bottlenecks,
                exclude=exclude,
                verbose=verbose,
                plain_layer_bits=plain_layer_bits,
                cbd_channel_bits=cbd_channel_bits,
            )
        )
    result = {
        "dataset": "Fashion-MNIST",
        "validation": f"last {VALIDATION_FRACTION:.0%} of the training images",
        "validation_images": len(splits["validation"][1]),
        "test_images": len(splits["test"][1]),
        "cbd_bits": list(cbd_bits),
        "plain_bits": list(plain_bits),
        "plain_layer_bits": list(plain_layer_bits),
        "cbd_channel_bits": list(cbd_channel_bits),
        "bottlenecks": list(bottlenecks),
        "exclude": list(exclude),
        "reference": {"bits_per_weight": REFERENCE_BITS, "test_drop_pp": REFERENCE_DROP_PP},
        "networks": results,
    }
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json.dumps(result, indent=2) + "\n", out / RESULTS_JSON)
    write_text_atomic(markdown(result), out / RESULTS_MD)
    _plot(results, out / PLOT_NAME)
    return result


# --smoke: a few steps per network and two points per method, to check the pipeline.
SMOKE = {
    "vgg_epochs": 1, "resnet_epochs": 1, "resnet_width": 0.125, "batch_size": 32,
    "train_limit": 256, "eval_limit": 200, "cbd_bits": [4], "plain_bits": [4, 5],
    "bottlenecks": [0.1], "plain_layer_bits": [4], "cbd_channel_bits": [4],
}  # fmt: skip
DEFAULTS = {
    "vgg_epochs": 15, "resnet_epochs": 15, "resnet_width": 1.0, "batch_size": 128,
    "train_limit": None, "eval_limit": None, "cbd_bits": list(CBD_BITS),
    "plain_bits": list(PLAIN_BITS), "bottlenecks": list(BOTTLENECKS),
    "plain_layer_bits": list(PLAIN_BITS), "cbd_channel_bits": list(CBD_BITS),
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="docs/cbd_results", help="results directory")
    parser.add_argument("--runs", default="runs/cbd", help="training runs (reused when present)")
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    parser.add_argument(
        "--cbd-bits",
        type=int,
        nargs="*",
        metavar="J",
        help=f"J of the CBD sweep (default {' '.join(map(str, CBD_BITS))})",
    )
    parser.add_argument(
        "--plain-bits",
        type=int,
        nargs="*",
        metavar="B",
        help=f"b of the plain sweep (default {' '.join(map(str, PLAIN_BITS))})",
    )
    parser.add_argument(
        "--plain-layer-bits",
        type=int,
        nargs="*",
        metavar="B",
        help="b of the plain sweep with one scale per layer, CBD's granularity (default "
        f"{' '.join(map(str, PLAIN_BITS))}; none to skip)",
    )
    parser.add_argument(
        "--cbd-channel-bits",
        type=int,
        nargs="*",
        metavar="J",
        help="J of CBD with one scale per output channel, the baseline's granularity (default "
        f"{' '.join(map(str, CBD_BITS))}; none to skip)",
    )
    parser.add_argument(
        "--bottlenecks",
        type=float,
        nargs="+",
        help=f"CBD bottlenecks (default {' '.join(map(str, BOTTLENECKS))})",
    )
    parser.add_argument(
        "--exclude",
        nargs="+",
        default=[],
        help="glob patterns of layers kept in float32 by both methods (each applies to the "
        "networks that have such a layer)",
    )
    parser.add_argument("--vgg-epochs", type=int, help="default 15")
    parser.add_argument("--resnet-epochs", type=int, help="default 15")
    parser.add_argument("--resnet-width", type=float, help="ResNet-18 width (default 1.0)")
    parser.add_argument("--vgg-lr", type=float, help=f"default {LEARNING_RATES['vgg']}")
    parser.add_argument("--resnet-lr", type=float, help=f"default {LEARNING_RATES['resnet18']}")
    parser.add_argument("--batch-size", type=int, help="default 128")
    parser.add_argument("--train-limit", type=int, help="train on the first N images only")
    parser.add_argument(
        "--eval-limit", type=int, help="evaluate on the first N validation and test images only"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", help="directory with the Fashion-MNIST IDX files")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny budget and sweep: checks the pipeline end to end"
    )
    parser.add_argument("--verbose", type=int, default=2, help="Keras fit verbosity")  # fmt: skip
    args = parser.parse_args(argv)
    base = SMOKE if args.smoke else DEFAULTS
    opt = {k: v if (v := getattr(args, k)) is not None else base[k] for k in DEFAULTS}
    common = {"batch_size": opt["batch_size"], "train_limit": opt["train_limit"],
              "seed": args.seed}  # fmt: skip
    budgets = {
        "vgg": Budget(epochs=opt["vgg_epochs"], learning_rate=args.vgg_lr, **common),
        "resnet18": Budget(
            epochs=opt["resnet_epochs"],
            learning_rate=args.resnet_lr,
            width=opt["resnet_width"],
            **common,
        ),  # fmt: skip
    }
    try:
        result = run(
            args.results, args.runs, networks=args.networks, budgets=budgets,
            cbd_bits=opt["cbd_bits"], plain_bits=opt["plain_bits"],
            plain_layer_bits=opt["plain_layer_bits"],
            cbd_channel_bits=opt["cbd_channel_bits"],
            bottlenecks=opt["bottlenecks"], exclude=args.exclude, data_dir=args.data_dir,
            eval_limit=opt["eval_limit"], verbose=args.verbose,
        )  # fmt: skip
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    for net in result["networks"]:
        for p in net["final"]:
            print(f"{net['network']}: final {p['label']}: {p['bits_per_weight_all']:.3f} "
                  f"bits/weight, test {p['test_accuracy']:.2%} ({p['test_drop_pp']:+.2f} pp)")  # fmt: skip
    print(f"wrote {RESULTS_JSON}, {RESULTS_MD} and {PLOT_NAME} in {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
