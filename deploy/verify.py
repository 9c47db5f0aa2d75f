"""Verification: the LCE interpreter against Keras on the same inputs."""

from __future__ import annotations

import numpy as np

from melius_larq._compat import tf
from melius_larq.deploy._lce import import_lce
from melius_larq.deploy.flatbuffer import input_shape, load_flatbuffer

__all__ = ["DEFAULT_MIN_AGREEMENT", "lce_interpreter", "run_lce", "verify_flatbuffer"]

# Top-1 agreement below which verification fails. A binary network whose signs all match
# agrees exactly; float re-association in the BN fold can flip a sign that sits at 0 within
# round-off, which changes a prediction only for near-ties.
DEFAULT_MIN_AGREEMENT = 0.999


def lce_interpreter(buf, *, num_threads: int = 1, use_xnnpack: bool = False):
    """An LCE interpreter with the fastest correct kernels for this machine.

    On every platform the indirect BGEMM kernel is used: on x86 it is about 5x faster than the
    default (ruy) kernel and it is the only fast kernel that runs grouped binary convolutions.
    """
    lce = import_lce()
    return lce.testing.Interpreter(
        load_flatbuffer(buf),
        num_threads=num_threads,
        use_indirect_bgemm=True,
        use_xnnpack=use_xnnpack,
    )


def _quantize_input(x, interpreter):
    if interpreter.input_types[0] == np.int8:
        scale, zero = interpreter.input_scales[0], interpreter.input_zero_points[0]
        return np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
    return x.astype(np.float32)


def _dequantize_output(y, interpreter):
    if interpreter.output_types[0] == np.int8:
        scale, zero = interpreter.output_scales[0], interpreter.output_zero_points[0]
        return (y.astype(np.float32) - zero) * scale
    return y


def run_lce(buf, x: np.ndarray, *, interpreter=None, batch_progress: bool = False) -> np.ndarray:
    """Runs the flatbuffer on a batch (one sample at a time), de/quantizing int8 I/O."""
    interpreter = interpreter or lce_interpreter(buf)
    xq = _quantize_input(np.asarray(x), interpreter)
    if batch_progress:
        from tqdm.auto import tqdm

        outs = [interpreter.predict(xq[i : i + 1]) for i in tqdm(range(len(xq)), desc="LCE")]
        y = np.concatenate(outs)
    else:
        y = interpreter.predict(xq)
    return _dequantize_output(y, interpreter)


def _shown(shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def _check_input_shapes(want: tuple, keras_model, x: np.ndarray) -> None:
    """Raises a ValueError naming both shapes when the flatbuffer cannot take the inputs."""
    if keras_model is not None:
        keras = tuple(keras_model.input_shape[1:])
        if len(keras) != len(want) or any(k not in (None, w) for k, w in zip(keras, want)):
            raise ValueError(
                f"The flatbuffer takes {_shown(want)} inputs, but the Keras model takes "
                f"{_shown(keras)}: they are not the same network (convert and verify at the "
                "same input size)."
            )
    if tuple(x.shape[1:]) != want:
        raise ValueError(
            f"The inputs have the shape {_shown(x.shape[1:])} per sample, but the flatbuffer "
            f"takes {_shown(want)}."
        )


# Up to this many inputs the Keras model runs eagerly, batch by batch: tracing ``predict``'s
# graph costs about 2 s for MeliusNetTiny, more than running a few hundred images eagerly
# (0.18 s for 8 images, 3 s for 2,000 against 0.8 s once traced).
EAGER_SAMPLES = 512


def keras_outputs(keras_model: tf.keras.Model, x: np.ndarray, *, batch_size: int = 64):
    """The Keras model's inference outputs on ``x`` as a NumPy array: eager calls for up to
    :data:`EAGER_SAMPLES` inputs, ``predict`` for more."""
    if len(x) > EAGER_SAMPLES:
        return keras_model.predict(x, batch_size=batch_size, verbose=0)
    outputs = [
        np.asarray(keras_model(x[i : i + batch_size], training=False))
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(outputs) if outputs else keras_model.predict(x, verbose=0)


def verify_flatbuffer(
    buf,
    keras_model: tf.keras.Model,
    x: np.ndarray,
    *,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    max_abs_diff: float | None = None,
    batch_size: int = 64,
    progress: bool = False,
    labels: np.ndarray | None = None,
    reference: np.ndarray | None = None,
) -> dict:
    """Compares LCE and Keras outputs on ``x``.

    Args:
        buf: the flatbuffer (bytes or path).
        keras_model: the Keras model it was converted from.
        x: inputs.
        min_agreement: top-1 agreement needed to pass.
        max_abs_diff: largest absolute output difference allowed to pass (None: no limit).
        batch_size: Keras batch size.
        progress: show a progress bar over the LCE runs.
        labels: the true classes of ``x``; adds both runtimes' top-1 accuracy.
        reference: the Keras outputs on ``x`` if already computed (e.g. to verify several
            flatbuffers of one model); ``keras_model`` is then not run.

    Returns:
        dict with ``samples``, ``max_abs_diff``, ``mean_abs_diff``, ``max_rel_diff`` (the
        largest difference over the largest absolute Keras output), ``top1_agreement``,
        ``min_agreement``, ``passed``, and with ``labels`` also ``accuracy`` (LCE) and
        ``keras_accuracy``.

    Raises:
        ValueError: when the flatbuffer's input shape differs from the Keras model's or from
            the inputs', or the outputs differ in shape (not the same network).
        FlatbufferError: when ``buf`` is not a valid flatbuffer.
    """
    buf = load_flatbuffer(buf)
    x = np.asarray(x, dtype=np.float32)
    _check_input_shapes(input_shape(buf), keras_model if reference is None else None, x)
    if labels is not None and len(labels) != len(x):
        raise ValueError(f"Got {len(labels)} labels for {len(x)} inputs; expected one per input.")
    if reference is None:
        expected = keras_outputs(keras_model, x, batch_size=batch_size)
    else:
        expected = np.asarray(reference)
        if len(expected) != len(x):
            raise ValueError(
                f"Got {len(expected)} reference outputs for {len(x)} inputs; expected one per "
                "input."
            )
    got = run_lce(buf, x, batch_progress=progress)
    if got.shape != expected.shape:
        raise ValueError(
            f"The flatbuffer's output shape {got.shape} does not match the Keras model's "
            f"{expected.shape}: they are not the same network."
        )
    diff = np.abs(got.astype(np.float64) - expected)
    top_got = got.reshape(len(x), -1).argmax(1)
    top_expected = expected.reshape(len(x), -1).argmax(1)
    agreement = (
        float(np.mean(top_got == top_expected))
        if got.ndim == 2
        else float(np.mean(np.sign(got) == np.sign(expected)))
    )
    passed = agreement >= min_agreement and (max_abs_diff is None or diff.max() <= max_abs_diff)
    accuracy = {}
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        accuracy = {
            "accuracy": float(np.mean(top_got == labels)),
            "keras_accuracy": float(np.mean(top_expected == labels)),
        }
    scale = float(np.abs(expected).max())
    return {
        "samples": int(len(x)),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        # the largest difference relative to the largest Keras output: a mismatch shows here
        # even when the few inputs tried keep their top-1
        "max_rel_diff": float(diff.max() / scale) if scale > 0 else float(diff.max()),
        "top1_agreement": agreement,
        "min_agreement": min_agreement,
        "max_abs_diff_threshold": max_abs_diff,
        "passed": bool(passed),
        **accuracy,
    }
