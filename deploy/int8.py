"""int8 non-binary layers for LCE flatbuffers, calibrated on real data.

LCE 0.16 produces int8 kernels only from quantization-aware graphs: its
``experimental_default_int8_range`` leaves most layers float. :func:`convert_int8` turns a
trained float Keras model into such a graph after training:

1. **Preparation** (:func:`prepare_for_int8`, in :mod:`melius_larq.deploy.int8_rewrite`): a
   float conv whose only consumer is a BatchNormalization absorbs it (so the int8 kernel is
   quantized *after* folding, as TFLite needs); other BatchNormalizations become 1x1
   depthwise convs; non-linear activations are split from their conv/dense layer.
2. **Weight fake-quantization** (:func:`fake_quant_model`, in
   :mod:`melius_larq.deploy.int8_fake_quant`): float conv/dense kernels are fake-quantized
   symmetric, 8 bit, ``narrow_range`` (TFLite's int8 weight scheme).
3. **Activation fake-quantization**: every tensor (the input and each layer's output) gets a
   ``FakeQuantWithMinMaxVars`` with the min/max observed on calibration data
   (:func:`calibrate_ranges`, :func:`share_scales`).

Binary convolutions are untouched: LCE still bit-packs their weights, and with int8 tensors
around them they read int8 inputs and write int8 outputs.

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
    int8_flatbuffer_summary,
    quantize_per_channel,
    store_weights_int8,
)
from melius_larq.deploy.int8_rewrite import BINARY_OUTPUT_SCALE, prepare_for_int8

__all__ = [
    "BINARY_OUTPUT_SCALE",
    "INT8_WEIGHT_PREFIX",
    "FakeQuant",
    "FakeQuantConv2D",
    "FakeQuantDense",
    "FakeQuantDepthwiseConv2D",
    "calibrate_ranges",
    "convert_int8",
    "convert_int8_weights",
    "fake_quant_model",
    "int8_flatbuffer_summary",
    "prepare_for_int8",
    "quantize_per_channel",
    "store_weights_int8",
    "share_scales",
]


def convert_int8(
    model: tf.keras.Model,
    calibration: np.ndarray,
    *,
    target: str = "arm",
    int8_io: bool = False,
) -> bytes:
    """Converts a model to an LCE flatbuffer whose non-binary layers run in int8.

    Args:
        model: a trained functional Keras model.
        calibration: representative preprocessed inputs (a few hundred real images).
        target: LCE target.
        int8_io: also make the flatbuffer's input and output int8.

    Returns:
        The flatbuffer.

    Raises:
        ValueError: when no calibration data is given.
    """
    from melius_larq.deploy.convert import convert_model

    if calibration is None or len(calibration) == 0:
        raise ValueError("int8 conversion needs calibration data: pass real, preprocessed inputs.")
    prepared = prepare_for_int8(model)
    x = np.asarray(calibration, np.float32)
    qmodel = fake_quant_model(prepared, share_scales(prepared, calibrate_ranges(prepared, x)))
    io = "int8" if int8_io else "float32"
    return convert_model(qmodel, target=target, inference_input_type=io, inference_output_type=io)


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
