"""The experiment's steps: train (or read back) every network over the learning-rate grid,
choose on validation, deploy the chosen runs, measure, and write the results."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from melius_larq.zoo.experiments.meliusnet_vs_mobilenet.networks import (
    DEFAULT_NETWORKS,
    DEFAULT_WIDTHS,
    FAMILIES,
    check_networks,
    compared_networks,
    network_accounting,
)
from melius_larq.zoo.experiments.meliusnet_vs_mobilenet.recipes import base_recipe
from melius_larq.zoo.experiments.meliusnet_vs_mobilenet.report import RESULTS_STEM, markdown, plot
from melius_larq.zoo.stats import mean_std

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


# Training and choosing ----------------------------------------------------------------------
def _train_or_read(recipe, run_dir: Path, data_dir, verbose) -> dict:
    """One run's record, trained or read back; its test accuracy is left out (read only for
    the chosen runs, by :func:`_test_accuracy`)."""
    from melius_larq.zoo.train import train_or_load

    record = train_or_load(recipe, run_dir, data_dir=data_dir, verbose=verbose)
    keys = ("learning_rate", "seed", "run_dir", "train_seconds")
    return {**{k: record[k] for k in keys}, "val_accuracy": record["metrics"]["val_accuracy"]}


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
    check_options(lrs=lrs, epochs=epochs, seeds=seeds, final_seeds=final_seeds,
                  calibration_images=calibration_images)  # fmt: skip
    latency = {**LATENCY, **(latency or {})}
    nets = compared_networks(networks, widths)
    recipes = {n["name"]: base_recipe(n, epochs, train_limit, overrides) for n in nets}
    # 1. train every (network, learning rate, seed), choose the rate on validation, then train
    #    the final seeds at the chosen rate only
    chosen_runs = {
        net["name"]: train_and_choose(
            recipes[net["name"]], Path(runs) / net["slug"], lrs=lrs, seeds=seeds,
            final_seeds=final_seeds, data_dir=data_dir, verbose=verbose,
        )
        for net in nets
    }  # fmt: skip
    # 2. deploy the chosen runs (the first seed's model) and measure every flatbuffer
    data = _evaluation_data(data_dir, calibration_images, eval_images)
    rows = [row for net in nets for row in _rows(net, chosen_runs[net["name"]], data)]
    # 3. latency: every flatbuffer in one process, taking turns
    _measure_latency(rows, latency)
    from melius_larq.deploy.bench import machine_info

    result = {
        "recipes": {name: r.to_dict() for name, r in recipes.items()},
        "learning_rates": [float(v) for v in lrs],
        "epochs": epochs,
        "seeds": list(seeds),
        "final_seeds": list(final_seeds),
        "train_limit": train_limit,
        "calibration_images": int(len(data["calibration"])),
        "eval_images": int(len(data["x_test"])),
        "latency": {**latency, "threads": 1},
        "machine": machine_info(),
        "rows": rows,
        "matched": _matched(rows),
    }
    _write(result, Path(results))
    return result


def check_options(*, lrs, epochs, seeds, final_seeds, calibration_images) -> None:
    """Checks the learning-rate grid, epochs, seeds and calibration images before training.

    Raises:
        ValueError: naming the bad value.
    """
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


def _evaluation_data(data_dir, calibration_images: int, eval_images: int | None) -> dict:
    """The int8 calibration images (the first training images) and the test images."""
    import numpy as np

    from melius_larq.zoo.data import load_fashion_mnist, preprocess_fashion_mnist

    train_images, _ = load_fashion_mnist("train", data_dir)
    test_images, test_labels = load_fashion_mnist("test", data_dir)
    return {
        "calibration": preprocess_fashion_mnist(train_images[:calibration_images]),
        "x_test": preprocess_fashion_mnist(test_images[:eval_images]),
        "y_test": np.asarray(test_labels[:eval_images]),
    }


def _rows(net: dict, chosen: dict, data: dict) -> list[dict]:
    """One network's rows: its deployments with the chosen runs' accuracies."""
    val = mean_std([r["val_accuracy"] for r in chosen["runs"]])
    # the test split, read for the chosen runs only (train() evaluates it once per run)
    test = mean_std([_test_accuracy(Path(r["run_dir"])) for r in chosen["runs"]])
    rows = _deploy(net, Path(chosen["runs"][0]["run_dir"]), data["calibration"], data["x_test"],
                   data["y_test"])  # fmt: skip
    for row in rows:
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
    return rows


def _measure_latency(rows: list[dict], latency: dict) -> None:
    """Adds every row's latency: all flatbuffers in one process, taking turns."""
    from melius_larq.deploy.bench import benchmark_alternating

    candidates = {r["name"]: (Path(r["flatbuffer"]).read_bytes(), r["xnnpack"]) for r in rows}
    timings = benchmark_alternating(candidates, num_threads=1, **latency)
    for row in rows:
        row["latency_ms"] = timings[row["name"]]["best_median_ms"]
        row["latency_medians_ms"] = timings[row["name"]]["medians_ms"]


def _write(result: dict, results: Path) -> None:
    from melius_larq._io import write_text_atomic

    results.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json.dumps(result, indent=2) + "\n", results / f"{RESULTS_STEM}.json")
    write_text_atomic(markdown(result), results / f"{RESULTS_STEM}.md")
    plot(result, results)
