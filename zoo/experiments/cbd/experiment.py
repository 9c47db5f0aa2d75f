"""The experiment: both sweeps on every network, the final points on the test set, the
results written."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from pathlib import Path

from melius_larq._compat import tf
from melius_larq._io import write_text_atomic
from melius_larq._keras_utils import walk_layers
from melius_larq.cbd import (
    compress_model,
)
from melius_larq.zoo.experiments.cbd.compression import (
    METHODS,
    compress_with,
    count_kernel_weights,
    method_comparison,
    pareto_front,
    sweep_point,
)
from melius_larq.zoo.experiments.cbd.report import (
    PLOT_NAME,
    REFERENCE_BITS,
    REFERENCE_DROP_PP,
    RESULTS_JSON,
    RESULTS_MD,
    markdown,
    plot_results,
)
from melius_larq.zoo.experiments.cbd.training import (
    NETWORKS,
    VALIDATION_FRACTION,
    Budget,
    load_splits,
    top1_accuracy,
    train_float,
)

CBD_BITS = (3, 4, 5, 6, 7)  # J: dense storage costs J + 1 bits
PLAIN_BITS = (3, 4, 5, 6, 7, 8)  # b
BOTTLENECKS = (0.02, 0.05, 0.1, 0.2, 0.5)


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
    kernel_weights = count_kernel_weights(model)
    paths = [path for path, _ in walk_layers(model)]
    exclude = [pattern for pattern in exclude if fnmatch.filter(paths, pattern)]
    validation, test = splits["validation"], splits["test"]
    float_val = top1_accuracy(model, validation)
    float_test = top1_accuracy(model, test)  # the float model is a final point too
    print(f"{network}: float validation {float_val:.2%}, test {float_test:.2%}", flush=True)
    settings = [("cbd", j, btn) for j in cbd_bits for btn in bottlenecks]
    settings += [("plain", b, None) for b in plain_bits]
    settings += [("plain_layer", b, None) for b in plain_layer_bits]
    settings += [("cbd_channel", j, btn) for j in cbd_channel_bits for btn in bottlenecks]
    points = []
    for method, bits, btn in settings:
        p = sweep_point(model, kernel_weights, method, bits, btn, exclude, validation)
        points.append(p)
        print(
            f"{network}: {p['label']}: {p['bits_per_weight_all']:.3f} bits/weight, validation "
            f"{p['val_accuracy']:.2%}",
            flush=True,
        )
    final = []
    for method in METHODS:
        for p in pareto_front([p for p in points if p["method"] == method]):
            compressed, _ = compress_with(model, method, p["bits"], p["bottleneck"], exclude)
            acc = top1_accuracy(compressed, test)
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
        "comparison": method_comparison(points),
        "comparison_per_layer_scale": method_comparison(points, "plain_layer"),
        "comparison_per_channel_cbd": method_comparison(points, "plain", "cbd_channel"),
    }


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
    sweep = {"cbd_bits": list(cbd_bits), "plain_bits": list(plain_bits),
             "plain_layer_bits": list(plain_layer_bits),
             "cbd_channel_bits": list(cbd_channel_bits), "bottlenecks": list(bottlenecks),
             "exclude": list(exclude)}  # fmt: skip
    check_settings(networks, **{k: v for k, v in sweep.items() if k != "exclude"})
    splits = load_splits(data_dir, eval_limit)
    results = [
        _network(network, (budgets or {}).get(network, Budget()), splits=splits,
                 runs_dir=runs_dir, data_dir=data_dir, verbose=verbose, **sweep)
        for network in networks
    ]  # fmt: skip
    result = {
        "dataset": "Fashion-MNIST",
        "validation": f"last {VALIDATION_FRACTION:.0%} of the training images",
        "validation_images": len(splits["validation"][1]),
        "test_images": len(splits["test"][1]),
        **sweep,
        "reference": {"bits_per_weight": REFERENCE_BITS, "test_drop_pp": REFERENCE_DROP_PP},
        "networks": results,
    }
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json.dumps(result, indent=2) + "\n", out / RESULTS_JSON)
    write_text_atomic(markdown(result), out / RESULTS_MD)
    plot_results(results, out / PLOT_NAME)
    return result


def check_settings(
    networks, *, cbd_bits, plain_bits, plain_layer_bits, cbd_channel_bits, bottlenecks
) -> None:
    """Checks the networks and every sweep setting before anything trains.

    Raises:
        ValueError: for an unknown network or an empty sweep; ``compress_model`` raises for
            bits or bottlenecks out of range.
    """
    unknown = [n for n in networks if n not in NETWORKS]
    if unknown or not networks:
        raise ValueError(f"Expected networks from {NETWORKS}, but got {list(networks)!r}.")
    cbd_sweep = bool((cbd_bits or cbd_channel_bits) and bottlenecks)
    if not cbd_sweep and not plain_bits and not plain_layer_bits:
        raise ValueError("Nothing to sweep: give CBD bits and bottlenecks or plain bits.")
    probe = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(2)])
    for j in (*cbd_bits, *cbd_channel_bits):
        for btn in bottlenecks:
            compress_model(probe, bits=j, bottleneck=btn)
    for b in (*plain_bits, *plain_layer_bits):
        compress_model(probe, bits=b, method="plain")
