"""Benchmark: CBD-compress an 11.7M-parameter ResNet-18-shaped Keras model.

The model is ResNet-18 (He et al. 2016; 224x224x3 input, 1000 classes) built from plain
``tf.keras`` layers with random weights; only ``compress_model`` is timed, not building the
model. ``run`` also reports whether it finished within ``TARGET_SECONDS``, a budget chosen for
this benchmark (the paper gives no compression times).

Usage::

    nice -n 10 python -m melius_larq.zoo.experiments.cbd_compression_time --out runs/bench_cbd

References:
    - [Composite Binary Decomposition Networks](https://arxiv.org/abs/1811.06668),
      Qiaoben et al., AAAI 2019 (ResNet-18 at 5.25 bits/weight).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from melius_larq._compat import tf
from melius_larq._io import write_text_atomic
from melius_larq.cbd import compress_model

__all__ = ["BITS", "BOTTLENECK", "TARGET_SECONDS", "resnet18", "run"]

BITS = 6  # the README example of the authors' code: -j 6 -bottleneck 0.5 for ResNet-18
BOTTLENECK = 0.5
TARGET_SECONDS = 60.0


def resnet18(input_shape=(224, 224, 3), classes: int = 1000, seed: int = 0) -> tf.keras.Model:
    """ResNet-18 (basic blocks 2-2-2-2) from plain Keras layers, randomly initialised."""
    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    inputs = layers.Input(input_shape)
    x = layers.ZeroPadding2D(3)(inputs)
    x = layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1")(x)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU()(x)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.MaxPooling2D(3, strides=2)(x)
    channels = 64
    for stage, filters in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            name = f"layer{stage}_{block}"
            shortcut = x
            y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                              name=f"{name}_conv1")(x)  # fmt: skip
            y = layers.BatchNormalization(name=f"{name}_bn1")(y)
            y = layers.ReLU()(y)
            y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
            y = layers.BatchNormalization(name=f"{name}_bn2")(y)
            if stride != 1 or channels != filters:
                shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                         name=f"{name}_downsample")(x)  # fmt: skip
                shortcut = layers.BatchNormalization(name=f"{name}_downsample_bn")(shortcut)
            x = layers.ReLU()(layers.Add()([y, shortcut]))
            channels = filters
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(classes, name="fc")(x)
    return tf.keras.Model(inputs, outputs, name="resnet18")


def run(out_dir: str | os.PathLike, *, bits: int = BITS, bottleneck: float = BOTTLENECK) -> dict:
    """Times ``compress_model`` on ResNet-18 and writes ``bench_cbd.json`` and the report.

    Returns:
        ``{"seconds", "params", "compressed_weights", "bits_per_weight", "target_seconds",
        "within_target", ...}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = resnet18()
    start = time.perf_counter()
    _, report = compress_model(model, bits=bits, bottleneck=bottleneck)
    seconds = time.perf_counter() - start
    result = {
        "model": model.name,
        "params": int(model.count_params()),
        "compressed_weights": report.total_weights,
        "compressed_layers": len(report.layers),
        "bits": bits,
        "bottleneck": bottleneck,
        "bits_per_weight": report.bits_per_weight,
        "seconds": seconds,
        "target_seconds": TARGET_SECONDS,
        "within_target": seconds <= TARGET_SECONDS,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "tensorflow": tf.__version__,
    }
    write_text_atomic(json.dumps(result, indent=2) + "\n", out / "bench_cbd.json")
    write_text_atomic(report.format_table() + "\n", out / "bench_cbd_report.md")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_cbd", help="output directory")
    parser.add_argument("--bits", type=int, default=BITS)
    parser.add_argument("--bottleneck", type=float, default=BOTTLENECK)
    args = parser.parse_args(argv)
    result = run(args.out, bits=args.bits, bottleneck=args.bottleneck)
    print(json.dumps(result, indent=2))
    return 0 if result["within_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
