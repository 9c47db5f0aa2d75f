"""Training throughput: images per second of ``model.fit`` steps on the CPU.

Each measurement builds the model under the requested precision policy, compiles it with the
authors' optimizer (RAdam) and sparse cross-entropy, runs ``warmup`` untimed steps (graph
tracing) and then times ``steps`` steps of one synthetic batch fed from memory, so the input
pipeline is not part of the number (``zoo`` measures that separately).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from melius_larq._compat import tf
from melius_larq.optimizers import RAdam
from melius_larq.precision import precision_policy

__all__ = ["training_throughput", "training_throughput_alternating"]


def training_throughput(
    build: Callable[[], tf.keras.Model],
    *,
    batch_size: int = 16,
    steps: int = 5,
    warmup: int = 2,
    precision: str = "float32",
    jit_compile: bool = False,
    input_shape: Sequence[int] = (224, 224, 3),
    num_classes: int = 1000,
) -> dict:
    """Images per second of training steps of the model that ``build()`` returns.

    Args:
        build: returns a fresh model (built under the precision policy set here).
        batch_size: images per step.
        steps: timed steps.
        warmup: untimed steps first (tracing and allocation).
        precision: Keras policy while building (:data:`melius_larq.precision.PRECISIONS`).
        jit_compile: compile the training step with XLA.
        input_shape: image shape.
        num_classes: classifier width.

    Returns:
        ``images_per_s``, ``step_ms`` (mean of the timed steps) and the settings.
    """
    if steps < 1 or warmup < 1 or batch_size < 1:
        raise ValueError(
            f"Expected steps, warmup and batch_size >= 1, but got {steps}, {warmup}, {batch_size}."
        )
    with precision_policy(precision):
        model = build()
    model.compile(optimizer=RAdam(0.002), jit_compile=jit_compile,
                  loss=tf.keras.losses.SparseCategoricalCrossentropy())  # fmt: skip
    rng = np.random.RandomState(0)
    x = rng.normal(size=(batch_size, *input_shape)).astype(np.float32)
    y = rng.randint(0, num_classes, batch_size)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(data, steps_per_epoch=warmup, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    del model
    tf.keras.backend.clear_session()
    return {
        "images_per_s": steps * batch_size / seconds,
        "step_ms": 1e3 * seconds / steps,
        "batch_size": batch_size,
        "steps": steps,
        "precision": precision,
        "jit_compile": jit_compile,
    }


def training_throughput_alternating(
    configs: dict[str, tuple[Callable[[], tf.keras.Model], str, bool]],
    *,
    rounds: int = 3,
    batch_size: int = 16,
    steps: int = 5,
    warmup: int = 2,
    input_shape: Sequence[int] = (224, 224, 3),
    num_classes: int = 1000,
) -> dict[str, dict]:
    """Images per second of several training configurations that take turns.

    Every configuration is built (under its precision policy), compiled and warmed up first;
    then each round runs ``steps`` timed steps of every configuration in turn, so that a slow
    phase of a shared machine hits all of them.

    Args:
        configs: ``{label: (build, precision, jit_compile)}``.
        rounds: rounds of turns.
        batch_size, steps, warmup, input_shape, num_classes: as :func:`training_throughput`.

    Returns:
        ``{label: {"images_per_s" (median over rounds), "min", "max", "per_round",
        "step_ms", "precision", "jit_compile", "batch_size", "steps"}}``.
    """
    if min(rounds, steps, warmup, batch_size) < 1:
        raise ValueError(
            f"Expected rounds, steps, warmup and batch_size >= 1, but got {rounds}, {steps}, "
            f"{warmup}, {batch_size}."
        )
    rng = np.random.RandomState(0)
    x = rng.normal(size=(batch_size, *input_shape)).astype(np.float32)
    y = rng.randint(0, num_classes, batch_size)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    models = {}
    for label, (build, precision, jit_compile) in configs.items():
        with precision_policy(precision):
            model = build()
        model.compile(optimizer=RAdam(0.002), jit_compile=jit_compile,
                      loss=tf.keras.losses.SparseCategoricalCrossentropy())  # fmt: skip
        model.fit(data, steps_per_epoch=warmup, epochs=1, verbose=0)
        models[label] = model
    per_round = {label: [] for label in configs}
    for _ in range(rounds):
        for label, model in models.items():
            start = time.perf_counter()
            model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
            per_round[label].append(steps * batch_size / (time.perf_counter() - start))
    del models
    tf.keras.backend.clear_session()
    result = {}
    for label, rates in per_round.items():
        median = float(np.median(rates))
        result[label] = {"images_per_s": median, "min": min(rates), "max": max(rates),
                         "per_round": rates, "step_ms": 1e3 * batch_size / median,
                         "precision": configs[label][1], "jit_compile": configs[label][2],
                         "batch_size": batch_size, "steps": steps}  # fmt: skip
    return result
