"""Which rule of the int8 rewrite buys how much accuracy, on a trained Fashion-MNIST model,
and which rounding moves its predictions.

Every arm converts the same trained Keras model with
:func:`melius_larq.deploy.int8.convert_int8`'s pipeline, changing one rule of
:func:`~melius_larq.deploy.int8.prepare_for_int8` (or adding quantization-aware
fine-tuning), and scores the int8 flatbuffer on the validation split (the last 10 % of the
training images): top-1 accuracy and top-1 agreement with the float Keras model. The test set
is not used. Calibration: the first training images.

A second table takes the default int8 path apart, each row's top-1 agreement on the same
images: the int8 flatbuffer against float Keras; the fake-quantized Keras model
(:func:`~melius_larq.deploy.int8.int8_keras_model`, TensorFlow's simulation of int8, no
TFLite) against float Keras; the flatbuffer against that simulation; int8 weights with float
activations (:func:`~melius_larq.deploy.int8.convert_int8_weights`); and the int8 weights of
one float kernel at a time, everything else float32.

Usage (the demo's model)::

    python -m melius_larq.zoo.experiments.int8_ablation runs/demo/train/model.keras \\
        --results docs/int8_ablation

Writes ``results.json`` and ``results.md`` into ``--results``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import melius_larq  # noqa: F401  (sets up Keras 2 before TensorFlow)
from melius_larq._compat import tf
from melius_larq._io import write_text_atomic
from melius_larq.zoo.stats import percent

__all__ = ["ARMS", "float_kernel_layers", "main", "markdown", "run", "sources"]

# name -> prepare_for_int8 options; "qat_lr" adds one epoch of fine-tuning at that rate.
ARMS: dict[str, dict] = {
    "all rules (default)": {},
    "without the concatenation scaling": {"normalize_concat_inputs": False},
    "with every other BatchNorm normalised": {"normalize_batchnorms": True},
    "with every other BatchNorm normalised, without the concatenation scaling": {
        "normalize_batchnorms": True,
        "normalize_concat_inputs": False,
    },
    "without the dead-channel rule": {"constant_dead_channels": False},
    "default + fine-tuning, Adam 3e-5": {"qat_lr": 3e-5},
    "default + fine-tuning, Adam 3e-4": {"qat_lr": 3e-4},
}


def _convert(model, calibration, options: dict, qat_data) -> bytes:
    from melius_larq.deploy.int8 import convert_int8

    options = dict(options)
    qat_lr = options.pop("qat_lr", None)
    qat = (
        {}
        if qat_lr is None
        else {"qat_data": qat_data, "qat_epochs": 1, "qat_learning_rate": qat_lr}
    )
    return convert_int8(model, calibration, **qat, **options)


# Run ----------------------------------------------------------------------------------------
def run(
    model_path: str,
    results: str,
    *,
    calibration_samples: int = 500,
    qat_samples: int = 16384,
    arms: dict[str, dict] | None = None,
    data_dir: str | None = None,
) -> dict:
    """Converts the model once per arm and returns (and writes) the validation accuracies."""
    from melius_larq.deploy.verify import keras_outputs, run_lce
    from melius_larq.zoo.data import load_fashion_mnist, preprocess_fashion_mnist, split_sizes

    model = tf.keras.models.load_model(model_path)
    images, labels = load_fashion_mnist("train", data_dir)
    n_train, _ = split_sizes(len(images), 0.1)
    x = preprocess_fashion_mnist(images)
    x_val, y_val = x[n_train:], labels[n_train:]
    calibration = x[:calibration_samples]
    qat_data = (x[:qat_samples], labels[:qat_samples])
    float_out = keras_outputs(model, x_val)
    out = {"model": str(model_path), "validation_images": int(len(y_val)),
           "calibration_images": int(len(calibration)), "qat_images": int(len(qat_data[0])),
           "float_val_accuracy": _top1(float_out, y_val), "arms": {}}  # fmt: skip
    default_out = None
    for name, options in (arms or ARMS).items():
        start = time.perf_counter()
        buf = _convert(model, calibration, options, qat_data)
        got = run_lce(buf, x_val)
        if not options:  # the default path, taken apart below
            default_out = got
        out["arms"][name] = {"options": options, "val_accuracy": _top1(got, y_val),
                             "agreement": _agreement(got, float_out), "bytes": len(buf),
                             "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
        print(f"{name}: {percent(out['arms'][name]['val_accuracy'])} %", flush=True)
    out["sources"] = sources(model, calibration, x_val, float_out, int8_out=default_out)
    path = Path(results)
    path.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json.dumps(out, indent=2) + "\n", path / "results.json")
    write_text_atomic(markdown(out), path / "results.md")
    return out


def _top1(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(outputs.argmax(1) == labels))


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(1) == b.argmax(1)))


def float_kernel_layers(model) -> list:
    """The model's float (not binary) Conv2D and Dense layers, in order."""
    import larq as lq

    binary = (lq.layers.QuantConv2D, lq.layers.QuantDense)
    return [layer for layer in model.layers
            if isinstance(layer, tf.keras.layers.Conv2D | tf.keras.layers.Dense)
            and not isinstance(layer, binary)]  # fmt: skip


def sources(
    model, calibration: np.ndarray, x: np.ndarray, float_out: np.ndarray, *, int8_out=None
) -> list[dict]:
    """Top-1 agreement of the default int8 path's parts on ``x`` (see the module docstring).

    ``int8_out``, the default int8 flatbuffer's outputs on ``x`` when already computed, saves
    its conversion.

    Returns:
        ``[{"what", "against", "agreement"}, ...]``; the rows of one float kernel's int8
        weights also carry ``"layer"`` and ``"weights"``.
    """
    from melius_larq.deploy import convert_model, op_inventory
    from melius_larq.deploy.int8 import convert_int8, int8_keras_model, store_weights_int8
    from melius_larq.deploy.verify import keras_outputs, run_lce

    lce_int8 = run_lce(convert_int8(model, calibration), x) if int8_out is None else int8_out
    simulated = keras_outputs(int8_keras_model(model, calibration), x)
    float_buf = convert_model(model)
    rows = [
        {"what": "int8 flatbuffer (`--int8`)", "against": "float Keras",
         "agreement": _agreement(lce_int8, float_out)},
        {"what": "fake-quantized Keras model (TensorFlow, no TFLite)", "against": "float Keras",
         "agreement": _agreement(simulated, float_out)},
        {"what": "int8 flatbuffer (`--int8`)", "against": "its fake-quantized Keras model",
         "agreement": _agreement(lce_int8, simulated)},
        {"what": "int8 weights, float activations (`--int8-weights`)", "against": "float Keras",
         "agreement": _agreement(run_lce(store_weights_int8(float_buf), x), float_out)},
    ]  # fmt: skip
    layers = float_kernel_layers(model)
    for layer in layers:
        others = tuple(other.name for other in layers if other is not layer)
        buf = store_weights_int8(float_buf, skip=others)
        if op_inventory(buf).get("DEQUANTIZE", 0) != 1:
            raise RuntimeError(f"the int8 weights of {layer.name!r} alone were not isolated")
        rows.append({"what": f"int8 weights of `{layer.name}` alone", "against": "float Keras",
                     "layer": layer.name, "weights": int(np.prod(layer.kernel.shape)),
                     "agreement": _agreement(run_lce(buf, x), float_out)})  # fmt: skip
    return rows


# Report -------------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    """The results as a Markdown table: validation top-1 and bytes of every arm."""
    lines = [
        f"int8 flatbuffers of `{result['model']}`, top-1 on the "
        f"{result['validation_images']:,} validation images (float Keras: "
        f"{percent(result['float_val_accuracy'])} %); calibration on the first "
        f"{result['calibration_images']} training images.",
        "",
        "| int8 path | validation top-1 | agreement with float Keras | bytes |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, arm in result["arms"].items():
        lines.append(f"| {name} | {percent(arm['val_accuracy'])} % | "
                     f"{percent(arm['agreement'])} % | {arm['bytes']:,} |")  # fmt: skip
    lines += ["", "Top-1 agreement of the default int8 path's parts, on the same images:", "",
              "| what | against | top-1 agreement |", "| --- | --- | ---: |"]  # fmt: skip
    for row in result["sources"]:
        what = row["what"] + (f" ({row['weights']:,} weights)" if "weights" in row else "")
        lines.append(f"| {what} | {row['against']} | {percent(row['agreement'])} % |")
    return "\n".join(lines) + "\n"


# Command line -------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m melius_larq.zoo.experiments.int8_ablation",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("model", help="a trained Fashion-MNIST .keras model")
    parser.add_argument("--results", required=True, help="output directory")
    parser.add_argument("--calibration-samples", type=int, default=500)
    parser.add_argument("--qat-samples", type=int, default=16384)
    parser.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    args = parser.parse_args(argv)
    for flag in ("calibration_samples", "qat_samples"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if not Path(args.model).is_file():
        parser.error(f"no model file {args.model!r}")
    run(args.model, args.results, calibration_samples=args.calibration_samples,
        qat_samples=args.qat_samples, data_dir=args.data_dir)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
