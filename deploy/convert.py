"""Converting Keras models to LCE flatbuffers."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from melius_larq._compat import tf
from melius_larq._io import write_atomic
from melius_larq._tflite import inference_saved_model
from melius_larq.deploy._lce import import_lce

__all__ = ["TARGETS", "convert_model", "inference_saved_model", "load_keras_model", "write_atomic"]

TARGETS = ("arm", "xcore")
_IO_TYPES = {"float32": tf.float32, "int8": tf.int8}
# The seed of the random weights of a model built from a registry name.
REGISTRY_SEED = 0


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
    fold_batchnorm: bool = True,
    fix_small_maps: bool = True,
    binary_dense: bool = True,
) -> bytes:
    """Converts a Keras model to an LCE flatbuffer (batch size 1).

    The model is exported as a SavedModel holding only its inference function (traced once
    with ``training=False``, :func:`inference_saved_model`) and its variables, then
    converted with LCE's ``convert_saved_model``. This computes the same graph as
    ``larq_compute_engine.convert_keras_model``, which saves the full Keras SavedModel first
    and is several times slower.

    Args:
        model: a ``tf.keras.Model`` with one input.
        target: ``"arm"`` (Android, ARM64 Linux; x86 runs the same ops) or ``"xcore"``.
        input_shape: ``(height, width, channels)``; required when the model's input has
            unknown dimensions.
        inference_input_type: ``"float32"`` or ``"int8"`` (int8 needs a quantized model).
        inference_output_type: ``"float32"`` or ``"int8"``.
        fold_batchnorm: first replace every BatchNorm that only feeds binary quantizers by a
            per-channel shift (:func:`melius_larq.fold_presign_batchnorm`: the same signs,
            one multiplication over the whole tensor less per binary convolution). The
            model passed in is not modified.
        fix_small_maps: rewrite every zero-padded binary conv on a map smaller than its
            kernel into an equivalent one that LCE's optimized kernels compute right
            (:func:`melius_larq.deploy.rewrite.rewrite_small_map_convs`); they compute
            such layers wrongly. Without it such layers are named in a ``UserWarning``.
        binary_dense: compute each binary dense layer (binary input and kernel, 2D input) as
            a 1x1 binary convolution (:func:`melius_larq.deploy.rewrite.binary_dense_as_conv`),
            which LCE accelerates as ``LceBconv2d``; LCE 0.16 leaves binary dense layers in
            float.

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
    if fold_batchnorm:
        from melius_larq.fold import fold_presign_batchnorm

        model, _ = fold_presign_batchnorm(model)
    if binary_dense:
        from melius_larq.deploy.rewrite import binary_dense_as_conv

        model, _ = binary_dense_as_conv(model)
    if fix_small_maps:
        from melius_larq.deploy.rewrite import rewrite_small_map_convs

        model, _ = rewrite_small_map_convs(model)
    from melius_larq.deploy.rewrite import zero_padding_hazards

    hazards = zero_padding_hazards(model)
    if hazards:
        warnings.warn(
            f"{len(hazards)} layer(s) will be computed wrongly by LCE's optimized kernels: "
            + "; ".join(f"{name}: {reason}" for name, reason in hazards.items())
            + ". Convert with fix_small_maps=True to rewrite them exactly.",
            stacklevel=2,
        )

    with inference_saved_model(model, spec) as saved_model:
        return lce.convert_saved_model(
            saved_model,
            target=target,
            inference_input_type=_IO_TYPES[inference_input_type],
            inference_output_type=_IO_TYPES[inference_output_type],
        )


def load_keras_model(
    source, *, input_size: int | None = None, num_classes: int | None = None
) -> tf.keras.Model:
    """A Keras model from a model object, a registry name, or a .keras/.h5/SavedModel path.

    Args:
        source: a ``tf.keras.Model``, a registry name such as ``"MeliusNet22"``, or a path
            to a ``.keras`` file, a full-model ``.h5`` file or a SavedModel directory. A
            registry model gets random weights drawn after
            ``tf.keras.utils.set_random_seed(REGISTRY_SEED)``, so the same name, input size
            and class count always give the same model: ``melius-larq verify x.tflite
            --keras MeliusNet22`` checks a flatbuffer made by ``melius-larq convert
            MeliusNet22`` against the model it came from.
        input_size: for registry names, the input height/width (default 224).
        num_classes: for registry names, the classifier size (default 1000).

    Raises:
        ValueError: when the path does not exist or is not a Keras model.
    """
    import melius_larq

    if isinstance(source, tf.keras.Model):
        return source
    source = str(source)
    path = Path(source)
    if not path.exists():
        lookup = {n.lower() for n in melius_larq.list_models()}
        if source.lower() in lookup:
            size = input_size or 224
            tf.keras.utils.set_random_seed(REGISTRY_SEED)
            return melius_larq.create_model(
                source, input_shape=(size, size, 3), num_classes=num_classes or 1000
            )
        raise ValueError(
            f"{source!r} is neither an existing model file nor a registry model "
            f"({', '.join(melius_larq.list_models())})."
        )
    is_saved_model = path.is_dir() and (path / "saved_model.pb").exists()
    if not (is_saved_model or path.suffix in (".keras", ".h5", ".hdf5")):
        raise ValueError(
            f"{source!r} is not a Keras model: expected a .keras file, a full-model .h5 file "
            "or a SavedModel directory."
        )
    try:
        return tf.keras.models.load_model(path, compile=False)
    except Exception as err:  # Keras raises many kinds for a file that is not a model
        raise ValueError(f"Could not load a Keras model from {source!r}: {err}") from err
