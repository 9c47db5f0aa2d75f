"""Converting Keras models to LCE flatbuffers."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from deploy._lce import import_lce
from melius_larq._compat import tf

__all__ = ["TARGETS", "convert_model", "write_atomic"]

TARGETS = ("arm", "xcore")
_IO_TYPES = {"float32": tf.float32, "int8": tf.int8}


def _input_spec(model: tf.keras.Model, input_shape: Sequence[int] | None) -> tf.TensorSpec:
    if len(model.inputs) != 1:
        raise ValueError(
            f"Expected a model with one input, but {model.name} has {len(model.inputs)}."
        )
    shape = tuple(input_shape) if input_shape is not None else tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ValueError(
            f"{model.name} has input shape {tuple(model.inputs[0].shape)}; LCE needs a static "
            "height, width and channel count: pass input_shape=(height, width, channels)."
        )
    return tf.TensorSpec((1, *shape), tf.float32, name="input")


def convert_model(
    model: tf.keras.Model,
    *,
    target: str = "arm",
    input_shape: Sequence[int] | None = None,
    inference_input_type: str = "float32",
    inference_output_type: str = "float32",
) -> bytes:
    """Converts a Keras model to an LCE flatbuffer (batch size 1).

    The model is exported as a SavedModel holding only its inference function (traced once
    with ``training=False``) and its variables, then converted with LCE's
    ``convert_saved_model``. This computes the same graph as
    ``larq_compute_engine.convert_keras_model``, which saves the full Keras SavedModel first
    and takes about 6x longer for a MeliusNet (47 s against 7 s for MeliusNetA at 64x64).

    Args:
        model: a ``tf.keras.Model`` with one input.
        target: ``"arm"`` (Android, ARM64 Linux; x86 runs the same ops) or ``"xcore"``.
        input_shape: ``(height, width, channels)``; required when the model's input has
            unknown dimensions.
        inference_input_type: ``"float32"`` or ``"int8"`` (int8 needs a quantized model).
        inference_output_type: ``"float32"`` or ``"int8"``.

    Returns:
        The flatbuffer bytes.

    Raises:
        ValueError: for an unsupported target or I/O type, or a model LCE cannot take.
        ImportError: when Larq Compute Engine is not installed.
    """
    if target not in TARGETS:
        raise ValueError(f"Expected `target` to be one of {TARGETS}, but got {target!r}.")
    for arg, value in (("inference_input_type", inference_input_type),
                       ("inference_output_type", inference_output_type)):  # fmt: skip
        if value not in _IO_TYPES:
            raise ValueError(
                f"Expected `{arg}` to be one of {tuple(_IO_TYPES)}, but got {value!r}."
            )
    if not isinstance(model, tf.keras.Model):
        raise ValueError(f"Expected a tf.keras.Model, but got {type(model).__name__}.")
    lce = import_lce()
    spec = _input_spec(model, input_shape)

    @tf.function(input_signature=[spec])
    def serve(x):
        return {"output": model(x, training=False)}

    holder = tf.Module()
    holder.variables_to_save = list(model.variables)
    with tempfile.TemporaryDirectory(prefix="melius_larq_convert_") as tmp:
        tf.saved_model.save(
            holder, tmp, signatures={"serving_default": serve.get_concrete_function()}
        )
        return lce.convert_saved_model(
            tmp,
            target=target,
            inference_input_type=_IO_TYPES[inference_input_type],
            inference_output_type=_IO_TYPES[inference_output_type],
        )


def write_atomic(data: bytes, path: str | os.PathLike) -> Path:
    """Writes bytes to ``path`` through a temporary file and a rename: never a partial file.

    Raises:
        OSError: naming the path when its directory cannot be written.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise OSError(f"Cannot write {str(path)!r}: directory {str(directory)!r} does not exist.")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
