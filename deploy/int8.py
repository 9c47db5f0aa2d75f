"""int8 non-binary layers for LCE flatbuffers, calibrated on real data.

LCE 0.16 produces int8 kernels only from quantization-aware graphs: its
``experimental_default_int8_range`` leaves most layers float. :func:`convert_int8` turns a
trained float Keras model into such a graph after training:

1. **Preparation** (:func:`prepare_for_int8`, in :mod:`melius_larq.deploy.int8_rewrite`): a
   float conv whose only consumer is a BatchNormalization absorbs it (so the int8 kernel is
   quantized *after* folding, as TFLite needs); BatchNormalizations that only feed binary
   convs become per-channel shifts (their thresholds); other BatchNormalizations become 1x1
   depthwise convs; every concatenated channel is scaled to ``[-1, 1]`` on the calibration
   data (TFLite's int8 concatenation has one scale for all channels); non-linear
   activations are split from their conv/dense layer.
2. **Weight fake-quantization** (:func:`fake_quant_model`, in
   :mod:`melius_larq.deploy.int8_fake_quant`): float conv/dense kernels are fake-quantized
   symmetric, 8 bit, ``narrow_range`` (TFLite's int8 weight scheme).
3. **Activation fake-quantization**: every tensor (the input and each layer's output) gets a
   ``FakeQuantWithMinMaxVars`` with the min/max observed on calibration data
   (:func:`calibrate_ranges`, :func:`share_scales`).
4. Optionally, **quantization-aware fine-tuning** (:func:`quantization_aware_finetune`) of
   that model on labelled training images, so that the thresholds and weights adapt to the
   int8 grid.

Binary convolutions are untouched: LCE still bit-packs their weights, and with int8 tensors
around them they read int8 inputs; they write float32 that a ``QUANTIZE`` turns into the
int8 tensor their consumers read (:func:`float_bconv_outputs`; LCE's own int8 output is
slower on x86).

:func:`convert_int8_weights` is the calibration-free alternative: it only stores the float
weights of the converted flatbuffer as int8 (:func:`store_weights_int8`, in
:mod:`melius_larq.deploy.int8_flatbuffer`, with :func:`int8_flatbuffer_summary` and
:func:`quantize_per_channel`). Every name listed here is importable from this module.
"""

from __future__ import annotations

import numpy as np

from melius_larq._compat import tf
from melius_larq.deploy.int8_fake_quant import (
    FakeQuant,
    FakeQuantConv2D,
    FakeQuantDense,
    FakeQuantDepthwiseConv2D,
    calibrate_ranges,
    fake_quant_model,
    share_scales,
)
from melius_larq.deploy.int8_flatbuffer import (
    INT8_WEIGHT_PREFIX,
    float_bconv_outputs,
    int8_flatbuffer_summary,
    quantize_per_channel,
    store_weights_int8,
)
from melius_larq.deploy.int8_rewrite import BINARY_OUTPUT_SCALE, prepare_for_int8

# Adam learning rate of quantization-aware fine-tuning, which is off by default: after
# calibration a binary network's int8 flatbuffer is already close to its float accuracy, and
# fine-tuning can lower it; a small rate changes the least. What each rule and rate does on a
# trained model: python -m melius_larq.zoo.experiments.int8_ablation (docs/int8_ablation).
QAT_LEARNING_RATE = 3e-5

__all__ = [
    "BINARY_OUTPUT_SCALE",
    "QAT_LEARNING_RATE",
    "INT8_WEIGHT_PREFIX",
    "FakeQuant",
    "FakeQuantConv2D",
    "FakeQuantDense",
    "FakeQuantDepthwiseConv2D",
    "calibrate_ranges",
    "convert_int8",
    "convert_int8_weights",
    "fake_quant_model",
    "float_bconv_outputs",
    "int8_flatbuffer_summary",
    "int8_keras_model",
    "prepare_for_int8",
    "quantization_aware_finetune",
    "quantize_per_channel",
    "store_weights_int8",
    "share_scales",
]


def _outputs_probabilities(model: tf.keras.Model) -> bool:
    activation = getattr(model.layers[-1], "activation", None)
    return getattr(activation, "__name__", "") == "softmax"


def quantization_aware_finetune(
    qmodel: tf.keras.Model,
    data: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int = 1,
    learning_rate: float = QAT_LEARNING_RATE,
    batch_size: int = 128,
    verbose: int = 0,
) -> tf.keras.Model:
    """Fine-tunes a fake-quantized model (from :func:`fake_quant_model`) in place.

    The activation ranges stay fixed; the weights, biases and the pre-sign thresholds (the
    biases of the BatchNorms rewritten by :func:`prepare_for_int8`) adapt to the int8 grid,
    with the straight-through gradients of TensorFlow's fake-quantization ops (Jacob et al.
    2018, "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
    Inference"). Adam, cross-entropy with the labels.

    Args:
        qmodel: the fake-quantized model; it is trained in place and returned.
        data: ``(images, labels)``, preprocessed like the training data.
        epochs: passes over ``data`` (>= 1).
        learning_rate: Adam learning rate (> 0).
        batch_size: batch size (>= 1).
        verbose: Keras progress output.

    Raises:
        ValueError: for empty or mismatched data, or out-of-range options.
    """
    x, y = (np.asarray(a) for a in data)
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(
            f"Quantization-aware fine-tuning needs labelled images: got {len(x)} images and "
            f"{len(y)} labels."
        )
    if epochs < 1 or batch_size < 1 or not learning_rate > 0:
        raise ValueError(
            f"Expected qat epochs >= 1, batch_size >= 1 and learning_rate > 0, but got "
            f"{epochs}, {batch_size} and {learning_rate}."
        )
    loss = tf.keras.losses.SparseCategoricalCrossentropy(
        from_logits=not _outputs_probabilities(qmodel)
    )
    qmodel.compile(tf.keras.optimizers.Adam(learning_rate), loss)
    qmodel.fit(x.astype(np.float32), y, batch_size=batch_size, epochs=epochs, verbose=verbose)
    return qmodel


def convert_int8(
    model: tf.keras.Model,
    calibration: np.ndarray,
    *,
    target: str = "arm",
    int8_io: bool = False,
    qat_data: tuple[np.ndarray, np.ndarray] | None = None,
    qat_epochs: int = 0,
    qat_learning_rate: float = QAT_LEARNING_RATE,
    verbose: int = 0,
    split_grouped_convs: bool = True,
    bconv_float_outputs: bool = True,
    **prepare_options,
) -> bytes:
    """Converts a model to an LCE flatbuffer whose non-binary layers run in int8.

    Args:
        model: a trained functional Keras model (not modified).
        calibration: representative preprocessed inputs (a few hundred real images).
        target: LCE target.
        int8_io: also make the flatbuffer's input and output int8.
        qat_data: labelled training images ``(x, y)`` for quantization-aware fine-tuning
            (:func:`quantization_aware_finetune`) of the fake-quantized model.
        qat_epochs: fine-tuning epochs over ``qat_data``; 0 converts the calibrated model
            as it is.
        qat_learning_rate: Adam learning rate of the fine-tuning.
        verbose: Keras progress output of the fine-tuning.
        split_grouped_convs: export each grouped float conv as ``SPLIT``, per-group convs and
            ``CONCATENATION`` (see :func:`fake_quant_model`); False keeps one grouped
            ``CONV_2D``, which TFLite runs in its reference kernel.
        bconv_float_outputs: binary convs write float32 followed by a ``QUANTIZE``
            (:func:`float_bconv_outputs`, faster on x86); False keeps LCE's int8 output.
        **prepare_options: options of :func:`prepare_for_int8` (e.g.
            ``normalize_concat_inputs=False``), for ablations.

    Returns:
        The flatbuffer.

    Raises:
        ValueError: when no calibration data is given, or ``qat_epochs`` > 0 without
            ``qat_data``.
    """
    from melius_larq.deploy.convert import convert_model

    _check_calibration(calibration)
    if qat_epochs < 0:
        raise ValueError(f"qat_epochs={qat_epochs} must be >= 0.")
    if qat_epochs and qat_data is None:
        raise ValueError("qat_epochs > 0 needs labelled training images (qat_data=(x, y)).")
    qmodel = int8_keras_model(
        model, calibration, split_grouped_convs=split_grouped_convs, **prepare_options
    )
    if qat_epochs:
        quantization_aware_finetune(qmodel, qat_data, epochs=qat_epochs,
                                    learning_rate=qat_learning_rate, verbose=verbose)  # fmt: skip
    io = "int8" if int8_io else "float32"
    buf = convert_model(qmodel, target=target, inference_input_type=io, inference_output_type=io)
    return float_bconv_outputs(buf) if bconv_float_outputs else buf


def _check_calibration(calibration) -> None:
    if calibration is None or len(calibration) == 0:
        raise ValueError("int8 conversion needs calibration data: pass real, preprocessed inputs.")


def int8_keras_model(
    model: tf.keras.Model,
    calibration: np.ndarray,
    *,
    split_grouped_convs: bool = True,
    **prepare_options,
) -> tf.keras.Model:
    """The fake-quantized Keras model that :func:`convert_int8` converts (steps 1-3 above).

    Its outputs are TensorFlow's simulation of the int8 flatbuffer: compare the two to tell
    the rounding of int8 itself from the differences of TFLite's int8 kernels.

    Args:
        model: a trained functional Keras model (not modified).
        calibration: representative preprocessed inputs.
        split_grouped_convs: see :func:`convert_int8`.
        **prepare_options: options of :func:`prepare_for_int8`.

    Returns:
        A new Keras model with int8 fake-quantization of every tensor and float kernel.

    Raises:
        ValueError: when no calibration data is given.
    """
    _check_calibration(calibration)
    x = np.asarray(calibration, np.float32)
    try:
        prepared = prepare_for_int8(model, calibration=x, **prepare_options)
    except ValueError:  # a normalised output reaches a layer that cannot undo it
        if prepare_options:
            raise
        prepared = prepare_for_int8(model, calibration=x, normalize_concat_inputs=False)
    ranges = share_scales(prepared, calibrate_ranges(prepared, x))
    return fake_quant_model(prepared, ranges, split_grouped_convs=split_grouped_convs)


def convert_int8_weights(model: tf.keras.Model, *, target: str = "arm") -> bytes:
    """Converts a model with LCE and stores its float weights as int8.

    See :func:`store_weights_int8`; no calibration data is needed.

    Args:
        model: a trained Keras model.
        target: LCE target.

    Returns:
        The flatbuffer.
    """
    from melius_larq.deploy.convert import convert_model

    return store_weights_int8(convert_model(model, target=target))
