"""Binary MeliusNets against float and int8 MobileNet-v1 on Fashion-MNIST: accuracy by size,
operations and latency.

MeliusNet's title claim (Bethge et al. 2020, "MeliusNet: Can Binary Neural Networks Achieve
MobileNet-level Accuracy?") is that binary networks reach MobileNet-v1 accuracy (Howard et al.
2017, "MobileNets") at the same model size and the same number of operations. This experiment
measures that claim at small scale, on 28x28 Fashion-MNIST images and a 2-core CPU:

1. **Training.** Three MeliusNet-family binary networks (``MeliusNetTinyNarrow``,
   ``MeliusNetTiny``, ``MeliusNetTinyWide``; see :data:`SIBLINGS`) and the float MobileNet-v1 at
   three widths (0.125, 0.25, 0.5: their sizes bracket the binary networks') are trained
   under one recipe family (recipes ``mvm_binary_fashion_mnist`` and
   ``mvm_float_fashion_mnist``: RAdam, per-step cosine decay, batch 128, the same epochs and
   augmentation). Each network is trained at every learning rate
   of ``--lrs`` (and every seed of ``--seeds``); the learning rate with the best mean final
   validation top-1 (the last 10 % of the training images) is chosen. Test top-1 is reported
   once, for the chosen run of each network; the test accuracies of the other runs are never
   read. ``--final-seeds`` then trains further seeds at the chosen rate only, and the reported
   validation and test top-1 are their mean ± std.
2. **Deployment.** Every chosen binary network is converted to an LCE flatbuffer; every chosen
   MobileNet to a float TFLite flatbuffer and to an int8 one (TFLite full-integer post-training
   quantization, calibrated on the first training images). Each flatbuffer's test top-1 is
   measured too (for int8 it is that network's accuracy).
3. **Measurements** for every network, in one process on one machine: test top-1; size in MiB
   by the paper's accounting (binary weights 1 bit, others 32 bit; int8 rows 8 bit) and the
   flatbuffer's bytes; OPS = BOPs/64 + FLOPs (:func:`melius_larq.summary`); latency with one
   thread, the networks taking turns over ``--rounds`` rounds (each keeps its best median): LCE
   with the indirect BGEMM kernel for the binary networks, XNNPACK for both MobileNets.

Finished runs under ``--runs`` are read back instead of retrained (an unfinished one resumes),
and their flatbuffers are reused, so a re-run only measures and reports again. ``--results``
receives ``meliusnet_vs_mobilenet.json``, ``meliusnet_vs_mobilenet.md`` and the plots
``accuracy_vs_size.png``, ``accuracy_vs_ops.png`` and ``accuracy_vs_latency.png``.

Reproduce (one command; several CPU hours on 2 cores with the defaults, see the docs)::

    nice python -m melius_larq.zoo.experiments.meliusnet_vs_mobilenet --runs runs/mvm \\
        --results docs/meliusnet_vs_mobilenet

``--quick`` runs the whole pipeline on one binary network and one MobileNet width with one
epoch over at most 1,024 images, into ``runs/mvm_quick`` (to check it, not to measure anything).

References:
    - [MeliusNet: Can Binary Neural Networks Achieve MobileNet-level Accuracy?](
      https://arxiv.org/abs/2001.05936), Bethge et al. 2020.
    - [MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications](
      https://arxiv.org/abs/1704.04861), Howard et al. 2017.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from melius_larq.models import VARIANTS, VariantSpec
from melius_larq.zoo.recipes import apply_overrides, check_recipe, get_recipe

__all__ = [
    "BINARY_RECIPE",
    "DEFAULT_FINAL_SEEDS",
    "DEFAULT_NETWORKS",
    "DEFAULT_WIDTHS",
    "FLOAT_RECIPE",
    "SIBLINGS",
    "check_seeds",
    "choose_learning_rate",
    "create_sibling",
    "int8_tflite",
    "interpolate_log",
    "main",
    "network_accounting",
    "run",
    "train_and_choose",
]

BINARY_RECIPE = "mvm_binary_fashion_mnist"
FLOAT_RECIPE = "mvm_float_fashion_mnist"
# MeliusNetTiny's narrower and wider siblings for 28x28 inputs (small stem). Like the paper's
# 22/29/42/59 ladder they differ in blocks per stage and transition widths; the growth rate
# stays a multiple of 32 so that LCE bit-packs every binary conv's output into whole words.
# Channels: C_in of a transition = previous C_out + growth x blocks (MeliusNetTiny: 32 + 2 x 32
# = 96 -> 64, 64 + 64 = 128 -> 96, 96 + 64 = 160 -> 128, final 128 + 32 = 160).
SIBLINGS: dict[str, VariantSpec] = {
    s.name: s
    for s in (
        # one block per stage: 64 -> 32, 64 -> 64, 96 -> 96, final 128 channels
        VariantSpec("MeliusNetTinyNarrow", "meliusnet", (1, 1, 1, 1), (32, 64, 96),
                    growth_rate=32, stem_features=32, pool_padding="same"),
        # the paper's growth rate 64: 192 -> 128, 320 -> 192, 384 -> 256, final 384 channels
        VariantSpec("MeliusNetTinyWide", "meliusnet", (2, 3, 3, 2), (128, 192, 256),
                    growth_rate=64, stem_features=64, pool_padding="same"),
    )
}  # fmt: skip
DEFAULT_NETWORKS = ("MeliusNetTinyNarrow", "MeliusNetTiny", "MeliusNetTinyWide")
# Widths whose sizes bracket the binary networks' (0.09-1.1 MiB by the paper's accounting):
# MobileNet-v1 0.125 / 0.25 / 0.5 span about 0.23-3.2 MiB; 1.0 (about 12 MiB) would leave all
# but the widest binary network outside the MobileNet curve, where nothing is compared.
DEFAULT_WIDTHS = (0.125, 0.25, 0.5)
# A geometric grid (x4) around MeliusNetTiny's tuned 0.016 and the float networks' usual
# RAdam/Adam rates.
DEFAULT_LRS = (0.003, 0.012, 0.048)
DEFAULT_EPOCHS = 3
DEFAULT_SEEDS = (0,)
DEFAULT_FINAL_SEEDS = (1, 2)  # trained at each network's chosen rate only
CALIBRATION_IMAGES = 500  # first training images, for int8 calibration
LATENCY = {"rounds": 5, "runs": 50, "warmup": 10}
QUICK = {"networks": ("MeliusNetTinyNarrow",), "widths": (0.25,), "lrs": (0.006,),
         "epochs": 1, "seeds": (0,), "final_seeds": (), "train_limit": 1024, "calibration_images": 64,
         "eval_images": 256, "latency": {"rounds": 1, "runs": 3, "warmup": 1}}  # fmt: skip
RESULTS_STEM = "meliusnet_vs_mobilenet"
FAMILIES = {
    "binary": "MeliusNet (binary, LCE)",
    "float": "MobileNet-v1 (float, TFLite XNNPACK)",
    "int8": "MobileNet-v1 (int8, TFLite XNNPACK)",
}
_BITS = {"binary": 32, "float": 32, "int8": 8}  # bits per non-binary parameter


# Networks -----------------------------------------------------------------------------------
def create_sibling(
    name: str,
    *,
    input_shape=(28, 28, 1),
    num_classes: int = 10,
    stem: str = "small",
    **kwargs,
):
    """Builds one of the 28x28 siblings of ``MeliusNetTiny`` (:data:`SIBLINGS`).

    Args:
        name: ``"MeliusNetTinyNarrow"`` or ``"MeliusNetTinyWide"``.
        input_shape: ``(height, width, channels)``.
        num_classes: classifier outputs.
        stem: the stem (``"small"``: a 3x3 conv, BN, ReLU and a 2x2 max-pool).
        **kwargs: the other keyword arguments of the registry builders (``preset``,
            ``classifier_activation``, ``binarization``, ...).

    Returns:
        A ``tf.keras.Model``.

    Raises:
        ValueError: for an unknown name, or a bad argument of the builder.
    """
    from melius_larq.models import build_model

    if name not in SIBLINGS:
        raise ValueError(
            f"Unknown sibling network {name!r}; expected one of: {', '.join(SIBLINGS)}."
        )
    return build_model(SIBLINGS[name], input_shape=input_shape, num_classes=num_classes,
                       stem=stem, **kwargs)  # fmt: skip


def _binary_names() -> list[str]:
    family = [n for n, s in VARIANTS.items() if s.family == "meliusnet"]
    return [*SIBLINGS, *family]


def check_networks(networks: Sequence[str], widths: Sequence[float]) -> None:
    """Checks the network names and MobileNet widths before anything is trained.

    Raises:
        ValueError: naming an unknown network, a bad width, or a duplicate.
    """
    known = _binary_names()
    for name in networks:
        if name not in known:
            raise ValueError(
                f"Unknown MeliusNet network {name!r}; expected one of: {', '.join(known)}."
            )
    for width in widths:
        if (
            isinstance(width, bool)
            or not isinstance(width, (int, float))
            or not (math.isfinite(width) and 0 < width <= 4)
        ):
            raise ValueError(f"MobileNet width {width!r} must be a number in (0, 4].")
    for kind, values in (("network", list(networks)), ("width", list(widths))):
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"The {kind} {repeated[0]} is listed twice.")
    if not networks and not widths:
        raise ValueError("Nothing to compare: no networks and no widths.")


def _register_siblings() -> None:
    """Makes the :data:`SIBLINGS` trainable by name in recipes (``zoo.train.register_model``);
    they stay out of the registry, which would put them into every registry-wide test."""
    from melius_larq.zoo import train as train_module

    for name in SIBLINGS:
        if name not in train_module._EXTRA_BUILDERS:
            train_module.register_model(name, functools.partial(create_sibling, name))


def _networks(networks, widths) -> list[dict]:
    out = [{"name": n, "kind": "binary", "slug": n.lower()} for n in networks]
    out += [
        {"name": f"MobileNetV1-{w:g}", "kind": "float", "width": float(w),
         "slug": f"mobilenetv1_{w:g}"}
        for w in widths
    ]  # fmt: skip
    return out


def _base_recipe(network: dict, epochs: int, train_limit, overrides):
    if network["kind"] == "binary":
        recipe = dataclasses.replace(get_recipe(BINARY_RECIPE), model=network["name"],
                                     name=f"mvm_{network['slug']}")  # fmt: skip
    else:
        recipe = dataclasses.replace(get_recipe(FLOAT_RECIPE), width=network["width"],
                                     name=f"mvm_{network['slug']}")  # fmt: skip
    recipe = apply_overrides(recipe, overrides)
    recipe = dataclasses.replace(recipe, epochs=epochs, train_limit=train_limit)
    check_recipe(recipe)
    return recipe


# Accounting ---------------------------------------------------------------------------------
def network_accounting(model, *, kind: str = "binary") -> dict:
    """The paper's size and operation counts of a model, for one of its deployments.

    ``kind`` is ``"binary"`` or ``"float"`` (non-binary parameters at 32 bit, the paper's rule)
    or ``"int8"`` (the same network with its parameters stored at 8 bit). OPS are the paper's
    BOPs/64 + FLOPs, with an int8 multiply-accumulate counted as one FLOP.

    Returns:
        ``{"params", "binary_params", "bops", "flops", "ops", "size_mib_paper"}``.
    """
    import melius_larq

    if kind not in _BITS:
        raise ValueError(f"Unknown deployment {kind!r}; expected one of: {', '.join(_BITS)}.")
    counts = melius_larq.summary(model, print_fn=None)
    other = counts["total_params"] - counts["binary_params"]
    return {
        "params": counts["total_params"],
        "binary_params": counts["binary_params"],
        "bops": counts["bops"],
        "flops": counts["flops"],
        "ops": counts["ops"],
        "size_mib_paper": (other * _BITS[kind] + counts["binary_params"]) / 8 / 2**20,
    }


# Training and choosing ----------------------------------------------------------------------
def _train_or_read(recipe, run_dir: Path, data_dir, verbose) -> dict:
    """One run's record: trained into ``run_dir``, or read back when it has finished there."""
    from melius_larq._compat import tf
    from melius_larq.zoo import train as train_module

    config = run_dir / "config.json"
    train_module.check_run_settings(recipe, run_dir)
    if not (run_dir / "metrics.json").exists():
        print(f"\n== {run_dir} ==", flush=True)
        start = time.perf_counter()
        _register_siblings()
        train_module.train(recipe, run_dir, resume=config.exists(), data_dir=data_dir,
                           verbose=verbose)  # fmt: skip
        seconds = round(time.perf_counter() - start, 1)
        from melius_larq._io import write_text_atomic

        write_text_atomic(json.dumps({"train_seconds": seconds}) + "\n",
                          run_dir / "experiment.json")  # fmt: skip
        tf.keras.backend.clear_session()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    extra = run_dir / "experiment.json"
    return {
        "learning_rate": recipe.learning_rate,
        "seed": recipe.seed,
        "run_dir": str(run_dir),
        "val_accuracy": metrics["val_accuracy"],
        "train_seconds": json.loads(extra.read_text()).get("train_seconds")
        if extra.exists()
        else None,
    }


def _test_accuracy(run_dir: Path) -> float:
    return json.loads((run_dir / "metrics.json").read_text())["test_accuracy"]


def choose_learning_rate(runs: Sequence[dict]) -> float:
    """The learning rate whose runs have the best mean final validation top-1.

    Test accuracy is not looked at. On a tie the rate listed first wins.

    Args:
        runs: records with ``learning_rate`` and ``val_accuracy`` (one per seed and rate).

    Raises:
        ValueError: for no runs.
    """
    if not runs:
        raise ValueError("No runs to choose a learning rate from.")
    rates = list(dict.fromkeys(r["learning_rate"] for r in runs))
    mean = {
        lr: statistics.fmean(r["val_accuracy"] for r in runs if r["learning_rate"] == lr)
        for lr in rates
    }
    return max(rates, key=lambda lr: mean[lr])  # max keeps the first on ties


def check_seeds(seeds: Sequence[int], final_seeds: Sequence[int] = ()) -> None:
    """Checks the seeds of the choice and the final seeds before anything is trained.

    Raises:
        ValueError: for no seeds, a seed that is not a non-negative integer, or a seed listed
            twice (also across the two lists), naming it.
    """
    if not seeds:
        raise ValueError("No seeds given.")
    everything = [*seeds, *final_seeds]
    for seed in everything:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"Seed {seed!r} must be a non-negative integer.")
        if everything.count(seed) > 1:
            raise ValueError(f"Seed {seed} is listed twice (seeds and final seeds must differ).")


def train_and_choose(
    recipe,
    network_dir: Path,
    *,
    lrs: Sequence[float],
    seeds: Sequence[int],
    final_seeds: Sequence[int] = (),
    data_dir: str | None = None,
    verbose: int = 2,
) -> dict:
    """Trains (or reads back) one network over the grid, chooses its rate, adds final seeds.

    Every learning rate of ``lrs`` is trained with every seed of ``seeds`` into
    ``network_dir/lr=<lr>/seed_<n>``; the rate with the best mean final validation top-1 is
    chosen (:func:`choose_learning_rate`); then each of ``final_seeds`` is trained at that
    rate only. No test accuracy is read here.

    Returns:
        ``{"learning_rate", "runs", "val_by_lr"}``: the chosen rate, the records of its runs
        (choice seeds first, then the final seeds) and the mean validation top-1 of every rate
        over ``seeds``.
    """

    def one(lr: float, seed: int) -> dict:
        run_dir = network_dir / f"lr={lr:g}" / f"seed_{seed}"
        return _train_or_read(
            dataclasses.replace(recipe, learning_rate=float(lr), seed=seed), run_dir, data_dir,
            verbose,
        )  # fmt: skip

    records = [one(lr, seed) for lr in lrs for seed in seeds]
    lr = choose_learning_rate(records)
    grid = {
        f"{rate:g}": statistics.fmean(
            r["val_accuracy"] for r in records if r["learning_rate"] == rate
        )
        for rate in dict.fromkeys(r["learning_rate"] for r in records)
    }
    final = [r for r in records if r["learning_rate"] == lr]
    final += [one(lr, seed) for seed in final_seeds]
    return {"learning_rate": lr, "runs": final, "val_by_lr": grid}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


# Deployment ---------------------------------------------------------------------------------
def int8_tflite(model, calibration) -> bytes:
    """TFLite full-integer post-training quantization of a float model (float input/output).

    Weights are int8 per output channel and activations int8 per tensor, with ranges from
    ``calibration`` (preprocessed images); BatchNorms fold into the convolutions before
    quantization, so that XNNPACK runs every layer in int8.

    Raises:
        ValueError: for no calibration images.
    """
    import numpy as np

    from melius_larq._compat import tf
    from melius_larq.deploy.convert import inference_saved_model

    x = np.asarray(calibration, np.float32)
    if len(x) == 0:
        raise ValueError("int8 quantization needs calibration images; got none.")
    spec = tf.TensorSpec((1, *model.input_shape[1:]), tf.float32, name="input")
    with inference_saved_model(model, spec) as saved_model:
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[i : i + 1]] for i in range(len(x)))
        return converter.convert()


def _cached(path: Path, make) -> bytes:
    from melius_larq._io import write_atomic

    if path.exists():
        return path.read_bytes()
    buf = make()
    write_atomic(buf, path)
    return buf


def _flatbuffer_accuracy(buf: bytes, xnnpack: bool, x, y) -> float:
    import numpy as np

    from melius_larq.deploy.verify import lce_interpreter, run_lce

    interpreter = lce_interpreter(buf, use_xnnpack=xnnpack)
    return float(np.mean(run_lce(buf, x, interpreter=interpreter).argmax(-1) == y))


def _deploy(network: dict, run_dir: Path, calibration, x_test, y_test) -> list[dict]:
    """Flatbuffers and accounting of one chosen network: one row per deployment."""
    from melius_larq._compat import tf
    from melius_larq.deploy.bench import float_tflite
    from melius_larq.deploy.convert import convert_model

    model = tf.keras.models.load_model(run_dir / "model.keras", compile=False, safe_mode=True)
    if network["kind"] == "binary":
        targets = [("binary", "model_lce.tflite", lambda: convert_model(model), False)]
    else:
        cal = f"model_int8_cal{len(calibration)}.tflite"
        targets = [("float", "model_float.tflite", lambda: float_tflite(model), True),
                   ("int8", cal, lambda: int8_tflite(model, calibration), True)]  # fmt: skip
    rows = []
    for kind, filename, make, xnnpack in targets:
        buf = _cached(run_dir / filename, make)
        name = network["name"] + (" int8" if kind == "int8" else "")
        rows.append({
            "name": name, "network": network["name"], "kind": kind, "family": FAMILIES[kind],
            "width": network.get("width"), "flatbuffer": str(run_dir / filename),
            "flatbuffer_bytes": len(buf), "flatbuffer_mib": len(buf) / 2**20,
            "xnnpack": xnnpack,
            "flatbuffer_test_accuracy": _flatbuffer_accuracy(buf, xnnpack, x_test, y_test),
            **network_accounting(model, kind=kind),
        })  # fmt: skip
    tf.keras.backend.clear_session()
    return rows


def interpolate_log(points: Sequence[tuple[float, float]], x: float) -> float | None:
    """The value at ``x`` of the piecewise-linear curve through ``(x, y)`` points in log x.

    Returns None outside the points' range (no extrapolation) or for no points.
    """
    pts = sorted((float(a), float(b)) for a, b in points if a > 0)
    if not pts or x <= 0 or not pts[0][0] <= x <= pts[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            if x1 == x0:
                return max(y0, y1)
            t = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + t * (y1 - y0)
    return pts[0][1]  # a single point equal to x


def _matched(rows: list[dict]) -> list[dict]:
    """For each binary row, the float MobileNet's test top-1 interpolated at its size and OPS."""
    floats = [r for r in rows if r["kind"] == "float"]
    out = []
    for r in (r for r in rows if r["kind"] == "binary"):
        entry = {"name": r["name"], "test_accuracy": r["test_accuracy"]}
        for key in ("size_mib_paper", "ops", "latency_ms"):
            if r.get(key) is None:
                continue
            at = interpolate_log([(f[key], f["test_accuracy"]) for f in floats if f.get(key)],
                                 r[key])  # fmt: skip
            entry[f"mobilenet_at_{key}"] = at
            entry[f"difference_at_{key}"] = None if at is None else r["test_accuracy"] - at
        out.append(entry)
    return out


# The experiment -----------------------------------------------------------------------------
def run(
    runs: str | Path = "runs/mvm",
    results: str | Path = "docs/meliusnet_vs_mobilenet",
    *,
    networks: Sequence[str] = DEFAULT_NETWORKS,
    widths: Sequence[float] = DEFAULT_WIDTHS,
    lrs: Sequence[float] = DEFAULT_LRS,
    epochs: int = DEFAULT_EPOCHS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    final_seeds: Sequence[int] = DEFAULT_FINAL_SEEDS,
    train_limit: int | None = None,
    overrides: dict | Sequence[str] = (),
    calibration_images: int = CALIBRATION_IMAGES,
    eval_images: int | None = None,
    latency: dict | None = None,
    data_dir: str | None = None,
    verbose: int = 2,
) -> dict:
    """Trains (or reads back), chooses, deploys and measures every network; writes the results.

    Args:
        runs: directory of the training runs (``<network>/lr=<lr>/seed_<n>``) and of their
            flatbuffers.
        results: directory of the JSON, Markdown and PNG results.
        networks: MeliusNet-family binary networks: names of :data:`SIBLINGS` or of the
            registry's MeliusNets (all trained with the small stem at 28x28).
        widths: MobileNet-v1 width multipliers.
        lrs: the learning-rate grid of every network.
        epochs: training epochs of every run.
        seeds: seeds of every learning rate; the choice uses their mean validation top-1.
        final_seeds: further seeds trained at the chosen learning rate only, after the
            choice; the reported validation and test top-1 are the mean ± std over
            ``seeds`` and ``final_seeds`` at that rate.
        train_limit: train on the first N training images only (quick checks).
        overrides: recipe overrides of every run (``key=value`` strings or a dict), e.g.
            ``{"augment": "none"}``; the same for both families.
        calibration_images: first training images used to calibrate int8.
        eval_images: first test images on which each flatbuffer's top-1 is measured (None: all).
        latency: ``{"rounds", "runs", "warmup"}`` of the alternating latency measurement.
        data_dir: Fashion-MNIST directory (default: the package's search order).
        verbose: Keras progress output of each run.

    Returns:
        The results dictionary written to ``meliusnet_vs_mobilenet.json``.

    Raises:
        ValueError: for unknown networks, bad widths, learning rates, epochs or seeds (before
            any training), or a runs directory that holds runs with other settings.
    """
    check_networks(networks, widths)
    for lr in lrs:
        if (
            isinstance(lr, bool)
            or not isinstance(lr, (int, float))
            or not (math.isfinite(lr) and lr > 0)
        ):
            raise ValueError(f"Learning rate {lr!r} must be a finite number > 0.")
    if not lrs:
        raise ValueError("The learning-rate grid is empty.")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r} must be a positive integer.")
    check_seeds(seeds, final_seeds)
    if calibration_images < 1:
        raise ValueError(f"calibration_images={calibration_images!r} must be >= 1.")
    latency = {**LATENCY, **(latency or {})}
    runs, results = Path(runs), Path(results)
    nets = _networks(networks, widths)
    recipes = {n["name"]: _base_recipe(n, epochs, train_limit, overrides) for n in nets}

    # 1. train every (network, learning rate, seed), choose the rate on validation, then train
    #    the final seeds at the chosen rate only
    chosen_runs = {
        net["name"]: train_and_choose(
            recipes[net["name"]], runs / net["slug"], lrs=lrs, seeds=seeds,
            final_seeds=final_seeds, data_dir=data_dir, verbose=verbose,
        )
        for net in nets
    }  # fmt: skip

    # 2. deploy the chosen runs (the first seed's model) and measure every flatbuffer
    import numpy as np

    from melius_larq.zoo.data import load_fashion_mnist, preprocess_fashion_mnist

    train_images, _ = load_fashion_mnist("train", data_dir)
    calibration = preprocess_fashion_mnist(train_images[:calibration_images])
    test_images, test_labels = load_fashion_mnist("test", data_dir)
    x_test = preprocess_fashion_mnist(test_images[:eval_images])
    y_test = np.asarray(test_labels[:eval_images])
    rows = []
    for net in nets:
        chosen = chosen_runs[net["name"]]
        val = _mean_std([r["val_accuracy"] for r in chosen["runs"]])
        # the test split, read for the chosen runs only (train() evaluates it once per run)
        test = _mean_std([_test_accuracy(Path(r["run_dir"])) for r in chosen["runs"]])
        for row in _deploy(net, Path(chosen["runs"][0]["run_dir"]), calibration, x_test, y_test):
            row.update(
                learning_rate=chosen["learning_rate"], val_by_lr=chosen["val_by_lr"],
                val_accuracy=val[0], val_std=val[1],
                keras_test_accuracy=test[0], keras_test_std=test[1],
                seeds=[r["seed"] for r in chosen["runs"]],
                train_seconds=sum(r["train_seconds"] or 0 for r in chosen["runs"]),
            )  # fmt: skip
            # an int8 network's accuracy is its flatbuffer's; the others are the trained models'
            int8 = row["kind"] == "int8"
            row["test_accuracy"] = row["flatbuffer_test_accuracy"] if int8 else test[0]
            row["test_std"] = None if int8 else test[1]
            rows.append(row)

    # 3. latency: every flatbuffer in one process, taking turns
    from melius_larq.deploy.bench import benchmark_alternating, machine_info

    candidates = {r["name"]: (Path(r["flatbuffer"]).read_bytes(), r["xnnpack"]) for r in rows}
    timings = benchmark_alternating(candidates, num_threads=1, **latency)
    for row in rows:
        row["latency_ms"] = timings[row["name"]]["best_median_ms"]
        row["latency_medians_ms"] = timings[row["name"]]["medians_ms"]

    result = {
        "recipes": {name: r.to_dict() for name, r in recipes.items()},
        "learning_rates": [float(v) for v in lrs],
        "epochs": epochs,
        "seeds": list(seeds),
        "final_seeds": list(final_seeds),
        "train_limit": train_limit,
        "calibration_images": int(len(calibration)),
        "eval_images": int(len(x_test)),
        "latency": {**latency, "threads": 1},
        "machine": machine_info(),
        "rows": rows,
        "matched": _matched(rows),
    }
    results.mkdir(parents=True, exist_ok=True)
    from melius_larq._io import write_text_atomic

    write_text_atomic(json.dumps(result, indent=2) + "\n", results / f"{RESULTS_STEM}.json")
    write_text_atomic(markdown(result), results / f"{RESULTS_STEM}.md")
    plot(result, results)
    return result


# Reports ------------------------------------------------------------------------------------
def _pct(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}" + ("" if not std else f" ± {100 * std:.2f}")


def markdown(result: dict) -> str:
    """The results as Markdown: the main table, the learning-rate grid and the matched rows."""
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
            f"{_pct(r['val_accuracy'], r['val_std'])} | {_pct(r['test_accuracy'], r['test_std'])} "
            f"| {r['size_mib_paper']:.3f} | {r['flatbuffer_mib']:.3f} | {r['ops']:.3g} | "
            f"{r['bops']:.3g} | {r['flops']:.3g} | {r['latency_ms']:.3f} |"
        )
    lines += [
        "",
        "Size (paper): binary weights 1 bit, other parameters 32 bit (int8 rows: 8 bit), "
        "BatchNorm 2 parameters per channel. OPS = BOPs/64 + FLOPs, with convolution MACs and "
        "the fully connected layer not counted. Flatbuffer MiB: the deployed file's bytes.",
        "",
        "Validation top-1 (%) by learning rate (mean over seeds):",
        "",
        "| network | " + " | ".join(f"lr {v:g}" for v in result["learning_rates"]) + " |",
        "| --- |" + " ---: |" * len(result["learning_rates"]),
    ]
    for r in result["rows"]:
        if r["kind"] != "int8":
            cells = [_pct(r["val_by_lr"].get(f"{v:g}")) for v in result["learning_rates"]]
            lines.append(f"| {r['network']} | " + " | ".join(cells) + " |")
    lines += [
        "",
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
            cells += [_pct(at), "-" if diff is None else f"{100 * diff:+.2f}"]
        lines.append(f"| {e['name']} | {_pct(e['test_accuracy'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


PLOTS = {
    "accuracy_vs_size.png": (("size_mib_paper", "size (MiB, paper accounting)"),
                             ("flatbuffer_mib", "flatbuffer size (MiB)")),
    "accuracy_vs_ops.png": (("ops", "OPS = BOPs/64 + FLOPs"),),
    "accuracy_vs_latency.png": (("latency_ms", "latency (ms, 1 thread)"),),
}  # fmt: skip


def plot(result: dict, directory: Path) -> None:
    """Writes the three plots of :data:`PLOTS` (test top-1 against x, one line per family)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m melius_larq.zoo.experiments.meliusnet_vs_mobilenet", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument(
        "--runs", help="training runs (default runs/mvm; runs/mvm_quick with --quick)"
    )
    parser.add_argument("--results", help="results directory (default docs/meliusnet_vs_mobilenet; "
                        "runs/mvm_quick/results with --quick)")  # fmt: skip
    parser.add_argument("--networks", nargs="+", help="binary networks (default: "
                        f"{' '.join(DEFAULT_NETWORKS)})")  # fmt: skip
    parser.add_argument("--widths", type=float, nargs="+", help="MobileNet-v1 widths (default: "
                        f"{' '.join(map(str, DEFAULT_WIDTHS))})")  # fmt: skip
    parser.add_argument("--lrs", type=float, nargs="+", help="learning-rate grid (default: "
                        f"{' '.join(map(str, DEFAULT_LRS))})")  # fmt: skip
    parser.add_argument(
        "--epochs", type=int, help=f"epochs of every run (default {DEFAULT_EPOCHS})"
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds of the learning-rate "
                        "choice (default 0)")  # fmt: skip
    parser.add_argument("--final-seeds", type=int, nargs="*", help="further seeds trained at "
                        "each network's chosen learning rate only (default "
                        f"{' '.join(map(str, DEFAULT_FINAL_SEEDS))}; none to skip)")  # fmt: skip
    parser.add_argument("--train-limit", type=int, help="train on the first N images only")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="recipe overrides of every run")  # fmt: skip
    parser.add_argument("--eval-images", type=int, help="test images per flatbuffer (default all)")
    parser.add_argument("--rounds", type=int, help=f"latency rounds (default {LATENCY['rounds']})")
    parser.add_argument("--quick", action="store_true", help="check the pipeline in a minute: "
                        "one network of each family, one epoch, 1,024 images")  # fmt: skip
    parser.add_argument("--data-dir")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)
    options = {"networks": DEFAULT_NETWORKS, "widths": DEFAULT_WIDTHS, "lrs": DEFAULT_LRS,
               "epochs": DEFAULT_EPOCHS, "seeds": DEFAULT_SEEDS,
               "final_seeds": DEFAULT_FINAL_SEEDS,
               "train_limit": None,
               "calibration_images": CALIBRATION_IMAGES, "eval_images": None,
               "latency": dict(LATENCY)}  # fmt: skip
    runs, results = "runs/mvm", "docs/meliusnet_vs_mobilenet"
    if args.quick:  # its numbers measure nothing: kept out of the real runs and the docs
        options.update(QUICK)
        runs, results = "runs/mvm_quick", "runs/mvm_quick/results"
    for key in (
        "networks",
        "widths",
        "lrs",
        "epochs",
        "seeds",
        "final_seeds",
        "train_limit",
        "eval_images",
    ):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.rounds is not None:
        options["latency"] = {**options["latency"], "rounds": args.rounds}
    try:
        result = run(args.runs or runs, args.results or results, overrides=args.set,
                     data_dir=args.data_dir, verbose=args.verbose, **options)  # fmt: skip
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
